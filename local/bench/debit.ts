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
  runPgbench,
} from './captured-transaction.js';
import { type BenchContext, fmt, type LoadResult, latency, load } from './harness.js';
import { activateBenchPrices, BENCH_ACTOR, BENCH_SKU, benchRouter, serviceEvent } from './router.js';

/** Concurrent clients, and the size of every pool they share (the setting). */
const CLIENTS = 16;
const SPREAD = 1_000;
/** The benchmark's own schema: the baseline ledger; never the migrations'. */
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

/** The baseline ledger with accounts 1..count+1 (count+1 is the hot one), funded. */
async function createScratch(pool: pg.Pool, count: number): Promise<void> {
  await pool.query(BASELINE_LEDGER);
  await pool.query(
    `INSERT INTO ${SCRATCH}.ledger_accounts (id, balance, allow_negative_balance)
     SELECT n, $1, false FROM generate_series(1, $2::int) AS n`,
    [FUNDS, count + 1],
  );
}

/** The comment `debit_credits` opens its writes with: the bench's copy of it returns there. */
const WRITES_BEGIN = '-- Decided: the writes.';

/**
 * The spend's statement calling `${SCRATCH}.debit_credits_reads`: a copy of the migrated `debit_credits`
 * (from `pg_get_functiondef`, so the bench keeps no SQL of its own) that returns where its writes begin,
 * after the lock, every read and every check. Against the whole statement on pgbench, the share of a debit's
 * database time that is not its writes and their commit.
 */
async function readsOnly(
  pool: pg.Pool,
  spend: CapturedTransaction,
  item: Item,
): Promise<CapturedTransaction> {
  const { rows } = await pool.query<{ def: string }>(
    "SELECT pg_get_functiondef('debit_credits'::regproc) AS def",
  );
  const def = rows[0]!.def;
  const calls = spend.statements.filter((s) => s.sql.includes('debit_credits('));
  if (def.split(WRITES_BEGIN).length !== 2 || calls.length !== 1)
    throw new Error(
      `debit_credits no longer has "${WRITES_BEGIN}" once, or the spend no longer calls it once`,
    );
  await pool.query(
    def
      .replace('FUNCTION public.debit_credits(', `FUNCTION ${SCRATCH}.debit_credits_reads(`)
      .replace(WRITES_BEGIN, `RETURN jsonb_build_object('status', 'reads_only');\n  ${WRITES_BEGIN}`),
  );
  const copy = {
    ...spend,
    statements: spend.statements.map((s) => ({
      ...s,
      sql: s.sql.replace('debit_credits(', `${SCRATCH}.debit_credits_reads(`),
    })),
  };
  // It must get as far as the cut: a refusal or a replay before it would time something else.
  const client = await pool.connect();
  try {
    const rows = await replayWithPg(client, copy, item);
    const answers = rows.map((row) => JSON.stringify(row ?? null));
    if (!answers.some((answer) => answer.includes('"reads_only"')))
      throw new Error(`the copy of debit_credits did not reach its writes: ${answers.join(', ')}`);
  } finally {
    client.release();
  }
  return copy;
}

interface Scenario {
  readonly label: string;
  /** The label as it may appear in an idempotency key or event id. */
  readonly slug: string;
  /** The user a request goes to. */
  readonly user: () => string;
  /** The baseline transfer's (from, to): the hot scenario always debits the hot account. */
  readonly transfer: () => readonly [number, number];
  /** The same transfers as a pgbench script. */
  readonly transferScript: string;
}

const pick = (count: number) => Math.floor(Math.random() * count);

/** Raw `pg` replays of the captured spend at CLIENTS clients (a pool of CLIENTS), each on its own connection. */
function replay(
  pool: pg.Pool,
  spend: CapturedTransaction,
  user: () => string,
  seconds: number,
  run: string,
  clients = CLIENTS,
) {
  return load(clients, seconds, async (client, i) => {
    const connection = await pool.connect();
    try {
      await replayWithPg(connection, spend, { userId: user(), key: `${run}-${client}-${i}` });
    } finally {
      connection.release();
    }
  });
}

