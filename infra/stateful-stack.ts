import { ArnFormat, Duration, RemovalPolicy, Stack, type StackProps, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as rds from 'aws-cdk-lib/aws-rds';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';

/**
 * The database and its two users. `owner` is the master user: it owns the schema, and only the migrate function
 * connects as it. `appUser` is the role the migrations create and grant to (migrations/2026-12-01-database-roles.ts):
 * every other function connects as it, and it may not change ledger entries, run DDL or own anything.
 */
export const DATABASE = { name: 'credits', owner: 'postgres', appUser: 'credits_app' } as const;
/** The webhook dispatcher's timeout: a batch of POSTs of at most 10 s each; its queue's visibility is six times it. */
export const DISPATCHER_TIMEOUT = Duration.seconds(60);
/** The crediting worker's timeout; the queue's visibility timeout is six times it. */
export const WORKER_TIMEOUT = Duration.seconds(30);

export interface StatefulStackProps extends StackProps {
  /** A standby in a second zone. @default true */
  readonly multiAz?: boolean;
  /** @default 7 */
  readonly backupRetentionDays?: number;
}

/**
 * What holds data and must outlive any deploy: the network, the database behind RDS Proxy, the Stripe
 * secret, and the event queue with its dead-letter queue. Termination protection is on.
 */
export class StatefulStack extends Stack {
  readonly vpc: ec2.Vpc;
  readonly proxy: rds.DatabaseProxy;
  readonly databaseAccess: ec2.SecurityGroup;
  readonly stripeSecret: secretsmanager.Secret;
  readonly queue: sqs.Queue;
  readonly deadLetterQueue: sqs.Queue;
  /** The webhook dispatcher's queue: one message per due attempt of an outbound webhook delivery. */
  readonly webhookQueue: sqs.Queue;
  /** Deliveries whose retry schedule ran out (sent by the dispatcher), and messages received 5 times. */
  readonly webhookDeadLetterQueue: sqs.Queue;
  /** Encrypts the webhook endpoints' signing secrets (stored in the database as ciphertext only). */
  readonly webhookSecretsKey: kms.Key;

  constructor(scope: Construct, id: string, props: StatefulStackProps = {}) {
    super(scope, id, { ...props, terminationProtection: true });

    this.vpc = new ec2.Vpc(this, 'Vpc', {
      maxAzs: 2,
      natGateways: 1,
      subnetConfiguration: [
        { name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 },
        { name: 'app', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 22 },
        { name: 'data', subnetType: ec2.SubnetType.PRIVATE_ISOLATED, cidrMask: 24 },
      ],
      flowLogs: { rejected: { trafficType: ec2.FlowLogTrafficType.REJECT } },
    });

    /** Functions in this group may reach the proxy; nothing else may. */
    this.databaseAccess = new ec2.SecurityGroup(this, 'DatabaseClients', {
      vpc: this.vpc,
      description: 'Functions allowed to reach the database proxy',
    });
    const proxyGroup = new ec2.SecurityGroup(this, 'ProxySecurityGroup', {
      vpc: this.vpc,
      description: 'RDS Proxy',
    });
    proxyGroup.addIngressRule(this.databaseAccess, ec2.Port.tcp(5432), 'database clients');
    const databaseGroup = new ec2.SecurityGroup(this, 'DatabaseSecurityGroup', {
      vpc: this.vpc,
      description: 'RDS instance',
    });
    databaseGroup.addIngressRule(proxyGroup, ec2.Port.tcp(5432), 'the proxy only');

    const database = new rds.DatabaseInstance(this, 'Database', {
      engine: rds.DatabaseInstanceEngine.postgres({ version: rds.PostgresEngineVersion.VER_17 }),
      instanceType: ec2.InstanceType.of(ec2.InstanceClass.T4G, ec2.InstanceSize.MEDIUM),
      vpc: this.vpc,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_ISOLATED },
      securityGroups: [databaseGroup],
      databaseName: DATABASE.name,
      credentials: rds.Credentials.fromGeneratedSecret(DATABASE.owner),
      storageEncrypted: true,
      multiAz: props.multiAz ?? true,
      backupRetention: Duration.days(props.backupRetentionDays ?? 7),
      deletionProtection: true,
      removalPolicy: RemovalPolicy.SNAPSHOT,
      iamAuthentication: true,
      enablePerformanceInsights: true,
      cloudwatchLogsExports: ['postgresql'],
      autoMinorVersionUpgrade: true,
      parameterGroup: new rds.ParameterGroup(this, 'Parameters', {
        engine: rds.DatabaseInstanceEngine.postgres({ version: rds.PostgresEngineVersion.VER_17 }),
        parameters: { 'rds.force_ssl': '1', log_min_duration_statement: '500' },
      }),
    });
    database.addRotationSingleUser({ automaticallyAfter: Duration.days(30) });
    Validations.of(database).acknowledge({
      id: 'AwsSolutions-RDS11',
      reason:
        'The default port is kept: the instance is in isolated subnets and only the proxy security group may reach it',
    });
    if (!(props.multiAz ?? true)) {
      Validations.of(database).acknowledge({
        id: 'AwsSolutions-RDS3',
        reason: 'multiAz=false was chosen through CDK context for a non-production stage',
      });
    }
    // Clients always sign in to the proxy with IAM tokens (iamAuth). Onwards to the database, the owner goes
    // through the master secret (it keeps its password: the break-glass login, rotated every 30 days), and
    // every other user end to end with IAM (defaultAuthScheme): the application role has no password
    // anywhere, and the proxy may sign in as it alone (the rds-db:connect grant below).
    this.proxy = database.addProxy('Proxy', {
      secrets: [database.secret!],
      defaultAuthScheme: rds.DefaultAuthScheme.IAM_AUTH,
      vpc: this.vpc,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_ISOLATED },
      securityGroups: [proxyGroup],
      iamAuth: true,
      requireTLS: true,
      borrowTimeout: Duration.seconds(30),
    });
    (this.proxy.node.findChild('IAMRole') as iam.Role).addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['rds-db:connect'],
        resources: [
          this.formatArn({
            service: 'rds-db',
            resource: 'dbuser',
            resourceName: `${database.instanceResourceId}/${DATABASE.appUser}`,
            arnFormat: ArnFormat.COLON_RESOURCE_NAME,
          }),
        ],
      }),
    );

    this.stripeSecret = new secretsmanager.Secret(this, 'StripeSecret', {
      description:
        'Stripe API key and webhook signing secrets: {"apiKey": "sk_...", "webhookSecrets": ["whsec_..."]}',
      removalPolicy: RemovalPolicy.RETAIN,
    });
    Validations.of(this.stripeSecret).acknowledge({
      id: 'AwsSolutions-SMG4',
      reason:
        'Stripe keys and signing secrets are rolled in the Stripe dashboard; the README gives the rotation steps (several webhookSecrets are accepted during a roll)',
    });

    this.deadLetterQueue = new sqs.Queue(this, 'EventsDlq', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    this.queue = new sqs.Queue(this, 'Events', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      visibilityTimeout: Duration.seconds(WORKER_TIMEOUT.toSeconds() * 6),
      retentionPeriod: Duration.days(14),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: 5 },
    });

    this.webhookDeadLetterQueue = new sqs.Queue(this, 'WebhookDeliveriesDlq', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    this.webhookQueue = new sqs.Queue(this, 'WebhookDeliveries', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      visibilityTimeout: Duration.seconds(DISPATCHER_TIMEOUT.toSeconds() * 6),
      retentionPeriod: Duration.days(14),
      deadLetterQueue: { queue: this.webhookDeadLetterQueue, maxReceiveCount: 5 },
    });
    // Retained: without it the stored secrets cannot be decrypted, and every endpoint would need a new one.
    this.webhookSecretsKey = new kms.Key(this, 'WebhookSecretsKey', {
      description: 'Credits: outbound webhook signing secrets',
      enableKeyRotation: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });
  }
}
