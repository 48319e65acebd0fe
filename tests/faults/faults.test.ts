import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { type Kysely, sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { createCreditWorker } from '../../functions/credit-worker.js';
import { freePort, startLocalPostgres } from '../../local/postgres.js';
import { inAccountTransaction } from '../../shared/accounts/accounts.js';
import { createDb } from '../../shared/db/client.js';
import { migrateToLatest } from '../../shared/db/migrate.js';
import type { Database } from '../../shared/db/schema.js';
import { InsufficientCreditsError } from '../../shared/errors.js';
import { spendCredits } from '../../shared/ledger/ledger.js';
import { DEFAULT_PACKAGES } from '../../shared/packages.js';
import { createTestDatabase } from '../support/database.js';
import { givenAccount } from '../support/factories.js';
import { expectInvariantsHold } from '../support/invariants.js';
import {
  type Checkout,
  deliver,
  expectOnlyUncommittedFailed,
  givenCheckout,
  givenCheckouts,
  PACK,
  processBatch,
  purchaseState,
} from '../support/purchase.js';

async function slowDown(db: Kysely<Database>, table: 'processed_events' | 'ledger_entries', seconds: number) {
  await sql`CREATE OR REPLACE FUNCTION fault_slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(${sql.lit(seconds)}); RETURN NEW; END $$`.execute(
    db,
  );
  await sql`CREATE TRIGGER fault_slow AFTER INSERT ON ${sql.table(table)} FOR EACH ROW EXECUTE FUNCTION fault_slow()`.execute(
    db,
  );
}

const count = async (db: Kysely<Database>, table: 'processed_events' | 'ledger_entries') =>
  Number((await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.table(table)}`.execute(db)).rows[0]!.n);

describe('faults', () => {
  it('Postgres stopped mid-batch then restarted: nothing uncommitted is acknowledged, a redelivery finishes exactly', async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'credits-fault-pg-'));
    const port = await freePort();
    let server = await startLocalPostgres({ dataDir: path.join(dataDir, 'data'), port, ephemeral: true });
    const db = createDb(server.url, { max: 1 });
    try {
      await migrateToLatest(db);
      // 0.3 s an event: the stop lands after 3 of 12 whatever the machine's load (at 0.05 s it needed 450 ms).
      await slowDown(db, 'processed_events', 0.3);
      const checkouts: Checkout[] = [];
      for (let i = 0; i < 12; i++) checkouts.push(await givenCheckout(db));
      const worker = createCreditWorker({ db, packages: DEFAULT_PACKAGES });
      const events = checkouts.map((c) => c.completed());
      const { ids, response } = processBatch(worker, events);
      const observer = createDb(server.url, { max: 1 });
      while ((await count(observer, 'processed_events')) < 3) await new Promise((r) => setTimeout(r, 5));
      await observer.destroy();
      await server.stop();
      const cutOff = await response;

      server = await startLocalPostgres({ dataDir: path.join(dataDir, 'data'), port, ephemeral: true });
      const uncommitted = await expectOnlyUncommittedFailed(db, { events, ids, response: cutOff });
      expect((await deliver(worker, uncommitted)).batchItemFailures).toEqual([]);
      expect((await deliver(worker, events)).batchItemFailures).toEqual([]); // and every message once more
      for (const checkout of checkouts)
        expect((await purchaseState(db, checkout)).balance).toBe(PACK.credits);
      expect(await count(db, 'ledger_entries')).toBe(12);
      await expectInvariantsHold(db);
    } finally {
      await db.destroy();
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('pg_terminate_backend between the insert and the commit rolls the event back whole', async () => {
    const { db, url, owner } = await createTestDatabase({ max: 2 });
    const name = new URL(url).pathname.slice(1);
    const checkout = await givenCheckout(db);
    // Far longer than the test can take to find the insert: the termination cuts the sleep short.
    await slowDown(owner(), 'ledger_entries', 30);
    const workerDb = createDb(url, { max: 1, applicationName: 'fault-worker' });
    const worker = createCreditWorker({ db: workerDb, packages: DEFAULT_PACKAGES });
    const event = checkout.completed();
    const { ids, response } = processBatch(worker, [event]);
    let terminated = 0;
    while (terminated === 0) {
      const { rows } = await sql<{ terminated: boolean }>`
        SELECT pg_terminate_backend(pid) AS terminated FROM pg_stat_activity
        WHERE datname = ${name} AND application_name = 'fault-worker' AND query ILIKE 'insert into "ledger_entries"%'`.execute(
        db,
      );
      terminated = rows.length;
      await new Promise((r) => setTimeout(r, 5));
    }
    expect((await response).batchItemFailures).toEqual([{ itemIdentifier: ids[0] }]);
    expect(await count(db, 'processed_events')).toBe(0);
    expect(await count(db, 'ledger_entries')).toBe(0);
    expect((await purchaseState(db, checkout)).status).toBe('INIT');
    await sql`DROP TRIGGER fault_slow ON ledger_entries`.execute(owner());
    expect((await deliver(worker, [event])).batchItemFailures).toEqual([]);
    expect(await purchaseState(db, checkout)).toMatchObject({ balance: PACK.credits, status: 'CREDITED' });
    await workerDb.destroy();
    await expectInvariantsHold(db);
  });

  it('a crash after commit, before the acknowledgement, changes nothing on redelivery', async () => {
    const { db } = await createTestDatabase({ max: 10 });
    const worker = createCreditWorker({ db, packages: DEFAULT_PACKAGES });
    const checkouts = await Promise.all(Array.from({ length: 20 }, () => givenCheckout(db)));
    const events = checkouts.flatMap((c, i) => [
      c.completed(),
      c.chargeRefunded(100 * (i % 5)),
      c.disputeEvent('charge.dispute.created', `dp_${i}_${c.ids.charge}`, 'needs_response'),
    ]);
    for (let i = 0; i < events.length; i += 10) await deliver(worker, events.slice(i, i + 10)); // acknowledgements lost
    const before = await Promise.all(checkouts.map((c) => purchaseState(db, c)));
    const entries = await count(db, 'ledger_entries');
    for (let i = 0; i < events.length; i += 10) {
      expect((await deliver(worker, events.slice(i, i + 10))).batchItemFailures).toEqual([]);
    }
    expect(await Promise.all(checkouts.map((c) => purchaseState(db, c)))).toEqual(before);
    expect(await count(db, 'ledger_entries')).toBe(entries);
    await expectInvariantsHold(db);
  });

  it('10,000 events with 30% duplicates, shuffled across 8 concurrent workers, end in the exact expected balances', async () => {
    const { db, url } = await createTestDatabase({ max: 4 });
    const accounts = await Promise.all(Array.from({ length: 300 }, () => givenAccount(db)));
    const rng = fc.sample(fc.integer({ min: 0, max: 2 ** 31 - 1 }), { seed: 20261121, numRuns: 1 })[0]!;
    let state = rng;
    const random = () => {
      state = (state * 1103515245 + 12345) % 2 ** 31;
      return state / 2 ** 31;
    };
    const unique: object[] = [];
    const expected = new Map<string, number>();
    const checkouts = await givenCheckouts(
      db,
      Array.from({ length: 4_000 }, () => accounts[Math.floor(random() * accounts.length)]!),
    );
    for (const checkout of checkouts) {
      if (unique.length >= 7_000) break;
      const account = checkout.account;
      unique.push(checkout.completed());
      const refunded = random() < 0.5 ? [100, 250, 500][Math.floor(random() * 3)]! : 0;
      if (refunded) unique.push(checkout.chargeRefunded(refunded));
      const disputed = random() < 0.3;
      const won = disputed && random() < 0.5;
      if (disputed)
        unique.push(
          checkout.disputeEvent('charge.dispute.created', `dp_${checkout.ids.charge}`, 'needs_response'),
        );
      if (won)
        unique.push(checkout.disputeEvent('charge.dispute.closed', `dp_${checkout.ids.charge}`, 'won'));
      const refundTaken = Math.floor((PACK.credits * refunded) / PACK.amount);
      const remaining = disputed && !won ? 0 : PACK.credits - refundTaken;
      expected.set(account.id, (expected.get(account.id) ?? 0) + remaining);
    }
    const all = [
      ...unique,
      ...Array.from({ length: 10_000 - unique.length }, () => unique[Math.floor(random() * unique.length)]!),
    ];
    for (let i = all.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [all[i], all[j]] = [all[j]!, all[i]!];
    }
    const duplicates = all.length - unique.length;
    expect(duplicates / all.length).toBeCloseTo(0.3, 1);

    const batches: object[][] = [];
    for (let i = 0; i < all.length; i += 10) batches.push(all.slice(i, i + 10));
    const pools = Array.from({ length: 8 }, () => createDb(url, { max: 2 }));
    await Promise.all(
      pools.map(async (pool) => {
        const worker = createCreditWorker({ db: pool, packages: DEFAULT_PACKAGES });
        for (let batch = batches.shift(); batch; batch = batches.shift()) {
          let pending = batch;
          while (pending.length > 0) {
            const { ids, response } = processBatch(worker, pending);
            const failed = new Set((await response).batchItemFailures.map((f) => f.itemIdentifier));
            pending = pending.filter((_, i) => failed.has(ids[i]!)); // SQS redelivers only these
          }
        }
      }),
    );
    await Promise.all(pools.map((p) => p.destroy()));

    const balances = await db.selectFrom('accounts').select(['id', 'balance']).execute();
    for (const { id, balance } of balances) expect(balance, id).toBe(expected.get(id) ?? 0);
    expect(await count(db, 'processed_events')).toBe(unique.length);
    await expectInvariantsHold(db);
  }, 300_000);

  it('spends and credits racing on one hot account keep every credit and never overspend', async () => {
    const { db } = await createTestDatabase({ max: 20 });
    const account = await givenAccount(db);
    const checkouts = await Promise.all(Array.from({ length: 150 }, () => givenCheckout(db, account)));
    const worker = createCreditWorker({ db, packages: DEFAULT_PACKAGES });
    // 150 credits in flight at once while 8 spenders keep taking 700 credits at a time; the spenders go on
    // until every credit has landed, so spends race the credits from the first to the last.
    let crediting = true;
    const credits = Promise.all(checkouts.map((checkout) => deliver(worker, [checkout.completed()]))).finally(
      () => {
        crediting = false;
      },
    );
    let attempts = 0;
    const spender = async () => {
      let spent = 0;
      for (let more = true; more; more = crediting) {
        const key = `race-${attempts++}`;
        const ok = await inAccountTransaction(db, account.id, (trx, locked) =>
          spendCredits(trx, locked, { amount: 700, idempotencyKey: key }),
        ).then(
          () => true,
          (error: unknown) => {
            if (!(error instanceof InsufficientCreditsError)) throw error;
            return false;
          },
        );
        if (ok) spent++;
      }
      return spent;
    };
    const [creditResults, ...perSpender] = await Promise.all([
      credits,
      ...Array.from({ length: 8 }, spender),
    ]);
    expect(creditResults.flatMap((r) => r.batchItemFailures)).toEqual([]);
    const spent = perSpender.reduce((a, b) => a + b, 0);
    const final = await db
      .selectFrom('accounts')
      .select('balance')
      .where('id', '=', account.id)
      .executeTakeFirstOrThrow();
    expect(spent).toBeGreaterThan(0);
    expect(final.balance).toBe(150 * PACK.credits - 700 * spent);
    expect(final.balance).toBeGreaterThanOrEqual(0);
    const spends = await db
      .selectFrom('ledger_entries')
      .select(({ fn }) => fn.countAll<number>().as('n'))
      .where('account_id', '=', account.id)
      .where('kind', '=', 'spend')
      .executeTakeFirstOrThrow();
    expect(Number(spends.n)).toBe(spent);
    await expectInvariantsHold(db);
  });
});
