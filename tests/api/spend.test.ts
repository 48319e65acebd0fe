import { describe, expect, it } from 'vitest';
import { ADMIN_ARN, SERVICE_ARN, testApi } from '../support/api.js';
import { createTestDatabase } from '../support/database.js';
import { givenFundedAccount, reloadAccount } from '../support/factories.js';
import { expectInvariantsHold } from '../support/invariants.js';

const { db } = await createTestDatabase({ max: 30 });
const { call } = testApi(db);
const service = { iam: SERVICE_ARN };

async function entryCount(accountId: string) {
  const row = await db
    .selectFrom('ledger_entries')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .where('account_id', '=', accountId)
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

const spend = (
  userId: string,
  body: unknown,
  key = 'job-1',
  extra: { rawBody?: string; bytes?: Buffer } = {},
) =>
  call('POST /v1/accounts/{userId}/spend', {
    auth: service,
    params: { userId },
    headers: { 'idempotency-key': key },
    body,
    ...extra,
  });

describe('POST /v1/accounts/{userId}/spend: happy', () => {
  it('spends, replays the first answer for the same key and body, and answers 409 for another body', async () => {
    const { account } = await givenFundedAccount(db, 100);
    const userId = account.external_user_id!;
    const first = await spend(userId, {
      amount: 30,
      description: 'image generation',
      metadata: { model: 'x1', tokens: 512 },
    });
    expect(first).toMatchObject({ status: 200, body: { amount: 30, balance: 70, replayed: false } });
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    const replay = await spend(userId, {
      metadata: { tokens: 512, model: 'x1' },
      description: 'image generation',
      amount: 30,
    });
    expect(replay.status).toBe(200);
    expect(replay.body).toEqual({ ...first.body, replayed: true });
    expect(replay.headers['idempotent-replayed']).toBe('true');
    const conflict = await spend(userId, { amount: 31 });
    expect(conflict).toMatchObject({ status: 409, body: { code: 'idempotency_conflict' } });
    expect((await reloadAccount(db, account.id)).balance).toBe(70);
  });

  it('answers 402 with the current balance and writes nothing', async () => {
    const { account } = await givenFundedAccount(db, 10);
    const response = await spend(account.external_user_id!, { amount: 11 });
    expect(response).toMatchObject({
      status: 402,
      body: { code: 'insufficient_credits', balance: 10, requested: 11 },
    });
    expect(await entryCount(account.id)).toBe(1);
  });

  it('gives 50 concurrent requests with one key one spend and 49 replays', async () => {
    const { account } = await givenFundedAccount(db, 100);
    const responses = await Promise.all(
      Array.from({ length: 50 }, () => spend(account.external_user_id!, { amount: 7 }, 'same-key')),
    );
    expect(responses.every((r) => r.status === 200)).toBe(true);
    expect(new Set(responses.map((r) => r.body.entryId)).size).toBe(1);
    expect(responses.filter((r) => r.body.replayed === false)).toHaveLength(1);
    expect((await reloadAccount(db, account.id)).balance).toBe(93);
    await expectInvariantsHold(db);
  });

  it('stores SQL-looking and Unicode text exactly, and never executes it', async () => {
    const { account } = await givenFundedAccount(db, 100);
    const description = "'); DROP TABLE ledger_entries; -- 😀 naïve 中文 \u202e";
    const metadata = { "key'; DELETE FROM accounts; --": 'value $1 %s \\x00', emoji: '🚀' };
    const response = await spend(account.external_user_id!, { amount: 1, description, metadata }, 'unicode');
    expect(response.status).toBe(200);
    const history = await call('GET /v1/me/transactions', {
      auth: { user: account.external_user_id! },
      query: { limit: '1' },
    });
    expect((history.body.data as Array<Record<string, unknown>>)[0]).toMatchObject({ description, metadata });
    expect(await entryCount(account.id)).toBe(2);
  });
});

describe('POST /v1/accounts/{userId}/spend: error', () => {
  const bad: Array<[string, string, string]> = [
    ['"1e309" (a string)', '{"amount": "1e309"}', 'amount'],
    ['1e309 (a number that overflows)', '{"amount": 1e309}', 'amount'],
    ['0.1', '{"amount": 0.1}', 'amount'],
    ['"NaN"', '{"amount": "NaN"}', 'amount'],
    ['-5', '{"amount": -5}', 'amount'],
    ['0', '{"amount": 0}', 'amount'],
    ['9007199254740992', '{"amount": 9007199254740992}', 'amount'],
    ['an extra balance field', '{"amount": 1, "balance": 1000000}', 'balance'],
    ['an extra userId field', '{"amount": 1, "userId": "someone-else"}', 'userId'],
    ['a 100 KB description', JSON.stringify({ amount: 1, description: 'x'.repeat(100_000) }), 'description'],
    ['a NUL in the description', JSON.stringify({ amount: 1, description: 'a\u0000b' }), 'description'],
    ['a lone surrogate in metadata', '{"amount": 1, "metadata": {"k": "\\ud800"}}', 'metadata.k'],
    [
      '21 metadata keys',
      JSON.stringify({
        amount: 1,
        metadata: Object.fromEntries(Array.from({ length: 21 }, (_, i) => [`k${i}`, i])),
      }),
      'metadata',
    ],
  ];

  it.each(bad)('answers 400 naming the field for %s, writing nothing', async (_name, rawBody, field) => {
    const { account } = await givenFundedAccount(db, 100);
    const response = await spend(account.external_user_id!, undefined, 'bad', { rawBody });
    expect(response.status).toBe(400);
    expect(response.body).toMatchObject({ code: 'validation_error', field });
    expect(await entryCount(account.id)).toBe(1);
    expect((await reloadAccount(db, account.id)).balance).toBe(100);
  });

  it('requires an Idempotency-Key of visible ASCII', async () => {
    const { account } = await givenFundedAccount(db, 100);
    const missing = await call('POST /v1/accounts/{userId}/spend', {
      auth: service,
      params: { userId: account.external_user_id! },
      body: { amount: 1 },
    });
    expect(missing.body).toMatchObject({ status: 400, field: 'Idempotency-Key' });
    expect((await spend(account.external_user_id!, { amount: 1 }, 'k'.repeat(256))).body).toMatchObject({
      field: 'Idempotency-Key',
    });
    expect(await entryCount(account.id)).toBe(1);
  });

  it('answers 404 for an unknown user and creates no account', async () => {
    const response = await spend('nobody-here', { amount: 1 });
    expect(response).toMatchObject({ status: 404, body: { code: 'account_not_found' } });
    expect(
      await db.selectFrom('accounts').select('id').where('external_user_id', '=', 'nobody-here').execute(),
    ).toEqual([]);
  });

  it('rejects malformed JSON, a non-JSON content type and an oversized body', async () => {
    const { account } = await givenFundedAccount(db, 100);
    expect(
      (await spend(account.external_user_id!, undefined, 'k', { rawBody: '{"amount": 1' })).body,
    ).toMatchObject({ code: 'malformed_json' });
    for (const contentType of ['text/plain', 'application/json-patch+json']) {
      const refused = await call('POST /v1/accounts/{userId}/spend', {
        auth: service,
        params: { userId: account.external_user_id! },
        headers: { 'idempotency-key': 'k', 'content-type': contentType },
        rawBody: '{"amount": 1}',
      });
      expect({ contentType, status: refused.status }).toEqual({ contentType, status: 415 });
    }
    for (const rawBody of ['', '   \n']) {
      expect((await spend(account.external_user_id!, undefined, 'k', { rawBody })).body).toMatchObject({
        code: 'empty_body',
        detail: 'the body is empty; this route takes a JSON body',
      });
    }
    expect(
      (await spend(account.external_user_id!, undefined, 'k', { rawBody: '\ufeff{"amount": 1}' })).body,
    ).toMatchObject({ code: 'malformed_json', detail: expect.stringContaining('byte order mark') });
    // JSON.parse keeps a "__proto__" key, which copying would drop: refused, not silently stored as {}.
    expect(
      (
        await spend(account.external_user_id!, undefined, 'k', {
          rawBody: '{"amount": 1, "metadata": {"__proto__": "x", "a": "b"}}',
        })
      ).body,
    ).toMatchObject({ status: 400, field: 'body', detail: 'body: must not use the key __proto__' });
    expect(
      (
        await spend(account.external_user_id!, undefined, 'k', {
          rawBody: '{"amount": 1, "metadata": {"\\u005f_proto__": "x"}}',
        })
      ).body,
    ).toMatchObject({ status: 400, field: 'body' });
    // No body and no content type: the body is missing, not of the wrong type.
    const bare = await call('POST /v1/accounts/{userId}/spend', {
      auth: service,
      params: { userId: account.external_user_id! },
      headers: { 'idempotency-key': 'k' },
    });
    expect(bare.body).toMatchObject({ status: 400, code: 'empty_body' });
    expect(await entryCount(account.id)).toBe(1);
    expect(
      (
        await spend(account.external_user_id!, undefined, 'k', {
          rawBody: `{"amount": 1, "description": "${'x'.repeat(300_000)}"}`,
        })
      ).status,
    ).toBe(413);
  });
});

describe('POST /v1/accounts/{userId}/spend: text edges', () => {
  // Bodies that are not UTF-8 were decoded lossily (to U+FFFD), so two different bodies could replay as one
  // idempotent request. Each is refused before it is hashed or parsed, and nothing is written.
  it.each([
    ['a lone 0xff', Buffer.from([0xff])],
    ['an overlong slash', Buffer.from([0xc0, 0xaf])],
    ['a surrogate encoded as WTF-8', Buffer.from([0xed, 0xa0, 0x80])],
    ['a truncated sequence', Buffer.from([0xe0, 0xa4])],
  ])('refuses a body with %s (400 invalid_encoding)', async (_case, bad) => {
    const { account } = await givenFundedAccount(db, 100);
    const bytes = Buffer.concat([Buffer.from('{"amount": 1, "description": "a'), bad, Buffer.from('"}')]);
    const response = await spend(account.external_user_id!, undefined, 'utf8-key', { bytes });
    expect(response).toMatchObject({ status: 400, body: { code: 'invalid_encoding' } });
    const valid = await spend(account.external_user_id!, { amount: 1, description: 'a\ufffd' }, 'utf8-key');
    expect(valid).toMatchObject({ status: 200, body: { replayed: false, balance: 99 } });
    await expectInvariantsHold(db);
  });

  it('carries the request id in every problem', async () => {
    const response = await spend('nobody-at-all', { amount: 1 });
    expect(response.status).toBe(404);
    expect(response.body.requestId).toEqual(expect.any(String));
    expect(response.body.detail).toContain('nobody-at-all');
  });
});

describe('POST /v1/accounts/{userId}/spend: security', () => {
  it('refuses a request without authorizer context', async () => {
    const { account } = await givenFundedAccount(db, 100);
    const response = await call('POST /v1/accounts/{userId}/spend', {
      params: { userId: account.external_user_id! },
      headers: { 'idempotency-key': 'k' },
      body: { amount: 1 },
    });
    expect(response.status).toBe(401);
    expect(await entryCount(account.id)).toBe(1);
  });

  it('refuses spending on a frozen account', async () => {
    const { account } = await givenFundedAccount(db, 100);
    await call('POST /v1/admin/accounts/{userId}/freeze', {
      auth: { iam: ADMIN_ARN },
      params: { userId: account.external_user_id! },
      body: { reason: 'fraud review' },
    });
    expect((await spend(account.external_user_id!, { amount: 1 })).body).toMatchObject({
      status: 403,
      code: 'account_frozen',
    });
  });
});
