import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Stripe from 'stripe';
import { beforeEach, describe, expect, it, onTestFinished } from 'vitest';
import { startStripeEmulator } from '../../local/stripe-emulator/server.js';
import { createStripeClient } from '../../shared/stripe/client.js';
import {
  control,
  STRIPE_KEY,
  startEmulatorForTest,
  startWebhookReceiver,
  WEBHOOK_SECRET,
  waitFor,
} from '../support/stripe.js';

const verifier = createStripeClient({ secretKey: STRIPE_KEY });
const receiver = await startWebhookReceiver((body, signature) =>
  verifier.webhooks.constructEvent(body, signature, WEBHOOK_SECRET),
);
const { emulator, stripe } = await startEmulatorForTest({ webhookEndpoint: receiver.url });

const sessionParams = (
  overrides: Partial<Stripe.Checkout.SessionCreateParams> = {},
): Stripe.Checkout.SessionCreateParams => ({
  mode: 'payment',
  line_items: [
    {
      quantity: 1,
      price_data: { currency: 'usd', unit_amount: 1000, product_data: { name: '1,000 credits' } },
    },
  ],
  success_url: 'http://127.0.0.1:3000/?checkout=success&session={CHECKOUT_SESSION_ID}',
  cancel_url: 'http://127.0.0.1:3000/?checkout=cancelled',
  client_reference_id: 'user-1',
  metadata: { user_id: 'user-1', package_id: 'pack_1000' },
  payment_intent_data: { metadata: { user_id: 'user-1' } },
  ...overrides,
});

const typesFor = (objectId: string) =>
  receiver.received
    .filter((r) => JSON.stringify(r.event.data.object).includes(objectId))
    .map((r) => r.event.type);

beforeEach(() => {
  receiver.failNext(0);
});

describe('checkout with the real stripe SDK', () => {
  it('creates a session, pays it, and delivers webhooks that verify with constructEvent', async () => {
    const session = await stripe.checkout.sessions.create(sessionParams());
    expect(session).toMatchObject({
      object: 'checkout.session',
      status: 'open',
      payment_status: 'unpaid',
      amount_total: 1000,
      currency: 'usd',
      livemode: false,
    });
    expect(session.id).toMatch(/^cs_test_/);
    expect(session.url).toBe(`${emulator.url}/checkout/${session.id}`);

    await control(emulator, `checkout/sessions/${session.id}/complete`, { outcome: 'paid' });

    await waitFor(
      () => typesFor(session.id).includes('checkout.session.completed'),
      'checkout.session.completed',
    );
    const completed = receiver.received.find(
      (r) =>
        r.event.type === 'checkout.session.completed' &&
        (r.event.data.object as Stripe.Checkout.Session).id === session.id,
    )!;
    expect(completed.signature).toMatch(/^t=\d+,v1=[0-9a-f]{64}$/);
    const paid = completed.event.data.object as Stripe.Checkout.Session;
    expect(paid).toMatchObject({
      status: 'complete',
      payment_status: 'paid',
      metadata: { user_id: 'user-1', package_id: 'pack_1000' },
    });
    const intent = await stripe.paymentIntents.retrieve(String(paid.payment_intent));
    expect(intent).toMatchObject({
      status: 'succeeded',
      amount_received: 1000,
      metadata: { user_id: 'user-1' },
    });
    await waitFor(
      () =>
        typesFor(intent.id).includes('payment_intent.succeeded') &&
        typesFor(intent.id).includes('charge.succeeded'),
      'intent events',
    );
    expect(() =>
      verifier.webhooks.constructEvent(completed.body, completed.signature, 'whsec_other'),
    ).toThrow(Stripe.errors.StripeSignatureVerificationError);
  });

  it('serves the hosted page and redirects to the success and cancel URLs', async () => {
    const session = await stripe.checkout.sessions.create(sessionParams());
    const page = await (await fetch(session.url!)).text();
    expect(page).toContain('Pay with card');
    expect(page).toContain('10.00 USD');
    const paid = await fetch(`${session.url}/pay`, {
      method: 'POST',
      body: new URLSearchParams({ method: 'card' }),
      redirect: 'manual',
    });
    expect(paid.status).toBe(303);
    expect(paid.headers.get('location')).toBe(
      `http://127.0.0.1:3000/?checkout=success&session=${session.id}`,
    );
    expect((await stripe.checkout.sessions.retrieve(session.id)).payment_status).toBe('paid');

    const other = await stripe.checkout.sessions.create(sessionParams());
    const cancelled = await fetch(`${other.url}/cancel`, { method: 'POST', redirect: 'manual' });
    expect(cancelled.headers.get('location')).toBe('http://127.0.0.1:3000/?checkout=cancelled');
    expect((await stripe.checkout.sessions.retrieve(other.id)).status).toBe('open');
  });

  it('settles a delayed method later, succeeding or failing', async () => {
    const good = await stripe.checkout.sessions.create(sessionParams());
    await fetch(`${good.url}/pay`, {
      method: 'POST',
      body: new URLSearchParams({ method: 'delayed_success' }),
      redirect: 'manual',
    });
    const bad = await stripe.checkout.sessions.create(sessionParams());
    await control(emulator, `checkout/sessions/${bad.id}/complete`, { outcome: 'async_pending' });
    expect(await stripe.checkout.sessions.retrieve(bad.id)).toMatchObject({
      status: 'complete',
      payment_status: 'unpaid',
    });
    await control(emulator, `checkout/sessions/${bad.id}/complete`, { outcome: 'async_failed' });
    await waitFor(
      () => typesFor(good.id).includes('checkout.session.async_payment_succeeded'),
      'async success',
    );
    await waitFor(() => typesFor(bad.id).includes('checkout.session.async_payment_failed'), 'async failure');
    expect(typesFor(good.id)).toEqual([
      'checkout.session.completed',
      'checkout.session.async_payment_succeeded',
    ]);
    expect(typesFor(bad.id)).toEqual(['checkout.session.completed', 'checkout.session.async_payment_failed']);
  });

  it('expires an open session once, with its event, and refuses to expire it again', async () => {
    const session = await stripe.checkout.sessions.create(sessionParams());
    const expired = await stripe.checkout.sessions.expire(session.id);
    expect(expired).toMatchObject({ status: 'expired', url: null });
    await expect(stripe.checkout.sessions.expire(session.id)).rejects.toBeInstanceOf(
      Stripe.errors.StripeInvalidRequestError,
    );
    await waitFor(() => typesFor(session.id).includes('checkout.session.expired'), 'expired event');
  });
});

