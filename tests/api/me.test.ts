import { describe, expect, it } from 'vitest';
import { inAccountTransaction } from '../../shared/accounts/accounts.js';
import { adjustCredits, spendCredits } from '../../shared/ledger/ledger.js';
import { ADMIN_ARN, FRONTEND, SERVICE_ARN, testApi } from '../support/api.js';
import { createTestDatabase } from '../support/database.js';
import { givenAccount, givenFundedAccount, givenPayment } from '../support/factories.js';
import { expectInvariantsHold } from '../support/invariants.js';

const { db } = await createTestDatabase();
const { call } = testApi(db);

describe('GET /v1/me/credits', () => {
  it('happy: creates the account on first sight and shows its balance', async () => {
    const first = await call('GET /v1/me/credits', { auth: { user: 'new-user-1' } });
    expect(first).toMatchObject({
      status: 200,
      body: { userId: 'new-user-1', balance: 0, status: 'active', anonymized: false },
    });
    const again = await call('GET /v1/me/credits', { auth: { user: 'new-user-1' } });
    expect(again.body.accountId).toBe(first.body.accountId);
  });

  it('security: refuses a request without authorizer context, and IAM callers', async () => {
    expect((await call('GET /v1/me/credits')).status).toBe(401);
    const iam = await call('GET /v1/me/credits', { auth: { iam: SERVICE_ARN } });
    expect(iam).toMatchObject({ status: 403, body: { code: 'forbidden' } });
  });

  it('security: reads the caller only from the token, whatever the query says', async () => {
    const { account: victim } = await givenFundedAccount(db, 77);
    const response = await call('GET /v1/me/credits', {
      auth: { user: 'attacker' },
      query: { userId: victim.external_user_id! },
    });
    expect(response).toMatchObject({ status: 200 });
    expect(response.body).toMatchObject({ userId: 'attacker', balance: 0 });
  });
});

describe('GET /v1/me/transactions', () => {
  it('happy: pages newest first with an opaque cursor', async () => {
    const { account } = await givenFundedAccount(db, 100);
    for (let i = 0; i < 4; i++) {
      await inAccountTransaction(db, account.id, (trx, locked) =>
        spendCredits(trx, locked, { amount: 1, idempotencyKey: `page-${i}`, description: `call ${i}` }),
      );
    }
    const user = { user: account.external_user_id! };
    const first = await call('GET /v1/me/transactions', { auth: user, query: { limit: '2' } });
    expect(first.status).toBe(200);
    const data = first.body.data as Array<{ description: string; balanceAfter: number }>;
    expect(data.map((e) => e.description)).toEqual(['call 3', 'call 2']);
    const second = await call('GET /v1/me/transactions', {
      auth: user,
      query: { limit: '2', cursor: String(first.body.nextCursor) },
    });
    expect((second.body.data as Array<{ description: string }>).map((e) => e.description)).toEqual([
      'call 1',
      'call 0',
    ]);
    const third = await call('GET /v1/me/transactions', {
      auth: user,
      query: { limit: '2', cursor: String(second.body.nextCursor) },
    });
    expect(third.body).toMatchObject({ nextCursor: null });
    expect((third.body.data as unknown[]).length).toBe(1);
  });

  it('happy: returns every entry exactly once while entries are being added', async () => {
    const { account } = await givenFundedAccount(db, 1_000);
    for (let i = 0; i < 30; i++) {
      await inAccountTransaction(db, account.id, (trx, locked) =>
        spendCredits(trx, locked, { amount: 1, idempotencyKey: `before-${i}` }),
      );
    }
    const before = await db
      .selectFrom('ledger_entries')
      .select('id')
      .where('account_id', '=', account.id)
      .execute();
    const seen: number[] = [];
    let cursor: string | undefined;
    let added = 0;
    do {
      const page = await call('GET /v1/me/transactions', {
        auth: { user: account.external_user_id! },
        query: { limit: '7', ...(cursor && { cursor }) },
      });
      seen.push(...(page.body.data as Array<{ id: number }>).map((e) => e.id));
      cursor = (page.body.nextCursor as string | null) ?? undefined;
      // New entries land while the client pages (newer than anything it has not yet seen).
      await inAccountTransaction(db, account.id, (trx, locked) =>
        spendCredits(trx, locked, { amount: 1, idempotencyKey: `during-${added++}` }),
      );
    } while (cursor);
    expect(new Set(seen).size).toBe(seen.length);
    expect([...seen].sort((a, b) => a - b)).toEqual(before.map((e) => e.id).sort((a, b) => a - b));
    await expectInvariantsHold(db);
  });

  it('error: refuses a forged cursor and an out-of-range limit, naming the field', async () => {
    const user = { user: 'cursor-user' };
    expect(
      (await call('GET /v1/me/transactions', { auth: user, query: { cursor: 'abc' } })).body,
    ).toMatchObject({ status: 400, field: 'cursor' });
    expect((await call('GET /v1/me/transactions', { auth: user, query: { limit: '0' } })).body).toMatchObject(
      { field: 'limit' },
    );
    expect(
      (await call('GET /v1/me/transactions', { auth: user, query: { limit: '101' } })).body,
    ).toMatchObject({ field: 'limit' });
    expect(
      (await call('GET /v1/me/transactions', { auth: user, query: { userId: 'x' } })).body,
    ).toMatchObject({ field: 'userId' });
    // A page size is plain digits: not hex, padded or exponent forms that Number() would take.
    for (const limit of ['0x10', ' 5', '1e1', '5.0', '-1']) {
      expect({
        limit,
        body: (await call('GET /v1/me/transactions', { auth: user, query: { limit } })).body,
      }).toMatchObject({
        limit,
        body: { status: 400, field: 'limit', detail: expect.stringContaining('whole number from 1 to 100') },
      });
    }
    expect(
      (
        await call('GET /v1/me/transactions', {
          auth: user,
          query: { from: '2026-12-02T00:00:00Z', to: '2026-12-01T00:00:00Z' },
        })
      ).body,
    ).toMatchObject({ status: 400, field: 'from', detail: expect.stringContaining('must be before to') });
  });

  it("security: a cursor from another user's page never shows that user's entries", async () => {
    const { account: victim } = await givenFundedAccount(db, 10);
    const victimPage = await call('GET /v1/me/transactions', {
      auth: { user: victim.external_user_id! },
      query: { limit: '1' },
    });
    const victimEntry = (victimPage.body.data as Array<{ id: number }>)[0]!.id;
    const attacker = await givenAccount(db);
    const cursor = `e1.${Buffer.from(String(victimEntry + 1)).toString('base64url')}`;
    const page = await call('GET /v1/me/transactions', {
      auth: { user: attacker.external_user_id! },
      query: { cursor },
    });
    expect(page.body.data).toEqual([]);
  });
});

