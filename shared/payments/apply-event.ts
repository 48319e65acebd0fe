import { type Kysely, sql } from 'kysely';
import type { z } from 'zod/mini';
import type { Account, Database, Payment, PaymentStatus } from '../db/schema.js';
import { ServiceError } from '../errors.js';
import {
  creditPurchase,
  findOrCreateAccount,
  lockAccount,
  lockKey,
  movePaymentCredits,
  paymentClawbacks,
  type Trx,
} from '../ledger/ledger.js';
import type { CreditPackage } from '../packages.js';
import {
  type CheckoutSession,
  chargeSchema,
  checkoutSessionSchema,
  disputeSchema,
  isHandledEventType,
  paymentIntentSchema,
  refundSchema,
  type StripeEvent,
} from '../stripe/events.js';
import {
  type ChargeFacts,
  disputeActive,
  disputeState,
  EMPTY_FACTS,
  effectiveRefunded,
  mergeFacts,
  refundState,
} from './facts.js';

/** An event that can never be applied as it stands: parked with `reason` for an operator, never dropped. */
export class ParkEventError extends ServiceError {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super('event_parked', 422, message, { reason });
  }
}

export type EventOutcome = 'applied' | 'duplicate' | 'ignored' | 'parked';

export interface ApplyResult {
  readonly outcome: EventOutcome;
  readonly reason?: string;
  readonly creditsGranted: number;
  readonly creditsClawedBack: number;
  /** Ledger entries the event wrote (reversals and reinstatements included). */
  readonly entriesWritten?: number;
}

export interface ApplyOptions {
  readonly packages: readonly CreditPackage[];
  /** Re-apply an event that was parked (admin replay). Applied events stay duplicates. */
  readonly replay?: boolean;
}

const CREDITED: readonly PaymentStatus[] = ['CREDITED', 'PARTIALLY_REFUNDED', 'REFUNDED', 'CHARGEBACK'];

/**
 * Applies one Stripe event in one transaction: claims its id in `processed_events`, takes the payment and
 * account locks (always in that order), moves the payment along its state machine and writes the ledger.
 * Idempotent and order-independent. Throws only for retryable failures (e.g. the database is down).
 */
export async function applyStripeEvent(
  db: Kysely<Database>,
  event: StripeEvent,
  options: ApplyOptions,
): Promise<ApplyResult> {
  try {
    return await db.transaction().execute(async (trx) => {
      const claimed = await claimEvent(trx, event, options.replay ?? false);
      if (!claimed) return { outcome: 'duplicate', creditsGranted: 0, creditsClawedBack: 0 };
      const applied = isHandledEventType(event.type) && (await dispatch(trx, event, options.packages));
      if (!applied) {
        await trx
          .updateTable('processed_events')
          .set({ outcome: 'ignored' })
          .where('event_id', '=', event.id)
          .execute();
        return { outcome: 'ignored', creditsGranted: 0, creditsClawedBack: 0 };
      }
      return { outcome: 'applied', ...(await movedBy(trx, event.id)) };
    });
  } catch (error: unknown) {
    if (!(error instanceof ParkEventError)) throw error;
    await parkEvent(db, event, error.message);
    return { outcome: 'parked', reason: error.reason, creditsGranted: 0, creditsClawedBack: 0 };
  }
}

async function claimEvent(trx: Trx, event: StripeEvent, replay: boolean): Promise<boolean> {
  const inserted = await trx
    .insertInto('processed_events')
    .values({ event_id: event.id, event_type: event.type, outcome: 'applied' })
    .onConflict((oc) =>
      replay
        ? oc
            .column('event_id')
            .doUpdateSet({ outcome: 'applied', reason: null, payload: null, updated_at: sql`now()` })
            .where('processed_events.outcome', '=', 'parked')
        : oc.column('event_id').doNothing(),
    )
    .returning('event_id')
    .executeTakeFirst();
  return inserted !== undefined;
}

