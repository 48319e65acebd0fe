import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { loadReconcileConfig } from '../shared/config.js';
import { createDb } from '../shared/db/client.js';
import { METRICS } from '../shared/metrics.js';
import { coldStart, createObservability, wrapHandler } from '../shared/observability.js';
import {
  createRun,
  executeRun,
  type ReconcileDependencies,
  type RunSummary,
  resolveWindow,
} from '../shared/reconcile/reconcile.js';
import { lazyStripe } from '../shared/stripe/api-client.js';

/** `{ runId }` executes a run the API opened; anything else (the nightly schedule) opens and executes one. */
export interface ReconcileInvocation {
  readonly runId?: string;
  readonly windowHours?: number;
}

/** The reconciliation function: nightly from EventBridge Scheduler, or on demand with a run id. */
export function createReconcileHandler(deps: () => Promise<ReconcileDependencies>) {
  const obs = createObservability('reconcile');
  const { logger, metrics } = obs;

  async function handleRun(event: ReconcileInvocation | undefined): Promise<RunSummary> {
    const resolved = await deps();
    const runId =
      event?.runId ??
      (await createRun(
        resolved.db,
        'schedule',
        await resolveWindow(resolved.db, new Date(), event?.windowHours),
      ));
    const summary = await executeRun(resolved, runId);
    metrics.addMetric(METRICS.reconciliationHealed, MetricUnit.Count, summary.healed);
    metrics.addMetric(METRICS.reconciliationFindings, MetricUnit.Count, summary.findings);
    metrics.addMetric(
      summary.status === 'succeeded' ? METRICS.reconciliationSucceeded : METRICS.reconciliationFailed,
      MetricUnit.Count,
      1,
    );
    // One line an alarm or a log query can key on.
    logger[summary.status === 'succeeded' && summary.findings === 0 ? 'info' : 'warn'](
      'reconciliation finished',
      {
        runId: summary.runId,
        status: summary.status,
        healed: summary.healed,
        findings: summary.findings,
        durationMs: summary.durationMs,
        counts: summary.counts,
        error: summary.error,
      },
    );
    return summary;
  }

  return wrapHandler(obs, handleRun);
}

/** The Lambda entry point. */
export const handler = coldStart(() => {
  const config = loadReconcileConfig();
  const db = createDb(config.database, { max: 3, applicationName: 'reconcile' });
  const stripe = lazyStripe({
    secretName: config.stripeSecretName,
    secretKey: config.stripeSecretKey,
    apiBase: config.stripeApiBase,
    maxNetworkRetries: 0, // the run paces and retries Stripe requests itself
  });
  return createReconcileHandler(async () => ({ db, stripe: await stripe(), packages: config.packages }));
});
