import { describe, expect, it } from 'vitest';
import { createSweeper } from '../../functions/sweeper.js';
import { inAccountTransaction } from '../../shared/accounts/accounts.js';
import type { Account } from '../../shared/db/schema.js';
import { adjustCredits, spendCredits } from '../../shared/ledger/ledger.js';
import { activatePriceBook, createPriceBookDraft } from '../../shared/pricing/price-book.js';
import { SERVICE_ARN, testApi } from '../support/api.js';
import { createTestDatabase } from '../support/database.js';
import { lambdaContext } from '../support/events.js';
import {
  ADMIN_ARN,
  givenAccount,
  givenFundedAccount,
  givenRefund,
  reloadAccount,
  testClock,
} from '../support/factories.js';
import { expectInvariantsHold } from '../support/invariants.js';

const { db } = await createTestDatabase({ max: 30 });
const service = { iam: SERVICE_ARN };
const actor = { actorArn: ADMIN_ARN, reason: 'test' };

async function funded(credits: number): Promise<Account> {
  const account = await givenAccount(db);
  await inAccountTransaction(db, account.id, (trx, locked) =>
    adjustCredits(trx, locked, { ...actor, amount: credits }),
  );
  return account;
}

function api(clock = testClock()) {
  const { call } = testApi(db, { clock: clock.now });
  const hold = (account: Account, body: Record<string, unknown>, key: string) =>
    call('POST /v1/accounts/{userId}/holds', {
      auth: service,
      params: { userId: account.external_user_id! },
      headers: { 'idempotency-key': key },
      body,
    });
  const capture = (holdId: string, body: Record<string, unknown>) =>
    call('POST /v1/holds/{holdId}/capture', { auth: service, params: { holdId }, body });
  const release = (holdId: string) =>
    call('POST /v1/holds/{holdId}/void', { auth: service, params: { holdId } });
  const get = (holdId: string) => call('GET /v1/holds/{holdId}', { auth: service, params: { holdId } });
  const credits = (account: Account) =>
    call('GET /v1/me/credits', { auth: { user: account.external_user_id! } });
  return { call, hold, capture, release, get, credits, clock };
}

describe('holds: capture', () => {
  it('below the hold takes the cost and releases the rest; at the hold takes it all', async () => {
    const { hold, capture, credits, clock } = api();
    const account = await funded(100);
    const created = await hold(account, { credits: 30 }, 'below');
    expect(created).toMatchObject({
      status: 201,
      body: { credits: 30, status: 'active', balance: 100, available: 70 },
    });
    expect((await credits(account)).body).toMatchObject({ balance: 100, held: 30, available: 70 });
    const below = await capture(String(created.body.holdId), { credits: 12 });
    expect(below.body).toMatchObject({
      status: 'captured',
      credits: 12,
      released: 18,
      shortfall: 0,
      balance: 88,
      available: 88,
    });
    const at = await hold(account, { credits: 20 }, 'at');
    expect((await capture(String(at.body.holdId), { credits: 20 })).body).toMatchObject({
      credits: 20,
      released: 0,
      balance: 68,
    });
    await expectInvariantsHold(db, clock.now());
  });

  it('above the hold takes what is available and reports the shortfall', async () => {
    const { hold, capture, clock } = api();
    const account = await funded(50);
    const created = await hold(account, { credits: 20 }, 'above');
    await hold(account, { credits: 10 }, 'another');
    // Available to this capture: 50 less the other hold's 10.
    const above = await capture(String(created.body.holdId), { credits: 70 });
    expect(above.body).toMatchObject({ credits: 40, released: 0, shortfall: 30, balance: 10, available: 0 });
    await expectInvariantsHold(db, clock.now());
  });

  it('replays the same capture, refuses another body (409), and refuses capturing a voided hold (409)', async () => {
    const { hold, capture, release, clock } = api();
    const account = await funded(40);
    const holdId = String((await hold(account, { credits: 10 }, 'twice')).body.holdId);
    const first = await capture(holdId, { credits: 5 });
    const again = await capture(holdId, { credits: 5 });
    expect(again).toMatchObject({
      status: 200,
      headers: { 'idempotent-replayed': 'true' },
      body: { credits: 5 },
    });
    expect(first.body.credits).toBe(again.body.credits);
    expect((await capture(holdId, { credits: 6 })).body).toMatchObject({
      status: 409,
      code: 'hold_already_captured',
    });
    expect((await reloadAccount(db, account.id)).balance).toBe(35);
    const voided = String((await hold(account, { credits: 10 }, 'voided')).body.holdId);
    expect((await release(voided)).body).toMatchObject({ status: 'voided', released: 10, available: 35 });
    expect((await release(voided)).status).toBe(200);
    expect((await capture(voided, { credits: 1 })).body).toMatchObject({ status: 409, code: 'hold_voided' });
    expect((await release(holdId)).body).toMatchObject({ status: 409, code: 'hold_already_captured' });
    await expectInvariantsHold(db, clock.now());
  });
});

