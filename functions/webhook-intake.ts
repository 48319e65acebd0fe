import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { SQSClient } from '@aws-sdk/client-sqs';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { type IntakeConfig, loadIntakeConfig } from '../shared/config.js';
import { ServiceError } from '../shared/errors.js';
import { decodeUtf8, json, problem } from '../shared/http/responses.js';
import { METRICS } from '../shared/metrics.js';
import { coldStart, createObservability, wrapHandler } from '../shared/observability.js';
import { enqueueStripeEvent } from '../shared/queue.js';
import { isHandledEventType, type StripeEvent, stripeEventSchema } from '../shared/stripe/events.js';
import { webhookSigningSecrets } from '../shared/stripe/secrets.js';
import { verifyStripeSignature } from '../shared/stripe/signature.js';

export interface IntakeDependencies {
  readonly config: IntakeConfig;
  readonly sqs: SQSClient;
  readonly now?: () => number;
}

/**
 * POST /webhooks/stripe: verifies the signature over the exact raw bytes, checks the event, and enqueues it.
 * 2xx only after SQS accepted it; 400 for anything not provably from Stripe; 5xx so Stripe retries.
 * No database access.
 */
export function createWebhookIntake(deps: IntakeDependencies) {
  const obs = createObservability('webhook-intake');
  const { logger, metrics } = obs;
  const { config } = deps;

  async function readEvent(request: APIGatewayProxyEventV2): Promise<{ event: StripeEvent; raw: string }> {
    const body = request.body ?? '';
    if (body.length === 0) throw new ServiceError('empty_body', 'request body is empty');
    const cap = config.WEBHOOK_MAX_BYTES;
    if (body.length > (request.isBase64Encoded ? Math.ceil((cap * 4) / 3) + 4 : cap * 4)) {
      throw new ServiceError('payload_too_large', `body exceeds the ${cap}-byte limit`);
    }
    const raw = Buffer.from(body, request.isBase64Encoded ? 'base64' : 'utf8');
    if (raw.length > cap) throw new ServiceError('payload_too_large', `body exceeds the ${cap}-byte limit`);
    const text = decodeUtf8(raw);
    const secrets = await webhookSigningSecrets({
      secretName: config.STRIPE_SECRET_NAME,
      localSecrets: config.STRIPE_WEBHOOK_SECRET,
    });
    const now = Math.floor((deps.now?.() ?? Date.now()) / 1000);
    verifyStripeSignature(raw, request.headers?.['stripe-signature'], secrets, now);
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new ServiceError('malformed_event', 'body is not valid JSON');
    }
    const result = stripeEventSchema.safeParse(parsed);
    if (!result.success) {
      const where = result.error.issues
        .map((i) => (i.path.length > 0 ? i.path.join('.') : `(root: ${i.message})`))
        .join(', ');
      throw new ServiceError('malformed_event', `body is not a Stripe event (invalid: ${where})`);
    }
    if (result.data.livemode !== config.STRIPE_LIVEMODE) {
      throw new ServiceError(
        'livemode_mismatch',
        `event livemode is ${result.data.livemode}; this deployment accepts livemode ${config.STRIPE_LIVEMODE}`,
      );
    }
    return { event: result.data, raw: text };
  }

  async function handleWebhook(request: APIGatewayProxyEventV2): Promise<APIGatewayProxyStructuredResultV2> {
    metrics.addMetric(METRICS.webhookReceived, MetricUnit.Count, 1);
    const requestId = request.requestContext?.requestId;
    let received: { event: StripeEvent; raw: string };
    try {
      received = await readEvent(request);
    } catch (error: unknown) {
      if (!(error instanceof ServiceError)) throw error;
      metrics.addMetric(METRICS.webhookRejected, MetricUnit.Count, 1);
      logger.warn('webhook rejected', { code: error.code, reason: error.message });
      return problem(error, { requestId });
    }
    const { event, raw } = received;
    logger.appendKeys({ eventId: event.id, eventType: event.type });
    if (!isHandledEventType(event.type)) {
      metrics.addMetric(METRICS.webhookIgnored, MetricUnit.Count, 1);
      logger.info('webhook ignored: unhandled type');
      return json(200, { received: true, enqueued: false });
    }
    try {
      await enqueueStripeEvent(deps.sqs, config.QUEUE_URL, event, raw);
    } catch (error: unknown) {
      metrics.addMetric(METRICS.webhookEnqueueFailed, MetricUnit.Count, 1);
      logger.error('webhook not enqueued; Stripe will retry', { error: error as Error });
      return problem(new ServiceError('queue_unavailable', 'the event could not be queued; retry later'), {
        requestId,
      });
    }
    metrics.addMetric(METRICS.webhookEnqueued, MetricUnit.Count, 1);
    logger.info('webhook enqueued');
    return json(200, { received: true, enqueued: true });
  }

  return wrapHandler(obs, handleWebhook);
}

/** The Lambda entry point. */
export const handler = coldStart(() =>
  createWebhookIntake({ config: loadIntakeConfig(), sqs: new SQSClient({}) }),
);
