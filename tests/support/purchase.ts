import type { Kysely } from 'kysely';
import { expect } from 'vitest';
import type { Account, Database, Payment } from '../../shared/db/schema.js';
import { DEFAULT_PACKAGES } from '../../shared/packages.js';
import {
  charge,
  checkoutSession,
  dispute,
  lambdaContext,
  paymentIntent,
  refund,
  sqsEvent,
  stripeEvent,
  stripeIds,
} from './events.js';
import { givenAccount } from './factories.js';

export const PACK = DEFAULT_PACKAGES[0]!; // 1,000 credits for 500 cents

/**
 * A purchase started by our checkout (payment INIT, ids in Stripe metadata) and builders for every Stripe
 * event it can produce, shaped from Stripe's fixtures.
 */
export async function givenCheckout(db: Kysely<Database>, account?: Account) {
  const [checkout] = await givenCheckouts(db, [account ?? (await givenAccount(db))]);
  return checkout!;
}

/** One checkout per entry of `owners`, inserted in bulk. */
export async function givenCheckouts(db: Kysely<Database>, owners: Account[]) {
  const ids = owners.map(() => stripeIds());
  const payments: Payment[] = [];
  for (let i = 0; i < owners.length; i += 1000) {
    const rows = await db
      .insertInto('payments')
      .values(
        owners.slice(i, i + 1000).map((owner, j) => ({
          account_id: owner.id,
          package_id: PACK.id,
          credits: PACK.credits,
          amount_total: PACK.amount,
          currency: PACK.currency,
          stripe_checkout_session_id: ids[i + j]!.session,
        })),
      )
      .returningAll()
      .execute();
    payments.push(...rows);
  }
  const bySession = new Map(payments.map((p) => [p.stripe_checkout_session_id, p]));
  return owners.map((owner, i) => checkoutEvents(owner, bySession.get(ids[i]!.session)!, ids[i]!));
}

/** Builders for every Stripe event a purchase can produce, shaped from Stripe's fixtures. */
function checkoutEvents(owner: Account, payment: Payment, ids: ReturnType<typeof stripeIds>) {
  const metadata = { payment_id: payment.id, user_id: owner.external_user_id!, package_id: PACK.id };
  const session = (overrides: Record<string, unknown> = {}) =>
    checkoutSession({
      id: ids.session,
      payment_intent: ids.intent,
      amount_total: PACK.amount,
      currency: PACK.currency,
      client_reference_id: owner.external_user_id,
      metadata,
      ...overrides,
    });
  const onCharge = { charge: ids.charge, payment_intent: ids.intent, currency: PACK.currency };
  return {
    account: owner,
    payment,
    ids,
    completed: (paymentStatus: 'paid' | 'unpaid' = 'paid') =>
      stripeEvent('checkout.session.completed', session({ payment_status: paymentStatus })),
    asyncSucceeded: () => stripeEvent('checkout.session.async_payment_succeeded', session()),
    asyncFailed: () =>
      stripeEvent('checkout.session.async_payment_failed', session({ payment_status: 'unpaid' })),
    expired: () =>
      stripeEvent(
        'checkout.session.expired',
        session({ status: 'expired', payment_status: 'unpaid', payment_intent: null }),
      ),
    intentSucceeded: () =>
      stripeEvent(
        'payment_intent.succeeded',
        paymentIntent({
          id: ids.intent,
          amount: PACK.amount,
          amount_received: PACK.amount,
          currency: PACK.currency,
          metadata,
        }),
      ),
    chargeRefunded: (amountRefunded: number) =>
      stripeEvent(
        'charge.refunded',
        charge({
          id: ids.charge,
          amount: PACK.amount,
          amount_refunded: amountRefunded,
          payment_intent: ids.intent,
          currency: PACK.currency,
          refunded: amountRefunded === PACK.amount,
        }),
      ),
    refundEvent: (
      type: 'refund.created' | 'refund.updated' | 'refund.failed',
      id: string,
      amount: number,
      status: string,
    ) => stripeEvent(type, refund({ id, amount, status, ...onCharge })),
    disputeEvent: (type: string, id: string, status: string, amount = PACK.amount) =>
      stripeEvent(type, dispute({ id, amount, status, ...onCharge })),
  };
}

export type Checkout = ReturnType<typeof checkoutEvents>;

type Worker = (
  event: ReturnType<typeof sqsEvent>,
  context: ReturnType<typeof lambdaContext>,
) => Promise<unknown>;
type BatchResponse = { batchItemFailures: Array<{ itemIdentifier: string }> };

/** Starts `worker` on `events` as one SQS batch; the message ids, and the batch response to await. */
export function processBatch(worker: Worker, events: object[]) {
  const batch = sqsEvent(events.map((e) => JSON.stringify(e)));
  const ids = batch.Records.map((r) => r.messageId);
  return { ids, response: worker(batch, lambdaContext('credit-worker')) as Promise<BatchResponse> };
}

/**
 * For a batch cut off by an outage: some records committed and some did not, and exactly the uncommitted
 * ones were reported as failures (nothing uncommitted was acknowledged). Returns the uncommitted events.
 */
export async function expectOnlyUncommittedFailed(
  db: Kysely<Database>,
  batch: { events: object[]; ids: string[]; response: BatchResponse },
): Promise<object[]> {
  const committed = new Set(
    (await db.selectFrom('processed_events').select('event_id').execute()).map((r) => r.event_id),
  );
  expect(committed.size).toBeGreaterThanOrEqual(3);
  expect(committed.size).toBeLessThan(batch.events.length);
  const uncommitted = batch.events
    .map((event, i) => [event, batch.ids[i]!] as const)
    .filter(([event]) => !committed.has(String((event as { id: unknown }).id)));
  const failed = batch.response.batchItemFailures.map((f) => f.itemIdentifier);
  expect(failed.sort()).toEqual(uncommitted.map(([, id]) => id).sort());
  return uncommitted.map(([event]) => event);
}

/** Delivers `events` as one SQS batch to `worker`; returns its batch response. */
export function deliver(worker: Worker, events: object[]): Promise<BatchResponse> {
  return processBatch(worker, events).response;
}

/** What a purchase looks like from outside: the balance, the payment, and the net credits taken back. */
export async function purchaseState(db: Kysely<Database>, checkout: Checkout) {
  const account = await db
    .selectFrom('accounts')
    .select('balance')
    .where('id', '=', checkout.account.id)
    .executeTakeFirstOrThrow();
  const payment = await db
    .selectFrom('payments')
    .select(['status', 'amount_refunded', 'disputed', 'stripe_payment_intent_id'])
    .where('id', '=', checkout.payment.id)
    .executeTakeFirstOrThrow();
  const sums = await db
    .selectFrom('ledger_entries')
    .select(['kind', (eb) => eb.fn.sum<number>('amount').as('total')])
    .where('payment_id', '=', checkout.payment.id)
    .groupBy('kind')
    .execute();
  const net = (...kinds: string[]) =>
    sums.filter((s) => kinds.includes(s.kind)).reduce((t, s) => t + Number(s.total), 0);
  return {
    balance: account.balance,
    ...payment,
    purchased: net('purchase'),
    refundTaken: 0 - net('refund_clawback', 'refund_reversal'),
    disputeTaken: 0 - net('dispute_clawback', 'dispute_reinstatement'),
  };
}
