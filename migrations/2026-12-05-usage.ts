import { type Kysely, sql } from 'kysely';

/**
 * Usage events (metered after the fact), at most once per account and event id, and their hourly rollups per
 * account and SKU, written in the debit's transaction. Frozen in time: never import application code here.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;
    ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check CHECK (kind IN ('purchase', 'spend',
      'refund_clawback', 'refund_reversal', 'dispute_clawback', 'dispute_reinstatement', 'admin_adjustment',
      'grant_expiry', 'coupon_redemption', 'hold_capture', 'usage'));

    CREATE TABLE usage_events (
      account_id uuid NOT NULL REFERENCES accounts (id),
      event_id text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 255),
      payload_hash text NOT NULL,
      sku text,
      price_version text,
      credits bigint NOT NULL CHECK (credits >= 0),
      entry_id bigint UNIQUE REFERENCES ledger_entries (id),
      occurred_at timestamptz NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (account_id, event_id),
      CHECK ((credits > 0) = (entry_id IS NOT NULL))
    );

    CREATE TABLE usage_rollups (
      account_id uuid NOT NULL REFERENCES accounts (id),
      hour timestamptz NOT NULL CHECK (date_trunc('hour', hour) = hour),
      -- '' for raw debits that name no SKU.
      sku text NOT NULL,
      credits bigint NOT NULL DEFAULT 0 CHECK (credits >= 0),
      events integer NOT NULL DEFAULT 0 CHECK (events >= 0),
      input_tokens bigint NOT NULL DEFAULT 0,
      cache_read_tokens bigint NOT NULL DEFAULT 0,
      cache_write_tokens bigint NOT NULL DEFAULT 0,
      output_tokens bigint NOT NULL DEFAULT 0,
      reasoning_tokens bigint NOT NULL DEFAULT 0,
      units bigint NOT NULL DEFAULT 0,
      PRIMARY KEY (account_id, hour, sku)
    );

    GRANT SELECT, INSERT ON usage_events TO credits_app;
    GRANT SELECT, INSERT, UPDATE ON usage_rollups TO credits_app;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP TABLE usage_rollups, usage_events;
    ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;
    ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check CHECK (kind IN ('purchase', 'spend',
      'refund_clawback', 'refund_reversal', 'dispute_clawback', 'dispute_reinstatement', 'admin_adjustment',
      'grant_expiry', 'coupon_redemption', 'hold_capture'));
  `.execute(db);
}
