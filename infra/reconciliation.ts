import { Duration } from 'aws-cdk-lib';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';
import { scheduleInvocations } from './schedules.js';

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
  return scheduleInvocations(scope, {
    fn: props.reconcile,
    ids: { dlq: 'ScheduleDlq', role: 'ScheduleRole', schedule: 'NightlyReconciliation' },
    description: 'Reconcile Stripe with the ledger over the last 48 hours',
    expression: scheduler.ScheduleExpression.cron({ hour: '3', minute: '15' }),
    maxEventAge: Duration.hours(2),
  });
}
