import { BatchProcessor, EventType, processPartialResponse } from '@aws-lambda-powertools/batch';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import * as z from 'zod/mini';
import { loadDispatcherConfig } from '../shared/config.js';
import { createDb } from '../shared/db/client.js';
import { METRICS } from '../shared/metrics.js';
import { coldStart, createObservability, wrapHandler } from '../shared/observability.js';
import {
  type DispatchDependencies,
  type DispatchOutcome,
  dispatchDelivery,
} from '../shared/webhooks/dispatch.js';
import { awsWebhookRuntime } from '../shared/webhooks/runtime.js';
import { cachingDecrypts } from '../shared/webhooks/secrets.js';

/** A queue message that names no delivery: it fails its own record and reaches the DLQ after 5 receives. */
export class PoisonDeliveryMessageError extends Error {}

const messageSchema = z.object({ deliveryId: z.uuid() });

function deliveryIdOf(record: SQSRecord): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(record.body);
  } catch {
    throw new PoisonDeliveryMessageError(`message ${record.messageId} is not JSON`);
  }
  const result = messageSchema.safeParse(parsed);
  if (!result.success) throw new PoisonDeliveryMessageError(`message ${record.messageId} names no delivery`);
  return result.data.deliveryId;
}

const OUTCOME_METRIC: Record<DispatchOutcome['outcome'], string | undefined> = {
  delivered: METRICS.webhookDelivered,
  failed: METRICS.webhookAttemptFailed,
  dead: METRICS.webhookDead,
  abandoned: undefined,
  skipped: undefined,
};

/**
 * The webhook dispatcher: one attempt of one delivery per SQS record (shared/webhooks/dispatch.ts). An
 * endpoint's failure is not the record's: it is logged and rescheduled, and the record is acknowledged. Only
 * a database or queue failure fails the record, so SQS redelivers it (and parks it in the DLQ after 5).
 */
export function createWebhookDispatcher(deps: DispatchDependencies) {
  const obs = createObservability('webhook-dispatcher');
  const { logger, metrics } = obs;
  const processor = new BatchProcessor(EventType.SQS);

  async function processRecord(record: SQSRecord): Promise<void> {
    const keys: Record<string, unknown> = { messageId: record.messageId };
    try {
      const deliveryId = deliveryIdOf(record);
      keys.deliveryId = deliveryId;
      const result = await dispatchDelivery(deps, deliveryId);
      const metric = OUTCOME_METRIC[result.outcome];
      if (metric) metrics.addMetric(metric, MetricUnit.Count, 1);
      const level = result.outcome === 'dead' ? 'warn' : 'info';
      logger[level]('delivery attempted', { ...keys, ...result });
    } catch (error: unknown) {
      logger.error('record failed; SQS will redeliver it', { ...keys, error: error as Error });
      throw error;
    }
  }

  async function handleBatch(event: SQSEvent, context: Context): Promise<SQSBatchResponse> {
    return processPartialResponse(event, processRecord, processor, {
      context,
      throwOnFullBatchFailure: false,
    });
  }

  return wrapHandler(obs, handleBatch);
}

/** The Lambda entry point. */
export const handler = coldStart(() => {
  const config = loadDispatcherConfig();
  const runtime = awsWebhookRuntime(config.webhooks);
  return createWebhookDispatcher({
    db: createDb(config.database, { max: config.poolMax, applicationName: 'webhook-dispatcher' }),
    queue: runtime.queue,
    cipher: cachingDecrypts(runtime.cipher),
    retrySeconds: runtime.retrySeconds,
  });
});
