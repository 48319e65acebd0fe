import { describe, expect, it } from 'vitest';
import { createSweeper } from '../../functions/sweeper.js';
import type { Account } from '../../shared/db/schema.js';
import { parsePlans } from '../../shared/plan-catalog.js';
import { ADMIN_ARN, SERVICE_ARN, testApi } from '../support/api.js';
import { createTestDatabase } from '../support/database.js';
import { lambdaContext } from '../support/events.js';
import { givenAccount, givenFundedAccount } from '../support/factories.js';
import { expectInvariantsHold } from '../support/invariants.js';

const { db } = await createTestDatabase({ max: 30 });
const service = { iam: SERVICE_ARN };
const admin = { iam: ADMIN_ARN };

const PLANS = parsePlans(
  JSON.stringify([
    { id: 'free', name: 'Free', default: true, monthlyAllowance: 100 },
    { id: 'pro', name: 'Pro', monthlyAllowance: 1000, caps: { monthly: 5000 } },
    { id: 'starter', name: 'Starter', monthlyAllowance: 300, caps: { monthly: 1000 } },
    { id: 'capped', name: 'Capped', caps: { monthly: 990 } },
    { id: 'small', name: 'Small', caps: { monthly: 100 } },
    { id: 'tight', name: 'Tight', caps: { daily: 50, monthly: 120 } },
    { id: 'limited', name: 'Limited', rateLimitPerMinute: 60 },
  ]),
);

/**
 * The instants below are written in 2027 and 2028; once those are near, they move on by whole leap cycles of
 * four years (their weekdays aside, the calendar is the same), so they stay in the future and February 29 stays.
 */
const YEARS_ON = 4 * Math.ceil(Math.max(new Date().getUTCFullYear() - 2026, 0) / 4);
/** An instant, a date or a month written below, moved on by `YEARS_ON`. */
const year = (written: string) => `${Number(written.slice(0, 4)) + YEARS_ON}${written.slice(4)}`;

/** A clock the test sets to any instant (all in the future, so the database's own stamps are earlier). */
function clockAt(iso: string) {
  let at = Date.parse(iso);
  return {
    now: () => new Date(at),
    set: (next: string) => {
      at = Date.parse(next);
    },
    advance: (ms: number) => {
      at += ms;
    },
  };
}

function api(clock: ReturnType<typeof clockAt>) {
  const { call } = testApi(db, { clock: clock.now, config: { plans: PLANS } });
  const user = (account: Account) => ({ user: account.external_user_id! });
  let keys = 0;
  const spend = (account: Account, amount: number) =>
    call('POST /v1/accounts/{userId}/spend', {
      auth: service,
      params: { userId: account.external_user_id! },
      headers: { 'idempotency-key': `spend-${++keys}-${Math.random()}` },
      body: { amount },
    });
  const hold = (account: Account, credits: number) =>
    call('POST /v1/accounts/{userId}/holds', {
      auth: service,
      params: { userId: account.external_user_id! },
      headers: { 'idempotency-key': `hold-${++keys}-${Math.random()}` },
      body: { credits },
    });
  const setPlan = (account: Account, planId: string) =>
    call('PUT /v1/admin/accounts/{userId}/plan', {
      auth: admin,
      params: { userId: account.external_user_id! },
      body: { planId, reason: 'test' },
    });
  const credits = (account: Account) => call('GET /v1/me/credits', { auth: user(account) });
  const limits = (account: Account) => call('GET /v1/me/limits', { auth: user(account) });
  const budget = (account: Account, monthlyBudget: unknown) =>
    call('PUT /v1/me/limits', { auth: user(account), body: { monthlyBudget } });
  return { call, spend, hold, setPlan, credits, limits, budget };
}

/** An account with `credits` paid credits, moved to `planId`. */
async function onPlan(a: ReturnType<typeof api>, planId: string, credits = 5000): Promise<Account> {
  const { account } = await givenFundedAccount(db, credits);
  if (planId !== 'free') expect((await a.setPlan(account, planId)).status).toBe(200);
  return account;
}

