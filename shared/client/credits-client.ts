import { randomUUID } from 'node:crypto';
import { defaultProvider } from '@aws-sdk/credential-provider-node';
import { Hash } from '@smithy/hash-node';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';

/**
 * The typed client for the app's backend: every service route of the credits API, SigV4-signed (service
 * `execute-api`) with the default AWS credential chain, and safe to retry. A request that fails on the
 * network or with 429/502/503/504 is sent again with the same body and the same idempotency key, so a
 * retry replays the first answer instead of spending twice.
 *
 *   const credits = createCreditsClient({ endpoint: 'https://abc.execute-api.eu-west-1.amazonaws.com' });
 *   const hold = await credits.holds.create('user-1', { sku: 'openai/gpt-4o', usage: estimate });
 *   const answer = await callTheModel();
 *   await credits.holds.capture(hold.holdId, { usage: answer.usage });
 */

export interface Credentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

export interface CreditsClientOptions {
  /** The API's base URL (the HTTP API's invoke URL, or the local stack's). */
  readonly endpoint: string | URL;
  /** @default AWS_REGION, else us-east-1 */
  readonly region?: string;
  /** @default the default AWS credential chain (environment, SSO, profile, container, instance role) */
  readonly credentials?: Credentials | (() => Promise<Credentials>);
  /** Attempts per request, the first included. @default 3 */
  readonly maxAttempts?: number;
  /** First retry delay in ms, doubled per attempt, with full jitter. @default 100 */
  readonly retryBaseMs?: number;
  /** @default the global fetch */
  readonly fetch?: typeof fetch;
}

/** A refusal by the API: its status and problem+json body (`code`, `detail`, and the rest). */
export class CreditsApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly body: Record<string, unknown>,
  ) {
    super(`${status} ${code}: ${String(body.detail ?? body.message ?? '')}`);
    this.name = 'CreditsApiError';
  }
}

export type Usage = Partial<
  Record<
    'inputTokens' | 'cacheReadTokens' | 'cacheWriteTokens' | 'outputTokens' | 'reasoningTokens' | 'units',
    number
  >
>;
type Metadata = Record<string, string | number | boolean | null>;

export interface SpendResult {
  readonly entryId: number;
  readonly amount: number;
  readonly balance: number;
  readonly createdAt: string;
  readonly replayed: boolean;
}
export interface Quote {
  readonly sku: string;
  readonly provider: string | null;
  readonly credits: number;
  readonly exact: string;
  readonly priceVersion: string;
  readonly breakdown: ReadonlyArray<{ pool: string; quantity: number; rate: string; credits: string }>;
}
export interface HoldCreated {
  readonly holdId: string;
  readonly credits: number;
  readonly status: 'active' | 'captured' | 'voided' | 'expired';
  readonly expiresAt: string;
  readonly priceVersion: string | null;
  readonly balance: number;
  readonly available: number;
}
export interface HoldSettlement {
  readonly holdId: string;
  readonly status: 'active' | 'captured' | 'voided' | 'expired';
  readonly credits: number;
  readonly released: number;
  readonly shortfall: number;
  readonly expired: boolean;
  readonly balance: number;
  readonly available: number;
}
export interface UsageEvent {
  readonly eventId: string;
  readonly userId: string;
  readonly sku?: string;
  readonly usage?: Usage;
  readonly credits?: number;
  readonly occurredAt?: string;
  readonly metadata?: Metadata;
}
export interface UsageResult {
  readonly eventId: string;
  readonly status: 'applied' | 'duplicate' | 'rejected';
  readonly code?: string;
  readonly message?: string;
  readonly credits?: number;
  readonly balance?: number;
}

const RETRIED_STATUSES = new Set([429, 502, 503, 504]);
const Sha256 = Hash.bind(null, 'sha256');

