import { type Kysely, sql } from 'kysely';

/**
 * The application role `credits_app`, which every function connects as; migrations keep running as the owner.
 * It may read and write what the service writes, and no more: no UPDATE, DELETE or TRUNCATE of ledger
 * entries, no DDL (it owns nothing and may not create in the schema), not a superuser. GDPR erasure of the
 * entries' free text goes through `anonymize_ledger_entries`, owned by the owner, which only this role may run.
 *
 * Grants are explicit per table and sequence: a table added later has none until its migration grants them
 * (tests/integration/database-roles.test.ts compares every table with an expected map).
 * Frozen in time: never import application code here.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    -- Roles belong to the server, not to one database: create it once (the local stack and the test harness
    -- create it beforehand with a password); in RDS it signs in with IAM tokens (rds_iam) through the proxy.
    DO $$
    BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'credits_app') THEN
        CREATE ROLE credits_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
      END IF;
      IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_iam') THEN
        GRANT rds_iam TO credits_app;
      END IF;
    END $$;

    -- No one but the owner creates objects here (PostgreSQL 15 and later already refuse PUBLIC).
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    GRANT USAGE ON SCHEMA public TO credits_app;

    GRANT SELECT, INSERT, UPDATE ON accounts TO credits_app;
    GRANT SELECT, INSERT, UPDATE ON payments TO credits_app;
    GRANT SELECT, INSERT ON admin_actions TO credits_app;
    GRANT SELECT, INSERT ON ledger_entries TO credits_app;
    GRANT USAGE ON SEQUENCE ledger_entries_id_seq TO credits_app;
    GRANT SELECT, INSERT, UPDATE ON stripe_charge_facts TO credits_app;
    GRANT SELECT, INSERT, UPDATE ON processed_events TO credits_app;
    GRANT SELECT, INSERT, UPDATE ON reconciliation_runs TO credits_app;
    GRANT SELECT, INSERT ON reconciliation_findings TO credits_app;
    GRANT USAGE ON SEQUENCE reconciliation_findings_id_seq TO credits_app;

    -- GDPR erasure: the only UPDATE of ledger entries (the append-only trigger lets exactly this one through),
    -- and only for an account whose anonymisation is audited (its admin_actions row, written first in the
    -- same transaction). SECURITY DEFINER runs it as the owner, so search_path is pinned: no object the
    -- caller could create may shadow the ones it names.
    CREATE FUNCTION anonymize_ledger_entries(target_account uuid) RETURNS bigint
      LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DECLARE
      erased bigint;
    BEGIN
      IF NOT EXISTS (
        SELECT FROM public.admin_actions WHERE account_id = target_account AND action = 'anonymize'
      ) THEN
        RAISE EXCEPTION 'account % has no anonymize audit row', target_account USING ERRCODE = 'P0003';
      END IF;
      UPDATE public.ledger_entries SET description = NULL, metadata = NULL
        WHERE account_id = target_account AND (description IS NOT NULL OR metadata IS NOT NULL);
      GET DIAGNOSTICS erased = ROW_COUNT;
      RETURN erased;
    END $$;
    REVOKE ALL ON FUNCTION anonymize_ledger_entries(uuid) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION anonymize_ledger_entries(uuid) TO credits_app;
  `.execute(db);
}

/** Takes back what `up` granted. The role itself stays: it belongs to the server, which other databases share. */
export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP FUNCTION anonymize_ledger_entries(uuid);
    REVOKE ALL ON accounts, payments, admin_actions, ledger_entries, stripe_charge_facts, processed_events,
      reconciliation_runs, reconciliation_findings FROM credits_app;
    REVOKE ALL ON SEQUENCE ledger_entries_id_seq, reconciliation_findings_id_seq FROM credits_app;
    REVOKE USAGE ON SCHEMA public FROM credits_app;
  `.execute(db);
}
