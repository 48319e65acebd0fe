// zod/mini: the webhook intake carries these schemas, and the classic API would double its bundle.
import * as z from 'zod/mini';

/** The Stripe event types the service acts on; intake acknowledges every other type without enqueueing it. */
export const HANDLED_EVENT_TYPES = [
  'checkout.session.completed',
  'checkout.session.async_payment_succeeded',
  'checkout.session.async_payment_failed',
  'checkout.session.expired',
  'payment_intent.succeeded',
  'payment_intent.payment_failed',
  'charge.refunded',
  'refund.created',
  'refund.updated',
  'refund.failed',
  'charge.dispute.created',
  'charge.dispute.funds_withdrawn',
  'charge.dispute.funds_reinstated',
  'charge.dispute.closed',
] as const;
export type HandledEventType = (typeof HANDLED_EVENT_TYPES)[number];

export function isHandledEventType(type: string): type is HandledEventType {
  return (HANDLED_EVENT_TYPES as readonly string[]).includes(type);
}

/**
 * How deep an event may nest. Stripe's own go about ten levels; one nested thousands deep is no event of
 * Stripe's, and storing it (a parked event keeps its payload) would overflow the stack.
 */
export const MAX_EVENT_DEPTH = 64;

/** The nesting depth of a parsed JSON value (a scalar is 0), without recursion. */
function depthOf(value: unknown): number {
  let deepest = 0;
  const pending: Array<[unknown, number]> = [[value, 0]];
  for (let next = pending.pop(); next; next = pending.pop()) {
    const [node, depth] = next;
    if (typeof node !== 'object' || node === null) continue;
    deepest = Math.max(deepest, depth + 1);
    if (deepest > MAX_EVENT_DEPTH) return deepest;
    for (const child of Object.values(node)) pending.push([child, depth + 1]);
  }
  return deepest;
}

/** The envelope every Stripe event has; `data.object` is validated per type by the worker. */
export const stripeEventSchema = z
  .looseObject({
    id: z.string().check(z.regex(/^evt_\w+$/)),
    object: z.literal('event'),
    // Stripe's types are dotted lowercase words; anything else is not an event of Stripe's (and may not be storable).
    type: z.string().check(z.regex(/^[a-z0-9_.]{1,100}$/)),
    livemode: z.boolean(),
    created: z.int().check(z.nonnegative()),
    data: z.looseObject({ object: z.record(z.string(), z.unknown()) }),
  })
  .check(
    z.refine((event) => depthOf(event) <= MAX_EVENT_DEPTH, `nests deeper than ${MAX_EVENT_DEPTH} levels`),
  );
export type StripeEvent = z.infer<typeof stripeEventSchema>;

const id = (prefix: string) => z.string().check(z.regex(new RegExp(`^${prefix}_\\w+$`)));
const amount = z.int().check(z.nonnegative());
const metadata = z._default(z.record(z.string(), z.string()), {});
/** Webhooks carry ids for related objects; an expanded object is reduced to its id. */
const ref = (prefix: string) =>
  z._default(
    z.pipe(
      z.transform((v: unknown) => (v && typeof v === 'object' && 'id' in v ? (v as { id: unknown }).id : v)),
      z.nullable(id(prefix)),
    ),
    null,
  );

export const checkoutSessionSchema = z.object({
  id: id('cs'),
  amount_total: z.nullable(amount),
  /** Before discounts; with a promotion code, amount_total is this less total_details.amount_discount. */
  amount_subtotal: z._default(z.nullable(amount), null),
  total_details: z._default(z.nullable(z.object({ amount_discount: z._default(amount, 0) })), null),
  currency: z.nullable(z.string()),
  payment_status: z.enum(['paid', 'unpaid', 'no_payment_required']),
  status: z.nullable(z.enum(['open', 'complete', 'expired'])),
  payment_intent: ref('pi'),
  client_reference_id: z._default(z.nullable(z.string()), null),
  customer: ref('cus'),
  metadata: z.pipe(
    z.nullable(metadata),
    z.transform((m) => m ?? {}),
  ),
});
export type CheckoutSession = z.infer<typeof checkoutSessionSchema>;

export const paymentIntentSchema = z.object({
  id: id('pi'),
  amount,
  amount_received: z._default(amount, 0),
  currency: z.string(),
  status: z.string(),
  created: z._default(z.int().check(z.nonnegative()), 0),
  customer: ref('cus'),
  payment_method: ref('pm'),
  /** off_session: the card is saved on the customer for payments without the buyer (auto top-up). */
  setup_future_usage: z._default(z.nullable(z.string()), null),
  latest_charge: ref('ch'),
  /** Why the last attempt failed (payment_intent.payment_failed): Stripe's code, e.g. card_declined. */
  last_payment_error: z._default(
    z.nullable(
      z.looseObject({
        code: z._default(z.nullable(z.string()), null),
        decline_code: z._default(z.nullable(z.string()), null),
        message: z._default(z.nullable(z.string()), null),
      }),
    ),
    null,
  ),
  metadata,
});
export type PaymentIntent = z.infer<typeof paymentIntentSchema>;

export const chargeSchema = z.object({
  id: id('ch'),
  amount,
  amount_refunded: amount,
  currency: z.string(),
  payment_intent: ref('pi'),
});

export const refundSchema = z.object({
  id: id('re'),
  amount,
  currency: z.string(),
  status: z.nullable(z.string()),
  payment_intent: ref('pi'),
});

export const disputeSchema = z.object({
  id: id('dp'),
  amount,
  currency: z.string(),
  status: z.string(),
  payment_intent: ref('pi'),
});
