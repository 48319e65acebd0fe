import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { APP_ROLE } from '../../local/postgres.js';
import { inAccountTransaction } from '../../shared/accounts/accounts.js';
import { anonymizeAccount } from '../../shared/ledger/erasure.js';
import { spendCredits } from '../../shared/ledger/ledger.js';
import { createTestDatabase } from '../support/database.js';
import { ADMIN_ARN, givenFundedAccount } from '../support/factories.js';
import { expectInvariantsHold } from '../support/invariants.js';

const { db, owner } = await createTestDatabase({ max: 4 });

/**
 * What the application role may do to each table and sequence of the schema. A table missing here (a new
 * migration that forgot its grants, or granted more than it should) fails the first test.
 */
const EXPECTED_TABLE_PRIVILEGES: Record<string, string[]> = {
  accounts: ['INSERT', 'SELECT', 'UPDATE'],
  admin_actions: ['INSERT', 'SELECT'],
  coupon_failures: ['INSERT', 'SELECT'],
  coupon_redemptions: ['INSERT', 'SELECT'],
  coupons: ['INSERT', 'SELECT', 'UPDATE'],
  credit_grants: ['INSERT', 'SELECT', 'UPDATE'],
  grant_allocations: ['INSERT', 'SELECT'],
  grant_approvals: ['INSERT', 'SELECT', 'UPDATE'],
  holds: ['INSERT', 'SELECT', 'UPDATE'],
  kysely_migration: [],
  kysely_migration_lock: [],
  ledger_entries: ['INSERT', 'SELECT'],
  payments: ['INSERT', 'SELECT', 'UPDATE'],
  price_books: ['INSERT', 'SELECT', 'UPDATE'],
  price_items: ['INSERT', 'SELECT'],
  processed_events: ['INSERT', 'SELECT', 'UPDATE'],
  reconciliation_findings: ['INSERT', 'SELECT'],
  reconciliation_runs: ['INSERT', 'SELECT', 'UPDATE'],
  stripe_charge_facts: ['INSERT', 'SELECT', 'UPDATE'],
  usage_events: ['INSERT', 'SELECT'],
  usage_rollups: ['INSERT', 'SELECT', 'UPDATE'],
  account_plans: ['INSERT', 'SELECT', 'UPDATE'],
  debit_days: ['INSERT', 'SELECT', 'UPDATE'],
  webhook_attempts: ['DELETE', 'INSERT', 'SELECT'],
  webhook_deliveries: ['DELETE', 'INSERT', 'SELECT', 'UPDATE'],
  webhook_endpoints: ['INSERT', 'SELECT', 'UPDATE'],
  webhook_outbox: ['DELETE', 'INSERT', 'SELECT', 'UPDATE'],
  auto_topup_settings: ['INSERT', 'SELECT', 'UPDATE'],
};
const EXPECTED_SEQUENCE_PRIVILEGES: Record<string, string[]> = {
  coupon_failures_id_seq: ['USAGE'],
  ledger_entries_id_seq: ['USAGE'],
  reconciliation_findings_id_seq: ['USAGE'],
  webhook_attempts_id_seq: ['USAGE'],
};

async function privileges(kind: 'table' | 'sequence') {
  const candidates =
    kind === 'table'
      ? ['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']
      : ['USAGE', 'SELECT', 'UPDATE'];
  const { rows } = await sql<{ name: string; privilege: string | null }>`
    SELECT c.relname AS name, p.privilege
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
    LEFT JOIN unnest(${candidates}::text[]) AS p(privilege) ON ${
      kind === 'table'
        ? sql`has_table_privilege(${APP_ROLE}, c.oid, p.privilege)`
        : sql`has_sequence_privilege(${APP_ROLE}, c.oid, p.privilege)`
    }
    WHERE c.relkind = ANY(${kind === 'table' ? ['r', 'p', 'v', 'm', 'f'] : ['S']}::"char"[])
  `.execute(owner());
  const found: Record<string, string[]> = {};
  for (const { name, privilege } of rows) {
    found[name] ??= [];
    if (privilege) found[name].push(privilege);
  }
  for (const list of Object.values(found)) list.sort();
  return found;
}

/** Runs `statement` as the application role and returns the error it fails with. */
async function refusal(statement: ReturnType<typeof sql>) {
  const error = await statement.execute(db).then(
    () => undefined,
    (e: unknown) => e as { message: string },
  );
  expect(error, 'the application role was allowed').toBeDefined();
  return error!.message;
}

