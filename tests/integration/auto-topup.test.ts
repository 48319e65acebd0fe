import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createCreditWorker } from '../../functions/credit-worker.js';
import { inAccountTransaction, requireAccountByUserId } from '../../shared/accounts/accounts.js';
import { DEFAULT_PACKAGES } from '../../shared/packages.js';
import { createStripeClient } from '../../shared/stripe/client.js';
import { chargeTopUp, createTopUp, startTopUp } from '../../shared/topup/topup.js';
import { testApi } from '../support/api.js';
import { createTestDatabase } from '../support/database.js';
import { paymentIntent, stripeEvent } from '../support/events.js';
import { givenAccount } from '../support/factories.js';
import { expectInvariantsHold } from '../support/invariants.js';
import { deliver, givenCheckout, PACK } from '../support/purchase.js';
import {
  control,
  STRIPE_KEY,
  startEmulatorForTest,
  startWebhookReceiver,
  WEBHOOK_SECRET,
  waitFor,
} from '../support/stripe.js';

const { db } = await createTestDatabase({ max: 10 });
const verifier = createStripeClient({ secretKey: STRIPE_KEY });
const receiver = await startWebhookReceiver((body, signature) =>
  verifier.webhooks.constructEvent(body, signature, WEBHOOK_SECRET),
);
const { emulator, stripe } = await startEmulatorForTest({ webhookEndpoint: receiver.url });
const { call } = testApi(db, { stripe });
const worker = createCreditWorker({ db, packages: DEFAULT_PACKAGES });

type Delivered = { id: string; type: string; data: { object: Record<string, unknown> } };

/** The webhooks the emulator signed and delivered about `objectIds`, as Stripe sent them (raw JSON). */
function deliveredAbout(...objectIds: string[]): Delivered[] {
  return receiver.received
    .map((w) => JSON.parse(w.body) as Delivered)
    .filter((e) => {
      const object = e.data.object;
      return [object.id, object.payment_intent].some((id) => objectIds.includes(String(id)));
    });
}

/** Waits until the emulator has delivered `types` about `objectId`, then returns every event about it. */
async function webhooksFor(objectId: string, types: string[]): Promise<Delivered[]> {
  await waitFor(
    () => types.every((t) => deliveredAbout(objectId).some((e) => e.type === t)),
    `${types.join(', ')} for ${objectId}`,
  );
  return deliveredAbout(objectId);
}

/** Feeds events to the credit worker one SQS batch each, all at once; fails on any batch item failure. */
async function deliverAll(events: Delivered[]) {
  const responses = await Promise.all(events.map((event) => deliver(worker, [event])));
  expect(responses.flatMap((r) => r.batchItemFailures)).toEqual([]);
}

const accountOf = (userId: string) => requireAccountByUserId(db, userId);

/** A user who bought a pack at checkout with saveCard, every webhook of it applied. */
async function givenSavedCard(userId = `user_${randomUUID()}`) {
  const response = await call('POST /v1/checkout', {
    auth: { user: userId },
    body: { packageId: PACK.id, saveCard: true },
  });
  expect(response.status).toBe(201);
  const payment = await db
    .selectFrom('payments')
    .selectAll()
    .where('id', '=', String(response.body.paymentId))
    .executeTakeFirstOrThrow();
  const sessionId = payment.stripe_checkout_session_id!;
  await control(emulator, `checkout/sessions/${sessionId}/complete`, { outcome: 'paid' });
  const session = await stripe.checkout.sessions.retrieve(sessionId);
  const intentId = String(session.payment_intent);
  const events = [
    ...(await webhooksFor(sessionId, ['checkout.session.completed'])),
    ...(await webhooksFor(intentId, ['payment_intent.succeeded'])),
  ];
  await deliverAll(events);
  return { userId, account: await accountOf(userId), session, intentId, checkoutPaymentId: payment.id };
}

async function paymentRow(id: string) {
  return db.selectFrom('payments').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
}

async function grantsOf(accountId: string) {
  return db
    .selectFrom('credit_grants')
    .select(['source', 'amount', 'payment_id'])
    .where('account_id', '=', accountId)
    .orderBy('created_at')
    .execute();
}

