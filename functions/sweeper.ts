import { MetricUnit } from '@aws-lambda-powertools/metrics';
import type { Kysely } from 'kysely';
import { loadDatabaseConfig } from '../shared/config.js';
import { createDb } from '../shared/db/client.js';
import type { Database } from '../shared/db/schema.js';
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
 * The sweeper, every minute from EventBridge Scheduler (locally every SWEEP_INTERVAL_SECONDS): writes off
 * expired grants' remainders as `grant_expiry` entries. Debits already skip and write off expired grants
 * of their own account; the sweeper makes idle accounts' balances and entries catch up.
 */
export function createSweeper(deps: SweeperDependencies) {
  const obs = createObservability('sweeper');
  const { logger, metrics } = obs;

  async function sweep(): Promise<SweepResult> {
    const result = await sweepExpiredGrants(deps.db, deps.clock?.() ?? new Date(), {
      budgetMs: deps.budgetMs ?? 40_000,
    });
    metrics.addMetric(METRICS.grantsExpired, MetricUnit.Count, result.expiredGrants);
    if (result.expiredGrants > 0 || result.unfinished)
      logger.info('expired grants written off', { ...result });
    return result;
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
