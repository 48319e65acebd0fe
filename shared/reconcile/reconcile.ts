import type { Kysely } from 'kysely';
import type Stripe from 'stripe';
import type { Database } from '../db/schema.js';
import { applyStripeEvent } from '../events/apply-event.js';
import { checkInvariants } from '../invariants.js';
import type { CreditPackage } from '../packages.js';
import {
  listAwaitingSessions,
  listCreditedInWindow,
  listCreditedTopUpsInWindow,
} from '../payments/payments.js';
import type { StripeEvent } from '../stripe/events.js';
import { type Finding, findRun, finishRun, type ReconcileWindow, recordFinding } from './runs.js';

export { createRun, type ReconcileWindow, resolveWindow } from './runs.js';

const DAY_SECONDS = 24 * 60 * 60;
/**
 * How far before the window objects are looked at, because their state changes long after they are created:
 * a delayed payment method settles days after its session (SEPA up to 14), a refund can fail weeks later,
 * and a dispute closes months after it opened.
 */
const LOOKBACK_DAYS = { pendingPayments: 14, refunds: 30, disputes: 120 } as const;

export interface ReconcileDependencies {
  readonly db: Kysely<Database>;
  readonly stripe: Stripe;
  readonly packages: readonly CreditPackage[];
  /** Stripe requests per second at most (Stripe allows 25 in test mode, 100 live). @default 10 */
  readonly requestsPerSecond?: number;
  /** Attempts per Stripe request on 429 and 5xx. @default 5 */
  readonly maxAttempts?: number;
  /** First retry delay; doubles per attempt, with full jitter, up to 8 s. @default 500 */
  readonly retryBaseMs?: number;
}

/** What a run looked at, per kind, and how many Stripe requests it made. */
export interface RunCounts {
  sessions: number;
  paidSessions: number;
  refunds: number;
  disputes: number;
  paymentsChecked: number;
  /** Our payments awaiting credit from before the window, looked up in Stripe one by one. */
  pendingChecked: number;
  /** Auto top-up PaymentIntents in the window (ours, by their metadata). */
  topUps: number;
  stripeRequests: number;
  stripeRetries: number;
}

export interface RunSummary {
  readonly runId: string;
  readonly status: 'succeeded' | 'partial' | 'failed';
  readonly healed: number;
  readonly findings: number;
  readonly counts: RunCounts;
  readonly durationMs: number;
  readonly error: string | null;
}

/** Paces and retries Stripe requests: at most `rps` a second; 429 and 5xx retried with jittered backoff. */
function stripeCaller(deps: ReconcileDependencies, counts: RunCounts) {
  const interval = 1000 / (deps.requestsPerSecond ?? 10);
  let next = 0;
  return async function call<T>(request: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const wait = next - Date.now();
      next = Math.max(Date.now(), next) + interval;
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      counts.stripeRequests++;
      try {
        return await request();
      } catch (error: unknown) {
        const status = (error as { statusCode?: number }).statusCode ?? 0;
        const retryable = status === 429 || status >= 500 || status === 0;
        if (!retryable || attempt >= (deps.maxAttempts ?? 5)) throw error;
        counts.stripeRetries++;
        const cap = Math.min(8000, (deps.retryBaseMs ?? 500) * 2 ** (attempt - 1));
        await new Promise((resolve) => setTimeout(resolve, Math.random() * cap));
      }
    }
  };
}

/** The window extended `days` back. */
function before(window: ReconcileWindow, days: number): ReconcileWindow {
  return { start: new Date(window.start.getTime() - days * DAY_SECONDS * 1000), end: window.end };
}

