import fc from 'fast-check';
import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { inAccountTransaction } from '../../shared/accounts/accounts.js';
import { createCoupon, redeemCoupon } from '../../shared/coupons/coupons.js';
import type { Account, GrantCategory } from '../../shared/db/schema.js';
import { InsufficientCreditsError } from '../../shared/errors.js';
import { adjustCredits, movePaymentCredits, spendCredits } from '../../shared/ledger/ledger.js';
import { sweepExpiredGrants } from '../../shared/ledger/sweep.js';
import { creditPurchase } from '../../shared/payments/payments.js';
import { ADMIN_ARN as API_ADMIN_ARN, testApi } from '../support/api.js';
import { createTestDatabase } from '../support/database.js';
import { ADMIN_ARN, givenAccount, givenPayment, reloadAccount, testClock } from '../support/factories.js';
import { expectInvariantsHold } from '../support/invariants.js';

const { db } = await createTestDatabase({ max: 30 });
const actor = { actorArn: ADMIN_ARN, reason: 'test grant' };
const DAY = 86_400_000;

/** A grant through the admin path: category and expiry as given. */
async function grant(
  account: Account,
  amount: number,
  options: { category?: GrantCategory; expiresAt?: Date | null } = {},
) {
  const entry = await inAccountTransaction(db, account.id, (trx, locked) =>
    adjustCredits(trx, locked, {
      ...actor,
      amount,
      category: options.category,
      expiresAt: options.expiresAt,
    }),
  );
  return grantOfEntry(entry.id);
}

/** A purchase of `credits`, credited: a paid, never-expiring grant tied to its payment. */
async function purchase(account: Account, credits: number) {
  const payment = await givenPayment(db, account, { credits });
  const { entry } = await inAccountTransaction(db, account.id, (trx, locked) =>
    creditPurchase(trx, locked, { paymentId: payment.id, credits, reference: payment.id }),
  );
  return { payment, grantId: await grantOfEntry(entry.id) };
}

async function grantOfEntry(entryId: number): Promise<string> {
  const row = await db
    .selectFrom('credit_grants')
    .select('id')
    .where('entry_id', '=', entryId)
    .executeTakeFirstOrThrow();
  return row.id;
}

/** A coupon as an admin creates it; no expiry, redeem-by date, limit or plans unless given. */
const givenCoupon = (
  code: string,
  credits: number,
  options: { grantExpiresInDays?: number; maxRedemptions?: number } = {},
) =>
  createCoupon(
    db,
    {
      code,
      credits,
      grantExpiresInDays: options.grantExpiresInDays ?? null,
      redeemBy: null,
      maxRedemptions: options.maxRedemptions ?? null,
      plans: null,
    },
    actor,
  );

const spend = (account: Account, amount: number, key: string, now: Date) =>
  inAccountTransaction(db, account.id, (trx, locked) =>
    spendCredits(trx, locked, { amount, idempotencyKey: key }, now),
  );

/** What an entry drew, grant by grant. */
async function drawsOf(entryId: number) {
  const rows = await db
    .selectFrom('grant_allocations')
    .select(['grant_id', 'amount'])
    .where('entry_id', '=', entryId)
    .execute();
  return Object.fromEntries(rows.map((r) => [r.grant_id, r.amount]));
}

async function remainingOf(grantId: string) {
  const row = await db
    .selectFrom('credit_grants')
    .select('remaining')
    .where('id', '=', grantId)
    .executeTakeFirstOrThrow();
  return row.remaining;
}