async function parkEvent(db: Kysely<Database>, event: StripeEvent, reason: string): Promise<void> {
  await db
    .insertInto('processed_events')
    .values({
      event_id: event.id,
      event_type: event.type,
      outcome: 'parked',
      reason,
      payload: JSON.stringify(event),
    })
    .onConflict((oc) =>
      oc
        .column('event_id')
        .doUpdateSet({ reason, updated_at: sql`now()` })
        .where('processed_events.outcome', '=', 'parked'),
    )
    .execute();
}

async function movedBy(trx: Trx, eventId: string) {
  const row = await trx
    .selectFrom('ledger_entries')
    .select([
      sql<number>`coalesce(sum(amount) FILTER (WHERE kind = 'purchase'), 0)::bigint`.as('granted'),
      sql<number>`coalesce(-sum(amount) FILTER (WHERE kind IN ('refund_clawback', 'dispute_clawback')), 0)::bigint`.as(
        'clawed',
      ),
      sql<number>`count(*)::int`.as('entries'),
    ])
    .where('stripe_event_id', '=', eventId)
    .executeTakeFirstOrThrow();
  return { creditsGranted: row.granted, creditsClawedBack: row.clawed, entriesWritten: row.entries };
}

function parseObject<T extends z.ZodMiniType>(schema: T, event: StripeEvent): z.infer<T> {
  const parsed = schema.safeParse(event.data.object);
  if (!parsed.success) {
    const fields = parsed.error.issues.map((i) => i.path.join('.') || '(object)').join(', ');
    throw new ParkEventError('malformed_object', `${event.type} object is malformed at ${fields}`);
  }
  return parsed.data;
}

/** Returns false when the event concerns nothing of ours (ignored). */
async function dispatch(trx: Trx, event: StripeEvent, packages: readonly CreditPackage[]): Promise<boolean> {
  if (event.type.startsWith('checkout.session.')) {
    return applySessionEvent(trx, event, parseObject(checkoutSessionSchema, event), packages);
  }
  if (event.type === 'payment_intent.succeeded') {
    const intent = parseObject(paymentIntentSchema, event);
    await lockKey(trx, 'payment', intent.id);
    const payment =
      (await paymentBy(trx, 'stripe_payment_intent_id', intent.id)) ??
      (await linkedByMetadata(trx, intent.metadata.payment_id, intent.id));
    if (!payment) return false; // not a purchase of ours, or its session event will create it
    const account = await lockAccount(trx, payment.account_id);
    await creditPayment(
      trx,
      account,
      payment,
      { amount: intent.amount_received, currency: intent.currency },
      event.id,
    );
    return true;
  }
  if (event.type === 'charge.refunded') {
    const charge = parseObject(chargeSchema, event);
    return recordFacts(trx, event.id, charge.payment_intent, {
      chargeAmountRefunded: charge.amount_refunded,
    });
  }
  if (event.type.startsWith('refund.')) {
    const refund = parseObject(refundSchema, event);
    return recordFacts(trx, event.id, refund.payment_intent, {
      refunds: { [refund.id]: { amount: refund.amount, status: refundState(refund.status) } },
    });
  }
  const dispute = parseObject(disputeSchema, event);
  return recordFacts(trx, event.id, dispute.payment_intent, {
    disputes: { [dispute.id]: { amount: dispute.amount, state: disputeState(event.type, dispute.status) } },
  });
}

