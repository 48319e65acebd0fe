import path from 'node:path';
import { Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import type * as ec2 from 'aws-cdk-lib/aws-ec2';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as rds from 'aws-cdk-lib/aws-rds';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';

export interface CreditsFunctionProps {
  /** The file in functions/ (without extension) whose `handler` export this function runs. */
  readonly entry: string;
  /** @default Duration.seconds(30) */
  readonly timeout?: Duration;
  /** @default 512 */
  readonly memorySize?: number;
  /** Functions that reach the database run in the VPC; the rest stay out of it. @default none */
  readonly vpc?: ec2.IVpc;
  readonly securityGroups?: ec2.ISecurityGroup[];
  /** @default logs.RetentionDays.ONE_MONTH */
  readonly logRetention?: logs.RetentionDays;
  readonly environment?: Record<string, string>;
  /** @default none */
  readonly reservedConcurrentExecutions?: number;
}

/**
 * The house Lambda: local esbuild bundling (no Docker), ARM64, the latest Node runtime, active tracing, a
 * log group with retention, Powertools settings, and bind helpers that grant access and set the matching
 * variable together, so a function never has a permission without its configuration or the reverse.
 */
export class CreditsFunction extends NodejsFunction {
  constructor(scope: Construct, id: string, props: CreditsFunctionProps) {
    const logGroup = new logs.LogGroup(scope, `${id}Logs`, {
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    super(scope, id, {
      entry: path.join(import.meta.dirname, '..', 'functions', `${props.entry}.ts`),
      handler: 'handler',
      runtime: lambda.Runtime.NODEJS_24_X,
      architecture: lambda.Architecture.ARM_64,
      memorySize: props.memorySize ?? 512,
      timeout: props.timeout ?? Duration.seconds(30),
      tracing: lambda.Tracing.ACTIVE,
      logGroup,
      vpc: props.vpc,
      securityGroups: props.securityGroups,
      reservedConcurrentExecutions: props.reservedConcurrentExecutions,
      environment: {
        NODE_OPTIONS: '--enable-source-maps',
        POWERTOOLS_SERVICE_NAME: props.entry,
        POWERTOOLS_METRICS_NAMESPACE: 'Credits',
        POWERTOOLS_LOG_LEVEL: 'INFO',
        ...props.environment,
      },
      bundling: {
        format: OutputFormat.ESM,
        target: 'node24',
        minify: true,
        sourceMap: true,
        metafile: true,
        // The runtime provides the AWS SDK v3.
        externalModules: ['@aws-sdk/*'],
        banner: "import { createRequire } from 'module'; const require = createRequire(import.meta.url);",
        forceDockerBundling: false,
      },
    });
    const role = Validations.of(this.role!);
    role.acknowledge({
      id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]',
      reason: 'The AWS-managed minimum for a Lambda: write its own CloudWatch log streams',
    });
    if (props.vpc) {
      role.acknowledge({
        id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole]',
        reason: 'The AWS-managed minimum for a Lambda in a VPC: create and delete its network interfaces',
      });
    }
    role.acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason:
        'Active tracing: xray:PutTraceSegments and xray:PutTelemetryRecords support no resource-level scoping',
    });
  }

  /** May send to `queue` (and only that): sets QUEUE_URL. */
  bindQueueSender(queue: sqs.IQueue): this {
    queue.grantSendMessages(this);
    this.addEnvironment('QUEUE_URL', queue.queueUrl);
    return this;
  }

  /**
   * May send to the webhook dispatcher's queue (and its DLQ, when given): sets WEBHOOK_QUEUE_URL (and
   * WEBHOOK_DLQ_URL).
   */
  bindWebhookQueue(queue: sqs.IQueue, deadLetterQueue?: sqs.IQueue): this {
    queue.grantSendMessages(this);
    this.addEnvironment('WEBHOOK_QUEUE_URL', queue.queueUrl);
    if (deadLetterQueue) {
      deadLetterQueue.grantSendMessages(this);
      this.addEnvironment('WEBHOOK_DLQ_URL', deadLetterQueue.queueUrl);
    }
    return this;
  }

  /** May use the webhook secrets key for `use` only (kms:Encrypt or kms:Decrypt): sets WEBHOOK_KMS_KEY_ID. */
  bindWebhookKey(key: kms.IKey, use: 'encrypt' | 'decrypt'): this {
    key.grant(this, use === 'encrypt' ? 'kms:Encrypt' : 'kms:Decrypt');
    this.addEnvironment('WEBHOOK_KMS_KEY_ID', key.keyArn);
    return this;
  }

  /** May read the Stripe secret: sets STRIPE_SECRET_NAME. */
  bindStripeSecret(secret: secretsmanager.ISecret): this {
    secret.grantRead(this);
    this.addEnvironment('STRIPE_SECRET_NAME', secret.secretName);
    return this;
  }

  /** May connect to the database through the proxy with IAM auth as `user`: sets DB_HOST, DB_NAME, DB_USER. */
  bindDatabase(proxy: rds.IDatabaseProxy, database: { name: string; user: string }): this {
    proxy.grantConnect(this, database.user);
    this.addEnvironment('DB_HOST', proxy.endpoint);
    this.addEnvironment('DB_NAME', database.name);
    this.addEnvironment('DB_USER', database.user);
    return this;
  }
}
