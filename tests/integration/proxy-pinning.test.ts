import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { activatePriceBook, createPriceBookDraft } from '../../shared/pricing/price-book.js';
import { ADMIN_ARN, SERVICE_ARN, testApi } from '../support/api.js';
import { createTestDatabase } from '../support/database.js';
import { givenFundedAccount } from '../support/factories.js';

// RDS Proxy reuses a database connection after each transaction unless the session changed state a later
// transaction could depend on; then it pins the client to that connection. One connection (a pool of 1)
// serves every debit path here, then the session is searched for each kind of state that pins.
const { db } = await createTestDatabase({ max: 1 });

describe('the debit paths and RDS Proxy', () => {
  it('leave no session state behind that would pin a proxied connection', async () => {
    const { call } = testApi(db);
    const { account } = await givenFundedAccount(db, 1_000);
    const userId = account.external_user_id!;
    await createPriceBookDraft(
      db,
      {
        version: 'pin-v1',
        items: [{ sku: 'acme/pin', kind: 'tokens', rates: { input: '1000000', output: '0' } }],
      },
      { actorArn: ADMIN_ARN, reason: 'test' },
    );
    await activatePriceBook(
      db,
      'pin-v1',
      { actorArn: ADMIN_ARN, reason: 'test' },
      new Date(Date.now() - 60_000),
    );
    const service = { iam: SERVICE_ARN };
    const expectStatus = async (
      response: Promise<{ status: number; body: Record<string, unknown> }>,
      status: number,
    ) => {
      const answered = await response;
      expect(answered.status, JSON.stringify(answered.body)).toBe(status);
      return answered.body;
    };

    await expectStatus(
      call('POST /v1/accounts/{userId}/spend', {
        auth: service,
        params: { userId },
        headers: { 'idempotency-key': 'pin-spend' },
        body: { amount: 3 },
      }),
      200,
    );
    const hold = await expectStatus(
      call('POST /v1/accounts/{userId}/holds', {
        auth: service,
        params: { userId },
        headers: { 'idempotency-key': 'pin-hold' },
        body: { sku: 'acme/pin', usage: { inputTokens: 10, outputTokens: 0 } },
      }),
      201,
    );
    await expectStatus(
      call('POST /v1/holds/{holdId}/capture', {
        auth: service,
        params: { holdId: String(hold.holdId) },
        body: { usage: { inputTokens: 7, outputTokens: 0 } },
      }),
      200,
    );
    const usage = await expectStatus(
      call('POST /v1/usage', {
        auth: service,
        body: {
          events: [
            { eventId: 'pin-usage', userId, sku: 'acme/pin', usage: { inputTokens: 5, outputTokens: 0 } },
          ],
        },
      }),
      200,
    );
    expect(usage.results).toMatchObject([{ status: 'applied' }]);

    // The same connection (the pool has one): what its session holds now.
    const { rows } = await sql<Record<string, unknown>>`
      SELECT (SELECT count(*)::int FROM pg_prepared_statements) AS prepared_statements,
             (SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())
               AS advisory_locks,
             (SELECT count(*)::int FROM pg_listening_channels()) AS listening,
             (SELECT count(*)::int FROM pg_cursors WHERE is_holdable) AS holdable_cursors,
             pg_my_temp_schema() <> 0 AS temp_schema,
             (SELECT coalesce(array_agg(name ORDER BY name), '{}') FROM pg_settings WHERE source = 'session')
               AS session_settings`.execute(db);
    expect(rows[0]).toEqual({
      prepared_statements: 0,
      advisory_locks: 0,
      listening: 0,
      holdable_cursors: 0,
      temp_schema: false,
      session_settings: [],
    });
  });
});
