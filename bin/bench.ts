import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { benchBundles } from '../local/bench/bundles.js';
import { benchDebit } from '../local/bench/debit.js';
import {
  type BenchContext,
  benchScale,
  describeMachine,
  formatTable,
  printProgress,
  type Row,
  startBenchDatabase,
} from '../local/bench/harness.js';
import { benchHttp } from '../local/bench/http.js';
import { benchIntake } from '../local/bench/intake.js';
import { benchMetering } from '../local/bench/metering.js';
import { benchReconciliation } from '../local/bench/reconciliation.js';
import { benchWorker } from '../local/bench/worker.js';
import { checkInvariants } from '../shared/invariants.js';

const USAGE = `usage: npm run bench [-- --quick] [--fsync] [--out FILE] [--only SECTION,...]

sections: reconciliation, worker, debit, http, metering, intake, bundles (default: all)

Measures the service against a baseline taken in the same run on the same machine, and prints a table
with ratios. Uses DATABASE_URL's server when set (it creates and drops a database of its own), otherwise
an embedded Postgres in a temporary directory, with fsync off (the figures are CPU, not the disk's) unless
--fsync (every commit waits for its WAL on disk, as on a production server; ignored with DATABASE_URL).`;

// Reconciliation first: it checks every credited payment in its window against Stripe.
const SECTIONS: Record<string, (context: BenchContext) => Promise<void>> = {
  reconciliation: benchReconciliation,
  worker: benchWorker,
  debit: benchDebit,
  http: benchHttp,
  metering: benchMetering,
  intake: benchIntake,
  bundles: benchBundles,
};

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    fsync: { type: 'boolean', default: false },
    out: { type: 'string' },
    only: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
const only = args.only?.split(',') ?? Object.keys(SECTIONS);
const unknown = only.filter((name) => !(name in SECTIONS));
if (unknown.length > 0) {
  console.error(`unknown section ${unknown.join(', ')}; one of ${Object.keys(SECTIONS).join(', ')}`);
  process.exit(2);
}

// Handlers run as in Lambda, minus log and metric output (it would bury the table) and X-Ray (no daemon).
process.env.POWERTOOLS_LOG_LEVEL = 'SILENT';
process.env.POWERTOOLS_METRICS_DISABLED = 'true';
process.env.POWERTOOLS_TRACE_ENABLED = 'false';
process.env.AWS_REGION ??= 'us-east-1';

const server = process.env.DATABASE_URL
  ? "DATABASE_URL's Postgres"
  : `embedded Postgres, fsync ${args.fsync ? 'on' : 'off'}`;
const machine = `${describeMachine()}, ${server}`;
const flags = [args.quick && '--quick', args.fsync && '--fsync'].filter(Boolean).join(' ');
console.error(`npm run bench${flags ? ` -- ${flags}` : ''} on ${machine}`);
const rows: Row[] = [];
const database = await startBenchDatabase(args.fsync);
try {
  const context: BenchContext = {
    db: database.db,
    databaseUrl: database.databaseUrl,
    scratch: database.scratch,
    scale: benchScale(args.quick),
    report(row) {
      rows.push(row);
      printProgress(row);
    },
  };
  for (const name of only) {
    const started = performance.now();
    await SECTIONS[name]!(context);
    console.error(`  (${name}: ${((performance.now() - started) / 1000).toFixed(0)} s)`);
  }
  const invariants = await checkInvariants(database.db);
  if (!invariants.ok)
    throw new Error(`invariants broken after the benchmark: ${JSON.stringify(invariants.violations)}`);
} finally {
  await database.stop();
}

console.log(formatTable(rows));
console.log(`\nmachine: ${machine}; every ledger invariant held afterwards.`);
if (args.out) {
  writeFileSync(
    args.out,
    `${JSON.stringify({ machine, quick: args.quick, fsync: args.fsync, at: new Date().toISOString(), rows }, null, 2)}\n`,
  );
  console.log(`written to ${args.out}`);
}
