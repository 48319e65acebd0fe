import { type Kysely, sql } from 'kysely';

/**
 * Holds: credits reserved before a long call (an LLM request) and settled after it. A hold counts against
 * `available` while it is active and not past `expires_at`; its capture is one `hold_capture` entry.
 * Frozen in time: never import application code here.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;
    ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check CHECK (kind IN ('purchase', 'spend',
      'refund_clawback', 'refund_reversal', 'dispute_clawback', 'dispute_reinstatement', 'admin_adjustment',
      'grant_expiry', 'coupon_redemption', 'hold_capture'));

    CREATE TABLE holds (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      account_id uuid NOT NULL REFERENCES accounts (id),
      idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
      request_hash text NOT NULL,
      sku text,
      price_version text,
      -- What was asked for, and what is reserved now (a clawback below the holds shrinks them).
      requested_credits bigint NOT NULL CHECK (requested_credits > 0),
      credits bigint NOT NULL CHECK (credits >= 0 AND credits <= requested_credits),
      status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'captured', 'voided', 'expired')),
      description text,
      metadata jsonb,
      expires_at timestamptz NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      settled_at timestamptz,
      capture_hash text,
      captured_credits bigint CHECK (captured_credits >= 0),
      shortfall bigint CHECK (shortfall >= 0),
      released bigint CHECK (released >= 0),
      captured_after_expiry boolean,
      entry_id bigint UNIQUE REFERENCES ledger_entries (id),
      UNIQUE (account_id, idempotency_key),
      CHECK ((status = 'active') = (settled_at IS NULL)),
      CHECK ((status = 'captured') = (capture_hash IS NOT NULL))
    );
    CREATE INDEX holds_active_idx ON holds (account_id, expires_at) WHERE status = 'active';
    CREATE INDEX holds_due_idx ON holds (expires_at) WHERE status = 'active';
    GRANT SELECT, INSERT, UPDATE ON holds TO credits_app;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP TABLE holds;
    ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;
    ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check CHECK (kind IN ('purchase', 'spend',
      'refund_clawback', 'refund_reversal', 'dispute_clawback', 'dispute_reinstatement', 'admin_adjustment',
      'grant_expiry', 'coupon_redemption'));
  `.execute(db);
}
