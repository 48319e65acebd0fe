import { sql } from 'kysely';
import { describe, expect, inject, it } from 'vitest';
import { createCreditWorker } from '../../functions/credit-worker.js';
import { inAccountTransaction } from '../../shared/accounts/accounts.js';
import { createDb } from '../../shared/db/client.js';
import { InsufficientCreditsError } from '../../shared/errors.js';
import { spendCredits } from '../../shared/ledger/ledger.js';
import { DEFAULT_PACKAGES } from '../../shared/packages.js';
import { createTestDatabase } from '../support/database.js';
import { checkoutSession, lambdaContext, sqsEvent, stripeEvent, stripeIds } from '../support/events.js';
import { expectInvariantsHold } from '../support/invariants.js';
import {
  deliver,
  expectOnlyUncommittedFailed,
  givenCheckout,
  PACK,
  processBatch,
  purchaseState,
} from '../support/purchase.js';

const { db } = await createTestDatabase({ max: 30 });
const worker = createCreditWorker({ db, packages: DEFAULT_PACKAGES });

describe('crediting', () => {
  it('credits once for completed, async_payment_succeeded and payment_intent.succeeded, five times each, concurrently', async () => {
    const checkout = await givenCheckout(db);
    const events = [checkout.completed(), checkout.asyncSucceeded(), checkout.intentSucceeded()];
    const deliveries = Array.from({ length: 5 }, () => events).flat();
    const responses = await Promise.all(deliveries.map((event) => deliver(worker, [event])));
    expect(responses.flatMap((r) => r.batchItemFailures)).toEqual([]);
    expect(await purchaseState(db, checkout)).toMatchObject({
      balance: PACK.credits,
      status: 'CREDITED',
      purchased: PACK.credits,
    });
    const processed = await db.selectFrom('processed_events').select('outcome').execute();
    expect(processed.filter((p) => p.outcome === 'applied')).toHaveLength(3);
    await expectInvariantsHold(db);
  });

  it('waits for a delayed method: unpaid completion credits nothing, async success credits, async failure fails', async () => {
    const good = await givenCheckout(db);
    await deliver(worker, [good.completed('unpaid')]);
    expect(await purchaseState(db, good)).toMatchObject({
      balance: 0,
      status: 'INIT',
      stripe_payment_intent_id: good.ids.intent,
    });
    await deliver(worker, [good.asyncSucceeded()]);
    expect(await purchaseState(db, good)).toMatchObject({ balance: PACK.credits, status: 'CREDITED' });

    const bad = await givenCheckout(db);
    await deliver(worker, [bad.completed('unpaid'), bad.asyncFailed()]);
    expect(await purchaseState(db, bad)).toMatchObject({ balance: 0, status: 'FAILED' });
    await expectInvariantsHold(db);
  });

  it('expires an unpaid checkout, and never expires a credited one', async () => {
    const unpaid = await givenCheckout(db);
    await deliver(worker, [unpaid.expired()]);
    expect((await purchaseState(db, unpaid)).status).toBe('EXPIRED');
    const paid = await givenCheckout(db);
    await deliver(worker, [paid.completed()]);
    await deliver(worker, [paid.expired()]);
    expect(await purchaseState(db, paid)).toMatchObject({ status: 'CREDITED', balance: PACK.credits });
  });

  it('credits a session created outside our checkout when its metadata names a user and a matching pack', async () => {
    const ids = stripeIds();
    const userId = `external-${ids.session}`;
    const session = checkoutSession({
      id: ids.session,
      payment_intent: ids.intent,
      amount_total: PACK.amount,
      currency: PACK.currency,
      client_reference_id: null,
      metadata: { user_id: userId, package_id: PACK.id },
    });
    await deliver(worker, [stripeEvent('checkout.session.completed', session)]);
    const account = await db
      .selectFrom('accounts')
      .selectAll()
      .where('external_user_id', '=', userId)
      .executeTakeFirstOrThrow();
    expect(account.balance).toBe(PACK.credits);
    await expectInvariantsHold(db);
  });
});

