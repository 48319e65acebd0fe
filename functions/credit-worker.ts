import { BatchProcessor, EventType, processPartialResponse } from '@aws-lambda-powertools/batch';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import { captureLambdaHandler } from '@aws-lambda-powertools/tracer/middleware';
import middy from '@middy/core';
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import type { Kysely } from 'kysely';
import { loadWorkerConfig } from '../shared/config.js';
import { createDb } from '../shared/db/client.js';
import type { Database } from '../shared/db/schema.js';
import { createObservability } from '../shared/observability.js';
import type { CreditPackage } from '../shared/packages.js';
import { applyStripeEvent } from '../shared/payments/apply-event.js';
import { type StripeEvent, stripeEventSchema } from '../shared/stripe/events.js';

/** A queue message that is not a Stripe event: it fails its own record and reaches the DLQ after 5 receives. */
export class PoisonMessageError extends Error {}

function parseQueuedEvent(record: SQSRecord): StripeEvent {
  let parsed: unknown;
  try {
    parsed = JSON.parse(record.body);
  } catch {
    throw new PoisonMessageError(`message ${record.messageId} is not JSON`);
  }
  const result = stripeEventSchema.safeParse(parsed);
  if (!result.success) throw new PoisonMessageError(`message ${record.messageId} is not a Stripe event`);
  return result.data;
}

export interface WorkerDependencies {
  readonly db: Kysely<Database>;
  readonly packages: readonly CreditPackage[];
}

/**
 * The crediting worker: each SQS record in its own transaction (applyStripeEvent). Records that fail for a
 * retryable reason are reported as batch item failures, so SQS redelivers only them.
 */
export function createCreditWorker(deps: WorkerDependencies) {
  const { logger, metrics, tracer } = createObservability('credit-worker');
  const processor = new BatchProcessor(EventType.SQS);

  async function processRecord(record: SQSRecord): Promise<void> {
    const event = parseQueuedEvent(record);
    const result = await applyStripeEvent(deps.db, event, { packages: deps.packages });
    const metric = {
      applied: 'EventApplied',
      duplicate: 'EventDuplicate',
      ignored: 'EventIgnored',
      parked: 'EventParked',
    };
    metrics.addMetric(metric[result.outcome], MetricUnit.Count, 1);
    if (result.creditsGranted) metrics.addMetric('CreditsGranted', MetricUnit.Count, result.creditsGranted);
    if (result.creditsClawedBack)
      metrics.addMetric('CreditsClawedBack', MetricUnit.Count, result.creditsClawedBack);
    const log = result.outcome === 'parked' ? logger.warn.bind(logger) : logger.info.bind(logger);
    log('event processed', {
      eventId: event.id,
      eventType: event.type,
      outcome: result.outcome,
      reason: result.reason,
      receiveCount: record.attributes.ApproximateReceiveCount,
    });
  }

  async function handleBatch(event: SQSEvent, context: Context): Promise<SQSBatchResponse> {
    metrics.addMetric('EventReceived', MetricUnit.Count, event.Records.length);
    const response = await processPartialResponse(event, processRecord, processor, {
      context,
      throwOnFullBatchFailure: false,
    });
    if (response.batchItemFailures.length > 0) {
      metrics.addMetric('EventRetried', MetricUnit.Count, response.batchItemFailures.length);
      for (const error of processor.errors) logger.error('record failed; SQS will redeliver it', { error });
    }
    return response;
  }

  return middy(handleBatch)
    .use(captureLambdaHandler(tracer))
    .use(injectLambdaContext(logger, { resetKeys: true }))
    .use(logMetrics(metrics));
}

let cached: ReturnType<typeof createCreditWorker> | undefined;

/** The Lambda entry point: configuration parsed and the pool built once per cold start. */
export const handler = (event: SQSEvent, context: Context) => {
  if (!cached) {
    const config = loadWorkerConfig();
    cached = createCreditWorker({
      db: createDb(config.database, { max: config.poolMax, applicationName: 'credit-worker' }),
      packages: config.packages,
    });
  }
  return cached(event, context);
};