const allowanceEntries = (account: Account) =>
  db
    .selectFrom('ledger_entries')
    .select(['amount', 'reference'])
    .where('account_id', '=', account.id)
    .where('kind', '=', 'allowance')
    .orderBy('id')
    .execute();

describe('plans: the monthly allowance', () => {
  it('is there at 23:59:59 on the last day of a month and is the new one at 00:00:00 the next', async () => {
    const clock = clockAt(year('2027-01-31T23:59:59Z'));
    const a = api(clock);
    const account = await givenAccount(db);
    expect((await a.credits(account)).body).toMatchObject({
      balance: 100,
      plan: { id: 'free', name: 'Free' },
      grants: { promotional: 100, nextExpiry: year('2027-02-01T00:00:00.000Z') },
    });
    expect((await a.spend(account, 30)).status).toBe(200);
    clock.set(year('2027-02-01T00:00:00Z'));
    // January's 70 left expire at 00:00:00; February's 100 are there in the same second, with no job run.
    expect((await a.credits(account)).body).toMatchObject({
      balance: 100,
      grants: { promotional: 100, nextExpiry: year('2027-03-01T00:00:00.000Z') },
    });
    expect((await a.spend(account, 100)).body).toMatchObject({ balance: 0 });
    expect(await allowanceEntries(account)).toEqual([
      { amount: 100, reference: `allowance:free:${year('2027-01')}` },
      { amount: 100, reference: `allowance:free:${year('2027-02')}` },
    ]);
    // The history filters on them like on any other kind.
    const history = await a.call('GET /v1/me/transactions', {
      auth: { user: account.external_user_id! },
      query: { kind: 'allowance' },
    });
    expect(history.status).toBe(200);
    expect(
      (history.body.data as Array<{ kind: string; amount: number }>).map((e) => [e.kind, e.amount]),
    ).toEqual([
      ['allowance', 100],
      ['allowance', 100],
    ]);
    await expectInvariantsHold(db, clock.now());
  });

  it('50 concurrent first debits of a new month create one allowance grant', async () => {
    const clock = clockAt(year('2027-03-01T00:00:00Z'));
    const a = api(clock);
    const { account } = await givenFundedAccount(db, 500);
    const responses = await Promise.all(Array.from({ length: 50 }, () => a.spend(account, 1)));
    expect(responses.map((r) => r.status)).toEqual(Array(50).fill(200));
    expect(await allowanceEntries(account)).toEqual([
      { amount: 100, reference: `allowance:free:${year('2027-03')}` },
    ]);
    expect((await a.credits(account)).body).toMatchObject({ balance: 550 });
    await expectInvariantsHold(db, clock.now());
  });

  it('lasts to the end of February, of a 31-day month and of a leap February, and expires then', async () => {
    const clock = clockAt(year('2027-02-10T12:00:00Z'));
    const a = api(clock);
    const account = await givenAccount(db);
    const expiry = async () =>
      (await a.call('GET /v1/me/grants', { auth: { user: account.external_user_id! } })).body.items;
    expect(await expiry()).toMatchObject([
      { source: 'allowance', expiresAt: year('2027-03-01T00:00:00.000Z') },
    ]);
    clock.set(year('2027-02-28T23:59:59.999Z'));
    expect((await a.credits(account)).body).toMatchObject({ balance: 100 });
    clock.set(year('2027-03-31T23:59:59Z'));
    expect(await expiry()).toMatchObject([
      { source: 'allowance', amount: 100, expiresAt: year('2027-04-01T00:00:00.000Z') },
    ]);
    clock.set(year('2028-02-29T23:00:00Z'));
    expect(await expiry()).toMatchObject([
      { source: 'allowance', expiresAt: year('2028-03-01T00:00:00.000Z') },
    ]);
    // Reads leave the expired months' credits to the sweeper (they no longer count): it writes them off.
    await createSweeper({ db, plans: PLANS, clock: clock.now })(undefined, lambdaContext('sweeper'));
    const kinds = await db
      .selectFrom('ledger_entries')
      .select(['kind', 'amount'])
      .where('account_id', '=', account.id)
      .orderBy('id')
      .execute();
    expect(kinds.map((k) => `${k.kind} ${k.amount}`)).toEqual([
      'allowance 100',
      'allowance 100',
      'allowance 100',
      'grant_expiry -100',
      'grant_expiry -100',
    ]);
    await expectInvariantsHold(db, clock.now());
  });

  it('is granted ahead by the sweeper, and then not again by a debit', async () => {
    const clock = clockAt(year('2027-05-01T00:00:10Z'));
    const a = api(clock);
    const accounts = await Promise.all(Array.from({ length: 3 }, () => givenAccount(db)));
    const sweeper = createSweeper({ db, plans: PLANS, clock: clock.now });
    const result = (await sweeper(undefined, lambdaContext('sweeper'))) as { allowancesGranted: number };
    expect(result.allowancesGranted).toBeGreaterThanOrEqual(3);
    for (const account of accounts) {
      expect(await allowanceEntries(account)).toEqual([
        { amount: 100, reference: `allowance:free:${year('2027-05')}` },
      ]);
    }
    expect((await a.spend(accounts[0]!, 10)).body).toMatchObject({ balance: 90 });
    const again = (await sweeper(undefined, lambdaContext('sweeper'))) as { allowancesGranted: number };
    expect(again.allowancesGranted).toBe(0);
    expect(await allowanceEntries(accounts[0]!)).toHaveLength(1);
    await expectInvariantsHold(db, clock.now());
  });
});