describe('holds: expiry', () => {
  it('stops counting at its TTL without the sweeper; a later capture charges like a spend and says expired', async () => {
    const { hold, capture, get, credits, clock } = api();
    const account = await funded(30);
    const holdId = String((await hold(account, { credits: 25, ttlSeconds: 60 }, 'ttl')).body.holdId);
    expect((await credits(account)).body).toMatchObject({ available: 5, held: 25 });
    clock.advance(59_999);
    expect((await get(holdId)).body.status).toBe('active');
    clock.advance(1);
    expect((await get(holdId)).body.status).toBe('expired');
    expect((await credits(account)).body).toMatchObject({ available: 30, held: 0 });
    const late = await capture(holdId, { credits: 40 });
    expect(late.body).toMatchObject({
      status: 'captured',
      credits: 30,
      shortfall: 10,
      released: 0,
      expired: true,
      balance: 0,
    });
    await expectInvariantsHold(db, clock.now());
  });

  it('is marked expired by the sweeper, and a capture after that still charges like a spend', async () => {
    const { hold, capture, get, clock } = api();
    const account = await funded(30);
    const holdId = String((await hold(account, { credits: 10, ttlSeconds: 1 }, 'swept')).body.holdId);
    clock.advance(1000);
    const sweeper = createSweeper({ db, clock: clock.now });
    expect(await sweeper(undefined, lambdaContext())).toMatchObject({ expiredHolds: 1 });
    const row = await db
      .selectFrom('holds')
      .select('status')
      .where('id', '=', holdId)
      .executeTakeFirstOrThrow();
    expect(row.status).toBe('expired');
    expect((await get(holdId)).body.status).toBe('expired');
    expect((await capture(holdId, { credits: 4 })).body).toMatchObject({
      credits: 4,
      expired: true,
      balance: 26,
    });
    await expectInvariantsHold(db, clock.now());
  });
});

describe('holds: concurrency and the rest of the ledger', () => {
  it('lets exactly 40 of 100 concurrent one-credit holds through on a balance of 40', async () => {
    const { hold, credits, clock } = api();
    const account = await funded(40);
    const outcomes = await Promise.all(
      Array.from({ length: 100 }, (_, i) => hold(account, { credits: 1 }, `c-${i}`)),
    );
    expect(outcomes.filter((o) => o.status === 201)).toHaveLength(40);
    expect(outcomes.filter((o) => o.status === 402)).toHaveLength(60);
    expect((await credits(account)).body).toMatchObject({ balance: 40, held: 40, available: 0 });
    await expectInvariantsHold(db, clock.now());
  });

  it('keeps spends and removals off held credits, and replays a hold for the same key and body', async () => {
    const { hold, call, clock } = api();
    const account = await funded(50);
    const first = await hold(account, { credits: 45, description: 'long call' }, 'key-1');
    const replay = await hold(account, { description: 'long call', credits: 45 }, 'key-1');
    expect(replay).toMatchObject({
      status: 201,
      headers: { 'idempotent-replayed': 'true' },
      body: { holdId: first.body.holdId },
    });
    expect((await hold(account, { credits: 44 }, 'key-1')).body).toMatchObject({
      status: 409,
      code: 'idempotency_conflict',
    });
    const spend = await inAccountTransaction(db, account.id, (trx, locked) =>
      spendCredits(trx, locked, { amount: 6, idempotencyKey: 'over-held' }, clock.now()),
    ).catch((error: unknown) => error);
    expect(spend).toMatchObject({ code: 'insufficient_credits', details: { balance: 50, available: 5 } });
    const removal = await call('POST /v1/admin/accounts/{userId}/adjustments', {
      auth: { iam: 'arn:aws:sts::123456789012:assumed-role/credits-admin/alice' },
      params: { userId: account.external_user_id! },
      body: { amount: -6, reason: 'r' },
    });
    expect(removal.status).toBe(402);
    expect((await reloadAccount(db, account.id)).balance).toBe(50);
    await expectInvariantsHold(db, clock.now());
  });

  it('shrinks holds (newest first) to what a clawback leaves, so they never exceed the balance', async () => {
    const { hold, get, clock } = api();
    const { account, payment } = await givenFundedAccount(db, 100);
    const older = String((await hold(account, { credits: 40 }, 'older')).body.holdId);
    const newer = String((await hold(account, { credits: 50 }, 'newer')).body.holdId);
    // A refund of 70% of the purchase: 70 credits clawed back, 30 left for 90 held.
    await givenRefund(db, payment, 700, 're_shrink');
    expect([(await get(older)).body.credits, (await get(newer)).body.credits]).toEqual([30, 0]);
    await expectInvariantsHold(db, clock.now());
  });
});