describe('burn order', () => {
  it('draws soonest expiry first, then promotional before paid, then oldest, allocation by allocation', async () => {
    const clock = testClock();
    const account = await givenAccount(db);
    const inDays = (n: number) => new Date(clock.now().getTime() + n * DAY);
    const promoTen = await grant(account, 30, { category: 'promotional', expiresAt: inDays(10) });
    const { grantId: paid } = await purchase(account, 50);
    const promoNever = await grant(account, 40, { category: 'promotional' });
    const paidFive = await grant(account, 10, { category: 'paid', expiresAt: inDays(5) });
    const promoFive = await grant(account, 20, { category: 'promotional', expiresAt: inDays(5) });
    const steps: Array<[number, Record<string, number>]> = [
      [15, { [promoFive]: 15 }],
      [15, { [promoFive]: 5, [paidFive]: 10 }],
      [25, { [promoTen]: 25 }],
      [10, { [promoTen]: 5, [promoNever]: 5 }],
      [40, { [promoNever]: 35, [paid]: 5 }],
    ];
    for (const [i, [amount, expected]] of steps.entries()) {
      const result = await spend(account, amount, `burn-${i}`, clock.now());
      expect(await drawsOf(result.entryId)).toEqual(expected);
    }
    expect((await reloadAccount(db, account.id)).balance).toBe(45);
    expect(await remainingOf(paid)).toBe(45);
    await expectInvariantsHold(db, clock.now());
  });

  it('lists the spendable grants in that order, and the balance by category', async () => {
    const clock = testClock();
    const { call } = testApi(db, { clock: clock.now });
    const account = await givenAccount(db);
    const soon = new Date(clock.now().getTime() + 2 * DAY);
    await purchase(account, 50);
    await grant(account, 20, { category: 'promotional', expiresAt: soon });
    const grants = await call('GET /v1/me/grants', { auth: { user: account.external_user_id! } });
    expect((grants.body.items as Array<{ source: string }>).map((g) => g.source)).toEqual([
      'admin',
      'purchase',
    ]);
    const credits = await call('GET /v1/me/credits', { auth: { user: account.external_user_id! } });
    expect(credits.body).toMatchObject({
      balance: 70,
      available: 70,
      held: 0,
      grants: { paid: 50, promotional: 20, nextExpiry: soon.toISOString() },
    });
    await expectInvariantsHold(db, clock.now());
  });
});

describe('expiry', () => {
  it('spends a grant up to the second it expires, never after, before and after the sweeper, which writes the remainder once', async () => {
    const clock = testClock();
    const { call } = testApi(db, { clock: clock.now });
    const account = await givenAccount(db);
    const user = { user: account.external_user_id! };
    const expiring = await grant(account, 100, { expiresAt: new Date(clock.now().getTime() + 1000) });
    await spend(account, 10, 'before-expiry', clock.now());
    clock.advance(1000);
    await expect(spend(account, 1, 'after-expiry', clock.now())).rejects.toBeInstanceOf(
      InsufficientCreditsError,
    );
    expect((await call('GET /v1/me/credits', { auth: user })).body).toMatchObject({
      balance: 0,
      available: 0,
    });
    expect((await call('GET /v1/me/grants', { auth: user })).body).toEqual({ items: [] });

    const first = await sweepExpiredGrants(db, clock.now());
    expect(first).toEqual({ accounts: 1, expiredGrants: 1 });
    const expiry = await db
      .selectFrom('ledger_entries')
      .selectAll()
      .where('account_id', '=', account.id)
      .where('kind', '=', 'grant_expiry')
      .execute();
    expect(expiry.map((e) => [e.amount, e.balance_after, e.reference])).toEqual([[-90, 0, expiring]]);
    expect(await remainingOf(expiring)).toBe(0);
    expect(await sweepExpiredGrants(db, clock.now())).toEqual({ accounts: 0, expiredGrants: 0 });
    await expect(spend(account, 1, 'after-sweep', clock.now())).rejects.toBeInstanceOf(
      InsufficientCreditsError,
    );
    const history = await call('GET /v1/me/transactions', { auth: user, query: { kind: 'grant_expiry' } });
    expect((history.body.data as Array<{ amount: number }>).map((e) => e.amount)).toEqual([-90]);
    await expectInvariantsHold(db, clock.now());
  });

  it('stops a sweep when its time budget runs out, and the next sweep finishes the work', async () => {
    const clock = testClock();
    const accounts = await Promise.all([givenAccount(db), givenAccount(db)]);
    for (const account of accounts)
      await grant(account, 5, { expiresAt: new Date(clock.now().getTime() + 1000) });
    clock.advance(1000);
    expect(await sweepExpiredGrants(db, clock.now(), { budgetMs: 0 })).toEqual({
      accounts: 0,
      expiredGrants: 0,
      unfinished: true,
    });
    const rest = await sweepExpiredGrants(db, clock.now());
    expect(rest.expiredGrants).toBeGreaterThanOrEqual(2);
    for (const account of accounts) expect((await reloadAccount(db, account.id)).balance).toBe(0);
    await expectInvariantsHold(db, clock.now());
  });

  it('writes expired remainders off inside a debit, so its balance_after is exact', async () => {
    const clock = testClock();
    const account = await givenAccount(db);
    await grant(account, 30, { expiresAt: new Date(clock.now().getTime() + DAY) });
    await purchase(account, 50);
    clock.advance(DAY);
    const spent = await spend(account, 20, 'after-one-expired', clock.now());
    expect(spent.balance).toBe(30);
    const kinds = await db
      .selectFrom('ledger_entries')
      .select(['kind', 'amount'])
      .where('account_id', '=', account.id)
      .orderBy('id')
      .execute();
    expect(kinds.slice(-2)).toEqual([
      { kind: 'grant_expiry', amount: -30 },
      { kind: 'spend', amount: -20 },
    ]);
    await expectInvariantsHold(db, clock.now());
  });
});

