import { BatchProcessor, EventType, processPartialResponse } from '@aws-lambda-powertools/batch';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import type { Kysely } from 'kysely';
import { loadWebhookConfig, loadWorkerConfig } from '../shared/config.js';
import { createDb } from '../shared/db/client.js';
import type { Database } from '../shared/db/schema.js';
import { applyStripeEvent, type EventOutcome } from '../shared/events/apply-event.js';
import { METRICS } from '../shared/metrics.js';
import { coldStart, createObservability, wrapHandler } from '../shared/observability.js';
import type { CreditPackage } from '../shared/packages.js';
import { type StripeEvent, stripeEventSchema } from '../shared/stripe/events.js';
import { flushWebhooks } from '../shared/webhooks/outbox.js';
import type { DeliveryQueue } from '../shared/webhooks/queue.js';
import { awsWebhookRuntime } from '../shared/webhooks/runtime.js';

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
  /** The webhook dispatcher's queue: events the batch wrote are sent after it. @default none (the sweeper sends them) */
  readonly webhookQueue?: DeliveryQueue;
}

const OUTCOME_METRIC: Record<EventOutcome, string> = {
  applied: METRICS.eventApplied,
  duplicate: METRICS.eventDuplicate,
  ignored: METRICS.eventIgnored,
  parked: METRICS.eventParked,
};

/**
 * The crediting worker: each SQS record in its own transaction (applyStripeEvent). Records that fail for a
 * retryable reason are reported as batch item failures, so SQS redelivers only them. Every log line of a
 * record carries its message id (and event id and type once known).
 */
export function createCreditWorker(deps: WorkerDependencies) {
  const obs = createObservability('credit-worker');
  const { logger, metrics } = obs;
  const processor = new BatchProcessor(EventType.SQS);

  async function processRecord(record: SQSRecord): Promise<void> {
    const keys: Record<string, unknown> = {
      messageId: record.messageId,
      receiveCount: record.attributes.ApproximateReceiveCount,
    };
    try {
      const event = parseQueuedEvent(record);
      Object.assign(keys, { eventId: event.id, eventType: event.type });
      const result = await applyStripeEvent(deps.db, event, { packages: deps.packages });
      metrics.addMetric(OUTCOME_METRIC[result.outcome], MetricUnit.Count, 1);
      if (result.creditsGranted)
        metrics.addMetric(METRICS.creditsGranted, MetricUnit.Count, result.creditsGranted);
      if (result.creditsClawedBack)
        metrics.addMetric(METRICS.creditsClawedBack, MetricUnit.Count, result.creditsClawedBack);
      const level = result.outcome === 'parked' ? 'warn' : 'info';
      logger[level]('event processed', { ...keys, outcome: result.outcome, reason: result.reason });
    } catch (error: unknown) {
      logger.error('record failed; SQS will redeliver it', { ...keys, error: error as Error });
      throw error;
    }
  }

  async function handleBatch(event: SQSEvent, context: Context): Promise<SQSBatchResponse> {
    metrics.addMetric(METRICS.eventReceived, MetricUnit.Count, event.Records.length);
    const response = await processPartialResponse(event, processRecord, processor, {
      context,
      throwOnFullBatchFailure: false,
    });
    if (response.batchItemFailures.length > 0) {
      metrics.addMetric(METRICS.eventRetried, MetricUnit.Count, response.batchItemFailures.length);
    }
    if (deps.webhookQueue && response.batchItemFailures.length < event.Records.length) {
      // The credits.granted / payment.* events the batch committed, sent now; the sweeper sends what is left.
      await flushWebhooks(deps.db, deps.webhookQueue).catch((error: unknown) =>
        logger.warn('webhook events left for the sweeper', { error: error as Error }),
      );
    }
    return response;
  }

  return wrapHandler(obs, handleBatch);
}

/** The Lambda entry point. */
export const handler = coldStart(() => {
  const config = loadWorkerConfig();
  return createCreditWorker({
    db: createDb(config.database, { max: config.poolMax, applicationName: 'credit-worker' }),
    packages: config.packages,
    ...(process.env.WEBHOOK_QUEUE_URL && { webhookQueue: awsWebhookRuntime(loadWebhookConfig()).queue }),
  });
});
