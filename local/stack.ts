import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { SQSClient } from '@aws-sdk/client-sqs';
import type { APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';
import pg from 'pg';
import { createApiHandler } from '../functions/api.js';
import { createCreditWorker } from '../functions/credit-worker.js';
import { createWebhookIntake } from '../functions/webhook-intake.js';
import type { ApiConfig } from '../shared/config.js';
import { createDb } from '../shared/db/client.js';
import { migrateToLatest } from '../shared/db/migrate.js';
import { parsePackages } from '../shared/packages.js';
import { executeRun } from '../shared/reconcile/reconcile.js';
import { lazyStripe } from '../shared/stripe/api-client.js';
import { createLocalGateway, type Handler } from './api-gateway.js';
import { LOCAL_REGION, LocalAuth } from './auth.js';
import { appRoleUrl, startLocalPostgres } from './postgres.js';
import { LocalQueue } from './queue.js';
import { type RunningStripeEmulator, startStripeEmulator } from './stripe-emulator/server.js';

export interface LocalStackOptions {
  /** Where Postgres data, local credentials and the emulator's state live. @default .data */
  readonly dataDir?: string;
  /** @default 3000; 0 picks a free port */
  readonly port?: number;
  /** An external Postgres instead of the embedded one, as the owner: the migrations run as it. */
  readonly databaseUrl?: string;
  /** The handlers' connection, as the application role. @default databaseUrl's, as `credits_app` (see local/postgres.ts) */
  readonly appDatabaseUrl?: string;
  /** @default 12111; 0 picks a free port */
  readonly stripeEmulatorPort?: number;
  /** Use real Stripe (test mode) instead of the emulator. */
  readonly stripeSecretKey?: string;
  /** @default whsec_local_emulator_secret */
  readonly stripeWebhookSecret?: string;
  /** @default 30 */
  readonly visibilityTimeoutSeconds?: number;
  /** Webhook retry timing of the emulator (tests use short delays). */
  readonly webhookRetryBaseMs?: number;
  readonly creditPackages?: string;
}

export interface LocalStack {
  readonly url: string;
  readonly stripeUrl: string | undefined;
  readonly databaseUrl: string;
  readonly auth: LocalAuth;
  readonly queue: LocalQueue;
  readonly emulator: RunningStripeEmulator | undefined;
  stop(): Promise<void>;
}

const context = (name: string): Context =>
  ({
    functionName: name,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:${LOCAL_REGION}:000000000000:function:${name}`,
    memoryLimitInMB: '512',
    awsRequestId: crypto.randomUUID(),
    logGroupName: `/local/${name}`,
    logStreamName: 'local',
    getRemainingTimeInMillis: () => 30_000,
  }) as Context;

async function ensureDatabase(serverUrl: string, name: string): Promise<string> {
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
  if (exists.rowCount === 0) await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function send(res: ServerResponse, result: APIGatewayProxyStructuredResultV2) {
  res.writeHead(result.statusCode ?? 200, result.headers as Record<string, string>);
  res.end(result.isBase64Encoded ? Buffer.from(result.body ?? '', 'base64') : (result.body ?? ''));
}

/**
 * The whole system on one machine: Postgres (embedded under dataDir, or databaseUrl), migrations, the HTTP
 * API driving the same handler modules with API Gateway v2 events, the local queue feeding the worker,
 * the Stripe emulator delivering signed webhooks to the local intake, and the demo page.
 */
export async function startLocalStack(options: LocalStackOptions = {}): Promise<LocalStack> {
  const dataDir = path.resolve(options.dataDir ?? '.data');
  const stops: Array<() => Promise<void>> = [];
  const stop = async () => {
    for (const fn of stops.reverse()) await fn().catch(() => {});
  };
  try {
    let serverUrl = options.databaseUrl;
    if (!serverUrl) {
      const postgres = await startLocalPostgres({ dataDir: path.join(dataDir, 'postgres'), port: 54329 });
      stops.push(() => postgres.stop());
      serverUrl = postgres.url;
    }
    const databaseUrl = options.databaseUrl ?? (await ensureDatabase(serverUrl, 'credits'));
    const owner = createDb(databaseUrl, { max: 1, applicationName: 'local-stack-migrate' });
    await migrateToLatest(owner).finally(() => owner.destroy());
    const appDatabaseUrl = options.appDatabaseUrl ?? (await appRoleUrl(databaseUrl));
    const db = createDb(appDatabaseUrl, { max: 10, applicationName: 'local-stack' });
    stops.push(() => db.destroy());

    const auth = await LocalAuth.load(dataDir);
    let baseUrl = '';
    const queue = new LocalQueue(() => baseUrl, {
      visibilityTimeoutSeconds: options.visibilityTimeoutSeconds ?? 30,
    });
    stops.push(() => queue.stop());
    const packages = parsePackages(options.creditPackages);

    const server = createServer((req, res) => {
      handle(req, res).catch((error: unknown) => {
        console.error('local stack request failed', error);
        if (!res.headersSent)
          send(res, { statusCode: 500, body: JSON.stringify({ message: 'Internal Server Error' }) });
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 3000, '127.0.0.1', resolve);
    });
    stops.push(async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

    const webhookSecret = options.stripeWebhookSecret ?? 'whsec_local_emulator_secret';
    let emulator: RunningStripeEmulator | undefined;
    if (!options.stripeSecretKey) {
      emulator = await startStripeEmulator({
        port: options.stripeEmulatorPort ?? 12111,
        webhookEndpoint: `${baseUrl}/webhooks/stripe`,
        webhookSecret,
        stateFile: path.join(dataDir, 'stripe-emulator.json'),
        ...(options.webhookRetryBaseMs !== undefined && {
          delivery: {
            retryBaseMs: options.webhookRetryBaseMs,
            maxRetryDelayMs: 20 * options.webhookRetryBaseMs,
          },
        }),
      });
      stops.push(() => emulator!.close());
    }
    const config: ApiConfig = {
      database: { url: appDatabaseUrl },
      poolMax: 10,
      packages,
      stripeSecretKey: options.stripeSecretKey ?? 'sk_test_local_emulator',
      stripeApiBase: emulator?.url,
      checkoutSuccessUrl: `${baseUrl}/?checkout=success`,
      checkoutCancelUrl: `${baseUrl}/?checkout=cancelled`,
      corsAllowedOrigins: [baseUrl],
      maxOpenCheckouts: 5,
    };
    const stripe = lazyStripe({
      secretKey: config.stripeSecretKey,
      apiBase: config.stripeApiBase,
      maxNetworkRetries: 0,
    });
    const api = createApiHandler({
      db,
      config,
      stripe,
      dispatchReconciliation: async (runId) => {
        void executeRun({ db, stripe: await stripe(), packages }, runId).catch((error: unknown) =>
          console.error('reconciliation failed', error),
        );
      },
    });
    const service = auth.principal('service');
    const intake = createWebhookIntake({
      config: {
        QUEUE_URL: queue.mainUrl,
        STRIPE_WEBHOOK_SECRET: webhookSecret,
        STRIPE_LIVEMODE: false,
        WEBHOOK_MAX_BYTES: 256 * 1024,
      },
      sqs: new SQSClient({
        region: LOCAL_REGION,
        endpoint: baseUrl,
        credentials: { accessKeyId: service.accessKeyId, secretAccessKey: service.secretAccessKey },
      }),
    });
    const worker = createCreditWorker({ db, packages });
    queue.startPolling(async (event) => worker(event, context('credit-worker')));
    const gateway = createLocalGateway(auth, {
      api: (event) => api(event, context('api')) as Promise<APIGatewayProxyStructuredResultV2>,
      'webhook-intake': (event) =>
        intake(event, context('webhook-intake')) as Promise<APIGatewayProxyStructuredResultV2>,
    } satisfies Record<string, Handler>);
    const demoPage = readFileSync(new URL('./demo/index.html', import.meta.url), 'utf8');

    async function handle(req: IncomingMessage, res: ServerResponse) {
      const url = new URL(req.url ?? '/', baseUrl);
      const body = await readBody(req);
      if (String(req.headers['x-amz-target'] ?? '').startsWith('AmazonSQS.')) {
        return queue.handleSqsApi(req, res, body.toString('utf8'));
      }
      if (req.method === 'GET' && url.pathname === '/') {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        return res.end(demoPage);
      }
      if (req.method === 'GET' && url.pathname === '/_local/token') {
        const sub = url.searchParams.get('sub') ?? '';
        if (!/^[\w.@-]{1,64}$/.test(sub))
          return send(res, {
            statusCode: 400,
            body: JSON.stringify({ message: 'sub: 1-64 of [A-Za-z0-9_.@-]' }),
          });
        return send(res, {
          statusCode: 200,
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ token: await auth.issueToken(sub) }),
        });
      }
      if (req.method === 'GET' && url.pathname === '/_local/info') {
        return send(res, {
          statusCode: 200,
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({
            apiUrl: baseUrl,
            stripeUrl: emulator?.url ?? null,
            queueUrl: queue.mainUrl,
            dlqUrl: queue.dlqUrl,
            dlqArn: queue.dlqArn,
            region: LOCAL_REGION,
          }),
        });
      }
      const result = await gateway(req, body);
      return send(
        res,
        result ?? {
          statusCode: 404,
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ message: 'Not Found' }),
        },
      );
    }

    return { url: baseUrl, stripeUrl: emulator?.url, databaseUrl, auth, queue, emulator, stop };
  } catch (error: unknown) {
    await stop();
    throw error;
  }
}