describe('plans: caps', () => {
  it('100 concurrent spends that exceed the monthly cap by 10 stop exactly at the cap', async () => {
    const clock = clockAt(year('2027-06-10T10:00:00Z'));
    const a = api(clock);
    const account = await onPlan(a, 'capped', 5000);
    const responses = await Promise.all(Array.from({ length: 100 }, () => a.spend(account, 10)));
    const statuses = responses.map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(99);
    const refused = responses.filter((r) => r.status === 403);
    expect(refused).toHaveLength(1);
    expect(refused[0]!.body).toMatchObject({
      code: 'spend_cap_reached',
      cap: 990,
      used: 990,
      held: 0,
      remaining: 0,
      period: 'month',
      source: 'plan',
      resetsAt: year('2027-07-01T00:00:00.000Z'),
    });
    expect((await a.limits(account)).body.caps).toEqual([
      {
        period: 'month',
        limit: 990,
        used: 990,
        held: 0,
        remaining: 0,
        resetsAt: year('2027-07-01T00:00:00.000Z'),
        source: 'plan',
      },
    ]);
    expect((await a.credits(account)).body).toMatchObject({ balance: 5000 - 990 });
    await expectInvariantsHold(db, clock.now());
  });

  it('counts active holds; releasing one frees the cap; a capture takes no more than the cap leaves', async () => {
    const clock = clockAt(year('2027-06-11T10:00:00Z'));
    const a = api(clock);
    const account = await onPlan(a, 'small', 1000);
    const held = await a.hold(account, 80);
    expect(held.status).toBe(201);
    expect((await a.spend(account, 30)).body).toMatchObject({
      code: 'spend_cap_reached',
      cap: 100,
      used: 0,
      held: 80,
      remaining: 20,
    });
    expect((await a.hold(account, 21)).body).toMatchObject({ code: 'spend_cap_reached', held: 80 });
    await a.call('POST /v1/holds/{holdId}/void', {
      auth: service,
      params: { holdId: String(held.body.holdId) },
    });
    expect((await a.spend(account, 30)).status).toBe(200);
    const second = await a.hold(account, 50);
    const captured = await a.call('POST /v1/holds/{holdId}/capture', {
      auth: service,
      params: { holdId: String(second.body.holdId) },
      body: { credits: 80 },
    });
    expect(captured.body).toMatchObject({ credits: 70, shortfall: 10, balance: 900 });
    expect((await a.spend(account, 1)).body).toMatchObject({ code: 'spend_cap_reached', used: 100 });
    await expectInvariantsHold(db, clock.now());
  });

  it('a cap reached on the 31st is free again at 00:00 UTC on the 1st', async () => {
    const clock = clockAt(year('2027-07-31T23:30:00Z'));
    const a = api(clock);
    const account = await onPlan(a, 'small', 1000);
    expect((await a.spend(account, 100)).status).toBe(200);
    expect((await a.spend(account, 1)).body).toMatchObject({
      code: 'spend_cap_reached',
      resetsAt: year('2027-08-01T00:00:00.000Z'),
    });
    clock.set(year('2027-07-31T23:59:59.999Z'));
    expect((await a.spend(account, 1)).status).toBe(403);
    clock.set(year('2027-08-01T00:00:00Z'));
    expect((await a.spend(account, 100)).status).toBe(200);
    await expectInvariantsHold(db, clock.now());
  });

  it('applies the daily and the monthly cap; the tighter refuses', async () => {
    const clock = clockAt(year('2027-09-01T08:00:00Z'));
    const a = api(clock);
    const account = await onPlan(a, 'tight', 1000);
    expect((await a.spend(account, 50)).status).toBe(200);
    expect((await a.spend(account, 1)).body).toMatchObject({
      period: 'day',
      cap: 50,
      resetsAt: year('2027-09-02T00:00:00.000Z'),
    });
    clock.set(year('2027-09-02T08:00:00Z'));
    expect((await a.spend(account, 50)).status).toBe(200);
    clock.set(year('2027-09-03T08:00:00Z'));
    expect((await a.spend(account, 20)).status).toBe(200);
    expect((await a.spend(account, 1)).body).toMatchObject({
      period: 'month',
      cap: 120,
      used: 120,
      resetsAt: year('2027-10-01T00:00:00.000Z'),
    });
    expect((await a.limits(account)).body.caps).toMatchObject([
      { period: 'day', limit: 50, used: 20, remaining: 30 },
      { period: 'month', limit: 120, used: 120, remaining: 0 },
    ]);
    await expectInvariantsHold(db, clock.now());
  });

  it("a user's budget below the plan's cap applies; one above it, negative or fractional is refused", async () => {
    const clock = clockAt(year('2027-10-05T08:00:00Z'));
    const a = api(clock);
    const account = await onPlan(a, 'starter', 1000);
    const set = await a.budget(account, 200);
    expect(set.status).toBe(200);
    expect(set.body).toMatchObject({
      plan: { id: 'starter', name: 'Starter' },
      monthlyBudget: 200,
      caps: [{ period: 'month', limit: 200, source: 'budget', used: 0 }],
      allowance: { credits: 300, month: year('2027-10'), expiresAt: year('2027-11-01T00:00:00.000Z') },
    });
    expect((await a.spend(account, 150)).status).toBe(200);
    expect((await a.spend(account, 51)).body).toMatchObject({
      code: 'spend_cap_reached',
      source: 'budget',
      cap: 200,
      used: 150,
    });
    for (const bad of [1001, -1, 1.5, '100']) {
      const refused = await a.budget(account, bad);
      expect(refused.status).toBe(400);
      expect(refused.body).toMatchObject({ code: 'validation_error', field: 'monthlyBudget' });
    }
    expect((await a.limits(account)).body).toMatchObject({ monthlyBudget: 200 });
    expect((await a.budget(account, null)).body).toMatchObject({
      monthlyBudget: null,
      caps: [{ limit: 1000, source: 'plan' }],
    });
    expect((await a.spend(account, 51)).status).toBe(200);
    await expectInvariantsHold(db, clock.now());
  });

  it('rejects usage events past the cap item by item with spend_cap_reached', async () => {
    const clock = clockAt(year('2027-10-06T08:00:00Z'));
    const a = api(clock);
    const account = await onPlan(a, 'small', 1000);
    const event = (eventId: string, credits: number) => ({
      eventId,
      userId: account.external_user_id!,
      credits,
    });
    const response = await a.call('POST /v1/usage', {
      auth: service,
      body: { events: [event('u1', 60), event('u2', 60), event('u3', 40)] },
    });
    expect(response.body.results).toMatchObject([
      { eventId: 'u1', status: 'applied', credits: 60 },
      { eventId: 'u2', status: 'rejected', code: 'spend_cap_reached' },
      { eventId: 'u3', status: 'applied', credits: 40 },
    ]);
    await expectInvariantsHold(db, clock.now());
  });
});

