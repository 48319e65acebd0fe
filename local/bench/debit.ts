import { randomUUID } from 'node:crypto';
import { type Kysely, sql } from 'kysely';
import pg from 'pg';
import { inAccountTransaction } from '../../shared/accounts/accounts.js';
import { createDb } from '../../shared/db/client.js';
import type { Database } from '../../shared/db/schema.js';
import { adjustCredits } from '../../shared/ledger/ledger.js';
import {
  type CapturedTransaction,
  captureTransaction,
  connect,
  expectSameRowsWritten,
  hasPgbench,
  type Item,
  logQueries,
  replayWithPg,
  replayWithPgbench,
} from './captured-transaction.js';
import { type BenchContext, fmt, type LoadResult, latency, load } from './harness.js';
import { activateBenchPrices, BENCH_ACTOR, BENCH_SKU, benchRouter, serviceEvent } from './router.js';

/** Concurrent clients, and the size of every pool they share (the issue's setting). */
const CLIENTS = 16;
const SPREAD = 1_000;
/** The benchmark's own schema: the baseline ledger and the prototype spend; never the migrations'. */
const SCRATCH = 'bench_scratch';
const FUNDS = 1_000_000_000_000;
const USAGE = { inputTokens: 100, outputTokens: 20 };

/**
 * The baseline, written here in the shape of a pure-SQL ledger (pgledger's): accounts with a balance and a
 * version, transfers, and one entry per side carrying the account's previous and current balance and
 * its version. One PL/pgSQL call per transfer locks both accounts (in id order, so two transfers never
 * deadlock), refuses a balance below zero unless the account allows it, and writes the transfer and its
 * two entries.
 */
const BASELINE_LEDGER = `
CREATE SCHEMA ${SCRATCH};
CREATE TABLE ${SCRATCH}.ledger_accounts (
  id bigint PRIMARY KEY,
  balance bigint NOT NULL DEFAULT 0,
  version bigint NOT NULL DEFAULT 0,
  allow_negative_balance boolean NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE ${SCRATCH}.ledger_transfers (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  from_account_id bigint NOT NULL REFERENCES ${SCRATCH}.ledger_accounts (id),
  to_account_id bigint NOT NULL REFERENCES ${SCRATCH}.ledger_accounts (id),
  amount bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  CHECK (amount > 0 AND from_account_id <> to_account_id)
);
CREATE INDEX ON ${SCRATCH}.ledger_transfers (from_account_id);
CREATE INDEX ON ${SCRATCH}.ledger_transfers (to_account_id);
CREATE TABLE ${SCRATCH}.ledger_entries (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  account_id bigint NOT NULL REFERENCES ${SCRATCH}.ledger_accounts (id),
  transfer_id bigint NOT NULL REFERENCES ${SCRATCH}.ledger_transfers (id),
  amount bigint NOT NULL,
  account_previous_balance bigint NOT NULL,
  account_current_balance bigint NOT NULL,
  account_version bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON ${SCRATCH}.ledger_entries (account_id, id);
CREATE INDEX ON ${SCRATCH}.ledger_entries (transfer_id);

CREATE FUNCTION ${SCRATCH}.transfer(p_from bigint, p_to bigint, p_amount bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  v_from ${SCRATCH}.ledger_accounts;
  v_to ${SCRATCH}.ledger_accounts;
  v_locked ${SCRATCH}.ledger_accounts;
  v_transfer bigint;
BEGIN
  FOR v_locked IN
    SELECT * FROM ${SCRATCH}.ledger_accounts WHERE id IN (p_from, p_to) ORDER BY id FOR UPDATE
  LOOP
    IF v_locked.id = p_from THEN v_from := v_locked; ELSE v_to := v_locked; END IF;
  END LOOP;
  IF v_from.id IS NULL OR v_to.id IS NULL THEN
    RAISE EXCEPTION 'no account % or %', p_from, p_to;
  END IF;
  IF v_from.balance - p_amount < 0 AND NOT v_from.allow_negative_balance THEN
    RAISE EXCEPTION 'account % would go below zero (balance %, amount %)', p_from, v_from.balance, p_amount;
  END IF;
  UPDATE ${SCRATCH}.ledger_accounts SET balance = balance - p_amount, version = version + 1, updated_at = now()
    WHERE id = p_from;
  UPDATE ${SCRATCH}.ledger_accounts SET balance = balance + p_amount, version = version + 1, updated_at = now()
    WHERE id = p_to;
  INSERT INTO ${SCRATCH}.ledger_transfers (from_account_id, to_account_id, amount)
    VALUES (p_from, p_to, p_amount) RETURNING id INTO v_transfer;
  INSERT INTO ${SCRATCH}.ledger_entries
    (account_id, transfer_id, amount, account_previous_balance, account_current_balance, account_version)
  VALUES
    (p_from, v_transfer, -p_amount, v_from.balance, v_from.balance - p_amount, v_from.version + 1),
    (p_to, v_transfer, p_amount, v_to.balance, v_to.balance + p_amount, v_to.version + 1);
  RETURN v_transfer;
END $$;
`;

