import { type Kysely, sql } from 'kysely';

/**
 * The index on ledger entries by Stripe event served only the worker's read-back of the entries it had just
 * written, which is gone: it cost every insert and answered no query. Frozen in time: never import
 * application code here.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX ledger_entries_stripe_event_idx`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE INDEX ledger_entries_stripe_event_idx ON ledger_entries (stripe_event_id)
      WHERE stripe_event_id IS NOT NULL
  `.execute(db);
}