describe('holds: priced by the book', () => {
  it('prices a hold from usage now, and its capture from usage at the hold’s version after a new one is active', async () => {
    const { hold, capture, clock } = api();
    const make = async (version: string, input: string) => {
      await createPriceBookDraft(
        db,
        { version, items: [{ sku: 'acme/chat', kind: 'tokens', rates: { input, output: '2000000' } }] },
        actor,
      );
      await activatePriceBook(db, version, actor, clock.now());
    };
    await make('holds-v1', '1000000');
    const account = await funded(1000);
    const created = await hold(
      account,
      { sku: 'acme/chat', usage: { inputTokens: 10, outputTokens: 20 } },
      'priced',
    );
    expect(created.body).toMatchObject({ credits: 50, priceVersion: 'holds-v1' });
    clock.advance(1000);
    await make('holds-v2', '9000000');
    const captured = await capture(String(created.body.holdId), {
      usage: { inputTokens: 5, outputTokens: 10 },
    });
    expect(captured.body).toMatchObject({ credits: 25, released: 25 });
    await expectInvariantsHold(db, clock.now());
  });

  it('refuses bad holds with a precise 4xx and writes nothing', async () => {
    const { call, hold, capture, get, clock } = api();
    const account = await funded(10);
    const cases: Array<[Record<string, unknown>, number, string]> = [
      [{ credits: 1, ttlSeconds: 0 }, 400, 'ttlSeconds'],
      [{ credits: 1, ttlSeconds: 86_401 }, 400, 'ttlSeconds'],
      [{ credits: 0 }, 400, 'credits'],
      [{ credits: 1, sku: 'acme/chat', usage: { inputTokens: 1 } }, 400, 'credits'],
      [{ ttlSeconds: 5 }, 400, 'credits'],
      [{ sku: 'nobody/knows', usage: { inputTokens: 1 } }, 422, 'unknown_sku'],
      [{ credits: 11 }, 402, 'insufficient_credits'],
    ];
    for (const [i, [body, status, what]] of cases.entries()) {
      const response = await hold(account, body, `bad-${i}`);
      expect({ body, status: response.status, what: response.body.field ?? response.body.code }).toEqual({
        body,
        status,
        what,
      });
    }
    expect(await db.selectFrom('holds').select('id').where('account_id', '=', account.id).execute()).toEqual(
      [],
    );
    const holdId = String((await hold(account, { credits: 5 }, 'fine')).body.holdId);
    expect((await capture(holdId, {})).body).toMatchObject({ status: 400 });
    expect((await capture(holdId, { credits: 1, usage: { inputTokens: 1 } })).body).toMatchObject({
      status: 400,
    });
    expect((await capture(holdId, { usage: { inputTokens: 1 } })).body).toMatchObject({
      status: 400,
      field: 'usage',
    });
    // Void takes no body: one sent is refused, and the hold stays active.
    const voided = await call('POST /v1/holds/{holdId}/void', {
      auth: service,
      params: { holdId },
      rawBody: 'garbage\u0000{{{',
    });
    expect(voided.body).toMatchObject({
      status: 400,
      field: 'body',
      detail: 'body: this route takes no body',
    });
    expect((await get(holdId)).body).toMatchObject({ status: 'active' });
    // An empty JSON object, as many clients send with a POST, is no body.
    expect(
      (await call('POST /v1/holds/{holdId}/void', { auth: service, params: { holdId }, body: {} })).body,
    ).toMatchObject({ holdId, status: 'voided' });
    await expectInvariantsHold(db, clock.now());
  });
});
