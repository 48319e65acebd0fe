import { type Kysely, sql } from 'kysely';

/**
 * Auto top-up's Stripe side: an account's saved card (the payment method a Checkout with saveCard or a
 * PaymentIntent with setup_future_usage left on its Stripe customer, and when Stripe created it, so the newest
 * wins whatever order the webhooks come in), and payments that are off-session top-ups, with the reason
 * Stripe gave when one failed. Frozen in time: never import application code here.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE accounts
      ADD COLUMN stripe_payment_method_id text CHECK (stripe_payment_method_id ~ '^pm_\\w+$'),
      ADD COLUMN payment_method_saved_at timestamptz,
      ADD CONSTRAINT accounts_saved_card_check CHECK ((stripe_payment_method_id IS NULL) =
        (payment_method_saved_at IS NULL) AND (stripe_payment_method_id IS NULL OR stripe_customer_id IS NOT NULL)),
      ADD CONSTRAINT accounts_anonymized_card_check CHECK (anonymized_at IS NULL OR stripe_payment_method_id IS NULL);

    ALTER TABLE payments
      ADD COLUMN kind text NOT NULL DEFAULT 'checkout' CHECK (kind IN ('checkout', 'auto_topup')),
      ADD COLUMN failure_code text CHECK (length(failure_code) BETWEEN 1 AND 100),
      ADD COLUMN failure_message text CHECK (length(failure_message) BETWEEN 1 AND 500),
      ADD CONSTRAINT payments_failure_check CHECK (failure_code IS NULL OR status = 'FAILED');
    -- The guards on top-ups (one in flight, so many a month) read an account's recent top-ups.
    CREATE INDEX payments_auto_topup_idx ON payments (account_id, created_at DESC) WHERE kind = 'auto_topup';
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP INDEX payments_auto_topup_idx;
    ALTER TABLE payments DROP CONSTRAINT payments_failure_check,
      DROP COLUMN failure_message, DROP COLUMN failure_code, DROP COLUMN kind;
    ALTER TABLE accounts DROP CONSTRAINT accounts_anonymized_card_check, DROP CONSTRAINT accounts_saved_card_check,
      DROP COLUMN payment_method_saved_at, DROP COLUMN stripe_payment_method_id;
  `.execute(db);
}
