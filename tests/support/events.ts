import { fixture, randomToken, webhookRequest } from '../../local/bench/events.js';
import { signPayload } from '../../local/stripe-emulator/webhooks.js';

// One implementation of the Stripe / AWS event factories, shared with the benchmark (which imports no tests).
export {
  checkoutSession,
  fixture,
  lambdaContext,
  sqsEvent,
  stripeEvent,
  webhookRequest,
} from '../../local/bench/events.js';

/** Stripe ids for one purchase, unique per call. */
export function stripeIds() {
  const t = randomToken();
  return { session: `cs_test_${t}`, intent: `pi_${t}`, charge: `ch_${t}`, customer: `cus_${t}` };
}

type Obj = Record<string, unknown>;

export function paymentIntent(overrides: Obj): Obj {
  return { ...fixture('stripe/payment_intent.json'), status: 'succeeded', ...overrides };
}
export function charge(overrides: Obj): Obj {
  return { ...fixture('stripe/charge.json'), ...overrides };
}
export function refund(overrides: Obj): Obj {
  return { ...fixture('stripe/refund.json'), id: `re_${randomToken()}`, ...overrides };
}
export function dispute(overrides: Obj): Obj {
  return { ...fixture('stripe/dispute.json'), ...overrides };
}

/** A webhook request signed as Stripe signs it. */
export function signedWebhookRequest(event: Obj, secret: string, options: { base64?: boolean } = {}) {
  const body = JSON.stringify(event, null, 2);
  return webhookRequest(body, { 'stripe-signature': signPayload(body, secret) }, options);
}
