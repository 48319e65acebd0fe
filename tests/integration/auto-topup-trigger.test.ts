import { randomUUID } from 'node:crypto';
import type Stripe from 'stripe';
import { describe, expect, it } from 'vitest';
import { createCreditWorker } from '../../functions/credit-worker.js';
import { createSweeper } from '../../functions/sweeper.js';
import { inAccountTransaction, requireAccountByUserId } from '../../shared/accounts/accounts.js';
import { createApiRouter } from '../../shared/api/router.js';
import type { RouteKey } from '../../shared/http/routes.js';
import { DEFAULT_PACKAGES } from '../../shared/packages.js';
import { createStripeClient } from '../../shared/stripe/client.js';
import { chargeTopUp, createTopUp } from '../../shared/topup/topup.js';
import { apiEvent, type CallOptions, expectDocumented, SERVICE_ARN, testApi } from '../support/api.js';
import { createTestDatabase } from '../support/database.js';
import { lambdaContext } from '../support/events.js';
import { givenAccount } from '../support/factories.js';
import { expectInvariantsHold } from '../support/invariants.js';
import { deliver, PACK } from '../support/purchase.js';
import {
  control,
  STRIPE_KEY,
  startEmulatorForTest,
  startWebhookReceiver,
  WEBHOOK_SECRET,
  waitFor,
} from '../support/stripe.js';

const { db } = await createTestDatabase({ max: 12 });
const verifier = createStripeClient({ secretKey: STRIPE_KEY });
const receiver = await startWebhookReceiver((body, signature) =>
  verifier.webhooks.constructEvent(body, signature, WEBHOOK_SECRET),
);
const { emulator, stripe } = await startEmulatorForTest({ webhookEndpoint: receiver.url });
const { config } = testApi(db, { stripe });
const worker = createCreditWorker({ db, packages: DEFAULT_PACKAGES });

/** What the api reported after answering (a top-up left for the sweeper, events left unsent). */
const reported: { what: string; error: unknown }[] = [];
const route = createApiRouter(
  {
    db,
    config,
    stripe: async () => stripe,
    dispatchReconciliation: async () => {},
    reportError: (what, error) => reported.push({ what, error }),
  },
  { onUnexpectedError: (error) => console.error(error) },
);

async function call(routeKey: RouteKey, options: CallOptions = {}) {
  const response = await route(apiEvent(routeKey, options));
  expectDocumented(routeKey, response);
  return {
    status: response.statusCode ?? 200,
    body: (response.body ? JSON.parse(response.body) : {}) as Record<string, unknown>,
  };
}

const spend = (userId: string, amount: number, key = randomUUID()) =>
  call('POST /v1/accounts/{userId}/spend', {
    auth: { iam: SERVICE_ARN },
    params: { userId },
    headers: { 'idempotency-key': key },
    body: { amount },
  });

type Delivered = { id: string; type: string; data: { object: Record<string, unknown> } };

function deliveredAbout(objectId: string): Delivered[] {
  return receiver.received
    .map((w) => JSON.parse(w.body) as Delivered)
    .filter((e) => [e.data.object.id, e.data.object.payment_intent].includes(objectId));
}

async function webhooksFor(objectId: string, types: string[]): Promise<Delivered[]> {
  await waitFor(
    () => types.every((t) => deliveredAbout(objectId).some((e) => e.type === t)),
    `${types.join(', ')} for ${objectId}`,
  );
  return deliveredAbout(objectId);
}

/** Feeds events to the credit worker, one SQS batch each, all at once; fails on any batch item failure. */
async function deliverAll(events: Delivered[]) {
  const responses = await Promise.all(events.map((event) => deliver(worker, [event])));
  expect(responses.flatMap((r) => r.batchItemFailures)).toEqual([]);
}

