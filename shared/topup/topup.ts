import { type Kysely, sql } from 'kysely';
import type Stripe from 'stripe';
import { heldCredits, inAccountTransaction } from '../accounts/accounts.js';
import { lockKey, type Trx } from '../db/locks.js';
import type { Account, Database, Payment } from '../db/schema.js';
import type { CreditPackage } from '../packages.js';
import {
  attachPaymentIntent,
  closeUncredited,
  createTopUpPayment,
  isCredited,
} from '../payments/payments.js';
import { readAutoTopUpSettings, recordTopUpFailed } from '../topup-settings/settings.js';

/**
 * What an off-session top-up came to, for the caller to act on (outbound `auto_topup.*` events, the decline
 * count). `succeeded`: Stripe charged the card; the credits arrive through the usual webhook pipeline
 * (`payment_intent.succeeded`), once. `failed` (a decline) and `requires_action` (the bank wants the customer
 * to authenticate, which an off-session payment cannot do): the payment is FAILED with Stripe's code and
 * nothing is credited. `retry`: Stripe did not answer; the payment stays INIT and `chargeTopUp` with the same
 * payment id replays the same request (same idempotency key), so the card is never charged twice.
 * `not_started`: no payment was created.
 */
export type TopUpOutcome =
  | {
      readonly outcome: 'succeeded';
      readonly paymentId: string;
      readonly paymentIntentId: string;
      readonly credits: number;
    }
  | { readonly outcome: 'processing'; readonly paymentId: string; readonly paymentIntentId: string }
  | {
      readonly outcome: 'failed' | 'requires_action';
      readonly paymentId: string;
      readonly paymentIntentId: string | null;
      /** Stripe's error code: card_declined, authentication_required, expired_card... */
      readonly code: string;
      readonly declineCode: string | null;
      readonly message: string;
    }
  | { readonly outcome: 'retry'; readonly paymentId: string; readonly reason: string }
  | { readonly outcome: 'not_started'; readonly reason: 'no_saved_card' | 'account_frozen' };

/** An account's saved card, or why it cannot be charged without its owner. */
function chargeableCard(account: Account) {
  if (account.status === 'frozen') return 'account_frozen' as const;
  if (!account.stripe_customer_id || !account.stripe_payment_method_id) return 'no_saved_card' as const;
  return { customer: account.stripe_customer_id, paymentMethod: account.stripe_payment_method_id };
}

/**
 * The top-up's payment (INIT, kind auto_topup) in the caller's transaction, which holds the account lock (the
 * place for guards such as one top-up in flight); charge it with `chargeTopUp` after commit. Returns the
 * reason instead when the account has no saved card or is frozen (nothing written).
 */
export async function createTopUp(
  trx: Trx,
  account: Account,
  pack: CreditPackage,
): Promise<Payment | 'no_saved_card' | 'account_frozen'> {
  const card = chargeableCard(account);
  if (typeof card === 'string') return card;
  return createTopUpPayment(trx, account, pack);
}

/** Creates the top-up's payment and charges the saved card off-session: `createTopUp` then `chargeTopUp`. */
export async function startTopUp(
  db: Kysely<Database>,
  stripe: Stripe,
  accountId: string,
  pack: CreditPackage,
): Promise<TopUpOutcome> {
  const created = await inAccountTransaction(db, accountId, (trx, account) =>
    createTopUp(trx, account, pack),
  );
  if (typeof created === 'string') return { outcome: 'not_started', reason: created };
  return chargeTopUp(db, stripe, created.id);
}

interface StripeErrorLike {
  readonly type?: string;
  readonly code?: string;
  readonly decline_code?: string;
  readonly message?: string;
  readonly payment_intent?: { readonly id?: string };
}

/**
 * Charges a top-up payment on the account's saved card: an off-session, confirmed PaymentIntent with the
 * payment id as its Stripe idempotency key and metadata naming the payment, the user and the pack. Never
 * holds a database transaction open while Stripe answers. Safe to call again for the same payment: Stripe
 * replays its answer, and a payment already settled answers from its row.
 */
