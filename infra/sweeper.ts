import { type CfnElement, Duration, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as targets from 'aws-cdk-lib/aws-scheduler-targets';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';

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

  const sweepScheduleDlq = new sqs.Queue(scope, 'SweepScheduleDlq', {
    encryption: sqs.QueueEncryption.SQS_MANAGED,
    enforceSSL: true,
  });
  Validations.of(sweepScheduleDlq).acknowledge({
    id: 'AwsSolutions-SQS3',
    reason: "This queue is itself a dead-letter queue: the sweep schedule's target DLQ",
  });
  const stack = Stack.of(scope);
  const sweeperId = stack.resolve(stack.getLogicalId(props.sweeper.node.defaultChild as CfnElement));
  const scheduleRole = new iam.Role(scope, 'SweepScheduleRole', {
    assumedBy: new iam.ServicePrincipal('scheduler.amazonaws.com'),
    description: 'Invokes the sweeper function on schedule',
  });
  Validations.of(scheduleRole).acknowledge({
    id: `AwsSolutions-IAM5[Resource::<${sweeperId}.Arn>:*]`,
    reason: 'The schedule may invoke the sweeper function (any of its versions) and nothing else',
  });
  new scheduler.Schedule(scope, 'SweepSchedule', {
    description: 'Expire grants (write off their remainders) every minute',
    schedule: scheduler.ScheduleExpression.rate(Duration.minutes(1)),
    timeWindow: scheduler.TimeWindow.off(),
    target: new targets.LambdaInvoke(props.sweeper, {
      role: scheduleRole,
      input: scheduler.ScheduleTargetInput.fromObject({}),
      // A sweep delivered after the next one is due is worth nothing: give up (to the DLQ) after a minute.
      retryAttempts: 3,
      maxEventAge: Duration.minutes(1),
      deadLetterQueue: sweepScheduleDlq,
    }),
  });
  return sweepScheduleDlq;
}
