import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  GetQueueAttributesCommand,
  SendMessageCommand,
  type SendMessageCommandInput,
  SQSClient,
} from '@aws-sdk/client-sqs';
import { Hash } from '@smithy/hash-node';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { sql } from 'kysely';
import { afterEach, describe, expect, it, onTestFinished } from 'vitest';
import { LOCAL_REGION, LocalAuth, PRINCIPAL_NAMES, signRequest } from '../../local/auth.js';
import { signPayload } from '../../local/stripe-emulator/webhooks.js';
import { checkoutSession, stripeEvent, stripeIds } from '../support/events.js';
import { expectInvariantsHold } from '../support/invariants.js';
import { startStackForTest } from '../support/local-stack.js';
import { waitFor } from '../support/stripe.js';

const { stack, db, dataDir, signed } = await startStackForTest();
const service = stack.auth.principal('service');
const admin = stack.auth.principal('admin');
const sha256 = (body: string) => createHash('sha256').update(body).digest('hex');
const unique = (prefix: string) => `${prefix}-${randomBytes(6).toString('hex')}`;

afterEach(async () => {
  await expectInvariantsHold(db);
});

/** A raw HTTP call to the stack's public port; the parsed body and the headers a caller sees. */
async function call(
  pathAndQuery: string,
  init: { method?: string; headers?: Record<string, string>; body?: string },
) {
  const response = await fetch(`${stack.url}${pathAndQuery}`, init);
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : undefined };
}

/** What the database holds for a user id: nothing at all is the only answer for a refused request. */
async function traces(userId: string) {
  const account = await db
    .selectFrom('accounts')
    .select(['id', 'balance'])
    .where('external_user_id', '=', userId)
    .executeTakeFirst();
  const actions = await db
    .selectFrom('admin_actions')
    .select('id')
    .where(sql<boolean>`payload::text LIKE ${`%${userId}%`}`)
    .execute();
  return { account: account ?? null, adminActions: actions.length };
}

// ---- the queue ---------------------------------------------------------------------------------------

const eventIdsByUser = new Map<string, string[]>();

/** A paid checkout for `userId` that the worker would credit with 1,000 credits: what a forger sends. */
function paidEventFor(userId: string) {
  const ids = stripeIds();
  const event = stripeEvent(
    'checkout.session.completed',
    checkoutSession({
      id: ids.session,
      payment_intent: ids.intent,
      amount_total: 500,
      amount_subtotal: 500,
      currency: 'usd',
      client_reference_id: null,
      metadata: { user_id: userId, package_id: 'pack_small' },
    }),
  );
  eventIdsByUser.set(userId, [...(eventIdsByUser.get(userId) ?? []), String(event.id)]);
  return { id: String(event.id), body: JSON.stringify(event) };
}

const sendMessageInput = (event: { id: string; body: string }): SendMessageCommandInput => ({
  QueueUrl: stack.queue.mainUrl,
  MessageBody: event.body,
  MessageAttributes: {
    eventId: { DataType: 'String', StringValue: event.id },
    eventType: { DataType: 'String', StringValue: 'checkout.session.completed' },
  },
});

const sqsClient = (credentials: { accessKeyId: string; secretAccessKey: string }) =>
  new SQSClient({ region: LOCAL_REGION, endpoint: stack.url, credentials, maxAttempts: 1 });

/** An SQS JSON request signed by `signer` over `signedBody`, sent with `sentBody` (the same unless tampered). */
async function sqsRequest(
  action: string,
  signedBody: string,
  options: { sentBody?: string; signingDate?: Date; service?: string; unsigned?: boolean } = {},
) {
  const url = new URL(stack.url);
  const headers: Record<string, string> = {
    host: url.host,
    'content-type': 'application/x-amz-json-1.0',
    'x-amz-target': `AmazonSQS.${action}`,
  };
  const signedHeaders = options.unsigned
    ? headers
    : ((
        await new SignatureV4({
          credentials: service,
          region: LOCAL_REGION,
          service: options.service ?? 'sqs',
          sha256: Hash.bind(null, 'sha256'),
        }).sign(
          new HttpRequest({
            method: 'POST',
            protocol: 'http:',
            hostname: url.hostname,
            port: Number(url.port),
            path: '/',
            headers,
            body: signedBody,
          }),
          { signingDate: options.signingDate ?? new Date() },
        )
      ).headers as Record<string, string>);
  return call('/', { method: 'POST', headers: signedHeaders, body: options.sentBody ?? signedBody });
}

