import { readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Stripe from 'stripe';
import { beforeEach, describe, expect, it } from 'vitest';
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

describe('object shapes', () => {
  it("uses only fields that Stripe's own fixtures have", async () => {
    const fixture = (name: string) =>
      JSON.parse(readFileSync(new URL(`../fixtures/stripe/${name}.json`, import.meta.url), 'utf8'));
    const charge = await stripe.charges.list({ limit: 1 });
    const objects: Array<[string, object]> = [
      ['checkout_session', (await stripe.checkout.sessions.list({ limit: 1 })).data[0]!],
      ['payment_intent', (await stripe.paymentIntents.list({ limit: 1 })).data[0]!],
      ['charge', charge.data[0]!],
      ['refund', (await stripe.refunds.list({ limit: 1 })).data[0]!],
      ['dispute', (await stripe.disputes.list({ limit: 1 })).data[0]!],
      ['event', (await stripe.events.list({ limit: 1 })).data[0]!],
      ['customer', await stripe.customers.create({ email: 'a@example.com' })],
      ['product', await stripe.products.create({ name: 'Credits' })],
    ];
    const product = objects.at(-1)![1] as Stripe.Product;
    objects.push([
      'price',
      await stripe.prices.create({ product: product.id, currency: 'usd', unit_amount: 500 }),
    ]);
    for (const [name, object] of objects) {
      const known = new Set(Object.keys(fixture(name)));
      // failure_reason is Stripe's field on failed refunds; the success-shaped fixture does not show it.
      const allowed = name === 'refund' ? ['failure_reason'] : [];
      const invented = Object.keys(object).filter(
        (key) => !known.has(key) && !allowed.includes(key) && key !== 'lastResponse',
      );
      expect({ name, invented }).toEqual({ name, invented: [] });
    }
  });
});

describe('state file', () => {
  it('keeps objects and idempotency keys across a restart', async () => {
    const stateFile = join(await mkdtemp(join(tmpdir(), 'stripe-emulator-')), 'state.json');
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