describe('refunds, disputes and debt', () => {
  it('a refund after spending leaves debt; the next grant (a coupon) pays the debt first', async () => {
    const clock = testClock();
    const account = await givenAccount(db);
    const { payment } = await purchase(account, 100);
    await spend(account, 80, 'spent-before-refund', clock.now());
    await inAccountTransaction(db, account.id, (trx, locked) =>
      movePaymentCredits(
        trx,
        locked,
        { paymentId: payment.id, kind: 'refund_clawback', credits: 100, reference: 're_debt' },
        clock.now(),
      ),
    );
    expect((await reloadAccount(db, account.id)).balance).toBe(-80);
    await expect(spend(account, 1, 'in-debt', clock.now())).rejects.toBeInstanceOf(InsufficientCreditsError);
    await givenCoupon('DEBT100', 100, { grantExpiresInDays: 30 });
    const redeemed = await redeemCoupon(db, await reloadAccount(db, account.id), 'debt100', clock.now());
    expect(await remainingOf(redeemed.grantId)).toBe(20);
    expect((await reloadAccount(db, account.id)).balance).toBe(20);
    const paidDebt = await db
      .selectFrom('grant_allocations as a')
      .innerJoin('ledger_entries as e', 'e.id', 'a.entry_id')
      .select(['e.kind', 'a.amount'])
      .where('a.grant_id', '=', redeemed.grantId)
      .execute();
    expect(paidDebt).toEqual([{ kind: 'refund_clawback', amount: 80 }]);
    await spend(account, 20, 'after-debt', clock.now());
    await expect(spend(account, 1, 'empty-again', clock.now())).rejects.toBeInstanceOf(
      InsufficientCreditsError,
    );
    await expectInvariantsHold(db, clock.now());
  });

  it('a partial refund of a half-spent purchase takes that grant’s remainder first, then burn order', async () => {
    const clock = testClock();
    const account = await givenAccount(db);
    const early = await grant(account, 20, { expiresAt: new Date(clock.now().getTime() + 30 * DAY) });
    const { payment, grantId: bought } = await purchase(account, 100);
    await spend(account, 70, 'half-spent', clock.now());
    expect([await remainingOf(early), await remainingOf(bought)]).toEqual([0, 50]);
    const later = await grant(account, 30, { category: 'promotional' });
    const { entry } = await inAccountTransaction(db, account.id, (trx, locked) =>
      movePaymentCredits(
        trx,
        locked,
        { paymentId: payment.id, kind: 'refund_clawback', credits: 60, reference: 're_partial' },
        clock.now(),
      ),
    );
    expect(await drawsOf(entry.id)).toEqual({ [bought]: 50, [later]: 10 });
    expect((await reloadAccount(db, account.id)).balance).toBe(20);
    await expectInvariantsHold(db, clock.now());
  });

  it('a reinstated dispute comes back as a new paid grant', async () => {
    const account = await givenAccount(db);
    const { payment } = await purchase(account, 40);
    const move = (kind: 'dispute_clawback' | 'dispute_reinstatement') =>
      inAccountTransaction(db, account.id, (trx, locked) =>
        movePaymentCredits(trx, locked, {
          paymentId: payment.id,
          kind,
          credits: 40,
          reference: `dp_${kind}`,
        }),
      );
    await move('dispute_clawback');
    const { entry } = await move('dispute_reinstatement');
    const back = await db
      .selectFrom('credit_grants')
      .select(['category', 'source', 'amount', 'remaining', 'expires_at'])
      .where('entry_id', '=', entry.id)
      .executeTakeFirstOrThrow();
    expect(back).toEqual({
      category: 'paid',
      source: 'reinstatement',
      amount: 40,
      remaining: 40,
      expires_at: null,
    });
    await expectInvariantsHold(db);
  });
});

