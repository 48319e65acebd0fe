import { execFile, spawn, spawnSync } from 'node:child_process';
import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import path from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import { type Kysely, sql } from 'kysely';
import pg from 'pg';
import { createCreditWorker } from '../functions/credit-worker.js';
import { createWebhookIntake } from '../functions/webhook-intake.js';
import { LocalAuth, signRequest } from '../local/auth.js';
import { createDatabase, dropDatabase, startScratchPostgres } from '../local/postgres.js';
import { startStripeEmulator } from '../local/stripe-emulator/server.js';
import { signPayload } from '../local/stripe-emulator/webhooks.js';
import { findOrCreateAccount, inAccountTransaction } from '../shared/accounts/accounts.js';
import { loadIntakeConfig } from '../shared/config.js';
import { createDb } from '../shared/db/client.js';
import { migrateToLatest } from '../shared/db/migrate.js';
import type { Database } from '../shared/db/schema.js';
import { checkInvariants } from '../shared/ledger/invariants.js';
import { adjustCredits } from '../shared/ledger/ledger.js';
import { DEFAULT_PACKAGES } from '../shared/packages.js';
import { createRun, executeRun } from '../shared/reconcile/reconcile.js';
import { createStripeClient } from '../shared/stripe/client.js';
import {
  checkoutSession,
  lambdaContext,
  sqsEvent,
  stripeEvent,
  webhookRequest,
} from '../tests/support/events.js';
import { bundleReports } from './bundle-sizes.js';

const USAGE = `usage: npm run bench [-- --quick] [--out FILE] [--only SECTION,...]

sections: reconciliation, worker, http, intake, bundles (default: all)

Measures the service against a baseline taken in the same run on the same machine, and prints a table
with ratios. Uses DATABASE_URL's server when set (it creates and drops a database of its own), otherwise
an embedded Postgres in a temporary directory.`;

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    out: { type: 'string' },
    only: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}

// Handlers run as in Lambda, minus log and metric output (it would bury the table) and X-Ray (no daemon).
process.env.POWERTOOLS_LOG_LEVEL = 'SILENT';
process.env.POWERTOOLS_METRICS_DISABLED = 'true';
process.env.POWERTOOLS_TRACE_ENABLED = 'false';
process.env.AWS_REGION ??= 'us-east-1';

const SCALE = args.quick
  ? { spreadAccounts: 1_000, hotEvents: 400, seconds: 2, intakeCalls: 500, sessions: 1_000, imports: 3 }
  : {
      spreadAccounts: 10_000,
      hotEvents: 2_000,
      seconds: 6,
      intakeCalls: 3_000,
      sessions: 10_000,
      imports: 5,
    };
/** Concurrent worker instances: the SQS event source's maxConcurrency default in infra/. */
const WORKERS = 5;
const PACK = DEFAULT_PACKAGES[0]!;

interface Row {
  readonly name: string;
  readonly ours: string;
  readonly baseline: string;
  readonly ratio: number | null;
  readonly target?: string;
  readonly met?: boolean;
  readonly figures: Record<string, number>;
}
const rows: Row[] = [];

function report(row: Row) {
  rows.push(row);
  const ratio = row.ratio === null ? '' : `ratio ${row.ratio.toFixed(2)}`;
  const target = row.target ? `  target ${row.target}: ${row.met ? 'met' : 'MISSED'}` : '';
  console.error(`  ${row.name}: ${row.ours} | ${row.baseline} | ${ratio}${target}`);
}

const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits });

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

interface LoadResult {
  readonly perSecond: number;
  readonly p50: number;
  readonly p95: number;
  readonly p99: number;
}

