import { CfnOutput, Duration, Stack, type StackProps, Validations } from 'aws-cdk-lib';
import type * as apigw from 'aws-cdk-lib/aws-apigatewayv2';
import type * as iam from 'aws-cdk-lib/aws-iam';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as triggers from 'aws-cdk-lib/triggers';
import type { Construct } from 'constructs';
import { type CallerKind, defineHttpApi } from './api.js';
import { CreditsFunction } from './credits-function.js';
import { defineMonitoring } from './monitoring.js';
import { defineNightlyReconciliation } from './reconciliation.js';
import { DATABASE, DISPATCHER_TIMEOUT, type StatefulStack, WORKER_TIMEOUT } from './stateful-stack.js';
import { defineSweepSchedule, SWEEPER_TIMEOUT } from './sweeper.js';

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
  /** JSON array of plans (PLANS): allowances, caps, rate limits. bin/app.ts checks it. @default one plan with none */
  readonly plans?: string;
  /** Accept livemode events (production with an sk_live key). @default false */
  readonly stripeLivemode?: boolean;
  /**
   * IAM ARN patterns (`*` wildcard) of the callers the api function accepts on admin routes (ADMIN_PRINCIPALS).
   * Required and non-empty: the admin policy lets a principal reach the admin routes, this list lets the
   * function accept it.
   */
  readonly adminPrincipals: string[];
  /** Concurrent worker invocations at most, to protect the database. @default 5 */
  readonly workerConcurrency?: number;
  /** Seconds between outbound webhook attempts, comma-separated (WEBHOOK_RETRY_SECONDS). @default about 3 days */
  readonly webhookRetrySeconds?: string;
  /** Admin grants above this many credits wait for a second admin (ADMIN_APPROVAL_THRESHOLD). @default none */
  readonly adminApprovalThreshold?: number;
  /** Checkout sessions allow Stripe promotion codes (ALLOW_PROMOTION_CODES). @default false */
  readonly allowPromotionCodes?: boolean;
}