describe('parking', () => {
  const external = (metadata: Record<string, string>, amount = PACK.amount) => {
    const ids = stripeIds();
    return stripeEvent(
      'checkout.session.completed',
      checkoutSession({
        id: ids.session,
        payment_intent: ids.intent,
        amount_total: amount,
        currency: 'usd',
        client_reference_id: null,
        metadata,
      }),
    );
  };

  it.each([
    ['unknown_user', external({ package_id: PACK.id }), 'names no user'],
    ['unknown_package', external({ user_id: 'u-parked', package_id: 'pack_nope' }), 'names no known package'],
    ['amount_mismatch', external({ user_id: 'u-parked', package_id: PACK.id }, PACK.amount - 1), 'charged'],
    // Our checkout names its payment: one this deployment does not have is no outside sale to credit.
    [
      'unknown_payment',
      external({
        payment_id: '6f1c7a52-0d7e-4c1b-9a51-2b6f0e1d4c3a',
        user_id: 'u-parked',
        package_id: PACK.id,
      }),
      'which this deployment does not have',
    ],
  ])('parks %s with its reason and payload, writing nothing else', async (_code, event, reason) => {
    const before = await db
      .selectFrom('ledger_entries')
      .select((eb) => eb.fn.countAll<string>().as('n'))
      .executeTakeFirstOrThrow();
    const response = await deliver(worker, [event]);
    expect(response.batchItemFailures).toEqual([]);
    const parked = await db
      .selectFrom('processed_events')
      .selectAll()
      .where('event_id', '=', String(event.id))
      .executeTakeFirstOrThrow();
    expect(parked).toMatchObject({
      outcome: 'parked',
      event_type: 'checkout.session.completed',
      payload: event,
    });
    expect(parked.reason).toContain(reason);
    const after = await db
      .selectFrom('ledger_entries')
      .select((eb) => eb.fn.countAll<string>().as('n'))
      .executeTakeFirstOrThrow();
    expect(after.n).toBe(before.n);
    await expectInvariantsHold(db);
  });

  it("parks, never retries, an event naming another payment's intent, and a refund in another currency", async () => {
    const first = await givenCheckout(db);
    const second = await givenCheckout(db);
    await deliver(worker, [first.completed()]);
    const parkedReason = async (eventId: unknown) =>
      (
        await db
          .selectFrom('processed_events')
          .select(['outcome', 'reason'])
          .where('event_id', '=', String(eventId))
          .executeTakeFirstOrThrow()
      ).reason;
    // The second payment's session, carrying the first payment's (already linked) intent.
    const objectOf = (event: Record<string, unknown>) => (event.data as { object: object }).object;
    const stolen = stripeEvent('checkout.session.completed', {
      ...objectOf(second.completed()),
      payment_intent: first.ids.intent,
    });
    expect((await deliver(worker, [stolen])).batchItemFailures).toEqual([]);
    expect(await parkedReason(stolen.id)).toMatch(/another payment holds .*stripe_payment_intent_id/);
    expect(await purchaseState(db, second)).toMatchObject({ balance: 0, status: 'INIT' });
    // A session from outside our checkout that carries that same intent: parked too, not silently ignored.
    const outside = stripeEvent(
      'checkout.session.completed',
      checkoutSession({
        id: stripeIds().session,
        payment_intent: first.ids.intent,
        amount_total: PACK.amount,
        currency: PACK.currency,
        client_reference_id: null,
        metadata: { user_id: 'outside-buyer', package_id: PACK.id },
      }),
    );
    expect((await deliver(worker, [outside])).batchItemFailures).toEqual([]);
    expect(await parkedReason(outside.id)).toMatch(/another payment holds .*stripe_payment_intent_id/);

    const yen = stripeEvent('refund.created', {
      ...objectOf(first.refundEvent('refund.created', 're_yen', 500, 'succeeded')),
      currency: 'jpy',
    });
    expect((await deliver(worker, [yen])).batchItemFailures).toEqual([]);
    expect(await parkedReason(yen.id)).toBe(
      `refund.created is in jpy; payment ${first.payment.id} was paid in usd`,
    );
    expect(await purchaseState(db, first)).toMatchObject({ balance: PACK.credits, status: 'CREDITED' });
    await expectInvariantsHold(db);
  });

  // A deterministic failure of one event fails it the same way on every receive: parked with a reason,
  // never retried into the DLQ, and the ledger untouched. Each of these was retried forever before.
  it.each([
    ['a NUL in the user id', { user_id: 'u\u0000nul', package_id: PACK.id }],
    ['a lone surrogate in the user id', { user_id: 'u\ud800x', package_id: PACK.id }],
    ['a NUL in a metadata value it stores nowhere', { user_id: 'u-ok', package_id: 'pack\u0000x' }],
    ['a 300-character user id', { user_id: 'u'.repeat(300), package_id: PACK.id }],
  ])('parks an event carrying %s instead of retrying it, and replays it exactly', async (_case, metadata) => {
    const event = external(metadata);
    const before = await db.selectFrom('ledger_entries').select('id').execute();
    for (let receive = 1; receive <= 2; receive++) {
      const response = await deliver(worker, [event]);
      expect(response.batchItemFailures).toEqual([]);
    }
    const parked = await db
      .selectFrom('processed_events')
      .select(['outcome', 'reason', 'payload'])
      .where('event_id', '=', String(event.id))
      .executeTakeFirstOrThrow();
    expect(parked).toMatchObject({ outcome: 'parked', reason: expect.any(String) });
    expect(await db.selectFrom('ledger_entries').select('id').execute()).toEqual(before);
    // The stored event is the event exactly, even where jsonb cannot hold its strings.
    const stored = typeof parked.payload === 'string' ? JSON.parse(parked.payload) : parked.payload;
    expect(stored).toEqual(JSON.parse(JSON.stringify(event)));
    await expectInvariantsHold(db);
  });

  it('parks a purchase that would take a balance past 2^53 - 1, naming the limit', async () => {
    const huge = {
      id: 'pack_huge',
      name: 'Huge',
      credits: Number.MAX_SAFE_INTEGER,
      amount: 500,
      currency: 'usd',
    };
    const hugeWorker = createCreditWorker({ db, packages: [...DEFAULT_PACKAGES, huge] });
    const userId = `u-huge-${stripeIds().session}`;
    const first = external({ user_id: userId, package_id: huge.id });
    expect((await deliver(hugeWorker, [first])).batchItemFailures).toEqual([]);
    const second = external({ user_id: userId, package_id: huge.id });
    expect((await deliver(hugeWorker, [second])).batchItemFailures).toEqual([]);
    const rows = await db
      .selectFrom('processed_events')
      .select(['event_id', 'outcome', 'reason'])
      .where('event_id', 'in', [String(first.id), String(second.id)])
      .execute();
    expect(Object.fromEntries(rows.map((r) => [r.event_id, r.outcome]))).toEqual({
      [String(first.id)]: 'applied',
      [String(second.id)]: 'parked',
    });
    expect(rows.find((r) => r.outcome === 'parked')?.reason).toMatch(/9007199254740991/);
    const account = await db
      .selectFrom('accounts')
      .select('balance')
      .where('external_user_id', '=', userId)
      .executeTakeFirstOrThrow();
    expect(account.balance).toBe(Number.MAX_SAFE_INTEGER);
    await expectInvariantsHold(db);
  });

  it('parks a checkout paid for a different amount than its payment expects', async () => {
    const checkout = await givenCheckout(db);
    const event = stripeEvent('checkout.session.completed', {
      ...(checkout.completed().data as { object: object }).object,
      amount_total: 1,
    });
    await deliver(worker, [event]);
    expect(await purchaseState(db, checkout)).toMatchObject({ status: 'INIT', balance: 0 });
    const row = await db
      .selectFrom('processed_events')
      .select(['outcome', 'reason'])
      .where('event_id', '=', String(event.id))
      .executeTakeFirstOrThrow();
    expect(row.outcome).toBe('parked');
    expect(row.reason).toMatch(/expects 500 usd; Stripe reports 1 usd/);
  });
});