describe('plans: changing plan mid-month', () => {
  it('an upgrade grants the difference once, however often the plan changes', async () => {
    const clock = clockAt(year('2027-11-10T08:00:00Z'));
    const a = api(clock);
    const account = await givenAccount(db);
    expect((await a.credits(account)).body).toMatchObject({ balance: 100, plan: { id: 'free' } });
    expect((await a.setPlan(account, 'pro')).body).toMatchObject({
      plan: { id: 'pro' },
      previousPlan: { id: 'free' },
      changed: true,
      allowanceGranted: 900,
    });
    expect((await a.setPlan(account, 'pro')).body).toMatchObject({ changed: false, allowanceGranted: 0 });
    expect((await a.setPlan(account, 'free')).body).toMatchObject({ changed: true, allowanceGranted: 0 });
    expect((await a.setPlan(account, 'pro')).body).toMatchObject({ changed: true, allowanceGranted: 0 });
    expect(await allowanceEntries(account)).toEqual([
      { amount: 100, reference: `allowance:free:${year('2027-11')}` },
      { amount: 900, reference: `allowance:pro:${year('2027-11')}` },
    ]);
    expect((await a.credits(account)).body).toMatchObject({
      balance: 1000,
      plan: { id: 'pro', name: 'Pro' },
    });
    const audit = await db
      .selectFrom('admin_actions')
      .select(['action', 'payload'])
      .where('account_id', '=', account.id)
      .orderBy('created_at')
      .execute();
    expect(audit).toEqual([
      { action: 'change_plan', payload: { from: 'free', to: 'pro' } },
      { action: 'change_plan', payload: { from: 'pro', to: 'free' } },
      { action: 'change_plan', payload: { from: 'free', to: 'pro' } },
    ]);
    // Next month the plan's own allowance, once.
    clock.set(year('2027-12-01T00:00:00Z'));
    expect((await a.credits(account)).body).toMatchObject({ balance: 1000 });
    await expectInvariantsHold(db, clock.now());
  });

  it('a downgrade keeps what was granted and lowers the cap at once', async () => {
    const clock = clockAt(year('2027-11-12T08:00:00Z'));
    const a = api(clock);
    const account = await onPlan(a, 'pro', 5000);
    expect((await a.spend(account, 1200)).status).toBe(200);
    expect((await a.setPlan(account, 'starter')).body).toMatchObject({ allowanceGranted: 0 });
    expect((await a.spend(account, 1)).body).toMatchObject({
      code: 'spend_cap_reached',
      cap: 1000,
      used: 1200,
    });
    expect((await a.credits(account)).body).toMatchObject({ balance: 5000 + 1000 - 1200 });
    await expectInvariantsHold(db, clock.now());
  });

  it('an unknown plan id is 404 and changes nothing', async () => {
    const clock = clockAt(year('2027-11-13T08:00:00Z'));
    const a = api(clock);
    const account = await givenAccount(db);
    const response = await a.setPlan(account, 'platinum');
    expect(response.status).toBe(404);
    expect(response.body).toMatchObject({ code: 'plan_not_found' });
    expect(response.body.detail).toContain('free, pro');
    const audit = await db
      .selectFrom('admin_actions')
      .select('id')
      .where('account_id', '=', account.id)
      .execute();
    expect(audit).toEqual([]);
    expect(await allowanceEntries(account)).toEqual([]);
    // For a user never seen, the account is not created either.
    const unseen = await a.call('PUT /v1/admin/accounts/{userId}/plan', {
      auth: admin,
      params: { userId: 'never-seen-platinum' },
      body: { planId: 'platinum', reason: 'test' },
    });
    expect(unseen.body).toMatchObject({ status: 404, code: 'plan_not_found' });
    expect(
      await db
        .selectFrom('accounts')
        .select('id')
        .where('external_user_id', '=', 'never-seen-platinum')
        .execute(),
    ).toEqual([]);
  });
});

