import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { App, Validations } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import type { IConstruct } from 'constructs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../bin/app.js';
import { bundleReports } from '../../bin/bundle-sizes.js';
import { ROUTES } from '../../shared/http/routes.js';
import { METRIC_SERVICE, METRICS, METRICS_NAMESPACE, type MetricName } from '../../shared/metrics.js';

const outdir = mkdtempSync(path.join(tmpdir(), 'cdk-test-'));
const context = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8')).context;
const ADMIN_PRINCIPALS = [
  'arn:aws:iam::123456789012:role/credits-admin',
  'arn:aws:sts::123456789012:assumed-role/support-*/*',
];
let app: App;
let stateful: Template;
let stateless: Template;
let stacks: ReturnType<typeof createApp>;
const PLANS = [
  { id: 'free', name: 'Free', default: true, monthlyAllowance: 100 },
  { id: 'pro', name: 'Pro', caps: { monthly: 50_000 } },
];

beforeAll(() => {
  stacks = createApp(
    new App({
      outdir,
      context: {
        ...context,
        alarmEmail: 'ops@example.com',
        adminPrincipals: ADMIN_PRINCIPALS.join(','),
        plans: PLANS,
        adminApprovalThreshold: 5000,
        allowPromotionCodes: 'true',
        webhookRetrySeconds: '60, 300, 3600',
      },
    }),
  );
  app = stacks.app;
  app.synth(); // throws if cdk-nag (AwsSolutions) reports any finding that is not acknowledged
  stateful = Template.fromStack(stacks.stateful);
  stateless = Template.fromStack(stacks.stateless);
}, 120_000);
// The synth writes the bundles (17 MB) there.
afterAll(() => rmSync(outdir, { recursive: true, force: true }));

