import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as kms from 'aws-cdk-lib/aws-kms';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sns from 'aws-cdk-lib/aws-sns';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';
import { METRIC_SERVICE, METRICS, METRICS_NAMESPACE, type MetricName } from '../shared/metrics.js';

export interface MonitoringProps {
  readonly worker: lambda.IFunction;
  readonly queue: sqs.IQueue;
  readonly deadLetterQueue: sqs.IQueue;
  /** The nightly schedule's dead-letter queue. */
  readonly scheduleDlq: sqs.IQueue;
  readonly sweeper: lambda.IFunction;
  /** The sweep schedule's dead-letter queue. */
  readonly sweepScheduleDlq: sqs.IQueue;
  /** The webhook dispatcher's dead-letter queue: deliveries that ran out of retries. */
  readonly webhookDeadLetterQueue: sqs.IQueue;
  /** Where alarms are emailed. @default none (subscribe to the topic yourself) */
  readonly alarmEmail?: string;
}

/** A function's metric from the catalog, summed over five minutes, with the `service` dimension Powertools adds. */
function metric(name: MetricName): cloudwatch.Metric {
  return new cloudwatch.Metric({
    namespace: METRICS_NAMESPACE,
    metricName: name,
    statistic: 'Sum',
    period: Duration.minutes(5),
    dimensionsMap: { service: METRIC_SERVICE[name] },
  });
}

/**
 * Alarms (to an encrypted SNS topic, optionally emailed) and the operations dashboard. Metric names come from
 * the shared catalog (shared/metrics.ts) the functions emit from. Returns the alarm topic.
 *
 * Defined in `scope` itself, keeping the logical ids of the single-file stack (see defineHttpApi): a new id
 * would replace the topic, and its email subscription would have to be confirmed again.
 */
export function defineMonitoring(scope: Construct, props: MonitoringProps): sns.Topic {
  const alarmTopic = new sns.Topic(scope, 'Alarms', {
    displayName: 'Credits service alarms',
    masterKey: new kms.Key(scope, 'AlarmsKey', {
      enableKeyRotation: true,
      description: 'Credits alarm topic',
    }),
    enforceSSL: true,
  });
  if (props.alarmEmail) {
    new sns.Subscription(scope, 'AlarmEmail', {
      topic: alarmTopic,
      protocol: sns.SubscriptionProtocol.EMAIL,
      endpoint: props.alarmEmail,
    });
  }
  const alarms: Array<[string, cloudwatch.IMetric, string]> = [
    [
      'DlqNotEmpty',
      props.deadLetterQueue.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(1) }),
      'events failed 5 times: inspect and redrive the DLQ',
    ],
    [
      'WorkerErrors',
      props.worker.metricErrors({ period: Duration.minutes(5) }),
      'the crediting worker failed invocations',
    ],
    ['IntakeServerErrors', metric(METRICS.webhookEnqueueFailed), 'webhooks answered 5xx: Stripe is retrying'],
    [
      'ReconciliationFindings',
      metric(METRICS.reconciliationFindings),
      'reconciliation found what it cannot heal',
    ],
    ['ReconciliationFailed', metric(METRICS.reconciliationFailed), 'reconciliation run did not succeed'],
    ['ParkedEvents', metric(METRICS.eventParked), 'events were parked: see GET /v1/admin/parked-events'],
    [
      'ScheduleDlqNotEmpty',
      props.scheduleDlq.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(5) }),
      'the nightly schedule could not invoke reconciliation',
    ],
    [
      'SweeperErrors',
      props.sweeper.metricErrors({ period: Duration.minutes(5) }),
      'the sweeper failed: expired grants are not written off (balances stay exact)',
    ],
    [
      'SweepScheduleDlqNotEmpty',
      props.sweepScheduleDlq.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(5) }),
      'the schedule could not invoke the sweeper',
    ],
    [
      'WebhookDlqNotEmpty',
      props.webhookDeadLetterQueue.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(5) }),
      'outbound webhooks ran out of retries: see GET /v1/admin/webhook-deliveries?status=dead, then redeliver',
    ],
  ];
  for (const [name, alarmMetric, description] of alarms) {
    new cloudwatch.Alarm(scope, name, {
      alarmDescription: description,
      metric: alarmMetric,
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    }).addAlarmAction(new actions.SnsAction(alarmTopic));
  }
  const graph = (title: string, names: MetricName[]) =>
    new cloudwatch.GraphWidget({ title, left: names.map((name) => metric(name)) });
  new cloudwatch.Dashboard(scope, 'Dashboard', {
    widgets: [
      [
        graph('Webhooks', [
          METRICS.webhookReceived,
          METRICS.webhookEnqueued,
          METRICS.webhookRejected,
          METRICS.webhookEnqueueFailed,
        ]),
        graph('Events', [
          METRICS.eventApplied,
          METRICS.eventDuplicate,
          METRICS.eventParked,
          METRICS.eventRetried,
        ]),
        graph('Credits', [METRICS.creditsGranted, METRICS.creditsClawedBack]),
        graph('Grants', [METRICS.grantsExpired]),
      ],
      [
        graph('Outbound webhooks', [
          METRICS.webhookDelivered,
          METRICS.webhookAttemptFailed,
          METRICS.webhookDead,
          METRICS.webhookOutboxSent,
        ]),
        new cloudwatch.GraphWidget({
          title: 'Outbound webhook queue',
          left: [props.webhookDeadLetterQueue.metricApproximateNumberOfMessagesVisible()],
        }),
      ],
      [
        new cloudwatch.GraphWidget({
          title: 'Queue',
          left: [
            props.queue.metricApproximateNumberOfMessagesVisible(),
            props.deadLetterQueue.metricApproximateNumberOfMessagesVisible(),
          ],
        }),
        graph('API', [METRICS.apiSuccess, METRICS.apiClientError, METRICS.apiServerError]),
        graph('Reconciliation', [
          METRICS.reconciliationHealed,
          METRICS.reconciliationFindings,
          METRICS.reconciliationFailed,
        ]),
      ],
    ],
  });
  return alarmTopic;
}