describe('coupons under concurrency', () => {
  it('gives exactly 10 of 100 concurrent users a grant from a coupon limited to 10', async () => {
    const clock = testClock();
    await givenCoupon('TEN-ONLY', 5, { grantExpiresInDays: 7, maxRedemptions: 10 });
    const accounts = await Promise.all(Array.from({ length: 100 }, () => givenAccount(db)));
    const outcomes = await Promise.allSettled(
      accounts.map((a) => redeemCoupon(db, a, 'ten-only', clock.now())),
    );
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(10);
    const refused = outcomes.flatMap((o) =>
      o.status === 'rejected' ? [(o.reason as { code: string }).code] : [],
    );
    expect(new Set(refused)).toEqual(new Set(['coupon_exhausted']));
    const grants = await db
      .selectFrom('credit_grants')
      .select('id')
      .where('source', '=', 'coupon')
      .where('reference', '=', 'TEN-ONLY')
      .execute();
    expect(grants).toHaveLength(10);
    await expectInvariantsHold(db, clock.now());
  });

  it('gives one user redeeming twice at once one grant', async () => {
    const clock = testClock();
    await givenCoupon('ONCE', 7);
    const account = await givenAccount(db);
    const outcomes = await Promise.allSettled([
      redeemCoupon(db, account, 'ONCE', clock.now()),
      redeemCoupon(db, account, 'once', clock.now()),
    ]);
    expect(outcomes.map((o) => o.status).sort()).toEqual(['fulfilled', 'rejected']);
    const rejected = outcomes.find((o) => o.status === 'rejected') as PromiseRejectedResult;
    expect(rejected.reason).toMatchObject({ code: 'coupon_already_redeemed', status: 409 });
    expect((await reloadAccount(db, account.id)).balance).toBe(7);
    await expectInvariantsHold(db, clock.now());
  });
});

describe('approvals (four eyes)', () => {
  const SECOND_ADMIN = 'arn:aws:sts::123456789012:assumed-role/credits-admin/bob';

  it('applies small grants at once; a large one waits for another admin, applies once, and a rejection writes nothing', async () => {
    const clock = testClock();
    const { call } = testApi(db, { clock: clock.now, config: { adminApprovalThreshold: 1000 } });
    const account = await givenAccount(db);
    const userId = account.external_user_id!;
    const adjust = (amount: number) =>
      call('POST /v1/admin/accounts/{userId}/adjustments', {
        auth: { iam: API_ADMIN_ARN },
        params: { userId },
        body: { amount, reason: 'campaign', description: 'Thank you', category: 'promotional' },
      });
    expect(await adjust(1000)).toMatchObject({ status: 201, body: { entry: { amount: 1000 } } });
    const pending = await adjust(5000);
    expect(pending).toMatchObject({ status: 202, body: { status: 'pending' } });
    const approvalId = String(pending.body.approvalId);
    expect((await reloadAccount(db, account.id)).balance).toBe(1000);

    const decide = (who: string, action: 'approve' | 'reject', id = approvalId) =>
      call(`POST /v1/admin/approvals/{approvalId}/${action}`, {
        auth: { iam: who },
        params: { approvalId: id },
        body: { reason: `${action} by ${who}` },
      });
    expect(await decide(API_ADMIN_ARN, 'approve')).toMatchObject({
      status: 403,
      body: { code: 'four_eyes_required' },
    });
    expect((await reloadAccount(db, account.id)).balance).toBe(1000);
    const approved = await decide(SECOND_ADMIN, 'approve');
    expect(approved).toMatchObject({
      status: 200,
      body: {
        approval: { status: 'approved', requestedBy: API_ADMIN_ARN, decidedBy: SECOND_ADMIN },
        entry: { amount: 5000 },
      },
    });
    expect(await decide(SECOND_ADMIN, 'approve')).toMatchObject({
      status: 200,
      body: { entry: { amount: 5000 } },
    });
    expect(await decide(SECOND_ADMIN, 'reject')).toMatchObject({
      status: 409,
      body: { code: 'approval_decided' },
    });
    expect((await reloadAccount(db, account.id)).balance).toBe(6000);

    const second = await adjust(2000);
    const rejected = await decide(SECOND_ADMIN, 'reject', String(second.body.approvalId));
    expect(rejected).toMatchObject({ status: 200, body: { approval: { status: 'rejected' }, entry: null } });
    expect((await reloadAccount(db, account.id)).balance).toBe(6000);
    const audit = await db
      .selectFrom('admin_actions')
      .select('action')
      .where('account_id', '=', account.id)
      .orderBy('created_at')
      .execute();
    expect(audit.map((a) => a.action)).toEqual([
      'adjust',
      'request_grant',
      'approve_grant',
      'request_grant',
      'reject_grant',
    ]);
    const listed = await call('GET /v1/admin/approvals', {
      auth: { iam: API_ADMIN_ARN },
      query: { status: 'approved' },
    });
    expect((listed.body.data as Array<{ id: string }>).map((a) => a.id)).toContain(approvalId);
    await expectInvariantsHold(db, clock.now());
  });
});