/**
 * A prototype, not the service: the spend as one server-side function against the service's own tables,
 * to show the ceiling of issue 21's first direction. It does what the captured spend does for an account
 * with no grant due to expire (it refuses one rather than expiring it): the account by user id, the
 * account lock, the idempotency read, the frozen and available checks, the plan row, the balance, the entry,
 * the draws on open grants in burn order and the day's debit total (what caps count). Start-up checks that it writes the rows the service's spend does.
 */
const PROTOTYPE_SPEND = `
CREATE FUNCTION ${SCRATCH}.spend(p_user text, p_key text, p_amount bigint, p_request_hash text)
RETURNS TABLE (entry_id bigint, balance bigint, replayed boolean) LANGUAGE plpgsql AS $$
DECLARE
  v_account accounts;
  v_previous ledger_entries;
  v_held bigint;
  v_balance bigint;
  v_entry bigint;
  v_left bigint := p_amount;
  v_take bigint;
  v_grant record;
BEGIN
  SELECT * INTO v_account FROM accounts WHERE external_user_id = p_user;
  IF NOT FOUND THEN RAISE EXCEPTION 'no account for user %', p_user; END IF;
  PERFORM pg_advisory_xact_lock(1, hashtext(v_account.id::text));
  SELECT * INTO v_account FROM accounts WHERE id = v_account.id;
  SELECT * INTO v_previous FROM ledger_entries
    WHERE account_id = v_account.id AND kind = 'spend' AND reference = p_key;
  IF FOUND THEN
    IF v_previous.request_hash IS DISTINCT FROM p_request_hash THEN
      RAISE EXCEPTION 'idempotency key % used with another request', p_key;
    END IF;
    RETURN QUERY SELECT v_previous.id, v_previous.balance_after, true;
    RETURN;
  END IF;
  IF v_account.status = 'frozen' THEN RAISE EXCEPTION 'account frozen'; END IF;
  -- The plan row the service reads (no plan in the benchmark: no caps, no allowance, no rate limit).
  PERFORM FROM account_plans WHERE account_id = v_account.id;
  IF EXISTS (SELECT FROM credit_grants WHERE account_id = v_account.id AND remaining > 0 AND expires_at <= now()) THEN
    RAISE EXCEPTION 'a grant is due to expire: the prototype leaves expiry to the service';
  END IF;
  SELECT coalesce(sum(credits), 0) INTO v_held FROM holds
    WHERE account_id = v_account.id AND status = 'active' AND expires_at > now();
  IF v_account.balance - v_held < p_amount THEN
    RAISE EXCEPTION 'insufficient credits: balance %, held %, amount %', v_account.balance, v_held, p_amount;
  END IF;
  UPDATE accounts SET balance = accounts.balance - p_amount, version = version + 1, updated_at = now()
    WHERE id = v_account.id RETURNING accounts.balance INTO v_balance;
  INSERT INTO ledger_entries (account_id, amount, balance_after, kind, reference, request_hash)
    VALUES (v_account.id, -p_amount, v_balance, 'spend', p_key, p_request_hash) RETURNING id INTO v_entry;
  FOR v_grant IN
    SELECT id, remaining FROM credit_grants WHERE account_id = v_account.id AND remaining > 0
    ORDER BY expires_at ASC NULLS LAST, (category = 'paid') ASC, created_at, id
  LOOP
    EXIT WHEN v_left = 0;
    v_take := least(v_grant.remaining, v_left);
    INSERT INTO grant_allocations (entry_id, grant_id, amount) VALUES (v_entry, v_grant.id, v_take);
    UPDATE credit_grants SET remaining = remaining - v_take WHERE id = v_grant.id;
    v_left := v_left - v_take;
  END LOOP;
  INSERT INTO debit_days (account_id, day, credits) VALUES (v_account.id, (now() AT TIME ZONE 'UTC')::date, p_amount)
    ON CONFLICT (account_id, day) DO UPDATE SET credits = debit_days.credits + excluded.credits;
  RETURN QUERY SELECT v_entry, v_balance, false;
END $$;
`;

