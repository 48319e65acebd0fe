import { randomBytes } from 'node:crypto';
import { type Kysely, Migrator, sql } from 'kysely';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createDatabase, dropDatabase } from '../../local/postgres.js';
import { migrationProvider } from '../../migrations/index.js';
import { heldCredits } from '../../shared/accounts/accounts.js';
import { createDb } from '../../shared/db/client.js';
import { lockKey } from '../../shared/db/locks.js';
import type { Account, Database } from '../../shared/db/schema.js';
import { captureHold, createHold, expireDueHolds, voidHold } from '../../shared/holds/holds.js';
import { checkInvariants } from '../../shared/invariants.js';
import { createTestDatabase } from '../support/database.js';
import { givenFundedAccount, givenRefund, testClock } from '../support/factories.js';
import { expectInvariantsHold } from '../support/invariants.js';

// accounts.held counts the credits of the account's active holds (migration 2026-12-14), kept by a trigger on
// holds; what they reserve at an instant is the counter less the holds past their expiry not yet marked.
const { db, owner } = await createTestDatabase({ max: 20 });

/** The counter, and the credits of the account's active holds summed from the holds themselves. */
async function counted(target: Kysely<Database>, accountId: string) {
  const { rows } = await sql<{ held: number; active: number }>`
    SELECT a.held, (SELECT coalesce(sum(credits), 0)::bigint FROM holds
                    WHERE account_id = a.id AND status = 'active') AS active
    FROM accounts a WHERE a.id = ${accountId}`.execute(target);
  return rows[0]!;
}

const hold = (account: Account, credits: number, key: string, ttlSeconds: number, now: Date) =>
  createHold(
    db,
    account.external_user_id!,
    { credits, idempotencyKey: key, request: { key }, ttlSeconds },
    now,
  );

describe('the held counter', () => {
  it('follows every writer of a hold, and what is held stops counting a hold at its expiry, swept or not', async () => {
    const clock = testClock();
    const { account, payment } = await givenFundedAccount(db, 100);
    const short = await hold(account, 10, 'short', 60, clock.now());
    const long = await hold(account, 20, 'long', 600, clock.now());
    const small = await hold(account, 5, 'small', 600, clock.now());
    expect(await counted(db, account.id)).toEqual({ held: 35, active: 35 });
    expect(await heldCredits(db, account.id, clock.now())).toBe(35);

    clock.advance(61_000);
    // Past its expiry, not swept: still counted, no longer held.
    expect(await counted(db, account.id)).toEqual({ held: 35, active: 35 });
    expect(await heldCredits(db, account.id, clock.now())).toBe(25);

    // Available after it: 92 less the 5 still held (the short hold is past its expiry, the capture's own out).
    expect(await captureHold(db, long.hold.id, { credits: 8 }, 8, clock.now())).toMatchObject({
      balance: 92,
      available: 87,
    });
    expect(await counted(db, account.id)).toEqual({ held: 15, active: 15 });
    expect(await voidHold(db, small.hold.id, clock.now())).toMatchObject({ balance: 92, available: 92 });
    expect(await counted(db, account.id)).toEqual({ held: 10, active: 10 });
    expect(await heldCredits(db, account.id, clock.now())).toBe(0);
    // A capture after the expiry charges like a spend; the counter loses the hold all the same.
    const late = await hold(account, 7, 'late', 1, clock.now());
    clock.advance(2_000);
    expect(await captureHold(db, late.hold.id, { credits: 3 }, 3, clock.now())).toMatchObject({
      balance: 89,
      available: 89,
    });
    expect(await counted(db, account.id)).toEqual({ held: 10, active: 10 });

    expect((await expireDueHolds(db, clock.now())).expired).toBeGreaterThanOrEqual(1);
    expect(
      (await db.selectFrom('holds').select('status').where('id', '=', short.hold.id).executeTakeFirst())
        ?.status,
    ).toBe('expired');
    expect(await counted(db, account.id)).toEqual({ held: 0, active: 0 });

    // A clawback shrinks the holds it leaves uncovered: the counter follows the new amounts.
    await hold(account, 40, 'older', 600, clock.now());
    await hold(account, 40, 'newer', 600, clock.now());
    // 70 % refunded: 70 credits clawed back, 19 left of 89 for 80 held.
    await givenRefund(db, payment, 700, 're_held');
    expect(await counted(db, account.id)).toEqual({ held: 19, active: 19 });
    expect(await heldCredits(db, account.id, clock.now())).toBe(19);
    await expectInvariantsHold(db, clock.now());
  });

  it('stays exact when the sweeper expires holds while captures and voids settle the same ones', async () => {
    const clock = testClock();
    const accounts = await Promise.all(Array.from({ length: 12 }, () => givenFundedAccount(db, 1_000)));
    const holds = (
      await Promise.all(
        accounts.flatMap(({ account }) =>
          Array.from({ length: 8 }, (_, i) => hold(account, 3 + i, `race-${i}`, 1 + (i % 3), clock.now())),
        ),
      )
    ).map((h) => h.hold);
    clock.advance(2_000); // about two thirds of them past their expiry
    const settle = holds.map((h, i) =>
      i % 3 === 0
        ? captureHold(db, h.id, { credits: 2 }, 2, clock.now())
        : i % 3 === 1
          ? voidHold(db, h.id, clock.now())
          : Promise.resolve(),
    );
    const sweeps = [
      expireDueHolds(db, clock.now(), { batch: 5 }),
      expireDueHolds(db, clock.now(), { batch: 7 }),
    ];
    await Promise.all([...settle, ...sweeps]);
    for (const { account } of accounts) {
      const { held, active } = await counted(db, account.id);
      expect(held).toBe(active);
      expect(await heldCredits(db, account.id, clock.now())).toBe(
        holds
          .filter((h, i) => h.account_id === account.id && i % 3 === 2 && h.expires_at > clock.now())
          .reduce((sum, h) => sum + h.credits, 0),
      );
    }
    await expectInvariantsHold(db, clock.now());
  });

  it('is changed by the sweeper only under the account lock: it waits for a writer of the account', async () => {
    const clock = testClock();
    const { account } = await givenFundedAccount(db, 50);
    const { hold: due } = await hold(account, 10, 'waits', 1, clock.now());
    clock.advance(2_000);
    const statusOf = async () =>
      (await db.selectFrom('holds').select('status').where('id', '=', due.id).executeTakeFirstOrThrow())
        .status;
    let release = () => {};
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    let locked = () => {};
    const isLocked = new Promise<void>((resolve) => {
      locked = resolve;
    });
    const writer = db.transaction().execute(async (trx) => {
      await lockKey(trx, 'account', account.id);
      locked();
      await released;
    });
    await isLocked;
    const sweep = expireDueHolds(db, clock.now());
    await expect
      .poll(async () => {
        const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory'`.execute(
          db,
        );
        return rows[0]!.n;
      })
      .toBe(1);
    expect(await statusOf()).toBe('active');
    release();
    await writer;
    expect((await sweep).expired).toBeGreaterThanOrEqual(1);
    expect(await statusOf()).toBe('expired');
    expect(await counted(db, account.id)).toEqual({ held: 0, active: 0 });
  });

  it('is reported by the invariant check when it disagrees with the holds', async () => {
    const clock = testClock();
    const { account } = await givenFundedAccount(db, 50);
    await hold(account, 10, 'tampered', 600, clock.now());
    await sql`UPDATE accounts SET held = 11 WHERE id = ${account.id}`.execute(owner());
    const report = await checkInvariants(db, clock.now());
    expect(report.violations.filter((v) => v.accountId === account.id)).toEqual([
      expect.objectContaining({ invariant: 11, detail: 'held counter 11, active holds 10' }),
    ]);
    await sql`UPDATE accounts SET held = 10 WHERE id = ${account.id}`.execute(owner());
  });
});