function paymentBy(
  trx: Trx,
  column: 'id' | 'stripe_checkout_session_id' | 'stripe_payment_intent_id',
  value: string,
): Promise<Payment | undefined> {
  return trx.selectFrom('payments').selectAll().where(column, '=', value).executeTakeFirst();
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A payment our checkout created (its id in Stripe metadata), linked to `intentId` if not yet. */
async function linkedByMetadata(trx: Trx, paymentId: string | undefined, intentId: string | null) {
  if (!paymentId || !UUID.test(paymentId)) return undefined;
  const payment = await paymentBy(trx, 'id', paymentId);
  if (!payment || !intentId || payment.stripe_payment_intent_id === intentId) return payment;
  if (payment.stripe_payment_intent_id) {
    throw new ParkEventError('payment_mismatch', `payment ${payment.id} belongs to another payment intent`);
  }
  return trx
    .updateTable('payments')
    .set({ stripe_payment_intent_id: intentId, updated_at: sql`now()` })
    .where('id', '=', payment.id)
    .returningAll()
    .executeTakeFirstOrThrow();
}

async function applySessionEvent(
  trx: Trx,
  event: StripeEvent,
  session: CheckoutSession,
  packages: readonly CreditPackage[],
): Promise<boolean> {
  await lockKey(trx, 'payment', session.payment_intent ?? session.id);
  const payment = await resolveSessionPayment(
    trx,
    session,
    packages,
    event.type !== 'checkout.session.expired',
  );
  if (!payment) return false;
  const account = await lockAccount(trx, payment.account_id);
  switch (event.type) {
    case 'checkout.session.completed':
      if (session.payment_status === 'unpaid') return true; // a delayed method: credit on async_payment_succeeded
      await creditPayment(trx, account, payment, sessionAmount(session), event.id);
      return true;
    case 'checkout.session.async_payment_succeeded':
      await creditPayment(trx, account, payment, sessionAmount(session), event.id);
      return true;
    case 'checkout.session.async_payment_failed':
      await moveUncredited(trx, payment, 'FAILED');
      return true;
    case 'checkout.session.expired':
      await moveUncredited(trx, payment, 'EXPIRED');
      return true;
    default:
      return false;
  }
}

const sessionAmount = (session: CheckoutSession) => ({
  amount: session.amount_total,
  currency: session.currency,
});

/** INIT (or PAID, for FAILED) moves to `status`; a payment past that point is left as it is. */
async function moveUncredited(trx: Trx, payment: Payment, status: 'FAILED' | 'EXPIRED'): Promise<void> {
  const from: PaymentStatus[] = status === 'FAILED' ? ['INIT', 'PAID'] : ['INIT'];
  await trx
    .updateTable('payments')
    .set({ status, updated_at: sql`now()` })
    .where('id', '=', payment.id)
    .where('status', 'in', from)
    .execute();
}

/**
 * The payment a session pays: ours (its id in metadata, or its session id), or, for a session created
 * outside our checkout, a new payment when the metadata names a user and a pack whose price matches.
 */
async function resolveSessionPayment(
  trx: Trx,
  session: CheckoutSession,
  packages: readonly CreditPackage[],
  mustResolve: boolean,
): Promise<Payment | undefined> {
  const ours = await linkedByMetadata(trx, session.metadata.payment_id, session.payment_intent);
  if (ours) {
    if (ours.stripe_checkout_session_id !== session.id) {
      throw new ParkEventError('payment_mismatch', `payment ${ours.id} belongs to another checkout session`);
    }
    return ours;
  }
  const known = await paymentBy(trx, 'stripe_checkout_session_id', session.id);
  if (known) {
    if (!session.payment_intent || known.stripe_payment_intent_id) return known;
    return linkedByMetadata(trx, known.id, session.payment_intent);
  }
  const userId = session.metadata.user_id ?? session.client_reference_id;
  if (!userId) {
    if (!mustResolve) return undefined;
    throw new ParkEventError(
      'unknown_user',
      `checkout session ${session.id} names no user (metadata.user_id)`,
    );
  }
  const pack = packages.find((p) => p.id === session.metadata.package_id);
  if (!pack) {
    if (!mustResolve) return undefined;
    throw new ParkEventError('unknown_package', `checkout session ${session.id} names no known package`);
  }
  if (session.amount_total !== pack.amount || session.currency !== pack.currency) {
    throw new ParkEventError(
      'amount_mismatch',
      `checkout session ${session.id} charged ${session.amount_total} ${session.currency}; ${pack.id} costs ${pack.amount} ${pack.currency}`,
    );
  }
  const account = await findOrCreateAccount(trx, userId);
  await trx
    .insertInto('payments')
    .values({
      account_id: account.id,
      package_id: pack.id,
      credits: pack.credits,
      amount_total: pack.amount,
      currency: pack.currency,
      stripe_checkout_session_id: session.id,
      stripe_payment_intent_id: session.payment_intent,
    })
    .onConflict((oc) => oc.doNothing())
    .execute();
  return paymentBy(trx, 'stripe_checkout_session_id', session.id);
}

/** Credits a paid payment once (Stripe's amount must match), then applies any refunds or disputes already known. */
async function creditPayment(
  trx: Trx,
  account: Account,
  payment: Payment,
  paid: { amount: number | null; currency: string | null },
  eventId: string,
): Promise<void> {
  if (!CREDITED.includes(payment.status)) {
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
    await creditPurchase(trx, account, {
      paymentId: payment.id,
      credits: payment.credits,
      reference: payment.stripe_checkout_session_id ?? payment.id,
      stripeEventId: eventId,
    });
  }
  if (payment.stripe_payment_intent_id) {
    const refreshed = (await paymentBy(trx, 'id', payment.id))!;
    await settlePayment(
      trx,
      account,
      refreshed,
      await loadFacts(trx, payment.stripe_payment_intent_id),
      eventId,
    );
  }
}

async function loadFacts(trx: Trx, intentId: string): Promise<ChargeFacts> {
  const row = await trx
    .selectFrom('stripe_charge_facts')
    .selectAll()
    .where('payment_intent_id', '=', intentId)
    .executeTakeFirst();
  if (!row) return EMPTY_FACTS;
  return {
    chargeAmountRefunded: row.charge_amount_refunded,
    refunds: row.refunds as ChargeFacts['refunds'],
    disputes: row.disputes as ChargeFacts['disputes'],
  };
}

/** Merges what a refund or dispute event says into the facts, then settles the payment if it is credited. */
async function recordFacts(
  trx: Trx,
  eventId: string,
  intentId: string | null,
  update: Partial<ChargeFacts>,
): Promise<boolean> {
  if (!intentId) return false; // a charge without a payment intent was never one of our checkouts
  await lockKey(trx, 'payment', intentId);
  const facts = mergeFacts(await loadFacts(trx, intentId), update);
  await trx
    .insertInto('stripe_charge_facts')
    .values({
      payment_intent_id: intentId,
      charge_amount_refunded: facts.chargeAmountRefunded,
      refunds: JSON.stringify(facts.refunds),
      disputes: JSON.stringify(facts.disputes),
    })
    .onConflict((oc) =>
      oc.column('payment_intent_id').doUpdateSet({
        charge_amount_refunded: facts.chargeAmountRefunded,
        refunds: JSON.stringify(facts.refunds),
        disputes: JSON.stringify(facts.disputes),
        updated_at: sql`now()`,
      }),
    )
    .execute();
  const payment = await paymentBy(trx, 'stripe_payment_intent_id', intentId);
  if (payment && CREDITED.includes(payment.status)) {
    await settlePayment(trx, await lockAccount(trx, payment.account_id), payment, facts, eventId);
  }
  return true;
}

/**
 * Brings a credited payment's clawbacks to what the facts call for: refunds claw back credits in proportion
 * to the amount refunded; an open chargeback claws back whatever credits remain. Reversals are written
 * before new clawbacks so the running total never exceeds what was credited.
 */
export async function settlePayment(
  trx: Trx,
  account: Account,
  payment: Payment,
  facts: ChargeFacts,
  reference: string,
): Promise<void> {
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
  for (const move of [...moves].sort((a, b) => a.delta - b.delta)) {
    if (move.delta === 0) continue;
    await movePaymentCredits(trx, account, {
      paymentId: payment.id,
      kind: move.delta > 0 ? move.take : move.give,
      credits: Math.abs(move.delta),
      reference,
      stripeEventId: reference.startsWith('evt_') ? reference : null,
    });
  }
  const status: PaymentStatus = chargeback
    ? 'CHARGEBACK'
    : refunded >= payment.amount_total && refunded > 0
      ? 'REFUNDED'
      : refunded > 0
        ? 'PARTIALLY_REFUNDED'
        : 'CREDITED';
  await trx
    .updateTable('payments')
    .set({ status, amount_refunded: refunded, disputed: chargeback, updated_at: sql`now()` })
    .where('id', '=', payment.id)
    .execute();
}
