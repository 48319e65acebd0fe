import type { z } from 'zod/mini';
import { findOrCreateAccount, lockAccount, rememberStripeCustomer, saveCard } from '../accounts/accounts.js';
import { lockKey, type Trx } from '../db/locks.js';
import type { Account, LedgerEntry } from '../db/schema.js';
import { ParkEventError } from '../errors.js';
import type { CreditPackage } from '../packages.js';
import {
  type CheckoutSession,
  chargeSchema,
  checkoutSessionSchema,
  disputeSchema,
  type HandledEventType,
  type PaymentIntent,
  paymentIntentSchema,
  refundSchema,
  type StripeEvent,
} from '../stripe/events.js';
import { recordTopUpFailed } from '../topup-settings/settings.js';
import { type ChargeFacts, disputeState, recordChargeFacts, refundState } from './facts.js';
import {
  closeUncredited,
  createExternalPayment,
  creditPaidPayment,
  findPayment,
  isCredited,
  linkPaymentIntent,
  type PaymentWithFacts,
  recordCharge,
  settlePayment,
} from './payments.js';

/** A handled Stripe event applied to the payments: the entries it wrote, or null when it concerns nothing of ours. */
export type PaymentEffects = readonly LedgerEntry[] | null;

/**
 * Applies one handled Stripe event inside the caller's transaction, from the cumulative state it carries, so
 * any order and repetition of a history ends in the same state. Locks the payment, then the account.
 * Throws ParkEventError for an event that can never apply as it stands.
 */
export async function applyToPayments(
  trx: Trx,
  event: StripeEvent & { readonly type: HandledEventType },
  packages: readonly CreditPackage[],
): Promise<PaymentEffects> {
  switch (event.type) {
    case 'checkout.session.completed':
    case 'checkout.session.async_payment_succeeded':
    case 'checkout.session.async_payment_failed':
    case 'checkout.session.expired':
      return applySessionEvent(
        trx,
        event.type,
        event.id,
        parseObject(checkoutSessionSchema, event),
        packages,
      );
    case 'payment_intent.succeeded': {
      const intent = parseObject(paymentIntentSchema, event);
      await lockKey(trx, 'payment', intent.id);
      const found =
        (await findPayment(trx, 'stripe_payment_intent_id', intent.id)) ??
        (await ourPayment(trx, intent.metadata.payment_id, intent.id));
      if (!found) return null; // not a purchase of ours, or its session event will create it
      const payment = await linkPaymentIntent(trx, found, intent.id);
      const account = await lockAccount(trx, payment.account_id);
      if (intent.latest_charge) await recordCharge(trx, payment.id, intent.latest_charge);
      await saveCardOf(trx, account, intent);
      const paid = { amount: intent.amount_received, currency: intent.currency };
      // A promotion code lowers what the intent received below the pack's price; only the session says
      // by how much, so for a checkout payment the session event decides.
      if (
        payment.stripe_checkout_session_id &&
        paid.amount < payment.amount_total &&
        !isCredited(payment.status)
      ) {
        return [];
      }
      return creditPaidPayment(trx, account, payment, paid, event.id);
    }
    case 'payment_intent.payment_failed': {
      const intent = parseObject(paymentIntentSchema, event);
      await lockKey(trx, 'payment', intent.id);
      const found =
        (await findPayment(trx, 'stripe_payment_intent_id', intent.id)) ??
        (await ourPayment(trx, intent.metadata.payment_id, intent.id));
      if (!found) return null;
      // A buyer on the Checkout page can try another card: only the session says a checkout failed. An
      // off-session top-up has no buyer to try again; the attempt is over.
      if (found.kind !== 'auto_topup') return [];
      const payment = await linkPaymentIntent(trx, found, intent.id);
      const error = intent.last_payment_error;
      const failure = { code: error?.code ?? 'payment_failed', message: error?.message ?? null };
      // Whichever comes first, this webhook or the charge's own answer, records the outcome and its event.
      if (await closeUncredited(trx, payment, 'FAILED', failure)) {
        await recordTopUpFailed(trx, payment.id, failure);
      }
      return [];
    }
    case 'charge.refunded': {
      const charge = parseObject(chargeSchema, event);
      return applyFacts(trx, event, charge.payment_intent, charge.currency, {
        chargeAmountRefunded: charge.amount_refunded,
      });
    }
    case 'refund.created':
    case 'refund.updated':
    case 'refund.failed': {
      const refund = parseObject(refundSchema, event);
      return applyFacts(trx, event, refund.payment_intent, refund.currency, {
        refunds: { [refund.id]: { amount: refund.amount, status: refundState(refund.status) } },
      });
    }
    case 'charge.dispute.created':
    case 'charge.dispute.funds_withdrawn':
    case 'charge.dispute.funds_reinstated':
    case 'charge.dispute.closed': {
      const dispute = parseObject(disputeSchema, event);
      // A dispute's amount is never compared with what was paid (its state decides), and Stripe may state it
      // in another currency: no currency check.
      return applyFacts(trx, event, dispute.payment_intent, null, {
        disputes: {
          [dispute.id]: { amount: dispute.amount, state: disputeState(event.type, dispute.status) },
        },
      });
    }
    default: {
      const unhandled: never = event.type;
      throw new Error(`no handler for Stripe event type ${String(unhandled)}`);
    }
  }
}

function parseObject<T extends z.ZodMiniType>(schema: T, event: StripeEvent): z.infer<T> {
  const parsed = schema.safeParse(event.data.object);
  if (!parsed.success) {
    const fields = parsed.error.issues.map((i) => i.path.join('.') || '(object)').join(', ');
    throw new ParkEventError('malformed_object', `${event.type} object is malformed at ${fields}`);
  }
  return parsed.data;
}

