import { type Kysely, sql } from 'kysely';

/**
 * Auto top-up settings, one row per account that set them: the pack to buy off-session on the saved card
 * when a debit leaves `available` below the threshold, at most so many a UTC month, and the failures in a
 * row (three disable it, with the reason). At most one top-up in flight per account (INIT or PAID, not yet
 * credited): the trigger checks it under the account lock; the partial unique index makes it a constraint.
 * Frozen in time: never import application code here.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE auto_topup_settings (
      account_id uuid PRIMARY KEY REFERENCES accounts (id),
      enabled boolean NOT NULL,
      package_id text NOT NULL CHECK (package_id ~ '^[a-z0-9_-]{1,64}$'),
      threshold_credits bigint NOT NULL CHECK (threshold_credits >= 0),
      max_per_month integer NOT NULL CHECK (max_per_month BETWEEN 1 AND 100),
      consecutive_declines integer NOT NULL DEFAULT 0 CHECK (consecutive_declines >= 0),
      disabled_reason text CHECK (length(disabled_reason) BETWEEN 1 AND 100),
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now(),
      CHECK (disabled_reason IS NULL OR NOT enabled)
    );
    GRANT SELECT, INSERT, UPDATE ON auto_topup_settings TO credits_app;
    CREATE UNIQUE INDEX payments_one_auto_topup_in_flight ON payments (account_id)
      WHERE kind = 'auto_topup' AND status IN ('INIT', 'PAID');
    -- The sweeper's look for top-ups a crash left uncharged.
    CREATE INDEX payments_auto_topup_uncharged_idx ON payments (created_at)
      WHERE kind = 'auto_topup' AND status = 'INIT' AND stripe_payment_intent_id IS NULL;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP INDEX payments_auto_topup_uncharged_idx;
    DROP INDEX payments_one_auto_topup_in_flight;
    DROP TABLE auto_topup_settings;
  `.execute(db);
}
