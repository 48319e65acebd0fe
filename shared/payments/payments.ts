import { type Kysely, sql } from 'kysely';
import { requirePositiveCredits, requireText } from '../credits.js';
import type { Trx } from '../db/locks.js';
import type { Account, Database, LedgerEntry, Payment, PaymentStatus } from '../db/schema.js';
import { LedgerRuleError, ParkEventError } from '../errors.js';
import { shrinkHoldsToBalance } from '../holds/holds.js';
import {
  creditEntry,
  type EntryResult,
  findPurchaseEntry,
  movePaymentCredits,
  paymentClawbacks,
} from '../ledger/ledger.js';
import type { CreditPackage } from '../packages.js';
import { recordTopUpCredited } from '../topup-settings/settings.js';
import { type ChargeFacts, disputeActive, effectiveRefunded, isEmptyFacts } from './facts.js';

/** The only writer of `payments`: create, link, credit, settle, close. */

/** The states of a payment that has been credited (and may since have been refunded or disputed). */
export const CREDITED_STATUSES = [
  'CREDITED',
  'PARTIALLY_REFUNDED',
  'REFUNDED',
  'CHARGEBACK',
] as const satisfies readonly PaymentStatus[];

export const isCredited = (status: PaymentStatus) =>
  (CREDITED_STATUSES as readonly string[]).includes(status);

/** The columns a payment for `pack` starts with: the pack's price and credits, fixed at purchase. */
const packColumns = (account: Account, pack: CreditPackage) => ({
  account_id: account.id,
  package_id: pack.id,
  credits: pack.credits,
  amount_total: pack.amount,
  currency: pack.currency,
});

/** A payment our checkout starts: INIT, before its Stripe session exists. */
export function createPayment(trx: Trx, account: Account, pack: CreditPackage): Promise<Payment> {
  return trx
    .insertInto('payments')
    .values(packColumns(account, pack))
    .returningAll()
    .executeTakeFirstOrThrow();
}

/** An off-session top-up on the saved card: INIT, before its PaymentIntent exists. */
export function createTopUpPayment(trx: Trx, account: Account, pack: CreditPackage): Promise<Payment> {
  return trx
    .insertInto('payments')
    .values({ ...packColumns(account, pack), kind: 'auto_topup' })
    .returningAll()
    .executeTakeFirstOrThrow();
}

/**
 * Links a payment to the PaymentIntent Stripe created for it, unless it is linked already (the webhook may
 * have been first); a payment linked to another intent is left as it is. Returns whether it is linked to it.
 */
export async function attachPaymentIntent(
  db: Kysely<Database>,
  paymentId: string,
  intentId: string,
): Promise<boolean> {
  await db
    .updateTable('payments')
    .set({ stripe_payment_intent_id: intentId, updated_at: sql`now()` })
    .where('id', '=', paymentId)
    .where('stripe_payment_intent_id', 'is', null)
    .execute();
  const row = await db
    .selectFrom('payments')
    .select('stripe_payment_intent_id')
    .where('id', '=', paymentId)
    .executeTakeFirst();
  return row?.stripe_payment_intent_id === intentId;
}

/** Records the charge Stripe made for a payment (the PaymentIntent's latest_charge), once. */
export async function recordCharge(trx: Trx, paymentId: string, chargeId: string): Promise<void> {
  await trx
    .updateTable('payments')
    .set({ stripe_charge_id: chargeId, updated_at: sql`now()` })
    .where('id', '=', paymentId)
    .where('stripe_charge_id', 'is', null)
    .execute();
}

/** Checkouts of the account still open (INIT) and started within the last hour. */
export async function countOpenCheckouts(trx: Trx, accountId: string): Promise<number> {
  const open = await trx
    .selectFrom('payments')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .where('account_id', '=', accountId)
    .where('kind', '=', 'checkout')
    .where('status', '=', 'INIT')
    .where('created_at', '>', sql<Date>`now() - interval '1 hour'`)
    .executeTakeFirstOrThrow();
  return Number(open.n);
}

/** Records the Stripe Checkout Session created for a payment. */
export async function attachCheckoutSession(db: Kysely<Database>, paymentId: string, sessionId: string) {
  await db
    .updateTable('payments')
    .set({ stripe_checkout_session_id: sessionId, updated_at: sql`now()` })
    .where('id', '=', paymentId)
    .execute();
}