/** Runs `clients` loops of `call` for `seconds`; throughput and latency percentiles in ms. */
async function load(clients: number, seconds: number, call: (client: number, i: number) => Promise<void>) {
  const latencies: number[] = [];
  const deadline = performance.now() + seconds * 1000;
  const started = performance.now();
  let i = 0;
  await Promise.all(
    Array.from({ length: clients }, async (_, client) => {
      while (performance.now() < deadline) {
        const t = performance.now();
        await call(client, i++);
        latencies.push(performance.now() - t);
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    perSecond: latencies.length / elapsed,
    p50: percentile(latencies, 50),
    p95: percentile(latencies, 95),
    p99: percentile(latencies, 99),
  } satisfies LoadResult;
}

const latency = (r: LoadResult) =>
  `${fmt(r.perSecond)}/s, p50 ${r.p50.toFixed(1)} p95 ${r.p95.toFixed(1)} p99 ${r.p99.toFixed(1)} ms`;

// --- database -----------------------------------------------------------------------------------------

async function startDatabase() {
  const server = await startScratchPostgres('credits-bench-');
  const name = `credits_bench_${process.pid}`;
  const databaseUrl = await createDatabase(server.serverUrl, name);
  const db = createDb(databaseUrl, { max: 4, applicationName: 'bench' });
  await migrateToLatest(db);
  const scratch = mkdtempSync(path.join(tmpdir(), 'credits-bench-stack-'));
  return {
    db,
    databaseUrl,
    scratch,
    async stop() {
      await db.destroy();
      await dropDatabase(server.serverUrl, name);
      await server.stop();
      rmSync(scratch, { recursive: true, force: true });
    },
  };
}

// --- the crediting worker ----------------------------------------------------------------------------

interface WorkItem {
  readonly accountId: string;
  readonly paymentId: string;
  readonly sessionId: string;
  readonly intentId: string;
  readonly eventId: string;
  readonly body: string;
}

/** `owners` payments awaiting credit (one per entry), and the checkout.session.completed event of each. */
async function seedPurchases(db: Kysely<Database>, owners: string[]): Promise<WorkItem[]> {
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

/**
 * The SQL transaction the worker runs for a paid checkout.session.completed, statement for statement
 * (captured from kysely's query log), as parameterised text for raw `pg` and pgbench.
 */
type Params = (w: WorkItem, previous: Record<string, unknown>) => unknown[];
const CREDIT_TRANSACTION: ReadonlyArray<readonly [sql: string, params: Params]> = [
  [
    `insert into "processed_events" ("event_id", "event_type", "outcome") values ($1, 'checkout.session.completed', 'applied') on conflict ("event_id") do nothing returning "event_id"`,
    (w) => [w.eventId],
  ],
  ['SELECT pg_advisory_xact_lock(2, hashtext($1))', (w) => [w.intentId]],
  ['select * from "payments" where "id" = $1', (w) => [w.paymentId]],
  [
    `update "payments" set "stripe_payment_intent_id" = $1, "updated_at" = now() where "id" = $2 returning *`,
    (w) => [w.intentId, w.paymentId],
  ],
  ['SELECT pg_advisory_xact_lock(1, hashtext($1))', (w) => [w.accountId]],
  ['select * from "accounts" where "id" = $1', (w) => [w.accountId]],
  [`select * from "ledger_entries" where "payment_id" = $1 and "kind" = 'purchase'`, (w) => [w.paymentId]],
  [
    `update "payments" set "status" = 'CREDITED', "updated_at" = now() where "id" = $1 and "account_id" = $2 and "status" in ('INIT', 'PAID')`,
    (w) => [w.paymentId, w.accountId],
  ],
  [
    `update "accounts" set "balance" = balance + $1::bigint, "version" = version + 1, "updated_at" = now() where "id" = $2 returning "balance", "version"`,
    (w) => [PACK.credits, w.accountId],
  ],
  [
    `insert into "ledger_entries" ("account_id", "amount", "balance_after", "kind", "reference", "payment_id", "stripe_event_id") values ($1, $2, $3, 'purchase', $4, $5, $6) returning *`,
    // balance_after is the balance the previous statement returned
    (w, previous) => [w.accountId, PACK.credits, previous.balance, w.sessionId, w.paymentId, w.eventId],
  ],
  ['select * from "payments" where "id" = $1', (w) => [w.paymentId]],
  ['select * from "stripe_charge_facts" where "payment_intent_id" = $1', (w) => [w.intentId]],
  [
    `select "kind", sum("amount") as "total" from "ledger_entries" where "payment_id" = $1 and "kind" <> 'purchase' group by "kind"`,
    (w) => [w.paymentId],
  ],
  [
    `update "payments" set "status" = 'CREDITED', "amount_refunded" = 0, "disputed" = false, "updated_at" = now() where "id" = $1`,
    (w) => [w.paymentId],
  ],
  [
    `select coalesce(sum(amount) FILTER (WHERE kind = 'purchase'), 0)::bigint as "granted", count(*)::int as "entries" from "ledger_entries" where "stripe_event_id" = $1`,
    (w) => [w.eventId],
  ],
];

/** Takes batches of 10 from `items` with `instances` concurrent consumers; events per second. */
async function drain(
  items: WorkItem[],
  instances: number,
  consume: (batch: WorkItem[], i: number) => Promise<void>,
) {
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

async function workerThroughput(databaseUrl: string, items: WorkItem[], instances: number) {
  // Each instance is one Lambda: its own handler and a pool of one connection.
  const dbs = Array.from({ length: instances }, () =>
    createDb(databaseUrl, { max: 1, applicationName: 'bench-worker' }),
  );
  const workers = dbs.map((db) => createCreditWorker({ db, packages: DEFAULT_PACKAGES }));
  const perSecond = await drain(items, instances, async (batch, i) => {
    const response = (await workers[i]!(
      sqsEvent(batch.map((w) => w.body)),
      lambdaContext('credit-worker'),
    )) as {
      batchItemFailures: unknown[];
    };
    if (response.batchItemFailures.length > 0)
      throw new Error('the worker failed records during the benchmark');
  });
  await Promise.all(dbs.map((db) => db.destroy()));
  return perSecond;
}

async function rawThroughput(databaseUrl: string, items: WorkItem[], instances: number) {
  const clients = await Promise.all(
    Array.from({ length: instances }, async () => {
      const client = new pg.Client({ connectionString: databaseUrl });
      await client.connect();
      return client;
    }),
  );
  const perSecond = await drain(items, instances, async (batch, i) => {
    const client = clients[i]!;
    for (const item of batch) {
      await client.query('BEGIN');
      let previous: Record<string, unknown> = {};
      for (const [text, params] of CREDIT_TRANSACTION) {
        previous = (await client.query(text, params(item, previous))).rows[0] ?? {};
      }
      await client.query('COMMIT');
    }
  });
  await Promise.all(clients.map((c) => c.end()));
  return perSecond;
}

/** The same transaction driven by pgbench (when installed): each transaction claims the next work item. */
async function pgbenchThroughput(databaseUrl: string, items: WorkItem[], instances: number) {
  const pgbench = spawnSync('pgbench', ['--version'], { encoding: 'utf8' });
  if (pgbench.status !== 0) return undefined;
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  await client.query(
    'CREATE TABLE bench_work (n int PRIMARY KEY, account_id uuid, payment_id uuid, session_id text, intent_id text, event_id text)',
  );
  await client.query('CREATE SEQUENCE bench_seq');
  for (let i = 0; i < items.length; i += 1000) {
    const chunk = items.slice(i, i + 1000);
    await client.query(
      `INSERT INTO bench_work SELECT * FROM unnest($1::int[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[])`,
      [
        chunk.map((_, j) => i + j + 1),
        chunk.map((w) => w.accountId),
        chunk.map((w) => w.paymentId),
        chunk.map((w) => w.sessionId),
        chunk.map((w) => w.intentId),
        chunk.map((w) => w.eventId),
      ],
    );
  }
  const variables: Record<string, string> = {
    accountId: ':account_id',
    paymentId: ':payment_id',
    sessionId: ':session_id',
    intentId: ':intent_id',
    eventId: ':event_id',
  };
  const placeholders = new Proxy({} as WorkItem, { get: (_, key: string) => variables[key] });
  // A statement returning the balance stores it in :balance (\gset) for the next one.
  const statements = CREDIT_TRANSACTION.map(([text, params]) => {
    const values = params(placeholders, { balance: ':balance' });
    const line = text.replace(/\$(\d+)/g, (_, n: string) => String(values[Number(n) - 1]));
    return text.includes('returning "balance"') ? `${line} \\gset` : `${line};`;
  });
  const script = path.join(mkdtempSync(path.join(tmpdir(), 'credits-pgbench-')), 'credit.sql');
  writeFileSync(
    script,
    [
      "SELECT account_id, payment_id, session_id, intent_id, event_id FROM bench_work WHERE n = (SELECT nextval('bench_seq')) \\gset",
      'BEGIN;',
      ...statements,
      'COMMIT;',
      '',
    ].join('\n'),
  );
  const perClient = Math.floor(items.length / instances);
  const { stdout } = await promisify(execFile)('pgbench', [
    '-n',
    '-M',
    'prepared',
    '-c',
    String(instances),
    '-j',
    '2',
    '-t',
    String(perClient),
    '-f',
    script,
    databaseUrl,
  ]);
  rmSync(path.dirname(script), { recursive: true });
  await client.query('DROP TABLE bench_work; DROP SEQUENCE bench_seq');
  await client.end();
  const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(stdout);
  return tps ? Number(tps[1]) : undefined;
}

async function benchWorker(db: Kysely<Database>, databaseUrl: string) {
  console.error(`worker: ${fmt(SCALE.spreadAccounts)} accounts and one hot account, ${WORKERS} instances`);
  const spread = await seedAccounts(db, SCALE.spreadAccounts);
  const [hot] = await seedAccounts(db, 1);
  const hotOwners = () => Array.from({ length: SCALE.hotEvents }, () => hot!);
  for (const [label, owners] of [
    [`worker, ${fmt(SCALE.spreadAccounts)} accounts`, () => spread],
    [`worker, one hot account (${fmt(SCALE.hotEvents)} events)`, hotOwners],
  ] as const) {
    // Raw, ours, ours, raw on halves (each after VACUUM ANALYZE), so the growing tables and autovacuum
    // weigh on both sides alike; equal halves combine by the harmonic mean.
    const all = owners();
    const halves = [all.slice(0, all.length / 2), all.slice(all.length / 2)];
    const phase = async (run: typeof rawThroughput, half: string[]) => {
      await sql`VACUUM ANALYZE`.execute(db);
      return run(databaseUrl, await seedPurchases(db, half), WORKERS);
    };
    const harmonic = (a: number, b: number) => 2 / (1 / a + 1 / b);
    const raw1 = await phase(rawThroughput, halves[0]!);
    const ours1 = await phase(workerThroughput, halves[0]!);
    const ours2 = await phase(workerThroughput, halves[1]!);
    const raw2 = await phase(rawThroughput, halves[1]!);
    const raw = harmonic(raw1, raw2);
    const ours = harmonic(ours1, ours2);
    await sql`VACUUM ANALYZE`.execute(db);
    const bench = await pgbenchThroughput(databaseUrl, await seedPurchases(db, all), WORKERS);
    const ratio = ours / raw;
    report({
      name: label,
      ours: `${fmt(ours)} events/s`,
      baseline: `raw pg ${fmt(raw)}/s${bench ? `, pgbench ${fmt(bench)}/s` : ''}`,
      ratio,
      target: '≥ 0.6 of raw pg',
      met: ratio >= 0.6,
      figures: { eventsPerSecond: ours, rawPgPerSecond: raw, ...(bench && { pgbenchPerSecond: bench }) },
    });
  }
}

// --- spend and balance over the local HTTP stack ----------------------------------------------------

const SPEND_SQL = {
  account: 'SELECT id FROM accounts WHERE external_user_id = $1',
  lock: 'SELECT pg_advisory_xact_lock(1, hashtext($1))',
  locked: 'SELECT * FROM accounts WHERE id = $1',
  previous: `SELECT * FROM ledger_entries WHERE account_id = $1 AND kind = 'spend' AND reference = $2`,
  move: 'UPDATE accounts SET balance = balance - $1::bigint, version = version + 1, updated_at = now() WHERE id = $2 RETURNING balance',
  entry: `INSERT INTO ledger_entries (account_id, amount, balance_after, kind, reference, request_hash) VALUES ($1, -$2::bigint, $3, 'spend', $4, 'bench') RETURNING id`,
};

/** `npm start` (bin/start.ts) in a child process on free ports; resolves once it prints its URL. */
async function startStackProcess(databaseUrl: string, dataDir: string) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bin/start.ts'], {
    env: {
      ...process.env,
      PORT: '0',
      STRIPE_EMULATOR_PORT: '0',
      DATA_DIR: dataDir,
      DATABASE_URL: databaseUrl,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const match = /HTTP API\s+(http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (match) resolve(match[1]!);
    });
    child.once('exit', (code) => reject(new Error(`npm start exited with ${code}: ${out}`)));
  });
  return {
    url,
    auth: await LocalAuth.load(dataDir),
    async stop() {
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    },
  };
}

async function benchHttp(db: Kysely<Database>, databaseUrl: string, scratch: string) {
  console.error(
    'HTTP: spend at 1, 16 and 64 clients, balance reads at 16, against npm start in its own process',
  );
  // The stack in its own process, as `npm start` runs it: the load generator must not share its event loop.
  const stack = await startStackProcess(databaseUrl, path.join(scratch, 'stack'));
  const users = Array.from({ length: 64 }, (_, i) => `bench-user-${i}`);
  for (const user of users) {
    const account = await findOrCreateAccount(db, user);
    await inAccountTransaction(db, account.id, (trx, locked) =>
      adjustCredits(trx, locked, {
        amount: 100_000_000,
        actorArn: 'arn:aws:iam::000000000000:user/bench',
        reason: 'bench',
      }),
    );
  }
  const service = stack.auth.principal('service');
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 10 });
  const run = randomUUID().slice(0, 8);
  try {
    for (const clients of [1, 16, 64]) {
      const ours = await load(clients, SCALE.seconds, async (client, i) => {
        const url = new URL(`/v1/accounts/${users[client % users.length]}/spend`, stack.url);
        const body = JSON.stringify({ amount: 1 });
        const headers = await signRequest(
          url,
          {
            method: 'POST',
            body,
            headers: { 'content-type': 'application/json', 'idempotency-key': `http-${run}-${clients}-${i}` },
          },
          service,
        );
        const response = await fetch(url, { method: 'POST', headers, body });
        if (response.status !== 200)
          throw new Error(`spend answered ${response.status}: ${await response.text()}`);
      });
      const raw = await load(clients, SCALE.seconds, async (client, i) => {
        const connection = await pool.connect();
        try {
          const { rows } = await connection.query(SPEND_SQL.account, [users[client % users.length]]);
          const id = rows[0].id as string;
          await connection.query('BEGIN');
          await connection.query(SPEND_SQL.lock, [id]);
          await connection.query(SPEND_SQL.locked, [id]);
          await connection.query(SPEND_SQL.previous, [id, `raw-${run}-${clients}-${i}`]);
          const moved = await connection.query(SPEND_SQL.move, [1, id]);
          await connection.query(SPEND_SQL.entry, [
            id,
            1,
            moved.rows[0].balance,
            `raw-${run}-${clients}-${i}`,
          ]);
          await connection.query('COMMIT');
        } finally {
          connection.release();
        }
      });
      const target = clients === 16 ? { target: 'p99 < 25 ms', met: ours.p99 < 25 } : {};
      report({
        name: `spend over HTTP, ${clients} client${clients > 1 ? 's' : ''}`,
        ours: latency(ours),
        baseline: `raw SQL ${latency(raw)}`,
        ratio: ours.perSecond / raw.perSecond,
        ...target,
        figures: { ...ours, rawPerSecond: raw.perSecond, rawP50: raw.p50, rawP95: raw.p95, rawP99: raw.p99 },
      });
    }
    const tokens = await Promise.all(users.map((u) => stack.auth.issueToken(u)));
    const ours = await load(16, SCALE.seconds, async (client) => {
      const response = await fetch(`${stack.url}/v1/me/credits`, {
        headers: { authorization: `Bearer ${tokens[client % tokens.length]}` },
      });
      if (response.status !== 200) throw new Error(`balance answered ${response.status}`);
      await response.arrayBuffer();
    });
    const raw = await load(16, SCALE.seconds, async (client) => {
      await pool.query('SELECT balance, status FROM accounts WHERE external_user_id = $1', [
        users[client % users.length],
      ]);
    });
    report({
      name: 'balance read over HTTP, 16 clients',
      ours: latency(ours),
      baseline: `raw SELECT ${latency(raw)}`,
      ratio: ours.perSecond / raw.perSecond,
      figures: { ...ours, rawPerSecond: raw.perSecond, rawP99: raw.p99 },
    });
  } finally {
    await pool.end();
    await stack.stop();
  }
}

