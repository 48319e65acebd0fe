import { type Kysely, sql } from 'kysely';

/**
 * Credit grants: every credit that enters an account is a lot with a category, a source and an optional
 * expiry; every debit records which lots it drew (`grant_allocations`). Admin grants above a threshold wait
 * for a second admin (`grant_approvals`); coupons grant promotional credits once per account.
 * Existing balances become one paid, never-expiring grant per account, so history stays exact.
 * Frozen in time: never import application code here.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;
    ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check CHECK (kind IN ('purchase', 'spend',
      'refund_clawback', 'refund_reversal', 'dispute_clawback', 'dispute_reinstatement', 'admin_adjustment',
      'grant_expiry', 'coupon_redemption'));

    ALTER TABLE admin_actions DROP CONSTRAINT admin_actions_action_check;
    ALTER TABLE admin_actions ADD CONSTRAINT admin_actions_action_check CHECK (action IN ('adjust', 'freeze',
      'unfreeze', 'anonymize', 'replay_event', 'start_reconciliation', 'request_grant', 'approve_grant',
      'reject_grant', 'create_coupon', 'disable_coupon'));

    CREATE TABLE credit_grants (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      account_id uuid NOT NULL REFERENCES accounts (id),
      category text NOT NULL CHECK (category IN ('paid', 'promotional')),
      source text NOT NULL CHECK (source IN ('purchase', 'coupon', 'admin', 'allowance', 'auto_topup',
        'reinstatement', 'opening_balance')),
      amount bigint NOT NULL CHECK (amount > 0),
      remaining bigint NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
      expires_at timestamptz,
      payment_id uuid REFERENCES payments (id),
      -- The positive entry that brought the credits in; none for an opening balance.
      entry_id bigint UNIQUE REFERENCES ledger_entries (id),
      reference text NOT NULL CHECK (length(reference) BETWEEN 1 AND 255),
      created_at timestamptz NOT NULL DEFAULT now(),
      CHECK ((source = 'opening_balance') = (entry_id IS NULL))
    );
    -- The lots a debit can draw, in burn order; and the ones the sweeper must expire.
    CREATE INDEX credit_grants_open_idx ON credit_grants (account_id, expires_at, created_at) WHERE remaining > 0;
    CREATE INDEX credit_grants_due_idx ON credit_grants (expires_at) WHERE remaining > 0 AND expires_at IS NOT NULL;
    CREATE INDEX credit_grants_payment_idx ON credit_grants (payment_id) WHERE payment_id IS NOT NULL;

    CREATE TABLE grant_allocations (
      entry_id bigint NOT NULL REFERENCES ledger_entries (id),
      grant_id uuid NOT NULL REFERENCES credit_grants (id),
      amount bigint NOT NULL CHECK (amount > 0),
      PRIMARY KEY (entry_id, grant_id)
    );
    CREATE INDEX grant_allocations_grant_idx ON grant_allocations (grant_id);

    CREATE TABLE grant_approvals (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      account_id uuid NOT NULL REFERENCES accounts (id),
      amount bigint NOT NULL CHECK (amount > 0),
      category text NOT NULL CHECK (category IN ('paid', 'promotional')),
      expires_at timestamptz,
      description text,
      status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected')),
      requested_action_id uuid NOT NULL UNIQUE REFERENCES admin_actions (id),
      decided_action_id uuid UNIQUE REFERENCES admin_actions (id),
      entry_id bigint UNIQUE REFERENCES ledger_entries (id),
      created_at timestamptz NOT NULL DEFAULT now(),
      decided_at timestamptz,
      CHECK ((status = 'pending') = (decided_action_id IS NULL)),
      CHECK ((status = 'approved') = (entry_id IS NOT NULL))
    );
    CREATE INDEX grant_approvals_pending_idx ON grant_approvals (created_at) WHERE status = 'pending';

    CREATE TABLE coupons (
      code text PRIMARY KEY CHECK (code ~ '^[A-Z0-9_-]{3,64}$'),
      credits bigint NOT NULL CHECK (credits > 0),
      grant_expires_in_days integer CHECK (grant_expires_in_days BETWEEN 1 AND 3650),
      redeem_by timestamptz,
      max_redemptions integer CHECK (max_redemptions > 0),
      plans text[],
      redemptions integer NOT NULL DEFAULT 0 CHECK (redemptions >= 0),
      disabled_at timestamptz,
      created_action_id uuid NOT NULL UNIQUE REFERENCES admin_actions (id),
      created_at timestamptz NOT NULL DEFAULT now(),
      CHECK (max_redemptions IS NULL OR redemptions <= max_redemptions)
    );

    CREATE TABLE coupon_redemptions (
      code text NOT NULL REFERENCES coupons (code),
      account_id uuid NOT NULL REFERENCES accounts (id),
      grant_id uuid NOT NULL UNIQUE REFERENCES credit_grants (id),
      created_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (code, account_id)
    );

    -- Failed redemption attempts, for the per-account limit on guessing codes.
    CREATE TABLE coupon_failures (
      id bigserial PRIMARY KEY,
      account_id uuid NOT NULL REFERENCES accounts (id),
      code_tried text NOT NULL,
      created_at timestamptz NOT NULL
    );
    CREATE INDEX coupon_failures_account_idx ON coupon_failures (account_id, created_at DESC);

    -- The application role: lots move (remaining) and approvals and coupons are decided; allocations,
    -- redemptions and failed attempts are only ever added.
    GRANT SELECT, INSERT, UPDATE ON credit_grants, grant_approvals, coupons TO credits_app;
    GRANT SELECT, INSERT ON grant_allocations, coupon_redemptions, coupon_failures TO credits_app;
    GRANT USAGE ON SEQUENCE coupon_failures_id_seq TO credits_app;

    INSERT INTO credit_grants (account_id, category, source, amount, remaining, reference)
      SELECT id, 'paid', 'opening_balance', balance, balance, 'opening-balance'
      FROM accounts WHERE balance > 0;

    -- Entries up to this id predate grants (their credits are in the opening balances): the invariant
    -- checker holds the grant rules to the entries after it.
    DO $do$ BEGIN
      EXECUTE format('CREATE FUNCTION ledger_grants_start() RETURNS bigint LANGUAGE sql IMMUTABLE AS %L',
        'SELECT ' || coalesce((SELECT max(id) FROM ledger_entries), 0)::text || '::bigint');
    END $do$;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP TABLE coupon_failures, coupon_redemptions, coupons, grant_approvals, grant_allocations, credit_grants;
    DROP FUNCTION ledger_grants_start;
    ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;
    ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check CHECK (kind IN ('purchase', 'spend',
      'refund_clawback', 'refund_reversal', 'dispute_clawback', 'dispute_reinstatement', 'admin_adjustment'));
    ALTER TABLE admin_actions DROP CONSTRAINT admin_actions_action_check;
    ALTER TABLE admin_actions ADD CONSTRAINT admin_actions_action_check CHECK (action IN ('adjust', 'freeze',
      'unfreeze', 'anonymize', 'replay_event', 'start_reconciliation'));
  `.execute(db);
}