describe('lists', () => {
  it('auto-paginates 250 sessions and filters by created', async () => {
    const { emulator: fresh, stripe: client } = await startEmulatorForTest();
    const created = new Set<string>();
    for (let i = 0; i < 250; i++) created.add((await client.checkout.sessions.create(sessionParams())).id);
    const seen: string[] = [];
    for await (const session of client.checkout.sessions.list({ limit: 100 })) seen.push(session.id);
    expect(seen).toHaveLength(250);
    expect(new Set(seen)).toEqual(created);
    const firstPage = await client.checkout.sessions.list({ limit: 3 });
    expect(firstPage.has_more).toBe(true);
    const back = await client.checkout.sessions.list({ limit: 2, ending_before: firstPage.data[2]!.id });
    expect(back.data.map((s) => s.id)).toEqual(firstPage.data.slice(0, 2).map((s) => s.id));
    const future = await client.checkout.sessions.list({
      created: { gte: Math.floor(Date.now() / 1000) + 3600 },
    });
    expect(future.data).toEqual([]);
    expect(fresh.emulator.store.count('checkout.session')).toBe(250);
  });

  it("rejects an out-of-range limit with Stripe's error shape", async () => {
    const response = await fetch(`${emulator.url}/v1/events?limit=101`, {
      headers: { authorization: `Bearer ${STRIPE_KEY}` },
    });
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ error: { type: 'invalid_request_error', param: 'limit' } });
  });
});

describe('idempotency and errors', () => {
  it('replays the first response for the same key and parameters, and conflicts on other parameters', async () => {
    const first = await stripe.checkout.sessions.create(sessionParams(), {
      idempotencyKey: 'checkout-payment-1',
    });
    const again = await stripe.checkout.sessions.create(sessionParams(), {
      idempotencyKey: 'checkout-payment-1',
    });
    expect(again.id).toBe(first.id);
    const conflict = stripe.checkout.sessions.create(sessionParams({ client_reference_id: 'user-2' }), {
      idempotencyKey: 'checkout-payment-1',
    });
    await expect(conflict).rejects.toBeInstanceOf(Stripe.errors.StripeIdempotencyError);
  });

  it('answers unknown objects with resource_missing and requests without a key with 401', async () => {
    await expect(stripe.checkout.sessions.retrieve('cs_test_nope')).rejects.toMatchObject({
      statusCode: 404,
      code: 'resource_missing',
    });
    const response = await fetch(`${emulator.url}/v1/events`);
    expect(response.status).toBe(401);
    expect(await response.json()).toMatchObject({ error: { type: 'authentication_error' } });
  });

  it('passes injected 429 and 500 answers to the SDK, then recovers', async () => {
    await control(emulator, 'faults', { status: 429, count: 1 });
    await expect(stripe.events.list()).rejects.toBeInstanceOf(Stripe.errors.StripeRateLimitError);
    await control(emulator, 'faults', { status: 500, count: 2 });
    await expect(stripe.events.list()).rejects.toBeInstanceOf(Stripe.errors.StripeAPIError);
    await expect(stripe.events.list()).rejects.toMatchObject({ statusCode: 500 });
    await expect(stripe.events.list()).resolves.toMatchObject({ object: 'list' });
  });
});

