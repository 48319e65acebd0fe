import { Logger } from '@aws-lambda-powertools/logger';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { Metrics } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import { Tracer } from '@aws-lambda-powertools/tracer';
import { captureLambdaHandler } from '@aws-lambda-powertools/tracer/middleware';
import middy from '@middy/core';
import type { Context } from 'aws-lambda';

export interface Observability {
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly tracer: Tracer;
}

/** One logger, metrics and tracer per function, named by `POWERTOOLS_SERVICE_NAME` or `service`. */
export function createObservability(service: string): Observability {
  const serviceName = process.env.POWERTOOLS_SERVICE_NAME ?? service;
  return {
    logger: new Logger({ serviceName }),
    metrics: new Metrics({ namespace: process.env.POWERTOOLS_METRICS_NAMESPACE ?? 'Credits', serviceName }),
    tracer: new Tracer({ serviceName }),
  };
}

/**
 * The one way a function's handler is built: `handle` wrapped in middy with the Powertools chain (tracer,
 * logger with the Lambda context and keys reset per invocation, metrics flushed per invocation).
 */
export function wrapHandler<E, R>(obs: Observability, handle: (event: E, context: Context) => Promise<R>) {
  return middy(handle)
    .use(captureLambdaHandler(obs.tracer))
    .use(injectLambdaContext(obs.logger, { resetKeys: true }))
    .use(logMetrics(obs.metrics));
}

/**
 * A Lambda entry point whose dependencies (configuration, pool, clients) are built by `create` once per cold
 * start, on the first invocation, and reused by every later one.
 */
export function coldStart<E, R>(create: () => (event: E, context: Context) => Promise<R>) {
  let handler: ((event: E, context: Context) => Promise<R>) | undefined;
  return (event: E, context: Context): Promise<R> => {
    handler ??= create();
    return handler(event, context);
  };
}
