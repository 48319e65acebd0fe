import { en } from 'zod/locales';
import * as z from 'zod/mini';
import type { DatabaseTarget } from './db/client.js';
import { type CreditPackage, parsePackages } from './packages.js';
import { type PlanCatalog, parsePlans } from './plan-catalog.js';

// zod/mini keeps the intake bundle small (classic zod would add 60 KB), but carries no messages of its own:
// with the English locale, errors name the variable and say what is wrong.
z.config(en());

const flag = z.pipe(
  z._default(z.enum(['true', 'false']), 'false'),
  z.transform((v) => v === 'true'),
);
const text = () => z.optional(z.string().check(z.minLength(1)));
const positiveInt = (fallback: number) =>
  z._default(z.coerce.number().check(z.int(), z.positive()), fallback);

const intakeSchema = z.object({
  QUEUE_URL: z.url(),
  /** Secrets Manager secret with `{"apiKey": "...", "webhookSecrets": ["whsec_..."]}`; required in AWS. */
  STRIPE_SECRET_NAME: text(),
  /** Local runs only: comma-separated signing secrets, newest first. */
  STRIPE_WEBHOOK_SECRET: text(),
  STRIPE_LIVEMODE: flag,
  WEBHOOK_MAX_BYTES: positiveInt(256 * 1024),
});

const databaseSchema = z.object({
  /** Local runs and tests: a full connection string. */
  DATABASE_URL: text(),
  /** AWS: the RDS Proxy endpoint, reached with IAM authentication over TLS. */
  DB_HOST: text(),
  DB_PORT: positiveInt(5432),
  DB_NAME: z._default(z.string().check(z.minLength(1)), 'credits'),
  DB_USER: z._default(z.string().check(z.minLength(1)), 'postgres'),
  DB_POOL_MAX: positiveInt(5),
});

const packagesSchema = z.object({ CREDIT_PACKAGES: z.optional(z.string()) });

const list = z.pipe(
  z._default(z.string(), ''),
  z.transform((v) =>
    v
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean),
  ),
);

const stripeSchema = z.object({
  /** Secrets Manager secret with the Stripe API key (AWS); or STRIPE_SECRET_KEY for local runs. */
  STRIPE_SECRET_NAME: text(),
  STRIPE_SECRET_KEY: z.optional(z.string().check(z.regex(/^(sk|rk)_(test|live)_\w+$/))),
  /** Another Stripe API base: the local emulator. */
  STRIPE_API_BASE: z.optional(z.url()),
});

const apiSchema = z.object({
  ...stripeSchema.shape,
  CHECKOUT_SUCCESS_URL: z.url(),
  CHECKOUT_CANCEL_URL: z.url(),
  /** Frontend origins allowed to call the user routes from a browser. */
  CORS_ALLOWED_ORIGINS: list,
  /** Checkouts a user may have open (INIT, under an hour old) before POST /v1/checkout answers 429. */
  MAX_OPEN_CHECKOUTS: positiveInt(5),
  /** IAM principal ARN patterns (`*` wildcards) allowed on admin routes; none: no admin route answers. */
  ADMIN_PRINCIPALS: list,
  /** Admin grants above this many credits wait for a second admin's approval; unset: none wait. */
  ADMIN_APPROVAL_THRESHOLD: z.optional(z.coerce.number().check(z.int(), z.nonnegative())),
  /** Checkout sessions accept Stripe promotion codes. */
  ALLOW_PROMOTION_CODES: flag,
  /** JSON array of plans (allowances, caps, rate limits); unset: one plan with none. */
  PLANS: z.optional(z.string()),
});

const plansSchema = z.object({ PLANS: z.optional(z.string()) });
const webhookSchema = z.object({
  /** The webhook dispatcher's queue. */
  WEBHOOK_QUEUE_URL: z.url(),
  /** The dispatcher's DLQ: deliveries whose schedule ran out are parked there. */
  WEBHOOK_DLQ_URL: z.optional(z.url()),
  /** The KMS key that encrypts endpoints' signing secrets. */
  WEBHOOK_KMS_KEY_ID: text(),
  /** Comma-separated seconds between attempts; replaces the default schedule (about 3 days). */
  WEBHOOK_RETRY_SECONDS: text(),
});

