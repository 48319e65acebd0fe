import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import Stripe from 'stripe';
import { describe, expect, it } from 'vitest';
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

/** The event types delivered so far for the object `id`, in delivery order. */
const eventsFor = (id: string) =>
  receiver.received
    .filter((w) => (w.event.data.object as { id?: string }).id === id)
    .map((w) => w.event.type);

/** A customer with `card` saved on it, as a Checkout with setup_future_usage leaves it. */
async function givenCustomerWithCard(card: string) {
  const customer = await stripe.customers.create({ payment_method: card });
  const methods = await stripe.customers.listPaymentMethods(customer.id);
  return { customer: customer.id, paymentMethod: methods.data[0]!.id };
}

/** Charges the saved card off-session, as an auto top-up does; resolves with the intent or rejects with Stripe's error. */
function chargeOffSession(saved: { customer: string; paymentMethod: string }, idempotencyKey = randomUUID()) {
  return stripe.paymentIntents.create(
    {
      amount: 500,
      currency: 'usd',
      customer: saved.customer,
      payment_method: saved.paymentMethod,
      off_session: true,
      confirm: true,
      metadata: { payment_id: idempotencyKey },
    },
    { idempotencyKey },
  );
}

/** The error a rejected Stripe call threw. */
async function stripeErrorOf(call: Promise<unknown>): Promise<Stripe.errors.StripeError> {
  const error = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, 'the call succeeded').toBeInstanceOf(Stripe.errors.StripeError);
  return error as Stripe.errors.StripeError;
}

describe('test cards, off-session', () => {
  it('pm_card_visa succeeds: a succeeded charge, payment_intent.succeeded and charge.succeeded', async () => {
    const saved = await givenCustomerWithCard('pm_card_visa');
    const intent = await chargeOffSession(saved);
    expect(intent).toMatchObject({
      status: 'succeeded',
      amount_received: 500,
      customer: saved.customer,
      payment_method: saved.paymentMethod,
      last_payment_error: null,
    });
    const charge = await stripe.charges.retrieve(String(intent.latest_charge));
    expect(charge).toMatchObject({ status: 'succeeded', paid: true, amount: 500, payment_intent: intent.id });
    await waitFor(
      () => eventsFor(intent.id).includes('payment_intent.succeeded'),
      'payment_intent.succeeded',
    );
    await waitFor(() => eventsFor(charge.id).includes('charge.succeeded'), 'charge.succeeded');
  });

  it('pm_card_chargeDeclined is a 402 card_declined / generic_decline; the intent needs a new payment method', async () => {
    const saved = await givenCustomerWithCard('pm_card_chargeDeclined');
    const error = await stripeErrorOf(chargeOffSession(saved));
    expect(error).toBeInstanceOf(Stripe.errors.StripeCardError);
    expect(error).toMatchObject({ statusCode: 402, code: 'card_declined', decline_code: 'generic_decline' });
    const intentId = error.payment_intent!.id;
    expect(error.payment_intent).toMatchObject({ status: 'requires_payment_method' });
    const intent = await stripe.paymentIntents.retrieve(intentId);
    expect(intent).toMatchObject({
      status: 'requires_payment_method',
      amount_received: 0,
      payment_method: null,
      last_payment_error: {
        type: 'card_error',
        code: 'card_declined',
        decline_code: 'generic_decline',
        payment_method: { id: saved.paymentMethod },
      },
    });
    const charge = await stripe.charges.retrieve(String(intent.latest_charge));
    expect(charge).toMatchObject({ status: 'failed', paid: false, failure_code: 'card_declined' });
    await waitFor(() => eventsFor(intentId).includes('payment_intent.payment_failed'), 'payment_failed');
    expect(eventsFor(intentId)).not.toContain('payment_intent.succeeded');
  });

  it('pm_card_authenticationRequired off-session is a 402 authentication_required; on-session it asks for 3D Secure', async () => {
    const saved = await givenCustomerWithCard('pm_card_authenticationRequired');
    const error = await stripeErrorOf(chargeOffSession(saved));
    expect(error).toBeInstanceOf(Stripe.errors.StripeCardError);
    expect(error).toMatchObject({
      statusCode: 402,
      type: 'StripeCardError',
      code: 'authentication_required',
    });
    const intentId = error.payment_intent!.id;
    expect((await stripe.paymentIntents.retrieve(intentId)).status).toBe('requires_payment_method');
    await waitFor(() => eventsFor(intentId).includes('payment_intent.payment_failed'), 'payment_failed');

    const onSession = await stripe.paymentIntents.create({
      amount: 500,
      currency: 'usd',
      customer: saved.customer,
      payment_method: saved.paymentMethod,
      confirm: true,
    });
    expect(onSession).toMatchObject({ status: 'requires_action', next_action: { type: 'use_stripe_sdk' } });
  });

  it('refuses off_session without confirm, and a saved card for another customer', async () => {
    const saved = await givenCustomerWithCard('pm_card_visa');
    const unconfirmed = await stripeErrorOf(
      stripe.paymentIntents.create({
        amount: 500,
        currency: 'usd',
        customer: saved.customer,
        payment_method: saved.paymentMethod,
        off_session: true,
      }),
    );
    expect(unconfirmed).toMatchObject({ statusCode: 400, param: 'off_session' });
    const other = await stripe.customers.create({});
    const foreign = await stripeErrorOf(
      chargeOffSession({ customer: other.id, paymentMethod: saved.paymentMethod }),
    );
    expect(foreign).toMatchObject({ statusCode: 400, param: 'payment_method' });
  });
});