// --- intake, bundles, cold imports -------------------------------------------------------------------

async function benchIntake() {
  console.error(`intake: ${fmt(SCALE.intakeCalls)} signed deliveries`);
  const secret = 'whsec_bench';
  const sqs = mockClient(SQSClient);
  sqs.on(SendMessageCommand).resolves({ MessageId: 'bench' });
  const intake = createWebhookIntake({
    config: loadIntakeConfig({
      QUEUE_URL: 'https://sqs.us-east-1.amazonaws.com/000000000000/bench',
      STRIPE_WEBHOOK_SECRET: secret,
    }),
    sqs: new SQSClient({}),
  });
  const bodies = Array.from({ length: SCALE.intakeCalls }, () =>
    JSON.stringify(stripeEvent('checkout.session.completed', checkoutSession({})), null, 2),
  );
  const signatures = bodies.map((body) => signPayload(body, secret));
  const time = async (fn: (i: number) => Promise<void> | void) => {
    const samples: number[] = [];
    for (let i = 0; i < bodies.length; i++) {
      const t = performance.now();
      await fn(i);
      samples.push(performance.now() - t);
    }
    return samples.sort((a, b) => a - b);
  };
  const ours = await time(async (i) => {
    const request = webhookRequest(bodies[i]!, { 'stripe-signature': signatures[i]! });
    const response = (await intake(
      request,
      lambdaContext('webhook-intake'),
    )) as APIGatewayProxyStructuredResultV2;
    if (response.statusCode !== 200)
      throw new Error(`intake answered ${response.statusCode}: ${response.body}`);
  });
  // The ceiling: verify the HMAC and parse the JSON, nothing else.
  const raw = await time((i) => {
    const [t, v1] = signatures[i]!.split(',').map((part) => part.slice(part.indexOf('=') + 1)) as [
      string,
      string,
    ];
    const expected = createHmac('sha256', secret).update(`${t}.${bodies[i]}`).digest();
    if (!timingSafeEqual(expected, Buffer.from(v1, 'hex'))) throw new Error('bad signature');
    JSON.parse(bodies[i]!);
  });
  sqs.restore();
  const p = (s: number[], n: number) => percentile(s, n).toFixed(3);
  report({
    name: 'intake handler (SQS mocked at the SDK)',
    ours: `p50 ${p(ours, 50)} ms, p99 ${p(ours, 99)} ms`,
    baseline: `HMAC + JSON.parse p50 ${p(raw, 50)} ms, p99 ${p(raw, 99)} ms`,
    ratio: null,
    figures: { p50: percentile(ours, 50), p99: percentile(ours, 99), rawP99: percentile(raw, 99) },
  });
}