/**
 * Proves the forged events were never applied: a signed event sent after them is credited and the queue
 * drains, so anything accepted before it would have been processed by now.
 */
async function expectNeverCredited(forgedUsers: string[]) {
  const marker = unique('queue-marker');
  await sqsClient(service).send(new SendMessageCommand(sendMessageInput(paidEventFor(marker))));
  await waitFor(async () => (await traces(marker)).account?.balance === 1_000, 'the signed event to credit');
  await waitFor(() => stack.queue.main.length === 0, 'the queue to drain');
  for (const user of forgedUsers) {
    expect(await traces(user)).toEqual({ account: null, adminActions: 0 });
    const processed = await db
      .selectFrom('processed_events')
      .select('event_id')
      .where('event_id', 'in', eventIdsByUser.get(user) ?? ['none'])
      .execute();
    expect(processed).toEqual([]);
  }
  expect(stack.queue.dlq).toEqual([]);
}

describe('the local queue: security', () => {
  it('refuses an unsigned SendMessage of a forged Stripe event with SQS 403 MissingAuthenticationToken, and credits nothing', async () => {
    const user = unique('forger');
    const response = await call('/', {
      method: 'POST',
      headers: { 'content-type': 'application/x-amz-json-1.0', 'x-amz-target': 'AmazonSQS.SendMessage' },
      body: JSON.stringify(sendMessageInput(paidEventFor(user))),
    });
    expect(response.status).toBe(403);
    expect(response.headers.get('content-type')).toBe('application/x-amz-json-1.0');
    expect(response.headers.get('x-amzn-query-error')).toBe('MissingAuthenticationToken;Sender');
    expect(response.body).toEqual({
      __type: 'com.amazon.coral.service#MissingAuthenticationTokenException',
      message: 'Request is missing Authentication Token',
    });
    await expectNeverCredited([user]);
  });

  it('refuses every emulated action unsigned, so nobody can read, delete or redrive messages either', async () => {
    const queueUrl = stack.queue.mainUrl;
    const inputs: Record<string, unknown> = {
      ReceiveMessage: { QueueUrl: queueUrl, MaxNumberOfMessages: 10 },
      DeleteMessage: { QueueUrl: queueUrl, ReceiptHandle: 'x' },
      GetQueueAttributes: { QueueUrl: stack.queue.dlqUrl, AttributeNames: ['All'] },
      StartMessageMoveTask: { SourceArn: stack.queue.dlqArn },
    };
    for (const [action, input] of Object.entries(inputs)) {
      const response = await sqsRequest(action, JSON.stringify(input), { unsigned: true });
      expect({ action, status: response.status, type: response.body.__type }).toEqual({
        action,
        status: 403,
        type: 'com.amazon.coral.service#MissingAuthenticationTokenException',
      });
    }
  });

  it('answers the SDK as SQS does: InvalidClientTokenId for an unknown key, SignatureDoesNotMatch for a wrong secret', async () => {
    const users = [unique('forger'), unique('forger')];
    const attempts = [
      {
        credentials: { accessKeyId: 'AKIAUNKNOWN0000000', secretAccessKey: 'x' },
        name: 'InvalidClientTokenId',
      },
      {
        credentials: { accessKeyId: service.accessKeyId, secretAccessKey: 'not-the-secret' },
        name: 'SignatureDoesNotMatch',
      },
    ];
    for (const [i, attempt] of attempts.entries()) {
      const error = await sqsClient(attempt.credentials)
        .send(new SendMessageCommand(sendMessageInput(paidEventFor(users[i]!))))
        .catch((e: unknown) => e as { name: string; $metadata: { httpStatusCode?: number } });
      expect({
        name: (error as { name: string }).name,
        status: (error as { $metadata: { httpStatusCode?: number } }).$metadata.httpStatusCode,
      }).toEqual({
        name: attempt.name,
        status: 403,
      });
    }
    await expectNeverCredited(users);
  });

  it('refuses a body swapped after signing, a signature for execute-api, and one older than 15 minutes', async () => {
    const users = [unique('forger'), unique('forger'), unique('forger')];
    const harmless = JSON.stringify({ QueueUrl: stack.queue.mainUrl, MessageBody: '{}' });
    const swapped = await sqsRequest('SendMessage', harmless, {
      sentBody: JSON.stringify(sendMessageInput(paidEventFor(users[0]!))),
    });
    expect([swapped.status, swapped.headers.get('x-amzn-query-error')]).toEqual([
      403,
      'SignatureDoesNotMatch;Sender',
    ]);
    const apiGatewaySignature = await sqsRequest(
      'SendMessage',
      JSON.stringify(sendMessageInput(paidEventFor(users[1]!))),
      { service: 'execute-api' },
    );
    expect([apiGatewaySignature.status, apiGatewaySignature.headers.get('x-amzn-query-error')]).toEqual([
      403,
      'SignatureDoesNotMatch;Sender',
    ]);
    const stale = await sqsRequest('SendMessage', JSON.stringify(sendMessageInput(paidEventFor(users[2]!))), {
      signingDate: new Date(Date.now() - 16 * 60_000),
    });
    expect([stale.status, stale.headers.get('x-amzn-query-error')]).toEqual([400, 'RequestExpired;Sender']);
    expect(stale.body.message).toMatch(/^Signature expired: .* - 15 min\.\)$/);
    await expectNeverCredited(users);
  });

  it('accepts the stack’s own callers: a SendMessage signed with local credentials is queued and credited', async () => {
    const user = unique('signed-buyer');
    const sent = await sqsClient(service).send(new SendMessageCommand(sendMessageInput(paidEventFor(user))));
    expect(sent.MessageId).toBeTruthy();
    await waitFor(async () => (await traces(user)).account?.balance === 1_000, 'the signed event to credit');
    const attributes = await sqsClient(admin).send(
      new GetQueueAttributesCommand({ QueueUrl: stack.queue.dlqUrl, AttributeNames: ['QueueArn'] }),
    );
    expect(attributes.Attributes?.QueueArn).toBe(stack.queue.dlqArn);
  });
});