describe('refunds and disputes', () => {
  async function paidCharge() {
    const session = await stripe.checkout.sessions.create(sessionParams());
    await control(emulator, `checkout/sessions/${session.id}/complete`, { outcome: 'paid' });
    const intent = await stripe.paymentIntents.retrieve(
      String((await stripe.checkout.sessions.retrieve(session.id)).payment_intent),
    );
    return stripe.charges.retrieve(String(intent.latest_charge));
  }

  it('refunds in parts with cumulative totals, and a failed refund lowers the total again', async () => {
    const charge = await paidCharge();
    const first = await stripe.refunds.create({ charge: charge.id, amount: 300 });
    const second = await stripe.refunds.create({
      payment_intent: String(charge.payment_intent),
      amount: 200,
    });
    await expect(stripe.refunds.create({ charge: charge.id, amount: 501 })).rejects.toMatchObject({
      code: 'amount_too_large',
    });
    expect(await stripe.charges.retrieve(charge.id)).toMatchObject({ amount_refunded: 500, refunded: false });
    await control(emulator, `refunds/${second.id}/fail`);
    expect(await stripe.refunds.retrieve(second.id)).toMatchObject({ status: 'failed' });
    expect((await stripe.charges.retrieve(charge.id)).amount_refunded).toBe(300);
    const listed = await stripe.refunds.list({ charge: charge.id });
    expect(listed.data.map((r) => r.id)).toEqual([second.id, first.id]);

    await waitFor(() => typesFor(second.id).includes('refund.failed'), 'refund.failed');
    const refundedTotals = receiver.received
      .filter(
        (r) => r.event.type === 'charge.refunded' && (r.event.data.object as Stripe.Charge).id === charge.id,
      )
      .map((r) => (r.event.data.object as Stripe.Charge).amount_refunded);
    expect(refundedTotals).toEqual([300, 500]);
    expect(typesFor(first.id)).toContain('refund.created');
  });

  it('opens a dispute, withdraws funds, and reinstates them when won', async () => {
    const charge = await paidCharge();
    const dispute = await control<{ id: string }>(emulator, `charges/${charge.id}/dispute`);
    await control(emulator, `disputes/${dispute.id}/close`, { outcome: 'won' });
    expect(await stripe.disputes.retrieve(dispute.id)).toMatchObject({
      status: 'won',
      charge: charge.id,
      amount: 1000,
    });
    expect((await stripe.disputes.list({ charge: charge.id })).data).toHaveLength(1);
    await waitFor(() => typesFor(dispute.id).length === 4, 'four dispute events');
    expect(typesFor(dispute.id)).toEqual([
      'charge.dispute.created',
      'charge.dispute.funds_withdrawn',
      'charge.dispute.funds_reinstated',
      'charge.dispute.closed',
    ]);
    const lost = await control<{ id: string }>(emulator, `charges/${(await paidCharge()).id}/dispute`);
    await control(emulator, `disputes/${lost.id}/close`, { outcome: 'lost' });
    await waitFor(() => typesFor(lost.id).includes('charge.dispute.closed'), 'lost dispute closed');
    expect(typesFor(lost.id)).not.toContain('charge.dispute.funds_reinstated');
  });
});

describe('webhook delivery', () => {
  it('holds events while paused and delivers them after resume', async () => {
    await control(emulator, 'webhooks/pause');
    const session = await stripe.checkout.sessions.create(sessionParams());
    await control(emulator, `checkout/sessions/${session.id}/complete`, { outcome: 'paid' });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(typesFor(session.id)).toEqual([]);
    const events = await stripe.events.list({ type: 'checkout.session.completed', limit: 1 });
    expect((events.data[0]!.data.object as Stripe.Checkout.Session).id).toBe(session.id);
    await control(emulator, 'webhooks/resume');
    await waitFor(() => typesFor(session.id).includes('checkout.session.completed'), 'delivery after resume');
  });

  it('retries non-2xx answers with backoff until delivered, and redelivers on request', async () => {
    const failuresBefore = emulator.webhooks.log.filter((d) => d.status === 500).length;
    receiver.failNext(2);
    const session = await stripe.checkout.sessions.create(sessionParams());
    await stripe.checkout.sessions.expire(session.id);
    await waitFor(() => typesFor(session.id).includes('checkout.session.expired'), 'delivery after retries');
    const failures = emulator.webhooks.log.slice(failuresBefore).filter((d) => d.status === 500);
    expect(failures.map((d) => [d.type, d.attempt])).toEqual([
      ['checkout.session.expired', 1],
      ['checkout.session.expired', 2],
    ]);
    const event = receiver.received.find(
      (r) =>
        r.event.type === 'checkout.session.expired' &&
        (r.event.data.object as { id: string }).id === session.id,
    )!.event;
    await control(emulator, `events/${event.id}/redeliver`);
    await waitFor(() => receiver.received.filter((r) => r.event.id === event.id).length === 2, 'redelivery');
  });

  it('duplicates deliveries under chaos', async () => {
    await control(emulator, 'chaos', { duplicate_rate: 1, reorder: true });
    const session = await stripe.checkout.sessions.create(sessionParams());
    await control(emulator, `checkout/sessions/${session.id}/complete`, { outcome: 'paid' });
    await waitFor(
      () => typesFor(session.id).filter((t) => t === 'checkout.session.completed').length === 2,
      'duplicate',
    );
    await control(emulator, 'chaos', { duplicate_rate: 0, reorder: false });
  });
});

