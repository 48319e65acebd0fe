import { randomUUID } from 'node:crypto';
import { type Kysely, sql } from 'kysely';
import { createCreditWorker } from '../../functions/credit-worker.js';
import { createDb } from '../../shared/db/client.js';
import type { Database } from '../../shared/db/schema.js';
import { DEFAULT_PACKAGES } from '../../shared/packages.js';
import {
  type CapturedTransaction,
  connect,
  expectSameRowsWritten,
  hasPgbench,
  replayWithPg,
  replayWithPgbench,
} from './captured-transaction.js';
import { captureCreditTransaction, replayItem, type WorkItem } from './credit-transaction.js';
import { checkoutSession, lambdaContext, sqsEvent, stripeEvent } from './events.js';
import { type BenchContext, fmt } from './harness.js';

/** Concurrent worker instances: the SQS event source's maxConcurrency default in infra/. */
const WORKERS = 5;
const PACK = DEFAULT_PACKAGES[0]!;

/** `owners` payments awaiting credit (one per entry), and the checkout.session.completed event of each. */
async function seedPurchases(db: Kysely<Database>, owners: readonly string[]): Promise<WorkItem[]> {
  const items: WorkItem[] = [];
  for (let i = 0; i < owners.length; i += 1000) {
    const payments = await db
      .insertInto('payments')
      .values(
        owners.slice(i, i + 1000).map((accountId) => ({
          account_id: accountId,
          package_id: PACK.id,
          credits: PACK.credits,
          amount_total: PACK.amount,
          currency: PACK.currency,
          stripe_checkout_session_id: `cs_test_${randomUUID().replaceAll('-', '')}`,
        })),
      )
      .returning(['id', 'account_id', 'stripe_checkout_session_id'])
      .execute();
    for (const payment of payments) {
      const sessionId = payment.stripe_checkout_session_id!;
      const intentId = `pi_${sessionId.slice(8)}`;
      const event = stripeEvent(
        'checkout.session.completed',
        checkoutSession({
          id: sessionId,
          payment_intent: intentId,
          amount_total: PACK.amount,
          currency: PACK.currency,
          client_reference_id: null,
          metadata: { payment_id: payment.id, package_id: PACK.id },
        }),
      );
      items.push({
        accountId: payment.account_id,
        paymentId: payment.id,
        sessionId,
        intentId,
        eventId: String(event.id),
        body: JSON.stringify(event),
      });
    }
  }
  return items;
}

async function seedAccounts(db: Kysely<Database>, count: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i += 1000) {
    const rows = await db
      .insertInto('accounts')
      .values(Array.from({ length: Math.min(1000, count - i) }, () => ({ external_user_id: randomUUID() })))
      .returning('id')
      .execute();
    ids.push(...rows.map((r) => r.id));
  }
  return ids;
}

/** Takes batches of 10 from `items` with `instances` concurrent consumers; events per second. */
async function drain(
  items: readonly WorkItem[],
  instances: number,
  consume: (batch: WorkItem[], i: number) => Promise<void>,
): Promise<number> {
  const queue = [...items];
  const started = performance.now();
  await Promise.all(
    Array.from({ length: instances }, async (_, i) => {
      for (let batch = queue.splice(0, 10); batch.length > 0; batch = queue.splice(0, 10))
        await consume(batch, i);
    }),
  );
  return items.length / ((performance.now() - started) / 1000);
}

type Throughput = (databaseUrl: string, items: readonly WorkItem[]) => Promise<number>;

/** The real handler: each instance is one Lambda, with its own handler and a pool of one connection. */
const workerThroughput: Throughput = async (databaseUrl, items) => {
  const dbs = Array.from({ length: WORKERS }, () =>
    createDb(databaseUrl, { max: 1, applicationName: 'bench-worker' }),
  );
  try {
    const workers = dbs.map((db) => createCreditWorker({ db, packages: DEFAULT_PACKAGES }));
    return await drain(items, WORKERS, async (batch, i) => {
      const response = await workers[i]!(sqsEvent(batch.map((w) => w.body)), lambdaContext('credit-worker'));
      if (response.batchItemFailures.length > 0)
        throw new Error('the worker failed records during the benchmark');
    });
  } finally {
    await Promise.all(dbs.map((db) => db.destroy()));
  }
};