// ---- the gateway's SigV4 check -----------------------------------------------------------------------

/** Signs `signedBody` for an admin adjustment of `userId` and sends `sentBody` with the signed headers. */
async function adjustment(
  userId: string,
  signedBody: string,
  sentBody: string,
  extra: Record<string, string> = {},
) {
  const url = new URL(`/v1/admin/accounts/${userId}/adjustments`, stack.url);
  const headers = await signRequest(
    url,
    { method: 'POST', body: signedBody, headers: { 'content-type': 'application/json', ...extra } },
    admin,
  );
  return call(url.pathname, { method: 'POST', headers, body: sentBody });
}

const grant = (amount: number) => JSON.stringify({ amount, reason: 'security test' });

describe('the local gateway: SigV4 over the request as received', () => {
  it('refuses a body swapped after signing even when x-amz-content-sha256 still declares the signed one', async () => {
    const user = unique('swap');
    const response = await adjustment(user, grant(1), grant(1_000_000), {
      'x-amz-content-sha256': sha256(grant(1)),
    });
    expect(response.status).toBe(403);
    expect(response.headers.get('x-amzn-errortype')).toBe('InvalidSignatureException');
    expect(response.body.message).toMatch(/^The request signature we calculated does not match/);
    const undeclared = await adjustment(user, grant(1), grant(1_000_000));
    expect(undeclared.status).toBe(403);
    expect(await traces(user)).toEqual({ account: null, adminActions: 0 });
  });

  it('refuses a declared payload hash that is not the body’s, even for the body that was signed', async () => {
    const user = unique('declared');
    const response = await adjustment(user, grant(5), grant(5), { 'x-amz-content-sha256': sha256(grant(6)) });
    expect(response.status).toBe(403);
    expect(await traces(user)).toEqual({ account: null, adminActions: 0 });
  });

  it('refuses a query string with a value added to a signed key', async () => {
    const url = new URL('/v1/admin/invariants?check=1', stack.url);
    const headers = await signRequest(url, { method: 'GET' }, admin);
    expect((await call('/v1/admin/invariants?check=1', { headers })).status).toBe(200);
    const tampered = await call('/v1/admin/invariants?check=2&check=1', { headers });
    expect(tampered.status).toBe(403);
    expect(tampered.headers.get('x-amzn-errortype')).toBe('InvalidSignatureException');
  });

  it('refuses a signature that does not cover host, and one scoped to another region', async () => {
    const user = unique('scope');
    const url = new URL(`/v1/admin/accounts/${user}/adjustments`, stack.url);
    const body = grant(7);
    const signer = new SignatureV4({
      credentials: admin,
      region: LOCAL_REGION,
      service: 'execute-api',
      sha256: Hash.bind(null, 'sha256'),
    });
    const withoutHost = await signer.sign(
      new HttpRequest({
        method: 'POST',
        protocol: 'http:',
        hostname: url.hostname,
        port: Number(url.port),
        path: url.pathname,
        headers: { 'content-type': 'application/json' },
        body,
      }),
    );
    const noHost = await call(url.pathname, {
      method: 'POST',
      headers: withoutHost.headers as Record<string, string>,
      body,
    });
    expect(noHost.status).toBe(403);
    expect(noHost.body.message).toMatch(/SignedHeaders must include host/);
    const otherRegion = await signRequest(
      url,
      { method: 'POST', body, headers: { 'content-type': 'application/json' } },
      admin,
      'eu-west-1',
    );
    expect((await call(url.pathname, { method: 'POST', headers: otherRegion, body })).status).toBe(403);
    expect(await traces(user)).toEqual({ account: null, adminActions: 0 });
  });

  it('keeps refusing an altered or dropped signed header and an x-amz-date 16 minutes old or ahead', async () => {
    const user = unique('headers');
    const url = new URL(`/v1/accounts/${user}/spend`, stack.url);
    const body = JSON.stringify({ amount: 1 });
    const headers = await signRequest(
      url,
      { method: 'POST', body, headers: { 'content-type': 'application/json', 'idempotency-key': 'k-1' } },
      service,
    );
    const altered = await call(url.pathname, {
      method: 'POST',
      headers: { ...headers, 'idempotency-key': 'k-2' },
      body,
    });
    expect(altered.status).toBe(403);
    const { 'idempotency-key': _dropped, ...withoutKey } = headers;
    expect((await call(url.pathname, { method: 'POST', headers: withoutKey, body })).status).toBe(403);
    for (const minutes of [-16, 16]) {
      const signer = new SignatureV4({
        credentials: service,
        region: LOCAL_REGION,
        service: 'execute-api',
        sha256: Hash.bind(null, 'sha256'),
      });
      const dated = await signer.sign(
        new HttpRequest({
          method: 'POST',
          protocol: 'http:',
          hostname: url.hostname,
          port: Number(url.port),
          path: url.pathname,
          headers: { host: url.host, 'content-type': 'application/json', 'idempotency-key': 'k-3' },
          body,
        }),
        { signingDate: new Date(Date.now() + minutes * 60_000) },
      );
      const response = await call(url.pathname, {
        method: 'POST',
        headers: dated.headers as Record<string, string>,
        body,
      });
      expect(response.status).toBe(403);
      expect(response.body.message).toMatch(/^Signature (expired|not yet current): .* 5 min\.\)$/);
    }
    expect(await traces(user)).toEqual({ account: null, adminActions: 0 });
  });
});

