import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { App, Validations } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import type { IConstruct } from 'constructs';
import { beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../bin/app.js';
import { bundleReports } from '../../bin/bundle-sizes.js';
import { ROUTES } from '../../shared/http/routes.js';

const outdir = mkdtempSync(path.join(tmpdir(), 'cdk-test-'));
const context = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8')).context;
let app: App;
let stateful: Template;
let stateless: Template;
let stacks: ReturnType<typeof createApp>;

beforeAll(() => {
  stacks = createApp(new App({ outdir, context: { ...context, alarmEmail: 'ops@example.com' } }));
  app = stacks.app;
  app.synth(); // throws if cdk-nag (AwsSolutions) reports any finding that is not acknowledged
  stateful = Template.fromStack(stacks.stateful);
  stateless = Template.fromStack(stacks.stateless);
}, 120_000);

const functionLogicalId = (template: Template, prefix: string) =>
  Object.keys(template.findResources('AWS::Lambda::Function')).find((id) => id.startsWith(prefix))!;

function policyOf(template: Template, functionPrefix: string): string[] {
  const fn = template.findResources('AWS::Lambda::Function')[functionLogicalId(template, functionPrefix)]!;
  const roleId = (fn.Properties.Role as { 'Fn::GetAtt': [string] })['Fn::GetAtt'][0];
  const policies = Object.values(template.findResources('AWS::IAM::Policy')).filter((p) =>
    (p.Properties.Roles as Array<{ Ref: string }>).some((r) => r.Ref === roleId),
  );
  return policies.flatMap((p) =>
    (p.Properties.PolicyDocument.Statement as Array<{ Action: string | string[] }>).flatMap((s) =>
      [s.Action].flat(),
    ),
  );
}

describe('cdk-nag', () => {
  it('has no unacknowledged AwsSolutions finding, and every acknowledgement has a reason', () => {
    const report = JSON.parse(readFileSync(path.join(outdir, 'validation-report.json'), 'utf8'));
    expect(report.pluginReports.flatMap((r: { violations: unknown[] }) => r.violations)).toEqual([]);
    const acknowledgements: Array<{ id: string; reason: string }> = [];
    const visit = (node: IConstruct) => {
      for (const entry of node.node.metadata.filter(
        (m) => m.type === Validations.ACKNOWLEDGED_RULES_METADATA_KEY,
      )) {
        for (const [id, reason] of Object.entries(entry.data as Record<string, string>))
          acknowledgements.push({ id, reason });
      }
      for (const child of node.node.children) visit(child);
    };
    visit(app);
    expect(acknowledgements.length).toBeGreaterThan(5);
    for (const ack of acknowledgements) expect(ack.reason.length, ack.id).toBeGreaterThan(20);
  });
});

describe('stateful stack', () => {
  it('has termination protection', () => {
    expect(stacks.stateful.terminationProtection).toBe(true);
  });

  it('encrypts the database, keeps backups, protects it from deletion and requires IAM auth', () => {
    stateful.hasResourceProperties('AWS::RDS::DBInstance', {
      StorageEncrypted: true,
      DeletionProtection: true,
      BackupRetentionPeriod: 7,
      EnableIAMDatabaseAuthentication: true,
      MultiAZ: true,
      Engine: 'postgres',
    });
  });

  it('puts RDS Proxy in front with IAM auth and TLS required', () => {
    stateful.hasResourceProperties('AWS::RDS::DBProxy', {
      RequireTLS: true,
      Auth: [Match.objectLike({ IAMAuth: 'REQUIRED' })],
    });
  });

  it('encrypts both queues and refuses non-TLS access to them', () => {
    stateful.resourcePropertiesCountIs('AWS::SQS::Queue', { SqsManagedSseEnabled: true }, 2);
    stateful.resourcePropertiesCountIs(
      'AWS::SQS::QueuePolicy',
      {
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
          ]),
        },
      },
      2,
    );
  });

  it('redrives to the DLQ after 5 receives, with a visibility timeout six times the worker timeout', () => {
    stateful.hasResourceProperties('AWS::SQS::Queue', {
      VisibilityTimeout: 180,
      RedrivePolicy: { maxReceiveCount: 5, deadLetterTargetArn: Match.anyValue() },
    });
    stateless.hasResourceProperties('AWS::Lambda::Function', {
      Handler: 'index.handler',
      Timeout: 30,
      Environment: Match.objectLike({
        Variables: Match.objectLike({ POWERTOOLS_SERVICE_NAME: 'credit-worker' }),
      }),
    });
  });
});

