import { type Kysely, sql } from 'kysely';

/** The admin actions this migration adds to `admin_actions_action_check`. */
const ACTIONS = ['create_webhook_endpoint', 'delete_webhook_endpoint', 'redeliver_webhook'];

/**
 * Rebuilds `admin_actions_action_check` from the values it allows now, plus `add`, less `remove`. Read from
 * the catalog rather than restated, so this migration keeps whatever actions a migration of the same days
 * (plans) added, whichever runs first. The values are the catalog's (`[a-z_]+`) and the constants above.
 */
async function changeActions(db: Kysely<unknown>, add: string[], remove: string[]): Promise<void> {
  const { rows } = await sql<{ definition: string }>`
    SELECT pg_get_constraintdef(oid) AS definition FROM pg_constraint
    WHERE conname = 'admin_actions_action_check' AND conrelid = 'admin_actions'::regclass
  `.execute(db);
  const current = [...(rows[0]?.definition ?? '').matchAll(/'([a-z_]+)'/g)].map((m) => m[1] as string);
  if (current.length === 0) throw new Error('admin_actions_action_check not found or unreadable');
  const allowed = [...new Set([...current, ...add])].filter((a) => !remove.includes(a)).sort();
  await sql`
    ALTER TABLE admin_actions DROP CONSTRAINT admin_actions_action_check;
    ALTER TABLE admin_actions ADD CONSTRAINT admin_actions_action_check
      CHECK (action IN (${sql.join(allowed.map((a) => sql.lit(a)))}));
  `.execute(db);
}

/**
 * Outbound webhooks: the endpoints admins register (the signing secret stored encrypted, never in clear), the
 * outbox that events are written to in the transaction of the change that causes them, one delivery per
 * endpoint and event with its retry state, and every attempt made. Frozen in time: never import application
 * code here.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await changeActions(db, ACTIONS, []);
  await sql`
    CREATE TABLE webhook_endpoints (
      id uuid PRIMARY KEY,
      url text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
      event_types text[] NOT NULL CHECK (cardinality(event_types) >= 1),
      description text CHECK (length(description) <= 500),
      -- 'kms:' or 'local:' and the ciphertext; the key is KMS's or the local key file's, never here.
      secret_ciphertext text NOT NULL CHECK (secret_ciphertext ~ '^(kms|local):'),
      created_action_id uuid NOT NULL UNIQUE REFERENCES admin_actions (id),
      deleted_action_id uuid UNIQUE REFERENCES admin_actions (id),
      created_at timestamptz NOT NULL DEFAULT now(),
      deleted_at timestamptz,
      CHECK ((deleted_at IS NULL) = (deleted_action_id IS NULL))
    );

    CREATE TABLE webhook_outbox (
      id text PRIMARY KEY CHECK (id ~ '^evt_[0-9a-f]{32}$'),
      type text NOT NULL CHECK (type IN ('credits.granted', 'balance.low', 'balance.depleted', 'grant.expiring',
        'spend_cap.reached', 'payment.refunded', 'payment.disputed', 'auto_topup.succeeded', 'auto_topup.failed',
        'auto_topup.requires_action')),
      account_id uuid REFERENCES accounts (id),
      -- The body every endpoint receives, byte for byte: {id, type, createdAt, data}.
      payload text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      fanned_out_at timestamptz
    );
    CREATE INDEX webhook_outbox_unsent ON webhook_outbox (created_at) WHERE fanned_out_at IS NULL;

    CREATE TABLE webhook_deliveries (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      -- The Standard Webhooks message id: the same on every attempt of this delivery.
      webhook_id text NOT NULL UNIQUE CHECK (webhook_id ~ '^msg_[0-9a-f]{32}$'),
      event_id text NOT NULL REFERENCES webhook_outbox (id),
      endpoint_id uuid NOT NULL REFERENCES webhook_endpoints (id),
      type text NOT NULL,
      status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed', 'dead')),
      attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
      last_status integer,
      last_response text CHECK (length(last_response) <= 1024),
      last_attempt_at timestamptz,
      -- When the next attempt is due; null once delivered or dead.
      next_attempt_at timestamptz,
      -- When a message for the next attempt was sent to the queue; null while none is (a wait longer than
      -- SQS's 15-minute delay, or a send that failed): the sweeper sends those when they fall due.
      enqueued_at timestamptz,
      -- An attempt in flight until then: a second message for the delivery finds it taken and is dropped.
      lease_until timestamptz,
      created_at timestamptz NOT NULL DEFAULT now(),
      UNIQUE (event_id, endpoint_id),
      CHECK ((status IN ('delivered', 'dead')) = (next_attempt_at IS NULL))
    );
    CREATE INDEX webhook_deliveries_listing ON webhook_deliveries (created_at DESC, id DESC);
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
      WHERE status IN ('pending', 'failed');

    CREATE TABLE webhook_attempts (
      id bigserial PRIMARY KEY,
      delivery_id uuid NOT NULL REFERENCES webhook_deliveries (id),
      webhook_id text NOT NULL,
      -- The HTTP status the endpoint answered; null when it answered nothing (refused, timed out).
      status integer,
      response text CHECK (length(response) <= 1024),
      attempted_at timestamptz NOT NULL
    );
    CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);

    GRANT SELECT, INSERT, UPDATE ON webhook_endpoints TO credits_app;
    GRANT SELECT, INSERT, UPDATE ON webhook_outbox TO credits_app;
    GRANT SELECT, INSERT, UPDATE ON webhook_deliveries TO credits_app;
    GRANT SELECT, INSERT ON webhook_attempts TO credits_app;
    GRANT USAGE ON SEQUENCE webhook_attempts_id_seq TO credits_app;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE webhook_attempts, webhook_deliveries, webhook_outbox, webhook_endpoints`.execute(db);
  await changeActions(db, [], ACTIONS);
}