describe('checkout with saveCard', () => {
  it('saves the Stripe customer and the card on the account, from the session and its PaymentIntent', async () => {
    const { account, session, intentId } = await givenSavedCard();
    const intent = await stripe.paymentIntents.retrieve(intentId);
    expect(intent).toMatchObject({ setup_future_usage: 'off_session', customer: session.customer });
    expect(account).toMatchObject({
      stripe_customer_id: session.customer,
      stripe_payment_method_id: intent.payment_method,
      balance: PACK.credits,
    });
    const customer = await stripe.customers.retrieve(String(session.customer));
    expect(customer).toMatchObject({ metadata: { user_id: account.external_user_id } });
  });

  it('reuses the account’s customer and asks for nothing to be saved without saveCard', async () => {
    const { userId, account } = await givenSavedCard();
    const response = await call('POST /v1/checkout', {
      auth: { user: userId },
      body: { packageId: PACK.id },
    });
    const payment = await paymentRow(String(response.body.paymentId));
    const session = emulator.emulator.session(payment.stripe_checkout_session_id!);
    expect(session.customer).toBe(account.stripe_customer_id);
    expect(session._setup_future_usage).toBeNull();
    expect(
      (await stripe.customers.list({ limit: 100 })).data.filter((c) => c.metadata.user_id === userId),
    ).toHaveLength(1);
  });

  it('refuses a saveCard that is not a boolean, and answers 502 with nothing written when Stripe cannot create the customer', async () => {
    const userId = `user_${randomUUID()}`;
    const bad = await call('POST /v1/checkout', {
      auth: { user: userId },
      body: { packageId: PACK.id, saveCard: 'yes' },
    });
    expect(bad.body).toMatchObject({ status: 400, field: 'saveCard' });
    await control(emulator, 'faults', { status: 500, count: 1 });
    const down = await call('POST /v1/checkout', {
      auth: { user: userId },
      body: { packageId: PACK.id, saveCard: true },
    });
    expect(down.status).toBe(502);
    const account = await accountOf(userId);
    expect(account.stripe_customer_id).toBeNull();
    const payments = await db
      .selectFrom('payments')
      .select('id')
      .where('account_id', '=', account.id)
      .execute();
    expect(payments).toEqual([]);
  });

  it('keeps the newer card whatever order the PaymentIntents’ webhooks come in', async () => {
    const first = await givenSavedCard();
    const second = await call('POST /v1/checkout', {
      auth: { user: first.userId },
      body: { packageId: PACK.id, saveCard: true },
    });
    const payment = await paymentRow(String(second.body.paymentId));
    await control(emulator, `checkout/sessions/${payment.stripe_checkout_session_id}/complete`, {
      outcome: 'paid',
    });
    const session = await stripe.checkout.sessions.retrieve(payment.stripe_checkout_session_id!);
    const newer = await stripe.paymentIntents.retrieve(String(session.payment_intent));
    // Stripe's `created` has second resolution: the newer intent is made strictly newer here.
    const events = await webhooksFor(newer.id, ['payment_intent.succeeded']);
    const olderEvents = deliveredAbout(first.intentId).map((e) => ({
      ...e,
      id: `evt_${randomUUID().replaceAll('-', '')}`,
      data: { object: { ...e.data.object, created: newer.created - 10 } },
    }));
    await deliverAll([
      ...events,
      ...(await webhooksFor(payment.stripe_checkout_session_id!, ['checkout.session.completed'])),
    ]);
    await deliverAll(olderEvents);
    expect((await accountOf(first.userId)).stripe_payment_method_id).toBe(newer.payment_method);
  });
});