// ---- errors the gateway answers itself ---------------------------------------------------------------

describe('the local gateway: its own errors have API Gateway’s shape', () => {
  const expectGatewayError = (
    response: Awaited<ReturnType<typeof call>>,
    status: number,
    message: string,
  ) => {
    expect({
      status: response.status,
      contentType: response.headers.get('content-type'),
      requestId: Boolean(response.headers.get('apigw-requestid')),
      body: response.body,
    }).toEqual({ status, contentType: 'application/json', requestId: true, body: { message } });
  };

  it('answers 401 Unauthorized with a Bearer challenge for a missing or bad token', async () => {
    for (const authorization of [undefined, 'Bearer not-a-token']) {
      const response = await call('/v1/me/credits', {
        headers: authorization ? { authorization } : {},
      });
      expectGatewayError(response, 401, 'Unauthorized');
      expect(response.headers.get('www-authenticate')).toMatch(/^Bearer scope="" error="invalid_token"/);
    }
  });

  it('answers 403 Forbidden unsigned and to the wrong kind of caller, 404 Not Found for an unknown route', async () => {
    expectGatewayError(await call('/v1/admin/invariants', {}), 403, 'Forbidden');
    const wrongKind = await signed('service', 'GET', '/v1/admin/invariants');
    expect(wrongKind).toEqual({ status: 403, body: { message: 'Forbidden' } });
    expectGatewayError(await call('/v1/nothing-here', {}), 404, 'Not Found');
  });

  it('lets the second admin invoke admin routes with its own ARN', async () => {
    const user = unique('four-eyes');
    const url = new URL(`/v1/admin/accounts/${user}/adjustments`, stack.url);
    const body = grant(3);
    const headers = await signRequest(
      url,
      { method: 'POST', body, headers: { 'content-type': 'application/json' } },
      stack.auth.principal('second-admin'),
    );
    const response = await call(url.pathname, { method: 'POST', headers, body });
    expect(response.status).toBe(201);
    const account = await call(`/v1/admin/accounts/${user}`, {
      headers: await signRequest(new URL(`/v1/admin/accounts/${user}`, stack.url), { method: 'GET' }, admin),
    });
    expect(account.body.adminActions[0].actorArn).toBe(stack.auth.principal('second-admin').arn);
    expect(stack.auth.principal('second-admin').arn).not.toBe(admin.arn);
  });

  it.each([['%ZZ'], ['%E0%A4%A'], ['%']])(
    'answers 400 Bad Request, never 500, for the malformed escape %s in a path, and writes nothing',
    async (malformed) => {
      const user = unique('escape');
      const target = `/v1/admin/accounts/${user}${malformed}/adjustments`;
      const body = grant(9);
      const headers = await signRequest(
        new URL(target, stack.url),
        { method: 'POST', body, headers: { 'content-type': 'application/json' } },
        admin,
      );
      expectGatewayError(await call(target, { method: 'POST', headers, body }), 400, 'Bad Request');
      expectGatewayError(await call(`/v1/admin/accounts/${malformed}`, {}), 400, 'Bad Request');
      expectGatewayError(await call(`/v1/me/credits${malformed}`, {}), 400, 'Bad Request');
      expect(await traces(user)).toEqual({ account: null, adminActions: 0 });
    },
  );
});

