import { Duration, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as targets from 'aws-cdk-lib/aws-scheduler-targets';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';

/**
 * Nightly reconciliation: an EventBridge schedule invoking the reconcile function with retries, and a
 * dead-letter queue for invocations that still fail. Returns that queue (monitoring alarms on it).
 *
 * Defined in `scope` itself, keeping the logical ids of the single-file stack (see defineHttpApi).
 */
export function defineNightlyReconciliation(
  scope: Construct,
  props: { readonly reconcile: lambda.IFunction },
): sqs.Queue {
  const scheduleDlq = new sqs.Queue(scope, 'ScheduleDlq', {
    encryption: sqs.QueueEncryption.SQS_MANAGED,
    enforceSSL: true,
  });
  Validations.of(scheduleDlq).acknowledge({
    id: 'AwsSolutions-SQS3',
    reason: "This queue is itself a dead-letter queue: the nightly schedule's target DLQ",
  });
  const scheduleRole = new iam.Role(scope, 'ScheduleRole', {
    assumedBy: new iam.ServicePrincipal('scheduler.amazonaws.com'),
    description: 'Invokes the reconcile function on schedule',
  });
  Validations.of(scheduleRole).acknowledge({
    id: 'AwsSolutions-IAM5[Resource::<ReconcileD51D4F4F.Arn>:*]',
    reason: 'The schedule may invoke the reconcile function (any of its versions) and nothing else',
  });
  new scheduler.Schedule(scope, 'NightlyReconciliation', {
    description: 'Reconcile Stripe with the ledger over the last 48 hours',
    schedule: scheduler.ScheduleExpression.cron({ hour: '3', minute: '15' }),
    target: new targets.LambdaInvoke(props.reconcile, {
      role: scheduleRole,
      input: scheduler.ScheduleTargetInput.fromObject({}),
      retryAttempts: 3,
      maxEventAge: Duration.hours(2),
      deadLetterQueue: scheduleDlq,
    }),
  });
  return scheduleDlq;
}
