import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import type Stripe from 'stripe';
import { beforeEach, describe, expect, it } from 'vitest';
import { createCreditWorker } from '../../functions/credit-worker.js';
import { createReconcileHandler } from '../../functions/reconcile.js';
import { createWebhookIntake } from '../../functions/webhook-intake.js';
import { inAccountTransaction, saveCard } from '../../shared/accounts/accounts.js';
import { loadIntakeConfig } from '../../shared/config.js';
import { DEFAULT_PACKAGES } from '../../shared/packages.js';
import { createRun, executeRun } from '../../shared/reconcile/reconcile.js';
import { createStripeClient } from '../../shared/stripe/client.js';
import { createTopUp, startTopUp } from '../../shared/topup/topup.js';
import { ADMIN_ARN, testApi } from '../support/api.js';
import { createTestDatabase } from '../support/database.js';
import { lambdaContext, sqsEvent, webhookRequest } from '../support/events.js';
import { givenAccount, givenFundedAccount, givenPayment } from '../support/factories.js';
import { expectInvariantsHold } from '../support/invariants.js';
import { control, STRIPE_KEY, startEmulatorForTest, WEBHOOK_SECRET, waitFor } from '../support/stripe.js';

const { db } = await createTestDatabase({ max: 20 });
const PACK = DEFAULT_PACKAGES[0]!;

// The live path: emulator -> HTTP -> intake handler -> (SQS, mocked at the SDK) -> worker -> Postgres.
const worker = createCreditWorker({ db, packages: DEFAULT_PACKAGES });
const sqsMock = mockClient(SQSClient);
const intake = createWebhookIntake({
  config: loadIntakeConfig({
    QUEUE_URL: 'https://sqs.us-east-1.amazonaws.com/1/q',
    STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
  }),
  sqs: new SQSClient({}),
});
const endpoint = createServer(async (req, res) => {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const request = webhookRequest(Buffer.concat(chunks).toString('utf8'), {
    'stripe-signature': String(req.headers['stripe-signature']),
  });
  const response = (await intake(request, lambdaContext())) as APIGatewayProxyStructuredResultV2;
  res.writeHead(response.statusCode ?? 500).end(response.body);
});
await new Promise<void>((resolve) => endpoint.listen(0, '127.0.0.1', resolve));
const { emulator, stripe } = await startEmulatorForTest({
  webhookEndpoint: `http://127.0.0.1:${(endpoint.address() as AddressInfo).port}/webhooks/stripe`,
});

beforeEach(async () => {
  sqsMock.reset();
  sqsMock.on(SendMessageCommand).callsFake(async (input: { MessageBody: string }) => {
    const result = (await worker(sqsEvent([input.MessageBody]), lambdaContext())) as {
      batchItemFailures: unknown[];
    };
    if (result.batchItemFailures.length > 0) throw new Error('worker failed');
    return { MessageId: 'm' };
  });
  await control(emulator, 'webhooks/pause');
  await control(emulator, 'faults', { status: 500, count: 0 });
});

const fastDeps = (client: Stripe = stripe) => ({
  db,
  stripe: client,
  packages: DEFAULT_PACKAGES,
  retryBaseMs: 5,
  requestsPerSecond: 1000,
});
const window = () => ({ start: new Date(Date.now() - 3_600_000), end: new Date(Date.now() + 60_000) });
const run = async (client?: Stripe) => executeRun(fastDeps(client), await createRun(db, 'admin', window()));

/** A session for `userId` as the app's checkout would create it outside a payment row: metadata only. */
async function paidSession(
  userId: string,
  metadata: Record<string, string> = { user_id: userId, package_id: PACK.id },
) {
  const session = await stripe.checkout.sessions.create({
    mode: 'payment',
    line_items: [
      {
        quantity: 1,
        price_data: { currency: PACK.currency, unit_amount: PACK.amount, product_data: { name: PACK.name } },
      },
    ],
    success_url: 'http://127.0.0.1/success',
    metadata,
  });
  await control(emulator, `checkout/sessions/${session.id}/complete`, { outcome: 'paid' });
  return stripe.checkout.sessions.retrieve(session.id, { expand: ['payment_intent'] });
}