describe('the application role', () => {
  it('has exactly the expected privileges on every table and sequence of the schema, and no column grants', async () => {
    expect(await privileges('table')).toEqual(EXPECTED_TABLE_PRIVILEGES);
    expect(await privileges('sequence')).toEqual(EXPECTED_SEQUENCE_PRIVILEGES);
    const { rows: columnGrants } = await sql<{ table: string; column: string }>`
      SELECT c.relname AS table, a.attname AS column
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
      CROSS JOIN LATERAL aclexplode(a.attacl) acl
      WHERE acl.grantee = (SELECT oid FROM pg_roles WHERE rolname = ${APP_ROLE})
    `.execute(owner());
    expect(columnGrants).toEqual([]);
  });

  it('is no superuser, owns nothing, may create nothing, and is the only one who may run the erasure function', async () => {
    const { rows: roles } = await sql<Record<string, boolean>>`
      SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls FROM pg_roles
      WHERE rolname = ${APP_ROLE}`.execute(db);
    expect(roles).toEqual([
      {
        rolsuper: false,
        rolcreatedb: false,
        rolcreaterole: false,
        rolreplication: false,
        rolbypassrls: false,
      },
    ]);
    const { rows: owned } = await sql<{ n: number }>`
      SELECT (SELECT count(*) FROM pg_class WHERE relowner = r.oid)
        + (SELECT count(*) FROM pg_proc WHERE proowner = r.oid)
        + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid)
        + (SELECT count(*) FROM pg_type WHERE typowner = r.oid)
        + (SELECT count(*) FROM pg_database WHERE datdba = r.oid) AS n
      FROM pg_roles r WHERE r.rolname = ${APP_ROLE}`.execute(db);
    expect(owned).toEqual([{ n: 0 }]);
    const { rows: rights } = await sql<Record<string, boolean>>`
      SELECT has_schema_privilege(${APP_ROLE}, 'public', 'CREATE') AS create_in_schema,
        has_function_privilege(${APP_ROLE}, 'anonymize_ledger_entries(uuid)', 'EXECUTE') AS app_erases,
        has_function_privilege('public', 'anonymize_ledger_entries(uuid)', 'EXECUTE') AS public_erases,
        p.prosecdef AS security_definer, p.proconfig AS config
      FROM pg_proc p WHERE p.proname = 'anonymize_ledger_entries'`.execute(db);
    expect(rights).toEqual([
      {
        create_in_schema: false,
        app_erases: true,
        public_erases: false,
        security_definer: true,
        config: ['search_path=pg_catalog, pg_temp'],
      },
    ]);
  });

  it('may neither UPDATE, DELETE nor TRUNCATE a ledger entry, nor disable or drop its trigger, nor alter or create tables', async () => {
    const { account } = await givenFundedAccount(db, 10);
    expect(
      await refusal(sql`UPDATE ledger_entries SET amount = 1000000 WHERE account_id = ${account.id}`),
    ).toMatch(/permission denied for table ledger_entries/);
    expect(
      await refusal(sql`UPDATE ledger_entries SET description = NULL WHERE account_id = ${account.id}`),
    ).toMatch(/permission denied for table ledger_entries/);
    expect(await refusal(sql`DELETE FROM ledger_entries WHERE account_id = ${account.id}`)).toMatch(
      /permission denied for table ledger_entries/,
    );
    expect(await refusal(sql`TRUNCATE ledger_entries CASCADE`)).toMatch(/permission denied for table/);
    expect(await refusal(sql`ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only`)).toMatch(
      /must be owner of table ledger_entries/,
    );
    expect(await refusal(sql`DROP TRIGGER ledger_entries_append_only ON ledger_entries`)).toMatch(
      /must be owner of (table|relation) ledger_entries/,
    );
    expect(await refusal(sql`ALTER TABLE accounts ADD COLUMN note text`)).toMatch(
      /must be owner of table accounts/,
    );
    expect(await refusal(sql`CREATE TABLE shadow (id int)`)).toMatch(/permission denied for schema public/);
    expect(await refusal(sql`DROP TABLE ledger_entries`)).toMatch(/must be owner of table ledger_entries/);
    expect(
      await refusal(
        sql`CREATE FUNCTION anonymize_ledger_entries(uuid) RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint'`,
      ),
    ).toMatch(/permission denied for schema public/);
    const { rows } = await sql<{ amount: number; enabled: string }>`
      SELECT e.amount, t.tgenabled AS enabled FROM ledger_entries e, pg_trigger t
      WHERE e.account_id = ${account.id} AND t.tgname = 'ledger_entries_append_only'`.execute(db);
    expect(rows).toEqual([{ amount: 10, enabled: 'O' }]);
    await expectInvariantsHold(db);
  });

  it('still anonymises through the erasure function, which refuses an account without an anonymize audit row', async () => {
    const { account: other } = await givenFundedAccount(db, 20);
    await inAccountTransaction(db, other.id, (trx, locked) =>
      spendCredits(trx, locked, {
        amount: 1,
        idempotencyKey: 'roles-report',
        description: 'report for Jane Doe',
        metadata: { email: 'jane@example.com' },
      }),
    );
    await expect(sql`SELECT anonymize_ledger_entries(${other.id}::uuid)`.execute(db)).rejects.toThrow(
      /has no anonymize audit row/,
    );
    await inAccountTransaction(db, other.id, (trx, locked) =>
      anonymizeAccount(trx, locked, { actorArn: ADMIN_ARN, reason: 'GDPR request 7' }),
    );
    const entries = await db
      .selectFrom('ledger_entries')
      .select(['amount', 'balance_after', 'description', 'metadata'])
      .where('account_id', '=', other.id)
      .orderBy('id')
      .execute();
    expect(entries).toEqual([
      { amount: 20, balance_after: 20, description: null, metadata: null },
      { amount: -1, balance_after: 19, description: null, metadata: null },
    ]);
    await expectInvariantsHold(db);
  });
});
