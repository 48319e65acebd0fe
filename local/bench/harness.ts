import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import path from 'node:path';
import type { Kysely } from 'kysely';
import { createDb } from '../../shared/db/client.js';
import { migrateToLatest } from '../../shared/db/migrate.js';
import type { Database } from '../../shared/db/schema.js';
import { createDatabase, dropDatabase, startScratchPostgres } from '../postgres.js';

/** How much work each section does: `--quick` for a short run, otherwise the figures the README quotes. */
export interface Scale {
  readonly spreadAccounts: number;
  readonly hotEvents: number;
  readonly seconds: number;
  readonly intakeCalls: number;
  readonly sessions: number;
  readonly imports: number;
}

export function benchScale(quick: boolean): Scale {
  return quick
    ? { spreadAccounts: 1_000, hotEvents: 400, seconds: 2, intakeCalls: 500, sessions: 1_000, imports: 3 }
    : {
        spreadAccounts: 10_000,
        hotEvents: 2_000,
        seconds: 6,
        intakeCalls: 3_000,
        sessions: 10_000,
        imports: 5,
      };
}

/** One line of the table: our figure beside its same-run baseline. */
export interface Row {
  readonly name: string;
  readonly ours: string;
  readonly baseline: string;
  readonly ratio: number | null;
  readonly target?: string;
  readonly met?: boolean;
  readonly figures: Record<string, number>;
}

/** What every section gets: the scratch database, its scale, and where to report its rows. */
export interface BenchContext {
  readonly db: Kysely<Database>;
  readonly databaseUrl: string;
  /** A temporary directory, removed at the end. */
  readonly scratch: string;
  readonly scale: Scale;
  readonly report: (row: Row) => void;
}

export const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits });

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export interface LoadResult {
  readonly perSecond: number;
  readonly p50: number;
  readonly p95: number;
  readonly p99: number;
}

/**
 * Runs `clients` loops of `call` for `seconds`; throughput and latency percentiles in ms. A client stops
 * early when its call answers `false` (no work left), and that call is not counted.
 */
export async function load(
  clients: number,
  seconds: number,
  call: (client: number, i: number) => Promise<unknown>,
): Promise<LoadResult> {
  const latencies: number[] = [];
  const deadline = performance.now() + seconds * 1000;
  const started = performance.now();
  let i = 0;
  let failed = false;
  // On a failure every client stops, and the first error is thrown once all have (none left running).
  const outcomes = await Promise.allSettled(
    Array.from({ length: clients }, async (_, client) => {
      try {
        while (!failed && performance.now() < deadline) {
          const t = performance.now();
          if ((await call(client, i++)) === false) break;
          latencies.push(performance.now() - t);
        }
      } catch (error: unknown) {
        failed = true;
        throw error;
      }
    }),
  );
  const failure = outcomes.find((o) => o.status === 'rejected');
  if (failure) throw failure.reason;
  const elapsed = (performance.now() - started) / 1000;
  if (latencies.length === 0) throw new Error('the load run completed no call');
  latencies.sort((a, b) => a - b);
  return {
    perSecond: latencies.length / elapsed,
    p50: percentile(latencies, 50),
    p95: percentile(latencies, 95),
    p99: percentile(latencies, 99),
  };
}

export const latency = (r: LoadResult) =>
  `${fmt(r.perSecond)}/s, p50 ${r.p50.toFixed(1)} p95 ${r.p95.toFixed(1)} p99 ${r.p99.toFixed(1)} ms`;

/** Sorted durations in ms of `fn` called once for each i below `count`, one at a time. */
export async function timeEach(count: number, fn: (i: number) => Promise<void> | void): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < count; i++) {
    const t = performance.now();
    await fn(i);
    samples.push(performance.now() - t);
  }
  return samples.sort((a, b) => a - b);
}

export const describeMachine = () =>
  `${cpus().length} × ${cpus()[0]?.model.trim() ?? 'cpu'}, ${fmt(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;

/** Prints a row as it is measured (stderr), so a long run shows progress. */
export function printProgress(row: Row): void {
  const ratio = row.ratio === null ? '' : `ratio ${row.ratio.toFixed(2)}`;
  const target = row.target ? `  target ${row.target}: ${row.met ? 'met' : 'MISSED'}` : '';
  console.error(`  ${row.name}: ${row.ours} | ${row.baseline} | ${ratio}${target}`);
}

/** The Markdown table of every row (the README's Performance section quotes it). */
export function formatTable(rows: readonly Row[]): string {
  const widths = [44, 60, 64, 6, 24];
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [
    line(['benchmark', 'ours', 'baseline (same run)', 'ratio', 'target']),
    `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`,
    ...rows.map((row) => {
      const target = row.target ? `${row.target}: ${row.met ? 'met' : 'missed'}` : '';
      return line([row.name, row.ours, row.baseline, row.ratio === null ? '' : row.ratio.toFixed(2), target]);
    }),
  ].join('\n');
}

/**
 * A migrated database of its own on DATABASE_URL's server or an embedded Postgres (fsync off, or on when
 * `durable`), plus a scratch directory; `stop` drops and removes both.
 */
export async function startBenchDatabase(durable = false) {
  const server = await startScratchPostgres('credits-bench-', { durable });
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
