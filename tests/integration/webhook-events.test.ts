import { describe, expect, it } from 'vitest';
import { createSweeper } from '../../functions/sweeper.js';
import { inAccountTransaction } from '../../shared/accounts/accounts.js';
import type { Account } from '../../shared/db/schema.js';
import { anonymizeAccount } from '../../shared/ledger/erasure.js';
import { adjustCredits, movePaymentCredits } from '../../shared/ledger/ledger.js';
import { parsePlans } from '../../shared/plan-catalog.js';
import { createEndpoint } from '../../shared/webhooks/endpoints.js';
import { emitEvent, fanOutOutbox, pruneWebhookHistory } from '../../shared/webhooks/outbox.js';
import { ADMIN_ARN, SERVICE_ARN, testApi } from '../support/api.js';
import { createTestDatabase } from '../support/database.js';
import { lambdaContext } from '../support/events.js';
import { givenAccount, givenFundedAccount, testClock } from '../support/factories.js';
import { expectInvariantsHold } from '../support/invariants.js';

// Which events a change writes, read from the outbox it writes them to in its own transaction (delivery,
// signatures and retries are tests/integration/webhooks.test.ts's).
const { db } = await createTestDatabase({ max: 30 });
const service = { iam: SERVICE_ARN };
const actor = { actorArn: ADMIN_ARN, reason: 'test' };

const PLANS = parsePlans(
  JSON.stringify([
    { id: 'free', name: 'Free', default: true, lowBalanceThreshold: 100 },
    { id: 'capped', name: 'Capped', caps: { daily: 50 } },
  ]),
);

interface Sent {
  readonly type: string;
  readonly data: Record<string, unknown>;
}

async function eventsOf(account: Account, type?: string): Promise<Sent[]> {
  const rows = await db
    .selectFrom('webhook_outbox')
    .select(['payload'])
    .where('account_id', '=', account.id)
    .orderBy('created_at')
    .orderBy('id')
    .execute();
  const events = rows.map((r) => {
    const body = (typeof r.payload === 'string' ? JSON.parse(r.payload) : r.payload) as Sent;
    return { type: body.type, data: body.data };
  });
  return type ? events.filter((e) => e.type === type) : events;
}

function api(clock = testClock()) {
  const { call } = testApi(db, { clock: clock.now, config: { plans: PLANS } });
  let keys = 0;
  const spend = (account: Account, amount: number) =>
    call('POST /v1/accounts/{userId}/spend', {
      auth: service,
      params: { userId: account.external_user_id! },
      headers: { 'idempotency-key': `spend-${++keys}-${Math.random()}` },
      body: { amount },
    });
  return { call, spend, clock };
}

const grant = (account: Account, amount: number) =>
  inAccountTransaction(db, account.id, (trx, locked) => adjustCredits(trx, locked, { ...actor, amount }));

