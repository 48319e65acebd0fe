import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { isDeepStrictEqual, promisify } from 'node:util';
import type { CompiledQuery, QueryId } from 'kysely';
import pg from 'pg';
import { createCreditWorker } from '../../functions/credit-worker.js';
import { createDb } from '../../shared/db/client.js';
import { DEFAULT_PACKAGES } from '../../shared/packages.js';
import { lambdaContext, sqsEvent } from './events.js';

/** One payment awaiting credit and the checkout.session.completed event that credits it. */
export interface WorkItem {
  readonly accountId: string;
  readonly paymentId: string;
  readonly sessionId: string;
  readonly intentId: string;
  readonly eventId: string;
  readonly body: string;
}

/** The ids of a work item a statement may carry, and their column in pgbench's work table. */
const ITEM_FIELDS = {
  accountId: 'account_id',
  paymentId: 'payment_id',
  sessionId: 'session_id',
  intentId: 'intent_id',
  eventId: 'event_id',
} as const;
type ItemField = keyof typeof ITEM_FIELDS;

/** Where a parameter of a replayed statement comes from. */
type Source =
  | { readonly kind: 'item'; readonly field: ItemField }
  | { readonly kind: 'result'; readonly statement: number; readonly column: string }
  | { readonly kind: 'constant'; readonly value: unknown };

interface ReplayStatement {
  readonly sql: string;
  readonly sources: readonly Source[];
}

/** The worker's transaction for one credited purchase, as it ran, ready to replay for other work items. */
export interface CreditTransaction {
  /** Every statement, `begin` and `commit` included, in the order the worker ran them. */
  readonly statements: readonly ReplayStatement[];
  /** Rows per table that the worker's transaction wrote (their current version is its). */
  readonly rowsWritten: Readonly<Record<string, number>>;
}

interface Executed {
  readonly sql: string;
  readonly parameters: readonly unknown[];
  /** The first row it returned. */
  readonly row: Record<string, unknown> | undefined;
}

/**
 * Runs the real crediting worker (one instance, one connection) on `item` and returns what it executed,
 * from kysely's query log; a plugin keeps each query's first row, so later parameters can be traced to it.
 */
async function runLoggedWorker(databaseUrl: string, item: WorkItem): Promise<Executed[]> {
  const logged: CompiledQuery[] = [];
  const rows = new Map<QueryId, Record<string, unknown> | undefined>();
  const db = createDb(databaseUrl, {
    max: 1,
    applicationName: 'bench-capture',
    log: (event) => {
      if (event.level === 'query') logged.push(event.query);
    },
  }).withPlugin({
    transformQuery: ({ node }) => node,
    transformResult: async ({ result, queryId }) => {
      rows.set(queryId, result.rows[0]);
      return result;
    },
  });
  try {
    const worker = createCreditWorker({ db, packages: DEFAULT_PACKAGES });
    const response = await worker(sqsEvent([item.body]), lambdaContext('credit-worker'));
    if (response.batchItemFailures.length > 0) throw new Error('the worker failed the capture event');
  } finally {
    await db.destroy();
  }
  const executed = logged.map((q) => ({ sql: q.sql, parameters: q.parameters, row: rows.get(q.queryId) }));
  if (executed[0]?.sql.toLowerCase() !== 'begin' || executed.at(-1)?.sql.toLowerCase() !== 'commit') {
    throw new Error(`the worker's queries are not one transaction: ${executed.map((e) => e.sql).join('; ')}`);
  }
  return executed;
}

/**
 * Where parameter `index` of statement `at` comes from, told apart by two captures of alike purchases:
 * a work item's id; else a value both runs passed (a constant); else a column an earlier statement
 * returned, equal to what was passed in both runs (the account's new balance, for one).
 */
