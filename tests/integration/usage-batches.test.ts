import { describe, expect, it } from 'vitest';
import { inAccountTransaction, setAccountStatus } from '../../shared/accounts/accounts.js';
import type { Account } from '../../shared/db/schema.js';
import { adjustCredits } from '../../shared/ledger/ledger.js';
import { parsePlans } from '../../shared/plan-catalog.js';
import { activatePriceBook, createPriceBookDraft } from '../../shared/pricing/price-book.js';
import { SERVICE_ARN, testApi } from '../support/api.js';
import { createTestDatabase } from '../support/database.js';
import { ADMIN_ARN, givenAccount, reloadAccount, testClock } from '../support/factories.js';
import { expectInvariantsHold } from '../support/invariants.js';

// A usage batch is one call of debit_usage, one transaction: its accounts are locked first, in one order, and
// its events applied in the batch's order. These pin what that must keep: no deadlock between batches, the
// order of an account's events, and the preparations (an expired grant, the month's allowance) done between.
const { db } = await createTestDatabase({ max: 30 });
const actor = { actorArn: ADMIN_ARN, reason: 'test' };
const clock = testClock();
const PLANS = parsePlans(JSON.stringify([{ id: 'pro', name: 'Pro', default: true, monthlyAllowance: 50 }]));
const service = { iam: SERVICE_ARN };
const record = (api: ReturnType<typeof testApi>, events: Array<Record<string, unknown>>) =>
  api.call('POST /v1/usage', { auth: service, body: { events } });

async function funded(credits: number, expiresAt?: Date): Promise<Account> {
  const account = await givenAccount(db);
  await inAccountTransaction(db, account.id, (trx, locked) =>
    adjustCredits(trx, locked, { ...actor, amount: credits, expiresAt: expiresAt ?? null }),
  );
  return account;
}

const raw = (eventId: string, account: Account, credits: number) => ({
  eventId,
  userId: account.external_user_id!,
  credits,
});

