import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo, createServer as createNetServer } from 'node:net';
import path from 'node:path';
import { SQSClient } from '@aws-sdk/client-sqs';
import type { APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';
import pg from 'pg';
import { createApiHandler } from '../functions/api.js';
import { createCreditWorker } from '../functions/credit-worker.js';
import { createSweeper } from '../functions/sweeper.js';
import { createWebhookDispatcher } from '../functions/webhook-dispatcher.js';
import { createWebhookIntake } from '../functions/webhook-intake.js';
import type { ApiConfig } from '../shared/config.js';
import { createDb } from '../shared/db/client.js';
import { migrateToLatest } from '../shared/db/migrate.js';
import { parsePackages } from '../shared/packages.js';
import { type PlanCatalog, parsePlans } from '../shared/plan-catalog.js';
import { ensureActivePriceBook, type NewPriceBook } from '../shared/pricing/price-book.js';
import { executeRun } from '../shared/reconcile/reconcile.js';
import { lazyStripe } from '../shared/stripe/api-client.js';
import { DEFAULT_RETRY_SECONDS } from '../shared/webhooks/outbox.js';
import { sqsDeliveryQueue } from '../shared/webhooks/queue.js';
import type { WebhookRuntime } from '../shared/webhooks/runtime.js';
import { localSecretCipher } from '../shared/webhooks/secrets.js';
import { createLocalGateway, type Handler } from './api-gateway.js';
import { LOCAL_REGION, LocalAuth } from './auth.js';
import { appRoleUrl, freePort, startLocalPostgres } from './postgres.js';
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
  /** Admin grants above this wait for a second admin. @default none */
  readonly adminApprovalThreshold?: number;
  /** Checkout sessions accept Stripe promotion codes. @default false */
  readonly allowPromotionCodes?: boolean;
  /** How often the sweeper writes off expired grants. @default 60 */
  readonly sweepIntervalSeconds?: number;
  /** The `PLANS` JSON (allowances, caps, rate limits). @default one plan with none */
  readonly plans?: string;
  /** Seconds between outbound webhook attempts (WEBHOOK_RETRY_SECONDS). @default about 3 days' worth */
  readonly webhookRetrySeconds?: readonly number[];
}

export interface LocalStack {
  readonly url: string;
  readonly stripeUrl: string | undefined;
  readonly databaseUrl: string;
  readonly auth: LocalAuth;
  readonly queue: LocalQueue;
  /** The webhook dispatcher's queue and its DLQ. */
  readonly webhookQueue: LocalQueue;
  readonly emulator: RunningStripeEmulator | undefined;
  stop(): Promise<void>;
}

/** What `DATA_DIR/stack.json` records while a stack runs (removed on a clean stop); the admin CLI reads it. */
export interface StackFile {
  readonly pid: number;
  readonly dataDir: string;
  readonly startedAt: string;
  /** null while the stack is still starting. */
  readonly url: string | null;
  readonly port: number | null;
  readonly stripeUrl: string | null;
  readonly postgresPort: number | null;
}

const DEFAULT_POSTGRES_PORT = 54329;

/** The stack file of `dataDir`, or undefined when there is none (or it is unreadable). Never throws. */
export function readStackFile(dataDir: string): StackFile | undefined {
  try {
    return JSON.parse(readFileSync(path.join(path.resolve(dataDir), 'stack.json'), 'utf8')) as StackFile;
  } catch {
    return undefined;
  }
}

/** Another stack holds the data dir or the port; `url` is where it answers. */
export class StackAlreadyRunningError extends Error {
  constructor(
    readonly url: string | null,
    detail: string,
  ) {
    super(url ? `already running at ${url} (${detail})` : `already starting (${detail})`);
  }
}

/** A start that cannot go on for a reason the operator can fix; the message says which. */
export class StackStartError extends Error {}

const isAlive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error: unknown) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/**
 * Claims `dataDir` for this process by creating its stack.json exclusively; a file left by a process that
 * is gone (a crash, kill -9) is taken over. Throws StackAlreadyRunningError when a live process holds it.
 */
function claimDataDir(dataDir: string): (record: Omit<StackFile, 'pid' | 'dataDir' | 'startedAt'>) => void {
  const file = path.join(dataDir, 'stack.json');
  const base = { pid: process.pid, dataDir, startedAt: new Date().toISOString() };
  const write = (record: Omit<StackFile, 'pid' | 'dataDir' | 'startedAt'>, flag: 'w' | 'wx') =>
    writeFileSync(file, `${JSON.stringify({ ...base, ...record }, null, 2)}\n`, { flag });
  const starting = { url: null, port: null, stripeUrl: null, postgresPort: null };
  mkdirSync(dataDir, { recursive: true });
  for (let attempt = 0; ; attempt++) {
    try {
      write(starting, 'wx');
      return (record) => write(record, 'w');
    } catch (error: unknown) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw error;
    }
    const held = readStackFile(dataDir);
    if (held && isAlive(held.pid)) {
      throw new StackAlreadyRunningError(held.url, `process ${held.pid} uses DATA_DIR ${dataDir}`);
    }
    rmSync(file, { force: true });
  }
}