describe('off-session top-up', () => {
  it('a visa top-up is credited once, as an auto_topup grant, with its webhooks duplicated and reordered', async () => {
    const { account, userId } = await givenSavedCard();
    const result = await startTopUp(db, stripe, account.id, PACK);
    expect(result).toMatchObject({ outcome: 'succeeded', credits: PACK.credits });
    if (result.outcome !== 'succeeded') throw new Error('unreachable');
    // Charged, not yet credited: the credits come through the webhook pipeline.
    expect((await accountOf(userId)).balance).toBe(PACK.credits);
    const intent = await stripe.paymentIntents.retrieve(result.paymentIntentId);
    expect(intent).toMatchObject({
      status: 'succeeded',
      customer: account.stripe_customer_id,
      payment_method: account.stripe_payment_method_id,
      metadata: { payment_id: result.paymentId, user_id: userId, package_id: PACK.id },
    });

    const events = await webhooksFor(intent.id, ['payment_intent.succeeded', 'charge.succeeded']);
    const shuffled = [...events, ...events, ...events].reverse();
    await deliverAll(shuffled);
    await deliverAll(events);

    expect((await accountOf(userId)).balance).toBe(2 * PACK.credits);
    expect(await paymentRow(result.paymentId)).toMatchObject({
      kind: 'auto_topup',
      status: 'CREDITED',
      stripe_payment_intent_id: intent.id,
      stripe_charge_id: intent.latest_charge,
      failure_code: null,
    });
    const grants = await grantsOf(account.id);
    expect(grants.filter((g) => g.payment_id === result.paymentId)).toEqual([
      { source: 'auto_topup', amount: PACK.credits, payment_id: result.paymentId },
    ]);
    await expectInvariantsHold(db);
  });

  it('uses the payment id as Stripe idempotency key: charging the same payment again charges nothing', async () => {
    const { account } = await givenSavedCard();
    const first = await startTopUp(db, stripe, account.id, PACK);
    if (first.outcome !== 'succeeded') throw new Error(`top-up ${first.outcome}`);
    const replay = await stripe.paymentIntents.create(
      {
        amount: PACK.amount,
        currency: PACK.currency,
        customer: account.stripe_customer_id!,
        payment_method: account.stripe_payment_method_id!,
        off_session: true,
        confirm: true,
        metadata: {
          payment_id: first.paymentId,
          user_id: account.external_user_id!,
          package_id: PACK.id,
          kind: 'auto_topup',
        },
      },
      { idempotencyKey: first.paymentId },
    );
    expect(replay.id).toBe(first.paymentIntentId);
    expect(replay.lastResponse.headers['idempotent-replayed']).toBe('true');
    expect(await chargeTopUp(db, stripe, first.paymentId)).toMatchObject({
      outcome: 'succeeded',
      paymentIntentId: first.paymentIntentId,
    });
    expect((await stripe.charges.list({ payment_intent: first.paymentIntentId })).data).toHaveLength(1);
  });

  it('a declined card: the payment FAILED with card_declined, nothing credited, whatever the webhooks', async () => {
    const { account, userId } = await givenSavedCard();
    await control(emulator, `customers/${account.stripe_customer_id}/payment_method`, {
      payment_method: 'pm_card_chargeDeclined',
    });
    const result = await startTopUp(db, stripe, account.id, PACK);
    expect(result).toMatchObject({
      outcome: 'failed',
      code: 'card_declined',
      declineCode: 'generic_decline',
    });
    if (result.outcome !== 'failed') throw new Error('unreachable');
    const events = await webhooksFor(result.paymentIntentId!, [
      'payment_intent.payment_failed',
      'charge.failed',
    ]);
    await deliverAll([...events, ...events].reverse());
    expect(await paymentRow(result.paymentId)).toMatchObject({
      status: 'FAILED',
      failure_code: 'card_declined',
      failure_message: 'Your card was declined.',
      stripe_payment_intent_id: result.paymentIntentId,
    });
    expect((await accountOf(userId)).balance).toBe(PACK.credits);
    expect((await grantsOf(account.id)).filter((g) => g.source === 'auto_topup')).toEqual([]);
    await expectInvariantsHold(db);
  });

  it('an authentication-required card: requires_action, the payment FAILED, nothing credited', async () => {
    const { account, userId } = await givenSavedCard();
    await control(emulator, `customers/${account.stripe_customer_id}/payment_method`, {
      payment_method: 'pm_card_authenticationRequired',
    });
    const result = await startTopUp(db, stripe, account.id, PACK);
    expect(result).toMatchObject({ outcome: 'requires_action', code: 'authentication_required' });
    if (result.outcome !== 'requires_action') throw new Error('unreachable');
    await deliverAll(await webhooksFor(result.paymentIntentId!, ['payment_intent.payment_failed']));
    expect(await paymentRow(result.paymentId)).toMatchObject({
      status: 'FAILED',
      failure_code: 'authentication_required',
    });
    expect((await accountOf(userId)).balance).toBe(PACK.credits);
  });

  it('a decline whose webhook is applied before the API answer is recorded ends the same way', async () => {
    const { account } = await givenSavedCard();
    await control(emulator, `customers/${account.stripe_customer_id}/payment_method`, {
      payment_method: 'pm_card_chargeDeclined',
    });
    const payment = await inAccountTransaction(db, account.id, (trx, locked) =>
      createTopUp(trx, locked, PACK),
    );
    if (typeof payment === 'string') throw new Error(`top-up not created: ${payment}`);
    // The request chargeTopUp makes, answered while this process is away; its webhook arrives first.
    const declined = await stripe.paymentIntents
      .create(
        {
          amount: PACK.amount,
          currency: PACK.currency,
          customer: account.stripe_customer_id!,
          payment_method: account.stripe_payment_method_id!,
          off_session: true,
          confirm: true,
          metadata: {
            payment_id: payment.id,
            user_id: account.external_user_id!,
            package_id: PACK.id,
            kind: 'auto_topup',
          },
        },
        { idempotencyKey: payment.id },
      )
      .then(
        () => undefined,
        (error: { payment_intent?: { id: string } }) => error.payment_intent?.id,
      );
    await deliverAll(await webhooksFor(declined!, ['payment_intent.payment_failed']));
    expect(await paymentRow(payment.id)).toMatchObject({ status: 'FAILED', failure_code: 'card_declined' });

    const result = await chargeTopUp(db, stripe, payment.id);
    expect(result).toMatchObject({ outcome: 'failed', code: 'card_declined', paymentIntentId: declined });
    expect((await stripe.charges.list({ payment_intent: declined! })).data).toHaveLength(1);
  });

  it('refunds a top-up like any purchase: the charge from the PaymentIntent’s latest_charge', async () => {
    const { account, userId } = await givenSavedCard();
    const result = await startTopUp(db, stripe, account.id, PACK);
    if (result.outcome !== 'succeeded') throw new Error(`top-up ${result.outcome}`);
    await deliverAll(await webhooksFor(result.paymentIntentId, ['payment_intent.succeeded']));
    const refund = await stripe.refunds.create({ payment_intent: result.paymentIntentId });
    await deliverAll(await webhooksFor(refund.id, ['refund.created']));
    await deliverAll(deliveredAbout(result.paymentIntentId).filter((e) => e.type === 'charge.refunded'));
    expect(await paymentRow(result.paymentId)).toMatchObject({
      status: 'REFUNDED',
      amount_refunded: PACK.amount,
    });
    expect((await accountOf(userId)).balance).toBe(PACK.credits);
    await expectInvariantsHold(db);
  });

  it('a checkout’s payment_intent.payment_failed changes nothing: the buyer may try another card', async () => {
    const checkout = await givenCheckout(db);
    const failed = stripeEvent(
      'payment_intent.payment_failed',
      paymentIntent({
        id: checkout.ids.intent,
        amount: PACK.amount,
        currency: PACK.currency,
        status: 'requires_payment_method',
        last_payment_error: { type: 'card_error', code: 'card_declined', message: 'Your card was declined.' },
        metadata: { payment_id: checkout.payment.id },
      }),
    );
    await deliverAll([failed as Delivered]);
    expect(await paymentRow(checkout.payment.id)).toMatchObject({ status: 'INIT', failure_code: null });
    await deliverAll([checkout.completed() as Delivered]);
    expect(await paymentRow(checkout.payment.id)).toMatchObject({ status: 'CREDITED' });
  });

  it('starts nothing for an account without a saved card', async () => {
    const account = await givenAccount(db);
    expect(await startTopUp(db, stripe, account.id, PACK)).toEqual({
      outcome: 'not_started',
      reason: 'no_saved_card',
    });
    const payments = await db
      .selectFrom('payments')
      .select('id')
      .where('account_id', '=', account.id)
      .execute();
    expect(payments).toEqual([]);
  });

  it('holds every invariant after the scenarios above', async () => {
    await expectInvariantsHold(db);
  });
});