export async function chargeTopUp(
  db: Kysely<Database>,
  stripe: Stripe,
  paymentId: string,
): Promise<TopUpOutcome> {
  const row = await db
    .selectFrom('payments')
    .innerJoin('accounts', 'accounts.id', 'payments.account_id')
    .selectAll('payments')
    .select([
      'accounts.external_user_id',
      'accounts.stripe_customer_id',
      'accounts.stripe_payment_method_id',
      'accounts.status as account_status',
    ])
    .where('payments.id', '=', paymentId)
    .executeTakeFirst();
  if (row?.kind !== 'auto_topup') throw new Error(`payment ${paymentId} is not an auto top-up`);
  const settled = settledOutcome(row);
  if (settled) return settled;
  if (row.account_status === 'frozen') {
    await recordFailure(db, row.id, null, { code: 'account_frozen', message: 'the account is frozen' });
    return { outcome: 'not_started', reason: 'account_frozen' };
  }
  if (!row.stripe_customer_id || !row.stripe_payment_method_id) {
    await recordFailure(db, row.id, null, {
      code: 'no_saved_card',
      message: 'the account has no saved card',
    });
    return { outcome: 'not_started', reason: 'no_saved_card' };
  }
  let intent: Stripe.PaymentIntent;
  try {
    intent = await stripe.paymentIntents.create(
      {
        amount: row.amount_total,
        currency: row.currency,
        customer: row.stripe_customer_id,
        payment_method: row.stripe_payment_method_id,
        off_session: true,
        confirm: true,
        metadata: {
          payment_id: row.id,
          user_id: row.external_user_id ?? '',
          package_id: row.package_id,
          kind: 'auto_topup',
        },
      },
      { idempotencyKey: row.id },
    );
  } catch (error: unknown) {
    return failedOutcome(db, row, error);
  }
  await attachPaymentIntent(db, row.id, intent.id);
  if (intent.status === 'succeeded') {
    return { outcome: 'succeeded', paymentId: row.id, paymentIntentId: intent.id, credits: row.credits };
  }
  if (intent.status === 'processing') {
    return { outcome: 'processing', paymentId: row.id, paymentIntentId: intent.id };
  }
  // Off-session, Stripe fails an intent that needs the customer rather than waiting for them; any other
  // state cannot complete without them either.
  const failure = {
    code: intent.status === 'requires_action' ? 'authentication_required' : `intent_${intent.status}`,
    message: `the PaymentIntent is ${intent.status}`,
  };
  await recordFailure(db, row.id, intent.id, failure);
  return {
    outcome: intent.status === 'requires_action' ? 'requires_action' : 'failed',
    paymentId: row.id,
    paymentIntentId: intent.id,
    code: failure.code,
    declineCode: null,
    message: failure.message,
  };
}

/** A payment past INIT answers from its row (a replayed call). */
function settledOutcome(payment: Payment): TopUpOutcome | undefined {
  if (payment.status === 'INIT') return undefined;
  if (isCredited(payment.status) || payment.status === 'PAID') {
    return {
      outcome: 'succeeded',
      paymentId: payment.id,
      paymentIntentId: payment.stripe_payment_intent_id ?? '',
      credits: payment.credits,
    };
  }
  const code = payment.failure_code ?? 'payment_failed';
  return {
    outcome: code === 'authentication_required' ? 'requires_action' : 'failed',
    paymentId: payment.id,
    paymentIntentId: payment.stripe_payment_intent_id,
    code,
    declineCode: null,
    message: payment.failure_message ?? `the payment is ${payment.status}`,
  };
}

/**
 * Stripe's refusal as an outcome. Card errors (a decline, authentication required) and invalid requests
 * (the saved card was detached, the customer deleted) can never succeed as asked: the payment is FAILED
 * with Stripe's code. Anything else (no answer, 5xx, rate limit) may be retried with the same key.
 */
async function failedOutcome(db: Kysely<Database>, payment: Payment, error: unknown): Promise<TopUpOutcome> {
  const stripeError = (error ?? {}) as StripeErrorLike;
  const final =
    stripeError.type === 'StripeCardError' ||
    stripeError.type === 'StripeInvalidRequestError' ||
    stripeError.type === 'StripeIdempotencyError';
  if (!final) {
    return {
      outcome: 'retry',
      paymentId: payment.id,
      reason: stripeError.type ?? (error instanceof Error ? error.name : 'unknown'),
    };
  }
  const code =
    stripeError.code ??
    (stripeError.type === 'StripeIdempotencyError' ? 'idempotency_error' : 'invalid_request');
  const message = stripeError.message ?? code;
  const intentId = stripeError.payment_intent?.id ?? null;
  await recordFailure(db, payment.id, intentId, { code, message });
  return {
    outcome: code === 'authentication_required' ? 'requires_action' : 'failed',
    paymentId: payment.id,
    paymentIntentId: intentId,
    code,
    declineCode: stripeError.decline_code ?? null,
    message,
  };
}