/** Stripe refused to create the session: the payment can never be paid. */
export async function failUnstartedPayment(db: Kysely<Database>, paymentId: string) {
  await db
    .updateTable('payments')
    .set({ status: 'FAILED', updated_at: sql`now()` })
    .where('id', '=', paymentId)
    .where('status', '=', 'INIT')
    .execute();
}

/** A session paid outside our checkout (metadata names the user and the pack): its payment, once. */
export async function createExternalPayment(
  trx: Trx,
  account: Account,
  pack: CreditPackage,
  stripe: { readonly sessionId: string; readonly paymentIntentId: string | null },
): Promise<PaymentWithFacts | undefined> {
  await trx
    .insertInto('payments')
    .values({
      ...packColumns(account, pack),
      stripe_checkout_session_id: stripe.sessionId,
      stripe_payment_intent_id: stripe.paymentIntentId,
    })
    // The session's own payment, created by an event of the same session before (they share the payment lock),
    // is no conflict. An intent another payment holds is: it raises, and the event is parked (stripe_id_conflict)
    // instead of being ignored, which would leave a paid session without its credits and without a trace.
    .onConflict((oc) => oc.column('stripe_checkout_session_id').doNothing())
    .execute();
  return findPayment(trx, 'stripe_checkout_session_id', stripe.sessionId);
}

/** A payment with the refund and dispute facts Stripe has sent for its payment intent (null: none). */
export type PaymentWithFacts = Payment & { readonly facts: ChargeFacts | null };

/**
 * A payment by one of its unique columns, with the facts recorded for its payment intent (or for
 * `intentId` when the payment is not linked to one yet), in one statement.
 */
export async function findPayment(
  trx: Trx,
  column: 'id' | 'stripe_checkout_session_id' | 'stripe_payment_intent_id',
  value: string,
  intentId: string | null = null,
): Promise<PaymentWithFacts | undefined> {
  const row = await trx
    .selectFrom('payments')
    .selectAll('payments')
    .select(
      sql<ChargeFacts | null>`(SELECT json_build_object('chargeAmountRefunded', f.charge_amount_refunded,
        'refunds', f.refunds, 'disputes', f.disputes) FROM stripe_charge_facts f
        WHERE f.payment_intent_id = coalesce(payments.stripe_payment_intent_id, ${intentId}))`.as('facts'),
    )
    .where(column, '=', value)
    .executeTakeFirst();
  return row;
}

/** Links a payment to its Stripe payment intent; a payment already linked to another one is parked. */
export async function linkPaymentIntent(
  trx: Trx,
  payment: PaymentWithFacts,
  intentId: string | null,
): Promise<PaymentWithFacts> {
  if (!intentId || payment.stripe_payment_intent_id === intentId) return payment;
  if (payment.stripe_payment_intent_id) {
    throw new ParkEventError('payment_mismatch', `payment ${payment.id} belongs to another payment intent`);
  }
  const linked = await trx
    .updateTable('payments')
    .set({ stripe_payment_intent_id: intentId, updated_at: sql`now()` })
    .where('id', '=', payment.id)
    .returningAll()
    .executeTakeFirstOrThrow();
  return { ...linked, facts: payment.facts };
}

export interface PurchaseCredit {
  readonly paymentId: string;
  readonly credits: number;
  /** Provenance: the Stripe object or event that proved the payment. */
  readonly reference: string;
  readonly stripeEventId?: string | null;
}

/**
 * Credits a paid purchase and moves its payment (INIT or PAID) to CREDITED. Idempotent: a payment is
 * credited at most once, whatever the reference.
 */