/** SigV4 headers for a request to the API (service `execute-api`), the body's hash included. */
export async function signRequest(
  url: URL,
  init: { method: string; body?: string; headers?: Record<string, string> },
  credentials: Credentials,
  region: string,
): Promise<Record<string, string>> {
  const signer = new SignatureV4({ credentials, region, service: 'execute-api', sha256: Sha256 });
  const query: Record<string, string[]> = {};
  for (const [key, value] of url.searchParams) query[key] = [...(query[key] ?? []), value];
  const signed = await signer.sign(
    new HttpRequest({
      method: init.method,
      protocol: url.protocol,
      hostname: url.hostname,
      ...(url.port && { port: Number(url.port) }),
      path: url.pathname,
      query,
      headers: { host: url.host, ...init.headers },
      body: init.body,
    }),
  );
  return signed.headers as Record<string, string>;
}

export function createCreditsClient(options: CreditsClientOptions) {
  const region = options.region ?? process.env.AWS_REGION ?? 'us-east-1';
  const provide =
    typeof options.credentials === 'function'
      ? options.credentials
      : options.credentials
        ? async () => options.credentials as Credentials
        : defaultProvider();
  const send = options.fetch ?? fetch;
  const attempts = options.maxAttempts ?? 3;
  const base = options.retryBaseMs ?? 100;

  /** One API call, signed, retried with the same body (and idempotency key) on what is worth retrying. */
  async function request<T>(
    method: 'GET' | 'POST',
    path: string,
    body?: unknown,
    idempotencyKey?: string,
  ): Promise<T> {
    const url = new URL(path, options.endpoint);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = {
      ...(payload !== undefined && { 'content-type': 'application/json' }),
      ...(idempotencyKey && { 'idempotency-key': idempotencyKey }),
    };
    for (let attempt = 1; ; attempt++) {
      let response: Response;
      try {
        const signed = await signRequest(url, { method, body: payload, headers }, await provide(), region);
        response = await send(url, { method, headers: signed, body: payload });
      } catch (error: unknown) {
        if (attempt >= attempts) throw error;
        await pause(attempt);
        continue;
      }
      if (RETRIED_STATUSES.has(response.status) && attempt < attempts) {
        await pause(attempt);
        continue;
      }
      const text = await response.text();
      const parsed = (text ? JSON.parse(text) : {}) as Record<string, unknown>;
      if (!response.ok) {
        throw new CreditsApiError(response.status, String(parsed.code ?? parsed.message ?? 'error'), parsed);
      }
      return parsed as T;
    }
  }

  const pause = (attempt: number) =>
    new Promise((resolve) => setTimeout(resolve, Math.random() * base * 2 ** (attempt - 1)));
  const path = (...parts: string[]) => `/${parts.map(encodeURIComponent).join('/')}`;
  const key = (given?: string) => given ?? randomUUID();

  return {
    request,
    /** Spends credits; the key (generated when not given) is reused by the client's own retries. */
    spend: (
      userId: string,
      body: { amount: number; description?: string; metadata?: Metadata },
      opts: { idempotencyKey?: string } = {},
    ) =>
      request<SpendResult>('POST', `${path('v1', 'accounts', userId)}/spend`, body, key(opts.idempotencyKey)),
    /** What a usage of a SKU costs at the active prices; writes nothing. */
    quote: (body: { sku: string; usage: Usage }) => request<Quote>('POST', '/v1/quotes', body),
    holds: {
      create: (
        userId: string,
        body: ({ credits: number } | { sku: string; usage: Usage }) & {
          ttlSeconds?: number;
          description?: string;
          metadata?: Metadata;
        },
        opts: { idempotencyKey?: string } = {},
      ) =>
        request<HoldCreated>(
          'POST',
          `${path('v1', 'accounts', userId)}/holds`,
          body,
          key(opts.idempotencyKey),
        ),
      get: (holdId: string) => request<Record<string, unknown>>('GET', path('v1', 'holds', holdId)),
      capture: (holdId: string, body: { credits: number } | { usage: Usage }) =>
        request<HoldSettlement>('POST', `${path('v1', 'holds', holdId)}/capture`, body),
      void: (holdId: string) => request<HoldSettlement>('POST', `${path('v1', 'holds', holdId)}/void`),
    },
    usage: {
      /** Records up to 500 events; each answered on its own (idempotent per account and event id). */
      record: (events: readonly UsageEvent[]) =>
        request<{ results: UsageResult[] }>('POST', '/v1/usage', { events }),
    },
  };
}

export type CreditsClient = ReturnType<typeof createCreditsClient>;
