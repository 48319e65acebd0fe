import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics } from '@aws-lambda-powertools/metrics';
import { Tracer } from '@aws-lambda-powertools/tracer';

/** One logger, metrics and tracer per function, named by `POWERTOOLS_SERVICE_NAME` or `service`. */
export function createObservability(service: string) {
  const serviceName = process.env.POWERTOOLS_SERVICE_NAME ?? service;
  return {
    logger: new Logger({ serviceName }),
    metrics: new Metrics({ namespace: process.env.POWERTOOLS_METRICS_NAMESPACE ?? 'Credits', serviceName }),
    tracer: new Tracer({ serviceName }),
  };
}
