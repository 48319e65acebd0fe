import { type CfnElement, type Duration, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as targets from 'aws-cdk-lib/aws-scheduler-targets';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';

export interface ScheduledInvocationProps {
  readonly fn: lambda.IFunction;
  /** Logical ids of the dead-letter queue, the scheduler's role and the schedule (kept stable across refactors). */
  readonly ids: { readonly dlq: string; readonly role: string; readonly schedule: string };
  readonly description: string;
  readonly expression: scheduler.ScheduleExpression;
  /** @default off: on time */
  readonly timeWindow?: scheduler.TimeWindow;
  /** How long the scheduler keeps retrying (3 attempts) before the invocation goes to the DLQ. */
  readonly maxEventAge: Duration;
}

/**
 * The one way the stack runs a function on a schedule: an EventBridge Scheduler schedule with its own role
 * (allowed to invoke that function only), three retries, and an encrypted, TLS-only dead-letter queue for
 * invocations it could not deliver. Returns that queue (monitoring alarms on it).
 */
export function scheduleInvocations(scope: Construct, props: ScheduledInvocationProps): sqs.Queue {
  const dlq = new sqs.Queue(scope, props.ids.dlq, {
    encryption: sqs.QueueEncryption.SQS_MANAGED,
    enforceSSL: true,
  });
  Validations.of(dlq).acknowledge({
    id: 'AwsSolutions-SQS3',
    reason: `This queue is itself a dead-letter queue: the ${props.ids.schedule} schedule's target DLQ`,
  });
  const stack = Stack.of(scope);
  const fnId = stack.resolve(stack.getLogicalId(props.fn.node.defaultChild as CfnElement));
  const role = new iam.Role(scope, props.ids.role, {
    assumedBy: new iam.ServicePrincipal('scheduler.amazonaws.com'),
    description: `Invokes the ${props.fn.node.id.toLowerCase()} function on schedule`,
  });
  Validations.of(role).acknowledge({
    id: `AwsSolutions-IAM5[Resource::<${fnId}.Arn>:*]`,
    reason: `The schedule may invoke the ${props.fn.node.id.toLowerCase()} function (any of its versions) and nothing else`,
  });
  new scheduler.Schedule(scope, props.ids.schedule, {
    description: props.description,
    schedule: props.expression,
    ...(props.timeWindow && { timeWindow: props.timeWindow }),
    target: new targets.LambdaInvoke(props.fn, {
      role,
      input: scheduler.ScheduleTargetInput.fromObject({}),
      retryAttempts: 3,
      maxEventAge: props.maxEventAge,
      deadLetterQueue: dlq,
    }),
  });
  return dlq;
}