/** Builds the app with cdk.json's context and `extra` in a scratch directory (for the refusals: they throw). */
function synthWith(extra: Record<string, unknown>) {
  const scratch = mkdtempSync(path.join(tmpdir(), 'cdk-test-'));
  try {
    return createApp(new App({ outdir: scratch, context: { ...context, ...extra } }));
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

const functionLogicalId = (template: Template, prefix: string) =>
  Object.keys(template.findResources('AWS::Lambda::Function')).find((id) => id.startsWith(prefix))!;

const functionOf = (template: Template, prefix: string) =>
  template.findResources('AWS::Lambda::Function')[functionLogicalId(template, prefix)]!;

/** The resources of the `rds-db:connect` statements in the policies of a function's role, as JSON. */
function connectResourcesOf(template: Template, functionPrefix: string): string[] {
  const roleId = (functionOf(template, functionPrefix).Properties.Role as { 'Fn::GetAtt': [string] })[
    'Fn::GetAtt'
  ][0];
  return Object.values(template.findResources('AWS::IAM::Policy'))
    .filter((p) => (p.Properties.Roles as Array<{ Ref: string }>).some((r) => r.Ref === roleId))
    .flatMap((p) => p.Properties.PolicyDocument.Statement as Array<{ Action: unknown; Resource: unknown }>)
    .filter((s) => s.Action === 'rds-db:connect')
    .flatMap((s) => [s.Resource].flat().map((r) => JSON.stringify(r)));
}

/** `METHOD /path` of each resource in a managed policy (`*` where the route has a path parameter). */
function invokedRoutes(template: Template, policyPrefix: string): string[] {
  const [policy] = Object.entries(template.findResources('AWS::IAM::ManagedPolicy')).filter(([id]) =>
    id.startsWith(policyPrefix),
  );
  const statements = policy![1].Properties.PolicyDocument.Statement as Array<{
    Action: string;
    Effect: string;
    Resource: unknown;
  }>;
  expect(statements.map((s) => [s.Effect, s.Action])).toEqual([['Allow', 'execute-api:Invoke']]);
  return [statements[0]!.Resource]
    .flat()
    .map((r) => {
      const parts = (r as { 'Fn::Join': [string, unknown[]] })['Fn::Join'][1];
      const tail = parts[parts.length - 1] as string;
      expect(parts).toContainEqual({ Ref: Object.keys(template.findResources('AWS::ApiGatewayV2::Api'))[0] });
      const [, stage, method, ...segments] = tail.split('/');
      expect(stage).toBe('$default');
      return `${method} /${segments.join('/')}`;
    })
    .sort();
}

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

  it('lets the proxy sign in to the database as the owner with the master secret only, as anyone else end to end with IAM', () => {
    // The master secret, as attached to the instance (the attachment's ref is the secret's ARN).
    const [attachment] = Object.keys(stateful.findResources('AWS::SecretsManager::SecretTargetAttachment'));
    stateful.hasResourceProperties('AWS::RDS::DBProxy', {
      DefaultAuthScheme: 'IAM_AUTH',
      Auth: [
        {
          AuthScheme: 'SECRETS',
          IAMAuth: 'REQUIRED',
          SecretArn: { Ref: attachment },
        },
      ],
    });
  });

  it('lets the proxy role connect to the database as the application role and as no other IAM user', () => {
    stateful.hasResourceProperties('AWS::IAM::Policy', {
      Roles: [{ Ref: Match.stringLikeRegexp('^DatabaseProxyIAMRole') }],
      PolicyDocument: {
        Statement: Match.arrayWith([
          {
            Action: 'rds-db:connect',
            Effect: 'Allow',
            Resource: {
              'Fn::Join': [
                '',
                Match.arrayWith([
                  ':dbuser:',
                  { 'Fn::GetAtt': [Match.stringLikeRegexp('^Database'), 'DbiResourceId'] },
                  '/credits_app',
                ]),
              ],
            },
          },
        ]),
      },
    });
    const connects = Object.values(stateful.findResources('AWS::IAM::Policy')).flatMap((p) =>
      (p.Properties.PolicyDocument.Statement as Array<{ Action: unknown }>).filter(
        (s) => s.Action === 'rds-db:connect',
      ),
    );
    expect(connects).toHaveLength(1);
  });

  it('encrypts all four queues (events and webhook deliveries, each with a DLQ) and refuses non-TLS access', () => {
    stateful.resourcePropertiesCountIs('AWS::SQS::Queue', { SqsManagedSseEnabled: true }, 4);
    stateful.resourcePropertiesCountIs(
      'AWS::SQS::QueuePolicy',
      {
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
          ]),
        },
      },
      4,
    );
  });

  it("gives the webhook dispatcher its own queue: DLQ after 5 receives, visibility six times the dispatcher's timeout", () => {
    const [dlq] = Object.keys(stateful.findResources('AWS::SQS::Queue')).filter((id) =>
      id.startsWith('WebhookDeliveriesDlq'),
    );
    stateful.hasResourceProperties('AWS::SQS::Queue', {
      VisibilityTimeout: 360,
      MessageRetentionPeriod: 14 * 86_400,
      RedrivePolicy: { maxReceiveCount: 5, deadLetterTargetArn: { 'Fn::GetAtt': [dlq, 'Arn'] } },
    });
    expect(functionOf(stateless, 'WebhookDispatcher').Properties.Timeout).toBe(60);
  });

  it('keeps the webhook signing secrets key rotated and retained', () => {
    stateful.hasResource('AWS::KMS::Key', {
      Properties: Match.objectLike({
        Description: 'Credits: outbound webhook signing secrets',
        EnableKeyRotation: true,
      }),
      DeletionPolicy: 'Retain',
      UpdateReplacePolicy: 'Retain',
    });
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
    for (const name of [
      'WebhookIntake',
      'CreditWorker',
      'Api',
      'Reconcile',
      'Sweeper',
      'Migrate',
      'WebhookDispatcher',
    ]) {
      const fn = stateless.findResources('AWS::Lambda::Function')[functionLogicalId(stateless, name)]!;
      expect(fn.Properties).toMatchObject({
        Architectures: ['arm64'],
        Runtime: 'nodejs24.x',
        TracingConfig: { Mode: 'Active' },
        Environment: { Variables: { POWERTOOLS_METRICS_NAMESPACE: 'Credits' } },
      });
    }
    stateless.resourcePropertiesCountIs('AWS::Logs::LogGroup', { RetentionInDays: 30 }, 7);
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

  it('lets only the worker and the dispatcher consume a queue, and only database functions connect to the database', () => {
    const all = [
      'WebhookIntake',
      'CreditWorker',
      'Api',
      'Reconcile',
      'Sweeper',
      'Migrate',
      'WebhookDispatcher',
    ];
    const consumers = all.filter((name) => policyOf(stateless, name).includes('sqs:ReceiveMessage'));
    expect(consumers).toEqual(['CreditWorker', 'WebhookDispatcher']);
    const connectors = all.filter((name) => policyOf(stateless, name).includes('rds-db:connect'));
    expect(connectors).toEqual([
      'CreditWorker',
      'Api',
      'Reconcile',
      'Sweeper',
      'Migrate',
      'WebhookDispatcher',
    ]);
    expect(policyOf(stateless, 'CreditWorker')).not.toContain('secretsmanager:GetSecretValue');
  });

  it('connects api, worker, reconcile, sweeper and dispatcher as the application role, and only migrate as the owner', () => {
    for (const name of ['CreditWorker', 'Api', 'Reconcile', 'Sweeper', 'WebhookDispatcher']) {
      expect(functionOf(stateless, name).Properties.Environment.Variables.DB_USER, name).toBe('credits_app');
      const resources = connectResourcesOf(stateless, name);
      expect(resources, name).toHaveLength(1);
      expect(resources[0], name).toMatch(/\/credits_app"\]\]\}$/);
    }
    expect(functionOf(stateless, 'Migrate').Properties.Environment.Variables.DB_USER).toBe('postgres');
    const migrate = connectResourcesOf(stateless, 'Migrate');
    expect(migrate).toHaveLength(1);
    expect(migrate[0]).toMatch(/\/postgres"\]\]\}$/);
  });

  it('gives the sweeper the database through the proxy, in the database clients group, the webhook queue and the Stripe secret', () => {
    const fn = functionOf(stateless, 'Sweeper').Properties;
    expect(fn.Environment.Variables).toEqual({
      NODE_OPTIONS: '--enable-source-maps',
      POWERTOOLS_SERVICE_NAME: 'sweeper',
      POWERTOOLS_METRICS_NAMESPACE: 'Credits',
      POWERTOOLS_LOG_LEVEL: 'INFO',
      DB_HOST: { 'Fn::ImportValue': expect.stringMatching(/DatabaseProxy\w*Endpoint/) },
      DB_NAME: 'credits',
      DB_USER: 'credits_app',
      PLANS: JSON.stringify(PLANS),
      WEBHOOK_QUEUE_URL: { 'Fn::ImportValue': expect.stringMatching(/RefWebhookDeliveries(?!Dlq)/) },
      STRIPE_SECRET_NAME: expect.anything(),
    });
    expect(fn.VpcConfig.SecurityGroupIds).toEqual([
      { 'Fn::ImportValue': expect.stringMatching(/DatabaseClients\w*GroupId/) },
    ]);
    expect(
      policyOf(stateless, 'Sweeper')
        .filter((a) => !a.startsWith('xray:'))
        .sort(),
    ).toEqual(
      [
        'rds-db:connect',
        'secretsmanager:DescribeSecret',
        'secretsmanager:GetSecretValue',
        'sqs:GetQueueAttributes',
        'sqs:GetQueueUrl',
        'sqs:SendMessage',
      ].sort(),
    );
  });

  it('runs one sweep at a time, each well within the minute between sweeps', () => {
    expect(functionOf(stateless, 'Sweeper').Properties).toMatchObject({
      ReservedConcurrentExecutions: 1,
      Timeout: 50,
    });
  });

  it('neither retries a failed sweep nor keeps one waiting past a minute: the next sweep does its work', () => {
    stateless.hasResourceProperties('AWS::Lambda::EventInvokeConfig', {
      FunctionName: { Ref: functionLogicalId(stateless, 'Sweeper') },
      MaximumRetryAttempts: 0,
      MaximumEventAgeInSeconds: 60,
    });
  });

  it('lets the dispatcher consume and send to its queue, send to its DLQ and decrypt with the secrets key only', () => {
    const actions = policyOf(stateless, 'WebhookDispatcher').filter((a) => !a.startsWith('xray:'));
    expect([...new Set(actions)].sort()).toEqual(
      [
        'kms:Decrypt',
        'rds-db:connect',
        'sqs:ChangeMessageVisibility',
        'sqs:DeleteMessage',
        'sqs:GetQueueAttributes',
        'sqs:GetQueueUrl',
        'sqs:ReceiveMessage',
        'sqs:SendMessage',
      ].sort(),
    );
    const variables = functionOf(stateless, 'WebhookDispatcher').Properties.Environment.Variables;
    expect(variables).toMatchObject({
      WEBHOOK_QUEUE_URL: { 'Fn::ImportValue': expect.stringMatching(/RefWebhookDeliveries(?!Dlq)/) },
      WEBHOOK_DLQ_URL: { 'Fn::ImportValue': expect.stringMatching(/RefWebhookDeliveriesDlq/) },
      WEBHOOK_KMS_KEY_ID: { 'Fn::ImportValue': expect.stringMatching(/WebhookSecretsKey\w*Arn/) },
      DB_USER: 'credits_app',
    });
    stateless.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      FunctionName: { Ref: functionLogicalId(stateless, 'WebhookDispatcher') },
      FunctionResponseTypes: ['ReportBatchItemFailures'],
      EventSourceArn: { 'Fn::ImportValue': Match.stringLikeRegexp('GetAttWebhookDeliveries[0-9A-F]+Arn') },
    });
  });

  it('lets the api encrypt webhook secrets but never decrypt them', () => {
    const actions = policyOf(stateless, 'Api');
    expect(actions).toContain('kms:Encrypt');
    expect(actions).not.toContain('kms:Decrypt');
    expect(actions).not.toContain('sqs:ReceiveMessage');
    expect(functionOf(stateless, 'Api').Properties.Environment.Variables).toMatchObject({
      WEBHOOK_QUEUE_URL: expect.anything(),
      WEBHOOK_KMS_KEY_ID: expect.anything(),
    });
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
      'Sweeper',
      'WebhookDispatcher',
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

  it('generates one managed policy per IAM route kind, invoking exactly that kind of routes, exported as outputs', () => {
    const routesOf = (kind: string) =>
      Object.entries(ROUTES)
        .filter(([, route]) => route.auth === kind)
        .map(([key]) => key.replace(/\{[^}]+\}/g, '*'))
        .sort();
    expect(routesOf('service').length).toBeGreaterThan(0);
    expect(routesOf('admin').length).toBeGreaterThan(0);
    expect(invokedRoutes(stateless, 'ServiceCallerPolicy')).toEqual(routesOf('service'));
    expect(invokedRoutes(stateless, 'AdminCallerPolicy')).toEqual(routesOf('admin'));
    // IAM's `*` also spans `/`: no pattern of one kind may still match a route of any other kind.
    for (const kind of ['service', 'admin']) {
      const patterns = routesOf(kind).map(
        (route) =>
          new RegExp(
            `^${route
              .split('*')
              .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
              .join('.*')}$`,
          ),
      );
      for (const [key, route] of Object.entries(ROUTES).filter(([, r]) => r.auth !== kind)) {
        const concrete = key.replace(/\{[^}]+\}/g, 'x');
        expect(
          patterns.filter((p) => p.test(concrete)),
          `${kind} policy reaches ${route.auth} route ${key}`,
        ).toEqual([]);
      }
    }
    stateless.resourceCountIs('AWS::IAM::ManagedPolicy', 2);
    stateless.hasOutput('ServiceCallerPolicyArn', {
      Value: { Ref: Match.stringLikeRegexp('^ServiceCallerPolicy') },
    });
    stateless.hasOutput('AdminCallerPolicyArn', {
      Value: { Ref: Match.stringLikeRegexp('^AdminCallerPolicy') },
    });
  });

  it('passes the admin principals from context to the api function, and to no other', () => {
    expect(functionOf(stateless, 'Api').Properties.Environment.Variables.ADMIN_PRINCIPALS).toBe(
      ADMIN_PRINCIPALS.join(','),
    );
    for (const name of ['WebhookIntake', 'CreditWorker', 'Reconcile', 'Sweeper', 'Migrate'])
      expect(functionOf(stateless, name).Properties.Environment.Variables, name).not.toHaveProperty(
        'ADMIN_PRINCIPALS',
      );
  });

  it.each([
    ['missing', undefined, /missing CDK context value "adminPrincipals"/],
    ['empty', ' , ', /adminPrincipals is empty/],
    ['not an ARN', 'admin', /not an IAM user, role or assumed-role ARN pattern.*: admin/],
    ['a wildcard account', 'arn:aws:iam::*:role/admin', /with a literal account id/],
  ])('refuses to synthesize with adminPrincipals %s', (_case, adminPrincipals, message) => {
    expect(() => synthWith({ adminPrincipals })).toThrow(message);
  });

  it('passes the plans from context (JSON in cdk.json) to the api and the sweeper, and to no other', () => {
    for (const name of ['Api', 'Sweeper'])
      expect(functionOf(stateless, name).Properties.Environment.Variables.PLANS, name).toBe(
        JSON.stringify(PLANS),
      );
    for (const name of ['WebhookIntake', 'CreditWorker', 'Reconcile', 'Migrate'])
      expect(functionOf(stateless, name).Properties.Environment.Variables ?? {}, name).not.toHaveProperty(
        'PLANS',
      );
  });

  it.each([
    ['duplicate ids', [PLANS[0], PLANS[0]], /PLANS\[1\]\.id: duplicate id "free"/],
    ['a negative cap', [{ id: 'x', name: 'X', caps: { daily: -5 } }], /PLANS\[0\]\.caps\.daily: Too small/],
    ['text that is not JSON', '[{', /PLANS is invalid: not valid JSON/],
  ])('refuses to synthesize with plans of %s, naming the field', (_case, plans, message) => {
    expect(() => synthWith({ adminPrincipals: ADMIN_PRINCIPALS.join(','), plans })).toThrow(message);
  });

  it('passes the approval threshold and promotion codes to the api, and the retry schedule to the dispatcher', () => {
    expect(functionOf(stateless, 'Api').Properties.Environment.Variables).toMatchObject({
      ADMIN_APPROVAL_THRESHOLD: '5000',
      ALLOW_PROMOTION_CODES: 'true',
    });
    expect(functionOf(stateless, 'WebhookDispatcher').Properties.Environment.Variables).toMatchObject({
      WEBHOOK_RETRY_SECONDS: '60, 300, 3600',
    });
    for (const name of ['WebhookIntake', 'CreditWorker', 'Reconcile', 'Sweeper', 'Migrate'])
      expect(functionOf(stateless, name).Properties.Environment.Variables ?? {}, name).not.toHaveProperty(
        'ADMIN_APPROVAL_THRESHOLD',
      );
  });

  it.each([
    [
      'adminApprovalThreshold',
      '-1',
      /adminApprovalThreshold: expected a whole number of credits >= 0, got "-1"/,
    ],
    ['adminApprovalThreshold', '1.5', /adminApprovalThreshold: expected a whole number/],
    ['allowPromotionCodes', 'yes', /allowPromotionCodes: expected true or false, got "yes"/],
    ['webhookRetrySeconds', '60,,300', /WEBHOOK_RETRY_SECONDS: expected at most 50 comma-separated/],
  ])('refuses to synthesize with %s %s, naming it', (key, value, message) => {
    expect(() => synthWith({ adminPrincipals: ADMIN_PRINCIPALS.join(','), [key]: value })).toThrow(message);
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

  it('schedules the sweeper every minute, on the minute, with retries for a minute and its own DLQ', () => {
    const [dlq] = Object.keys(stateless.findResources('AWS::SQS::Queue')).filter((id) =>
      id.startsWith('SweepScheduleDlq'),
    );
    stateless.hasResourceProperties('AWS::Scheduler::Schedule', {
      ScheduleExpression: 'rate(1 minute)',
      FlexibleTimeWindow: { Mode: 'OFF' },
      Target: Match.objectLike({
        Arn: { 'Fn::GetAtt': [functionLogicalId(stateless, 'Sweeper'), 'Arn'] },
        RetryPolicy: { MaximumRetryAttempts: 3, MaximumEventAgeInSeconds: 60 },
        DeadLetterConfig: { Arn: { 'Fn::GetAtt': [dlq, 'Arn'] } },
      }),
    });
  });

  it('runs the migrations in a trigger before the new code of the database functions deploys', () => {
    const trigger = Object.entries(stateless.findResources('Custom::Trigger'));
    expect(trigger).toHaveLength(1);
    const [triggerId] = trigger[0]!;
    for (const name of ['CreditWorker', 'Api', 'Reconcile', 'Sweeper', 'WebhookDispatcher']) {
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
    expect(alarms.length).toBe(10);
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

  it("alarms on the webhook dispatcher's DLQ, to the alarm topic", () => {
    const topic = { Ref: Object.keys(stateless.findResources('AWS::SNS::Topic'))[0] };
    stateless.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'AWS/SQS',
      MetricName: 'ApproximateNumberOfMessagesVisible',
      Dimensions: [
        {
          Name: 'QueueName',
          Value: { 'Fn::ImportValue': Match.stringLikeRegexp('WebhookDeliveriesDlq\\w*QueueName') },
        },
      ],
      Threshold: 1,
      AlarmActions: [topic],
    });
  });

  it("alarms on the sweeper's errors and on its schedule's DLQ, to the alarm topic", () => {
    const topic = { Ref: Object.keys(stateless.findResources('AWS::SNS::Topic'))[0] };
    stateless.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'AWS/Lambda',
      MetricName: 'Errors',
      Dimensions: [{ Name: 'FunctionName', Value: { Ref: functionLogicalId(stateless, 'Sweeper') } }],
      Threshold: 1,
      AlarmActions: [topic],
    });
    const [dlq] = Object.keys(stateless.findResources('AWS::SQS::Queue')).filter((id) =>
      id.startsWith('SweepScheduleDlq'),
    );
    stateless.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'AWS/SQS',
      MetricName: 'ApproximateNumberOfMessagesVisible',
      Dimensions: [{ Name: 'QueueName', Value: { 'Fn::GetAtt': [dlq, 'QueueName'] } }],
      AlarmActions: [topic],
    });
  });

  it('graphs the grants the sweeper expired, under the service dimension the sweeper emits with', () => {
    const body = JSON.stringify(Object.values(stateless.findResources('AWS::CloudWatch::Dashboard'))[0]);
    expect(METRIC_SERVICE[METRICS.grantsExpired]).toBe(
      functionOf(stateless, 'Sweeper').Properties.Environment.Variables.POWERTOOLS_SERVICE_NAME,
    );
    expect(body).toContain(`[\\"${METRICS_NAMESPACE}\\",\\"GrantsExpired\\",\\"service\\",\\"sweeper\\",`);
  });

  it('watches only metrics of the shared catalog, in its namespace', () => {
    const catalog: string[] = Object.values(METRICS);
    const alarms = Object.values(stateless.findResources('AWS::CloudWatch::Alarm')).filter(
      (a) => a.Properties.Namespace === METRICS_NAMESPACE,
    );
    expect(alarms.length).toBe(4);
    for (const alarm of alarms) expect(catalog).toContain(alarm.Properties.MetricName);
    const body = JSON.stringify(Object.values(stateless.findResources('AWS::CloudWatch::Dashboard'))[0]);
    const graphed = [...body.matchAll(/\[\\"Credits\\",\\"(\w+)\\"/g)].map((m) => m[1]);
    expect(graphed.length).toBeGreaterThan(10);
    for (const name of graphed) expect(catalog).toContain(name);
  });

  it('has every metric name the functions emit in the catalog', () => {
    const functionsDir = new URL('../../functions/', import.meta.url);
    const emitted = readdirSync(functionsDir)
      .filter((f) => f.endsWith('.ts'))
      .flatMap((f) => [
        ...readFileSync(new URL(f, functionsDir), 'utf8').matchAll(
          /'((?:Webhook|Event|Credits|Api|Reconciliation|Grants)[A-Z]\w*)'/g,
        ),
      ])
      .map((m) => m[1]!);
    for (const name of emitted) expect(Object.values(METRICS) as string[]).toContain(name);
  });

  it('catalogs each metric under the service of the one function that emits it, as alarms look it up', () => {
    const functionsDir = new URL('../../functions/', import.meta.url);
    // The house construct names a function's Powertools service after its file in functions/.
    const emitted = readdirSync(functionsDir)
      .filter((f) => f.endsWith('.ts'))
      .flatMap((f) =>
        [...readFileSync(new URL(f, functionsDir), 'utf8').matchAll(/\bMETRICS\.(\w+)/g)].map(
          (m) => [f.replace(/\.ts$/, ''), METRICS[m[1] as keyof typeof METRICS] as MetricName] as const,
        ),
      );
    expect(emitted).toContainEqual(['sweeper', METRICS.grantsExpired]);
    for (const [service, name] of emitted) expect(METRIC_SERVICE[name], `${service}: ${name}`).toBe(service);
  });
});