/** A user who bought PACK (1,000 credits) at checkout with saveCard: true, every webhook of it applied. */
async function givenSavedCard(card?: 'pm_card_chargeDeclined' | 'pm_card_authenticationRequired') {
  const userId = `user_${randomUUID()}`;
  const checkout = await call('POST /v1/checkout', {
    auth: { user: userId },
    body: { packageId: PACK.id, saveCard: true },
  });
  expect(checkout.status).toBe(201);
  const payment = await paymentRow(String(checkout.body.paymentId));
  const sessionId = payment.stripe_checkout_session_id!;
  await control(emulator, `checkout/sessions/${sessionId}/complete`, { outcome: 'paid' });
  const session = await stripe.checkout.sessions.retrieve(sessionId);
  await deliverAll([
    ...(await webhooksFor(sessionId, ['checkout.session.completed'])),
    ...(await webhooksFor(String(session.payment_intent), ['payment_intent.succeeded'])),
  ]);
  const account = await requireAccountByUserId(db, userId);
  expect(account).toMatchObject({ balance: PACK.credits, stripe_customer_id: session.customer });
  if (card) {
    await control(emulator, `customers/${account.stripe_customer_id}/payment_method`, {
      payment_method: card,
    });
  }
  return { userId, account };
}

const enableAutoTopUp = (userId: string, settings: { thresholdCredits: number; maxPerMonth?: number }) =>
  call('PUT /v1/me/auto-topup', {
    auth: { user: userId },
    body: { enabled: true, packageId: PACK.id, maxPerMonth: 10, ...settings },
  });

const paymentRow = (id: string) =>
  db.selectFrom('payments').selectAll().where('id', '=', id).executeTakeFirstOrThrow();

const topUpsOf = (accountId: string) =>
  db
    .selectFrom('payments')
    .selectAll()
    .where('account_id', '=', accountId)
    .where('kind', '=', 'auto_topup')
    .orderBy('created_at')
    .execute();

/** The off-session PaymentIntents Stripe holds for the account's customer. */
async function offSessionIntents(customerId: string): Promise<Stripe.PaymentIntent[]> {
  const intents: Stripe.PaymentIntent[] = [];
  for await (const intent of stripe.paymentIntents.list({ limit: 100 })) {
    if (intent.customer === customerId && intent.metadata.kind === 'auto_topup') intents.push(intent);
  }
  return intents;
}

/** The outbound events of `type` the account's changes wrote to the outbox. */
async function outboxEvents(accountId: string, type: string) {
  const rows = await db
    .selectFrom('webhook_outbox')
    .select('payload')
    .where('account_id', '=', accountId)
    .where('type', '=', type)
    .orderBy('created_at')
    .execute();
  return rows.map((r) => (typeof r.payload === 'string' ? JSON.parse(r.payload) : r.payload)) as {
    data: Record<string, unknown>;
  }[];
}

const autoTopUpOf = async (userId: string) =>
  (await call('GET /v1/me/auto-topup', { auth: { user: userId } })).body;