describe('outbound events from the ledger and the debit path', () => {
  it('balance.low once per crossing of the threshold; a top-up above it re-arms; balance.depleted at zero', async () => {
    const { spend } = api();
    const account = await givenAccount(db);
    await grant(account, 300);
    expect((await spend(account, 150)).status).toBe(200); // 300 -> 150: above 100
    expect(await eventsOf(account, 'balance.low')).toEqual([]);
    expect((await spend(account, 60)).status).toBe(200); // 150 -> 90: crosses
    expect((await spend(account, 10)).status).toBe(200); // 90 -> 80: below already
    expect((await spend(account, 10)).status).toBe(200);
    expect(await eventsOf(account, 'balance.low')).toEqual([
      {
        type: 'balance.low',
        data: { userId: account.external_user_id, available: 90, balance: 90, threshold: 100 },
      },
    ]);
    await grant(account, 200); // 70 -> 270: above again
    expect((await spend(account, 200)).status).toBe(200); // 270 -> 70: crosses again
    expect((await spend(account, 70)).status).toBe(200); // 70 -> 0
    expect((await eventsOf(account)).map((e) => e.type)).toEqual([
      'credits.granted',
      'balance.low',
      'credits.granted',
      'balance.low',
      'balance.depleted',
    ]);
    expect((await eventsOf(account, 'balance.depleted'))[0]!.data).toEqual({
      userId: account.external_user_id,
      available: 0,
      balance: 0,
    });
    await expectInvariantsHold(db);
  });

  it("uses the user's own threshold over the plan's, and holds count as the debits they reserve", async () => {
    const { call, spend } = api();
    const account = await givenAccount(db);
    await grant(account, 1000);
    const auth = { user: account.external_user_id! };
    expect((await call('PUT /v1/me/alerts', { auth, body: { lowBalance: 500 } })).status).toBe(200);
    const hold = await call('POST /v1/accounts/{userId}/holds', {
      auth: service,
      params: { userId: account.external_user_id! },
      headers: { 'idempotency-key': 'hold-1' },
      body: { credits: 450 },
    });
    expect(hold.status).toBe(201);
    expect(await eventsOf(account, 'balance.low')).toEqual([]);
    expect((await spend(account, 100)).status).toBe(200); // available 550 -> 450
    expect(await eventsOf(account, 'balance.low')).toMatchObject([
      { data: { available: 450, balance: 900, threshold: 500 } },
    ]);
    await expectInvariantsHold(db);
  });

  it('20 concurrent spends across the threshold (200 down to 80) send exactly one balance.low', async () => {
    const { spend } = api();
    const account = await givenAccount(db);
    await grant(account, 200);
    const responses = await Promise.all(Array.from({ length: 20 }, () => spend(account, 6)));
    expect(responses.every((r) => r.status === 200)).toBe(true);
    expect(await eventsOf(account, 'balance.low')).toHaveLength(1);
    await expectInvariantsHold(db);
  });

  it('spend_cap.reached when a debit leaves a cap nothing; a refused debit writes no event', async () => {
    const { call, spend, clock } = api();
    const account = await givenAccount(db);
    await grant(account, 1000);
    await call('PUT /v1/admin/accounts/{userId}/plan', {
      auth: { iam: ADMIN_ARN },
      params: { userId: account.external_user_id! },
      body: { planId: 'capped', reason: 'test' },
    });
    expect((await spend(account, 30)).status).toBe(200);
    expect((await spend(account, 20)).status).toBe(200);
    expect((await spend(account, 1)).status).toBe(403);
    const reached = await eventsOf(account, 'spend_cap.reached');
    expect(reached).toEqual([
      {
        type: 'spend_cap.reached',
        data: {
          userId: account.external_user_id,
          period: 'day',
          source: 'plan',
          cap: 50,
          resetsAt: new Date(
            Date.UTC(clock.now().getUTCFullYear(), clock.now().getUTCMonth(), clock.now().getUTCDate() + 1),
          ).toISOString(),
        },
      },
    ]);
    await expectInvariantsHold(db, clock.now());
  });

  it('credits.granted with each grant, and payment.refunded / payment.disputed with each clawback', async () => {
    const { account, payment } = await givenFundedAccount(db, 1000);
    expect(await eventsOf(account)).toMatchObject([
      {
        type: 'credits.granted',
        data: { credits: 1000, category: 'paid', source: 'purchase', expiresAt: null, balance: 1000 },
      },
    ]);
    await inAccountTransaction(db, account.id, async (trx, locked) => {
      await movePaymentCredits(trx, locked, {
        paymentId: payment.id,
        kind: 'refund_clawback',
        credits: 300,
        reference: 're_1',
      });
      await movePaymentCredits(trx, locked, {
        paymentId: payment.id,
        kind: 'dispute_clawback',
        credits: 700,
        reference: 'dp_1',
      });
    });
    // Both are stamped in one transaction, possibly in the same millisecond: their order is not the test's (by type).
    const clawbacks = (await eventsOf(account)).slice(1).sort((a, b) => a.type.localeCompare(b.type));
    expect(clawbacks).toEqual([
      {
        type: 'payment.disputed',
        data: { userId: account.external_user_id, paymentId: payment.id, credits: 700, balance: 0 },
      },
      {
        type: 'payment.refunded',
        data: { userId: account.external_user_id, paymentId: payment.id, credits: 300, balance: 700 },
      },
    ]);
    await expectInvariantsHold(db);
  });

  it('a rolled-back change writes no event', async () => {
    const account = await givenAccount(db);
    await expect(
      inAccountTransaction(db, account.id, async (trx, locked) => {
        await adjustCredits(trx, locked, { ...actor, amount: 50 });
        throw new Error('rolled back on purpose');
      }),
    ).rejects.toThrow('rolled back on purpose');
    expect(await eventsOf(account)).toEqual([]);
  });

  it('grant.expiring once per grant, three days before it expires', async () => {
    const clock = testClock();
    const account = await givenAccount(db);
    const expiresAt = new Date(clock.now().getTime() + 5 * 86_400_000);
    await inAccountTransaction(db, account.id, (trx, locked) =>
      adjustCredits(trx, locked, { ...actor, amount: 40, expiresAt }, clock.now()),
    );
    const sweeper = createSweeper({ db, plans: PLANS, clock: clock.now });
    await sweeper(undefined, lambdaContext('sweeper'));
    expect(await eventsOf(account, 'grant.expiring')).toEqual([]);
    clock.advance(2 * 86_400_000 + 1000); // less than 3 days left
    await sweeper(undefined, lambdaContext('sweeper'));
    await sweeper(undefined, lambdaContext('sweeper'));
    expect(await eventsOf(account, 'grant.expiring')).toEqual([
      {
        type: 'grant.expiring',
        data: {
          userId: account.external_user_id,
          grantId: expect.any(String),
          category: 'promotional',
          source: 'admin',
          remaining: 40,
          expiresAt: expiresAt.toISOString(),
        },
      },
    ]);
    await expectInvariantsHold(db, clock.now());
  });

  it("anonymising an account takes the user id out of its events' bodies", async () => {
    const account = await givenAccount(db);
    await grant(account, 25);
    await inAccountTransaction(db, account.id, (trx, locked) => anonymizeAccount(trx, locked, actor));
    expect(await eventsOf(account)).toEqual([
      {
        type: 'credits.granted',
        data: expect.objectContaining({ userId: null, credits: 25 }),
      },
    ]);
  });

  it('keeps settled webhook history 30 days, and an event still being delivered until it settles', async () => {
    const clock = testClock();
    const cipher = { encrypt: async () => 'local:test', decrypt: async () => 'whsec_test' };
    await createEndpoint(
      db,
      cipher,
      { url: 'https://hooks.example.com/credits', events: ['grant.expiring'], description: null },
      actor,
      { allowLoopbackHttp: false },
    );
    const account = await givenAccount(db);
    await grant(account, 10); // credits.granted: no endpoint takes it, settled once fanned out
    await db.transaction().execute((trx) =>
      emitEvent(trx, {
        type: 'grant.expiring',
        accountId: account.id,
        data: { userId: account.external_user_id, grantId: 'g' },
      }),
    );
    while ((await fanOutOutbox(db, clock.now())) > 0);
    expect(await pruneWebhookHistory(db, clock.now())).toBe(0);
    clock.advance(31 * 86_400_000);
    expect(await pruneWebhookHistory(db, clock.now())).toBeGreaterThanOrEqual(1);
    // The credits.granted event is gone; grant.expiring's delivery is pending, so it stays.
    expect((await eventsOf(account)).map((e) => e.type)).toEqual(['grant.expiring']);
    await db.updateTable('webhook_deliveries').set({ status: 'dead', next_attempt_at: null }).execute();
    await pruneWebhookHistory(db, clock.now());
    expect(await eventsOf(account)).toEqual([]);
    expect(await db.selectFrom('webhook_deliveries').select('id').execute()).toEqual([]);
  });
});