const balanceOf = async (userId: string) =>
  (
    await db
      .selectFrom('accounts')
      .select('balance')
      .where('external_user_id', '=', userId)
      .executeTakeFirst()
  )?.balance;

/** A run's findings, optionally of one kind. */
function findingsOf(runId: string, kind?: string) {
  return db
    .selectFrom('reconciliation_findings')
    .selectAll()
    .where('run_id', '=', runId)
    .$if(kind !== undefined, (q) => q.where('kind', '=', kind!))
    .execute();
}

describe('reconciliation', () => {
  it('credits and claws back what lost webhooks missed, exactly once; a second run changes nothing', async () => {
    const buyer = `recon-${Date.now()}`;
    await paidSession(`${buyer}-a`);
    const refunded = await paidSession(`${buyer}-b`);
    const disputed = await paidSession(`${buyer}-c`);
    await stripe.refunds.create({
      payment_intent: (refunded.payment_intent as Stripe.PaymentIntent).id,
      amount: 200,
    });
    await control(
      emulator,
      `charges/${(disputed.payment_intent as Stripe.PaymentIntent).latest_charge}/dispute`,
    );

    const first = await run();
    expect(first).toMatchObject({ status: 'succeeded', findings: 0 });
    expect(first.healed).toBe(5);
    expect([
      await balanceOf(`${buyer}-a`),
      await balanceOf(`${buyer}-b`),
      await balanceOf(`${buyer}-c`),
    ]).toEqual([1000, 600, 0]);

    const second = await run();
    expect(second).toMatchObject({ status: 'succeeded', healed: 0, findings: 0 });
    expect([
      await balanceOf(`${buyer}-a`),
      await balanceOf(`${buyer}-b`),
      await balanceOf(`${buyer}-c`),
    ]).toEqual([1000, 600, 0]);

    // The webhooks arrive after all: nothing changes.
    await control(emulator, 'webhooks/resume');
    await waitFor(
      () => emulator.webhooks.status().pending === 0 && emulator.webhooks.status().inFlight === 0,
      'deliveries drained',
    );
    expect([
      await balanceOf(`${buyer}-a`),
      await balanceOf(`${buyer}-b`),
      await balanceOf(`${buyer}-c`),
    ]).toEqual([1000, 600, 0]);
    await expectInvariantsHold(db);
  });

  it('records a paid session naming no known user as a finding', async () => {
    const session = await paidSession('nobody', {});
    const summary = await run();
    expect(summary.status).toBe('succeeded');
    expect(await findingsOf(summary.runId)).toEqual([
      expect.objectContaining({ kind: 'unknown_user', stripe_object_id: session.id }),
    ]);
    await expectInvariantsHold(db);
  });

  it('records a credited payment whose session Stripe does not know as a finding, and still succeeds', async () => {
    const { payment } = await givenFundedAccount(db, 300);
    const summary = await run();
    expect(summary.status).toBe('succeeded');
    expect(await findingsOf(summary.runId, 'credited_not_paid')).toEqual([
      expect.objectContaining({
        kind: 'credited_not_paid',
        payment_id: payment.id,
        stripe_object_id: payment.stripe_checkout_session_id,
        details: { stripeStatus: 'no such checkout session' },
      }),
    ]);
    await expectInvariantsHold(db);
  });

  it('settles payments of ours created before the window: a delayed method paid since, a session expired since', async () => {
    /** A payment row of ours and its Stripe session, as POST /v1/checkout makes them. */
    const ourCheckout = async () => {
      const account = await givenAccount(db);
      const payment = await givenPayment(db, account, {
        credits: PACK.credits,
        amountTotal: PACK.amount,
        packageId: PACK.id,
      });
      const session = await stripe.checkout.sessions.create({
        mode: 'payment',
        line_items: [
          {
            quantity: 1,
            price_data: {
              currency: PACK.currency,
              unit_amount: PACK.amount,
              product_data: { name: PACK.name },
            },
          },
        ],
        success_url: 'http://127.0.0.1/success',
        metadata: { payment_id: payment.id, user_id: account.external_user_id!, package_id: PACK.id },
      });
      await db
        .updateTable('payments')
        .set({ stripe_checkout_session_id: session.id })
        .where('id', '=', payment.id)
        .execute();
      return { account, payment, session };
    };
    const delayed = await ourCheckout();
    const abandoned = await ourCheckout();
    await control(emulator, `checkout/sessions/${delayed.session.id}/complete`, { outcome: 'async_pending' });
    await new Promise((resolve) => setTimeout(resolve, 1100)); // Stripe's `created` has whole seconds
    const start = new Date();
    await control(emulator, `checkout/sessions/${delayed.session.id}/complete`, {
      outcome: 'async_succeeded',
    });
    await stripe.checkout.sessions.expire(abandoned.session.id);

    const summary = await executeRun(
      fastDeps(),
      await createRun(db, 'admin', { start, end: new Date(Date.now() + 60_000) }),
    );
    expect(summary).toMatchObject({ status: 'succeeded', healed: 1 });
    expect(summary.counts.pendingChecked).toBeGreaterThanOrEqual(2);
    expect(await balanceOf(delayed.account.external_user_id!)).toBe(PACK.credits);
    const statusOf = async (id: string) =>
      (await db.selectFrom('payments').select('status').where('id', '=', id).executeTakeFirstOrThrow())
        .status;
    expect(await statusOf(delayed.payment.id)).toBe('CREDITED');
    expect(await statusOf(abandoned.payment.id)).toBe('EXPIRED');
    await expectInvariantsHold(db);
  });

  it('reinstates a dispute opened before the window and won inside it', async () => {
    const user = `recon-dispute-${Date.now()}`;
    const session = await paidSession(user);
    const charge = (session.payment_intent as Stripe.PaymentIntent).latest_charge as string;
    const dispute = await control<{ id: string }>(emulator, `charges/${charge}/dispute`);
    expect((await run()).status).toBe('succeeded');
    expect(await balanceOf(user)).toBe(0);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const start = new Date();
    await control(emulator, `disputes/${dispute.id}/close`, { outcome: 'won' });

    const summary = await executeRun(
      fastDeps(),
      await createRun(db, 'admin', { start, end: new Date(Date.now() + 60_000) }),
    );
    expect(summary).toMatchObject({ status: 'succeeded', healed: 1 });
    expect(await balanceOf(user)).toBe(PACK.credits);
    await expectInvariantsHold(db);
  });

  it('refuses a second concurrent run', async () => {
    const open = await createRun(db, 'admin', window());
    await expect(createRun(db, 'schedule', window())).rejects.toMatchObject({
      status: 409,
      code: 'reconciliation_running',
    });
    await executeRun(fastDeps(), open);
  });

  it('leaves a partial run when Stripe fails midway, and a rerun finishes the job', async () => {
    const users = Array.from({ length: 120 }, (_, i) => `partial-${Date.now()}-${i}`);
    for (const user of users) await paidSession(user);
    // After the first page of sessions, Stripe answers 500 to everything (more than the retries).
    const failing = createStripeClient({
      secretKey: STRIPE_KEY,
      apiBase: emulator.url,
      maxNetworkRetries: 0,
    });
    const list = failing.checkout.sessions.list.bind(failing.checkout.sessions);
    let pages = 0;
    failing.checkout.sessions.list = (async (...args: Parameters<typeof list>) => {
      const page = await list(...args);
      if (++pages === 1) await control(emulator, 'faults', { status: 500, count: 1_000 });
      return page;
    }) as typeof list;
    const partial = await run(failing);
    expect(partial.status).toBe('partial');
    expect(partial.error).toMatch(/StripeAPIError/);
    expect(partial.counts.stripeRetries).toBeGreaterThan(0);
    const creditedBefore = (await Promise.all(users.map(balanceOf))).filter((b) => b === 1000).length;
    expect(creditedBefore).toBe(100);
    await control(emulator, 'faults', { status: 500, count: 0 });
    const rerun = await run();
    expect(rerun.status).toBe('succeeded');
    expect((await Promise.all(users.map(balanceOf))).every((b) => b === 1000)).toBe(true);
    const stored = await db
      .selectFrom('reconciliation_runs')
      .selectAll()
      .where('id', '=', partial.runId)
      .executeTakeFirstOrThrow();
    expect(stored).toMatchObject({ status: 'partial', healed: 100 });
    await expectInvariantsHold(db);
  });

  it('ends with every invariant holding when it runs during live webhook delivery', async () => {
    const users = Array.from({ length: 60 }, (_, i) => `live-${Date.now()}-${i}`);
    for (const user of users) await paidSession(user);
    await control(emulator, 'chaos', { duplicate_rate: 0.5, reorder: true });
    await control(emulator, 'webhooks/resume');
    const summary = await run();
    await waitFor(
      () => emulator.webhooks.status().pending === 0 && emulator.webhooks.status().inFlight === 0,
      'deliveries drained',
      60_000,
    );
    await control(emulator, 'chaos', { duplicate_rate: 0, reorder: false });
    expect(summary.status).toBe('succeeded');
    expect((await Promise.all(users.map(balanceOf))).every((b) => b === 1000)).toBe(true);
    await expectInvariantsHold(db);
  });
  it('heals 1,000 sessions across pages', async () => {
    const users = Array.from({ length: 1000 }, (_, i) => `bulk-${Date.now()}-${i}`);
    for (const user of users) await paidSession(user);
    const summary = await run();
    expect(summary).toMatchObject({ status: 'succeeded', healed: 1000 });
    expect(summary.counts.paidSessions).toBeGreaterThanOrEqual(1000);
    const balances = await db
      .selectFrom('accounts')
      .select('balance')
      .where('external_user_id', 'in', users)
      .execute();
    expect(balances).toHaveLength(1000);
    expect(balances.every((b) => b.balance === 1000)).toBe(true);
    await expectInvariantsHold(db);
  });

  it('runs on demand through the admin API and on schedule through the reconcile function', async () => {
    const api = testApi(db, { stripe });
    const started = await api.call('POST /v1/admin/reconciliation/runs', {
      auth: { iam: ADMIN_ARN },
      body: { windowHours: 2 },
    });
    expect(started).toMatchObject({ status: 202, body: { status: 'running', trigger: 'admin' } });
    await api.settleRuns();
    const finished = await api.call('GET /v1/admin/reconciliation/runs/{runId}', {
      auth: { iam: ADMIN_ARN },
      params: { runId: String(started.body.id) },
    });
    expect(finished.body).toMatchObject({ status: 'succeeded', findingsList: expect.any(Array) });
    const listed = await api.call('GET /v1/admin/reconciliation/runs', { auth: { iam: ADMIN_ARN } });
    expect((listed.body.data as Array<{ id: string }>)[0]!.id).toBe(started.body.id);
    // Every field of the body is optional, so no body at all starts a run with the defaults.
    const bare = await api.call('POST /v1/admin/reconciliation/runs', { auth: { iam: ADMIN_ARN } });
    expect(bare).toMatchObject({ status: 202, body: { status: 'running', trigger: 'admin' } });
    await api.settleRuns();

    const scheduled = createReconcileHandler(async () => fastDeps());
    const summary = (await scheduled({ windowHours: 1 }, lambdaContext('reconcile'))) as {
      status: string;
      runId: string;
    };
    expect(summary.status).toBe('succeeded');
    const row = await db
      .selectFrom('reconciliation_runs')
      .selectAll()
      .where('id', '=', summary.runId)
      .executeTakeFirstOrThrow();
    expect(row).toMatchObject({ trigger: 'schedule', status: 'succeeded' });
    expect(row.finished_at).toBeInstanceOf(Date);
  });
});

