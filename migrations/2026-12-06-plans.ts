import { type Kysely, sql } from 'kysely';

/**
 * Plans: an account's plan, its own monthly budget and low-balance threshold, the month's allowance granted, the recent
 * debits its rate limit counts (`account_plans`, no row: the default plan, no budget); and each account's
 * credits debited per UTC day (`debit_days`), which caps read. Allowances are `allowance` entries.
 * Frozen in time: never import application code here.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;
    ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check CHECK (kind IN ('purchase', 'spend',
      'refund_clawback', 'refund_reversal', 'dispute_clawback', 'dispute_reinstatement', 'admin_adjustment',
      'grant_expiry', 'coupon_redemption', 'hold_capture', 'usage', 'allowance'));

    ALTER TABLE admin_actions DROP CONSTRAINT admin_actions_action_check;
    ALTER TABLE admin_actions ADD CONSTRAINT admin_actions_action_check CHECK (action IN ('adjust', 'freeze',
      'unfreeze', 'anonymize', 'replay_event', 'start_reconciliation', 'request_grant', 'approve_grant',
      'reject_grant', 'create_coupon', 'disable_coupon', 'create_prices', 'activate_prices', 'change_plan'));

    CREATE TABLE account_plans (
      account_id uuid PRIMARY KEY REFERENCES accounts (id),
      -- null: the configured default plan.
      plan_id text CHECK (plan_id ~ '^[a-z0-9_-]{1,64}$'),
      monthly_budget bigint CHECK (monthly_budget >= 0),
      -- The user's own low-balance threshold (PUT /v1/me/alerts); null: the plan's.
      low_balance_threshold bigint CHECK (low_balance_threshold >= 0),
      -- The UTC month (YYYY-MM) whose allowance has been granted, and how much of it.
      allowance_month text CHECK (allowance_month ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
      allowance_granted bigint NOT NULL DEFAULT 0 CHECK (allowance_granted >= 0),
      -- When the last spends and hold creations were admitted (at most the plan's per-minute limit).
      recent_debits timestamptz[] NOT NULL DEFAULT '{}',
      updated_at timestamptz NOT NULL DEFAULT now()
    );

    CREATE TABLE debit_days (
      account_id uuid NOT NULL REFERENCES accounts (id),
      day date NOT NULL,
      credits bigint NOT NULL CHECK (credits >= 0),
      PRIMARY KEY (account_id, day)
    );

    -- Debits (spends, hold captures, usage) made before this migration, by UTC day.
    INSERT INTO debit_days (account_id, day, credits)
    SELECT account_id, (created_at AT TIME ZONE 'UTC')::date, -sum(amount)
    FROM ledger_entries
    WHERE kind IN ('spend', 'hold_capture', 'usage')
    GROUP BY 1, 2;

    GRANT SELECT, INSERT, UPDATE ON account_plans TO credits_app;
    GRANT SELECT, INSERT, UPDATE ON debit_days TO credits_app;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP TABLE debit_days, account_plans;
    ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;
    ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check CHECK (kind IN ('purchase', 'spend',
      'refund_clawback', 'refund_reversal', 'dispute_clawback', 'dispute_reinstatement', 'admin_adjustment',
      'grant_expiry', 'coupon_redemption', 'hold_capture', 'usage'));
    ALTER TABLE admin_actions DROP CONSTRAINT admin_actions_action_check;
    ALTER TABLE admin_actions ADD CONSTRAINT admin_actions_action_check CHECK (action IN ('adjust', 'freeze',
      'unfreeze', 'anonymize', 'replay_event', 'start_reconciliation', 'request_grant', 'approve_grant',
      'reject_grant', 'create_coupon', 'disable_coupon', 'create_prices', 'activate_prices'));
  `.execute(db);
}