describe('plans: rate limit', () => {
  it('with 60 per minute, 100 spends in one second from 10 clients: 60 pass, 40 are 429; a minute later spends pass', async () => {
    const clock = clockAt(year('2028-01-10T08:00:00Z'));
    const a = api(clock);
    const account = await onPlan(a, 'limited', 5000);
    const client = async () => {
      const out = [];
      for (let i = 0; i < 10; i++) {
        out.push(await a.spend(account, 1));
        clock.advance(10); // the 100 spends spread over one second
      }
      return out;
    };
    const responses = (await Promise.all(Array.from({ length: 10 }, client))).flat();
    expect(responses.filter((r) => r.status === 200)).toHaveLength(60);
    const limited = responses.filter((r) => r.status === 429);
    expect(limited).toHaveLength(40);
    for (const r of limited) {
      expect(r.body).toMatchObject({ code: 'rate_limited', limit: 60 });
      const retry = Number(r.headers['retry-after']);
      expect(retry).toBeGreaterThanOrEqual(59);
      expect(retry).toBeLessThanOrEqual(60);
    }
    // Holds count against the same limit.
    expect((await a.hold(account, 1)).status).toBe(429);
    clock.advance(60_000);
    expect((await a.spend(account, 1)).status).toBe(200);
    expect((await a.hold(account, 1)).status).toBe(201);
    expect((await a.limits(account)).body).toMatchObject({ rateLimitPerMinute: 60 });
    expect((await a.credits(account)).body).toMatchObject({ balance: 5000 - 61 });
    await expectInvariantsHold(db, clock.now());
  });
});