// ---- local credentials -------------------------------------------------------------------------------

describe('the local stack: Stripe events that can never apply', () => {
  it.each([
    ['a NUL', 'u\u0000nul'],
    ['a lone surrogate', 'u\ud800x'],
  ])(
    'parks a signed webhook whose user id carries %s, instead of retrying it into the DLQ',
    async (_case, userId) => {
      const ids = stripeIds();
      const event = stripeEvent(
        'checkout.session.completed',
        checkoutSession({
          id: ids.session,
          payment_intent: ids.intent,
          amount_total: 500,
          currency: 'usd',
          client_reference_id: null,
          metadata: { user_id: userId, package_id: 'pack_small' },
        }),
      );
      const body = JSON.stringify(event);
      const response = await fetch(`${stack.url}/webhooks/stripe`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'stripe-signature': signPayload(body, 'whsec_local_emulator_secret'),
        },
        body,
      });
      expect(response.status).toBe(200);
      await waitFor(async () => {
        const row = await db
          .selectFrom('processed_events')
          .select('outcome')
          .where('event_id', '=', String(event.id))
          .executeTakeFirst();
        return row?.outcome === 'parked';
      }, 'the event to be parked');
      await waitFor(() => stack.queue.main.length === 0, 'the queue to drain');
      expect(stack.queue.dlq.length).toBe(0);
    },
  );
});