/** The rows of one spend: found by its ledger entry (kind spend, reference the key). */
const SPEND_CLAIM = {
  sql: "select xmin::text as xid from ledger_entries where kind = 'spend' and reference = $1",
  field: 'key',
} as const;

type Call = ReturnType<typeof benchRouter>;

const spendEvent = (userId: string, key: string) =>
  serviceEvent('POST /v1/accounts/{userId}/spend', { userId }, { amount: 1 }, { 'idempotency-key': key });

/**
 * The router's spend of 1 credit, captured from the service's query log: a spend of `first`'s user,
 * then of `second`'s, whose balance and grant differ (it spent once before, uncaptured), so that every
 * per-account value traces to the row that returned it rather than passing for a constant. The
 * statements and round trips one spend really sends. A replay item is `{ userId, key }`.
 */
export async function captureSpend(
  databaseUrl: string,
  first: string,
  second: string,
): Promise<CapturedTransaction> {
  const run = randomUUID().slice(0, 8);
  const spend = async (db: Kysely<Database>, item: Item) => {
    await benchRouter(db, 1)(spendEvent(item.userId!, item.key!), 200);
  };
  const service = createDb(databaseUrl, { max: 1, applicationName: 'bench-capture' });
  try {
    await spend(service, { userId: second, key: `capture-${run}-before` });
  } finally {
    await service.destroy();
  }
  return captureTransaction(
    databaseUrl,
    [
      { userId: first, key: `capture-${run}-1` },
      { userId: second, key: `capture-${run}-2` },
    ],
    spend,
    SPEND_CLAIM,
  );
}

/** Accounts for `users`, each funded by one admin grant (the bench's spends draw on it), `CLIENTS` at a time. */
async function fundAccounts(db: Kysely<Database>, users: readonly string[]): Promise<void> {
  const accounts = await db
    .insertInto('accounts')
    .values(users.map((external_user_id) => ({ external_user_id })))
    .returning('id')
    .execute();
  const queue = accounts.map((a) => a.id);
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      for (let id = queue.pop(); id !== undefined; id = queue.pop()) {
        await inAccountTransaction(db, id, (trx, locked) =>
          adjustCredits(trx, locked, { ...BENCH_ACTOR, amount: FUNDS }),
        );
      }
    }),
  );
}

/** The baseline ledger with accounts 1..count+1 (count+1 is the hot one), funded, and the prototype. */
async function createScratch(pool: pg.Pool, count: number): Promise<void> {
  await pool.query(BASELINE_LEDGER);
  await pool.query(PROTOTYPE_SPEND);
  await pool.query(
    `INSERT INTO ${SCRATCH}.ledger_accounts (id, balance, allow_negative_balance)
     SELECT n, $1, false FROM generate_series(1, $2::int) AS n`,
    [FUNDS, count + 1],
  );
}

interface Scenario {
  readonly label: string;
  /** The label as it may appear in an idempotency key or event id. */
  readonly slug: string;
  /** The user a request goes to. */
  readonly user: () => string;
  /** The baseline transfer's (from, to): the hot scenario always debits the hot account. */
  readonly transfer: () => readonly [number, number];
}

const pick = (count: number) => Math.floor(Math.random() * count);

/**
 * Raw `pg` replays of the captured spend at CLIENTS clients, timing each statement: the mean time per
 * statement, the mean wait for the account lock, and the mean time from holding it to the commit's
 * answer (the critical section; NaN when no statement of its own takes the lock). With `withoutLock`,
 * the advisory lock statement is replaced by `SELECT 1` (unsafe: only to see what holding the lock
 * costs; every balance move still serializes on the account row).
 */