describe('idempotency keys', () => {
  it('replays the same answer for the same key and parameters, and refuses the key with other parameters', async () => {
    const saved = await givenCustomerWithCard('pm_card_visa');
    const key = randomUUID();
    const first = await chargeOffSession(saved, key);
    const replay = await chargeOffSession(saved, key);
    expect(replay.id).toBe(first.id);
    expect(replay.lastResponse.headers['idempotent-replayed']).toBe('true');
    const charges = await stripe.charges.list({ payment_intent: first.id });
    expect(charges.data).toHaveLength(1);

    const conflict = await stripeErrorOf(
      stripe.paymentIntents.create(
        {
          amount: 900,
          currency: 'usd',
          customer: saved.customer,
          payment_method: saved.paymentMethod,
          off_session: true,
          confirm: true,
          metadata: { payment_id: key },
        },
        { idempotencyKey: key },
      ),
    );
    expect(conflict).toBeInstanceOf(Stripe.errors.StripeIdempotencyError);
    expect(conflict.statusCode).toBe(400);
  });

  it('replays a decline as the same 402 without a second attempt', async () => {
    const saved = await givenCustomerWithCard('pm_card_chargeDeclined');
    const key = randomUUID();
    const first = await stripeErrorOf(chargeOffSession(saved, key));
    const again = await stripeErrorOf(chargeOffSession(saved, key));
    expect(again).toMatchObject({ statusCode: 402, code: 'card_declined' });
    expect(again.payment_intent!.id).toBe(first.payment_intent!.id);
    expect((await stripe.charges.list({ payment_intent: first.payment_intent!.id })).data).toHaveLength(1);
  });
});