async function benchBundles() {
  console.error('bundles: synthesizing, then sizes and cold import times');
  await promisify(execFile)(process.execPath, ['--import', 'tsx', 'bin/app.ts']); // the bundles of this code
  const importMs = (file: string) => {
    const samples: number[] = [];
    for (let i = 0; i < SCALE.imports; i++) {
      const run = spawnSync(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `const t = performance.now(); await import(${JSON.stringify(file)}); console.log(performance.now() - t);`,
        ],
        { encoding: 'utf8', env: { ...process.env, AWS_REGION: 'us-east-1' } },
      );
      if (run.status !== 0) throw new Error(`importing ${file} failed: ${run.stderr}`);
      samples.push(Number(run.stdout.trim()));
    }
    return samples.sort((a, b) => a - b)[Math.floor(samples.length / 2)]!;
  };
  const emptyDir = mkdtempSync(path.join(tmpdir(), 'credits-empty-'));
  writeFileSync(path.join(emptyDir, 'empty.mjs'), 'export {};\n');
  const baseline = importMs(path.join(emptyDir, 'empty.mjs'));
  rmSync(emptyDir, { recursive: true });
  for (const bundle of bundleReports()) {
    const ms = importMs(path.resolve(bundle.file));
    const intake = bundle.name.startsWith('WebhookIntake');
    report({
      name: `bundle ${bundle.name}`,
      ours: `${fmt(bundle.bytes / 1024, 1)} KB (gzip ${fmt(bundle.gzipBytes / 1024, 1)} KB), cold import ${ms.toFixed(1)} ms`,
      baseline: `empty module import ${baseline.toFixed(1)} ms`,
      ratio: null,
      ...(intake && { target: 'bundle < 250 KB', met: bundle.bytes < 250 * 1024 }),
      figures: {
        bytes: bundle.bytes,
        gzipBytes: bundle.gzipBytes,
        coldImportMs: ms,
        emptyImportMs: baseline,
      },
    });
  }
}