describe('auto top-up: the trigger', () => {
  it('20 concurrent spends that cross the threshold start exactly one off-session PaymentIntent, credited once through duplicated webhooks', async () => {
    const { userId, account } = await givenSavedCard();
    expect((await enableAutoTopUp(userId, { thresholdCredits: 500 })).status).toBe(200);

    const spends = await Promise.all(Array.from({ length: 20 }, () => spend(userId, 30)));
    expect(spends.map((s) => s.status)).toEqual(Array(20).fill(200));

    const intents = await offSessionIntents(account.stripe_customer_id!);
    expect(intents).toHaveLength(1);
    const [intent] = intents as [Stripe.PaymentIntent];
    expect(intent).toMatchObject({ status: 'succeeded', amount: PACK.amount, currency: PACK.currency });
    const [topUp, ...others] = await topUpsOf(account.id);
    expect(others).toEqual([]);
    expect(topUp).toMatchObject({ stripe_payment_intent_id: intent.id, status: 'INIT' });

    const events = await webhooksFor(intent.id, ['payment_intent.succeeded', 'charge.succeeded']);
    await deliverAll([...events, ...events, ...events].reverse());
    await deliverAll(events);

    expect(await paymentRow(topUp!.id)).toMatchObject({ status: 'CREDITED' });
    expect((await requireAccountByUserId(db, userId)).balance).toBe(PACK.credits - 20 * 30 + PACK.credits);
    const succeeded = await outboxEvents(account.id, 'auto_topup.succeeded');
    expect(succeeded.map((e) => e.data)).toEqual([
      {
        userId,
        paymentId: topUp!.id,
        packageId: PACK.id,
        credits: PACK.credits,
        amount: PACK.amount,
        currency: PACK.currency,
        balance: PACK.credits - 20 * 30 + PACK.credits,
      },
    ]);
    expect(reported).toEqual([]);
    await expectInvariantsHold(db);
  });

  it('a spend that stays above the threshold, or auto top-up turned off, starts nothing', async () => {
    const { userId, account } = await givenSavedCard();
    await enableAutoTopUp(userId, { thresholdCredits: 500 });
    expect((await spend(userId, 400)).status).toBe(200); // 600 left: above 500
    await call('PUT /v1/me/auto-topup', {
      auth: { user: userId },
      body: { enabled: false, packageId: PACK.id, thresholdCredits: 500, maxPerMonth: 10 },
    });
    expect((await spend(userId, 400)).status).toBe(200); // 200 left: below, but off
    expect(await topUpsOf(account.id)).toEqual([]);
    expect(await offSessionIntents(account.stripe_customer_id!)).toEqual([]);
    await expectInvariantsHold(db);
  });

  it('holds one top-up in flight and maxPerMonth: no second top-up until the first is credited, none past the month’s cap', async () => {
    const { userId, account } = await givenSavedCard();
    await enableAutoTopUp(userId, { thresholdCredits: 900, maxPerMonth: 2 });
    const creditLatest = async () => {
      const latest = (await topUpsOf(account.id)).at(-1)!;
      await deliverAll(await webhooksFor(latest.stripe_payment_intent_id!, ['payment_intent.succeeded']));
      expect(await paymentRow(latest.id)).toMatchObject({ status: 'CREDITED' });
    };
    expect((await spend(userId, 200)).status).toBe(200); // 800: below 900, the first top-up
    expect((await spend(userId, 100)).status).toBe(200); // 700: the first is in flight, none
    expect(await topUpsOf(account.id)).toHaveLength(1);
    await creditLatest(); // 1,700
    expect((await spend(userId, 1_000)).status).toBe(200); // 700: the second
    expect(await topUpsOf(account.id)).toHaveLength(2);
    await creditLatest(); // 1,700
    expect((await spend(userId, 1_000)).status).toBe(200); // 700: the month had its two
    expect(await topUpsOf(account.id)).toHaveLength(2);
    expect(await offSessionIntents(account.stripe_customer_id!)).toHaveLength(2);
    expect((await requireAccountByUserId(db, userId)).balance).toBe(700);

    await enableAutoTopUp(userId, { thresholdCredits: 900, maxPerMonth: 3 });
    expect((await spend(userId, 100)).status).toBe(200);
    expect(await topUpsOf(account.id)).toHaveLength(3);
    expect(reported).toEqual([]);
    await expectInvariantsHold(db);
  });
});

