import { MetricUnit } from '@aws-lambda-powertools/metrics';
import type { Kysely } from 'kysely';
import { loadDatabaseConfig } from '../shared/config.js';
import { createDb } from '../shared/db/client.js';
import type { Database } from '../shared/db/schema.js';
import { expireDueHolds } from '../shared/holds/holds.js';
import { type SweepResult, sweepExpiredGrants } from '../shared/ledger/sweep.js';
import { METRICS } from '../shared/metrics.js';
import { coldStart, createObservability, wrapHandler } from '../shared/observability.js';

export interface SweeperDependencies {
  readonly db: Kysely<Database>;
  /** @default the system clock */
  readonly clock?: () => Date;
  /** How long one sweep may run before it leaves the rest to the next. @default 40 s (the function has 50) */
  readonly budgetMs?: number;
}

/**
 * The sweeper, every minute from EventBridge Scheduler (locally every SWEEP_INTERVAL_SECONDS): marks holds
 * past their expiry expired and writes off expired grants' remainders as `grant_expiry` entries. Reads and
 * debits already treat both as expired; the sweeper makes idle accounts' rows and entries catch up.
 */
export function createSweeper(deps: SweeperDependencies) {
  const obs = createObservability('sweeper');
  const { logger, metrics } = obs;

  async function sweep(): Promise<SweepResult & { expiredHolds: number }> {
    const now = deps.clock?.() ?? new Date();
    const expiredHolds = await expireDueHolds(deps.db, now);
    const result = await sweepExpiredGrants(deps.db, now, { budgetMs: deps.budgetMs ?? 40_000 });
    metrics.addMetric(METRICS.holdsExpired, MetricUnit.Count, expiredHolds);
    metrics.addMetric(METRICS.grantsExpired, MetricUnit.Count, result.expiredGrants);
    if (expiredHolds > 0 || result.expiredGrants > 0 || result.unfinished) {
      logger.info('expired holds and grants written off', { ...result, expiredHolds });
    }
    return { ...result, expiredHolds };
  }

  return wrapHandler(obs, sweep);
}

/** The Lambda entry point. */
export const handler = coldStart(() => {
  const config = loadDatabaseConfig();
  return createSweeper({
    db: createDb(config.database, { max: config.poolMax, applicationName: 'sweeper' }),
  });
});
