import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import type { ApiDependencies } from '../shared/api/endpoint.js';
import { createApiRouter } from '../shared/api/router.js';
import { loadApiConfig } from '../shared/config.js';
import { createDb } from '../shared/db/client.js';
import { METRICS } from '../shared/metrics.js';
import { coldStart, createObservability, wrapHandler } from '../shared/observability.js';
import { lazyStripe } from '../shared/stripe/api-client.js';
import { awsWebhookRuntime } from '../shared/webhooks/runtime.js';

/** The HTTP API function: every route of shared/http/routes.ts whose `fn` is `api`. */
export function createApiHandler(deps: ApiDependencies) {
  const obs = createObservability('api');
  const { logger, metrics } = obs;
  const route = createApiRouter(
    { reportError: (what, error) => logger.warn(what, { error: error as Error }), ...deps },
    {
      onUnexpectedError: (error, routeKey) =>
        logger.error('request failed', { routeKey, error: error as Error }),
    },
  );

  async function handleRequest(event: APIGatewayProxyEventV2): Promise<APIGatewayProxyStructuredResultV2> {
    const response = await route(event);
    const status = response.statusCode ?? 200;
    metrics.addMetric(
      status >= 500 ? METRICS.apiServerError : status >= 400 ? METRICS.apiClientError : METRICS.apiSuccess,
      MetricUnit.Count,
      1,
    );
    logger.info('request', { routeKey: event.routeKey, requestId: event.requestContext?.requestId, status });
    return response;
  }

  return wrapHandler(obs, handleRequest);
}

/** The Lambda entry point. */
export const handler = coldStart(() => {
  const config = loadApiConfig();
  const lambda = new LambdaClient({});
  const reconcileFunction = process.env.RECONCILE_FUNCTION_NAME;
  return createApiHandler({
    db: createDb(config.database, { max: config.poolMax, applicationName: 'api' }),
    config,
    stripe: lazyStripe({
      secretName: config.stripeSecretName,
      secretKey: config.stripeSecretKey,
      apiBase: config.stripeApiBase,
    }),
    ...(config.webhooks && { webhooks: awsWebhookRuntime(config.webhooks) }),
    dispatchReconciliation: async (runId) => {
      if (!reconcileFunction) throw new Error('RECONCILE_FUNCTION_NAME is not set');
      await lambda.send(
        new InvokeCommand({
          FunctionName: reconcileFunction,
          InvocationType: 'Event',
          Payload: Buffer.from(JSON.stringify({ runId })),
        }),
      );
    },
  });
});
