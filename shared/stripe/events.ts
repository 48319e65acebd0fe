import * as z from 'zod';

/** The Stripe event types the service acts on; intake acknowledges every other type without enqueueing it. */
export const HANDLED_EVENT_TYPES = [
  'checkout.session.completed',
  'checkout.session.async_payment_succeeded',
  'checkout.session.async_payment_failed',
  'checkout.session.expired',
  'payment_intent.succeeded',
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

/** The envelope every Stripe event has; `data.object` is validated per type by the worker. */
export const stripeEventSchema = z
  .object({
    id: z.string().regex(/^evt_\w+$/),
    object: z.literal('event'),
    type: z.string().min(1).max(100),
    livemode: z.boolean(),
    created: z.number().int().nonnegative(),
    data: z.object({ object: z.record(z.string(), z.unknown()) }).loose(),
  })
  .loose();
export type StripeEvent = z.infer<typeof stripeEventSchema>;

const id = (prefix: string) => z.string().regex(new RegExp(`^${prefix}_\\w+$`));
const amount = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const metadata = z.record(z.string(), z.string()).default({});
/** Webhooks carry ids for related objects; an expanded object is reduced to its id. */
const ref = (prefix: string) =>
  z.preprocess(
    (v) => (v && typeof v === 'object' && 'id' in v ? (v as { id: unknown }).id : v),
    id(prefix).nullable(),
  );

export const checkoutSessionSchema = z.object({
  id: id('cs'),
  amount_total: amount.nullable(),
  currency: z.string().nullable(),
  payment_status: z.enum(['paid', 'unpaid', 'no_payment_required']),
  status: z.enum(['open', 'complete', 'expired']).nullable(),
  payment_intent: ref('pi').default(null),
  client_reference_id: z.string().nullable().default(null),
  metadata: metadata.nullable().transform((m) => m ?? {}),
});
export type CheckoutSession = z.infer<typeof checkoutSessionSchema>;

export const paymentIntentSchema = z.object({
  id: id('pi'),
  amount,
  amount_received: amount.default(0),
  currency: z.string(),
  status: z.string(),
  metadata,
});
export type PaymentIntent = z.infer<typeof paymentIntentSchema>;

export const chargeSchema = z.object({
  id: id('ch'),
  amount,
  amount_refunded: amount,
  currency: z.string(),
  payment_intent: ref('pi').default(null),
});

export const refundSchema = z.object({
  id: id('re'),
  amount,
  currency: z.string(),
  status: z.string().nullable(),
  payment_intent: ref('pi').default(null),
});

export const disputeSchema = z.object({
  id: id('dp'),
  amount,
  currency: z.string(),
  status: z.string(),
  payment_intent: ref('pi').default(null),
});
