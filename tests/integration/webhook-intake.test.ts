import { createHmac } from 'node:crypto';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCreditWorker } from '../../functions/credit-worker.js';
import { createWebhookIntake } from '../../functions/webhook-intake.js';
import { loadIntakeConfig } from '../../shared/config.js';
import { DEFAULT_PACKAGES } from '../../shared/packages.js';
import { createTestDatabase } from '../support/database.js';
import {
  checkoutSession,
  lambdaContext,
  signedWebhookRequest,
  sqsEvent,
  stripeEvent,
  stripeIds,
  webhookRequest,
} from '../support/events.js';
import { expectInvariantsHold } from '../support/invariants.js';

const SECRET = 'whsec_current';
const OLD_SECRET = 'whsec_previous';
const QUEUE_URL = 'https://sqs.us-east-1.amazonaws.com/123456789012/credits-events';
const sqsMock = mockClient(SQSClient);
const secretsMock = mockClient(SecretsManagerClient);
const { db } = await createTestDatabase();

const config = loadIntakeConfig({
  QUEUE_URL,
  STRIPE_WEBHOOK_SECRET: `${SECRET},${OLD_SECRET}`,
  WEBHOOK_MAX_BYTES: '20000',
});
// The intake reads this clock, and so do the headers the tests sign: a second ticking between the two
// would turn "301 s old" into 302 and "300 s old" into a rejection.
let clockMs = Date.now();
const intake = createWebhookIntake({ config, sqs: new SQSClient({}), now: () => clockMs });
const invoke = (request: APIGatewayProxyEventV2) =>
  intake(request, lambdaContext('webhook-intake')) as Promise<APIGatewayProxyStructuredResultV2>;

const now = () => Math.floor(clockMs / 1000);
const hmac = (secret: string, payload: string) => createHmac('sha256', secret).update(payload).digest('hex');
const paidEvent = () => {
  const ids = stripeIds();
  return stripeEvent(
    'checkout.session.completed',
    checkoutSession({
      id: ids.session,
      payment_intent: ids.intent,
      amount_total: 500,
      currency: 'usd',
      client_reference_id: null,
      metadata: { user_id: `user-${ids.session}`, package_id: 'pack_small' },
    }),
  );
};
const bodyOf = (event: object) => JSON.stringify(event);
const sent = () => sqsMock.commandCalls(SendMessageCommand).map((c) => c.args[0].input);

async function expectRejected(request: APIGatewayProxyEventV2, detail: RegExp, status = 400) {
  const response = await invoke(request);
  expect(response.statusCode).toBe(status);
  expect(response.headers?.['content-type']).toBe('application/problem+json');
  expect(JSON.parse(response.body ?? '{}').detail).toMatch(detail);
  expect(sent()).toEqual([]);
}

afterEach(async () => {
  await expectInvariantsHold(db);
});

beforeEach(() => {
  clockMs = Date.now();
  sqsMock.reset();
  sqsMock.on(SendMessageCommand).resolves({ MessageId: 'm-1' });
});

describe('webhook intake: happy', () => {
  it('enqueues a verified event byte for byte, and the worker credits it', async () => {
    const event = paidEvent();
    const request = signedWebhookRequest(event, SECRET);
    const response = await invoke(request);
    expect(response.statusCode).toBe(200);
    expect(JSON.parse(response.body ?? '')).toEqual({ received: true, enqueued: true });
    const [message] = sent();
    expect(message).toMatchObject({
      QueueUrl: QUEUE_URL,
      MessageBody: request.body,
      MessageAttributes: {
        eventId: { DataType: 'String', StringValue: event.id },
        eventType: { DataType: 'String', StringValue: 'checkout.session.completed' },
      },
    });
    const worker = createCreditWorker({ db, packages: DEFAULT_PACKAGES });
    const result = await worker(sqsEvent([message!.MessageBody!]), lambdaContext('credit-worker'));
    expect(result).toEqual({ batchItemFailures: [] });
    const user = (event.data as { object: { metadata: { user_id: string } } }).object.metadata.user_id;
    const account = await db
      .selectFrom('accounts')
      .selectAll()
      .where('external_user_id', '=', user)
      .executeTakeFirstOrThrow();
    expect(account.balance).toBe(1_000);
    await expectInvariantsHold(db);
  });

  it('verifies a base64-encoded body over its decoded bytes', async () => {
    const response = await invoke(signedWebhookRequest(paidEvent(), SECRET, { base64: true }));
    expect(response.statusCode).toBe(200);
    expect(sent()).toHaveLength(1);
  });

  it('accepts the previous secret during rotation, and any one of several v1 values', async () => {
    const body = bodyOf(paidEvent());
    const t = now();
    const header = `t=${t},v1=${hmac('whsec_unknown', `${t}.${body}`)},v1=${hmac(OLD_SECRET, `${t}.${body}`)}`;
    expect((await invoke(webhookRequest(body, { 'stripe-signature': header }))).statusCode).toBe(200);
  });

  it('acknowledges an unhandled type without enqueueing it', async () => {
    const response = await invoke(
      signedWebhookRequest(stripeEvent('customer.created', { id: 'cus_1' }), SECRET),
    );
    expect(response.statusCode).toBe(200);
    expect(JSON.parse(response.body ?? '')).toEqual({ received: true, enqueued: false });
    expect(sent()).toEqual([]);
  });
});