async function replayTimed(
  pool: pg.Pool,
  spend: CapturedTransaction,
  user: () => string,
  { seconds, run, clients = CLIENTS, withoutLock = false }: ReplayOptions,
) {
  const lockAt = lockStatementOf(spend);
  if (withoutLock && lockAt < 0) throw new Error('the captured spend has no lock statement to leave out');
  const transaction = withoutLock
    ? {
        ...spend,
        // In place, so that every later statement keeps its index (results are traced by index).
        statements: spend.statements.map((s, at) => (at === lockAt ? { sql: 'SELECT 1', sources: [] } : s)),
      }
    : spend;
  const spent = new Array<number>(transaction.statements.length).fill(0);
  let lockWait = 0;
  let lockHeld = 0;
  let count = 0;
  const result = await load(clients, seconds, async (client, i) => {
    const connection = await pool.connect();
    try {
      let last = performance.now();
      let locked = 0;
      await replayWithPg(connection, transaction, { userId: user(), key: `${run}-${client}-${i}` }, (at) => {
        const now = performance.now();
        spent[at]! += now - last;
        if (!withoutLock && at === lockAt) {
          lockWait += now - last;
          locked = now;
        }
        last = now;
      });
      if (locked) lockHeld += last - locked;
      count++;
    } finally {
      connection.release();
    }
  });
  return {
    result,
    perStatement: spent.map((total) => total / count),
    lockWait: lockAt < 0 ? Number.NaN : lockWait / count,
    lockHeld: lockAt < 0 ? Number.NaN : lockHeld / count,
  };
}

interface ReplayOptions {
  readonly seconds: number;
  /** Unique per call: the replays' idempotency keys start with it. */
  readonly run: string;
  /** @default CLIENTS */
  readonly clients?: number;
  /** @default false */
  readonly withoutLock?: boolean;
}

/** The statement that takes the account's advisory lock; -1 once the lock is inside a larger statement. */
const lockStatementOf = (spend: CapturedTransaction) =>
  spend.statements.findIndex((s) => s.sql.includes('pg_advisory_xact_lock'));

const ms = (n: number) => (Number.isNaN(n) ? 'n/a' : `${n.toFixed(2)} ms`);

/**
 * Single debits through the api router in process (API Gateway events in; real router, zod, kysely, a
 * pool of CLIENTS on the bench's Postgres): a spend of 1 credit, a hold created, a hold captured, one
 * usage event, at CLIENTS clients on SPREAD accounts and on one hot account. Each against, in the same
 * run, a one-call PL/pgSQL transfer of the baseline ledger above (timed before and after the paths:
 * harmonic mean), and the captured spend run by pgbench (prepared) and by raw `pg`, plus the prototype
 * one-call spend; every figure at the same concurrency.
 */