describe('the local stack: bodies that are not UTF-8', () => {
  it.each([
    ['a lone 0xff', [0xff]],
    ['an overlong slash', [0xc0, 0xaf]],
    ['a surrogate encoded as WTF-8', [0xed, 0xa0, 0x80]],
  ])('refuses a checkout whose body carries %s with 400, writing nothing', async (_case, bad) => {
    const userId = unique('utf8');
    const token = await stack.auth.issueToken(userId);
    const body = Buffer.concat([
      Buffer.from('{"packageId": "pack_small'),
      Buffer.from(bad),
      Buffer.from('"}'),
    ]);
    const response = await fetch(`${stack.url}/v1/checkout`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body,
    });
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ code: 'invalid_encoding' });
    const account = await db
      .selectFrom('accounts')
      .select('id')
      .where('external_user_id', '=', userId)
      .executeTakeFirst();
    expect(account).toBeUndefined();
  });
});

describe('local-auth.json', () => {
  it('holds service, admin and second-admin, each with its own key and ARN', () => {
    const saved = JSON.parse(readFileSync(path.join(dataDir, 'local-auth.json'), 'utf8'));
    const principals = saved.principals as Array<{ name: string; accessKeyId: string; arn: string }>;
    expect(principals.map((p) => p.name)).toEqual([...PRINCIPAL_NAMES]);
    expect(new Set(principals.map((p) => p.accessKeyId)).size).toBe(3);
    expect(new Set(principals.map((p) => p.arn)).size).toBe(3);
  });

  it('upgrades a data dir from before second-admin in place, keeping every existing key', async () => {
    const oldDir = mkdtempSync(path.join(tmpdir(), 'credits-auth-upgrade-'));
    onTestFinished(() => rmSync(oldDir, { recursive: true, force: true }));
    const file = path.join(oldDir, 'local-auth.json');
    const current = JSON.parse(readFileSync(path.join(dataDir, 'local-auth.json'), 'utf8'));
    const old = {
      ...current,
      principals: current.principals.filter((p: { name: string }) => p.name !== 'second-admin'),
    };
    writeFileSync(file, JSON.stringify(old, null, 2));
    const upgraded = await LocalAuth.load(oldDir);
    const saved = JSON.parse(readFileSync(file, 'utf8'));
    expect(saved.signingKey).toEqual(current.signingKey);
    expect(saved.principals.slice(0, 2)).toEqual(old.principals);
    expect(saved.principals.map((p: { name: string }) => p.name)).toEqual([...PRINCIPAL_NAMES]);
    expect(upgraded.principal('second-admin').accessKeyId).toBe(saved.principals[2].accessKeyId);
    const { name, accessKeyId, secretAccessKey, arn } = upgraded.principal('admin');
    expect({ name, accessKeyId, secretAccessKey, arn }).toEqual(current.principals[1]);
  });
});