/** Every object of a Stripe list created in the window, page by page through `call`. */
async function* listAll<T extends { id: string }>(
  call: <R>(request: () => Promise<R>) => Promise<R>,
  list: (params: {
    limit: number;
    created: { gte: number; lte: number };
    starting_after?: string;
  }) => Promise<Stripe.ApiList<T>>,
  window: ReconcileWindow,
): AsyncGenerator<T> {
  const created = {
    gte: Math.floor(window.start.getTime() / 1000),
    lte: Math.ceil(window.end.getTime() / 1000),
  };
  let after: string | undefined;
  for (;;) {
    const page = await call(() => list({ limit: 100, created, ...(after && { starting_after: after }) }));
    for (const item of page.data) yield item;
    if (!page.has_more || page.data.length === 0) return;
    after = page.data.at(-1)!.id;
  }
}

/** A synthetic event carrying an object's current state, keyed on the object (and its state) for idempotency. */
function syntheticEvent(type: string, object: { id: string }, state = ''): StripeEvent {
  return {
    id: `evt_recon_${object.id}${state ? `_${state}` : ''}`.replace(/\W/g, '_'),
    object: 'event',
    type,
    livemode: false,
    created: Math.floor(Date.now() / 1000),
    data: { object: object as unknown as Record<string, unknown> },
  };
}

/**
 * Executes an open run: lists paid checkout sessions, refunds and disputes in the window from Stripe, heals
 * what the ledger misses through the worker's own code (applyStripeEvent, keyed on the Stripe object),
 * records what cannot be healed as findings, runs the invariant checker, and closes the run as succeeded,
 * partial (Stripe failed midway; a rerun finishes) or failed.
 */