export async function benchDebit({ db, databaseUrl, scale, report }: BenchContext): Promise<void> {
  console.error(
    `debit: spend, hold create, hold capture, usage event through the router, ${CLIENTS} clients and a pool of ${CLIENTS}, on ${fmt(SPREAD)} accounts and on one hot account`,
  );
  await activateBenchPrices(db);
  const run = randomUUID().slice(0, 8);
  const users = Array.from({ length: SPREAD }, (_, i) => `bench-debit-${run}-${i}`);
  const hot = `bench-debit-${run}-hot`;
  const service = createDb(databaseUrl, { max: CLIENTS, applicationName: 'bench-debit' });
  const pool = new pg.Pool({ connectionString: databaseUrl, max: CLIENTS });
  try {
    await fundAccounts(service, [...users, hot]);
    await createScratch(pool, SPREAD);
    const call = benchRouter(service, CLIENTS);
    const spend = await captureSpend(databaseUrl, users[0]!, users[1]!);
    // Proven before timing: a raw pg replay and the prototype each write the rows the router's spend did.
    const check = await connect(databaseUrl);
    let requestHash: string;
    try {
      const replayed = { userId: users[2]!, key: `check-${run}-pg` };
      await replayWithPg(check, spend, replayed);
      await expectSameRowsWritten(check, spend, replayed, 'raw pg');
      const prototyped = { userId: users[2]!, key: `check-${run}-prototype` };
      requestHash = await requestHashOfSpend(check, replayed.key);
      await check.query(`SELECT * FROM ${SCRATCH}.spend($1, $2, 1, $3)`, [
        prototyped.userId,
        prototyped.key,
        requestHash,
      ]);
      await expectSameRowsWritten(check, spend, prototyped, 'prototype');
    } finally {
      await check.end();
    }
    const verbs = spend.statements.map((s) => s.sql.trim().split(/\s/, 1)[0]!.toLowerCase());
    const lockAt = lockStatementOf(spend);
    const underLock =
      lockAt < 0
        ? 'the lock taken inside a statement'
        : `${spend.statements.length - lockAt - 1} after the lock`;
    console.error(
      `  the router's spend: ${spend.statements.length} statements (${spend.statements.length} round trips: ${verbs.join(', ')}), ${underLock}, writing ${JSON.stringify(spend.rowsWritten)}`,
    );
    console.error(`  statements per request: ${await countStatements(databaseUrl, users[3]!, run)}`);

    const prototypeSpend = (userId: string, key: string) =>
      pool.query(`SELECT * FROM ${SCRATCH}.spend($1, $2, 1, $3)`, [userId, key, requestHash]);
    const scenarios: Scenario[] = [
      {
        label: `${fmt(SPREAD)} accounts`,
        slug: 'spread',
        user: () => users[pick(SPREAD)]!,
        transfer: () => {
          const from = 1 + pick(SPREAD);
          return [from, 1 + ((from + pick(SPREAD - 1)) % SPREAD)] as const;
        },
      },
      {
        label: 'one hot account',
        slug: 'hot',
        user: () => hot,
        transfer: () => [SPREAD + 1, 1 + pick(SPREAD)] as const,
      },
    ];
    for (const scenario of scenarios) {
      await sql`VACUUM ANALYZE`.execute(db);
      const transfer = () =>
        load(CLIENTS, scale.seconds, async () => {
          const [from, to] = scenario.transfer();
          await pool.query(`SELECT ${SCRATCH}.transfer($1, $2, 1)`, [from, to]);
        });
      const before = await transfer();
      const paths = await measurePaths(call, scenario, scale.seconds, run);
      const after = await transfer();
      const baseline = harmonicOf(before, after);
      const baselineText = `PL/pgSQL transfer ${fmt(baseline.perSecond)}/s (before ${fmt(before.perSecond)}, after ${fmt(after.perSecond)}), p50 ${before.p50.toFixed(1)} p99 ${before.p99.toFixed(1)} ms`;
      for (const [name, result] of paths) {
        report({
          name: `${name}, ${scenario.label}, ${CLIENTS} clients`,
          ours: latency(result),
          baseline: baselineText,
          ratio: result.perSecond / baseline.perSecond,
          target: '≥ 1.0 of the transfer (issue 21)',
          met: result.perSecond >= baseline.perSecond,
          figures: { ...result, baselinePerSecond: baseline.perSecond, baselineP50: before.p50 },
        });
      }
      const routerSpend = paths[0]![1];
      const timed = await replayTimed(pool, spend, scenario.user, {
        seconds: scale.seconds,
        run: `raw-${run}-${scenario.slug}`,
      });
      const unlocked =
        lockAt < 0
          ? undefined
          : await replayTimed(pool, spend, scenario.user, {
              seconds: scale.seconds,
              run: `unlocked-${run}-${scenario.slug}`,
              withoutLock: true,
            });
      const prototype = await load(CLIENTS, scale.seconds, async (client, i) => {
        await prototypeSpend(scenario.user(), `prototype-${run}-${scenario.slug}-${client}-${i}`);
      });
      let pgbench: { perSecond: number; latencyMs: number } | undefined;
      if (hasPgbench()) {
        const items: Item[] = Array.from({ length: Math.ceil(scale.seconds * 6_000) }, (_, i) => ({
          userId: scenario.user(),
          key: `pgbench-${run}-${scenario.slug}-${i}`,
        }));
        pgbench = await replayWithPgbench(databaseUrl, spend, items, CLIENTS, scale.seconds);
      }
      console.error(
        `  per statement at ${CLIENTS} clients (raw pg, ${scenario.label}): ${timed.perStatement.map((t, at) => `${verbs[at]} ${t.toFixed(2)}`).join(', ')} ms; waiting for the lock ${ms(timed.lockWait)}, holding it to the commit ${ms(timed.lockHeld)}`,
      );
      report({
        name: `spend's statements, ${scenario.label}, ${CLIENTS} clients`,
        ours: `router ${fmt(routerSpend.perSecond)}/s`,
        baseline: [
          pgbench && `pgbench ${fmt(pgbench.perSecond)}/s (${ms(pgbench.latencyMs)} mean)`,
          `raw pg ${fmt(timed.result.perSecond)}/s (lock wait ${ms(timed.lockWait)}, held ${ms(timed.lockHeld)})`,
          unlocked && `raw pg without the lock ${fmt(unlocked.result.perSecond)}/s`,
          `prototype one-call spend ${fmt(prototype.perSecond)}/s p50 ${prototype.p50.toFixed(1)} ms`,
        ]
          .filter(Boolean)
          .join('; '),
        ratio: pgbench ? routerSpend.perSecond / pgbench.perSecond : null,
        target: pgbench ? 'ideally ≥ 0.9 of pgbench' : undefined,
        met: pgbench ? routerSpend.perSecond >= 0.9 * pgbench.perSecond : undefined,
        figures: {
          routerPerSecond: routerSpend.perSecond,
          ...(pgbench && { pgbenchPerSecond: pgbench.perSecond, pgbenchLatencyMs: pgbench.latencyMs }),
          rawPgPerSecond: timed.result.perSecond,
          rawPgP50: timed.result.p50,
          lockWaitMs: timed.lockWait,
          lockHeldMs: timed.lockHeld,
          ...(unlocked && { unlockedPerSecond: unlocked.result.perSecond }),
          prototypePerSecond: prototype.perSecond,
          prototypeP50: prototype.p50,
          statements: spend.statements.length,
        },
      });
    }
    await benchAlone(
      call,
      pool,
      spend,
      verbs,
      prototypeSpend,
      () => users[pick(SPREAD)]!,
      scale.seconds / 2,
      run,
      report,
    );
  } finally {
    await pool.query(`DROP SCHEMA IF EXISTS ${SCRATCH} CASCADE`);
    await pool.end();
    await service.destroy();
  }
}

