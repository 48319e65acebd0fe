import { CfnOutput, Duration, Stack, type StackProps, Validations } from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpIamAuthorizer, HttpJwtAuthorizer } from 'aws-cdk-lib/aws-apigatewayv2-authorizers';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as targets from 'aws-cdk-lib/aws-scheduler-targets';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as triggers from 'aws-cdk-lib/triggers';
import type { Construct } from 'constructs';
import { ROUTES, type RouteKey } from '../shared/http/routes.js';
import { CreditsFunction } from './credits-function.js';
import { DATABASE, type StatefulStack, WORKER_TIMEOUT } from './stateful-stack.js';

export interface StatelessStackProps extends StackProps {
  readonly stateful: StatefulStack;
  /** JWT issuer of the app's user tokens (Cognito user pool URL or any OIDC issuer). */
  readonly jwtIssuer: string;
  /** Accepted `aud` values of user tokens. */
  readonly jwtAudience: string[];
  /** Browser origins allowed on the user routes. */
  readonly corsOrigins: string[];
  readonly checkoutSuccessUrl: string;
  readonly checkoutCancelUrl: string;
  /** Where alarms are emailed. @default none (subscribe to the topic yourself) */
  readonly alarmEmail?: string;
  /** JSON array of credit packs (CREDIT_PACKAGES). @default the built-in packs */
  readonly creditPackages?: string;
  /** Accept livemode events (production with an sk_live key). @default false */
  readonly stripeLivemode?: boolean;
  /** Concurrent worker invocations at most, to protect the database. @default 5 */
  readonly workerConcurrency?: number;
}

/** Why each unauthenticated route is public (acknowledged against AwsSolutions-APIG4). */
const PUBLIC_ROUTE_REASONS: Partial<Record<RouteKey, string>> = {
  'GET /health': 'Liveness probe; answers only whether the database is reachable',
  'GET /v1/packages': 'The public price list shown before sign-in',
  'GET /openapi.json': 'The public API description',
  'POST /webhooks/stripe':
    'Stripe cannot present AWS credentials; every request is authenticated by its Stripe-Signature over the raw body',
  'OPTIONS /v1/{proxy+}':
    'CORS preflight requests carry no credentials by definition; the function answers only configured origins',
};

/** The code: functions, the HTTP API, the nightly schedule, the migration trigger, alarms and a dashboard. */
export class StatelessStack extends Stack {
  readonly api: apigw.HttpApi;
  readonly functions: Record<'intake' | 'worker' | 'api' | 'reconcile' | 'migrate', CreditsFunction>;
  readonly alarmTopic: sns.Topic;

