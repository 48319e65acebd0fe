import type { Kysely } from 'kysely';
import type Stripe from 'stripe';
import type { z } from 'zod';
import type { ApiConfig } from '../config.js';
import type { Database } from '../db/schema.js';
import type { RouteKey } from '../http/routes.js';
import { chargeTopUp } from '../topup/topup.js';
import { flushWebhooks } from '../webhooks/outbox.js';
import type { WebhookRuntime } from '../webhooks/runtime.js';

/** Who is calling, from the authorizer context only: never from the body, query or path. */
export type Caller =
  | { readonly kind: 'anonymous' }
  | { readonly kind: 'user'; readonly userId: string }
  | { readonly kind: 'iam'; readonly arn: string };

export interface ApiDependencies {
  readonly db: Kysely<Database>;
  readonly config: ApiConfig;
  /** The Stripe client, built on first use (its key may come from Secrets Manager). */
  readonly stripe: () => Promise<Stripe>;
  /** Starts executing an open reconciliation run without waiting for it (AWS: async Lambda invoke). */
  readonly dispatchReconciliation: (runId: string) => Promise<void>;
  /** Outbound webhooks' queue and secret cipher; without it the webhook admin routes answer 503. */
  readonly webhooks?: WebhookRuntime;
  /** The time expiry and limits are judged at; tests move it. @default the system clock */
  readonly clock?: () => Date;
  /** Told of a failure after the answer is settled (an event left for the sweeper to send). */
  readonly reportError?: (what: string, error: unknown) => void;
}

/**
 * The one step after a debit's commit: charges the auto top-ups it started (`chargeTopUp`: the payment id is
 * Stripe's idempotency key), then sends the events it and the charges wrote. A failure is reported, never
 * answered: the change is committed, the sweeper charges a top-up left uncharged after a minute and sends
 * whatever events are left within a minute.
 */
export async function afterDebitCommit(
  deps: ApiDependencies,
  written: {
    readonly emitted: boolean;
    readonly topUpPaymentIds?: readonly string[];
    readonly topUpFailures?: readonly unknown[];
  },
) {
  for (const error of written.topUpFailures ?? []) {
    deps.reportError?.('auto top-up not started after its debit (the next debit starts it)', error);
  }
  const topUps = written.topUpPaymentIds ?? [];
  for (const paymentId of topUps) {
    try {
      const charged = await chargeTopUp(deps.db, await deps.stripe(), paymentId);
      if (charged.outcome === 'retry') {
        deps.reportError?.('auto top-up left for the sweeper to charge', new Error(charged.reason));
      }
    } catch (error: unknown) {
      deps.reportError?.('auto top-up left for the sweeper to charge', error);
    }
  }
  if ((!written.emitted && topUps.length === 0) || !deps.webhooks) return;
  try {
    await flushWebhooks(deps.db, deps.webhooks.queue, nowOf(deps));
  } catch (error: unknown) {
    deps.reportError?.('webhook events left for the sweeper', error);
  }
}

/** The admin behind an IAM call, with the reason they gave, as audit rows record them. */
export const adminActor = (caller: Caller, reason: string) => ({
  actorArn: caller.kind === 'iam' ? caller.arn : '',
  reason,
});

/** The dependencies' clock, or the system's. */
export const nowOf = (deps: ApiDependencies): Date => deps.clock?.() ?? new Date();

export interface ApiRequest<P, Q, B> {
  readonly params: P;
  readonly query: Q;
  readonly body: B;
  readonly headers: Readonly<Record<string, string | undefined>>;
  readonly caller: Caller;
}

export interface ApiResponse {
  readonly status: number;
  readonly body?: unknown;
  readonly headers?: Record<string, string>;
}

type Schema = z.ZodType;
type Out<S> = S extends z.ZodType ? z.infer<S> : undefined;

/** One endpoint: its route, its schemas (the OpenAPI document is generated from them) and its handler. */
export interface Endpoint<
  P extends Schema | undefined = Schema | undefined,
  Q extends Schema | undefined = Schema | undefined,
  B extends Schema | undefined = Schema | undefined,
> {
  readonly route: RouteKey;
  readonly summary: string;
  readonly params?: P;
  readonly query?: Q;
  readonly body?: B;
  /** Request headers the endpoint reads, documented as parameters. */
  readonly headers?: Record<string, { readonly required: boolean; readonly description: string }>;
  /** Success responses by status. */
  readonly responses: Record<number, { readonly description: string; readonly schema: Schema }>;
  /** Problem responses (application/problem+json) the endpoint may answer, by status. */
  readonly errors: Record<number, string>;
  handle(request: ApiRequest<Out<P>, Out<Q>, Out<B>>, deps: ApiDependencies): Promise<ApiResponse>;
}

/** Declares an endpoint with its types inferred from its schemas. */
export function defineEndpoint<
  P extends Schema | undefined = undefined,
  Q extends Schema | undefined = undefined,
  B extends Schema | undefined = undefined,
>(endpoint: Endpoint<P, Q, B>): Endpoint {
  return endpoint as unknown as Endpoint;
}

export const ok = (body: unknown, status = 200, headers?: Record<string, string>): ApiResponse => ({
  status,
  body,
  ...(headers && { headers }),
});
