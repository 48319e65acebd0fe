import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import { captureLambdaHandler } from '@aws-lambda-powertools/tracer/middleware';
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import middy from '@middy/core';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';
import type { ApiDependencies } from '../shared/api/endpoint.js';
import { createApiRouter } from '../shared/api/router.js';
import { loadApiConfig } from '../shared/config.js';
import { createDb } from '../shared/db/client.js';
import { createObservability } from '../shared/observability.js';
import { lazyStripe } from '../shared/stripe/api-client.js';

/** The HTTP API function: every route of shared/http/routes.ts whose `fn` is `api`. */
export function createApiHandler(deps: ApiDependencies) {
  const { logger, metrics, tracer } = createObservability('api');
  const route = createApiRouter(deps, {
    onUnexpectedError: (error, routeKey) =>
      logger.error('request failed', { routeKey, error: error as Error }),
  });

  async function handleRequest(event: APIGatewayProxyEventV2): Promise<APIGatewayProxyStructuredResultV2> {
    const response = await route(event);
    const status = response.statusCode ?? 200;
    metrics.addMetric(
      status >= 500 ? 'ApiServerError' : status >= 400 ? 'ApiClientError' : 'ApiSuccess',
      MetricUnit.Count,
      1,
    );
    logger.info('request', { routeKey: event.routeKey, status });
    return response;
  }

  return middy(handleRequest)
    .use(captureLambdaHandler(tracer))
    .use(injectLambdaContext(logger, { resetKeys: true }))
    .use(logMetrics(metrics));
}

let cached: ReturnType<typeof createApiHandler> | undefined;

/** The Lambda entry point: configuration, pool and clients built once per cold start. */
export const handler = (event: APIGatewayProxyEventV2, context: Context) => {
  if (!cached) {
    const config = loadApiConfig();
    const lambda = new LambdaClient({});
    const reconcileFunction = process.env.RECONCILE_FUNCTION_NAME;
    cached = createApiHandler({
      db: createDb(config.database, { max: config.poolMax, applicationName: 'api' }),
      config,
      stripe: lazyStripe({
        secretName: config.stripeSecretName,
        secretKey: config.stripeSecretKey,
        apiBase: config.stripeApiBase,
      }),
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
  }
  return cached(event, context);
};