describe('saved cards', () => {
  it('a paid session with setup_future_usage saves the card on a customer it creates; the intent carries it', async () => {
    const session = await stripe.checkout.sessions.create({
      mode: 'payment',
      line_items: [
        {
          quantity: 1,
          price_data: { currency: 'usd', unit_amount: 500, product_data: { name: '1,000 credits' } },
        },
      ],
      success_url: 'http://127.0.0.1:3000/?checkout=success',
      customer_creation: 'always',
      payment_intent_data: { setup_future_usage: 'off_session' },
    });
    expect(session.customer_creation).toBe('always');
    await control(emulator, `checkout/sessions/${session.id}/complete`, { outcome: 'paid' });
    const paid = await stripe.checkout.sessions.retrieve(session.id, { expand: ['payment_intent'] });
    const intent = paid.payment_intent as Stripe.PaymentIntent;
    expect(paid.customer).toMatch(/^cus_/);
    expect(intent).toMatchObject({
      status: 'succeeded',
      customer: paid.customer,
      setup_future_usage: 'off_session',
      payment_method: expect.stringMatching(/^pm_/),
    });
    const methods = await stripe.customers.listPaymentMethods(String(paid.customer));
    expect(methods.data.map((m) => m.id)).toEqual([intent.payment_method]);
    expect(methods.data[0]!.card).toMatchObject({ brand: 'visa', last4: '4242' });

    const topUp = await chargeOffSession({
      customer: String(paid.customer),
      paymentMethod: String(intent.payment_method),
    });
    expect(topUp.status).toBe('succeeded');
  });

  it('the control call changes the card behind a customer’s saved payment method', async () => {
    const saved = await givenCustomerWithCard('pm_card_visa');
    const swapped = await control<{ payment_methods: Stripe.PaymentMethod[] }>(
      emulator,
      `customers/${saved.customer}/payment_method`,
      { payment_method: 'pm_card_chargeDeclined' },
    );
    expect(swapped.payment_methods.map((m) => [m.id, m.card?.last4])).toEqual([
      [saved.paymentMethod, '0002'],
    ]);
    const declined = await stripeErrorOf(chargeOffSession(saved));
    expect(declined).toMatchObject({ code: 'card_declined' });

    await control(emulator, `customers/${saved.customer}/payment_method`, {
      payment_method: 'pm_card_visa',
    });
    expect((await chargeOffSession(saved)).status).toBe('succeeded');
    await expect(
      control(emulator, `customers/${saved.customer}/payment_method`, { payment_method: 'pm_card_bogus' }),
    ).rejects.toThrow(/404/);
  });

  it('attaches, lists and detaches payment methods through the SDK', async () => {
    const customer = await stripe.customers.create({});
    const attached = await stripe.paymentMethods.attach('pm_card_visa', { customer: customer.id });
    expect(attached).toMatchObject({ object: 'payment_method', type: 'card', customer: customer.id });
    expect((await stripe.paymentMethods.retrieve(attached.id)).card?.last4).toBe('4242');
    const listed = await stripe.paymentMethods.list({ customer: customer.id, type: 'card' });
    expect(listed.data.map((m) => m.id)).toEqual([attached.id]);
    const detached = await stripe.paymentMethods.detach(attached.id);
    expect(detached.customer).toBeNull();
    expect((await stripe.customers.listPaymentMethods(customer.id)).data).toEqual([]);
  });
});

describe('object shapes', () => {
  const fixtureFields = (name: string) =>
    Object.keys(
      JSON.parse(readFileSync(new URL(`../fixtures/stripe/${name}.json`, import.meta.url), 'utf8')),
    ).sort();
  const fieldsOf = (served: object) => {
    const { lastResponse: _sdk, ...object } = JSON.parse(JSON.stringify(served)) as Record<string, unknown>;
    return Object.keys(object).sort();
  };
  // Stripe publishes no payment_method fixture: the fields the SDK's PaymentMethod type always has, plus the
  // card and allow_redisplay that Stripe serves for a card (optional in the type, present on the wire).
  const PAYMENT_METHOD_FIELDS = [
    'allow_redisplay',
    'billing_details',
    'card',
    'created',
    'customer',
    'customer_account',
    'id',
    'livemode',
    'metadata',
    'object',
    'type',
  ];

  it("serves exactly Stripe's fields for off-session intents, failed charges and payment methods", async () => {
    const visa = await givenCustomerWithCard('pm_card_visa');
    const declined = await givenCustomerWithCard('pm_card_chargeDeclined');
    const succeeded = await chargeOffSession(visa);
    const failedId = (await stripeErrorOf(chargeOffSession(declined))).payment_intent!.id;
    const failed = await stripe.paymentIntents.retrieve(failedId);
    const intents = [succeeded, failed, await stripe.paymentIntents.retrieve(succeeded.id)];
    const charges = [
      await stripe.charges.retrieve(String(succeeded.latest_charge)),
      await stripe.charges.retrieve(String(failed.latest_charge)),
    ];
    for (const intent of intents) expect(fieldsOf(intent)).toEqual(fixtureFields('payment_intent'));
    for (const charge of charges) expect(fieldsOf(charge)).toEqual(fixtureFields('charge'));
    const method = await stripe.paymentMethods.retrieve(visa.paymentMethod);
    expect(fieldsOf(method)).toEqual(PAYMENT_METHOD_FIELDS);
    expect(method.card).toMatchObject({ brand: 'visa', last4: '4242', exp_month: 12, funding: 'credit' });
  });
});