export async function creditPurchase(
  trx: Trx,
  account: Account,
  input: PurchaseCredit,
): Promise<EntryResult> {
  const credits = requirePositiveCredits(input.credits, 'credits');
  const reference = requireText(input.reference, 'reference', 255);
  const moved = await trx
    .updateTable('payments')
    .set({ status: 'CREDITED', updated_at: sql`now()` })
    .where('id', '=', input.paymentId)
    .where('account_id', '=', account.id)
    .where('status', 'in', ['INIT', 'PAID'])
    .returningAll()
    .executeTakeFirst();
  if (!moved) {
    // Not awaiting credit: already credited (a duplicate), or not a payment of this account at all.
    const existing = await findPurchaseEntry(trx, input.paymentId);
    if (existing?.account_id === account.id) return { entry: existing, duplicate: true };
    throw new LedgerRuleError(`payment ${input.paymentId} of this account is not awaiting credit`);
  }
  const { entry } = await creditEntry(
    trx,
    account,
    {
      amount: credits,
      kind: 'purchase',
      reference,
      paymentId: input.paymentId,
      stripeEventId: input.stripeEventId ?? null,
    },
    {
      category: 'paid',
      source: moved.kind === 'auto_topup' ? 'auto_topup' : 'purchase',
      paymentId: input.paymentId,
    },
  );
  // A top-up's outcome and its event, in the credit's transaction: once, as the credit is.
  if (moved.kind === 'auto_topup') {
    await recordTopUpCredited(trx, { ...account, balance: entry.balance_after }, moved);
  }
  return { entry, duplicate: false };
}

/** Why Stripe refused a payment: its error code and message. */
export interface PaymentFailure {
  readonly code: string;
  readonly message: string | null;
}

/**
 * INIT (or PAID, for FAILED) moves to `status`, with Stripe's reason for a failure; a payment past that point
 * is left as it is. Returns whether this call moved it (true once per payment).
 */
export async function closeUncredited(
  trx: Trx,
  payment: Pick<Payment, 'id'>,
  status: 'FAILED' | 'EXPIRED',
  failure?: PaymentFailure,
): Promise<boolean> {
  const from: PaymentStatus[] = status === 'FAILED' ? ['INIT', 'PAID'] : ['INIT'];
  const moved = await trx
    .updateTable('payments')
    .set({
      status,
      updated_at: sql`now()`,
      ...(failure && {
        failure_code: failure.code.slice(0, 100),
        failure_message: failure.message?.slice(0, 500) || null,
      }),
    })
    .where('id', '=', payment.id)
    .where('status', 'in', from)
    .executeTakeFirst();
  return moved.numUpdatedRows > 0n;
}

/**
 * Brings a credited payment's clawbacks to what the facts call for: refunds claw back credits in proportion
 * to the amount refunded; an open chargeback claws back whatever credits remain. Reversals are written
 * before new clawbacks so the running total never exceeds what was credited. Returns the entries written.
 */
export async function settlePayment(
  trx: Trx,
  account: Account,
  payment: Payment,
  facts: ChargeFacts,
  reference: string,
): Promise<LedgerEntry[]> {
  const refunded = effectiveRefunded(facts, payment.amount_total);
  const chargeback = disputeActive(facts);
  const refundTarget =
    payment.amount_total === 0
      ? 0
      : Number((BigInt(payment.credits) * BigInt(refunded)) / BigInt(payment.amount_total));
  const disputeTarget = chargeback ? payment.credits - refundTarget : 0;
  const taken = await paymentClawbacks(trx, payment.id);
  const moves = [
    { delta: refundTarget - taken.refund, take: 'refund_clawback', give: 'refund_reversal' },
    { delta: disputeTarget - taken.dispute, take: 'dispute_clawback', give: 'dispute_reinstatement' },
  ] as const;
  const written: LedgerEntry[] = [];
  for (const move of [...moves].sort((a, b) => a.delta - b.delta)) {
    if (move.delta === 0) continue;
    const result = await movePaymentCredits(trx, account, {
      paymentId: payment.id,
      kind: move.delta > 0 ? move.take : move.give,
      credits: Math.abs(move.delta),
      reference,
      stripeEventId: reference.startsWith('evt_') ? reference : null,
    });
    if (!result.duplicate) written.push(result.entry);
  }
  // Holds cannot reserve credits a clawback took: they shrink to what the balance still covers.
  if (written.some((e) => e.amount < 0)) await shrinkHoldsToBalance(trx, account, new Date());
  const status: PaymentStatus = chargeback
    ? 'CHARGEBACK'
    : refunded >= payment.amount_total && refunded > 0
      ? 'REFUNDED'
      : refunded > 0
        ? 'PARTIALLY_REFUNDED'
        : 'CREDITED';
  if (status !== payment.status || refunded !== payment.amount_refunded || chargeback !== payment.disputed) {
    await trx
      .updateTable('payments')
      .set({ status, amount_refunded: refunded, disputed: chargeback, updated_at: sql`now()` })
      .where('id', '=', payment.id)
      .execute();
  }
  return written;
}

