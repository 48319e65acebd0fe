import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { isDeepStrictEqual, promisify } from 'node:util';
import type { CompiledQuery, Kysely, QueryId } from 'kysely';
import pg from 'pg';
import { createDb } from '../../shared/db/client.js';
import type { Database } from '../../shared/db/schema.js';

/**
 * The values one replay is for (ids, keys, user ids): each parameter of a replayed statement may be one
 * of them. Every item of one transaction has the same fields.
 */
export type Item = Readonly<Record<string, string>>;

/** Where a parameter of a replayed statement comes from. */
type Source =
  | { readonly kind: 'item'; readonly field: string }
  | { readonly kind: 'result'; readonly statement: number; readonly column: string }
  | { readonly kind: 'constant'; readonly value: unknown }
  /** The caller's clock (`new Date()` passed as a parameter): the replay's own time. */
  | { readonly kind: 'now' }
  /** A random id the service generates (an outbox event's `evt_...`): a fresh one per replay. */
  | { readonly kind: 'unique'; readonly prefix: string };

interface ReplayStatement {
  readonly sql: string;
  readonly sources: readonly Source[];
}

/**
 * How to find the transaction that wrote an item's rows: `sql` returns `xid` (the row's `xmin`) for
 * `$1` = the item's `field`. A transaction's rows are then every row in public with that `xmin`.
 */
export interface Claim {
  readonly sql: string;
  readonly field: string;
}

/** A transaction as the service ran it, ready to replay for other items (raw `pg` or pgbench). */
export interface CapturedTransaction {
  readonly fields: readonly string[];
  /** Every statement, `begin` and `commit` included, in the order the service ran them. */
  readonly statements: readonly ReplayStatement[];
  /** Rows per table that the captured transaction wrote (their current version is its). */
  readonly rowsWritten: Readonly<Record<string, number>>;
  readonly claim: Claim;
}

/** One statement as the service ran it: its SQL, its parameters and the first row it returned. */
export interface Executed {
  readonly sql: string;
  readonly parameters: readonly unknown[];
  readonly row: Record<string, unknown> | undefined;
}

/**
 * Runs `work` with a kysely of one connection on `databaseUrl` and returns every statement it executed,
 * from kysely's query log; a plugin keeps each query's first row, so later parameters can be traced to it.
 */
export async function logQueries(
  databaseUrl: string,
  /** `log`: the statements logged so far. */
  work: (db: Kysely<Database>, log: readonly CompiledQuery[]) => Promise<void>,
): Promise<Executed[]> {
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
    await work(db, logged);
  } finally {
    await db.destroy();
  }
  return logged.map((q) => ({ sql: q.sql, parameters: q.parameters, row: rows.get(q.queryId) }));
}

/** A random id as the service makes them: a prefix and 32 hex digits. */
const RANDOM_ID = /^([a-z]+_)[0-9a-f]{32}$/;

/** A JSON object as text: a document whose content (ids, times) differs per request but not its size class. */
const isJsonObject = (value: unknown) => {
  if (typeof value !== 'string' || !value.startsWith('{')) return false;
  try {
    return typeof JSON.parse(value) === 'object';
  } catch {
    return false;
  }
};

/** A Date within five minutes of now: the caller's clock, not a stored value. */
const isClock = (value: unknown) =>
  value instanceof Date && Math.abs(value.getTime() - Date.now()) < 5 * 60_000;

/**
 * Where parameter `index` of statement `at` comes from, told apart by two captures of alike requests:
 * an item's field; else a value both runs passed (a constant); else the clock (a Date of now in both);
 * else a column an earlier statement returned, equal to what was passed in both runs (a new balance).
 */
function traceParameter(
  runs: readonly [Executed[], Executed[]],
  items: readonly [Item, Item],
  at: number,
  index: number,
): Source {
  const values = runs.map((run) => run[at]!.parameters[index]);
  const field = Object.keys(items[0]).find((f) => items.every((item, r) => values[r] === item[f]));
  if (field) return { kind: 'item', field };
  if (isDeepStrictEqual(values[0], values[1])) return { kind: 'constant', value: values[1] };
  if (values.every(isClock)) return { kind: 'now' };
  const random = values.map((v) => (typeof v === 'string' ? RANDOM_ID.exec(v)?.[1] : undefined));
  if (random[0] && random[0] === random[1]) return { kind: 'unique', prefix: random[0] };
  for (let statement = at - 1; statement >= 0; statement--) {
    const [first, second] = runs.map((run) => run[statement]!.row);
    const column = Object.keys(second ?? {}).find(
      (c) => isDeepStrictEqual(first?.[c], values[0]) && isDeepStrictEqual(second?.[c], values[1]),
    );
    if (column) return { kind: 'result', statement, column };
  }
  // A document (an outbox event's body) is written as captured: the same row, the same cost.
  if (values.every(isJsonObject)) return { kind: 'constant', value: values[1] };
  throw new Error(
    `parameter $${index + 1} of "${runs[1][at]!.sql}" differs between two alike requests and comes from neither the item nor an earlier result`,
  );
}

