import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import { captureLambdaHandler } from '@aws-lambda-powertools/tracer/middleware';
import middy from '@middy/core';
import type { Context } from 'aws-lambda';
import { loadApiConfig } from '../shared/config.js';
import { createDb } from '../shared/db/client.js';
import { createObservability } from '../shared/observability.js';
import {
  createRun,
  defaultWindow,
  executeRun,
  type ReconcileDependencies,
  type RunSummary,
} from '../shared/reconcile/reconcile.js';
import { lazyStripe } from '../shared/stripe/api-client.js';

/** `{ runId }` executes a run the API opened; anything else (the nightly schedule) opens and executes one. */
export interface ReconcileInvocation {
  readonly runId?: string;
  readonly windowHours?: number;
}

/** The reconciliation function: nightly from EventBridge Scheduler, or on demand with a run id. */
export function createReconcileHandler(deps: () => Promise<ReconcileDependencies>) {
  const { logger, metrics, tracer } = createObservability('reconcile');

  async function handleRun(event: ReconcileInvocation | undefined): Promise<RunSummary> {
    const resolved = await deps();
    let runId = event?.runId;
    if (!runId) {
      const now = new Date();
      const window = event?.windowHours
        ? { start: new Date(now.getTime() - event.windowHours * 3_600_000), end: now }
        : await defaultWindow(resolved.db, now);
      runId = await createRun(resolved.db, 'schedule', window);
    }
    const summary = await executeRun(resolved, runId);
    metrics.addMetric('ReconciliationHealed', MetricUnit.Count, summary.healed);
    metrics.addMetric('ReconciliationFindings', MetricUnit.Count, summary.findings);
    metrics.addMetric(
      summary.status === 'succeeded' ? 'ReconciliationSucceeded' : 'ReconciliationFailed',
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

  return middy(handleRun)
    .use(captureLambdaHandler(tracer))
    .use(injectLambdaContext(logger, { resetKeys: true }))
    .use(logMetrics(metrics));
}

let cached: ReturnType<typeof createReconcileHandler> | undefined;

export const handler = (event: ReconcileInvocation, context: Context) => {
  if (!cached) {
    const config = loadApiConfig();
    const db = createDb(config.database, { max: 3, applicationName: 'reconcile' });
    const stripe = lazyStripe({
      secretName: config.stripeSecretName,
      secretKey: config.stripeSecretKey,
      apiBase: config.stripeApiBase,
      maxNetworkRetries: 0, // the run paces and retries Stripe requests itself
    });
    cached = createReconcileHandler(async () => ({ db, stripe: await stripe(), packages: config.packages }));
  }
  return cached(event, context);
};