function traceParameter(
  runs: readonly [Executed[], Executed[]],
  items: readonly [WorkItem, WorkItem],
  at: number,
  index: number,
): Source {
  const values = runs.map((run) => run[at]!.parameters[index]);
  const field = (Object.keys(ITEM_FIELDS) as ItemField[]).find((f) =>
    items.every((item, r) => values[r] === item[f]),
  );
  if (field) return { kind: 'item', field };
  if (isDeepStrictEqual(values[0], values[1])) return { kind: 'constant', value: values[1] };
  for (let statement = at - 1; statement >= 0; statement--) {
    const [first, second] = runs.map((run) => run[statement]!.row);
    const column = Object.keys(second ?? {}).find(
      (c) => isDeepStrictEqual(first?.[c], values[0]) && isDeepStrictEqual(second?.[c], values[1]),
    );
    if (column) return { kind: 'result', statement, column };
  }
  throw new Error(
    `parameter $${index + 1} of "${runs[1][at]!.sql}" differs between two alike purchases and comes from neither the event nor an earlier result`,
  );
}

/**
 * Captures the worker's transaction for a credited purchase: the worker runs on `first`, then on
 * `second` (a second purchase of the same account, so its balance differs), and each parameter of the
 * second run is traced to its source. Throws when the two runs did not execute the same statements.
 */
export async function captureCreditTransaction(
  databaseUrl: string,
  first: WorkItem,
  second: WorkItem,
): Promise<CreditTransaction> {
  const runs = [
    await runLoggedWorker(databaseUrl, first),
    await runLoggedWorker(databaseUrl, second),
  ] as const;
  const [a, b] = runs;
  if (a.length !== b.length || a.some((e, i) => e.sql !== b[i]!.sql)) {
    throw new Error(
      'the worker ran different statements for two alike purchases; no one transaction to replay',
    );
  }
  const statements = b.map((executed, at) => ({
    sql: executed.sql,
    sources: executed.parameters.map((_, index) => traceParameter(runs, [first, second], at, index)),
  }));
  const client = await connect(databaseUrl);
  try {
    const { rows } = await client.query<{ status: string }>('select status from payments where id = $1', [
      second.paymentId,
    ]);
    if (rows[0]?.status !== 'CREDITED')
      throw new Error(`the capture purchase ended ${rows[0]?.status ?? 'missing'}, not CREDITED`);
    return { statements, rowsWritten: await rowsWrittenFor(client, second.eventId) };
  } finally {
    await client.end();
  }
}

/** A plain `pg` client, connected: the baseline's driver, without the service's pool or type parsers. */
export async function connect(databaseUrl: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  return client;
}

/**
 * Rows per table whose current version was written by the transaction that claimed `eventId` (its row in
 * processed_events); tables it did not touch are left out.
 */
async function rowsWrittenFor(client: pg.ClientBase, eventId: string): Promise<Record<string, number>> {
  const claim = await client.query<{ xid: string }>(
    'select xmin::text as xid from processed_events where event_id = $1',
    [eventId],
  );
  const xid = claim.rows[0]?.xid;
  if (!xid) throw new Error(`no transaction claimed event ${eventId}`);
  const tables = await client.query<{ name: string }>(
    "select tablename as name from pg_tables where schemaname = 'public' order by tablename",
  );
  const written: Record<string, number> = {};
  for (const { name } of tables.rows) {
    const { rows } = await client.query<{ n: number }>(
      `select count(*)::int as n from ${client.escapeIdentifier(name)} where xmin = $1::xid`,
      [xid],
    );
    if (rows[0]!.n > 0) written[name] = rows[0]!.n;
  }
  return written;
}

/** Throws unless the replay that credited `item` wrote the rows per table that the worker's transaction did. */
export async function expectSameRowsWritten(
  client: pg.ClientBase,
  transaction: CreditTransaction,
  item: WorkItem,
  replay: string,
): Promise<void> {
  const written = await rowsWrittenFor(client, item.eventId);
  if (!isDeepStrictEqual(written, transaction.rowsWritten)) {
    throw new Error(
      `the ${replay} replay wrote ${JSON.stringify(written)}; the worker wrote ${JSON.stringify(transaction.rowsWritten)}`,
    );
  }
}

/** Runs the captured transaction for `item` through raw `pg`, statement for statement. */
export async function replayWithPg(
  client: pg.ClientBase,
  transaction: CreditTransaction,
  item: WorkItem,
): Promise<void> {
  const rows: (Record<string, unknown> | undefined)[] = [];
  for (const { sql, sources } of transaction.statements) {
    const values = sources.map((source) => {
      if (source.kind === 'item') return item[source.field];
      if (source.kind === 'result') return rows[source.statement]?.[source.column];
      return source.value;
    });
    rows.push((await client.query(sql, values)).rows[0]);
  }
}