/** FAILED with Stripe's reason, under the intent's payment lock (the one its webhooks take). */
async function recordFailure(
  db: Kysely<Database>,
  paymentId: string,
  intentId: string | null,
  failure: { readonly code: string; readonly message: string },
): Promise<void> {
  if (intentId) await attachPaymentIntent(db, paymentId, intentId);
  await db.transaction().execute(async (trx) => {
    await lockKey(trx, 'payment', intentId ?? paymentId);
    if (await closeUncredited(trx, { id: paymentId }, 'FAILED', failure)) {
      await recordTopUpFailed(trx, paymentId, failure);
    }
  });
}

/** A top-up in flight: being charged or charged, and neither credited, failed nor expired yet. */
const IN_FLIGHT = ['INIT', 'PAID'] as const;

/** The UTC month `maxPerMonth` counts in. */
const monthStartOf = (now: Date) => new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));

/**
 * The auto top-up trigger, in a debit's transaction after its writes (the account lock held, so at most one
 * debit at a time gets here per account): when `availableAfter` is below the account's threshold, auto
 * top-up is on, no top-up is in flight, fewer than `maxPerMonth` were made this UTC month (failed ones
 * excepted), the pack is still on sale, the account is not frozen and has a saved card, it creates the
 * top-up's payment (INIT) and returns it, for the caller to charge with `chargeTopUp` after commit.
 * Returns undefined otherwise, having written nothing.
 */
export async function maybeTopUp(
  trx: Trx,
  account: Account,
  availableAfter: number,
  packages: readonly CreditPackage[],
  now: Date,
): Promise<Payment | undefined> {
  // The locked row says whether there is a card to charge: most debits stop here, without a query.
  if (typeof chargeableCard(account) === 'string') return undefined;
  const settings = await readAutoTopUpSettings(trx, account.id);
  if (!settings?.enabled || availableAfter >= settings.thresholdCredits) return undefined;
  const pack = packages.find((p) => p.id === settings.packageId);
  if (!pack) return undefined;
  const monthStart = monthStartOf(now);
  const recent = await trx
    .selectFrom('payments')
    .select([
      sql<string>`count(*) FILTER (WHERE status IN ('INIT', 'PAID'))`.as('in_flight'),
      sql<string>`count(*) FILTER (WHERE created_at >= ${monthStart} AND status NOT IN ('FAILED', 'EXPIRED'))`.as(
        'this_month',
      ),
    ])
    .where('account_id', '=', account.id)
    .where('kind', '=', 'auto_topup')
    .where((eb) => eb.or([eb('status', 'in', IN_FLIGHT), eb('created_at', '>=', monthStart)]))
    .executeTakeFirstOrThrow();
  if (Number(recent.in_flight) > 0 || Number(recent.this_month) >= settings.maxPerMonth) return undefined;
  const created = await createTopUp(trx, account, pack);
  return typeof created === 'string' ? undefined : created;
}

/**
 * The sweeper's safety net for the step after a debit: a debit commits, then its top-up check runs in a
 * transaction of its own, and a crash between the two leaves the account below its threshold with no top-up
 * (for good, if that debit was the last the balance allowed). Candidates: auto top-up on, a saved card, not
 * frozen, `available` below the threshold now, and the account's newest entry or active hold a use of credits
 * (a spend, capture or usage event; a hold's creation, which writes no entry) from the last day and newer
 * than its newest top-up. A clawback, expiry or grant since then starts none. Accounts whose pack is no longer
 * on sale or whose top-ups this month reached `maxPerMonth` are left out here, as maybeTopUp would refuse them,
 * so they never take the places of others under `limit`.
 * `maybeTopUp` decides under the lock, as after a debit. Returns the payments it created (INIT; the next
 * sweep charges them: `chargeUnchargedTopUps`).
 */