export type IntakeConfig = z.infer<typeof intakeSchema>;
export interface DatabaseConfig {
  readonly database: DatabaseTarget;
  readonly poolMax: number;
}
export interface WorkerConfig extends DatabaseConfig {
  readonly packages: readonly CreditPackage[];
}
export interface ReconcileConfig extends WorkerConfig {
  readonly stripeSecretName?: string;
  readonly stripeSecretKey?: string;
  readonly stripeApiBase?: string;
}
export interface WebhookConfig {
  readonly queueUrl: string;
  readonly deadLetterQueueUrl?: string;
  readonly kmsKeyId?: string;
  /** The waits between attempts, in seconds; undefined: the default schedule. */
  readonly retrySeconds?: readonly number[];
}
export interface DispatcherConfig extends DatabaseConfig {
  readonly webhooks: WebhookConfig & { readonly deadLetterQueueUrl: string; readonly kmsKeyId: string };
}
export interface ApiConfig extends ReconcileConfig {
  /** Outbound webhooks (WEBHOOK_QUEUE_URL and the KMS key); unset: the webhook admin routes answer 503. */
  readonly webhooks?: WebhookConfig;
  readonly checkoutSuccessUrl: string;
  readonly checkoutCancelUrl: string;
  readonly corsAllowedOrigins: readonly string[];
  readonly maxOpenCheckouts: number;
  readonly adminPrincipals: readonly string[];
  readonly adminApprovalThreshold?: number;
  readonly allowPromotionCodes: boolean;
  readonly plans: PlanCatalog;
}
export interface SweeperConfig extends DatabaseConfig {
  readonly plans: PlanCatalog;
  readonly packages: readonly CreditPackage[];
}

/** Parses `schema` from `env`; the error names every missing or invalid variable. */
function parseEnv<T extends z.ZodMiniType>(schema: T, env: NodeJS.ProcessEnv): z.infer<T> {
  const result = schema.safeParse(env);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
    throw new Error(`invalid configuration: ${problems.join('; ')}`);
  }
  return result.data;
}

/** The webhook intake's configuration, parsed once at cold start. */
export function loadIntakeConfig(env: NodeJS.ProcessEnv = process.env): IntakeConfig {
  const config = parseEnv(intakeSchema, env);
  if (!config.STRIPE_SECRET_NAME && !config.STRIPE_WEBHOOK_SECRET) {
    throw new Error(
      'invalid configuration: STRIPE_SECRET_NAME (AWS) or STRIPE_WEBHOOK_SECRET (local) must be set',
    );
  }
  return config;
}

/** Where the database is and how many connections to open: every database-facing function's part. */
export function loadDatabaseConfig(env: NodeJS.ProcessEnv = process.env): DatabaseConfig {
  const config = parseEnv(databaseSchema, env);
  const database: DatabaseTarget | undefined = config.DATABASE_URL
    ? { url: config.DATABASE_URL }
    : config.DB_HOST
      ? {
          host: config.DB_HOST,
          port: config.DB_PORT,
          database: config.DB_NAME,
          user: config.DB_USER,
          iamAuth: true,
        }
      : undefined;
  if (!database) throw new Error('invalid configuration: DATABASE_URL (local) or DB_HOST (AWS) must be set');
  return { database, poolMax: config.DB_POOL_MAX };
}

/** The crediting worker's configuration (the database and the packs), parsed once at cold start. */
export function loadWorkerConfig(env: NodeJS.ProcessEnv = process.env): WorkerConfig {
  return {
    ...loadDatabaseConfig(env),
    packages: parsePackages(parseEnv(packagesSchema, env).CREDIT_PACKAGES),
  };
}

