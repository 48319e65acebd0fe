import { type Kysely, sql } from 'kysely';

/**
 * Ledger entries by the Stripe event that wrote them: the worker reads them back per event, and without an
 * index that read scans the whole ledger, growing with it. Frozen in time: never import application code here.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE INDEX ledger_entries_stripe_event_idx ON ledger_entries (stripe_event_id)
      WHERE stripe_event_id IS NOT NULL
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX ledger_entries_stripe_event_idx`.execute(db);
}