/** Listens on 127.0.0.1:port; a port taken by another stack (or program) is a StackStartError. */
async function listen(server: Server, port: number): Promise<void> {
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', resolve);
    });
  } catch (error: unknown) {
    if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw error;
    const url = `http://127.0.0.1:${port}`;
    const info = (await fetch(`${url}/_local/info`, { signal: AbortSignal.timeout(2000) })
      .then((r) => r.json())
      .catch(() => undefined)) as { dataDir?: string } | undefined;
    if (info?.dataDir) throw new StackAlreadyRunningError(url, `DATA_DIR ${info.dataDir}`);
    throw new StackStartError(`port ${port} is in use by another program: stop it or set PORT`);
  }
}

/** True when nothing listens on 127.0.0.1:port. */
function isPortFree(port: number): Promise<boolean> {
  const probe = createNetServer();
  return new Promise((resolve) => {
    probe.once('error', () => resolve(false));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
  });
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
/** The plans option, checked before anything starts: a bad `PLANS` stops the start with the field named. */
function parsePlanOption(json: string | undefined): PlanCatalog {
  try {
    return parsePlans(json);
  } catch (error: unknown) {
    throw new StackStartError((error as Error).message);
  }
}

export async function startLocalStack(options: LocalStackOptions = {}): Promise<LocalStack> {
  const dataDir = path.resolve(options.dataDir ?? '.data');
  const plans = parsePlanOption(options.plans);
  const stops: Array<() => Promise<void>> = [];
  const record = claimDataDir(dataDir);
  const stop = async () => {
    // First: embedded Postgres's exit hook may end the process on SIGINT/SIGTERM before the rest is done.
    rmSync(path.join(dataDir, 'stack.json'), { force: true });
    for (const fn of stops.reverse()) await fn().catch(() => {});
  };
  try {
    // The port is taken first, so a second stack stops here, before it touches Postgres; requests wait
    // for `handle` (below) until everything is up.
    let handle: ((req: IncomingMessage, res: ServerResponse) => Promise<unknown>) | undefined;
    const server = createServer((req, res) => {
      if (!handle) return send(res, { statusCode: 503, body: JSON.stringify({ message: 'starting' }) });
      handle(req, res).catch((error: unknown) => {
        console.error('local stack request failed', error);
        if (!res.headersSent)
          send(res, { statusCode: 500, body: JSON.stringify({ message: 'Internal Server Error' }) });
      });
    });
    await listen(server, options.port ?? 3000);
    stops.push(async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });
    const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

    let serverUrl = options.databaseUrl;
    let postgresPort: number | null = null;
    if (!serverUrl) {
      // Another stack (another DATA_DIR) may have the usual port; this one then takes a free one.
      postgresPort = (await isPortFree(DEFAULT_POSTGRES_PORT)) ? DEFAULT_POSTGRES_PORT : await freePort();
      const postgres = await startLocalPostgres({
        dataDir: path.join(dataDir, 'postgres'),
        port: postgresPort,
      });
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
    // Usage can be priced from the first start: the sample price book, activated when no version is active,
    // as of 35 days back, so usage events may be dated as far back as the API accepts.
    const samplePrices = JSON.parse(readFileSync(new URL('./sample-prices.json', import.meta.url), 'utf8'));
    await ensureActivePriceBook(
      db,
      samplePrices as NewPriceBook,
      {
        actorArn: auth.principal('admin').arn,
        reason: 'local stack: sample prices from local/sample-prices.json',
      },
      new Date(Date.now() - 35 * 86_400_000),
    );
    const queue = new LocalQueue(() => baseUrl, {
      visibilityTimeoutSeconds: options.visibilityTimeoutSeconds ?? 30,
      auth,
    });
    stops.push(() => queue.stop());
    const webhookQueue = new LocalQueue(() => baseUrl, {
      name: 'credits-webhook-deliveries',
      visibilityTimeoutSeconds: options.visibilityTimeoutSeconds ?? 30,
      auth,
    });
    stops.push(() => webhookQueue.stop());
    const packages = parsePackages(options.creditPackages);

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
      // The local admin principals, as ADMIN_PRINCIPALS names the admins' ARNs in AWS.
      adminPrincipals: [auth.principal('admin').arn, auth.principal('second-admin').arn],
      adminApprovalThreshold: options.adminApprovalThreshold,
      allowPromotionCodes: options.allowPromotionCodes ?? false,
      plans,
    };
    const stripe = lazyStripe({
      secretKey: config.stripeSecretKey,
      apiBase: config.stripeApiBase,
      maxNetworkRetries: 0,
    });
    const service = auth.principal('service');
    const sqs = new SQSClient({
      region: LOCAL_REGION,
      endpoint: baseUrl,
      credentials: { accessKeyId: service.accessKeyId, secretAccessKey: service.secretAccessKey },
    });
    // Outbound webhooks as in AWS, with the local queue for SQS and a key file under DATA_DIR for KMS.
    const webhooks: WebhookRuntime = {
      queue: sqsDeliveryQueue(sqs, { queueUrl: webhookQueue.mainUrl, deadLetterUrl: webhookQueue.dlqUrl }),
      cipher: localSecretCipher(path.join(dataDir, 'webhook-secrets.key')),
      retrySeconds: options.webhookRetrySeconds ?? DEFAULT_RETRY_SECONDS,
      allowLoopbackHttp: true,
    };
    const api = createApiHandler({
      db,
      config,
      stripe,
      webhooks,
      dispatchReconciliation: async (runId) => {
        void executeRun({ db, stripe: await stripe(), packages }, runId).catch((error: unknown) =>
          console.error('reconciliation failed', error),
        );
      },
    });
    const intake = createWebhookIntake({
      config: {
        QUEUE_URL: queue.mainUrl,
        STRIPE_WEBHOOK_SECRET: webhookSecret,
        STRIPE_LIVEMODE: false,
        WEBHOOK_MAX_BYTES: 256 * 1024,
      },
      sqs,
    });
    const worker = createCreditWorker({ db, packages, webhookQueue: webhooks.queue });
    queue.startPolling(async (event) => worker(event, context('credit-worker')));
    const dispatcher = createWebhookDispatcher({ db, ...webhooks });
    webhookQueue.startPolling(async (event) => dispatcher(event, context('webhook-dispatcher')));
    // EventBridge Scheduler's part: the sweeper on a timer, one run at a time.
    const sweeper = createSweeper({ db, plans, packages, webhookQueue: webhooks.queue, stripe });
    let sweeping: Promise<unknown> = Promise.resolve();
    const sweepTimer = setInterval(
      () => {
        sweeping = sweeping
          .then(() => sweeper(undefined, context('sweeper')))
          .catch((error: unknown) => console.error('sweep failed', error));
      },
      (options.sweepIntervalSeconds ?? 60) * 1000,
    );
    stops.push(async () => {
      clearInterval(sweepTimer);
      await sweeping;
    });
    const gateway = createLocalGateway(auth, {
      api: (event) => api(event, context('api')) as Promise<APIGatewayProxyStructuredResultV2>,
      'webhook-intake': (event) =>
        intake(event, context('webhook-intake')) as Promise<APIGatewayProxyStructuredResultV2>,
    } satisfies Record<string, Handler>);
    const demoPage = readFileSync(new URL('./demo/index.html', import.meta.url), 'utf8');

    /** The queue an SQS call names (QueueUrl, or SourceArn for a redrive); the crediting queue otherwise. */
    const sqsQueueOf = (body: Buffer): LocalQueue => {
      let input: { QueueUrl?: unknown; SourceArn?: unknown } = {};
      try {
        input = JSON.parse(body.toString('utf8') || '{}');
      } catch {
        // the queue answers the malformed request itself
      }
      return webhookQueue.owns(input.QueueUrl ?? input.SourceArn) ? webhookQueue : queue;
    };

    async function serve(req: IncomingMessage, res: ServerResponse) {
      const url = new URL(req.url ?? '/', baseUrl);
      const body = await readBody(req);
      if (String(req.headers['x-amz-target'] ?? '').startsWith('AmazonSQS.')) {
        return sqsQueueOf(body).handleSqsApi(req, res, body);
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
            webhookQueueUrl: webhookQueue.mainUrl,
            webhookDlqUrl: webhookQueue.dlqUrl,
            webhookDlqArn: webhookQueue.dlqArn,
            region: LOCAL_REGION,
            dataDir,
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

    handle = serve;
    record({
      url: baseUrl,
      port: (server.address() as AddressInfo).port,
      stripeUrl: emulator?.url ?? null,
      postgresPort,
    });
    return { url: baseUrl, stripeUrl: emulator?.url, databaseUrl, auth, queue, webhookQueue, emulator, stop };
  } catch (error: unknown) {
    await stop();
    throw error;
  }
}