// --- reconciliation ------------------------------------------------------------------------------------

async function benchReconciliation(db: Kysely<Database>) {
  console.error(`reconciliation: ${fmt(SCALE.sessions)} paid sessions whose webhooks never arrived`);
  const emulator = await startStripeEmulator({ port: 0, webhookSecret: 'whsec_bench' });
  try {
    for (let i = 0; i < SCALE.sessions; i++) {
      const session = emulator.emulator.createCheckoutSession({
        mode: 'payment',
        success_url: 'http://127.0.0.1/success',
        line_items: [
          {
            quantity: '1',
            price_data: {
              currency: PACK.currency,
              unit_amount: String(PACK.amount),
              product_data: { name: PACK.name },
            },
          },
        ],
        metadata: { user_id: `recon-${i}`, package_id: PACK.id },
      });
      emulator.emulator.completeSession(String(session.id), 'paid');
    }
    const stripe = createStripeClient({
      secretKey: 'sk_test_bench',
      apiBase: emulator.url,
      maxNetworkRetries: 0,
    });
    const window = { start: new Date(Date.now() - 3_600_000), end: new Date(Date.now() + 60_000) };
    let started = performance.now();
    let listed = 0;
    for await (const _ of stripe.checkout.sessions.list({ limit: 100, status: 'complete' })) listed++;
    const listSeconds = (performance.now() - started) / 1000;
    started = performance.now();
    const summary = await executeRun(
      { db, stripe, packages: DEFAULT_PACKAGES, requestsPerSecond: 10_000 },
      await createRun(db, 'admin', window),
    );
    const seconds = (performance.now() - started) / 1000;
    if (summary.status !== 'succeeded' || summary.healed !== SCALE.sessions) {
      throw new Error(`reconciliation ended ${summary.status} with ${summary.healed} healed`);
    }
    const paced = summary.counts.stripeRequests / 10;
    report({
      name: `reconciliation, ${fmt(SCALE.sessions)} sessions healed`,
      ours: `${seconds.toFixed(1)} s unpaced (${fmt(SCALE.sessions / seconds)} sessions/s, ${summary.counts.stripeRequests} Stripe requests; ${fmt(paced)} s at the default 10 requests/s)`,
      baseline: `of which listing them with the SDK ${listSeconds.toFixed(1)} s (${fmt(listed)} sessions)`,
      ratio: null,
      figures: { seconds, listSeconds, stripeRequests: summary.counts.stripeRequests, pacedSeconds: paced },
    });
  } finally {
    await emulator.close();
  }
}