describe('GET /v1/me/payments', () => {
  it('happy: lists only the caller’s purchases', async () => {
    const { account } = await givenFundedAccount(db, 5);
    await givenFundedAccount(db, 6);
    const response = await call('GET /v1/me/payments', { auth: { user: account.external_user_id! } });
    expect(response.body.data).toMatchObject([{ credits: 5, status: 'CREDITED' }]);
  });
});

describe('GET /v1/me/payments: pages', () => {
  it('happy: pages every purchase exactly once, newest first, past 100', async () => {
    const account = await givenAccount(db);
    const created = await Promise.all(Array.from({ length: 105 }, () => givenPayment(db, account)));
    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await call('GET /v1/me/payments', {
        auth: { user: account.external_user_id! },
        query: { limit: '40', ...(cursor && { cursor }) },
      });
      expect(page.status).toBe(200);
      seen.push(...(page.body.data as Array<{ id: string }>).map((p) => p.id));
      cursor = (page.body.nextCursor as string | null) ?? undefined;
    } while (cursor);
    expect(seen).toHaveLength(105);
    expect(new Set(seen)).toEqual(new Set(created.map((p) => p.id)));
    await expectInvariantsHold(db);
  });

  it('error: refuses unknown query fields, a forged cursor and an out-of-range limit', async () => {
    const auth = { user: 'payments-pager' };
    const queries: Record<string, string>[] = [
      { status: 'PAID' },
      { cursor: 'p1.bm9wZQ' },
      { limit: '101' },
      { limit: '0' },
    ];
    for (const query of queries) {
      const response = await call('GET /v1/me/payments', { auth, query });
      expect({ query, status: response.status, code: response.body.code }).toEqual({
        query,
        status: 400,
        code: 'validation_error',
      });
    }
  });
});

describe('public routes and CORS', () => {
  it('happy: lists packages and reports health without authentication', async () => {
    expect((await call('GET /v1/packages')).body.data).toHaveLength(3);
    expect((await call('GET /health')).body).toEqual({ status: 'ok' });
  });

  it('answers the preflight for the configured origin and refuses others', async () => {
    const preflight = await call('OPTIONS /v1/{proxy+}', {
      params: { proxy: 'me/credits' },
      headers: { origin: FRONTEND, 'access-control-request-method': 'GET' },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers).toMatchObject({
      'access-control-allow-origin': FRONTEND,
      'access-control-allow-headers': 'authorization, content-type, idempotency-key',
    });
    const evil = await call('OPTIONS /v1/{proxy+}', {
      params: { proxy: 'me/credits' },
      headers: { origin: 'https://evil.example' },
    });
    expect(evil.status).toBe(403);
    expect(evil.headers['access-control-allow-origin']).toBeUndefined();
    const simple = await call('GET /v1/me/credits', {
      auth: { user: 'cors-user' },
      headers: { origin: FRONTEND },
    });
    expect(simple.headers['access-control-allow-origin']).toBe(FRONTEND);
    const refused = await call('GET /v1/me/credits', {
      auth: { user: 'cors-user' },
      headers: { origin: 'https://evil.example' },
    });
    expect(refused).toMatchObject({ status: 403, body: { code: 'cors_origin_refused' } });
  });

  it('security: a user token on service and admin routes is refused', async () => {
    const { account } = await givenFundedAccount(db, 10);
    const user = { user: account.external_user_id! };
    const spend = await call('POST /v1/accounts/{userId}/spend', {
      auth: user,
      params: { userId: account.external_user_id! },
      headers: { 'idempotency-key': 'k' },
      body: { amount: 1 },
    });
    expect(spend).toMatchObject({ status: 403, body: { code: 'forbidden' } });
    const adjust = await call('POST /v1/admin/accounts/{userId}/adjustments', {
      auth: user,
      params: { userId: account.external_user_id! },
      body: { amount: 1000, reason: 'self-service' },
    });
    expect(adjust.status).toBe(403);
    expect((await call('GET /v1/admin/invariants', { auth: user })).status).toBe(403);
    expect((await call('GET /v1/admin/invariants')).status).toBe(401);
    expect((await call('GET /v1/admin/invariants', { auth: { iam: ADMIN_ARN } })).body).toMatchObject({
      ok: true,
    });
    await inAccountTransaction(db, account.id, (trx, locked) =>
      adjustCredits(trx, locked, { amount: 1, reason: 'x', actorArn: ADMIN_ARN }),
    );
    expect(
      (
        await db
          .selectFrom('accounts')
          .select('balance')
          .where('id', '=', account.id)
          .executeTakeFirstOrThrow()
      ).balance,
    ).toBe(11);
  });
});