describe('auto top-up: outcomes', () => {
  it('a declined card sends auto_topup.failed once per top-up, whatever the webhooks; three in a row turn it off', async () => {
    const { userId, account } = await givenSavedCard('pm_card_chargeDeclined');
    await enableAutoTopUp(userId, { thresholdCredits: 2_000 });
    for (let i = 0; i < 3; i += 1) {
      expect((await spend(userId, 10)).status).toBe(200);
      const latest = (await topUpsOf(account.id)).at(-1)!;
      expect(latest).toMatchObject({ status: 'FAILED', failure_code: 'card_declined' });
      const webhooks = await webhooksFor(latest.stripe_payment_intent_id!, ['payment_intent.payment_failed']);
      await deliverAll([...webhooks, ...webhooks]);
    }
    const failed = await outboxEvents(account.id, 'auto_topup.failed');
    expect(failed.map((e) => [e.data.code, e.data.consecutiveFailures, e.data.autoTopUpEnabled])).toEqual([
      ['card_declined', 1, true],
      ['card_declined', 2, true],
      ['card_declined', 3, false],
    ]);
    expect(await autoTopUpOf(userId)).toMatchObject({
      enabled: false,
      consecutiveFailures: 3,
      disabledReason: 'three_failed_top_ups_in_a_row',
    });

    await spend(userId, 10); // off now: no fourth attempt
    expect(await topUpsOf(account.id)).toHaveLength(3);
    expect(await offSessionIntents(account.stripe_customer_id!)).toHaveLength(3);
    expect((await requireAccountByUserId(db, userId)).balance).toBe(PACK.credits - 40);
    await expectInvariantsHold(db);
  });

  it('a success resets the failures in a row; turning it on again clears the reason', async () => {
    const { userId, account } = await givenSavedCard('pm_card_chargeDeclined');
    await enableAutoTopUp(userId, { thresholdCredits: 2_000 });
    await spend(userId, 10);
    await spend(userId, 10);
    expect(await autoTopUpOf(userId)).toMatchObject({ enabled: true, consecutiveFailures: 2 });
    await control(emulator, `customers/${account.stripe_customer_id}/payment_method`, {
      payment_method: 'pm_card_visa',
    });
    await spend(userId, 10);
    const visa = (await topUpsOf(account.id)).at(-1)!;
    await deliverAll(await webhooksFor(visa.stripe_payment_intent_id!, ['payment_intent.succeeded']));
    expect(await autoTopUpOf(userId)).toMatchObject({ enabled: true, consecutiveFailures: 0 });
    expect(await outboxEvents(account.id, 'auto_topup.succeeded')).toHaveLength(1);
    await expectInvariantsHold(db);
  });

  it('an authentication-required card sends auto_topup.requires_action once and credits nothing', async () => {
    const { userId, account } = await givenSavedCard('pm_card_authenticationRequired');
    await enableAutoTopUp(userId, { thresholdCredits: 2_000 });
    await spend(userId, 10);
    const [topUp] = await topUpsOf(account.id);
    expect(topUp).toMatchObject({ status: 'FAILED', failure_code: 'authentication_required' });
    const webhooks = await webhooksFor(topUp!.stripe_payment_intent_id!, ['payment_intent.payment_failed']);
    await deliverAll([...webhooks, ...webhooks]);

    expect((await outboxEvents(account.id, 'auto_topup.requires_action')).map((e) => e.data)).toEqual([
      expect.objectContaining({ userId, paymentId: topUp!.id, code: 'authentication_required' }),
    ]);
    expect(await outboxEvents(account.id, 'auto_topup.failed')).toEqual([]);
    expect((await requireAccountByUserId(db, userId)).balance).toBe(PACK.credits - 10);
    const grants = await db
      .selectFrom('credit_grants')
      .select('source')
      .where('account_id', '=', account.id)
      .where('source', '=', 'auto_topup')
      .execute();
    expect(grants).toEqual([]);
    await expectInvariantsHold(db);
  });

  it('the webhook first, then the charge’s own answer: one auto_topup.failed', async () => {
    const { userId, account } = await givenSavedCard('pm_card_chargeDeclined');
    await enableAutoTopUp(userId, { thresholdCredits: 2_000 });
    const payment = await inAccountTransaction(db, account.id, (trx, locked) =>
      createTopUp(trx, locked, PACK),
    );
    if (typeof payment === 'string') throw new Error(`top-up not created: ${payment}`);
    const intentId = await stripe.paymentIntents
      .create(
        {
          amount: PACK.amount,
          currency: PACK.currency,
          customer: account.stripe_customer_id!,
          payment_method: account.stripe_payment_method_id!,
          off_session: true,
          confirm: true,
          metadata: { payment_id: payment.id, user_id: userId, package_id: PACK.id, kind: 'auto_topup' },
        },
        { idempotencyKey: payment.id },
      )
      .then(
        () => undefined,
        (error: { payment_intent?: { id: string } }) => error.payment_intent?.id,
      );
    await deliverAll(await webhooksFor(intentId!, ['payment_intent.payment_failed']));
    // The charge's own answer, recorded late (chargeTopUp replays the request under the same key).
    expect(await chargeTopUp(db, stripe, payment.id)).toMatchObject({
      outcome: 'failed',
      code: 'card_declined',
    });
    expect(await outboxEvents(account.id, 'auto_topup.failed')).toHaveLength(1);
    expect((await stripe.charges.list({ payment_intent: intentId! })).data).toHaveLength(1);
  });
});