describe('refunds and disputes', () => {
  it('claws back only each new delta of two partial refunds', async () => {
    const checkout = await givenCheckout(db);
    await deliver(worker, [checkout.completed()]);
    await deliver(worker, [checkout.chargeRefunded(150)]);
    expect(await purchaseState(db, checkout)).toMatchObject({
      balance: 700,
      refundTaken: 300,
      status: 'PARTIALLY_REFUNDED',
    });
    await deliver(worker, [checkout.chargeRefunded(250)]);
    expect(await purchaseState(db, checkout)).toMatchObject({
      balance: 500,
      refundTaken: 500,
      status: 'PARTIALLY_REFUNDED',
    });
    await deliver(worker, [checkout.chargeRefunded(150)]); // an old snapshot arriving late changes nothing
    await deliver(worker, [checkout.chargeRefunded(500)]);
    expect(await purchaseState(db, checkout)).toMatchObject({
      balance: 0,
      refundTaken: 1000,
      status: 'REFUNDED',
      amount_refunded: 500,
    });
    const clawbacks = await db
      .selectFrom('ledger_entries')
      .select('amount')
      .where('payment_id', '=', checkout.payment.id)
      .where('kind', '=', 'refund_clawback')
      .orderBy('id')
      .execute();
    expect(clawbacks.map((c) => c.amount)).toEqual([-300, -200, -500]);
    await expectInvariantsHold(db);
  });

  it('ends in the same state when the refund arrives before the completion event', async () => {
    const inOrder = await givenCheckout(db);
    await deliver(worker, [inOrder.completed()]);
    await deliver(worker, [inOrder.chargeRefunded(200)]);
    const reversed = await givenCheckout(db);
    await deliver(worker, [reversed.chargeRefunded(200)]);
    expect(await purchaseState(db, reversed)).toMatchObject({ balance: 0, status: 'INIT' });
    await deliver(worker, [reversed.completed()]);
    const { stripe_payment_intent_id: _a, ...expected } = await purchaseState(db, inOrder);
    const { stripe_payment_intent_id: _b, ...actual } = await purchaseState(db, reversed);
    expect(actual).toEqual(expected);
    expect(actual).toMatchObject({ balance: 600, refundTaken: 400, status: 'PARTIALLY_REFUNDED' });
    await expectInvariantsHold(db);
  });

  it('reverses the clawback when refund.failed follows charge.refunded', async () => {
    const checkout = await givenCheckout(db);
    await deliver(worker, [
      checkout.completed(),
      checkout.refundEvent('refund.created', 're_fail_1', 250, 'succeeded'),
    ]);
    await deliver(worker, [checkout.chargeRefunded(250)]);
    expect(await purchaseState(db, checkout)).toMatchObject({ balance: 500, refundTaken: 500 });
    await deliver(worker, [checkout.refundEvent('refund.failed', 're_fail_1', 250, 'failed')]);
    expect(await purchaseState(db, checkout)).toMatchObject({
      balance: 1000,
      refundTaken: 0,
      status: 'CREDITED',
      amount_refunded: 0,
    });
    await expectInvariantsHold(db);
  });

  it('claws back a chargeback once and reinstates it when the dispute is won', async () => {
    const checkout = await givenCheckout(db);
    await deliver(worker, [checkout.completed()]);
    await deliver(worker, [checkout.disputeEvent('charge.dispute.created', 'dp_won', 'needs_response')]);
    await deliver(worker, [
      checkout.disputeEvent('charge.dispute.funds_withdrawn', 'dp_won', 'needs_response'),
    ]);
    expect(await purchaseState(db, checkout)).toMatchObject({
      balance: 0,
      disputeTaken: 1000,
      status: 'CHARGEBACK',
      disputed: true,
    });
    await deliver(worker, [checkout.disputeEvent('charge.dispute.funds_reinstated', 'dp_won', 'won')]);
    await deliver(worker, [checkout.disputeEvent('charge.dispute.closed', 'dp_won', 'won')]);
    expect(await purchaseState(db, checkout)).toMatchObject({
      balance: 1000,
      disputeTaken: 0,
      status: 'CREDITED',
      disputed: false,
    });
    await expectInvariantsHold(db);
  });

  it('leaves the balance negative after clawing back spent credits, and spending stops', async () => {
    const checkout = await givenCheckout(db);
    await deliver(worker, [checkout.completed()]);
    await inAccountTransaction(db, checkout.account.id, (trx, account) =>
      spendCredits(trx, account, { amount: 900, idempotencyKey: 'used-before-dispute' }),
    );
    await deliver(worker, [checkout.disputeEvent('charge.dispute.created', 'dp_lost', 'needs_response')]);
    await deliver(worker, [checkout.disputeEvent('charge.dispute.closed', 'dp_lost', 'lost')]);
    expect(await purchaseState(db, checkout)).toMatchObject({ balance: -900, status: 'CHARGEBACK' });
    await expect(
      inAccountTransaction(db, checkout.account.id, (trx, account) =>
        spendCredits(trx, account, { amount: 1, idempotencyKey: 'after-chargeback' }),
      ),
    ).rejects.toBeInstanceOf(InsufficientCreditsError);
    await expectInvariantsHold(db);
  });
});