/**
 * Credits a paid payment once (Stripe's amount must match), then applies any refunds or disputes already
 * known for it. Returns the entries written.
 */
export async function creditPaidPayment(
  trx: Trx,
  account: Account,
  payment: PaymentWithFacts,
  paid: { readonly amount: number | null; readonly currency: string | null },
  eventId: string,
): Promise<LedgerEntry[]> {
  const written: LedgerEntry[] = [];
  let credited: Payment = payment;
  if (!isCredited(payment.status)) {
    if (payment.status === 'EXPIRED' || payment.status === 'FAILED') {
      throw new ParkEventError(
        'paid_after_close',
        `payment ${payment.id} is ${payment.status} but Stripe reports it paid`,
      );
    }
    if (paid.amount !== payment.amount_total || paid.currency !== payment.currency) {
      throw new ParkEventError(
        'amount_mismatch',
        `payment ${payment.id} expects ${payment.amount_total} ${payment.currency}; Stripe reports ${paid.amount} ${paid.currency}`,
      );
    }
    const result = await creditPurchase(trx, account, {
      paymentId: payment.id,
      credits: payment.credits,
      // A checkout's session, or an off-session top-up's PaymentIntent.
      reference: payment.stripe_checkout_session_id ?? payment.stripe_payment_intent_id ?? payment.id,
      stripeEventId: eventId,
    });
    if (!result.duplicate) written.push(result.entry);
    credited = { ...payment, status: 'CREDITED' };
  }
  if (payment.facts && !isEmptyFacts(payment.facts)) {
    written.push(...(await settlePayment(trx, account, credited, payment.facts, eventId)));
  }
  return written;
}

/** An account's payments, newest first, one keyset page: those after the payment `afterId`, optionally. */
export function listPayments(
  db: Kysely<Database>,
  accountId: string,
  page: { readonly limit: number; readonly afterId?: string },
): Promise<Payment[]> {
  let query = db
    .selectFrom('payments')
    .selectAll()
    .where('account_id', '=', accountId)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(page.limit);
  if (page.afterId !== undefined) {
    // The position is read from the row itself: exact to the microsecond, unlike a timestamp in a cursor.
    query = query.where(
      sql<boolean>`(created_at, id) < (SELECT p.created_at, p.id FROM payments p WHERE p.id = ${page.afterId})`,
    );
  }
  return query.execute();
}

/** Payments awaiting credit whose sessions were created in [from, to): looked up by reconciliation. */
export async function listAwaitingSessions(db: Kysely<Database>, from: Date, to: Date): Promise<string[]> {
  const rows = await db
    .selectFrom('payments')
    .select('stripe_checkout_session_id')
    .where('status', 'in', ['INIT', 'PAID'])
    .where('stripe_checkout_session_id', 'is not', null)
    .where('created_at', '>=', from)
    .where('created_at', '<', to)
    .execute();
  return rows.map((r) => r.stripe_checkout_session_id!);
}

/** Credited auto top-ups created in [from, to], with their PaymentIntents: reconciliation checks Stripe agrees. */
export function listCreditedTopUpsInWindow(db: Kysely<Database>, from: Date, to: Date) {
  return db
    .selectFrom('payments')
    .select(['id', 'account_id', 'stripe_payment_intent_id'])
    .where('kind', '=', 'auto_topup')
    .where('status', 'in', CREDITED_STATUSES)
    .where('stripe_payment_intent_id', 'is not', null)
    .where('created_at', '>=', from)
    .where('created_at', '<=', to)
    .execute();
}

/** Credited payments created in [from, to] with a checkout session: reconciliation checks Stripe agrees. */
export function listCreditedInWindow(db: Kysely<Database>, from: Date, to: Date) {
  return db
    .selectFrom('payments')
    .select(['id', 'account_id', 'stripe_checkout_session_id'])
    .where('status', 'in', CREDITED_STATUSES)
    .where('stripe_checkout_session_id', 'is not', null)
    .where('created_at', '>=', from)
    .where('created_at', '<=', to)
    .execute();
}
