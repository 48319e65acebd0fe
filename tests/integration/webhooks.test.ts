import { mkdtempSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DecryptCommand, EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import { createSweeper } from '../../functions/sweeper.js';
import { createWebhookDispatcher } from '../../functions/webhook-dispatcher.js';
import { createApiRouter } from '../../shared/api/router.js';
import { type ApiConfig, loadWebhookConfig } from '../../shared/config.js';
import type { RouteKey } from '../../shared/http/routes.js';
import { DEFAULT_PACKAGES } from '../../shared/packages.js';
import { DEFAULT_CATALOG } from '../../shared/plan-catalog.js';
import { deleteEndpoint, listEndpoints } from '../../shared/webhooks/endpoints.js';
import type { WebhookEventType } from '../../shared/webhooks/events.js';
import {
  DEFAULT_RETRY_SECONDS,
  emitEvent,
  flushWebhooks,
  listAttempts,
  RESPONSE_EXCERPT_CHARS,
} from '../../shared/webhooks/outbox.js';
import { sqsDeliveryQueue } from '../../shared/webhooks/queue.js';
import type { WebhookRuntime } from '../../shared/webhooks/runtime.js';
import { kmsSecretCipher, localSecretCipher, type SecretCipher } from '../../shared/webhooks/secrets.js';
import { ADMIN_ARN, apiEvent, type CallOptions, expectDocumented } from '../support/api.js';
import { createTestDatabase } from '../support/database.js';
import { lambdaContext, sqsEvent } from '../support/events.js';
import { givenAccount, testClock } from '../support/factories.js';
import { closedPort, startWebhookReceiver } from '../support/webhook-receiver.js';

const { db } = await createTestDatabase({ max: 6 });

const QUEUE_URL = 'https://sqs.us-east-1.amazonaws.com/123456789012/credits-webhook-deliveries';
const DLQ_URL = 'https://sqs.us-east-1.amazonaws.com/123456789012/credits-webhook-deliveries-dlq';
const sqsMock = mockClient(SQSClient);
const kmsMock = mockClient(KMSClient);
const keyFile = path.join(mkdtempSync(path.join(tmpdir(), 'webhook-key-')), 'webhook-secrets.key');
const localCipher = localSecretCipher(keyFile);

const config: ApiConfig = {
  database: { url: 'unused' },
  poolMax: 1,
  packages: DEFAULT_PACKAGES,
  checkoutSuccessUrl: 'https://app.example.com/?checkout=success',
  checkoutCancelUrl: 'https://app.example.com/?checkout=cancelled',
  corsAllowedOrigins: [],
  maxOpenCheckouts: 3,
  adminPrincipals: ['arn:aws:sts::123456789012:assumed-role/credits-admin/*'],
  allowPromotionCodes: false,
  plans: DEFAULT_CATALOG,
};

beforeEach(async () => {
  // Each test sees only the endpoints it registers.
  for (const endpoint of await listEndpoints(db)) {
    await deleteEndpoint(db, endpoint.id, { actorArn: ADMIN_ARN, reason: 'next test' });
  }
  sqsMock.reset();
  sqsMock.on(SendMessageCommand).resolves({ MessageId: 'sent' });
  kmsMock.reset();
});

/**
 * The admin API, the dispatcher and the sweeper on the test database, with SQS mocked at its boundary: each
 * message sent to the delivery queue is handed to the dispatcher by `drain`, the test clock moved on by the
 * message's delay first, as SQS would hold it.
 */
function harness(
  options: {
    retrySeconds?: readonly number[];
    local?: boolean;
    cipher?: SecretCipher;
    /** The dispatcher may reach loopback (every receiver here is on 127.0.0.1). @default true */
    deliverToLoopback?: boolean;
    timeoutMs?: number;
  } = {},
) {
  const clock = testClock();
  const queue = sqsDeliveryQueue(new SQSClient({ region: 'us-east-1' }), {
    queueUrl: QUEUE_URL,
    deadLetterUrl: DLQ_URL,
  });
  const runtime: WebhookRuntime = {
    queue,
    cipher: options.cipher ?? localCipher,
    retrySeconds: options.retrySeconds ?? DEFAULT_RETRY_SECONDS,
    allowLoopbackHttp: options.local ?? true,
  };
  const route = createApiRouter(
    {
      db,
      config,
      stripe: () => Promise.reject(new Error('no Stripe in this test')),
      dispatchReconciliation: () => Promise.reject(new Error('no reconciliation in this test')),
      webhooks: runtime,
      clock: clock.now,
    },
    { onUnexpectedError: (error) => console.error(error) },
  );
  async function call(routeKey: RouteKey, callOptions: CallOptions = {}) {
    const response = await route(apiEvent(routeKey, { auth: { iam: ADMIN_ARN }, ...callOptions }));
    expectDocumented(routeKey, response);
    return {
      status: response.statusCode ?? 200,
      body: (response.body ? JSON.parse(response.body) : {}) as Record<string, unknown>,
    };
  }
  const dispatcher = createWebhookDispatcher({
    db,
    ...runtime,
    allowLoopbackHttp: options.deliverToLoopback ?? true,
    ...(options.timeoutMs !== undefined && { timeoutMs: options.timeoutMs }),
    clock: clock.now,
  });
  const sweeper = createSweeper({ db, clock: clock.now, webhookQueue: queue });
  const sent = (url: string) =>
    sqsMock
      .commandCalls(SendMessageCommand)
      .map((c) => c.args[0].input)
      .filter((input) => input.QueueUrl === url);
  let consumed = 0;
  return {
    clock,
    call,
    sweep: () => sweeper(undefined, lambdaContext('sweeper')),
    flush: () => flushWebhooks(db, queue, clock.now()),
    /** Messages sent to the delivery queue and not yet handed to the dispatcher. */
    queued: () => sent(QUEUE_URL).slice(consumed),
    deadLettered: () => sent(DLQ_URL).map((input) => JSON.parse(input.MessageBody ?? '{}')),
    /** Hands every queued message to the dispatcher, in order, until none is left; returns how many. */
    async drain(): Promise<number> {
      let handed = 0;
      for (let message = sent(QUEUE_URL)[consumed]; message; message = sent(QUEUE_URL)[consumed]) {
        consumed++;
        clock.advance((message.DelaySeconds ?? 0) * 1000);
        const result = await dispatcher(
          sqsEvent([message.MessageBody ?? '']),
          lambdaContext('webhook-dispatcher'),
        );
        expect(result.batchItemFailures).toEqual([]);
        handed++;
      }
      return handed;
    },
    async register(url: string, events: WebhookEventType[] = ['balance.low']) {
      const response = await call('POST /v1/admin/webhook-endpoints', {
        body: { url, events, description: 'the app' },
      });
      expect(response.status).toBe(201);
      return response.body as { id: string; secret: string };
    },
    async deliveries(endpointId: string) {
      const response = await call('GET /v1/admin/webhook-deliveries', { query: { endpoint: endpointId } });
      expect(response.status).toBe(200);
      return response.body.items as Array<Record<string, unknown>>;
    },
  };
}

/** Commits one event of `type` for a new account, as the ledger would in its transaction. */
async function commitEvent(type: WebhookEventType = 'balance.low') {
  const account = await givenAccount(db);
  const event = await db.transaction().execute((trx) =>
    emitEvent(trx, {
      type,
      accountId: account.id,
      data: { userId: account.external_user_id, available: 4, threshold: 10 },
    }),
  );
  return { account, event };
}

const counts = async () => ({
  endpoints: Number(
    (await db.selectFrom('webhook_endpoints').select(db.fn.countAll().as('n')).executeTakeFirstOrThrow()).n,
  ),
  audit: Number(
    (
      await db
        .selectFrom('admin_actions')
        .select(db.fn.countAll().as('n'))
        .where('action', '=', 'create_webhook_endpoint')
        .executeTakeFirstOrThrow()
    ).n,
  ),
});

describe('outbound webhooks: delivery and retries', () => {
  it('retries a receiver that answers 500 twice, then 200: three signed attempts with one webhook-id', async () => {
    const h = harness();
    const receiver = await startWebhookReceiver([500, 500, 200]);
    const endpoint = await h.register(receiver.url);
    const { account, event } = await commitEvent();

    await h.flush();
    expect(await h.drain()).toBe(3);

    expect(receiver.received.map((r) => r.status)).toEqual([500, 500, 200]);
    const ids = new Set(receiver.received.map((r) => r.headers['webhook-id']));
    expect(ids.size).toBe(1);
    for (const request of receiver.received) {
      expect(receiver.verify(request, endpoint.secret)).toEqual({
        id: event.id,
        type: 'balance.low',
        createdAt: event.createdAt,
        data: { userId: account.external_user_id, available: 4, threshold: 10 },
      });
    }
    expect(h.queued()).toEqual([]);
    const [delivery] = await h.deliveries(endpoint.id);
    expect(delivery).toMatchObject({
      webhookId: [...ids][0],
      endpointId: endpoint.id,
      eventId: event.id,
      type: 'balance.low',
      status: 'delivered',
      attempts: 3,
      lastStatus: 200,
      nextAttemptAt: null,
    });
    const attempts = await listAttempts(db, String(delivery?.id));
    expect(attempts.map((a) => [a.status, a.webhook_id])).toEqual([
      [500, delivery?.webhookId],
      [500, delivery?.webhookId],
      [200, delivery?.webhookId],
    ]);
    expect(attempts[0]?.response).toBe('failing on purpose with 500');
    // The waits between them are the schedule's first two.
    const gaps = attempts
      .slice(1)
      .map((a, i) => (a.attempted_at.getTime() - attempts[i]!.attempted_at.getTime()) / 1000);
    expect(gaps).toEqual(DEFAULT_RETRY_SECONDS.slice(0, 2));
    await receiver.close();
  });

  it('sends a receiver down for the whole schedule to the DLQ as dead; redeliver sends it again', async () => {
    const retrySeconds = loadWebhookConfig({
      WEBHOOK_QUEUE_URL: QUEUE_URL,
      WEBHOOK_RETRY_SECONDS: '1, 2',
    }).retrySeconds;
    const h = harness({ retrySeconds });
    const port = await closedPort();
    const endpoint = await h.register(`http://127.0.0.1:${port}/hooks`);
    await commitEvent();

    await h.flush();
    expect(await h.drain()).toBe(3);

    const [dead] = await h.deliveries(endpoint.id);
    expect(dead).toMatchObject({ status: 'dead', attempts: 3, lastStatus: null, nextAttemptAt: null });
    expect(String(dead?.lastResponse)).toMatch(/^no response: ECONNREFUSED/);
    expect(h.deadLettered()).toEqual([{ deliveryId: dead?.id, reason: 'no 2xx after 3 attempts' }]);
    const dlq = await h.call('GET /v1/admin/webhook-deliveries', {
      query: { status: 'dead', endpoint: endpoint.id },
    });
    expect((dlq.body.items as unknown[]).length).toBe(1);

    const receiver = await startWebhookReceiver([200], port);
    const redelivered = await h.call('POST /v1/admin/webhook-deliveries/{id}/redeliver', {
      params: { id: String(dead?.id) },
      body: { reason: 'the app is back up' },
    });
    expect(redelivered).toMatchObject({ status: 200, body: { status: 'pending', attempts: 0 } });
    expect(await h.drain()).toBe(1);

    expect(receiver.received).toHaveLength(1);
    expect(receiver.received[0]?.headers['webhook-id']).toBe(dead?.webhookId);
    receiver.verify(receiver.received[0]!, endpoint.secret);
    const [delivered] = await h.deliveries(endpoint.id);
    expect(delivered).toMatchObject({ status: 'delivered', attempts: 1, lastStatus: 200 });
    expect((await listAttempts(db, String(dead?.id))).map((a) => a.status)).toEqual([null, null, null, 200]);
    const audit = await db
      .selectFrom('admin_actions')
      .select(['actor_arn', 'reason'])
      .where('action', '=', 'redeliver_webhook')
      .execute();
    expect(audit).toEqual([{ actor_arn: ADMIN_ARN, reason: 'the app is back up' }]);
    await receiver.close();
  });

  it('waits longer than SQS can delay in the database, and the sweeper sends the attempt when it falls due', async () => {
    const h = harness({ retrySeconds: [1200] });
    const receiver = await startWebhookReceiver([503, 200]);
    const endpoint = await h.register(receiver.url);
    await commitEvent();
    await h.flush();
    expect(await h.drain()).toBe(1);
    expect(h.queued()).toEqual([]);

    h.clock.advance(1199_000);
    await h.sweep();
    expect(h.queued()).toEqual([]);
    h.clock.advance(1000);
    expect(await h.sweep()).toMatchObject({ webhooksSent: 1 });
    expect(await h.drain()).toBe(1);

    expect(receiver.received.map((r) => r.status)).toEqual([503, 200]);
    expect((await h.deliveries(endpoint.id))[0]).toMatchObject({ status: 'delivered', attempts: 2 });
    await receiver.close();
  });

  it('never connects to an address off the public internet, whatever the endpoint resolves to by now', async () => {
    // Registered as the local stack allows, delivered by a dispatcher as in AWS: as if the endpoint's name
    // had been re-pointed at a private address after its registration.
    const h = harness({ retrySeconds: [1], deliverToLoopback: false });
    const receiver = await startWebhookReceiver([200]);
    const byName = await h.register(`http://localhost:${receiver.port}/hooks`);
    const byAddress = await h.register(receiver.url);
    await commitEvent();

    await h.flush();
    expect(await h.drain()).toBe(4);

    expect(receiver.received).toEqual([]);
    const [named] = await h.deliveries(byName.id);
    expect(named).toMatchObject({ status: 'dead', attempts: 2, lastStatus: null });
    expect(String(named?.lastResponse)).toMatch(
      /^no response: ENOTPUBLIC: localhost resolves only to addresses that are not public \(.*(127\.0\.0\.1|::1)/,
    );
    const [literal] = await h.deliveries(byAddress.id);
    expect(literal).toMatchObject({
      status: 'dead',
      lastResponse: 'no response: ENOTPUBLIC: 127.0.0.1 is not a public address',
    });
    await receiver.close();
  });

  it('gives up on an endpoint that does not answer in time, and keeps the status of one that answered slowly', async () => {
    const h = harness({ retrySeconds: [1], timeoutMs: 1_000 });
    const server = createServer((req, res) => {
      req.resume();
      // /silent never answers; /stalling answers its status and part of a body, then nothing.
      if (req.url === '/stalling') {
        res.writeHead(503, { 'content-type': 'text/plain' });
        res.write('busy, ');
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const silent = await h.register(`http://127.0.0.1:${port}/silent`);
    const stalling = await h.register(`http://127.0.0.1:${port}/stalling`);
    await commitEvent();

    await h.flush();
    expect(await h.drain()).toBe(4);

    const [timedOut] = await h.deliveries(silent.id);
    expect(timedOut).toMatchObject({
      status: 'dead',
      lastStatus: null,
      lastResponse: 'no response: timed out',
    });
    const [slow] = await h.deliveries(stalling.id);
    expect(slow).toMatchObject({ status: 'dead', lastStatus: 503, lastResponse: 'busy, ' });
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('reads no more of an answer than the excerpt it keeps', async () => {
    // A long timeout: were the endless body read on, this test would hang.
    const h = harness({ retrySeconds: [1], timeoutMs: 60_000 });
    const server = createServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/plain' });
      const chunk = 'x'.repeat(4096);
      const more = () => {
        if (!res.destroyed) res.write(chunk, () => setImmediate(more));
      };
      more();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const endpoint = await h.register(`http://127.0.0.1:${port}/endless`);
    await commitEvent();

    await h.flush();
    expect(await h.drain()).toBe(1);

    const [delivered] = await h.deliveries(endpoint.id);
    expect(delivered).toMatchObject({ status: 'delivered', lastStatus: 200 });
    expect(String(delivered?.lastResponse)).toBe('x'.repeat(RESPONSE_EXCERPT_CHARS));
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('makes one attempt when two messages for one delivery arrive together', async () => {
    const h = harness();
    const receiver = await startWebhookReceiver([200]);
    await h.register(receiver.url);
    await commitEvent();
    await h.flush();
    const [message] = h.queued();
    const dispatcher = createWebhookDispatcher({
      db,
      queue: sqsDeliveryQueue(new SQSClient({}), { queueUrl: QUEUE_URL }),
      cipher: localCipher,
      retrySeconds: [1],
      allowLoopbackHttp: true,
      clock: h.clock.now,
    });

    await dispatcher(
      sqsEvent([message!.MessageBody!, message!.MessageBody!]),
      lambdaContext('webhook-dispatcher'),
    );
    await dispatcher(sqsEvent([message!.MessageBody!]), lambdaContext('webhook-dispatcher'));

    expect(receiver.received).toHaveLength(1);
    await receiver.close();
  });

  it('sends each event only to the endpoints subscribed to its type, and none to a deleted endpoint', async () => {
    const h = harness();
    const receiver = await startWebhookReceiver([200]);
    const low = await h.register(receiver.url, ['balance.low']);
    const depleted = await h.register(receiver.url, ['balance.depleted', 'credits.granted']);
    const gone = await h.register(receiver.url, ['balance.depleted']);
    const deleted = await h.call('DELETE /v1/admin/webhook-endpoints/{id}', { params: { id: gone.id } });
    expect(deleted).toMatchObject({ status: 200, body: { id: gone.id, deletedAt: expect.any(String) } });
    await commitEvent('balance.depleted');

    await h.flush();
    await h.drain();

    expect(receiver.received).toHaveLength(1);
    expect(receiver.verify(receiver.received[0]!, depleted.secret)).toMatchObject({
      type: 'balance.depleted',
    });
    expect(await h.deliveries(low.id)).toEqual([]);
    expect(await h.deliveries(gone.id)).toEqual([]);
    const listed = await h.call('GET /v1/admin/webhook-endpoints');
    const ids = (listed.body.items as Array<{ id: string }>).map((e) => e.id);
    expect(ids).toEqual(expect.arrayContaining([low.id, depleted.id]));
    expect(ids).not.toContain(gone.id);
    expect(JSON.stringify(listed.body)).not.toContain('whsec_');
    await receiver.close();
  });
});

describe('outbound webhooks: deleted endpoints', () => {
  it('drops what is still to send to an endpoint deleted meanwhile: dead, not sent, nothing in the DLQ', async () => {
    const h = harness();
    const receiver = await startWebhookReceiver([200]);
    const endpoint = await h.register(receiver.url, ['spend_cap.reached']);
    await commitEvent('spend_cap.reached');
    await h.flush();
    await h.call('DELETE /v1/admin/webhook-endpoints/{id}', { params: { id: endpoint.id } });

    await h.drain();

    expect(receiver.received).toEqual([]);
    expect((await h.deliveries(endpoint.id))[0]).toMatchObject({
      status: 'dead',
      attempts: 0,
      lastResponse: 'endpoint deleted: not sent',
    });
    expect(h.deadLettered()).toEqual([]);
    await receiver.close();
  });
});

describe('outbound webhooks: the outbox', () => {
  it('survives a crash between commit and send: the sweeper sends the event', async () => {
    const h = harness();
    const receiver = await startWebhookReceiver([200]);
    const endpoint = await h.register(receiver.url, ['credits.granted']);
    // Committed, and the process dies before its post-commit flush.
    const { event } = await commitEvent('credits.granted');
    expect(h.queued()).toEqual([]);

    await h.sweep();
    await h.drain();

    expect(receiver.received).toHaveLength(1);
    expect(receiver.verify(receiver.received[0]!, endpoint.secret)).toMatchObject({ id: event.id });
    await receiver.close();
  });

  it('sends nothing for an event whose transaction rolled back', async () => {
    const h = harness();
    const receiver = await startWebhookReceiver([200]);
    const endpoint = await h.register(receiver.url, ['payment.refunded']);
    const account = await givenAccount(db);
    const rolledBack = db.transaction().execute(async (trx) => {
      await emitEvent(trx, {
        type: 'payment.refunded',
        accountId: account.id,
        data: { userId: account.external_user_id },
      });
      throw new Error('the change failed after the event was written');
    });
    await expect(rolledBack).rejects.toThrow('the change failed');

    await h.flush();
    await h.sweep();
    await h.drain();

    expect(receiver.received).toEqual([]);
    expect(await h.deliveries(endpoint.id)).toEqual([]);
    const outbox = await db
      .selectFrom('webhook_outbox')
      .select('id')
      .where('account_id', '=', account.id)
      .execute();
    expect(outbox).toEqual([]);
    await receiver.close();
  });

  it('refuses to write an event outside a transaction', async () => {
    const account = await givenAccount(db);
    await expect(
      emitEvent(db as never, { type: 'balance.low', data: { userId: account.external_user_id } }),
    ).rejects.toThrow('must run in the transaction');
  });
});

describe('outbound webhooks: endpoint registration', () => {
  it('stores the secret encrypted under the local key file (0600) and shows it once', async () => {
    const h = harness();
    const endpoint = await h.register('http://localhost:9/hooks');
    expect(endpoint.secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(Buffer.from(endpoint.secret.slice(6), 'base64')).toHaveLength(32);
    const row = await db
      .selectFrom('webhook_endpoints')
      .selectAll()
      .where('id', '=', endpoint.id)
      .executeTakeFirstOrThrow();
    expect(row.secret_ciphertext).toMatch(/^local:/);
    expect(row.secret_ciphertext).not.toContain(endpoint.secret.slice(6, 20));
    expect(await localCipher.decrypt(row.secret_ciphertext, endpoint.id)).toBe(endpoint.secret);
    await expect(localCipher.decrypt(row.secret_ciphertext, 'another-endpoint')).rejects.toThrow();
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
  });

  it('encrypts with KMS in AWS, bound to the endpoint, and signs with what KMS decrypts', async () => {
    const blobs = new Map<string, { plaintext: Uint8Array; context: Record<string, string> | undefined }>();
    kmsMock
      .on(EncryptCommand)
      .callsFake((input: { Plaintext: Uint8Array; EncryptionContext?: Record<string, string> }) => {
        const blob = `blob-${blobs.size}`;
        blobs.set(blob, { plaintext: input.Plaintext, context: input.EncryptionContext });
        return { CiphertextBlob: Buffer.from(blob), KeyId: 'key' };
      });
    kmsMock
      .on(DecryptCommand)
      .callsFake((input: { CiphertextBlob: Uint8Array; EncryptionContext?: Record<string, string> }) => {
        const stored = blobs.get(Buffer.from(input.CiphertextBlob).toString());
        if (!stored || JSON.stringify(stored.context) !== JSON.stringify(input.EncryptionContext)) {
          throw Object.assign(new Error('InvalidCiphertextException'), {
            name: 'InvalidCiphertextException',
          });
        }
        return { Plaintext: stored.plaintext };
      });
    const cipher = kmsSecretCipher(
      new KMSClient({ region: 'us-east-1' }),
      'arn:aws:kms:us-east-1:123456789012:key/webhooks',
    );
    const h = harness({ cipher, local: false });
    const receiver = await startWebhookReceiver([200]);
    // https only in AWS: this test's receiver is plain http, so its row is pointed there after registration.
    const endpoint = await h.register('https://hooks.example.com/credits');
    const row = await db
      .selectFrom('webhook_endpoints')
      .select('secret_ciphertext')
      .where('id', '=', endpoint.id)
      .executeTakeFirstOrThrow();
    expect(row.secret_ciphertext).toBe(`kms:${Buffer.from('blob-0').toString('base64')}`);
    expect(kmsMock.commandCalls(EncryptCommand)[0]?.args[0].input).toMatchObject({
      KeyId: 'arn:aws:kms:us-east-1:123456789012:key/webhooks',
      EncryptionContext: { purpose: 'webhook-signing-secret', endpointId: endpoint.id },
    });
    await db.transaction().execute(async (trx) => {
      await trx
        .updateTable('webhook_endpoints')
        .set({ url: receiver.url })
        .where('id', '=', endpoint.id)
        .execute();
    });
    await commitEvent();

    await h.flush();
    await h.drain();

    expect(receiver.received).toHaveLength(1);
    expect(receiver.verify(receiver.received[0]!, endpoint.secret)).toMatchObject({ type: 'balance.low' });
    await receiver.close();
  });

  it.each([
    ['AWS', false, 'http://127.0.0.1:8080/hooks', 'url: must use https'],
    ['AWS', false, 'ftp://hooks.example.com/', 'url: must use https'],
    ['local', true, 'http://hooks.example.com/credits', 'url: http is allowed only for loopback hosts'],
    ['local', true, 'http://10.0.0.7/hooks', 'url: http is allowed only for loopback hosts'],
    ['local', true, 'https://user:pw@hooks.example.com/', 'url: must not carry credentials'],
    ['AWS', false, 'https://10.0.0.7/hooks', 'url: points at 10.0.0.7, which is not a public address'],
    ['AWS', false, 'https://169.254.169.254/latest', 'url: points at 169.254.169.254, which is not a public'],
    [
      'AWS',
      false,
      'https://[::ffff:192.168.1.1]/',
      'url: points at [::ffff:c0a8:101], which is not a public',
    ],
    ['AWS', false, 'https://[fd00::1]/hooks', 'url: points at [fd00::1], which is not a public address'],
    ['AWS', false, 'https://127.1/hooks', 'url: points at 127.0.0.1, which is not a public address'],
    ['AWS', false, 'https://localhost/hooks', 'url: points at localhost, which is not a public address'],
    [
      'AWS',
      false,
      'https://hooks.localhost./',
      'url: points at hooks.localhost., which is not a public address',
    ],
    ['local', true, 'https://192.168.0.10/hooks', 'url: points at 192.168.0.10, which is not a public'],
    ['AWS', false, 'https://exa\tmple.com/h', 'url: must not contain whitespace or control characters'],
    ['AWS', false, ' https://example.com/h', 'url: must not contain whitespace or control characters'],
    ['AWS', false, 'https://example.com/\u0000', 'url: must not contain whitespace or control characters'],
    ['AWS', false, 'https://example.com:0/h', 'url: must not use port 0'],
    ['local', true, 'not-a-url', 'url: is not an absolute URL'],
  ])('refuses in %s mode %s with a precise 400 and writes nothing', async (_mode, local, url, message) => {
    const h = harness({ local });
    const before = await counts();
    const response = await h.call('POST /v1/admin/webhook-endpoints', {
      body: { url, events: ['balance.low'] },
    });
    expect(response.status).toBe(400);
    expect(response.body).toMatchObject({
      code: 'validation_error',
      detail: expect.stringContaining(message),
    });
    expect(await counts()).toEqual(before);
  });

  it('refuses unknown event types and an empty list with a 400 that names the field, writing nothing', async () => {
    const h = harness();
    const before = await counts();
    const unknown = await h.call('POST /v1/admin/webhook-endpoints', {
      body: { url: 'https://hooks.example.com/', events: ['balance.low', 'balance.lower'] },
    });
    expect(unknown.status).toBe(400);
    expect(unknown.body).toMatchObject({
      code: 'validation_error',
      detail: expect.stringContaining('events.1'),
    });
    const empty = await h.call('POST /v1/admin/webhook-endpoints', {
      body: { url: 'https://hooks.example.com/', events: [] },
    });
    expect(empty.status).toBe(400);
    expect(await counts()).toEqual(before);
  });

  it('answers 404 for an unknown endpoint or delivery, and 400 for a cursor it did not issue', async () => {
    const h = harness();
    const id = '00000000-0000-4000-8000-000000000000';
    expect((await h.call('DELETE /v1/admin/webhook-endpoints/{id}', { params: { id } })).status).toBe(404);
    const redeliver = await h.call('POST /v1/admin/webhook-deliveries/{id}/redeliver', {
      params: { id },
      body: { reason: 'retry' },
    });
    expect(redeliver.status).toBe(404);
    const cursor = await h.call('GET /v1/admin/webhook-deliveries', { query: { cursor: 'nope' } });
    expect(cursor).toMatchObject({ status: 400, body: { code: 'validation_error' } });
  });
});

describe('outbound webhooks: the delivery log', () => {
  it('refuses a cursor that is not one it returned, an ancient instant in one included, with a 400', async () => {
    const h = harness();
    const forged = (position: unknown) => `d1.${Buffer.from(JSON.stringify(position)).toString('base64url')}`;
    const id = '6f1c7a52-0d7e-4c1b-9a51-2b6f0e1d4c3a';
    for (const cursor of [
      forged(['-004714-11-23T00:00:00.000Z', id]),
      forged(['+275760-09-13T00:00:00.000Z', id]),
      forged(['2026-12-01', id]),
      forged(['2026-12-01T00:00:00.000Z', 'not-a-uuid']),
      forged(['2026-12-01T00:00:00.000Z']),
      'd1.garbage',
    ]) {
      const response = await h.call('GET /v1/admin/webhook-deliveries', { query: { cursor } });
      expect({ cursor, status: response.status, field: response.body.field }).toEqual({
        cursor,
        status: 400,
        field: 'cursor',
      });
    }
  });

  it('pages newest first and filters by status', async () => {
    const h = harness();
    const receiver = await startWebhookReceiver([200]);
    const endpoint = await h.register(receiver.url, ['grant.expiring']);
    for (let i = 0; i < 3; i++) await commitEvent('grant.expiring');
    await h.flush();

    const first = await h.call('GET /v1/admin/webhook-deliveries', {
      query: { endpoint: endpoint.id, limit: '2' },
    });
    const second = await h.call('GET /v1/admin/webhook-deliveries', {
      query: { endpoint: endpoint.id, limit: '2', cursor: String(first.body.nextCursor) },
    });
    const pages = [
      ...(first.body.items as Array<{ id: string }>),
      ...(second.body.items as Array<{ id: string }>),
    ];
    expect(pages).toHaveLength(3);
    expect(new Set(pages.map((d) => d.id)).size).toBe(3);
    expect(second.body.nextCursor).toBeNull();

    await h.drain();
    const pending = await h.call('GET /v1/admin/webhook-deliveries', {
      query: { endpoint: endpoint.id, status: 'pending' },
    });
    expect(pending.body.items).toEqual([]);
    const delivered = await h.call('GET /v1/admin/webhook-deliveries', {
      query: { endpoint: endpoint.id, status: 'delivered' },
    });
    expect(delivered.body.items).toHaveLength(3);
    await receiver.close();
  });
});
