import { randomUUID } from 'node:crypto';
import type { APIGatewayProxyEventV2 } from 'aws-lambda';
import { sql } from 'kysely';
import { findOrCreateAccount, inAccountTransaction } from '../../shared/accounts/accounts.js';
import { createApiRouter } from '../../shared/api/router.js';
import type { ApiConfig } from '../../shared/config.js';
import { adjustCredits } from '../../shared/ledger/ledger.js';
import { DEFAULT_PACKAGES } from '../../shared/packages.js';
import { DEFAULT_CATALOG } from '../../shared/plans/catalog.js';
import { activatePriceBook, createPriceBookDraft } from '../../shared/pricing/price-book.js';
import { fixture } from './events.js';
import { type BenchContext, fmt, latency, load } from './harness.js';

const SERVICE_ARN = 'arn:aws:sts::000000000000:assumed-role/bench-service/bench';
const actor = { actorArn: 'arn:aws:iam::000000000000:user/bench-admin', reason: 'bench' };
const ACCOUNTS = 100;
const BATCH = 500;
const CLIENTS = 16;

/** An API Gateway v2 event for a service route, from AWS's IAM sample, as the api function receives it. */
function serviceEvent(
  routeKey: string,
  pathParameters: Record<string, string>,
  body: unknown,
  headers: Record<string, string> = {},
) {
  const sample = fixture<APIGatewayProxyEventV2 & { requestContext: { authorizer: { iam: object } } }>(
    'aws/apigw-v2-request-iam.json',
  );
  return {
    ...sample,
    routeKey,
    pathParameters,
    queryStringParameters: undefined,
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
    isBase64Encoded: false,
    requestContext: {
      ...sample.requestContext,
      requestId: randomUUID(),
      authorizer: { iam: { ...sample.requestContext.authorizer.iam, userArn: SERVICE_ARN } },
    },
  } as unknown as APIGatewayProxyEventV2;
}

/**
 * Metering through the api router in process (API Gateway events in, the JSON, zod and problem handling
 * included): usage ingestion in 500-event batches over 100 accounts against the same rows written by one
 * multi-row INSERT per batch, and a hold created and captured against a spend, at 16 clients.
 */