/** IAM user, role or assumed-role ARNs; `*` may stand for any part after the account, never for the account. */
const ADMIN_PRINCIPAL = /^arn:aws[a-z-]*:(iam|sts)::\d{12}:(user|role|assumed-role)\/[\w+=,.@/*-]+$/;

/** Throws at synth, naming the problem, when the admin principals are missing, empty or not ARN patterns. */
export function validateAdminPrincipals(principals: readonly string[]): void {
  if (principals.length === 0)
    throw new Error(
      'adminPrincipals is empty: name the IAM ARNs (patterns, * allowed) whose calls the api function accepts on admin routes, e.g. -c adminPrincipals=arn:aws:iam::123456789012:role/credits-admin',
    );
  const invalid = principals.filter((p) => !ADMIN_PRINCIPAL.test(p));
  if (invalid.length > 0)
    throw new Error(
      `adminPrincipals: not an IAM user, role or assumed-role ARN pattern with a literal account id: ${invalid.join(', ')}`,
    );
}

/**
 * The code: the functions and the migration trigger (here), the HTTP API (api.ts), the nightly schedule
 * (reconciliation.ts), the sweep every minute (sweeper.ts), alarms and the dashboard (monitoring.ts).
 */
export class StatelessStack extends Stack {
  readonly api: apigw.HttpApi;
  readonly functions: Record<
    'intake' | 'worker' | 'api' | 'reconcile' | 'sweeper' | 'migrate' | 'dispatcher',
    CreditsFunction
  >;
  readonly alarmTopic: sns.Topic;
  readonly callerPolicies: Record<CallerKind, iam.ManagedPolicy>;

  constructor(scope: Construct, id: string, props: StatelessStackProps) {
    super(scope, id, props);
    const { stateful } = props;
    validateAdminPrincipals(props.adminPrincipals);
    const inVpc = { vpc: stateful.vpc, securityGroups: [stateful.databaseAccess] };
    // Every database function but migrate connects as the application role; migrate alone as the owner.
    const app = { name: DATABASE.name, user: DATABASE.appUser };
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
    })
      .bindDatabase(stateful.proxy, app)
      // credits.granted and payment.* events, sent after each batch (the sweeper sends what is left).
      .bindWebhookQueue(stateful.webhookQueue);
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
      .bindDatabase(stateful.proxy, app)
      .bindStripeSecret(stateful.stripeSecret);

    const apiFunction = new CreditsFunction(this, 'Api', {
      entry: 'api',
      ...inVpc,
      environment: {
        ...appEnvironment,
        RECONCILE_FUNCTION_NAME: reconcile.functionName,
        ADMIN_PRINCIPALS: props.adminPrincipals.join(','),
        ...(props.plans && { PLANS: props.plans }),
        ...(props.adminApprovalThreshold !== undefined && {
          ADMIN_APPROVAL_THRESHOLD: String(props.adminApprovalThreshold),
        }),
        ...(props.allowPromotionCodes && { ALLOW_PROMOTION_CODES: 'true' }),
      },
    })
      .bindDatabase(stateful.proxy, app)
      .bindStripeSecret(stateful.stripeSecret)
      // Registering an endpoint encrypts its secret; redeliver sends to the queue. The API never decrypts.
      .bindWebhookQueue(stateful.webhookQueue)
      .bindWebhookKey(stateful.webhookSecretsKey, 'encrypt');
    reconcile.grantInvoke(apiFunction);
    Validations.of(apiFunction.role!).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::<ReconcileD51D4F4F.Arn>:*]',
      reason:
        'Invoking the reconcile function (any of its versions) is the only Lambda permission the API has',
    });

    const sweeper = new CreditsFunction(this, 'Sweeper', {
      entry: 'sweeper',
      timeout: SWEEPER_TIMEOUT,
      // One sweep at a time: a second would only wait on the first's account locks.
      reservedConcurrentExecutions: 1,
      ...inVpc,
      environment: {
        ...(props.plans && { PLANS: props.plans }),
        ...(props.creditPackages && { CREDIT_PACKAGES: props.creditPackages }),
      },
    })
      .bindDatabase(stateful.proxy, app)
      // The outbox's safety net, and attempts whose wait is longer than SQS's 15-minute delay.
      .bindWebhookQueue(stateful.webhookQueue)
      // Auto top-ups a crash left unstarted or uncharged, charged with their idempotency key.
      .bindStripeSecret(stateful.stripeSecret);

    // Outbound webhooks: one attempt per message; it re-sends itself with a delay, or dead-letters itself.
    const dispatcher = new CreditsFunction(this, 'WebhookDispatcher', {
      entry: 'webhook-dispatcher',
      timeout: DISPATCHER_TIMEOUT,
      ...inVpc,
      environment: { ...(props.webhookRetrySeconds && { WEBHOOK_RETRY_SECONDS: props.webhookRetrySeconds }) },
    })
      .bindDatabase(stateful.proxy, app)
      .bindWebhookQueue(stateful.webhookQueue, stateful.webhookDeadLetterQueue)
      .bindWebhookKey(stateful.webhookSecretsKey, 'decrypt');
    dispatcher.addEventSource(
      new SqsEventSource(stateful.webhookQueue, {
        batchSize: 10,
        maxBatchingWindow: Duration.seconds(1),
        reportBatchItemFailures: true,
        maxConcurrency: 5,
      }),
    );

    const migrate = new CreditsFunction(this, 'Migrate', {
      entry: 'migrate',
      timeout: Duration.minutes(5),
      ...inVpc,
    }).bindDatabase(stateful.proxy, { name: DATABASE.name, user: DATABASE.owner });
    // Migrations run on every deploy that changes them, before the functions that need them are updated.
    new triggers.Trigger(this, 'MigrateOnDeploy', {
      handler: migrate,
      timeout: Duration.minutes(5),
      executeOnHandlerChange: true,
      executeBefore: [worker, apiFunction, reconcile, sweeper, dispatcher],
    });

    this.functions = { intake, worker, api: apiFunction, reconcile, sweeper, migrate, dispatcher };

    const httpApi = defineHttpApi(this, {
      functions: { api: apiFunction, 'webhook-intake': intake },
      jwtIssuer: props.jwtIssuer,
      jwtAudience: props.jwtAudience,
    });
    this.api = httpApi.api;
    this.callerPolicies = httpApi.callerPolicies;
    const scheduleDlq = defineNightlyReconciliation(this, { reconcile });
    const sweepScheduleDlq = defineSweepSchedule(this, { sweeper });
    this.alarmTopic = defineMonitoring(this, {
      worker,
      queue: stateful.queue,
      deadLetterQueue: stateful.deadLetterQueue,
      scheduleDlq,
      sweeper,
      sweepScheduleDlq,
      webhookDeadLetterQueue: stateful.webhookDeadLetterQueue,
      alarmEmail: props.alarmEmail,
    });

    new CfnOutput(this, 'ApiUrl', { value: this.api.apiEndpoint });
    new CfnOutput(this, 'StripeWebhookUrl', { value: `${this.api.apiEndpoint}/webhooks/stripe` });
    new CfnOutput(this, 'WebhookDeadLetterQueueUrl', {
      description: 'Outbound webhook deliveries that ran out of retries (npm run admin -- dlq --dlq-url ...)',
      value: stateful.webhookDeadLetterQueue.queueUrl,
    });
    new CfnOutput(this, 'StripeSecretName', { value: stateful.stripeSecret.secretName });
    new CfnOutput(this, 'ServiceCallerPolicyArn', {
      description: 'Attach to the IAM principals of the services that spend, hold, meter and quote',
      value: this.callerPolicies.service.managedPolicyArn,
    });
    new CfnOutput(this, 'AdminCallerPolicyArn', {
      description: 'Attach to the IAM principals of admins (who must also match adminPrincipals)',
      value: this.callerPolicies.admin.managedPolicyArn,
    });
  }
}