describe('webhook intake: error', () => {
  it('answers 503 when SQS refuses the message, so Stripe retries', async () => {
    sqsMock.on(SendMessageCommand).rejects(new Error('ServiceUnavailable'));
    const response = await invoke(signedWebhookRequest(paidEvent(), SECRET));
    expect(response.statusCode).toBe(503);
    expect(JSON.parse(response.body ?? '')).toMatchObject({ code: 'queue_unavailable' });
  });

  it('rejects truncated JSON that carries a valid signature', async () => {
    const body = bodyOf(paidEvent()).slice(0, -20);
    const t = now();
    await expectRejected(
      webhookRequest(body, { 'stripe-signature': `t=${t},v1=${hmac(SECRET, `${t}.${body}`)}` }),
      /not valid JSON/,
    );
  });

  it('rejects signed JSON that is not a Stripe event', async () => {
    const body = JSON.stringify({ id: 'nope', type: 'checkout.session.completed' });
    const t = now();
    await expectRejected(
      webhookRequest(body, { 'stripe-signature': `t=${t},v1=${hmac(SECRET, `${t}.${body}`)}` }),
      /not a Stripe event/,
    );
  });

  it('rejects a signed event nested deeper than Stripe nests, so the worker never has to store it', async () => {
    let deep: unknown = 'bottom';
    for (let i = 0; i < 200; i++) deep = [deep];
    const event = paidEvent();
    const nested = { ...event, data: { object: { ...(event.data as { object: object }).object, deep } } };
    const body = JSON.stringify(nested);
    const t = now();
    await expectRejected(
      webhookRequest(body, { 'stripe-signature': `t=${t},v1=${hmac(SECRET, `${t}.${body}`)}` }),
      /nests deeper than 64 levels/,
    );
  });

  it('rejects a livemode event in a test-mode deployment', async () => {
    await expectRejected(
      signedWebhookRequest({ ...paidEvent(), livemode: true }, SECRET),
      /livemode is true/,
    );
  });

  it('rejects a body over the cap before verifying it, 413 as everywhere else', async () => {
    const event = paidEvent();
    (event as { padding?: string }).padding = 'x'.repeat(20_001);
    await expectRejected(signedWebhookRequest(event, SECRET), /exceeds the 20000-byte limit/, 413);
    await expectRejected(
      signedWebhookRequest(event, SECRET, { base64: true }),
      /exceeds the 20000-byte limit/,
      413,
    );
  });

  it('rejects an empty body', async () => {
    await expectRejected(
      webhookRequest('', { 'stripe-signature': `t=${now()},v1=${'0'.repeat(64)}` }),
      /empty/,
    );
  });
});