// --- main ---------------------------------------------------------------------------------------------

const machine = `${cpus().length} × ${cpus()[0]?.model.trim() ?? 'cpu'}, ${fmt(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
console.error(`npm run bench${args.quick ? ' -- --quick' : ''} on ${machine}`);
const database = await startDatabase();
try {
  // Reconciliation first: it checks every credited payment in its window against Stripe.
  const sections = {
    reconciliation: () => benchReconciliation(database.db),
    worker: () => benchWorker(database.db, database.databaseUrl),
    http: () => benchHttp(database.db, database.databaseUrl, database.scratch),
    intake: benchIntake,
    bundles: benchBundles,
  };
  const only = args.only?.split(',') ?? Object.keys(sections);
  for (const name of only) {
    const section = sections[name as keyof typeof sections];
    if (!section) throw new Error(`unknown section ${name}; one of ${Object.keys(sections).join(', ')}`);
    await section();
  }
  const report = await checkInvariants(database.db);
  if (!report.ok)
    throw new Error(`invariants broken after the benchmark: ${JSON.stringify(report.violations)}`);
} finally {
  await database.stop();
}

const widths = [44, 60, 64, 6, 24];
const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
console.log(line(['benchmark', 'ours', 'baseline (same run)', 'ratio', 'target']));
console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
for (const row of rows) {
  const target = row.target ? `${row.target}: ${row.met ? 'met' : 'missed'}` : '';
  console.log(
    line([row.name, row.ours, row.baseline, row.ratio === null ? '' : row.ratio.toFixed(2), target]),
  );
}
console.log(`\nmachine: ${machine}; every ledger invariant held afterwards.`);
if (args.out) {
  writeFileSync(
    args.out,
    `${JSON.stringify({ machine, quick: args.quick, at: new Date().toISOString(), rows }, null, 2)}\n`,
  );
  console.log(`written to ${args.out}`);
}