describe('failures', () => {
  it('fails only the poison record of a batch', async () => {
    const checkout = await givenCheckout(db);
    const batch = sqsEvent([JSON.stringify(checkout.completed()), '{"not": "an event"', 'null']);
    const response = (await worker(batch, lambdaContext())) as {
      batchItemFailures: Array<{ itemIdentifier: string }>;
    };
    expect(response.batchItemFailures.map((f) => f.itemIdentifier)).toEqual([
      batch.Records[1]!.messageId,
      batch.Records[2]!.messageId,
    ]);
    expect((await purchaseState(db, checkout)).balance).toBe(PACK.credits);
    await expectInvariantsHold(db);
  });

  it('acknowledges nothing that did not commit when the database goes away mid-batch, and a redelivery finishes the job', async () => {
    // A database of its own, slowed down (0.3 s an event) so that the outage lands in the middle of the batch
    // whatever the machine's load.
    const outage = await createTestDatabase({ max: 2 });
    const name = new URL(outage.url).pathname.slice(1);
    await sql`CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.3); RETURN NEW; END $$`.execute(
      outage.owner(),
    );
    await sql`CREATE TRIGGER slow AFTER INSERT ON processed_events FOR EACH ROW EXECUTE FUNCTION slow()`.execute(
      outage.owner(),
    );
    const workerDb = createDb(outage.url, { max: 1 });
    const outageWorker = createCreditWorker({ db: workerDb, packages: DEFAULT_PACKAGES });
    const checkouts = await Promise.all(Array.from({ length: 12 }, () => givenCheckout(outage.db)));
    const events = checkouts.map((c) => c.completed());
    const { ids, response: pending } = processBatch(outageWorker, events);
    const admin = createDb(inject('postgresServerUrl'), { max: 1 });
    while (
      Number(
        (await sql<{ n: string }>`SELECT count(*) AS n FROM processed_events`.execute(outage.db)).rows[0]!.n,
      ) < 3
    ) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await sql`ALTER DATABASE ${sql.id(name)} WITH ALLOW_CONNECTIONS false`.execute(admin);
    await sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ${name} AND application_name = 'credits'`.execute(
      admin,
    );
    const response = await pending;
    await sql`ALTER DATABASE ${sql.id(name)} WITH ALLOW_CONNECTIONS true`.execute(admin);
    await admin.destroy();

    const uncommitted = await expectOnlyUncommittedFailed(outage.db, { events, ids, response });
    const retry = await deliver(outageWorker, uncommitted);
    expect(retry.batchItemFailures).toEqual([]);
    for (const checkout of checkouts)
      expect((await purchaseState(outage.db, checkout)).balance).toBe(PACK.credits);
    await workerDb.destroy();
    await expectInvariantsHold(outage.db);
  });

  it('changes nothing when a batch that committed but was never acknowledged is delivered again', async () => {
    const checkout = await givenCheckout(db);
    const batch = [
      checkout.completed(),
      checkout.chargeRefunded(100),
      checkout.disputeEvent('charge.dispute.created', 'dp_r', 'needs_response'),
    ];
    await deliver(worker, batch); // the acknowledgement is lost: SQS delivers the same messages again
    const before = await purchaseState(db, checkout);
    const again = await deliver(worker, batch);
    expect(again.batchItemFailures).toEqual([]);
    expect(await purchaseState(db, checkout)).toEqual(before);
    await expectInvariantsHold(db);
  });
});

describe('order independence', () => {
  /** A mixed history of eight events for one purchase, in Stripe's own order. */
  const history = (c: Awaited<ReturnType<typeof givenCheckout>>) => [
    c.completed(),
    c.intentSucceeded(),
    c.chargeRefunded(150),
    c.refundEvent('refund.created', `re_a_${c.ids.charge}`, 150, 'succeeded'),
    c.chargeRefunded(250),
    c.refundEvent('refund.failed', `re_b_${c.ids.charge}`, 100, 'failed'),
    c.disputeEvent('charge.dispute.created', `dp_${c.ids.charge}`, 'needs_response'),
    c.disputeEvent('charge.dispute.closed', `dp_${c.ids.charge}`, 'won'),
  ];

  it('every permutation of a mixed history of 8 events ends in the same state', async () => {
    // Order independence for all 8! orders follows from: for every subset S of the history and every event e
    // outside S, applying e after S gives the state of S + {e} (by induction over each order's prefixes).
    // Each subset's state is first computed in history order; then every one-event extension is checked.
    const size = 8;
    const canonical = new Map<number, unknown>();
    const stateAfter = async (order: number[]) => {
      const checkout = await givenCheckout(db);
      const events = history(checkout);
      for (const index of order) await deliver(worker, [events[index]!]);
      const { stripe_payment_intent_id: _, ...state } = await purchaseState(db, checkout);
      return state;
    };
    const members = (mask: number) =>
      Array.from({ length: size }, (_, i) => i).filter((i) => mask & (1 << i));
    const masks = Array.from({ length: 1 << size }, (_, mask) => mask);
    for (let start = 0; start < masks.length; start += 16) {
      await Promise.all(
        masks
          .slice(start, start + 16)
          .map(async (mask) => canonical.set(mask, await stateAfter(members(mask)))),
      );
    }
    const extensions = masks.flatMap((mask) =>
      members((1 << size) - 1 - mask)
        .filter((e) => members(mask).some((m) => m > e)) // in history order already: that is the canonical run
        .map((e) => ({ mask, e })),
    );
    for (let start = 0; start < extensions.length; start += 16) {
      await Promise.all(
        extensions.slice(start, start + 16).map(async ({ mask, e }) => {
          expect({ order: [...members(mask), e], state: await stateAfter([...members(mask), e]) }).toEqual({
            order: [...members(mask), e],
            state: canonical.get(mask | (1 << e)),
          });
        }),
      );
    }
    expect(canonical.get((1 << size) - 1)).toMatchObject({
      balance: 700,
      refundTaken: 300,
      disputeTaken: 0,
      status: 'PARTIALLY_REFUNDED',
    });
    await expectInvariantsHold(db);
  });
});