describe('auto top-up: the sweeper', () => {
  it('charges a top-up a crash left uncharged after a minute, once, even when Stripe had answered the lost request', async () => {
    const { userId, account } = await givenSavedCard();
    await enableAutoTopUp(userId, { thresholdCredits: 500 });
    // The api committed the spend and its top-up, then crashed before charging it.
    const payment = await inAccountTransaction(db, account.id, (trx, locked) =>
      createTopUp(trx, locked, PACK),
    );
    if (typeof payment === 'string') throw new Error(`top-up not created: ${payment}`);
    const sweepAt = (offsetMs: number) =>
      createSweeper({ db, stripe: async () => stripe, clock: () => new Date(Date.now() + offsetMs) });

    expect(await sweepAt(0)(undefined, lambdaContext('sweeper'))).toMatchObject({ topUpsCharged: 0 });
    expect(await offSessionIntents(account.stripe_customer_id!)).toEqual([]);
    expect(await sweepAt(61_000)(undefined, lambdaContext('sweeper'))).toMatchObject({ topUpsCharged: 1 });
    expect(await sweepAt(61_000)(undefined, lambdaContext('sweeper'))).toMatchObject({ topUpsCharged: 0 });

    const [intent, ...more] = await offSessionIntents(account.stripe_customer_id!);
    expect(more).toEqual([]);
    expect(intent).toMatchObject({ status: 'succeeded', metadata: { payment_id: payment.id } });
    expect((await stripe.charges.list({ payment_intent: intent!.id })).data).toHaveLength(1);
    await deliverAll(await webhooksFor(intent!.id, ['payment_intent.succeeded']));
    expect(await paymentRow(payment.id)).toMatchObject({
      status: 'CREDITED',
      stripe_payment_intent_id: intent!.id,
    });
    expect((await requireAccountByUserId(db, userId)).balance).toBe(2 * PACK.credits);
    await expectInvariantsHold(db);
  });

  it('a charge Stripe made but whose answer was lost is found again by its idempotency key: one charge', async () => {
    const { userId, account } = await givenSavedCard();
    const payment = await inAccountTransaction(db, account.id, (trx, locked) =>
      createTopUp(trx, locked, PACK),
    );
    if (typeof payment === 'string') throw new Error(`top-up not created: ${payment}`);
    const lost = await stripe.paymentIntents.create(
      {
        amount: PACK.amount,
        currency: PACK.currency,
        customer: account.stripe_customer_id!,
        payment_method: account.stripe_payment_method_id!,
        off_session: true,
        confirm: true,
        metadata: { payment_id: payment.id, user_id: userId, package_id: PACK.id, kind: 'auto_topup' },
      },
      { idempotencyKey: payment.id },
    );
    const sweeper = createSweeper({
      db,
      stripe: async () => stripe,
      clock: () => new Date(Date.now() + 61_000),
    });
    expect(await sweeper(undefined, lambdaContext('sweeper'))).toMatchObject({ topUpsCharged: 1 });
    expect(await paymentRow(payment.id)).toMatchObject({ stripe_payment_intent_id: lost.id });
    expect(await offSessionIntents(account.stripe_customer_id!)).toHaveLength(1);
    expect((await stripe.charges.list({ payment_intent: lost.id })).data).toHaveLength(1);
  });

  it('a spend whose charge Stripe does not answer is answered 200, reported, and charged by the sweeper', async () => {
    const { userId, account } = await givenSavedCard();
    await enableAutoTopUp(userId, { thresholdCredits: 500 });
    reported.length = 0;
    await control(emulator, 'faults', { status: 500, count: 1 });
    expect((await spend(userId, 600)).status).toBe(200);
    expect(reported.map((r) => r.what)).toEqual(['auto top-up left for the sweeper to charge']);
    reported.length = 0;
    const [topUp] = await topUpsOf(account.id);
    expect(topUp).toMatchObject({ status: 'INIT', stripe_payment_intent_id: null });

    const sweeper = createSweeper({
      db,
      stripe: async () => stripe,
      clock: () => new Date(Date.now() + 61_000),
    });
    expect(await sweeper(undefined, lambdaContext('sweeper'))).toMatchObject({ topUpsCharged: 1 });
    expect(await offSessionIntents(account.stripe_customer_id!)).toHaveLength(1);
    await expectInvariantsHold(db);
  });
});

