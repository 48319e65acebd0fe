import { describe, expect, it } from 'vitest';
import type { LocalStack } from '../../local/stack.js';
import { createStripeClient } from '../../shared/stripe/client.js';
import { expectInvariantsHold } from '../support/invariants.js';
import { startStackForTest } from '../support/local-stack.js';
import { STRIPE_KEY, waitFor } from '../support/stripe.js';

const withCodes = await startStackForTest({ allowPromotionCodes: true });
const withoutCodes = await startStackForTest();

/** The stripe SDK against a stack's emulator, as an operator creating coupons in the dashboard would. */
const stripeOf = (stack: LocalStack) =>
  createStripeClient({ secretKey: STRIPE_KEY, apiBase: stack.stripeUrl!, maxNetworkRetries: 0 });

/** Every event the emulator sent is delivered and the worker has processed (deleted) every message. */
const settled = (stack: LocalStack) => () =>
  stack.emulator!.webhooks.status().pending === 0 &&
  stack.emulator!.webhooks.status().inFlight === 0 &&
  stack.queue.main.length === 0;

const sessionIdOf = (checkoutUrl: unknown) => new URL(String(checkoutUrl)).pathname.split('/').pop()!;

describe('Stripe promotion codes at checkout, on the local stack', () => {
  it('credits a pack bought with a 50%-off promotion code in full, exactly once, with every invariant holding', async () => {
    const { stack, db, asUser } = withCodes;
    const stripe = stripeOf(stack);
    const coupon = await stripe.coupons.create({ percent_off: 50, duration: 'once' });
    await stripe.promotionCodes.create({
      promotion: { type: 'coupon', coupon: coupon.id },
      code: 'HALFPACK',
    });
    const user = 'e2e-promo-buyer';
    const checkout = await asUser(user, 'POST', '/v1/checkout', { packageId: 'pack_small' });
    expect(checkout.status).toBe(201);
    const checkoutUrl = String(checkout.body.checkoutUrl);
    expect((await stripe.checkout.sessions.retrieve(sessionIdOf(checkoutUrl))).allow_promotion_codes).toBe(
      true,
    );
    const page = await (await fetch(`${checkoutUrl}?promotion_code=halfpack`)).text();
    expect(page).toContain('<div class="amount" data-testid="amount">2.50 USD</div>');

    const paid = await fetch(`${checkoutUrl}/pay`, {
      method: 'POST',
      body: new URLSearchParams({ method: 'card', promotion_code: 'halfpack' }),
      redirect: 'manual',
    });

    expect(paid.status).toBe(303);
    const session = await stripe.checkout.sessions.retrieve(sessionIdOf(checkoutUrl), {
      expand: ['payment_intent'],
    });
    expect(session).toMatchObject({
      payment_status: 'paid',
      amount_subtotal: 500,
      amount_total: 250,
      total_details: { amount_discount: 250 },
      payment_intent: { amount: 250, amount_received: 250 },
    });
    await waitFor(async () => {
      const credits = await asUser(user, 'GET', '/v1/me/credits');
      return credits.body.balance === 1000;
    }, 'the discounted purchase to be credited');
    // A redelivered completion must not credit the pack a second time.
    const completed = await stripe.events.list({ type: 'checkout.session.completed', limit: 100 });
    const event = completed.data.find((e) => (e.data.object as { id: string }).id === session.id)!;
    const redelivery = await fetch(`${stack.stripeUrl}/_emulator/events/${event.id}/redeliver`, {
      method: 'POST',
    });
    expect(redelivery.status).toBe(200);
    await waitFor(settled(stack), 'every event, the redelivery included, to be processed');

    expect((await asUser(user, 'GET', '/v1/me/credits')).body.balance).toBe(1000);
    const account = await db
      .selectFrom('accounts')
      .select('id')
      .where('external_user_id', '=', user)
      .executeTakeFirstOrThrow();
    const purchases = await db
      .selectFrom('ledger_entries')
      .select(['amount', 'payment_id'])
      .where('account_id', '=', account.id)
      .where('kind', '=', 'purchase')
      .execute();
    expect(purchases).toEqual([{ amount: 1000, payment_id: checkout.body.paymentId }]);
    const payment = await db
      .selectFrom('payments')
      .select(['status', 'credits', 'amount_total', 'stripe_checkout_session_id'])
      .where('id', '=', String(checkout.body.paymentId))
      .executeTakeFirstOrThrow();
    expect(payment).toEqual({
      status: 'CREDITED',
      credits: 1000,
      amount_total: 500,
      stripe_checkout_session_id: session.id,
    });
    const parked = await db
      .selectFrom('processed_events')
      .select(['event_type', 'reason'])
      .where('outcome', '=', 'parked')
      .execute();
    expect(parked).toEqual([]);
    await expectInvariantsHold(db);
  });

  it('creates sessions that allow no promotion codes without ALLOW_PROMOTION_CODES, and refuses a code on them', async () => {
    const { stack, asUser } = withoutCodes;
    const stripe = stripeOf(stack);
    const coupon = await stripe.coupons.create({ percent_off: 50 });
    await stripe.promotionCodes.create({
      promotion: { type: 'coupon', coupon: coupon.id },
      code: 'HALFPACK',
    });
    const user = 'e2e-no-promo-buyer';

    const checkout = await asUser(user, 'POST', '/v1/checkout', { packageId: 'pack_small' });

    expect(checkout.status).toBe(201);
    const sessionId = sessionIdOf(checkout.body.checkoutUrl);
    const session = await stripe.checkout.sessions.retrieve(sessionId);
    // Left out of the create call, so null on Stripe.
    expect(session.allow_promotion_codes).toBeNull();
    expect(await (await fetch(String(checkout.body.checkoutUrl))).text()).not.toContain('promotion-code');
    const refused = await fetch(`${stack.stripeUrl}/_emulator/checkout/sessions/${sessionId}/complete`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ outcome: 'paid', promotion_code: 'HALFPACK' }),
    });
    expect(refused.status).toBe(400);
    expect(await refused.json()).toMatchObject({
      error: { type: 'invalid_request_error', param: 'promotion_code' },
    });
    expect(await stripe.checkout.sessions.retrieve(sessionId)).toMatchObject({
      status: 'open',
      amount_total: 500,
    });
  });
});