describe('reconciliation of auto top-ups', () => {
  /** An account with a saved card in the emulator (`card` is one of its test cards). */
  async function withSavedCard(card: string) {
    const account = await givenAccount(db);
    const customer = await stripe.customers.create({ payment_method: card });
    const [method] = (await stripe.paymentMethods.list({ customer: customer.id })).data;
    await inAccountTransaction(db, account.id, (trx, locked) =>
      saveCard(trx, locked, { customerId: customer.id, paymentMethodId: method!.id, savedAt: new Date() }),
    );
    return db.selectFrom('accounts').selectAll().where('id', '=', account.id).executeTakeFirstOrThrow();
  }
  const paymentOf = (id: string) =>
    db.selectFrom('payments').selectAll().where('id', '=', id).executeTakeFirstOrThrow();

  it("credits a charged top-up whose payment_intent.succeeded was lost, once; a lost decline's payment is FAILED", async () => {
    // The emulator's webhooks are paused (beforeEach): every one of them is lost.
    const paid = await withSavedCard('pm_card_visa');
    const declined = await withSavedCard('pm_card_chargeDeclined');
    const charged = await startTopUp(db, stripe, paid.id, PACK);
    expect(charged.outcome).toBe('succeeded');
    const chargedId = (charged as { paymentId: string }).paymentId;
    expect((await paymentOf(chargedId)).status).toBe('INIT');
    // A decline whose answer was lost too (a crash after Stripe answered, before it was recorded).
    const refused = await inAccountTransaction(db, declined.id, (trx, locked) =>
      createTopUp(trx, locked, PACK),
    );
    if (typeof refused === 'string') throw new Error(refused);
    await expect(
      stripe.paymentIntents.create(
        {
          amount: PACK.amount,
          currency: PACK.currency,
          customer: declined.stripe_customer_id!,
          payment_method: declined.stripe_payment_method_id!,
          off_session: true,
          confirm: true,
          metadata: {
            payment_id: refused.id,
            kind: 'auto_topup',
            package_id: PACK.id,
            user_id: declined.external_user_id!,
          },
        },
        { idempotencyKey: refused.id },
      ),
    ).rejects.toMatchObject({ code: 'card_declined' });
    expect((await paymentOf(refused.id)).status).toBe('INIT');

    const first = await run();
    expect(first).toMatchObject({ status: 'succeeded', counts: { topUps: 2 } });
    expect((await paymentOf(chargedId)).status).toBe('CREDITED');
    expect((await paymentOf(refused.id)).status).toBe('FAILED');
    expect(await balanceOf(paid.external_user_id!)).toBe(PACK.credits);
    expect(await balanceOf(declined.external_user_id!)).toBe(0);
    const second = await run();
    expect(second.healed).toBe(0);
    const ours = new Set([chargedId, refused.id]);
    const findings = await findingsOf(second.runId);
    expect(findings.filter((f) => ours.has(f.payment_id ?? ''))).toEqual([]);
    await expectInvariantsHold(db);
  });

  it('reports a credited top-up whose PaymentIntent Stripe does not show as paid', async () => {
    const account = await withSavedCard('pm_card_visa');
    const charged = await startTopUp(db, stripe, account.id, PACK);
    const paymentId = (charged as { paymentId: string }).paymentId;
    await run();
    expect((await paymentOf(paymentId)).status).toBe('CREDITED');
    // Pointed at an intent that never succeeded (as a hand-made row would be).
    const other = await stripe.paymentIntents.create({ amount: PACK.amount, currency: PACK.currency });
    await db
      .updateTable('payments')
      .set({ stripe_payment_intent_id: other.id })
      .where('id', '=', paymentId)
      .execute();
    const summary = await run();
    const findings = await findingsOf(summary.runId, 'credited_not_paid');
    expect(findings.filter((f) => f.payment_id === paymentId)).toMatchObject([
      { stripe_object_id: other.id, details: { stripeStatus: 'requires_payment_method' } },
    ]);
  });
});