describe('usage batches', () => {
  it('runs 6 concurrent batches over the same 20 accounts in different orders without a deadlock, each event once', async () => {
    const api = testApi(db, { clock: clock.now });
    const accounts = await Promise.all(Array.from({ length: 20 }, () => funded(10_000)));
    const batches = Array.from({ length: 6 }, (_, b) =>
      Array.from({ length: 100 }, (_, i) =>
        raw(`c-${b}-${i}`, accounts[(i * (b + 1) + b) % 20]!, 1 + (i % 3)),
      ),
    );
    // Each batch twice, concurrently: the second answers duplicates (or applies what the first has not yet).
    const answers = await Promise.all([...batches, ...batches].map((events) => record(api, events)));
    for (const answer of answers) expect(answer.status).toBe(200);
    const statuses = answers.flatMap((a) =>
      (a.body.results as Array<{ status: string }>).map((r) => r.status),
    );
    expect(statuses.filter((s) => s === 'applied')).toHaveLength(600);
    expect(statuses.filter((s) => s === 'duplicate')).toHaveLength(600);
    const debited = new Map<string, number>();
    for (const event of batches.flat()) {
      debited.set(event.userId, (debited.get(event.userId) ?? 0) + event.credits);
    }
    for (const account of accounts) {
      expect((await reloadAccount(db, account.id)).balance).toBe(
        10_000 - debited.get(account.external_user_id!)!,
      );
    }
    await expectInvariantsHold(db);
  });

  it('writes off a grant expired mid-batch first, then applies the account’s events in the batch’s order', async () => {
    const api = testApi(db, { clock: clock.now });
    // 10 promotional credits that expired a second ago, and 100 that do not expire.
    const expiring = await funded(10, new Date(clock.now().getTime() - 1_000));
    await inAccountTransaction(db, expiring.id, (trx, locked) =>
      adjustCredits(trx, locked, { ...actor, amount: 100, category: 'paid' }),
    );
    const other = await funded(100);
    const answer = await record(api, [
      raw('m-1', other, 5),
      raw('m-2', expiring, 60),
      raw('m-3', other, 5),
      raw('m-4', expiring, 41), // 40 are left after m-2: refused
      raw('m-5', expiring, 40),
    ]);
    expect(answer.status).toBe(200);
    expect(answer.body.results).toMatchObject([
      { eventId: 'm-1', status: 'applied', balance: 95 },
      { eventId: 'm-2', status: 'applied', balance: 40 },
      { eventId: 'm-3', status: 'applied', balance: 90 },
      { eventId: 'm-4', status: 'rejected', code: 'insufficient_credits' },
      { eventId: 'm-5', status: 'applied', balance: 0 },
    ]);
    const expiries = await db
      .selectFrom('ledger_entries')
      .select(['amount'])
      .where('account_id', '=', expiring.id)
      .where('kind', '=', 'grant_expiry')
      .execute();
    expect(expiries).toEqual([{ amount: -10 }]);
    await expectInvariantsHold(db, clock.now());
  });

  it('grants the month’s allowance once for a batch whose accounts have not had it, before their events', async () => {
    const api = testApi(db, { clock: clock.now, config: { plans: PLANS } });
    const accounts = await Promise.all(Array.from({ length: 3 }, () => givenAccount(db)));
    const events = Array.from({ length: 30 }, (_, i) => raw(`a-${i}`, accounts[i % 3]!, 5));
    const answer = await record(api, events);
    expect(answer.status).toBe(200);
    // 50 credits of allowance each: 10 events of 5 use them up exactly.
    expect((answer.body.results as Array<{ status: string }>).every((r) => r.status === 'applied')).toBe(
      true,
    );
    for (const account of accounts) {
      expect((await reloadAccount(db, account.id)).balance).toBe(0);
      const allowances = await db
        .selectFrom('ledger_entries')
        .select('amount')
        .where('account_id', '=', account.id)
        .where('kind', '=', 'allowance')
        .execute();
      expect(allowances).toEqual([{ amount: 50 }]);
    }
    await expectInvariantsHold(db, clock.now());
  });

  it('prices an event by a version activated after this process read the books, at that version', async () => {
    const api = testApi(db, { clock: clock.now });
    const account = await funded(1_000_000);
    const hour = 3_600_000;
    const book = async (version: string, input: string, skus: string[], activeFrom: Date) => {
      await createPriceBookDraft(
        db,
        {
          version,
          items: skus.map((sku) => ({ sku, kind: 'tokens' as const, rates: { input, output: '0' } })),
        },
        actor,
      );
      await activatePriceBook(db, version, actor, activeFrom);
    };
    const event = (eventId: string, sku: string, at: Date) => ({
      eventId,
      userId: account.external_user_id!,
      sku,
      usage: { inputTokens: 10, outputTokens: 0 },
      occurredAt: at.toISOString(),
    });
    // 1 credit per input token; the process reads the books pricing this event.
    await book('p-v1', '1000000', ['acme/chat'], new Date(clock.now().getTime() - 10 * 24 * hour));
    const first = await record(api, [event('p-1', 'acme/chat', new Date(clock.now().getTime() - 24 * hour))]);
    expect(first.body.results).toMatchObject([{ status: 'applied', credits: 10 }]);
    // Then 3 credits per input token from two hours ago: what the process read still says 1 (the database's
    // check of the version sends the batch back, priced again).
    await book('p-v2', '3000000', ['acme/chat'], new Date(clock.now().getTime() - 2 * hour));
    const second = await record(api, [
      event('p-2', 'acme/chat', new Date(clock.now().getTime() - hour)),
      event('p-3', 'acme/chat', new Date(clock.now().getTime() - 3 * hour)),
    ]);
    expect(second.body.results).toMatchObject([
      { status: 'applied', credits: 30 },
      { status: 'applied', credits: 10 },
    ]);
    // A SKU that only a version activated since has: the process reads the books again before refusing it.
    await book('p-v3', '2000000', ['acme/chat', 'acme/new'], new Date(clock.now().getTime() - hour / 2));
    const third = await record(api, [event('p-4', 'acme/new', new Date(clock.now().getTime() - hour / 4))]);
    expect(third.body.results).toMatchObject([{ status: 'applied', credits: 20 }]);
    const versions = await db
      .selectFrom('usage_events')
      .select(['event_id', 'price_version'])
      .where('account_id', '=', account.id)
      .orderBy('event_id')
      .execute();
    expect(versions).toEqual([
      { event_id: 'p-1', price_version: 'p-v1' },
      { event_id: 'p-2', price_version: 'p-v2' },
      { event_id: 'p-3', price_version: 'p-v1' },
      { event_id: 'p-4', price_version: 'p-v3' },
    ]);
    await expectInvariantsHold(db, clock.now());
  });

  it('answers an event it cannot price with what refuses it first: no account, another payload, a frozen account', async () => {
    const api = testApi(db, { clock: clock.now });
    const active = await funded(100);
    const frozen = await funded(100);
    await inAccountTransaction(db, frozen.id, (trx, locked) =>
      setAccountStatus(trx, locked, 'frozen', actor),
    );
    const unknownSku = (eventId: string, userId: string) => ({
      eventId,
      userId,
      sku: 'acme/none-such',
      usage: { inputTokens: 1, outputTokens: 0 },
    });
    await record(api, [raw('u-1', active, 5)]);
    const answer = await record(api, [
      unknownSku('u-2', 'nobody-here'),
      unknownSku('u-3', frozen.external_user_id!),
      unknownSku('u-1', active.external_user_id!), // u-1 was a raw debit of 5
      unknownSku('u-4', active.external_user_id!),
    ]);
    expect(answer.body.results).toMatchObject([
      { eventId: 'u-2', status: 'rejected', code: 'account_not_found' },
      { eventId: 'u-3', status: 'rejected', code: 'account_frozen' },
      { eventId: 'u-1', status: 'rejected', code: 'idempotency_conflict' },
      { eventId: 'u-4', status: 'rejected', code: 'unknown_sku' },
    ]);
    expect((await reloadAccount(db, active.id)).balance).toBe(95);
    await expectInvariantsHold(db, clock.now());
  });
});