describe('PUT /v1/me/auto-topup: bad input', () => {
  const put = (userId: string, body: Record<string, unknown>) =>
    call('PUT /v1/me/auto-topup', {
      auth: { user: userId },
      body: { enabled: true, packageId: PACK.id, thresholdCredits: 100, maxPerMonth: 5, ...body },
    });
  const settingsRows = (accountId: string) =>
    db.selectFrom('auto_topup_settings').selectAll().where('account_id', '=', accountId).execute();

  it('answers 409 no_saved_card when enabling without a saved card, and writes nothing', async () => {
    const account = await givenAccount(db);
    const userId = account.external_user_id!;
    const response = await put(userId, {});
    expect(response).toMatchObject({ status: 409, body: { code: 'no_saved_card' } });
    expect(await settingsRows(account.id)).toEqual([]);
    expect(await autoTopUpOf(userId)).toMatchObject({
      enabled: false,
      hasSavedCard: false,
      recentTopUps: [],
    });
    // Saving it turned off needs no card.
    expect((await put(userId, { enabled: false })).status).toBe(200);
  });

  it('refuses a user it has never seen without creating the account', async () => {
    const accountsOf = (userId: string) =>
      db.selectFrom('accounts').select('id').where('external_user_id', '=', userId).execute();
    for (const [userId, body, code] of [
      ['never-seen-no-card', {}, 'no_saved_card'],
      ['never-seen-bad-pack', { packageId: 'pack_huge', enabled: false }, 'unknown_package'],
    ] as const) {
      expect((await put(userId, body)).body).toMatchObject({ code });
      expect(await accountsOf(userId)).toEqual([]);
    }
  });

  it.each([
    ['an unknown pack', { packageId: 'pack_huge' }, 'unknown_package', undefined],
    ['a negative threshold', { thresholdCredits: -1 }, 'validation_error', 'thresholdCredits'],
    ['a fractional threshold', { thresholdCredits: 1.5 }, 'validation_error', 'thresholdCredits'],
    ['a threshold as text', { thresholdCredits: '100' }, 'validation_error', 'thresholdCredits'],
    ['maxPerMonth 0', { maxPerMonth: 0 }, 'validation_error', 'maxPerMonth'],
    ['maxPerMonth 101', { maxPerMonth: 101 }, 'validation_error', 'maxPerMonth'],
    ['a fractional maxPerMonth', { maxPerMonth: 2.5 }, 'validation_error', 'maxPerMonth'],
    ['enabled missing', { enabled: undefined }, 'validation_error', 'enabled'],
    ['an unknown field', { threshold: 5 }, 'validation_error', undefined],
  ])('answers 400 for %s, and writes nothing', async (_what, body, code, field) => {
    const { userId, account } = await givenSavedCard();
    const response = await put(userId, body);
    expect(response).toMatchObject({ status: 400, body: { code, ...(field && { field }) } });
    expect(await settingsRows(account.id)).toEqual([]);
  });

  it('shows the saved card, the settings and the latest top-ups', async () => {
    const { userId } = await givenSavedCard();
    expect((await put(userId, { thresholdCredits: 950, maxPerMonth: 3 })).body).toMatchObject({
      enabled: true,
      packageId: PACK.id,
      thresholdCredits: 950,
      maxPerMonth: 3,
      hasSavedCard: true,
      recentTopUps: [],
    });
    await spend(userId, 100);
    const view = await autoTopUpOf(userId);
    expect(view.recentTopUps).toEqual([
      expect.objectContaining({
        packageId: PACK.id,
        credits: PACK.credits,
        status: 'INIT',
        failureCode: null,
      }),
    ]);
  });
});

// Last: its sweep a day ahead would also close the other tests' fresh top-ups.
describe('auto top-up: a top-up never charged', () => {
  it('closes a top-up never charged within 23 h as FAILED (not_charged), once, so the next one can start', async () => {
    const { userId, account } = await givenSavedCard();
    await enableAutoTopUp(userId, { thresholdCredits: 500 });
    const payment = await inAccountTransaction(db, account.id, (trx, locked) =>
      createTopUp(trx, locked, PACK),
    );
    if (typeof payment === 'string') throw new Error(`top-up not created: ${payment}`);
    // Stripe unreachable for a day: past its idempotency window a retry could charge twice, so none is made.
    const dayLater = createSweeper({
      db,
      stripe: async () => stripe,
      clock: () => new Date(Date.now() + 23 * 3_600_000 + 1_000),
    });
    await dayLater(undefined, lambdaContext('sweeper'));
    await dayLater(undefined, lambdaContext('sweeper'));
    expect(await paymentRow(payment.id)).toMatchObject({ status: 'FAILED', failure_code: 'not_charged' });
    expect(await offSessionIntents(account.stripe_customer_id!)).toEqual([]);
    expect(await outboxEvents(account.id, 'auto_topup.failed')).toHaveLength(1);
    const next = await inAccountTransaction(db, account.id, (trx, locked) => createTopUp(trx, locked, PACK));
    expect(typeof next).not.toBe('string');
    await expectInvariantsHold(db);
  });
});