/**
 * Captures the transaction the service runs for `items[0]` and then `items[1]` (alike requests whose
 * ids differ, the second after the first so balances differ), each through `run` with its query log on,
 * and traces each parameter of the second run to its source. Throws when the two runs executed different
 * statements, when they are neither one statement (its own transaction) nor one transaction ending in
 * `commit`, or when `claim` finds no writer.
 */
export async function captureTransaction(
  databaseUrl: string,
  items: readonly [Item, Item],
  run: (db: Kysely<Database>, item: Item) => Promise<void>,
  claim: Claim,
): Promise<CapturedTransaction> {
  const runs = [
    await logQueries(databaseUrl, (db) => run(db, items[0])),
    await logQueries(databaseUrl, (db) => run(db, items[1])),
  ] as const;
  const [a, b] = runs;
  if (a.length !== b.length || a.some((e, i) => e.sql !== b[i]!.sql)) {
    throw new Error(
      `two alike requests ran different statements; no one transaction to replay:\n${a.map((e) => e.sql).join('\n')}\n---\n${b.map((e) => e.sql).join('\n')}`,
    );
  }
  const verbs = b.map((e) => e.sql.toLowerCase());
  const oneStatement = verbs.length === 1 && verbs[0] !== 'begin';
  if (!oneStatement && (verbs.filter((v) => v === 'begin').length !== 1 || verbs.at(-1) !== 'commit')) {
    throw new Error(
      `the captured queries are neither one statement nor one transaction ending in commit: ${verbs.join('; ')}`,
    );
  }
  const statements = b.map((executed, at) => ({
    sql: executed.sql,
    sources: executed.parameters.map((_, index) => traceParameter(runs, items, at, index)),
  }));
  const client = await connect(databaseUrl);
  try {
    const rowsWritten = await rowsWrittenFor(client, claim, items[1]);
    return { fields: Object.keys(items[1]), statements, rowsWritten, claim };
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

/** Rows per table in public whose current version was written by the transaction `claim` finds for `item`. */
async function rowsWrittenFor(
  client: pg.ClientBase,
  claim: Claim,
  item: Item,
): Promise<Record<string, number>> {
  const found = await client.query<{ xid: string }>(claim.sql, [item[claim.field]]);
  const xid = found.rows[0]?.xid;
  if (!xid) throw new Error(`no transaction wrote the row of ${claim.field} ${item[claim.field]}`);
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

/** Throws unless the transaction that `replay` ran for `item` wrote the rows per table the captured one did. */
export async function expectSameRowsWritten(
  client: pg.ClientBase,
  transaction: CapturedTransaction,
  item: Item,
  replay: string,
): Promise<void> {
  const written = await rowsWrittenFor(client, transaction.claim, item);
  if (!isDeepStrictEqual(written, transaction.rowsWritten)) {
    throw new Error(
      `the ${replay} replay wrote ${JSON.stringify(written)}; the service wrote ${JSON.stringify(transaction.rowsWritten)}`,
    );
  }
}

/**
 * Runs the captured transaction for `item` through raw `pg`, statement for statement; `onStatement` sees
 * each one's index as it completes (per-statement timing). The first row of each statement.
 */
export async function replayWithPg(
  client: pg.ClientBase,
  transaction: CapturedTransaction,
  item: Item,
  onStatement?: (at: number) => void,
): Promise<readonly (Record<string, unknown> | undefined)[]> {
  const rows: (Record<string, unknown> | undefined)[] = [];
  for (const [at, { sql, sources }] of transaction.statements.entries()) {
    const values = sources.map((source) => {
      if (source.kind === 'item') return item[source.field];
      if (source.kind === 'result') return rows[source.statement]?.[source.column];
      if (source.kind === 'now') return new Date();
      if (source.kind === 'unique') return source.prefix + randomBytes(16).toString('hex');
      return source.value;
    });
    rows.push((await client.query(sql, values)).rows[0]);
    onStatement?.(at);
  }
  return rows;
}

/** An item field as a pgbench column (and variable) name: snake_case. */
const columnOf = (field: string) => field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** A parameter as pgbench text: a variable, `now()`, or the constant as the quoted text `pg` would have sent. */
function pgbenchValue(source: Source): string {
  if (source.kind === 'item') return `:${columnOf(source.field)}`;
  if (source.kind === 'result') return `:s${source.statement}_${source.column}`;
  if (source.kind === 'now') return 'now()';
  if (source.kind === 'unique') return `'${source.prefix}' || md5(random()::text)`;
  const { value } = source;
  if (value === null || value === undefined) return 'NULL';
  if (!['string', 'number', 'bigint', 'boolean'].includes(typeof value)) {
    throw new Error(`pgbench cannot carry the constant ${JSON.stringify(value)}`);
  }
  // A JSON document's `"key":value` would read as a variable; a space after the colon is the same jsonb.
  const text = isJsonObject(value) ? String(value).replaceAll('":', '": ') : String(value);
  // pgbench reads `:name` anywhere in a command as a variable, quoted or not.
  if (/:[A-Za-z_]/.test(text)) throw new Error(`pgbench would read a variable in the constant ${text}`);
  return `'${text.replaceAll("'", "''")}'`;
}

/**
 * The captured transaction as a pgbench script: each transaction first claims the next row of
 * bench_work (the fields of one item), and a statement whose result a later one uses stores its
 * columns with \gset.
 */
function pgbenchScript(transaction: CapturedTransaction): string {
  const stored = new Set(
    transaction.statements.flatMap((s) =>
      s.sources.flatMap((src) => (src.kind === 'result' ? [src.statement] : [])),
    ),
  );
  const statements = transaction.statements.map(({ sql, sources }, at) => {
    const text = sql.replace(/\$(\d+)/g, (_, n: string) => pgbenchValue(sources[Number(n) - 1]!));
    return stored.has(at) ? `${text} \\gset s${at}_` : `${text};`;
  });
  const columns = transaction.fields.map(columnOf).join(', ');
  return [
    `SELECT ${columns} FROM bench_work WHERE n = (SELECT nextval('bench_seq')) \\gset`,
    ...statements,
    '',
  ].join('\n');
}

/** Whether pgbench is on PATH (the pgbench baselines are skipped without it). */
export const hasPgbench = () => spawnSync('pgbench', ['--version']).status === 0;

/** What a pgbench run measured: transactions per second and their mean latency (ms). */
export interface PgbenchResult {
  readonly perSecond: number;
  readonly latencyMs: number;
}

/** pgbench (prepared statements) running `script` over `clients` connections, for `seconds` or `transactions` each. */
export async function runPgbench(
  databaseUrl: string,
  script: string,
  clients: number,
  run: { readonly seconds: number } | { readonly transactions: number },
): Promise<PgbenchResult> {
  const dir = mkdtempSync(path.join(tmpdir(), 'credits-pgbench-'));
  try {
    const file = path.join(dir, 'transaction.sql');
    writeFileSync(file, script);
    const { stdout } = await promisify(execFile)('pgbench', [
      '-n',
      '-M',
      'prepared',
      '-c',
      String(clients),
      '-j',
      String(Math.min(2, clients)),
      ...('seconds' in run ? ['-T', String(run.seconds)] : ['-t', String(run.transactions)]),
      '-f',
      file,
      databaseUrl,
    ]);
    const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(stdout);
    const latency = /latency average = ([\d.]+) ms/.exec(stdout);
    if (!tps || !latency) throw new Error(`pgbench printed no tps or latency: ${stdout}`);
    return { perSecond: Number(tps[1]), latencyMs: Number(latency[1]) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Runs the captured transaction through pgbench (prepared statements) over `clients` connections, one
 * item per transaction: `items.length / clients` each, or for `seconds` when given (it fails if the items
 * run out first).
 */
export async function replayWithPgbench(
  databaseUrl: string,
  transaction: CapturedTransaction,
  items: readonly Item[],
  clients: number,
  seconds?: number,
): Promise<PgbenchResult> {
  const client = await connect(databaseUrl);
  try {
    const { fields } = transaction;
    await client.query(
      `CREATE TABLE bench_work (n int PRIMARY KEY, ${fields.map((f) => `${columnOf(f)} text`).join(', ')})`,
    );
    await client.query('CREATE SEQUENCE bench_seq');
    for (let i = 0; i < items.length; i += 1000) {
      const chunk = items.slice(i, i + 1000);
      await client.query(
        `INSERT INTO bench_work SELECT * FROM unnest($1::int[], ${fields.map((_, j) => `$${j + 2}::text[]`).join(', ')})`,
        [chunk.map((_, j) => i + j + 1), ...fields.map((f) => chunk.map((item) => item[f]))],
      );
    }
    return await runPgbench(databaseUrl, pgbenchScript(transaction), clients, {
      ...(seconds ? { seconds } : { transactions: Math.floor(items.length / clients) }),
    });
  } finally {
    await client.query('DROP TABLE IF EXISTS bench_work; DROP SEQUENCE IF EXISTS bench_seq');
    await client.end();
  }
}
