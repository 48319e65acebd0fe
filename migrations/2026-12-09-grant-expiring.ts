import { type Kysely, sql } from 'kysely';

/**
 * When the app was told a grant is about to expire (`grant.expiring`, 3 days ahead): once per grant.
 * Frozen in time: never import application code here.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE credit_grants ADD COLUMN expiring_notified_at timestamptz;
    CREATE INDEX credit_grants_expiring_idx ON credit_grants (expires_at)
      WHERE expiring_notified_at IS NULL AND remaining > 0 AND expires_at IS NOT NULL;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP INDEX credit_grants_expiring_idx;
    ALTER TABLE credit_grants DROP COLUMN expiring_notified_at;
  `.execute(db);
}