/** The reconciliation function's configuration: the worker's plus the Stripe API key. */
export function loadReconcileConfig(env: NodeJS.ProcessEnv = process.env): ReconcileConfig {
  const config = parseEnv(stripeSchema, env);
  if (!config.STRIPE_SECRET_NAME && !config.STRIPE_SECRET_KEY) {
    throw new Error(
      'invalid configuration: STRIPE_SECRET_NAME (AWS) or STRIPE_SECRET_KEY (local) must be set',
    );
  }
  return {
    ...loadWorkerConfig(env),
    stripeSecretName: config.STRIPE_SECRET_NAME,
    stripeSecretKey: config.STRIPE_SECRET_KEY,
    stripeApiBase: config.STRIPE_API_BASE,
  };
}

/** The api function's configuration (reconciliation's plus checkout, CORS and admins), parsed once at cold start. */
export function loadApiConfig(env: NodeJS.ProcessEnv = process.env): ApiConfig {
  const config = parseEnv(apiSchema, env);
  return {
    ...loadReconcileConfig(env),
    checkoutSuccessUrl: config.CHECKOUT_SUCCESS_URL,
    checkoutCancelUrl: config.CHECKOUT_CANCEL_URL,
    corsAllowedOrigins: config.CORS_ALLOWED_ORIGINS,
    maxOpenCheckouts: config.MAX_OPEN_CHECKOUTS,
    adminPrincipals: config.ADMIN_PRINCIPALS,
    adminApprovalThreshold: config.ADMIN_APPROVAL_THRESHOLD,
    allowPromotionCodes: config.ALLOW_PROMOTION_CODES,
    plans: parsePlans(config.PLANS),
    ...(env.WEBHOOK_QUEUE_URL && { webhooks: loadWebhookConfig(env) }),
  };
}

/**
 * WEBHOOK_RETRY_SECONDS: the waits between attempts, comma-separated whole seconds (each 0-43200, at most
 * 50). Throws naming the variable when it is not that.
 */
export function parseRetrySeconds(raw: string): number[] {
  const parts = raw.split(',').map((s) => s.trim());
  const waits = parts.map(Number);
  if (
    parts.length > 50 ||
    waits.some((w, i) => parts[i] === '' || !Number.isInteger(w) || w < 0 || w > 43_200)
  ) {
    throw new Error(
      `invalid configuration: WEBHOOK_RETRY_SECONDS: expected at most 50 comma-separated whole seconds of 0-43200, got ${JSON.stringify(raw)}`,
    );
  }
  return waits;
}

/** Outbound webhooks' part: the queue, the DLQ, the KMS key and the retry schedule. */
export function loadWebhookConfig(env: NodeJS.ProcessEnv = process.env): WebhookConfig {
  const config = parseEnv(webhookSchema, env);
  return {
    queueUrl: config.WEBHOOK_QUEUE_URL,
    deadLetterQueueUrl: config.WEBHOOK_DLQ_URL,
    kmsKeyId: config.WEBHOOK_KMS_KEY_ID,
    ...(config.WEBHOOK_RETRY_SECONDS && { retrySeconds: parseRetrySeconds(config.WEBHOOK_RETRY_SECONDS) }),
  };
}

/** The webhook dispatcher's configuration: the database, the queue and its DLQ, the KMS key, the schedule. */
export function loadDispatcherConfig(env: NodeJS.ProcessEnv = process.env): DispatcherConfig {
  const webhooks = loadWebhookConfig(env);
  const { deadLetterQueueUrl, kmsKeyId } = webhooks;
  if (!deadLetterQueueUrl || !kmsKeyId) {
    throw new Error('invalid configuration: WEBHOOK_DLQ_URL and WEBHOOK_KMS_KEY_ID must be set');
  }
  return { ...loadDatabaseConfig(env), webhooks: { ...webhooks, deadLetterQueueUrl, kmsKeyId } };
}

/**
 * The sweeper's configuration: the database, the plans (for allowances granted ahead) and the packs (an auto
 * top-up a crash left unstarted buys one).
 */
export function loadSweeperConfig(env: NodeJS.ProcessEnv = process.env): SweeperConfig {
  return {
    ...loadDatabaseConfig(env),
    plans: parsePlans(parseEnv(plansSchema, env).PLANS),
    packages: parsePackages(parseEnv(packagesSchema, env).CREDIT_PACKAGES),
  };
}