/**
 * Single debits through the api router in process (API Gateway events in; real router, zod, kysely, a
 * pool of CLIENTS on the bench's Postgres): a spend of 1 credit, a hold created, a hold captured, one
 * usage event, at CLIENTS clients on SPREAD accounts and on one hot account. Each against, in the same
 * run, a one-call PL/pgSQL transfer of the baseline ledger above (timed before and after the paths:
 * harmonic mean), and the router's spend statement, captured, run by pgbench (prepared) and by raw `pg`;
 * every figure at the same concurrency.
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
    const spendReads = await readsOnly(pool, spend, { userId: users[4]!, key: `check-${run}-reads` });
    // Proven before timing: a raw pg replay writes the rows the router's spend did.
    const check = await connect(databaseUrl);
    try {
      const replayed = { userId: users[2]!, key: `check-${run}-pg` };
      await replayWithPg(check, spend, replayed);
      await expectSameRowsWritten(check, spend, replayed, 'raw pg');
    } finally {
      await check.end();
    }
    const verbs = spend.statements.map((s) => s.sql.trim().split(/\s/, 1)[0]!.toLowerCase());
    console.error(
      `  the router's spend: ${spend.statements.length} statement(s) (${verbs.join(', ')}), writing ${JSON.stringify(spend.rowsWritten)}`,
    );
    console.error(`  statements per request: ${await countStatements(databaseUrl, users[3]!, run)}`);

    const scenarios: Scenario[] = [
      {
        label: `${fmt(SPREAD)} accounts`,
        slug: 'spread',
        user: () => users[pick(SPREAD)]!,
        transfer: () => {
          const from = 1 + pick(SPREAD);
          return [from, 1 + ((from + pick(SPREAD - 1)) % SPREAD)] as const;
        },
        transferScript: [
          `\\set from random(1, ${SPREAD})`,
          `\\set step random(0, ${SPREAD - 2})`,
          `\\set to 1 + ((:from + :step) % ${SPREAD})`,
          `SELECT ${SCRATCH}.transfer(:from, :to, 1);`,
        ].join('\n'),
      },
      {
        label: 'one hot account',
        slug: 'hot',
        user: () => hot,
        transfer: () => [SPREAD + 1, 1 + pick(SPREAD)] as const,
        transferScript: [
          `\\set to random(1, ${SPREAD})`,
          `SELECT ${SCRATCH}.transfer(${SPREAD + 1}, :to, 1);`,
        ].join('\n'),
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
      const raw = await replay(pool, spend, scenario.user, scale.seconds, `raw-${run}-${scenario.slug}`);
      let pgbench: { perSecond: number; latencyMs: number } | undefined;
      if (hasPgbench()) {
        // As many as the run could use at `perSecond` (pgbench fails when they run out).
        const items = (prefix: string, perSecond: number): Item[] =>
          Array.from({ length: Math.ceil(scale.seconds * perSecond) }, (_, i) => ({
            userId: scenario.user(),
            key: `${prefix}-${run}-${scenario.slug}-${i}`,
          }));
        pgbench = await replayWithPgbench(
          databaseUrl,
          spend,
          items('pgbench', 6_000),
          CLIENTS,
          scale.seconds,
        );
        // Keys of their own: a key the whole statement used would be answered as a replay, before the cut.
        const reads = await replayWithPgbench(
          databaseUrl,
          spendReads,
          items('reads', 40_000),
          CLIENTS,
          scale.seconds,
        );
        report({
          name: `debit function vs its reads alone, both on pgbench, ${scenario.label}, ${CLIENTS} clients`,
          ours: `spend's statement ${fmt(pgbench.perSecond)}/s (${pgbench.latencyMs.toFixed(2)} ms mean)`,
          baseline: `a copy returning before its writes ${fmt(reads.perSecond)}/s (${reads.latencyMs.toFixed(2)} ms mean)`,
          ratio: pgbench.perSecond / reads.perSecond,
          figures: { pgbenchPerSecond: pgbench.perSecond, readsPerSecond: reads.perSecond },
        });
        // What the database alone allows: the debit function against the transfer, neither through Node.
        const transfer = await runPgbench(databaseUrl, scenario.transferScript, CLIENTS, {
          seconds: scale.seconds,
        });
        report({
          name: `debit function vs the transfer, both on pgbench, ${scenario.label}, ${CLIENTS} clients`,
          ours: `spend's statement ${fmt(pgbench.perSecond)}/s (${pgbench.latencyMs.toFixed(2)} ms mean)`,
          baseline: `PL/pgSQL transfer ${fmt(transfer.perSecond)}/s (${transfer.latencyMs.toFixed(2)} ms mean)`,
          ratio: pgbench.perSecond / transfer.perSecond,
          figures: {
            pgbenchPerSecond: pgbench.perSecond,
            transferPerSecond: transfer.perSecond,
            transferLatencyMs: transfer.latencyMs,
          },
        });
      }
      report({
        name: `spend's statement, ${scenario.label}, ${CLIENTS} clients`,
        ours: `router ${fmt(routerSpend.perSecond)}/s`,
        baseline: [
          pgbench && `pgbench ${fmt(pgbench.perSecond)}/s (${pgbench.latencyMs.toFixed(2)} ms mean)`,
          `raw pg ${fmt(raw.perSecond)}/s p50 ${raw.p50.toFixed(1)} ms`,
        ]
          .filter(Boolean)
          .join('; '),
        ratio: pgbench ? routerSpend.perSecond / pgbench.perSecond : null,
        target: pgbench ? 'ideally ≥ 0.9 of pgbench' : undefined,
        met: pgbench ? routerSpend.perSecond >= 0.9 * pgbench.perSecond : undefined,
        figures: {
          routerPerSecond: routerSpend.perSecond,
          ...(pgbench && { pgbenchPerSecond: pgbench.perSecond, pgbenchLatencyMs: pgbench.latencyMs }),
          rawPgPerSecond: raw.perSecond,
          rawPgP50: raw.p50,
          statements: spend.statements.length,
        },
      });
    }
    await benchAlone(call, pool, spend, () => users[pick(SPREAD)]!, scale.seconds / 2, run, report);
  } finally {
    await pool.query(`DROP SCHEMA IF EXISTS ${SCRATCH} CASCADE`);
    await pool.end();
    await service.destroy();
  }
}

/**
 * One spend at a time on spread accounts: the router and its statement through raw `pg`. Without
 * contention, the gap is the cost of the service's Node work per request.
 */