describe('functions', () => {
  it('run on ARM64 with the latest Node runtime, active tracing, log retention and Powertools settings', () => {
    for (const name of ['WebhookIntake', 'CreditWorker', 'Api', 'Reconcile', 'Migrate']) {
      const fn = stateless.findResources('AWS::Lambda::Function')[functionLogicalId(stateless, name)]!;
      expect(fn.Properties).toMatchObject({
        Architectures: ['arm64'],
        Runtime: 'nodejs24.x',
        TracingConfig: { Mode: 'Active' },
        Environment: { Variables: { POWERTOOLS_METRICS_NAMESPACE: 'Credits' } },
      });
    }
    stateless.resourcePropertiesCountIs('AWS::Logs::LogGroup', { RetentionInDays: 30 }, 5);
  });

  it('lets intake send to the queue and read the Stripe secret, and nothing else; no VPC, no database', () => {
    const actions = policyOf(stateless, 'WebhookIntake');
    expect(actions.filter((a) => !a.startsWith('xray:')).sort()).toEqual(
      [
        'secretsmanager:DescribeSecret',
        'secretsmanager:GetSecretValue',
        'sqs:GetQueueAttributes',
        'sqs:GetQueueUrl',
        'sqs:SendMessage',
      ].sort(),
    );
    const fn =
      stateless.findResources('AWS::Lambda::Function')[functionLogicalId(stateless, 'WebhookIntake')]!;
    expect(fn.Properties.VpcConfig).toBeUndefined();
    expect(Object.keys(fn.Properties.Environment.Variables)).not.toContain('DB_HOST');
  });

  it('lets only the worker consume the queue, and only database functions connect to the database', () => {
    const consumers = ['WebhookIntake', 'CreditWorker', 'Api', 'Reconcile', 'Migrate'].filter((name) =>
      policyOf(stateless, name).includes('sqs:ReceiveMessage'),
    );
    expect(consumers).toEqual(['CreditWorker']);
    const connectors = ['WebhookIntake', 'CreditWorker', 'Api', 'Reconcile', 'Migrate'].filter((name) =>
      policyOf(stateless, name).includes('rds-db:connect'),
    );
    expect(connectors).toEqual(['CreditWorker', 'Api', 'Reconcile', 'Migrate']);
    expect(policyOf(stateless, 'CreditWorker')).not.toContain('secretsmanager:GetSecretValue');
  });

  it('reports batch item failures and caps worker concurrency', () => {
    stateless.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      FunctionResponseTypes: ['ReportBatchItemFailures'],
      BatchSize: 10,
      ScalingConfig: { MaximumConcurrency: 5 },
    });
  });

  it('bundles locally and the intake bundle carries no database driver', () => {
    const reports = bundleReports(outdir);
    expect(reports.map((r) => r.name).sort()).toEqual([
      'Api',
      'CreditWorker',
      'Migrate',
      'Reconcile',
      'WebhookIntake',
    ]);
    const intake = reports.find((r) => r.name === 'WebhookIntake')!;
    expect(intake.packages.map(([name]) => name)).not.toEqual(expect.arrayContaining(['pg']));
    expect(
      intake.packages.map(([name]) => name).filter((n) => ['pg', 'pg-protocol', 'kysely'].includes(n)),
    ).toEqual([]);
    const worker = reports.find((r) => r.name === 'CreditWorker')!;
    expect(worker.packages.map(([name]) => name)).toContain('pg');
  });
});

describe('HTTP API', () => {
  it('gives each route of the shared table its authorizer', () => {
    for (const [key, route] of Object.entries(ROUTES)) {
      const type = route.auth === 'user' ? 'JWT' : route.auth === 'none' ? 'NONE' : 'AWS_IAM';
      stateless.hasResourceProperties('AWS::ApiGatewayV2::Route', { RouteKey: key, AuthorizationType: type });
    }
    stateless.resourceCountIs('AWS::ApiGatewayV2::Route', Object.keys(ROUTES).length);
  });

  it('takes the JWT issuer and audience from context', () => {
    stateless.hasResourceProperties('AWS::ApiGatewayV2::Authorizer', {
      AuthorizerType: 'JWT',
      JwtConfiguration: { Issuer: context.jwtIssuer, Audience: [context.jwtAudience] },
    });
  });

  it('throttles and writes access logs', () => {
    stateless.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      DefaultRouteSettings: { ThrottlingRateLimit: 200, ThrottlingBurstLimit: 400 },
      AccessLogSettings: { DestinationArn: Match.anyValue(), Format: Match.stringLikeRegexp('routeKey') },
    });
  });

  it('passes the CORS origins to the api function', () => {
    stateless.hasResourceProperties('AWS::Lambda::Function', {
      Environment: { Variables: Match.objectLike({ CORS_ALLOWED_ORIGINS: context.corsOrigins }) },
    });
  });
});

describe('operations', () => {
  it('schedules nightly reconciliation with retries and a DLQ', () => {
    stateless.hasResourceProperties('AWS::Scheduler::Schedule', {
      ScheduleExpression: 'cron(15 3 * * ? *)',
      Target: Match.objectLike({
        RetryPolicy: { MaximumRetryAttempts: 3, MaximumEventAgeInSeconds: 7200 },
        DeadLetterConfig: { Arn: Match.anyValue() },
      }),
    });
  });

  it('runs the migrations in a trigger before the new code of the database functions deploys', () => {
    const trigger = Object.entries(stateless.findResources('Custom::Trigger'));
    expect(trigger).toHaveLength(1);
    const [triggerId] = trigger[0]!;
    for (const name of ['CreditWorker', 'Api', 'Reconcile']) {
      const fn = stateless.findResources('AWS::Lambda::Function')[functionLogicalId(stateless, name)]!;
      expect([fn.DependsOn].flat(), name).toContain(triggerId);
    }
  });

  it('alarms on the DLQ, worker errors, intake 5xx, findings and parked events, to an encrypted SNS topic', () => {
    stateless.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: Match.anyValue() });
    stateless.hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'email',
      Endpoint: 'ops@example.com',
    });
    const alarms = Object.values(stateless.findResources('AWS::CloudWatch::Alarm'));
    expect(alarms.length).toBe(7);
    for (const alarm of alarms) expect(alarm.Properties.AlarmActions).toHaveLength(1);
    const names = alarms.map((a) => a.Properties.MetricName).filter(Boolean);
    expect(names).toEqual(
      expect.arrayContaining([
        'ApproximateNumberOfMessagesVisible',
        'Errors',
        'WebhookEnqueueFailed',
        'ReconciliationFindings',
        'EventParked',
      ]),
    );
    stateless.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
  });
});
