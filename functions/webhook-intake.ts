import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import { captureLambdaHandler } from '@aws-lambda-powertools/tracer/middleware';
import { SQSClient } from '@aws-sdk/client-sqs';
import middy from '@middy/core';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { type IntakeConfig, loadIntakeConfig } from '../shared/config.js';
import { ServiceError } from '../shared/errors.js';
import { json, problem } from '../shared/http/responses.js';
import { createObservability } from '../shared/observability.js';
import { enqueueStripeEvent } from '../shared/queue.js';
import { isHandledEventType, type StripeEvent, stripeEventSchema } from '../shared/stripe/events.js';
import { webhookSigningSecrets } from '../shared/stripe/secrets.js';
import { verifyStripeSignature } from '../shared/stripe/signature.js';

class BadWebhookError extends ServiceError {
  constructor(code: string, message: string) {
    super(code, 400, message);
  }
}

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
  const { logger, metrics, tracer } = createObservability('webhook-intake');
  const { config } = deps;

  async function readEvent(request: APIGatewayProxyEventV2): Promise<{ event: StripeEvent; raw: string }> {
    const body = request.body ?? '';
    if (body.length === 0) throw new BadWebhookError('empty_body', 'request body is empty');
    const cap = config.WEBHOOK_MAX_BYTES;
    if (body.length > (request.isBase64Encoded ? Math.ceil((cap * 4) / 3) + 4 : cap * 4)) {
      throw new BadWebhookError('payload_too_large', `body exceeds the ${cap}-byte limit`);
    }
    const raw = Buffer.from(body, request.isBase64Encoded ? 'base64' : 'utf8');
    if (raw.length > cap)
      throw new BadWebhookError('payload_too_large', `body exceeds the ${cap}-byte limit`);
    const secrets = await webhookSigningSecrets({
      secretName: config.STRIPE_SECRET_NAME,
      localSecrets: config.STRIPE_WEBHOOK_SECRET,
    });
    const now = Math.floor((deps.now?.() ?? Date.now()) / 1000);
    verifyStripeSignature(raw, request.headers?.['stripe-signature'], secrets, now);
    const text = raw.toString('utf8');
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new BadWebhookError('malformed_event', 'body is not valid JSON');
    }
    const result = stripeEventSchema.safeParse(parsed);
    if (!result.success) {
      const where = result.error.issues.map((i) => i.path.join('.') || '(root)').join(', ');
      throw new BadWebhookError('malformed_event', `body is not a Stripe event (invalid: ${where})`);
    }
    if (result.data.livemode !== config.STRIPE_LIVEMODE) {
      throw new BadWebhookError(
        'livemode_mismatch',
        `event livemode is ${result.data.livemode}; this deployment accepts livemode ${config.STRIPE_LIVEMODE}`,
      );
    }
    return { event: result.data, raw: text };
  }

  async function handleWebhook(request: APIGatewayProxyEventV2): Promise<APIGatewayProxyStructuredResultV2> {
    metrics.addMetric('WebhookReceived', MetricUnit.Count, 1);
    let received: { event: StripeEvent; raw: string };
    try {
      received = await readEvent(request);
    } catch (error: unknown) {
      if (!(error instanceof ServiceError)) throw error;
      metrics.addMetric('WebhookRejected', MetricUnit.Count, 1);
      logger.warn('webhook rejected', { code: error.code, reason: error.message });
      return problem(error);
    }
    const { event, raw } = received;
    logger.appendKeys({ eventId: event.id, eventType: event.type });
    if (!isHandledEventType(event.type)) {
      metrics.addMetric('WebhookIgnored', MetricUnit.Count, 1);
      logger.info('webhook ignored: unhandled type');
      return json(200, { received: true, enqueued: false });
    }
    try {
      await enqueueStripeEvent(deps.sqs, config.QUEUE_URL, event, raw);
    } catch (error: unknown) {
      metrics.addMetric('WebhookEnqueueFailed', MetricUnit.Count, 1);
      logger.error('webhook not enqueued; Stripe will retry', { error: error as Error });
      return problem(
        new ServiceError('queue_unavailable', 503, 'the event could not be queued; retry later'),
      );
    }
    metrics.addMetric('WebhookEnqueued', MetricUnit.Count, 1);
    logger.info('webhook enqueued');
    return json(200, { received: true, enqueued: true });
  }

  return middy(handleWebhook)
    .use(captureLambdaHandler(tracer))
    .use(injectLambdaContext(logger, { resetKeys: true }))
    .use(logMetrics(metrics));
}

let cached: ReturnType<typeof createWebhookIntake> | undefined;

/** The Lambda entry point: configuration parsed and clients built once per cold start. */
export const handler = (event: APIGatewayProxyEventV2, context: import('aws-lambda').Context) => {
  cached ??= createWebhookIntake({ config: loadIntakeConfig(), sqs: new SQSClient({}) });
  return cached(event, context);
};