export async function executeRun(deps: ReconcileDependencies, runId: string): Promise<RunSummary> {
  const { db } = deps;
  const started = Date.now();
  const run = await findRun(db, runId);
  if (!run) throw new Error(`no reconciliation run ${runId}`);
  const window = { start: run.window_start, end: run.window_end };
  const counts: RunCounts = {
    sessions: 0,
    paidSessions: 0,
    refunds: 0,
    disputes: 0,
    paymentsChecked: 0,
    pendingChecked: 0,
    topUps: 0,
    stripeRequests: 0,
    stripeRetries: 0,
  };
  const call = stripeCaller(deps, counts);
  let healed = 0;
  let findings = 0;
  let processed = 0;
  const record = async (finding: Finding) => {
    findings++;
    await recordFinding(db, runId, finding);
  };
  const heal = async (event: StripeEvent, objectId: string) => {
    processed++;
    const result = await applyStripeEvent(db, event, { packages: deps.packages, replay: true });
    if (result.outcome === 'parked') {
      await record({
        kind: result.reason ?? 'parked',
        stripeObjectId: objectId,
        details: { eventId: event.id },
      });
    } else if ((result.entriesWritten ?? 0) > 0) {
      healed++;
    }
  };

  /** Stripe's object, or undefined when it has none by that id (another account or mode, a hand-made row). */
  const retrieve = <T>(request: () => Promise<T>) =>
    call(request).catch((failure: unknown) => {
      if ((failure as { statusCode?: number }).statusCode === 404) return undefined;
      throw failure;
    });
  const retrieveSession = (sessionId: string) =>
    retrieve(() => deps.stripe.checkout.sessions.retrieve(sessionId));

  let status: RunSummary['status'] = 'succeeded';
  let error: string | null = null;
  try {
    const paid = new Set<string>();
    /** A paid session: credited through the worker's code if the ledger missed it. */
    const healPaid = async (session: Stripe.Checkout.Session) => {
      counts.paidSessions++;
      paid.add(session.id);
      await heal(syntheticEvent('checkout.session.completed', session), session.id);
    };
    for await (const session of listAll(
      call,
      (p) => deps.stripe.checkout.sessions.list({ ...p, status: 'complete' }),
      window,
    )) {
      counts.sessions++;
      if (session.payment_status === 'paid') await healPaid(session);
    }
    // Our payments still awaiting credit whose sessions were created before the window: a delayed method
    // may have settled since, and its webhook may be the one that was lost.
    const awaiting = await listAwaitingSessions(
      db,
      before(window, LOOKBACK_DAYS.pendingPayments).start,
      window.start,
    );
    for (const sessionId of awaiting) {
      counts.pendingChecked++;
      const session = await retrieveSession(sessionId);
      if (session?.status === 'expired') {
        // Its expiry webhook was lost too: mark it EXPIRED, so it is not looked up again.
        await heal(syntheticEvent('checkout.session.expired', session, 'expired'), session.id);
        continue;
      }
      if (session?.payment_status === 'paid' && !paid.has(session.id)) await healPaid(session);
    }
    for await (const refund of listAll(
      call,
      (p) => deps.stripe.refunds.list(p),
      before(window, LOOKBACK_DAYS.refunds),
    )) {
      counts.refunds++;
      await heal(syntheticEvent('refund.updated', refund, refund.status ?? ''), refund.id);
    }
    for await (const dispute of listAll(
      call,
      (p) => deps.stripe.disputes.list(p),
      before(window, LOOKBACK_DAYS.disputes),
    )) {
      counts.disputes++;
      const type =
        dispute.status === 'won' || dispute.status === 'lost'
          ? 'charge.dispute.closed'
          : 'charge.dispute.created';
      await heal(syntheticEvent(type, dispute, dispute.status), dispute.id);
    }
    // Off-session top-ups have no checkout session: their PaymentIntents say what became of them. A lost
    // payment_intent.succeeded would leave a charged card uncredited; a lost payment_failed, a top-up in
    // flight for ever (and no other top-up started).
    const topUpsPaid = new Set<string>();
    for await (const intent of listAll(call, (p) => deps.stripe.paymentIntents.list(p), window)) {
      if (intent.metadata?.kind !== 'auto_topup') continue;
      counts.topUps++;
      if (intent.status === 'succeeded') {
        topUpsPaid.add(intent.id);
        await heal(syntheticEvent('payment_intent.succeeded', intent), intent.id);
      } else if (intent.status === 'requires_payment_method' && intent.last_payment_error) {
        await heal(syntheticEvent('payment_intent.payment_failed', intent, 'failed'), intent.id);
      }
    }
    for (const topUp of await listCreditedTopUpsInWindow(db, window.start, window.end)) {
      counts.paymentsChecked++;
      const intentId = topUp.stripe_payment_intent_id!;
      if (topUpsPaid.has(intentId)) continue;
      const intent = await retrieve(() => deps.stripe.paymentIntents.retrieve(intentId));
      if (intent?.status !== 'succeeded') {
        await record({
          kind: 'credited_not_paid',
          stripeObjectId: intentId,
          paymentId: topUp.id,
          accountId: topUp.account_id,
          details: { stripeStatus: intent?.status ?? 'no such payment intent' },
        });
      }
    }
    // Credited here but not paid in Stripe.
    const credited = await listCreditedInWindow(db, window.start, window.end);
    for (const payment of credited) {
      counts.paymentsChecked++;
      const sessionId = payment.stripe_checkout_session_id!;
      if (paid.has(sessionId)) continue;
      const session = await retrieveSession(sessionId);
      if (session?.payment_status !== 'paid') {
        await record({
          kind: 'credited_not_paid',
          stripeObjectId: sessionId,
          paymentId: payment.id,
          accountId: payment.account_id,
          details: session
            ? { stripeStatus: session.status, paymentStatus: session.payment_status }
            : { stripeStatus: 'no such checkout session' },
        });
      }
    }
    const report = await checkInvariants(db);
    for (const violation of report.violations) {
      await record({
        kind: 'invariant_violation',
        paymentId: violation.paymentId,
        accountId: violation.accountId,
        details: { invariant: violation.invariant, rule: violation.rule, detail: violation.detail },
      });
    }
  } catch (failure: unknown) {
    status = processed > 0 ? 'partial' : 'failed';
    const kind = (failure as { type?: string }).type ?? (failure instanceof Error ? failure.name : 'Error');
    error = `${kind}: ${failure instanceof Error ? failure.message : String(failure)}`.slice(0, 1000);
  }
  await finishRun(db, runId, { status, counts, healed, findings, error });
  return { runId, status, healed, findings, counts, durationMs: Date.now() - started, error };
}