describe('the held-counter migration', () => {
  const serverUrl = inject('postgresServerUrl');
  const name = `credits_held_${randomBytes(6).toString('hex')}`;
  let target: Kysely<Database> | undefined;
  afterAll(async () => {
    await target?.destroy();
    await dropDatabase(serverUrl, name);
  });

  it('fills the counters of holds written before it, and down takes them away leaving holds working', async () => {
    target = createDb(await createDatabase(serverUrl, name), {
      max: 1,
      applicationName: 'credits-test-owner',
    });
    const migrator = new Migrator({ db: target, provider: migrationProvider });
    expect((await migrator.migrateTo('2026-12-13-usage-batch')).error).toBeUndefined();
    const now = new Date();
    const holdOf = (user: string, key: string, credits: number) =>
      sql<{ answer: { hold: { id: string } } }>`
      SELECT debit_credits('hold', ${user}, NULL, NULL, ${key}, ${credits}::bigint, 'h',
        ${JSON.stringify({ ttlSeconds: 600 })}::jsonb, NULL, ${now}::timestamptz) AS answer`.execute(target!);
    await sql`
      INSERT INTO accounts (id, external_user_id, balance, version) VALUES
        ('00000000-0000-4000-8000-000000000001', 'holder', 100, 1),
        ('00000000-0000-4000-8000-000000000002', 'no-holds', 100, 1);
    `.execute(target);
    await holdOf('holder', 'a', 30);
    const voided = (await holdOf('holder', 'b', 12)).rows[0]!.answer.hold.id;
    await holdOf('holder', 'c', 5);
    // Active and past its expiry, not yet marked: counted (the sweeper will take it off when it marks it).
    await sql`SELECT debit_credits('hold', 'holder', NULL, NULL, 'past', 4::bigint, 'h',
      ${JSON.stringify({ ttlSeconds: 1 })}::jsonb, NULL, ${new Date(now.getTime() - 3_600_000)}::timestamptz)`.execute(
      target,
    );
    await sql`UPDATE holds SET status = 'voided', settled_at = now(), released = credits WHERE id = ${voided}`.execute(
      target,
    );

    expect((await migrator.migrateTo('2026-12-14-held-total')).error).toBeUndefined();
    const counters = await target
      .selectFrom('accounts')
      .select(['external_user_id', 'held'])
      .orderBy('external_user_id')
      .execute();
    expect(counters).toEqual([
      { external_user_id: 'holder', held: 39 },
      { external_user_id: 'no-holds', held: 0 },
    ]);
    await holdOf('holder', 'd', 1);
    expect(await counted(target, '00000000-0000-4000-8000-000000000001')).toEqual({ held: 40, active: 40 });
    expect(await heldCredits(target, '00000000-0000-4000-8000-000000000001', now)).toBe(36);

    expect((await migrator.migrateTo('2026-12-13-usage-batch')).error).toBeUndefined();
    const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM information_schema.columns
      WHERE table_name = 'accounts' AND column_name = 'held'`.execute(target);
    expect(rows[0]!.n).toBe(0);
    expect((await holdOf('holder', 'e', 1)).rows[0]!.answer).toMatchObject({ status: 'applied' });
  });
});