export async function startMissedTopUps(
  db: Kysely<Database>,
  packages: readonly CreditPackage[],
  now: Date,
  limit = 50,
): Promise<string[]> {
  const { rows } = await sql<{ account_id: string }>`
    SELECT s.account_id FROM auto_topup_settings s JOIN accounts a ON a.id = s.account_id
    CROSS JOIN LATERAL (SELECT kind, created_at FROM (
        (SELECT kind, created_at FROM ledger_entries e WHERE e.account_id = a.id ORDER BY e.id DESC LIMIT 1)
        UNION ALL
        (SELECT 'hold', max(h.created_at) FROM holds h WHERE h.account_id = a.id AND h.status = 'active')
      ) AS uses ORDER BY created_at DESC NULLS LAST LIMIT 1) AS newest
    WHERE s.enabled AND a.status = 'active' AND a.stripe_payment_method_id IS NOT NULL
      AND newest.kind IN ('spend', 'hold_capture', 'usage', 'hold')
      AND newest.created_at > ${new Date(now.getTime() - 86_400_000)}
      AND newest.created_at > coalesce((SELECT max(p.created_at) FROM payments p
                                        WHERE p.account_id = a.id AND p.kind = 'auto_topup'), '-infinity')
      AND a.balance - coalesce((SELECT sum(h.credits) FROM holds h WHERE h.account_id = a.id
                                AND h.status = 'active' AND h.expires_at > ${now}), 0) < s.threshold_credits
      -- What maybeTopUp would refuse anyway, so those accounts never crowd out the others under the limit.
      AND s.package_id = ANY(${packages.map((p) => p.id)}::text[])
      AND (SELECT count(*) FROM payments p WHERE p.account_id = a.id AND p.kind = 'auto_topup'
             AND p.created_at >= ${monthStartOf(now)} AND p.status NOT IN ('FAILED', 'EXPIRED')) < s.max_per_month
    ORDER BY newest.created_at DESC
    LIMIT ${limit}`.execute(db);
  const started: string[] = [];
  for (const { account_id: accountId } of rows) {
    const payment = await inAccountTransaction(db, accountId, async (trx, account) =>
      maybeTopUp(trx, account, account.balance - (await heldCredits(trx, account.id, now)), packages, now),
    );
    if (payment) started.push(payment.id);
  }
  return started;
}

/**
 * The sweeper's safety net: charges top-ups left INIT with no PaymentIntent for more than `graceMs` (a crash
 * between the debit's commit and its charge, or Stripe not answering), with the same idempotency key, so a
 * card is never charged twice. Only those younger than a day: Stripe keeps idempotency keys 24 hours.
 * Returns what each charge came to.
 */
export async function chargeUnchargedTopUps(
  db: Kysely<Database>,
  stripe: Stripe,
  now: Date,
  options: { readonly graceMs?: number; readonly limit?: number } = {},
): Promise<TopUpOutcome[]> {
  const graceMs = options.graceMs ?? 60_000;
  const due = await db
    .selectFrom('payments')
    .select('id')
    .where('kind', '=', 'auto_topup')
    .where('status', '=', 'INIT')
    .where('stripe_payment_intent_id', 'is', null)
    .where('created_at', '<', new Date(now.getTime() - graceMs))
    .where('created_at', '>', new Date(now.getTime() - UNCHARGED_MAX_AGE_MS))
    .orderBy('created_at')
    .limit(options.limit ?? 50)
    .execute();
  const outcomes: TopUpOutcome[] = [];
  for (const { id } of due) outcomes.push(await chargeTopUp(db, stripe, id));
  // Past Stripe's idempotency window a retry could charge twice: one never charged in that time is closed
  // FAILED (`not_charged`, auto_topup.failed), so it stops blocking the account's next top-up. Reconciliation
  // reports it (`paid_after_close`) if Stripe did charge it after all.
  const stale = await db
    .selectFrom('payments')
    .select('id')
    .where('kind', '=', 'auto_topup')
    .where('status', '=', 'INIT')
    .where('stripe_payment_intent_id', 'is', null)
    .where('created_at', '<=', new Date(now.getTime() - UNCHARGED_MAX_AGE_MS))
    .limit(options.limit ?? 50)
    .execute();
  for (const { id } of stale) {
    await recordFailure(db, id, null, {
      code: 'not_charged',
      message: `not charged within ${UNCHARGED_MAX_AGE_MS / 3_600_000} h of the debit that started it`,
    });
  }
  return outcomes;
}

/** Below Stripe's 24 h idempotency-key retention, with room for a slow sweep. */
const UNCHARGED_MAX_AGE_MS = 23 * 3600_000;
