import { randomBytes } from 'node:crypto';
import { Migrator, sql } from 'kysely';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createDatabase, dropDatabase, withAppRole } from '../../local/postgres.js';
import { migrationProvider } from '../../migrations/index.js';
import { inAccountTransaction } from '../../shared/accounts/accounts.js';
import { createDb } from '../../shared/db/client.js';
import { migrateToLatest } from '../../shared/db/migrate.js';
import { spendCredits } from '../../shared/ledger/ledger.js';
import { expectInvariantsHold } from '../support/invariants.js';

/** A database of its own, migrated by the test (not from the template), dropped after the file. */
const serverUrl = inject('postgresServerUrl');
const name = `credits_migrations_${randomBytes(6).toString('hex')}`;
const ownerUrl = await createDatabase(serverUrl, name);
const owner = createDb(ownerUrl, { max: 1, applicationName: 'credits-test-owner' });
afterAll(async () => {
  await owner.destroy();
  await dropDatabase(serverUrl, name);
});

describe('the credit-grants migration on a ledger with history', () => {
  it('turns each positive balance into one paid, never-expiring grant, keeps debt as debt, and every invariant holds', async () => {
    const migrator = new Migrator({ db: owner, provider: migrationProvider });
    const before = await migrator.migrateTo('2026-12-01-drop-ledger-event-index');
    expect(before.error).toBeUndefined();
    // History written before grants existed: a purchase partly spent, and a clawback of spent credits.
    await sql`
      INSERT INTO accounts (id, external_user_id, balance, version) VALUES
        ('00000000-0000-4000-8000-000000000001', 'has-credits', 60, 2),
        ('00000000-0000-4000-8000-000000000002', 'in-debt', -30, 3);
      INSERT INTO payments (id, account_id, package_id, credits, amount_total, currency, status) VALUES
        ('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-000000000001', 'pack_small', 100, 500, 'usd', 'CREDITED'),
        ('00000000-0000-4000-8000-0000000000a2', '00000000-0000-4000-8000-000000000002', 'pack_small', 100, 500, 'usd', 'CREDITED');
      INSERT INTO ledger_entries (account_id, amount, balance_after, kind, reference, payment_id, request_hash) VALUES
        ('00000000-0000-4000-8000-000000000001', 100, 100, 'purchase', 'cs_1', '00000000-0000-4000-8000-0000000000a1', NULL),
        ('00000000-0000-4000-8000-000000000001', -40, 60, 'spend', 'job-1', NULL, 'h'),
        ('00000000-0000-4000-8000-000000000002', 100, 100, 'purchase', 'cs_2', '00000000-0000-4000-8000-0000000000a2', NULL),
        ('00000000-0000-4000-8000-000000000002', -30, 70, 'spend', 'job-2', NULL, 'h'),
        ('00000000-0000-4000-8000-000000000002', -100, -30, 'refund_clawback', 're_2', '00000000-0000-4000-8000-0000000000a2', NULL);
    `.execute(owner);
    await migrateToLatest(owner);

    const grants = await owner
      .selectFrom('credit_grants')
      .select(['account_id', 'category', 'source', 'amount', 'remaining', 'expires_at'])
      .execute();
    expect(grants).toEqual([
      {
        account_id: '00000000-0000-4000-8000-000000000001',
        category: 'paid',
        source: 'opening_balance',
        amount: 60,
        remaining: 60,
        expires_at: null,
      },
    ]);
    const app = createDb(withAppRole(ownerUrl), { max: 2, applicationName: 'credits-test' });
    try {
      await expectInvariantsHold(app);
      // Spending after the migration draws on the opening grant like any other.
      await inAccountTransaction(app, '00000000-0000-4000-8000-000000000001', (trx, locked) =>
        spendCredits(trx, locked, { amount: 25, idempotencyKey: 'after-migration' }),
      );
      const [grant] = await app.selectFrom('credit_grants').select('remaining').execute();
      expect(grant?.remaining).toBe(35);
      await expectInvariantsHold(app);
    } finally {
      await app.destroy();
    }
  });
});