/**
 * One spend at a time on spread accounts: the router, the captured statements through raw `pg` (timed
 * per statement) and the prototype one-call spend. Without contention, the gaps are the cost of the
 * service's Node work per request (router minus raw) and of its round trips (raw minus prototype).
 */
async function benchAlone(
  call: Call,
  pool: pg.Pool,
  spend: CapturedTransaction,
  verbs: readonly string[],
  prototypeSpend: (userId: string, key: string) => Promise<unknown>,
  user: () => string,
  seconds: number,
  run: string,
  report: BenchContext['report'],
): Promise<void> {
  const router = await load(1, seconds, async (_, i) => {
    await call(spendEvent(user(), `alone-${run}-${i}`), 200);
  });
  const raw = await replayTimed(pool, spend, user, { seconds, run: `alone-raw-${run}`, clients: 1 });
  const prototype = await load(1, seconds, async (_, i) => {
    await prototypeSpend(user(), `alone-prototype-${run}-${i}`);
  });
  console.error(
    `  per statement, one spend at a time (raw pg): ${raw.perStatement.map((t, at) => `${verbs[at]} ${t.toFixed(2)}`).join(', ')} ms; holding the lock to the commit ${ms(raw.lockHeld)}`,
  );
  report({
    name: 'spend 1 credit, one at a time (1 client)',
    ours: `router ${latency(router)}`,
    baseline: `captured statements on raw pg ${latency(raw.result)}; prototype one-call spend ${latency(prototype)}`,
    ratio: router.perSecond / prototype.perSecond,
    figures: {
      ...router,
      rawPerSecond: raw.result.perSecond,
      rawP50: raw.result.p50,
      rawLockHeldMs: raw.lockHeld,
      prototypePerSecond: prototype.perSecond,
      prototypeP50: prototype.p50,
    },
  });
}