describe('plans: the low-balance threshold', () => {
  it("is the plan's until the user sets one; negative or fractional is 400 and changes nothing", async () => {
    const catalog = parsePlans(
      JSON.stringify([{ id: 'free', name: 'Free', default: true, lowBalanceThreshold: 50 }]),
    );
    const { call } = testApi(db, { config: { plans: catalog } });
    const account = await givenAccount(db);
    const auth = { user: account.external_user_id! };
    expect((await call('GET /v1/me/alerts', { auth })).body).toEqual({
      lowBalance: null,
      planLowBalance: 50,
      effectiveLowBalance: 50,
    });
    expect((await call('PUT /v1/me/alerts', { auth, body: { lowBalance: 200 } })).body).toEqual({
      lowBalance: 200,
      planLowBalance: 50,
      effectiveLowBalance: 200,
    });
    for (const lowBalance of [-1, 2.5, '10', 2 ** 53]) {
      const refused = await call('PUT /v1/me/alerts', { auth, body: { lowBalance } });
      expect(refused.status).toBe(400);
      expect(refused.body).toMatchObject({ code: 'validation_error', field: 'lowBalance' });
    }
    expect((await call('PUT /v1/me/alerts', { auth, body: {} })).status).toBe(400);
    expect((await call('GET /v1/me/alerts', { auth })).body).toMatchObject({ lowBalance: 200 });
    expect((await call('PUT /v1/me/alerts', { auth, body: { lowBalance: null } })).body).toMatchObject({
      lowBalance: null,
      effectiveLowBalance: 50,
    });
  });
});