describe('webhook intake: security', () => {
  const body = bodyOf(paidEvent());
  const sig = (t: number | string, secret = SECRET) => hmac(secret, `${t}.${body}`);
  const cases: Array<[string, () => Record<string, string>, RegExp]> = [
    ['no signature header', () => ({}), /missing Stripe-Signature/],
    ['only a v0 signature', () => ({ 'stripe-signature': `t=${now()},v0=${sig(now())}` }), /no v1 signature/],
    ['t=abc', () => ({ 'stripe-signature': `t=abc,v1=${sig('abc')}` }), /not a unix time/],
    ['t=NaN', () => ({ 'stripe-signature': `t=NaN,v1=${sig('NaN')}` }), /not a unix time/],
    ['an empty v1', () => ({ 'stripe-signature': `t=${now()},v1=` }), /not a 64-character hex/],
    [
      'a v1 of the wrong length',
      () => ({ 'stripe-signature': `t=${now()},v1=${sig(now()).slice(0, 62)}` }),
      /not a 64-character hex/,
    ],
    [
      'a timestamp 301 s old',
      () => ({ 'stripe-signature': `t=${now() - 301},v1=${sig(now() - 301)}` }),
      /301 s old/,
    ],
    [
      'a timestamp 301 s in the future',
      () => ({ 'stripe-signature': `t=${now() + 301},v1=${sig(now() + 301)}` }),
      /301 s in the future/,
    ],
    [
      'a signature by another secret',
      () => ({ 'stripe-signature': `t=${now()},v1=${sig(now(), 'whsec_attacker')}` }),
      /no v1 signature matches/,
    ],
    [
      'two timestamps',
      () => ({ 'stripe-signature': `t=${now()},t=${now()},v1=${sig(now())}` }),
      /exactly one timestamp/,
    ],
  ];

  it.each(cases)('rejects %s with 400 and enqueues nothing', async (_name, headers, detail) => {
    await expectRejected(webhookRequest(body, headers()), detail);
  });

  // Stripe's libraries accept a header in which any one v1 matches, whatever else it carries.
  const withValid: Array<[string, (t: number) => string]> = [
    ['a malformed v1 before it', (t) => `t=${t},v1=not-hex,v1=${sig(t)}`],
    ['a malformed v1 after it', (t) => `t=${t},v1=${sig(t)},v1=zz${'0'.repeat(62)}`],
    ['an empty v1', (t) => `t=${t},v1=,v1=${sig(t)}`],
    ['a v1 of the wrong length', (t) => `t=${t},v1=${sig(t).slice(0, 62)},v1=${sig(t)}`],
    ['an upper-case copy of it', (t) => `t=${t},v1=${sig(t).toUpperCase()},v1=${sig(t)}`],
    [
      'a v0, an unknown scheme and a part without "="',
      (t) => `t=${t},v0=${sig(t)},v9=x,junk,v1=x,v1=${sig(t)}`,
    ],
    ['a malformed v1 and a v1 by the previous secret', (t) => `t=${t},v1=%%,v1=${sig(t, OLD_SECRET)}`],
  ];

  it.each(withValid)('accepts a valid v1 next to %s, and enqueues the event once', async (_name, header) => {
    const response = await invoke(webhookRequest(body, { 'stripe-signature': header(now()) }));
    expect(response.statusCode).toBe(200);
    expect(sent().map((m) => m.MessageBody)).toEqual([body]);
  });

  const withoutValid: Array<[string, (t: number) => string, RegExp]> = [
    [
      'only malformed v1 values',
      (t) => `t=${t},v1=,v1=not-hex,v1=${sig(t).slice(1)}`,
      /not a 64-character hex/,
    ],
    [
      'a malformed v1 and a v1 by another secret',
      (t) => `t=${t},v1=not-hex,v1=${sig(t, 'whsec_attacker')}`,
      /no v1 signature matches/,
    ],
    ['a malformed v1 and a stale valid v1', (t) => `t=${t - 301},v1=x,v1=${sig(t - 301)}`, /301 s old/],
    [
      'a valid v1 given as v0 only, next to a malformed v1',
      (t) => `t=${t},v0=${sig(t)},v1=x`,
      /not a 64-character hex/,
    ],
  ];

  it.each(withoutValid)('still rejects %s', async (_name, header, detail) => {
    await expectRejected(webhookRequest(body, { 'stripe-signature': header(now()) }), detail);
  });

  it('rejects a body re-serialised after signing', async () => {
    const original = JSON.stringify(JSON.parse(body), null, 2);
    const t = now();
    const header = `t=${t},v1=${hmac(SECRET, `${t}.${original}`)}`;
    await expectRejected(
      webhookRequest(JSON.stringify(JSON.parse(original)), { 'stripe-signature': header }),
      /no v1 signature matches/,
    );
  });

  it('accepts timestamps exactly 300 s old and 300 s ahead', async () => {
    for (const t of [now() - 300, now() + 300]) {
      const header = `t=${t},v1=${sig(t)}`;
      expect((await invoke(webhookRequest(body, { 'stripe-signature': header }))).statusCode).toBe(200);
    }
  });

  it('reads signing secrets from Secrets Manager by name, cached across invocations', async () => {
    secretsMock.reset();
    secretsMock.on(GetSecretValueCommand).resolves({
      SecretString: JSON.stringify({ apiKey: 'sk_test_123', webhookSecrets: ['whsec_from_secrets_manager'] }),
    });
    const fromSecret = createWebhookIntake({
      config: loadIntakeConfig({ QUEUE_URL, STRIPE_SECRET_NAME: 'credits/stripe' }),
      sqs: new SQSClient({}),
    });
    for (let i = 0; i < 3; i++) {
      const response = (await fromSecret(
        signedWebhookRequest(paidEvent(), 'whsec_from_secrets_manager'),
        lambdaContext(),
      )) as APIGatewayProxyStructuredResultV2;
      expect(response.statusCode).toBe(200);
    }
    const calls = secretsMock.commandCalls(GetSecretValueCommand);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.args[0].input).toMatchObject({ SecretId: 'credits/stripe' });
  });
});