/** A parameter as pgbench text: a variable, or the constant as the quoted text `pg` would have sent. */
function pgbenchValue(source: Source): string {
  if (source.kind === 'item') return `:${ITEM_FIELDS[source.field]}`;
  if (source.kind === 'result') return `:s${source.statement}_${source.column}`;
  const { value } = source;
  if (value === null || value === undefined) return 'NULL';
  if (!['string', 'number', 'bigint', 'boolean'].includes(typeof value)) {
    throw new Error(`pgbench cannot carry the constant ${JSON.stringify(value)}`);
  }
  const text = String(value);
  // pgbench reads `:name` anywhere in a command as a variable, quoted or not.
  if (/:[A-Za-z_]/.test(text)) throw new Error(`pgbench would read a variable in the constant ${text}`);
  return `'${text.replaceAll("'", "''")}'`;
}

/**
 * The captured transaction as a pgbench script: each transaction first claims the next row of
 * bench_work (the ids of one work item), and a statement whose result a later one uses stores its
 * columns with \gset.
 */
function pgbenchScript(transaction: CreditTransaction): string {
  const stored = new Set(
    transaction.statements.flatMap((s) =>
      s.sources.flatMap((src) => (src.kind === 'result' ? [src.statement] : [])),
    ),
  );
  const statements = transaction.statements.map(({ sql, sources }, at) => {
    const text = sql.replace(/\$(\d+)/g, (_, n: string) => pgbenchValue(sources[Number(n) - 1]!));
    return stored.has(at) ? `${text} \\gset s${at}_` : `${text};`;
  });
  const columns = Object.values(ITEM_FIELDS).join(', ');
  return [
    `SELECT ${columns} FROM bench_work WHERE n = (SELECT nextval('bench_seq')) \\gset`,
    ...statements,
    '',
  ].join('\n');
}

/** Whether pgbench is on PATH (the pgbench baseline is skipped without it). */
export const hasPgbench = () => spawnSync('pgbench', ['--version']).status === 0;

/**
 * Runs the captured transaction through pgbench, once per item, split over `clients` connections;
 * transactions per second.
 */
export async function replayWithPgbench(
  databaseUrl: string,
  transaction: CreditTransaction,
  items: readonly WorkItem[],
  clients: number,
): Promise<number> {
  const client = await connect(databaseUrl);
  const dir = mkdtempSync(path.join(tmpdir(), 'credits-pgbench-'));
  try {
    const fields = Object.keys(ITEM_FIELDS) as ItemField[];
    await client.query(
      `CREATE TABLE bench_work (n int PRIMARY KEY, ${Object.values(ITEM_FIELDS)
        .map((c) => `${c} text`)
        .join(', ')})`,
    );
    await client.query('CREATE SEQUENCE bench_seq');
    for (let i = 0; i < items.length; i += 1000) {
      const chunk = items.slice(i, i + 1000);
      await client.query(
        `INSERT INTO bench_work SELECT * FROM unnest($1::int[], ${fields.map((_, j) => `$${j + 2}::text[]`).join(', ')})`,
        [chunk.map((_, j) => i + j + 1), ...fields.map((f) => chunk.map((w) => w[f]))],
      );
    }
    const script = path.join(dir, 'credit.sql');
    writeFileSync(script, pgbenchScript(transaction));
    const perClient = Math.floor(items.length / clients);
    const { stdout } = await promisify(execFile)('pgbench', [
      '-n',
      '-M',
      'prepared',
      '-c',
      String(clients),
      '-j',
      String(Math.min(2, clients)),
      '-t',
      String(perClient),
      '-f',
      script,
      databaseUrl,
    ]);
    const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(stdout);
    if (!tps) throw new Error(`pgbench printed no tps: ${stdout}`);
    return Number(tps[1]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await client.query('DROP TABLE IF EXISTS bench_work; DROP SEQUENCE IF EXISTS bench_seq');
    await client.end();
  }
}