export async function benchMetering({ db, scale, report }: BenchContext): Promise<void> {
  console.error(
    `metering: ${ACCOUNTS} accounts, usage batches of ${BATCH}, holds and spends at ${CLIENTS} clients`,
  );
  await createPriceBookDraft(
    db,
    {
      version: `bench-${randomUUID().slice(0, 8)}`,
      items: [{ sku: 'bench/chat', kind: 'tokens', rates: { input: '1000000', output: '2000000' } }],
    },
    actor,
  ).then((book) => activatePriceBook(db, book.version, actor, new Date(Date.now() - 60_000)));
  const users = Array.from({ length: ACCOUNTS }, (_, i) => `bench-meter-${i}-${randomUUID().slice(0, 8)}`);
  for (const user of users) {
    const account = await findOrCreateAccount(db, user);
    await inAccountTransaction(db, account.id, (trx, locked) =>
      adjustCredits(trx, locked, { ...actor, amount: 1_000_000_000_000 }),
    );
  }
  const config: ApiConfig = {
    database: { url: 'in-process' },
    poolMax: 10,
    packages: DEFAULT_PACKAGES,
    checkoutSuccessUrl: 'https://bench.invalid/ok',
    checkoutCancelUrl: 'https://bench.invalid/cancel',
    corsAllowedOrigins: [],
    maxOpenCheckouts: 5,
    adminPrincipals: [],
    allowPromotionCodes: false,
    plans: DEFAULT_CATALOG,
  };
  const route = createApiRouter({
    db,
    config,
    stripe: async () => {
      throw new Error('the bench calls no Stripe route');
    },
    dispatchReconciliation: async () => {},
  });
  const call = async (event: APIGatewayProxyEventV2, expected: number) => {
    const response = await route(event);
    if (response.statusCode !== expected)
      throw new Error(`${event.routeKey}: ${response.statusCode} ${response.body}`);
    return JSON.parse(response.body ?? '{}') as Record<string, unknown>;
  };

  const batches = scale.seconds >= 10 ? 20 : 4;
  const batchOf = (b: number) =>
    Array.from({ length: BATCH }, (_, i) => ({
      eventId: `bench-${b}-${i}`,
      userId: users[i % ACCOUNTS]!,
      sku: 'bench/chat',
      usage: { inputTokens: 100 + (i % 50), outputTokens: 20 },
    }));
  let started = performance.now();
  for (let b = 0; b < batches; b++) {
    const answer = await call(serviceEvent('POST /v1/usage', {}, { events: batchOf(b) }), 200);
    const applied = (answer.results as Array<{ status: string }>).filter(
      (r) => r.status === 'applied',
    ).length;
    if (applied !== BATCH) throw new Error(`usage batch ${b}: ${applied} of ${BATCH} applied`);
  }
  const ours = (batches * BATCH) / ((performance.now() - started) / 1000);
  // The baseline: the same event rows, one multi-row INSERT per batch, into a table shaped like usage_events.
  await sql`CREATE TEMP TABLE bench_usage_rows (LIKE usage_events INCLUDING DEFAULTS)`.execute(db);
  const accountIds = await db
    .selectFrom('accounts')
    .select(['id', 'external_user_id'])
    .where('external_user_id', 'in', users)
    .execute();
  const idOf = new Map(accountIds.map((a) => [a.external_user_id, a.id]));
  started = performance.now();
  for (let b = 0; b < batches; b++) {
    const rows = batchOf(b).map(
      (e) =>
        sql`(${idOf.get(e.userId)}::uuid, ${e.eventId}, 'hash', ${e.sku}, 'bench', ${e.usage.inputTokens + 2 * e.usage.outputTokens}::bigint, NULL, now())`,
    );
    await sql`INSERT INTO bench_usage_rows (account_id, event_id, payload_hash, sku, price_version, credits, entry_id, occurred_at)
      VALUES ${sql.join(rows)}`.execute(db);
  }
  const raw = (batches * BATCH) / ((performance.now() - started) / 1000);
  await sql`DROP TABLE bench_usage_rows`.execute(db);
  report({
    name: `usage ingestion, ${batches} batches of ${BATCH} over ${ACCOUNTS} accounts`,
    ours: `${fmt(ours)} events/s`,
    baseline: `multi-row INSERT of the event rows ${fmt(raw)} rows/s`,
    ratio: ours / raw,
    target: '≥ 0.5 of the INSERT (issue 21)',
    met: ours / raw >= 0.5,
    figures: { eventsPerSecond: ours, rawRowsPerSecond: raw },
  });

  const userOf = (client: number) => users[client % ACCOUNTS]!;
  const holdAndCapture = await load(CLIENTS, scale.seconds, async (client, i) => {
    const created = await call(
      serviceEvent(
        'POST /v1/accounts/{userId}/holds',
        { userId: userOf(client) },
        { credits: 5 },
        {
          'idempotency-key': `bench-hold-${client}-${i}-${randomUUID()}`,
        },
      ),
      201,
    );
    await call(
      serviceEvent('POST /v1/holds/{holdId}/capture', { holdId: String(created.holdId) }, { credits: 3 }),
      200,
    );
  });
  const spend = await load(CLIENTS, scale.seconds, async (client, i) => {
    await call(
      serviceEvent(
        'POST /v1/accounts/{userId}/spend',
        { userId: userOf(client) },
        { amount: 3 },
        {
          'idempotency-key': `bench-spend-${client}-${i}-${randomUUID()}`,
        },
      ),
      200,
    );
  });
  report({
    name: `hold + capture, ${CLIENTS} clients, in process`,
    ours: latency(holdAndCapture),
    baseline: `spend ${latency(spend)}`,
    ratio: holdAndCapture.perSecond / spend.perSecond,
    figures: { ...holdAndCapture, spendPerSecond: spend.perSecond },
  });
}