describe('bad input writes nothing', () => {
  it('refuses bad grants, coupons and redemptions, each with its own code and status', async () => {
    const clock = testClock();
    const { call } = testApi(db, { clock: clock.now });
    const admin = { iam: API_ADMIN_ARN };
    const account = await givenAccount(db);
    const userId = account.external_user_id!;
    const grantWith = (body: Record<string, unknown>) =>
      call('POST /v1/admin/accounts/{userId}/adjustments', {
        auth: admin,
        params: { userId },
        body: { amount: 10, reason: 'r', ...body },
      });
    const past = new Date(clock.now().getTime() - 1000).toISOString();
    for (const [body, field] of [
      [{ expiresAt: past }, 'expiresAt'],
      [{ expiresAt: 'next tuesday' }, 'expiresAt'],
      [{ category: 'gift' }, 'category'],
      [{ amount: -5, category: 'paid' }, 'category'],
    ] as const) {
      expect({ field, response: (await grantWith(body)).body }).toMatchObject({
        field,
        response: { status: 400, code: 'validation_error', field },
      });
    }
    const createWith = (body: Record<string, unknown>) =>
      call('POST /v1/admin/coupons', { auth: admin, body: { credits: 5, reason: 'r', ...body } });
    for (const code of ['ab', 'x'.repeat(65), 'with space', 'ümlaut', 'semi;colon']) {
      expect((await createWith({ code })).body).toMatchObject({ status: 400, field: 'code' });
    }
    expect((await createWith({ code: 'LATE', redeemBy: past })).body).toMatchObject({
      status: 400,
      field: 'redeemBy',
    });

    expect((await createWith({ code: 'OFF-NOW' })).status).toBe(201);
    // A coupon for a plan the catalog does not have could never be redeemed.
    expect((await createWith({ code: 'NO-SUCH-PLAN', plans: ['default', 'platinum'] })).body).toMatchObject({
      status: 400,
      field: 'plans',
      detail: 'plans: unknown plan "platinum"; plans: default',
    });
    // DESIGN's body has no reason: the audit row says what was done.
    const unexplained = await call('POST /v1/admin/coupons', {
      auth: admin,
      body: { code: 'NO-REASON', credits: 5 },
    });
    expect(unexplained.status).toBe(201);
    expect(
      await db
        .selectFrom('admin_actions')
        .select(['action', 'reason'])
        .where('action', '=', 'create_coupon')
        .where(sql<boolean>`payload->>'code' = 'NO-REASON'`)
        .execute(),
    ).toEqual([{ action: 'create_coupon', reason: 'created a coupon' }]);
    expect(
      (
        await call('POST /v1/admin/coupons/{code}/disable', {
          auth: admin,
          params: { code: 'off-now' },
          body: { reason: 'r' },
        })
      ).status,
    ).toBe(200);
    expect((await createWith({ code: 'ONE-USE', maxRedemptions: 1 })).status).toBe(201);
    const soon = new Date(clock.now().getTime() + 60_000).toISOString();
    expect((await createWith({ code: 'SOON-GONE', redeemBy: soon })).status).toBe(201);
    expect((await createWith({ code: 'one-use' })).body).toMatchObject({
      status: 409,
      code: 'coupon_exists',
    });
    const other = await givenAccount(db);
    expect(
      (
        await call('POST /v1/me/coupons/redeem', {
          auth: { user: other.external_user_id! },
          body: { code: 'ONE-USE' },
        })
      ).status,
    ).toBe(201);
    clock.advance(60_000);

    const before = await db
      .selectFrom('credit_grants')
      .select('id')
      .where('account_id', '=', account.id)
      .execute();
    const redeem = (code: string) =>
      call('POST /v1/me/coupons/redeem', { auth: { user: userId }, body: { code } });
    expect((await redeem('no')).body).toMatchObject({ status: 400, field: 'code' });
    expect((await redeem('NOPE-NOPE')).body).toMatchObject({ status: 404, code: 'coupon_not_found' });
    expect((await redeem('OFF-NOW')).body).toMatchObject({ status: 410, code: 'coupon_disabled' });
    expect((await redeem('ONE-USE')).body).toMatchObject({ status: 410, code: 'coupon_exhausted' });
    expect((await redeem('SOON-GONE')).body).toMatchObject({ status: 410, code: 'coupon_expired' });
    expect(
      await db.selectFrom('credit_grants').select('id').where('account_id', '=', account.id).execute(),
    ).toEqual(before);
    expect((await reloadAccount(db, account.id)).balance).toBe(0);
    await expectInvariantsHold(db, clock.now());
  });

  it('answers 429 after ten failed attempts within an hour, even for a good code, and lets it through an hour later', async () => {
    const clock = testClock();
    const { call } = testApi(db, { clock: clock.now });
    await givenCoupon('PATIENCE', 3);
    const account = await givenAccount(db);
    const redeem = (code: string) =>
      call('POST /v1/me/coupons/redeem', { auth: { user: account.external_user_id! }, body: { code } });
    for (let i = 0; i < 10; i++) expect((await redeem(`GUESS-${i}`)).status).toBe(404);
    expect((await redeem('PATIENCE')).body).toMatchObject({ status: 429, code: 'too_many_attempts' });
    expect((await reloadAccount(db, account.id)).balance).toBe(0);
    clock.advance(3_600_000);
    expect((await redeem('PATIENCE')).status).toBe(201);
    await expectInvariantsHold(db, clock.now());
  });
});

