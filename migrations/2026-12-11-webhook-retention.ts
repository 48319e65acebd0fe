import { type Kysely, sql } from 'kysely';

/**
 * Outbound webhook history is kept 30 days (the sweeper deletes what is older and settled), so the
 * application role may delete it; nothing else in the ledger may be deleted.
 * Frozen in time: never import application code here.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE INDEX webhook_outbox_settled ON webhook_outbox (fanned_out_at) WHERE fanned_out_at IS NOT NULL;
    GRANT DELETE ON webhook_outbox, webhook_deliveries, webhook_attempts TO credits_app;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    REVOKE DELETE ON webhook_outbox, webhook_deliveries, webhook_attempts FROM credits_app;
    DROP INDEX webhook_outbox_settled;
  `.execute(db);
}
