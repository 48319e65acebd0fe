import { describe, expect, it } from 'vitest';
import { inAccountTransaction } from '../../shared/accounts/accounts.js';
import { createCoupon, redeemCoupon } from '../../shared/coupons/coupons.js';
import { adjustCredits, movePaymentCredits, spendCredits } from '../../shared/ledger/ledger.js';
import { sweepExpiredGrants } from '../../shared/ledger/sweep.js';
import { creditPurchase } from '../../shared/payments/payments.js';
import { activatePriceBook, createPriceBookDraft } from '../../shared/pricing/price-book.js';
import { ADMIN_ARN as API_ADMIN_ARN, SERVICE_ARN, testApi } from '../support/api.js';
import { createTestDatabase } from '../support/database.js';
import { ADMIN_ARN, givenAccount, givenPayment, testClock } from '../support/factories.js';
import { expectInvariantsHold } from '../support/invariants.js';

const { db } = await createTestDatabase();
const actor = { actorArn: ADMIN_ARN, reason: 'test' };
const DAY = 86_400_000;

describe('GET /v1/admin/analytics', () => {
  it('reconciles with the ledger: sold + granted - spent - removed - expired - clawed back = outstanding', async () => {
    const clock = testClock();
    const { call } = testApi(db, { clock: clock.now });
    await createPriceBookDraft(
      db,
      {
        version: 'analytics-v1',
        items: [{ sku: 'acme/chat', kind: 'tokens', rates: { input: '1000000', output: '1000000' } }],
      },
      actor,
    );
    await activatePriceBook(db, 'analytics-v1', actor, new Date(clock.now().getTime() - DAY));
    const buyer = await givenAccount(db);
    const payment = await givenPayment(db, buyer, { credits: 100, amountTotal: 500 });
    await inAccountTransaction(db, buyer.id, (trx, locked) =>
      creditPurchase(trx, locked, { paymentId: payment.id, credits: 100, reference: payment.id }),
    );
    await inAccountTransaction(db, buyer.id, (trx, locked) =>
      spendCredits(trx, locked, { amount: 30, idempotencyKey: 'a-1' }, clock.now()),
    );
    await inAccountTransaction(db, buyer.id, (trx, locked) =>
      movePaymentCredits(
        trx,
        locked,
        { paymentId: payment.id, kind: 'refund_clawback', credits: 20, reference: 're_a' },
        clock.now(),
      ),
    );
    const usage = await call('POST /v1/usage', {
      auth: { iam: SERVICE_ARN },
      body: {
        events: [
          {
            eventId: 'u-1',
            userId: buyer.external_user_id!,
            sku: 'acme/chat',
            usage: { inputTokens: 4, outputTokens: 3 },
          },
        ],
      },
    });
    expect(usage.body.results).toEqual([expect.objectContaining({ status: 'applied', credits: 7 })]);
    const other = await givenAccount(db);
    await inAccountTransaction(db, other.id, (trx, locked) =>
      adjustCredits(trx, locked, { ...actor, amount: 50, expiresAt: new Date(clock.now().getTime() + 1000) }),
    );
    await inAccountTransaction(db, other.id, (trx, locked) =>
      adjustCredits(trx, locked, { ...actor, amount: 10 }),
    );
    await inAccountTransaction(db, other.id, (trx, locked) =>
      adjustCredits(trx, locked, { ...actor, amount: -4 }, clock.now()),
    );
    await createCoupon(
      db,
      {
        code: 'ANALYTICS',
        credits: 15,
        grantExpiresInDays: null,
        redeemBy: null,
        maxRedemptions: null,
        plans: null,
      },
      actor,
    );
    await redeemCoupon(db, other, 'analytics', clock.now());
    clock.advance(2000);
    await sweepExpiredGrants(db, clock.now());

    const report = await call('GET /v1/admin/analytics', {
      auth: { iam: API_ADMIN_ARN },
      query: {
        from: new Date(clock.now().getTime() - DAY).toISOString(),
        to: new Date(clock.now().getTime() + 1000).toISOString(),
      },
    });
    expect(report.status).toBe(200);
    const a = report.body as {
      sold: { credits: number; revenue: Record<string, number> };
      granted: Record<string, number>;
      spent: { credits: number; bySku: Record<string, number>; byProvider: Record<string, number> };
      removed: number;
      expired: number;
      clawedBack: number;
      outstanding: { total: number; paid: number; promotional: number };
      topAccounts: Array<{ userId: string; spent: number }>;
    };
    expect(a.sold).toEqual({ credits: 100, revenue: { usd: 500 } });
    expect(a.granted).toEqual({ admin: 60, coupon: 15 });
    expect(a.spent).toEqual({
      credits: 37,
      bySku: { '(spend)': 30, 'acme/chat': 7 },
      byProvider: { '(none)': 30, acme: 7 },
    });
    expect([a.removed, a.expired, a.clawedBack]).toEqual([4, 46, 20]);
    const granted = Object.values(a.granted).reduce((s, n) => s + n, 0);
    expect(a.sold.credits + granted - a.spent.credits - a.removed - a.expired - a.clawedBack).toBe(
      a.outstanding.total,
    );
    const balances = await db
      .selectFrom('accounts')
      .select((eb) => eb.fn.sum<string>('balance').as('b'))
      .executeTakeFirstOrThrow();
    expect(a.outstanding.total).toBe(Number(balances.b));
    expect(a.outstanding.paid + a.outstanding.promotional).toBe(Number(balances.b));
    expect(a.topAccounts[0]).toEqual({ userId: buyer.external_user_id, spent: 37 });
    await expectInvariantsHold(db, clock.now());
  });
});