/** The control call that pays a session, answered as it is (status and Stripe's error shape). */
async function completeSession(sessionId: string, body: Record<string, string>) {
  const response = await fetch(`${emulator.url}/_emulator/checkout/sessions/${sessionId}/complete`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

/** A coupon and one promotion code for it, with a code unique to the test. */
async function promotionCodeFor(
  coupon: Stripe.CouponCreateParams,
  code: Partial<Stripe.PromotionCodeCreateParams> = {},
) {
  const created = await stripe.coupons.create(coupon);
  const promotionCode = await stripe.promotionCodes.create({
    promotion: { type: 'coupon', coupon: created.id },
    code: `CODE-${Math.random().toString(36).slice(2, 10).toUpperCase()}`,
    ...code,
  });
  return { coupon: created, promotionCode };
}

describe('coupons and promotion codes with the real stripe SDK', () => {
  it('creates, retrieves and lists coupons, and refuses a coupon Stripe would refuse', async () => {
    const redeemBy = Math.floor(Date.now() / 1000) + 86_400;
    const half = await stripe.coupons.create({
      percent_off: 50,
      duration: 'once',
      max_redemptions: 10,
      redeem_by: redeemBy,
      name: 'Half off',
    });
    const fiver = await stripe.coupons.create({ id: 'FIVE-OFF', amount_off: 500, currency: 'USD' });

    expect(half).toMatchObject({
      object: 'coupon',
      percent_off: 50,
      amount_off: null,
      currency: null,
      duration: 'once',
      max_redemptions: 10,
      redeem_by: redeemBy,
      name: 'Half off',
      times_redeemed: 0,
      valid: true,
      livemode: false,
    });
    expect(fiver).toMatchObject({ id: 'FIVE-OFF', amount_off: 500, currency: 'usd', percent_off: null });
    expect((await stripe.coupons.retrieve(half.id)).name).toBe('Half off');
    expect((await stripe.coupons.list({ limit: 2 })).data.map((c) => c.id)).toEqual([fiver.id, half.id]);
    await expect(
      stripe.coupons.create({ percent_off: 10, amount_off: 100, currency: 'usd' }),
    ).rejects.toMatchObject({ statusCode: 400, param: 'percent_off' });
    await expect(stripe.coupons.create({ amount_off: 100 })).rejects.toMatchObject({
      statusCode: 400,
      param: 'currency',
    });
    await expect(stripe.coupons.create({ percent_off: 101 })).rejects.toBeInstanceOf(
      Stripe.errors.StripeInvalidRequestError,
    );
    await expect(
      stripe.coupons.create({ id: 'FIVE-OFF', amount_off: 1, currency: 'usd' }),
    ).rejects.toMatchObject({ statusCode: 400, code: 'resource_already_exists' });
    await expect(stripe.coupons.retrieve('NOPE')).rejects.toMatchObject({
      statusCode: 404,
      code: 'resource_missing',
    });
  });

  it('creates, retrieves and lists promotion codes, filtered by code (any case) and active', async () => {
    const { coupon, promotionCode } = await promotionCodeFor(
      { percent_off: 25 },
      { code: 'Spring-25', max_redemptions: 3, metadata: { campaign: 'spring' } },
    );
    const paused = await stripe.promotionCodes.create({
      promotion: { type: 'coupon', coupon: coupon.id },
      code: 'SPRING-PAUSED',
      active: false,
    });

    expect(promotionCode).toMatchObject({
      object: 'promotion_code',
      code: 'Spring-25',
      active: true,
      promotion: { type: 'coupon', coupon: coupon.id },
      max_redemptions: 3,
      times_redeemed: 0,
      expires_at: null,
      customer: null,
      restrictions: { first_time_transaction: false, minimum_amount: null, minimum_amount_currency: null },
      metadata: { campaign: 'spring' },
    });
    expect(promotionCode.id).toMatch(/^promo_/);
    expect((await stripe.promotionCodes.retrieve(promotionCode.id)).code).toBe('Spring-25');
    expect((await stripe.promotionCodes.list({ code: 'spring-25' })).data.map((p) => p.id)).toEqual([
      promotionCode.id,
    ]);
    const inactive = (await stripe.promotionCodes.list({ active: false, limit: 100 })).data.map((p) => p.id);
    expect(inactive).toContain(paused.id);
    expect(inactive).not.toContain(promotionCode.id);
    expect((await stripe.promotionCodes.list({ coupon: coupon.id })).data.map((p) => p.id)).toEqual([
      paused.id,
      promotionCode.id,
    ]);
    await expect(
      stripe.promotionCodes.create({ promotion: { type: 'coupon', coupon: coupon.id }, code: 'SPRING-25' }),
    ).rejects.toMatchObject({ statusCode: 400, code: 'resource_already_exists', param: 'code' });
    await expect(
      stripe.promotionCodes.create({ promotion: { type: 'coupon', coupon: 'NO-SUCH' } }),
    ).rejects.toMatchObject({ statusCode: 400, code: 'resource_missing', param: 'promotion[coupon]' });
    const generated = await stripe.promotionCodes.create({
      promotion: { type: 'coupon', coupon: coupon.id },
    });
    expect(generated.code).toMatch(/^[A-Z0-9]{8}$/);
  });

  it('completes a session with a code: the discounted total, its discount, and one redemption counted', async () => {
    const { coupon, promotionCode } = await promotionCodeFor({ percent_off: 50 }, { code: 'HALF-CHECKOUT' });
    const session = await stripe.checkout.sessions.create(sessionParams({ allow_promotion_codes: true }));
    expect(session).toMatchObject({
      allow_promotion_codes: true,
      amount_subtotal: 1000,
      amount_total: 1000,
      total_details: { amount_discount: 0, amount_shipping: 0, amount_tax: 0 },
      discounts: null,
    });

    const completed = await completeSession(session.id, { outcome: 'paid', promotion_code: 'half-checkout' });

    expect(completed.status).toBe(200);
    const paid = await stripe.checkout.sessions.retrieve(session.id, { expand: ['payment_intent'] });
    expect(paid).toMatchObject({
      status: 'complete',
      payment_status: 'paid',
      amount_subtotal: 1000,
      amount_total: 500,
      total_details: { amount_discount: 500, amount_shipping: 0, amount_tax: 0 },
      discounts: [{ coupon: coupon.id, promotion_code: promotionCode.id }],
      payment_intent: { amount: 500, amount_received: 500, status: 'succeeded' },
    });
    const intent = paid.payment_intent as Stripe.PaymentIntent;
    expect((await stripe.charges.retrieve(String(intent.latest_charge))).amount).toBe(500);
    expect((await stripe.checkout.sessions.listLineItems(session.id)).data).toMatchObject([
      { amount_subtotal: 1000, amount_discount: 500, amount_total: 500 },
    ]);
    expect((await stripe.promotionCodes.retrieve(promotionCode.id)).times_redeemed).toBe(1);
    expect((await stripe.coupons.retrieve(coupon.id)).times_redeemed).toBe(1);
    await waitFor(() => typesFor(session.id).includes('checkout.session.completed'), 'completed event');
    const event = receiver.received.find(
      (r) => r.event.type === 'checkout.session.completed' && JSON.stringify(r.event).includes(session.id),
    )!;
    expect(event.event.data.object).toMatchObject({
      amount_subtotal: 1000,
      amount_total: 500,
      total_details: { amount_discount: 500 },
    });
  });

  it('takes an amount off in the session currency, and completes a session brought to 0 without a payment', async () => {
    const { promotionCode: threeOff } = await promotionCodeFor({ amount_off: 300, currency: 'usd' });
    const { promotionCode: free } = await promotionCodeFor({ percent_off: 100 });
    const partly = await stripe.checkout.sessions.create(sessionParams({ allow_promotion_codes: true }));
    const wholly = await stripe.checkout.sessions.create(sessionParams({ allow_promotion_codes: true }));

    await completeSession(partly.id, { outcome: 'paid', promotion_code: threeOff.code });
    await completeSession(wholly.id, { outcome: 'paid', promotion_code: free.code });

    expect(await stripe.checkout.sessions.retrieve(partly.id)).toMatchObject({
      amount_total: 700,
      total_details: { amount_discount: 300 },
    });
    expect(await stripe.checkout.sessions.retrieve(wholly.id)).toMatchObject({
      status: 'complete',
      payment_status: 'no_payment_required',
      payment_intent: null,
      amount_total: 0,
      total_details: { amount_discount: 1000 },
    });
  });

  it('refuses unknown, inactive, used-up and other-currency codes, and codes on sessions that allow none; nothing completes', async () => {
    const { promotionCode: once, coupon: onceCoupon } = await promotionCodeFor(
      { percent_off: 50 },
      { max_redemptions: 1 },
    );
    const { promotionCode: usedUpCoupon } = await promotionCodeFor({ percent_off: 50, max_redemptions: 1 });
    const { promotionCode: inactive } = await promotionCodeFor({ percent_off: 50 }, { active: false });
    const { promotionCode: euros } = await promotionCodeFor({ amount_off: 100, currency: 'eur' });
    const first = await stripe.checkout.sessions.create(sessionParams({ allow_promotion_codes: true }));
    expect((await completeSession(first.id, { outcome: 'paid', promotion_code: once.code })).status).toBe(
      200,
    );
    const other = await stripe.checkout.sessions.create(sessionParams({ allow_promotion_codes: true }));
    expect(
      (await completeSession(other.id, { outcome: 'paid', promotion_code: usedUpCoupon.code })).status,
    ).toBe(200);
    const session = await stripe.checkout.sessions.create(sessionParams({ allow_promotion_codes: true }));
    const noCodes = await stripe.checkout.sessions.create(sessionParams());
    expect(noCodes.allow_promotion_codes).toBeNull();

    const refusals = {
      unknown: await completeSession(session.id, { outcome: 'paid', promotion_code: 'NOT-A-CODE' }),
      inactive: await completeSession(session.id, { outcome: 'paid', promotion_code: inactive.code }),
      usedUp: await completeSession(session.id, { outcome: 'paid', promotion_code: once.code }),
      couponUsedUp: await completeSession(session.id, { outcome: 'paid', promotion_code: usedUpCoupon.code }),
      currency: await completeSession(session.id, { outcome: 'async_pending', promotion_code: euros.code }),
      notAllowed: await completeSession(noCodes.id, { outcome: 'paid', promotion_code: once.code }),
    };

    for (const refusal of Object.values(refusals)) {
      expect(refusal).toMatchObject({
        status: 400,
        body: {
          error: { type: 'invalid_request_error', param: 'promotion_code', message: expect.any(String) },
        },
      });
    }
    expect(refusals.unknown.body).toMatchObject({
      error: { code: 'resource_missing', message: "No such promotion code: 'NOT-A-CODE'" },
    });
    for (const id of [session.id, noCodes.id]) {
      expect(await stripe.checkout.sessions.retrieve(id)).toMatchObject({
        status: 'open',
        payment_intent: null,
        amount_total: 1000,
        discounts: null,
      });
      expect(typesFor(id)).toEqual([]);
    }
    expect((await stripe.promotionCodes.retrieve(once.id)).times_redeemed).toBe(1);
    expect(await stripe.coupons.retrieve(onceCoupon.id)).toMatchObject({ times_redeemed: 1, valid: true });
    expect(await stripe.promotionCodes.retrieve(usedUpCoupon.id)).toMatchObject({ active: false });
  });

  it('shows a code field on the hosted page of a session that allows codes, with the discounted total or why not', async () => {
    const { promotionCode } = await promotionCodeFor({ percent_off: 50 }, { code: 'PAGE-HALF' });
    const session = await stripe.checkout.sessions.create(sessionParams({ allow_promotion_codes: true }));
    const plain = await stripe.checkout.sessions.create(sessionParams());
    const html = async (url: string) => (await fetch(url)).text();

    expect(await html(session.url!)).toContain('id="promotion-code"');
    expect(await html(plain.url!)).not.toContain('promotion-code');
    const applied = await html(`${session.url}?promotion_code=page-half`);
    expect(applied).toContain('<div class="amount" data-testid="amount">5.00 USD</div>');
    expect(applied).toContain('−5.00 USD');
    expect(applied).toContain('<input type="hidden" name="promotion_code" value="page-half">');
    const refused = await html(`${session.url}?promotion_code=NOPE`);
    expect(refused).toContain('This code is invalid.');
    expect(refused).toContain('<div class="amount" data-testid="amount">10.00 USD</div>');

    const paid = await fetch(`${session.url}/pay`, {
      method: 'POST',
      body: new URLSearchParams({ method: 'card', promotion_code: 'page-half' }),
      redirect: 'manual',
    });

    expect(paid.status).toBe(303);
    expect(await stripe.checkout.sessions.retrieve(session.id)).toMatchObject({
      payment_status: 'paid',
      amount_total: 500,
      discounts: [{ promotion_code: promotionCode.id }],
    });
  });
});

describe('object shapes', () => {
  const fixture = (name: string): Record<string, unknown> =>
    JSON.parse(readFileSync(new URL(`../fixtures/stripe/${name}.json`, import.meta.url), 'utf8'));
  const FIXTURE_OF: Record<string, string> = {
    'checkout.session': 'checkout_session',
    payment_intent: 'payment_intent',
    charge: 'charge',
    refund: 'refund',
    dispute: 'dispute',
    customer: 'customer',
    product: 'product',
    price: 'price',
    event: 'event',
  };
  // Stripe fields that the (success-shaped) fixtures do not show.
  const NOT_IN_FIXTURE: Record<string, string[]> = { refund: ['failure_reason'] };
  // The fixture has a value, the emulator null. Each field is `| null` in Stripe's API
  // (node_modules/stripe/esm/resources/*.d.ts) and is null on Stripe for an object like the emulator's.
  const NULL_ON_STRIPE: Record<string, Record<string, string>> = {
    'checkout.session': {
      after_expiration: 'no recovery configured at creation',
      collected_information: 'no shipping details collected',
      consent: 'no consent collected',
      consent_collection: 'consent collection not requested',
      currency_conversion: 'no Adaptive Pricing conversion',
      customer_details: 'null until the buyer pays',
      payment_intent: 'null until the buyer pays (payment mode creates it then)',
      payment_method_configuration_details: 'payment_method_types given, no configuration',
      permissions: 'no permissions requested',
      shipping_address_collection: 'shipping not collected',
      shipping_cost: 'no shipping rate',
      url: 'null once the session is complete or expired',
      wallet_options: 'no wallet options given',
    },
    payment_intent: {
      automatic_payment_methods: 'Checkout sets payment_method_types instead',
      canceled_at: 'null unless canceled',
      last_payment_error: 'null unless a payment attempt failed',
      next_action: 'null unless the customer must act (3-D Secure)',
      payment_method_configuration_details: 'payment_method_types given, no configuration',
      processing: 'null unless a card payment is processing',
      shipping: 'no shipping',
      transfer_data: 'no Connect transfer',
    },
    charge: {
      description: 'no description given',
      receipt_url: 'the emulator hosts no receipts',
      shipping: 'no shipping',
      source: 'PaymentIntent charges carry no legacy Source',
      transfer_data: 'no Connect transfer',
    },
    customer: {
      address: 'none given',
      currency: 'null until the customer has a currency for recurring billing',
      discount: 'no coupon applied',
      shipping: 'none given',
    },
    price: {
      custom_unit_amount: 'fixed unit_amount',
      recurring: 'one-time price',
      transform_quantity: 'no quantity transform',
    },
    product: {
      default_price: 'none set',
      description: 'none given',
      package_dimensions: 'not a shippable good',
    },
  };
  // The fixture has null, the emulator a value from its state: the type Stripe's API declares for it.
  const DECLARED_TYPE: Record<string, Record<string, string>> = {
    'checkout.session': {
      allow_promotion_codes: 'boolean',
      amount_subtotal: 'integer',
      amount_total: 'integer',
      client_reference_id: 'string',
      currency: 'string',
      customer: 'string',
      customer_email: 'string',
      discounts: 'array',
    },
    payment_intent: { customer: 'string', latest_charge: 'string', payment_method: 'string' },
    charge: { customer: 'string', payment_intent: 'string' },
    refund: {
      balance_transaction: 'string',
      customer: 'string',
      payment_intent: 'string',
      payment_method: 'string',
      reason: 'string',
    },
    dispute: { payment_intent: 'string' },
    customer: { email: 'string', name: 'string' },
    price: { lookup_key: 'string', nickname: 'string' },
    // The fixture's event predates API versions; the emulator stamps the SDK's pinned version.
    event: { api_version: 'string' },
  };

  /** The JSON type of a field as served: JSON round-trips the SDK's Decimal back to its decimal string. */
  const jsonType = (value: unknown) =>
    value === null
      ? 'null'
      : Array.isArray(value)
        ? 'array'
        : typeof value === 'number'
          ? Number.isInteger(value)
            ? 'integer'
            : 'number'
          : typeof value;

  /** Every difference between `served` and the fixture of its kind: missing or extra fields, other types. */
  function differences(served: object): string[] {
    const { lastResponse: _sdk, ...object } = JSON.parse(JSON.stringify(served)) as Record<string, unknown>;
    const kind = String(object.object);
    const name = FIXTURE_OF[kind];
    if (!name) return [`no fixture for ${kind}`];
    const expected = fixture(name);
    const out: string[] = [];
    for (const [field, value] of Object.entries(expected)) {
      if (!(field in object)) {
        out.push(`${kind}.${field}: missing`);
        continue;
      }
      const want = jsonType(value);
      const got = jsonType(object[field]);
      if (got === want) continue;
      if (got === 'null' && NULL_ON_STRIPE[kind]?.[field]) continue;
      if (want === 'null' && DECLARED_TYPE[kind]?.[field] === got) continue;
      out.push(`${kind}.${field}: ${got}, fixture ${want}`);
    }
    for (const field of Object.keys(object)) {
      if (!(field in expected) && !NOT_IN_FIXTURE[kind]?.includes(field))
        out.push(`${kind}.${field}: not in fixture`);
    }
    if (kind === 'event') out.push(...differences((object.data as { object: object }).object));
    return out;
  }

  // Stripe publishes no fixture for these two kinds: every field the SDK's types declare as always present
  // (node_modules/stripe/esm/resources/Coupons.d.ts, PromotionCodes.d.ts), with its JSON types.
  const SDK_SHAPE: Record<string, Record<string, string[]>> = {
    coupon: {
      id: ['string'],
      object: ['string'],
      amount_off: ['integer', 'null'],
      created: ['integer'],
      currency: ['string', 'null'],
      duration: ['string'],
      duration_in_months: ['integer', 'null'],
      livemode: ['boolean'],
      max_redemptions: ['integer', 'null'],
      metadata: ['object', 'null'],
      name: ['string', 'null'],
      percent_off: ['integer', 'number', 'null'],
      redeem_by: ['integer', 'null'],
      times_redeemed: ['integer'],
      valid: ['boolean'],
    },
    promotion_code: {
      id: ['string'],
      object: ['string'],
      active: ['boolean'],
      code: ['string'],
      created: ['integer'],
      customer: ['string', 'object', 'null'],
      customer_account: ['string', 'null'],
      expires_at: ['integer', 'null'],
      livemode: ['boolean'],
      max_redemptions: ['integer', 'null'],
      metadata: ['object', 'null'],
      promotion: ['object'],
      restrictions: ['object'],
      times_redeemed: ['integer'],
    },
  };

  /** Every difference between `served` and the SDK's declared shape of its kind. */
  function sdkShapeDifferences(served: object): string[] {
    const { lastResponse: _sdk, ...object } = JSON.parse(JSON.stringify(served)) as Record<string, unknown>;
    const kind = String(object.object);
    const expected = SDK_SHAPE[kind];
    if (!expected) return [`no SDK shape for ${kind}`];
    const out: string[] = [];
    for (const [field, types] of Object.entries(expected)) {
      if (!(field in object)) out.push(`${kind}.${field}: missing`);
      else if (!types.includes(jsonType(object[field])))
        out.push(`${kind}.${field}: ${jsonType(object[field])}, SDK ${types.join('|')}`);
    }
    for (const field of Object.keys(object))
      if (!(field in expected)) out.push(`${kind}.${field}: not in SDK`);
    return out;
  }

  it("serves every field the SDK declares for coupons and promotion codes, with Stripe's JSON types", async () => {
    const { coupon, promotionCode } = await promotionCodeFor(
      { percent_off: 12.5, duration: 'repeating', duration_in_months: 3 },
      { expires_at: Math.floor(Date.now() / 1000) + 3600 },
    );
    const amountOff = await stripe.coupons.create({ amount_off: 250, currency: 'usd', max_redemptions: 2 });

    const objects: object[] = [
      coupon,
      amountOff,
      promotionCode,
      await stripe.coupons.retrieve(coupon.id),
      await stripe.promotionCodes.retrieve(promotionCode.id),
      ...(await stripe.coupons.list({ limit: 3 })).data,
      ...(await stripe.promotionCodes.list({ limit: 3 })).data,
    ];

    expect([...new Set(objects.flatMap(sdkShapeDifferences))].sort()).toEqual([]);
    expect(coupon).toMatchObject({ percent_off: 12.5, duration: 'repeating', duration_in_months: 3 });
  });

  it("serves every field of Stripe's fixture for each object, with Stripe's JSON types", async () => {
    const customer = await stripe.customers.create({ email: 'shape@example.com', name: 'Shape' });
    const product = await stripe.products.create({ name: 'Credits' });
    const price = await stripe.prices.create({ product: product.id, currency: 'usd', unit_amount: 500 });
    const open = await stripe.checkout.sessions.create(sessionParams({ customer: customer.id }));
    const refunded = await stripe.checkout.sessions.create(
      sessionParams({ line_items: [{ price: price.id, quantity: 1 }], customer_email: 'buyer@example.com' }),
    );
    const disputed = await stripe.checkout.sessions.create(sessionParams());
    const failed = await stripe.checkout.sessions.create(sessionParams());
    const discounted = await stripe.checkout.sessions.create(sessionParams({ allow_promotion_codes: true }));
    const { promotionCode } = await promotionCodeFor({ percent_off: 50 });
    await control(emulator, `checkout/sessions/${discounted.id}/complete`, {
      outcome: 'paid',
      promotion_code: promotionCode.code,
    });
    for (const session of [refunded, disputed])
      await control(emulator, `checkout/sessions/${session.id}/complete`, { outcome: 'paid' });
    await control(emulator, `checkout/sessions/${failed.id}/complete`, { outcome: 'async_failed' });
    const paidIntent = await stripe.paymentIntents.retrieve(
      String((await stripe.checkout.sessions.retrieve(refunded.id)).payment_intent),
    );
    const refund = await stripe.refunds.create({ payment_intent: paidIntent.id, amount: 100 });
    await control(
      emulator,
      `refunds/${(await stripe.refunds.create({ payment_intent: paidIntent.id, amount: 50 })).id}/fail`,
    );
    const disputedIntent = await stripe.paymentIntents.retrieve(
      String((await stripe.checkout.sessions.retrieve(disputed.id)).payment_intent),
    );
    await control(emulator, `charges/${disputedIntent.latest_charge}/dispute`);
    const objects: object[] = [
      customer,
      product,
      price,
      await stripe.customers.retrieve(customer.id),
      await stripe.prices.retrieve(price.id),
      await stripe.checkout.sessions.retrieve(open.id),
      await stripe.checkout.sessions.retrieve(discounted.id),
      ...(await Promise.all(
        [refunded, disputed, failed].map((s) => stripe.checkout.sessions.retrieve(s.id)),
      )),
      paidIntent,
      ...(await stripe.paymentIntents.list({ limit: 3 })).data,
      ...(await stripe.charges.list({ limit: 2 })).data,
      refund,
      ...(await stripe.refunds.list({ limit: 2 })).data,
      ...(await stripe.disputes.list({ limit: 1 })).data,
      ...(await stripe.events.list({ limit: 30 })).data,
    ];
    const failedIntent = String((await stripe.checkout.sessions.retrieve(failed.id)).payment_intent);
    const mine = [
      ...[refunded, disputed, failed].map((s) => s.id),
      paidIntent.id,
      disputedIntent.id,
      failedIntent,
    ];
    await waitFor(() => {
      const { pending, inFlight } = emulator.webhooks.status();
      return pending === 0 && inFlight === 0;
    }, 'every event to be delivered');
    const delivered = receiver.received
      .map((r) => r.event)
      .filter((event) => {
        const object = JSON.stringify(event.data.object);
        return (
          mine.some((id) => object.includes(id)) || object.includes(String(disputedIntent.latest_charge))
        );
      });
    expect(new Set(delivered.map((e) => e.type))).toEqual(
      new Set([
        'charge.succeeded',
        'payment_intent.succeeded',
        'checkout.session.completed',
        'payment_intent.processing',
        'payment_intent.payment_failed',
        'checkout.session.async_payment_failed',
        'refund.created',
        'charge.refunded',
        'refund.updated',
        'refund.failed',
        'charge.dispute.created',
        'charge.dispute.funds_withdrawn',
      ]),
    );
    const found = [...objects, ...delivered].flatMap(differences);
    expect([...new Set(found)].sort()).toEqual([]);
  });
});

describe('state file', () => {
  it('keeps objects and idempotency keys across a restart', async () => {
    const stateDir = await mkdtemp(join(tmpdir(), 'stripe-emulator-'));
    onTestFinished(() => rm(stateDir, { recursive: true, force: true }));
    const stateFile = join(stateDir, 'state.json');
    const first = await startStripeEmulator({ port: 0, webhookSecret: WEBHOOK_SECRET, stateFile });
    const client = createStripeClient({ secretKey: STRIPE_KEY, apiBase: first.url, maxNetworkRetries: 0 });
    const session = await client.checkout.sessions.create(sessionParams(), { idempotencyKey: 'persisted' });
    await first.close();
    const second = await startStripeEmulator({ port: first.port, webhookSecret: WEBHOOK_SECRET, stateFile });
    try {
      expect((await client.checkout.sessions.retrieve(session.id)).id).toBe(session.id);
      const replay = await client.checkout.sessions.create(sessionParams(), { idempotencyKey: 'persisted' });
      expect(replay.id).toBe(session.id);
    } finally {
      await second.close();
    }
  });
});
