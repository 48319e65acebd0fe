import { sql } from 'kysely';
import type { Trx } from '../db/locks.js';

/**
 * What Stripe has told us about one payment intent's refunds and disputes. Merging is commutative,
 * associative and idempotent, so any order and any repetition of events yields the same facts.
 */
export interface ChargeFacts {
  /** The highest `charge.amount_refunded` seen (a running total at the time of its event). */
  chargeAmountRefunded: number;
  refunds: Record<string, { amount: number; status: RefundState }>;
  disputes: Record<string, { amount: number; state: DisputeState }>;
}

/** Ordered by how far a refund has gone; failed and canceled are final. */
export type RefundState = 'pending' | 'succeeded' | 'failed';
/** open: an inquiry, no money moved; withdrawn: funds taken; reinstated: funds returned (won). */
export type DisputeState = 'open' | 'withdrawn' | 'reinstated';

const REFUND_RANK: Record<RefundState, number> = { pending: 0, succeeded: 1, failed: 2 };
const DISPUTE_RANK: Record<DisputeState, number> = { open: 0, withdrawn: 1, reinstated: 2 };

export const EMPTY_FACTS: ChargeFacts = { chargeAmountRefunded: 0, refunds: {}, disputes: {} };

export const isEmptyFacts = (facts: ChargeFacts) =>
  facts.chargeAmountRefunded === 0 &&
  Object.keys(facts.refunds).length === 0 &&
  Object.keys(facts.disputes).length === 0;

export function refundState(stripeStatus: string | null): RefundState {
  if (stripeStatus === 'failed' || stripeStatus === 'canceled') return 'failed';
  return stripeStatus === 'succeeded' ? 'succeeded' : 'pending';
}

/** The dispute state an event proves: funds move on creation (not for inquiries), back when won. */
export function disputeState(eventType: string, stripeStatus: string): DisputeState {
  if (eventType === 'charge.dispute.funds_reinstated' || stripeStatus === 'won') return 'reinstated';
  if (stripeStatus.startsWith('warning_')) return 'open';
  return 'withdrawn';
}

export function mergeFacts(a: ChargeFacts, b: Partial<ChargeFacts>): ChargeFacts {
  const refunds = { ...a.refunds };
  for (const [id, refund] of Object.entries(b.refunds ?? {})) {
    const known = refunds[id];
    refunds[id] = !known || REFUND_RANK[refund.status] > REFUND_RANK[known.status] ? refund : known;
  }
  const disputes = { ...a.disputes };
  for (const [id, dispute] of Object.entries(b.disputes ?? {})) {
    const known = disputes[id];
    disputes[id] = !known || DISPUTE_RANK[dispute.state] > DISPUTE_RANK[known.state] ? dispute : known;
  }
  return {
    chargeAmountRefunded: Math.max(a.chargeAmountRefunded, b.chargeAmountRefunded ?? 0),
    refunds,
    disputes,
  };
}

/**
 * The amount refunded, in minor units, within [0, amountTotal]: the refunds known one by one that have not
 * failed, or the charge's running total less the refunds known to have failed, whichever is larger.
 */
export function effectiveRefunded(facts: ChargeFacts, amountTotal: number): number {
  const refunds = Object.values(facts.refunds);
  const active = refunds.filter((r) => r.status !== 'failed').reduce((sum, r) => sum + r.amount, 0);
  const failed = refunds.filter((r) => r.status === 'failed').reduce((sum, r) => sum + r.amount, 0);
  return Math.min(amountTotal, Math.max(0, active, facts.chargeAmountRefunded - failed));
}

export function disputeActive(facts: ChargeFacts): boolean {
  return Object.values(facts.disputes).some((d) => d.state === 'withdrawn');
}

/**
 * The only writer of `stripe_charge_facts`: merges `update` into the facts of a payment intent and returns
 * the result. Caller holds the intent's payment lock.
 */
export async function recordChargeFacts(
  trx: Trx,
  intentId: string,
  update: Partial<ChargeFacts>,
): Promise<ChargeFacts> {
  const row = await trx
    .selectFrom('stripe_charge_facts')
    .selectAll()
    .where('payment_intent_id', '=', intentId)
    .executeTakeFirst();
  const known: ChargeFacts = row
    ? {
        chargeAmountRefunded: row.charge_amount_refunded,
        refunds: row.refunds as ChargeFacts['refunds'],
        disputes: row.disputes as ChargeFacts['disputes'],
      }
    : EMPTY_FACTS;
  const facts = mergeFacts(known, update);
  const stored = {
    charge_amount_refunded: facts.chargeAmountRefunded,
    refunds: JSON.stringify(facts.refunds),
    disputes: JSON.stringify(facts.disputes),
  };
  await trx
    .insertInto('stripe_charge_facts')
    .values({ payment_intent_id: intentId, ...stored })
    .onConflict((oc) => oc.column('payment_intent_id').doUpdateSet({ ...stored, updated_at: sql`now()` }))
    .execute();
  return facts;
}