type Op =
  | { kind: 'purchase'; credits: number }
  | { kind: 'promo'; credits: number; days: number | null }
  | { kind: 'spend'; credits: number }
  | { kind: 'refund'; purchase: number; credits: number }
  | { kind: 'advance'; days: number };

/** The grant rules replayed in memory, in order: what the database must end with. */
function model(ops: readonly Op[], start: number) {
  type Lot = { amount: number; remaining: number; expiresAt: number | null; promo: boolean; seq: number };
  const lots: Lot[] = [];
  const purchases: { lot: Lot; credits: number; refunded: number }[] = [];
  let balance = 0;
  let now = start;
  const live = () =>
    lots
      .filter((l) => l.remaining > 0 && (l.expiresAt === null || l.expiresAt > now))
      .sort(
        (a, b) =>
          (a.expiresAt ?? Number.POSITIVE_INFINITY) - (b.expiresAt ?? Number.POSITIVE_INFINITY) ||
          Number(b.promo) - Number(a.promo) ||
          a.seq - b.seq,
      );
  const expireDue = () => {
    for (const l of lots) {
      if (l.remaining > 0 && l.expiresAt !== null && l.expiresAt <= now) {
        balance -= l.remaining;
        l.remaining = 0;
      }
    }
  };
  const draw = (amount: number, first?: Lot) => {
    let left = amount;
    for (const l of first ? [first, ...live().filter((x) => x !== first)] : live()) {
      const take = Math.min(l.remaining, left);
      l.remaining -= take;
      left -= take;
    }
    balance -= amount;
  };
  const add = (amount: number, expiresAt: number | null, promo: boolean) => {
    const paysDebt = Math.min(amount, Math.max(0, -balance));
    const lot = { amount, remaining: amount - paysDebt, expiresAt, promo, seq: lots.length };
    lots.push(lot);
    balance += amount;
    return lot;
  };
  const outcomes: boolean[] = [];
  for (const op of ops) {
    if (op.kind === 'advance') now += op.days * DAY;
    if (op.kind === 'purchase')
      purchases.push({ lot: add(op.credits, null, false), credits: op.credits, refunded: 0 });
    if (op.kind === 'promo') add(op.credits, op.days === null ? null : now + op.days * DAY, true);
    if (op.kind === 'spend') {
      expireDue();
      const ok = balance >= op.credits;
      if (ok) draw(op.credits);
      outcomes.push(ok);
    }
    if (op.kind === 'refund') {
      const p = purchases[op.purchase % Math.max(purchases.length, 1)];
      const credits = p ? Math.min(op.credits, p.credits - p.refunded) : 0;
      if (p && credits > 0) {
        expireDue();
        p.refunded += credits;
        draw(credits, p.lot.remaining > 0 ? p.lot : undefined);
      }
    }
  }
  return {
    balance:
      balance -
      lots.filter((l) => l.expiresAt !== null && l.expiresAt <= now).reduce((s, l) => s + l.remaining, 0),
    remaining: lots.map((l) => (l.expiresAt !== null && l.expiresAt <= now ? 0 : l.remaining)),
    outcomes,
  };
}

