import { type Kysely, sql } from 'kysely';

/**
 * The ledger schema. Frozen in time: never import application code here.
 * Money rules live in constraints and triggers so that no code path can break them.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE accounts (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      external_user_id text UNIQUE CHECK (length(external_user_id) BETWEEN 1 AND 255),
      stripe_customer_id text UNIQUE,
      balance bigint NOT NULL DEFAULT 0,
      version bigint NOT NULL DEFAULT 0,
      status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'frozen')),
      anonymized_at timestamptz,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now(),
      CHECK (anonymized_at IS NULL OR (external_user_id IS NULL AND stripe_customer_id IS NULL))
    );

    CREATE TABLE payments (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      account_id uuid NOT NULL REFERENCES accounts (id),
      package_id text NOT NULL,
      credits bigint NOT NULL CHECK (credits > 0),
      amount_total bigint NOT NULL CHECK (amount_total >= 0),
      currency text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
      status text NOT NULL DEFAULT 'INIT' CHECK (status IN
        ('INIT', 'PAID', 'CREDITED', 'PARTIALLY_REFUNDED', 'REFUNDED', 'CHARGEBACK', 'EXPIRED', 'FAILED')),
      stripe_checkout_session_id text UNIQUE,
      stripe_payment_intent_id text UNIQUE,
      stripe_charge_id text UNIQUE,
      amount_refunded bigint NOT NULL DEFAULT 0 CHECK (amount_refunded >= 0),
      disputed boolean NOT NULL DEFAULT false,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX payments_account_idx ON payments (account_id, created_at DESC);

    CREATE TABLE admin_actions (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      actor_arn text NOT NULL CHECK (length(actor_arn) BETWEEN 1 AND 2048),
      action text NOT NULL CHECK (action IN
        ('adjust', 'freeze', 'unfreeze', 'anonymize', 'replay_event', 'start_reconciliation')),
      account_id uuid REFERENCES accounts (id),
      reason text NOT NULL CHECK (length(reason) BETWEEN 1 AND 2000),
      payload jsonb NOT NULL DEFAULT '{}'::jsonb,
      created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX admin_actions_account_idx ON admin_actions (account_id, created_at DESC);

    CREATE TABLE ledger_entries (
      id bigserial PRIMARY KEY,
      account_id uuid NOT NULL REFERENCES accounts (id),
      amount bigint NOT NULL CHECK (amount <> 0),
      balance_after bigint NOT NULL,
      kind text NOT NULL CHECK (kind IN ('purchase', 'spend', 'refund_clawback', 'refund_reversal',
        'dispute_clawback', 'dispute_reinstatement', 'admin_adjustment')),
      reference text NOT NULL CHECK (length(reference) BETWEEN 1 AND 255),
      payment_id uuid REFERENCES payments (id),
      admin_action_id uuid UNIQUE REFERENCES admin_actions (id),
      stripe_event_id text,
      request_hash text,
      description text,
      metadata jsonb,
      created_at timestamptz NOT NULL DEFAULT now(),
      UNIQUE (account_id, kind, reference),
      -- Only a clawback of credits already spent may take a balance below zero (or leave it there).
      CHECK (balance_after >= 0 OR amount > 0 OR kind IN ('refund_clawback', 'dispute_clawback')),
      -- Money from Stripe always names its payment; admin entries always name their audit row.
      CHECK ((kind IN ('purchase', 'refund_clawback', 'refund_reversal', 'dispute_clawback',
        'dispute_reinstatement')) = (payment_id IS NOT NULL)),
      CHECK ((kind = 'admin_adjustment') = (admin_action_id IS NOT NULL)),
      CHECK (kind <> 'purchase' OR amount > 0),
      CHECK (kind <> 'spend' OR (amount < 0 AND request_hash IS NOT NULL))
    );
    CREATE UNIQUE INDEX ledger_one_purchase_per_payment ON ledger_entries (payment_id) WHERE kind = 'purchase';
    CREATE INDEX ledger_entries_account_idx ON ledger_entries (account_id, id DESC);
    CREATE INDEX ledger_entries_payment_idx ON ledger_entries (payment_id) WHERE payment_id IS NOT NULL;

    -- Append-only: amounts, balances and provenance never change. The one permitted UPDATE erases
    -- free text (GDPR anonymisation); everything else, and every DELETE or TRUNCATE, is refused.
    CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'UPDATE'
        AND NEW.description IS NULL AND NEW.metadata IS NULL
        AND to_jsonb(NEW) - 'description' - 'metadata' = to_jsonb(OLD) - 'description' - 'metadata' THEN
        RETURN NEW;
      END IF;
      RAISE EXCEPTION 'ledger_entries is append-only: % refused', TG_OP USING ERRCODE = 'P0001';
    END $$;
    CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
      FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();
    CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
      FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_append_only();

    -- Payments move only along the state machine.
    CREATE FUNCTION payments_state_machine() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.status = OLD.status OR (OLD.status, NEW.status) IN (
        ('INIT', 'PAID'), ('INIT', 'CREDITED'), ('INIT', 'EXPIRED'), ('INIT', 'FAILED'),
        ('PAID', 'CREDITED'), ('PAID', 'FAILED'),
        ('CREDITED', 'PARTIALLY_REFUNDED'), ('CREDITED', 'REFUNDED'), ('CREDITED', 'CHARGEBACK'),
        ('PARTIALLY_REFUNDED', 'CREDITED'), ('PARTIALLY_REFUNDED', 'REFUNDED'), ('PARTIALLY_REFUNDED', 'CHARGEBACK'),
        ('REFUNDED', 'CREDITED'), ('REFUNDED', 'PARTIALLY_REFUNDED'), ('REFUNDED', 'CHARGEBACK'),
        ('CHARGEBACK', 'CREDITED'), ('CHARGEBACK', 'PARTIALLY_REFUNDED'), ('CHARGEBACK', 'REFUNDED')
      ) THEN
        RETURN NEW;
      END IF;
      RAISE EXCEPTION 'payment % cannot move from % to %', OLD.id, OLD.status, NEW.status USING ERRCODE = 'P0002';
    END $$;
    CREATE TRIGGER payments_state_machine BEFORE UPDATE OF status ON payments
      FOR EACH ROW EXECUTE FUNCTION payments_state_machine();

    -- What Stripe has told us about each payment intent's refunds and disputes, merged so that any order
    -- and any repetition of events gives the same facts. Kept apart from payments: a refund can arrive
    -- before the event that links its payment intent to a payment.
    CREATE TABLE stripe_charge_facts (
      payment_intent_id text PRIMARY KEY CHECK (payment_intent_id ~ '^pi_'),
      charge_amount_refunded bigint NOT NULL DEFAULT 0 CHECK (charge_amount_refunded >= 0),
      refunds jsonb NOT NULL DEFAULT '{}'::jsonb,
      disputes jsonb NOT NULL DEFAULT '{}'::jsonb,
      updated_at timestamptz NOT NULL DEFAULT now()
    );

    CREATE TABLE processed_events (
      event_id text PRIMARY KEY CHECK (event_id ~ '^evt_'),
      event_type text NOT NULL,
      outcome text NOT NULL CHECK (outcome IN ('applied', 'ignored', 'parked')),
      reason text,
      payload jsonb,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now(),
      CHECK ((outcome = 'parked') = (reason IS NOT NULL AND payload IS NOT NULL))
    );
    CREATE INDEX processed_events_parked_idx ON processed_events (created_at) WHERE outcome = 'parked';

    CREATE TABLE reconciliation_runs (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'partial', 'failed')),
      trigger text NOT NULL CHECK (trigger IN ('schedule', 'admin')),
      window_start timestamptz NOT NULL,
      window_end timestamptz NOT NULL,
      counts jsonb NOT NULL DEFAULT '{}'::jsonb,
      healed integer NOT NULL DEFAULT 0,
      findings integer NOT NULL DEFAULT 0,
      error text,
      started_at timestamptz NOT NULL DEFAULT now(),
      finished_at timestamptz,
      CHECK (window_start < window_end),
      CHECK ((status = 'running') = (finished_at IS NULL))
    );
    -- Only one run at a time.
    CREATE UNIQUE INDEX reconciliation_one_running ON reconciliation_runs ((true)) WHERE status = 'running';

    CREATE TABLE reconciliation_findings (
      id bigserial PRIMARY KEY,
      run_id uuid NOT NULL REFERENCES reconciliation_runs (id),
      kind text NOT NULL,
      stripe_object_id text,
      payment_id uuid REFERENCES payments (id),
      account_id uuid REFERENCES accounts (id),
      details jsonb NOT NULL DEFAULT '{}'::jsonb,
      created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX reconciliation_findings_run_idx ON reconciliation_findings (run_id, id);
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP TABLE reconciliation_findings, reconciliation_runs, processed_events, stripe_charge_facts, ledger_entries,
      admin_actions, payments, accounts;
    DROP FUNCTION ledger_entries_append_only, payments_state_machine;
  `.execute(db);
}
