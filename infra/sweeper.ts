import { Duration } from 'aws-cdk-lib';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';
import { scheduleInvocations } from './schedules.js';

/** The sweeper's timeout: well under the schedule's minute, so a sweep is over before the next one is due. */
export const SWEEPER_TIMEOUT = Duration.seconds(50);

/**
 * The sweep every minute: an EventBridge schedule (no flexible window) invoking the sweeper with retries, and
 * a dead-letter queue for invocations the scheduler could not deliver. Returns that queue (monitoring alarms
 * on it).
 *
 * The scheduler invokes Lambda asynchronously, so the function's own retries apply to failed sweeps: none,
 * and a sweep still waiting after a minute is dropped. The next minute's sweep does the same work (it is
 * idempotent, and expiry is exact at read time without it), whereas Lambda's defaults (two retries, events
 * kept six hours) would queue stale sweeps behind the reserved concurrency of one.
 *
 * Defined in `scope` itself, as the other parts of the stateless stack are (see defineHttpApi).
 */
export function defineSweepSchedule(
  scope: Construct,
  props: { readonly sweeper: lambda.IFunction },
): sqs.Queue {
  props.sweeper.configureAsyncInvoke({ retryAttempts: 0, maxEventAge: Duration.minutes(1) });

  return scheduleInvocations(scope, {
    fn: props.sweeper,
    ids: { dlq: 'SweepScheduleDlq', role: 'SweepScheduleRole', schedule: 'SweepSchedule' },
    description: 'Expire grants (write off their remainders) every minute',
    expression: scheduler.ScheduleExpression.rate(Duration.minutes(1)),
    timeWindow: scheduler.TimeWindow.off(),
    // A sweep delivered after the next one is due is worth nothing: give up (to the DLQ) after a minute.
    maxEventAge: Duration.minutes(1),
  });
}