describe('property: grants against a simple model', () => {
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.record({ kind: fc.constant('purchase' as const), credits: fc.integer({ min: 1, max: 100 }) }),
    fc.record({
      kind: fc.constant('promo' as const),
      credits: fc.integer({ min: 1, max: 100 }),
      days: fc.option(fc.integer({ min: 1, max: 10 }), { nil: null }),
    }),
    fc.record({ kind: fc.constant('spend' as const), credits: fc.integer({ min: 1, max: 120 }) }),
    fc.record({
      kind: fc.constant('refund' as const),
      purchase: fc.nat({ max: 5 }),
      credits: fc.integer({ min: 1, max: 100 }),
    }),
    fc.record({ kind: fc.constant('advance' as const), days: fc.integer({ min: 1, max: 6 }) }),
  );

  it('random histories of purchases, expiring grants, spends, refunds and a moving clock end as the model says', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 14 }), async (ops) => {
        const clock = testClock();
        const start = clock.now().getTime();
        const account = await givenAccount(db);
        const grants: string[] = [];
        const purchases: { paymentId: string; credits: number; refunded: number }[] = [];
        const outcomes: boolean[] = [];
        for (const [i, step] of ops.entries()) {
          if (step.kind === 'advance') clock.advance(step.days * DAY);
          if (step.kind === 'purchase') {
            const bought = await purchase(account, step.credits);
            grants.push(bought.grantId);
            purchases.push({ paymentId: bought.payment.id, credits: step.credits, refunded: 0 });
          }
          if (step.kind === 'promo') {
            const expiresAt = step.days === null ? null : new Date(clock.now().getTime() + step.days * DAY);
            grants.push(await grant(account, step.credits, { category: 'promotional', expiresAt }));
          }
          if (step.kind === 'spend') {
            const spent = await spend(account, step.credits, `p-${i}`, clock.now()).then(
              () => true,
              (error: unknown) => {
                if (error instanceof InsufficientCreditsError) return false;
                throw error;
              },
            );
            outcomes.push(spent);
          }
          if (step.kind === 'refund') {
            const p = purchases[step.purchase % Math.max(purchases.length, 1)];
            const credits = p ? Math.min(step.credits, p.credits - p.refunded) : 0;
            if (p && credits > 0) {
              p.refunded += credits;
              await inAccountTransaction(db, account.id, (trx, locked) =>
                movePaymentCredits(
                  trx,
                  locked,
                  { paymentId: p.paymentId, kind: 'refund_clawback', credits, reference: `re_${i}` },
                  clock.now(),
                ),
              );
            }
          }
        }
        const expected = model(ops, start);
        const { call } = testApi(db, { clock: clock.now });
        const credits = await call('GET /v1/me/credits', { auth: { user: account.external_user_id! } });
        const remaining = await Promise.all(grants.map((g) => remainingOf(g)));
        const now = clock.now();
        const live = await db
          .selectFrom('credit_grants')
          .select(['id', 'remaining', 'expires_at'])
          .where('account_id', '=', account.id)
          .execute();
        const liveRemaining = grants.map((g) => {
          const row = live.find((r) => r.id === g)!;
          return row.expires_at !== null && row.expires_at <= now ? 0 : remaining[grants.indexOf(g)];
        });
        expect({ balance: credits.body.balance, remaining: liveRemaining, outcomes }).toEqual(expected);
        await expectInvariantsHold(db, now);
      }),
      { numRuns: 30 },
    );
  });
});
