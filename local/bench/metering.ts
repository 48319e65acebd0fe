import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { findOrCreateAccount, inAccountTransaction } from '../../shared/accounts/accounts.js';
import { adjustCredits } from '../../shared/ledger/ledger.js';
import { type BenchContext, fmt } from './harness.js';
import { activateBenchPrices, BENCH_ACTOR as actor, BENCH_SKU, benchRouter, serviceEvent } from './router.js';

const ACCOUNTS = 100;
const BATCH = 500;

/**
 * Usage ingestion through the api router in process (API Gateway events in, the JSON, zod and problem
 * handling included), in 500-event batches over 100 accounts, against the same rows written by one
 * multi-row INSERT per batch. (Single debits, holds and usage events at 16 clients: the debit section.)
 */
export async function benchMetering({ db, scale, report }: BenchContext): Promise<void> {
  console.error(`metering: usage batches of ${BATCH} over ${ACCOUNTS} accounts, against a multi-row INSERT`);
  await activateBenchPrices(db);
  const users = Array.from({ length: ACCOUNTS }, (_, i) => `bench-meter-${i}-${randomUUID().slice(0, 8)}`);
  for (const user of users) {
    const account = await findOrCreateAccount(db, user);
    await inAccountTransaction(db, account.id, (trx, locked) =>
      adjustCredits(trx, locked, { ...actor, amount: 1_000_000_000_000 }),
    );
  }
  const call = benchRouter(db, 10);

  // Each batch is one request and one transaction (debit_usage): a few hundred milliseconds on this machine.
  const batches = scale.seconds > 2 ? 20 : 10;
  const batchOf = (b: number | string) =>
    Array.from({ length: BATCH }, (_, i) => ({
      eventId: `bench-${b}-${i}`,
      userId: users[i % ACCOUNTS]!,
      sku: BENCH_SKU,
      usage: { inputTokens: 100 + (i % 50), outputTokens: 20 },
    }));
  // Untimed: the first call of a session plans the functions' statements.
  await call(serviceEvent('POST /v1/usage', {}, { events: batchOf('warm-up') }), 200);
  let started = performance.now();
  for (let b = 0; b < batches; b++) {
    const answer = await call(serviceEvent('POST /v1/usage', {}, { events: batchOf(b) }), 200);
    const applied = (answer.results as Array<{ status: string }>).filter(
      (r) => r.status === 'applied',
    ).length;
    if (applied !== BATCH) throw new Error(`usage batch ${b}: ${applied} of ${BATCH} applied`);
  }
  const ours = (batches * BATCH) / ((performance.now() - started) / 1000);
  // The baseline: the same event rows, one multi-row INSERT per batch, into a table shaped like
  // usage_events with its defaults and indexes (logged, like it: a temporary table would skip the WAL);
  // without its checks, since these rows name no ledger entry.
  await sql`CREATE TABLE bench_usage_rows (LIKE usage_events INCLUDING DEFAULTS INCLUDING INDEXES)`.execute(
    db,
  );
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
}