async function benchAlone(
  call: Call,
  pool: pg.Pool,
  spend: CapturedTransaction,
  user: () => string,
  seconds: number,
  run: string,
  report: BenchContext['report'],
): Promise<void> {
  const router = await load(1, seconds, async (_, i) => {
    await call(spendEvent(user(), `alone-${run}-${i}`), 200);
  });
  const raw = await replay(pool, spend, user, seconds, `alone-raw-${run}`, 1);
  report({
    name: 'spend 1 credit, one at a time (1 client)',
    ours: `router ${latency(router)}`,
    baseline: `its statement on raw pg ${latency(raw)}`,
    ratio: router.perSecond / raw.perSecond,
    figures: { ...router, rawPerSecond: raw.perSecond, rawP50: raw.p50 },
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

/**
 * Statements (each a round trip) that one request of each path sends, from the query log, as text: the
 * second of two alike requests on the same router, so what a process reads once (the price books) is read.
 */
async function countStatements(databaseUrl: string, userId: string, run: string): Promise<string> {
  const counted: string[] = [];
  const count = async (name: string, work: (call: Call, attempt: number) => Promise<unknown>) => {
    let result: unknown;
    let first = 0;
    const executed = await logQueries(databaseUrl, async (db, log) => {
      const call = benchRouter(db, 1);
      await work(call, 0);
      first = log.length;
      result = await work(call, 1);
    });
    counted.push(`${name} ${executed.length - first}`);
    return result as Record<string, unknown>;
  };
  await count('spend', (call, i) => call(spendEvent(userId, `count-${run}-spend-${i}`), 200));
  const holds: string[] = [];
  await count('hold create', async (call, i) => {
    const created = await call(
      serviceEvent(
        'POST /v1/accounts/{userId}/holds',
        { userId },
        { credits: 5 },
        { 'idempotency-key': `count-${run}-hold-${i}` },
      ),
      201,
    );
    holds.push(String(created.holdId));
  });
  await count('hold capture', (call, i) =>
    call(serviceEvent('POST /v1/holds/{holdId}/capture', { holdId: holds[i]! }, { credits: 3 }), 200),
  );
  await count('usage event', (call, i) => call(usageEvent(userId, `count-${run}-usage-${i}`), 200));
  return counted.join(', ');
}

/** Two equal-length runs combined (harmonic mean of throughput). */
function harmonicOf(a: LoadResult, b: LoadResult): LoadResult {
  return { ...a, perSecond: 2 / (1 / a.perSecond + 1 / b.perSecond) };
}