/** The four paths through the router for `scenario`: spend, hold create, hold capture, usage event. */
async function measurePaths(
  call: Call,
  scenario: Scenario,
  seconds: number,
  run: string,
): Promise<Array<readonly [string, LoadResult]>> {
  const spend = await load(CLIENTS, seconds, async (client, i) => {
    await call(spendEvent(scenario.user(), `spend-${run}-${scenario.slug}-${client}-${i}`), 200);
  });
  const holds: string[] = [];
  const holdCreate = await load(CLIENTS, seconds, async (client, i) => {
    const created = await call(
      serviceEvent(
        'POST /v1/accounts/{userId}/holds',
        { userId: scenario.user() },
        { credits: 5 },
        { 'idempotency-key': `hold-${run}-${scenario.slug}-${client}-${i}` },
      ),
      201,
    );
    holds.push(String(created.holdId));
  });
  // Captures the holds just created, each once; a client stops when none is left.
  const holdCapture = await load(CLIENTS, seconds, async () => {
    const holdId = holds.pop();
    if (holdId === undefined) return false;
    await call(serviceEvent('POST /v1/holds/{holdId}/capture', { holdId }, { credits: 3 }), 200);
  });
  // Untimed: the holds left active would weigh on every later debit of the account (each sums them).
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      for (let holdId = holds.pop(); holdId !== undefined; holdId = holds.pop())
        await call(serviceEvent('POST /v1/holds/{holdId}/void', { holdId }, undefined), 200);
    }),
  );
  const usage = await load(CLIENTS, seconds, async (client, i) => {
    const answer = await call(
      usageEvent(scenario.user(), `usage-${run}-${scenario.slug}-${client}-${i}`),
      200,
    );
    const [result] = answer.results as Array<{ status: string; message?: string }>;
    if (result?.status !== 'applied') throw new Error(`usage event ${result?.status}: ${result?.message}`);
  });
  return [
    ['spend 1 credit', spend],
    ['hold create', holdCreate],
    ['hold capture', holdCapture],
    ['usage event', usage],
  ];
}

const usageEvent = (userId: string, eventId: string) =>
  serviceEvent('POST /v1/usage', {}, { events: [{ eventId, userId, sku: BENCH_SKU, usage: USAGE }] });

/** Statements (each a round trip) that one request of each path sends, from the query log, as text. */
async function countStatements(databaseUrl: string, userId: string, run: string): Promise<string> {
  const counted: string[] = [];
  const count = async (name: string, work: (call: Call) => Promise<unknown>) => {
    let result: unknown;
    const executed = await logQueries(databaseUrl, async (db) => {
      result = await work(benchRouter(db, 1));
    });
    counted.push(`${name} ${executed.length}`);
    return result as Record<string, unknown>;
  };
  await count('spend', (call) => call(spendEvent(userId, `count-${run}-spend`), 200));
  const hold = await count('hold create', (call) =>
    call(
      serviceEvent(
        'POST /v1/accounts/{userId}/holds',
        { userId },
        { credits: 5 },
        { 'idempotency-key': `count-${run}-hold` },
      ),
      201,
    ),
  );
  await count('hold capture', (call) =>
    call(
      serviceEvent('POST /v1/holds/{holdId}/capture', { holdId: String(hold.holdId) }, { credits: 3 }),
      200,
    ),
  );
  await count('usage event', (call) => call(usageEvent(userId, `count-${run}-usage`), 200));
  return counted.join(', ');
}

/** Two equal-length runs combined (harmonic mean of throughput). */
function harmonicOf(a: LoadResult, b: LoadResult): LoadResult {
  return { ...a, perSecond: 2 / (1 / a.perSecond + 1 / b.perSecond) };
}

/** The request hash the service stored for the spend entry with reference `key`. */
async function requestHashOfSpend(client: pg.ClientBase, key: string): Promise<string> {
  const { rows } = await client.query<{ request_hash: string | null }>(
    "select request_hash from ledger_entries where kind = 'spend' and reference = $1",
    [key],
  );
  const hash = rows[0]?.request_hash;
  if (!hash) throw new Error(`no spend entry with reference ${key}`);
  return hash;
}