/**
 * A PaymentIntent that saved its card for later (setup_future_usage off_session, on a customer) leaves it on
 * the account; of two such intents the newer one's card wins, in any order of their events.
 */
async function saveCardOf(trx: Trx, account: Account, intent: PaymentIntent): Promise<void> {
  if (intent.setup_future_usage !== 'off_session' || !intent.customer || !intent.payment_method) return;
  await saveCard(trx, account, {
    customerId: intent.customer,
    paymentMethodId: intent.payment_method,
    savedAt: new Date(intent.created * 1000),
  });
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A payment our checkout created (its id in Stripe metadata), with the facts known for `intentId`. */
function ourPayment(trx: Trx, paymentId: string | undefined, intentId: string | null) {
  if (!paymentId || !UUID.test(paymentId)) return undefined;
  return findPayment(trx, 'id', paymentId, intentId);
}

async function applySessionEvent(
  trx: Trx,
  type: Extract<HandledEventType, `checkout.session.${string}`>,
  eventId: string,
  session: CheckoutSession,
  packages: readonly CreditPackage[],
): Promise<PaymentEffects> {
  await lockKey(trx, 'payment', session.payment_intent ?? session.id);
  const resolved = await resolveSessionPayment(trx, session, packages, type !== 'checkout.session.expired');
  if (!resolved) return null;
  const payment = await linkPaymentIntent(trx, resolved, session.payment_intent);
  const account = await lockAccount(trx, payment.account_id);
  // The customer the session paid as (ours, or the one Checkout created to save the card on).
  if (session.customer && type !== 'checkout.session.expired') {
    await rememberStripeCustomer(trx, account, session.customer);
  }
  const paid = { amount: paidForPack(session), currency: session.currency };
  switch (type) {
    case 'checkout.session.completed':
      // A delayed method (SEPA, ACH): credited on async_payment_succeeded.
      if (session.payment_status === 'unpaid') return [];
      return creditPaidPayment(trx, account, payment, paid, eventId);
    case 'checkout.session.async_payment_succeeded':
      return creditPaidPayment(trx, account, payment, paid, eventId);
    case 'checkout.session.async_payment_failed':
      await closeUncredited(trx, payment, 'FAILED');
      return [];
    case 'checkout.session.expired':
      await closeUncredited(trx, payment, 'EXPIRED');
      return [];
  }
}

/**
 * What a session paid for its pack: its total, or, with a promotion code, its subtotal when the total is
 * exactly the subtotal less the discount (the pack's credits are granted in full).
 */
function paidForPack(session: CheckoutSession): number | null {
  const discount = session.total_details?.amount_discount ?? 0;
  if (
    discount > 0 &&
    session.amount_subtotal !== null &&
    session.amount_total === session.amount_subtotal - discount
  ) {
    return session.amount_subtotal;
  }
  return session.amount_total;
}

/**
 * The payment a session pays: ours (its id in metadata, or its session id), or, for a session created
 * outside our checkout (no payment id in its metadata), a new payment when the metadata names a user and a
 * pack whose price matches.
 */
async function resolveSessionPayment(
  trx: Trx,
  session: CheckoutSession,
  packages: readonly CreditPackage[],
  mustResolve: boolean,
): Promise<PaymentWithFacts | undefined> {
  const ours = await ourPayment(trx, session.metadata.payment_id, session.payment_intent);
  if (ours) {
    if (ours.stripe_checkout_session_id !== session.id) {
      throw new ParkEventError('payment_mismatch', `payment ${ours.id} belongs to another checkout session`);
    }
    return ours;
  }
  const known = await findPayment(trx, 'stripe_checkout_session_id', session.id, session.payment_intent);
  if (known) return known;
  // Our checkout names its payment; one that names a payment this deployment does not have (another
  // deployment on the same Stripe account, say) is not a sale to credit here.
  if (session.metadata.payment_id) {
    if (!mustResolve) return undefined;
    throw new ParkEventError(
      'unknown_payment',
      `checkout session ${session.id} names payment ${session.metadata.payment_id}, which this deployment does not have`,
    );
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
  if (paidForPack(session) !== pack.amount || session.currency !== pack.currency) {
    throw new ParkEventError(
      'amount_mismatch',
      `checkout session ${session.id} charged ${session.amount_total} ${session.currency}; ${pack.id} costs ${pack.amount} ${pack.currency}`,
    );
  }
  const account = await findOrCreateAccount(trx, userId);
  return createExternalPayment(trx, account, pack, {
    sessionId: session.id,
    paymentIntentId: session.payment_intent,
  });
}

/**
 * Merges what a refund or dispute event says into the facts, then settles the payment if it is credited. A
 * refunded amount (`currency` given) in another currency than the payment's is parked: it cannot be compared
 * with what was paid. (Checked when the payment is known; facts that arrive before it carry no currency.)
 */
async function applyFacts(
  trx: Trx,
  event: StripeEvent,
  intentId: string | null,
  currency: string | null,
  update: Partial<ChargeFacts>,
): Promise<PaymentEffects> {
  if (!intentId) return null; // a charge without a payment intent was never one of our checkouts
  await lockKey(trx, 'payment', intentId);
  const payment = await findPayment(trx, 'stripe_payment_intent_id', intentId);
  if (payment && currency !== null && currency !== payment.currency) {
    throw new ParkEventError(
      'currency_mismatch',
      `${event.type} is in ${currency}; payment ${payment.id} was paid in ${payment.currency}`,
    );
  }
  const facts = await recordChargeFacts(trx, intentId, update);
  if (!payment || !isCredited(payment.status)) return [];
  return settlePayment(trx, await lockAccount(trx, payment.account_id), payment, facts, event.id);
}