/** The captured transaction through raw `pg`, one connection per instance. */
const rawThroughput =
  (transaction: CapturedTransaction): Throughput =>
  async (databaseUrl, items) => {
    const clients = await Promise.all(Array.from({ length: WORKERS }, () => connect(databaseUrl)));
    try {
      return await drain(items, WORKERS, async (batch, i) => {
        for (const item of batch) await replayWithPg(clients[i]!, transaction, replayItem(item));
      });
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
  };

/**
 * The worker's own transaction, captured from its query log on a fresh account's second purchase, and
 * proven at start-up: one replay through raw `pg` and one through pgbench (when installed) must each
 * write the rows per table the worker did.
 */
async function captureBaseline(db: Kysely<Database>, databaseUrl: string) {
  const [owner] = await seedAccounts(db, 1);
  const [first, second] = (await seedPurchases(db, [owner!, owner!])) as [WorkItem, WorkItem];
  const transaction = await captureCreditTransaction(databaseUrl, first, second);
  const pgbench = hasPgbench();
  const [forPg, forPgbench] = await seedPurchases(db, pgbench ? [owner!, owner!] : [owner!]);
  const client = await connect(databaseUrl);
  try {
    await replayWithPg(client, transaction, replayItem(forPg!));
    await expectSameRowsWritten(client, transaction, replayItem(forPg!), 'raw pg');
    if (forPgbench) {
      await replayWithPgbench(databaseUrl, transaction, [replayItem(forPgbench)], 1);
      await expectSameRowsWritten(client, transaction, replayItem(forPgbench), 'pgbench');
    }
    return { transaction, pgbench };
  } finally {
    await client.end();
  }
}

/** The crediting worker on spread accounts and on one hot account, against its own transaction replayed. */
export async function benchWorker({ db, databaseUrl, scale, report }: BenchContext): Promise<void> {
  console.error(`worker: ${fmt(scale.spreadAccounts)} accounts and one hot account, ${WORKERS} instances`);
  const baseline = await captureBaseline(db, databaseUrl);
  console.error(
    `  baseline: the worker's transaction, ${baseline.transaction.statements.length} statements from its query log, writing ${JSON.stringify(baseline.transaction.rowsWritten)}`,
  );
  const raw = rawThroughput(baseline.transaction);
  const spread = await seedAccounts(db, scale.spreadAccounts);
  const [hot] = await seedAccounts(db, 1);
  const hotOwners = () => Array.from({ length: scale.hotEvents }, () => hot!);
  for (const [label, owners] of [
    [`worker, ${fmt(scale.spreadAccounts)} accounts`, () => spread],
    [`worker, one hot account (${fmt(scale.hotEvents)} events)`, hotOwners],
  ] as const) {
    // Raw, ours, ours, raw on halves (each after VACUUM ANALYZE), so the growing tables and autovacuum
    // weigh on both sides alike; equal halves combine by the harmonic mean.
    const all = owners();
    const halves = [all.slice(0, all.length / 2), all.slice(all.length / 2)];
    const phase = async (run: Throughput, half: string[]) => {
      await sql`VACUUM ANALYZE`.execute(db);
      return run(databaseUrl, await seedPurchases(db, half));
    };
    const harmonic = (a: number, b: number) => 2 / (1 / a + 1 / b);
    const raw1 = await phase(raw, halves[0]!);
    const ours1 = await phase(workerThroughput, halves[0]!);
    const ours2 = await phase(workerThroughput, halves[1]!);
    const raw2 = await phase(raw, halves[1]!);
    const rawPerSecond = harmonic(raw1, raw2);
    const ours = harmonic(ours1, ours2);
    let bench: number | undefined;
    if (baseline.pgbench) {
      await sql`VACUUM ANALYZE`.execute(db);
      const purchases = await seedPurchases(db, all);
      ({ perSecond: bench } = await replayWithPgbench(
        databaseUrl,
        baseline.transaction,
        purchases.map(replayItem),
        WORKERS,
      ));
    }
    const ratio = ours / rawPerSecond;
    report({
      name: label,
      ours: `${fmt(ours)} events/s`,
      baseline: `raw pg ${fmt(rawPerSecond)}/s${bench ? `, pgbench ${fmt(bench)}/s` : ''}`,
      ratio,
      target: '≥ 0.6 of raw pg',
      met: ratio >= 0.6,
      figures: {
        eventsPerSecond: ours,
        rawPgPerSecond: rawPerSecond,
        ...(bench && { pgbenchPerSecond: bench }),
      },
    });
  }
}