  constructor(scope: Construct, id: string, props: StatelessStackProps) {
    super(scope, id, props);
    const { stateful } = props;
    const inVpc = { vpc: stateful.vpc, securityGroups: [stateful.databaseAccess] };
    const appEnvironment = {
      CHECKOUT_SUCCESS_URL: props.checkoutSuccessUrl,
      CHECKOUT_CANCEL_URL: props.checkoutCancelUrl,
      CORS_ALLOWED_ORIGINS: props.corsOrigins.join(','),
      ...(props.creditPackages && { CREDIT_PACKAGES: props.creditPackages }),
    };

    const intake = new CreditsFunction(this, 'WebhookIntake', {
      entry: 'webhook-intake',
      memorySize: 256,
      timeout: Duration.seconds(10),
      environment: { STRIPE_LIVEMODE: String(props.stripeLivemode ?? false) },
    })
      .bindQueueSender(stateful.queue)
      .bindStripeSecret(stateful.stripeSecret);

    const worker = new CreditsFunction(this, 'CreditWorker', {
      entry: 'credit-worker',
      timeout: WORKER_TIMEOUT,
      ...inVpc,
      environment: { ...(props.creditPackages && { CREDIT_PACKAGES: props.creditPackages }) },
    }).bindDatabase(stateful.proxy, DATABASE);
    worker.addEventSource(
      new SqsEventSource(stateful.queue, {
        batchSize: 10,
        maxBatchingWindow: Duration.seconds(1),
        reportBatchItemFailures: true,
        maxConcurrency: props.workerConcurrency ?? 5,
      }),
    );

    const reconcile = new CreditsFunction(this, 'Reconcile', {
      entry: 'reconcile',
      timeout: Duration.minutes(15),
      ...inVpc,
      environment: appEnvironment,
    })
      .bindDatabase(stateful.proxy, DATABASE)
      .bindStripeSecret(stateful.stripeSecret);

    const apiFunction = new CreditsFunction(this, 'Api', {
      entry: 'api',
      ...inVpc,
      environment: { ...appEnvironment, RECONCILE_FUNCTION_NAME: reconcile.functionName },
    })
      .bindDatabase(stateful.proxy, DATABASE)
      .bindStripeSecret(stateful.stripeSecret);
    reconcile.grantInvoke(apiFunction);
    Validations.of(apiFunction.role!).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::<ReconcileD51D4F4F.Arn>:*]',
      reason:
        'Invoking the reconcile function (any of its versions) is the only Lambda permission the API has',
    });

    const migrate = new CreditsFunction(this, 'Migrate', {
      entry: 'migrate',
      timeout: Duration.minutes(5),
      ...inVpc,
    }).bindDatabase(stateful.proxy, DATABASE);
    // Migrations run on every deploy that changes them, before the functions that need them are updated.
    new triggers.Trigger(this, 'MigrateOnDeploy', {
      handler: migrate,
      timeout: Duration.minutes(5),
      executeOnHandlerChange: true,
      executeBefore: [worker, apiFunction, reconcile],
    });

    this.functions = { intake, worker, api: apiFunction, reconcile, migrate };

    // ---- HTTP API: one route table with the local stack -------------------------------------------------
    const accessLogs = new logs.LogGroup(this, 'ApiAccessLogs', {
      retention: logs.RetentionDays.THREE_MONTHS,
    });
    this.api = new apigw.HttpApi(this, 'HttpApi', {
      createDefaultStage: false,
      description: 'Credits service',
    });
    const stage = this.api.addStage('default', {
      stageName: '$default',
      autoDeploy: true,
      throttle: { rateLimit: 200, burstLimit: 400 },
    });
    (stage.node.defaultChild as apigw.CfnStage).accessLogSettings = {
      destinationArn: accessLogs.logGroupArn,
      format: JSON.stringify({
        requestId: '$context.requestId',
        routeKey: '$context.routeKey',
        status: '$context.status',
        latencyMs: '$context.responseLatency',
        integrationError: '$context.integrationErrorMessage',
        caller: '$context.identity.userArn',
        ip: '$context.identity.sourceIp',
      }),
    };
    const jwt = new HttpJwtAuthorizer('UserJwt', props.jwtIssuer, { jwtAudience: props.jwtAudience });
    const iamAuthorizer = new HttpIamAuthorizer();
    const integrations = {
      api: new HttpLambdaIntegration('ApiIntegration', apiFunction),
      'webhook-intake': new HttpLambdaIntegration('IntakeIntegration', intake),
    };
    for (const [key, route] of Object.entries(ROUTES) as Array<[RouteKey, (typeof ROUTES)[RouteKey]]>) {
      const [method, path] = key.split(' ') as [string, string];
      const httpRoute = new apigw.HttpRoute(this, `Route ${key}`, {
        httpApi: this.api,
        routeKey: apigw.HttpRouteKey.with(path, method as apigw.HttpMethod),
        integration: integrations[route.fn],
        authorizer:
          route.auth === 'user'
            ? jwt
            : route.auth === 'service' || route.auth === 'admin'
              ? iamAuthorizer
              : undefined,
      });
      if (route.auth === 'none') {
        Validations.of(httpRoute).acknowledge({
          id: 'AwsSolutions-APIG4',
          reason: PUBLIC_ROUTE_REASONS[key] ?? 'public route',
        });
      }
    }

    // ---- Nightly reconciliation -----------------------------------------------------------------------
    const scheduleDlq = new sqs.Queue(this, 'ScheduleDlq', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
    });
    Validations.of(scheduleDlq).acknowledge({
      id: 'AwsSolutions-SQS3',
      reason: "This queue is itself a dead-letter queue: the nightly schedule's target DLQ",
    });
    const scheduleRole = new iam.Role(this, 'ScheduleRole', {
      assumedBy: new iam.ServicePrincipal('scheduler.amazonaws.com'),
      description: 'Invokes the reconcile function on schedule',
    });
    Validations.of(scheduleRole).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::<ReconcileD51D4F4F.Arn>:*]',
      reason: 'The schedule may invoke the reconcile function (any of its versions) and nothing else',
    });
    new scheduler.Schedule(this, 'NightlyReconciliation', {
      description: 'Reconcile Stripe with the ledger over the last 48 hours',
      schedule: scheduler.ScheduleExpression.cron({ hour: '3', minute: '15' }),
      target: new targets.LambdaInvoke(reconcile, {
        role: scheduleRole,
        input: scheduler.ScheduleTargetInput.fromObject({}),
        retryAttempts: 3,
        maxEventAge: Duration.hours(2),
        deadLetterQueue: scheduleDlq,
      }),
    });

    // ---- Alarms and dashboard -------------------------------------------------------------------------
    this.alarmTopic = new sns.Topic(this, 'Alarms', {
      displayName: 'Credits service alarms',
      masterKey: new kms.Key(this, 'AlarmsKey', {
        enableKeyRotation: true,
        description: 'Credits alarm topic',
      }),
      enforceSSL: true,
    });
    if (props.alarmEmail) {
      new sns.Subscription(this, 'AlarmEmail', {
        topic: this.alarmTopic,
        protocol: sns.SubscriptionProtocol.EMAIL,
        endpoint: props.alarmEmail,
      });
    }
    // Powertools publishes every metric with a `service` dimension: the function's POWERTOOLS_SERVICE_NAME.
    const serviceOf = (name: string) =>
      name.startsWith('Webhook')
        ? 'webhook-intake'
        : name.startsWith('Api')
          ? 'api'
          : name.startsWith('Reconciliation')
            ? 'reconcile'
            : 'credit-worker';
    const metric = (name: string) =>
      new cloudwatch.Metric({
        namespace: 'Credits',
        metricName: name,
        statistic: 'Sum',
        period: Duration.minutes(5),
        dimensionsMap: { service: serviceOf(name) },
      });
    const alarms: Array<[string, cloudwatch.IMetric, string]> = [
      [
        'DlqNotEmpty',
        stateful.deadLetterQueue.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(1) }),
        'events failed 5 times: inspect and redrive the DLQ',
      ],
      [
        'WorkerErrors',
        worker.metricErrors({ period: Duration.minutes(5) }),
        'the crediting worker failed invocations',
      ],
      ['IntakeServerErrors', metric('WebhookEnqueueFailed'), 'webhooks answered 5xx: Stripe is retrying'],
      [
        'ReconciliationFindings',
        metric('ReconciliationFindings'),
        'reconciliation found what it cannot heal',
      ],
      ['ReconciliationFailed', metric('ReconciliationFailed'), 'reconciliation run did not succeed'],
      ['ParkedEvents', metric('EventParked'), 'events were parked: see GET /v1/admin/parked-events'],
      [
        'ScheduleDlqNotEmpty',
        scheduleDlq.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(5) }),
        'the nightly schedule could not invoke reconciliation',
      ],
    ];
    for (const [name, alarmMetric, description] of alarms) {
      new cloudwatch.Alarm(this, name, {
        alarmDescription: description,
        metric: alarmMetric,
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }).addAlarmAction(new actions.SnsAction(this.alarmTopic));
    }
    new cloudwatch.Dashboard(this, 'Dashboard', {
      widgets: [
        [
          new cloudwatch.GraphWidget({
            title: 'Webhooks',
            left: ['WebhookReceived', 'WebhookEnqueued', 'WebhookRejected', 'WebhookEnqueueFailed'].map((m) =>
              metric(m),
            ),
          }),
          new cloudwatch.GraphWidget({
            title: 'Events',
            left: ['EventApplied', 'EventDuplicate', 'EventParked', 'EventRetried'].map((m) => metric(m)),
          }),
          new cloudwatch.GraphWidget({
            title: 'Credits',
            left: [metric('CreditsGranted'), metric('CreditsClawedBack')],
          }),
        ],
        [
          new cloudwatch.GraphWidget({
            title: 'Queue',
            left: [
              stateful.queue.metricApproximateNumberOfMessagesVisible(),
              stateful.deadLetterQueue.metricApproximateNumberOfMessagesVisible(),
            ],
          }),
          new cloudwatch.GraphWidget({
            title: 'API',
            left: ['ApiSuccess', 'ApiClientError', 'ApiServerError'].map((m) => metric(m)),
          }),
          new cloudwatch.GraphWidget({
            title: 'Reconciliation',
            left: ['ReconciliationHealed', 'ReconciliationFindings', 'ReconciliationFailed'].map((m) =>
              metric(m),
            ),
          }),
        ],
      ],
    });

    new CfnOutput(this, 'ApiUrl', { value: this.api.apiEndpoint });
    new CfnOutput(this, 'StripeWebhookUrl', { value: `${this.api.apiEndpoint}/webhooks/stripe` });
    new CfnOutput(this, 'StripeSecretName', { value: stateful.stripeSecret.secretName });
  }
}
