import { type Kysely, sql } from 'kysely';

/**
 * The price book: versions (`price_books`) that an admin creates as drafts and activates, and their items
 * (`price_items`, one row per SKU, rates in credits as exact numerics). Items are rows rather than one jsonb
 * document so that pricing a usage event reads one indexed row of its version, and so that the database itself
 * holds every item to its rules (unique SKU per version, non-negative rates with at most 9 decimal places, the
 * columns each kind requires).
 *
 * Versions never overlap in time: each has the interval [activated_at, retired_at) during which it was the
 * active one, so "the version active at T" has one answer. Once a version leaves draft its items never change.
 * Frozen in time: never import application code here.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE admin_actions DROP CONSTRAINT admin_actions_action_check;
    ALTER TABLE admin_actions ADD CONSTRAINT admin_actions_action_check CHECK (action IN ('adjust', 'freeze',
      'unfreeze', 'anonymize', 'replay_event', 'start_reconciliation', 'request_grant', 'approve_grant',
      'reject_grant', 'create_coupon', 'disable_coupon', 'create_prices', 'activate_prices'));

    CREATE TABLE price_books (
      version text PRIMARY KEY CHECK (version ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
      status text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'active', 'retired')),
      created_action_id uuid NOT NULL UNIQUE REFERENCES admin_actions (id),
      activated_action_id uuid UNIQUE REFERENCES admin_actions (id),
      created_at timestamptz NOT NULL DEFAULT now(),
      activated_at timestamptz,
      retired_at timestamptz,
      CHECK ((status = 'draft') = (activated_at IS NULL)),
      CHECK ((status = 'draft') = (activated_action_id IS NULL)),
      CHECK ((status = 'retired') = (retired_at IS NOT NULL)),
      CHECK (retired_at >= activated_at),
      -- No two versions were ever active at the same instant (an empty interval overlaps nothing).
      CONSTRAINT price_books_no_overlap EXCLUDE USING gist (tstzrange(activated_at, retired_at, '[)') WITH &&) WHERE (activated_at IS NOT NULL)
    );
    -- At most one active version (the no-overlap rule implies it; this says it plainly).
    CREATE UNIQUE INDEX price_books_one_active_idx ON price_books (status) WHERE status = 'active';

    CREATE TABLE price_items (
      version text NOT NULL REFERENCES price_books (version),
      sku text NOT NULL CHECK (sku ~ '^[A-Za-z0-9][A-Za-z0-9._:/@~+-]{0,199}$'),
      kind text NOT NULL CHECK (kind IN ('tokens', 'unit')),
      -- Token SKUs: credits per 1,000,000 tokens of each pool, and per request.
      input numeric(21, 9) CHECK (input >= 0),
      cache_read numeric(21, 9) CHECK (cache_read >= 0),
      cache_write numeric(21, 9) CHECK (cache_write >= 0),
      output numeric(21, 9) CHECK (output >= 0),
      reasoning numeric(21, 9) CHECK (reasoning >= 0),
      per_request numeric(21, 9) CHECK (per_request >= 0),
      -- Unit SKUs: credits per unit.
      unit_credits numeric(21, 9) CHECK (unit_credits >= 0),
      PRIMARY KEY (version, sku),
      CHECK (CASE kind
        WHEN 'tokens' THEN input IS NOT NULL AND output IS NOT NULL AND unit_credits IS NULL
        ELSE unit_credits IS NOT NULL AND num_nulls(input, cache_read, cache_write, output, reasoning,
          per_request) = 6
      END)
    );

    -- A version's items are written with its draft and never change once it leaves draft; versions move
    -- draft -> active -> retired only, and what is recorded about a move never changes.
    CREATE FUNCTION price_items_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
      book_status text;
    BEGIN
      SELECT status INTO book_status FROM price_books
        WHERE version = (CASE TG_OP WHEN 'INSERT' THEN NEW.version ELSE OLD.version END) FOR SHARE;
      IF TG_OP = 'INSERT' AND book_status = 'draft' THEN
        RETURN NEW;
      END IF;
      RAISE EXCEPTION 'price book % is %: its items never change', coalesce(NEW.version, OLD.version),
        coalesce(book_status, 'missing') USING ERRCODE = 'P0004';
    END $$;
    CREATE TRIGGER price_items_frozen BEFORE INSERT OR UPDATE OR DELETE ON price_items
      FOR EACH ROW EXECUTE FUNCTION price_items_frozen();

    CREATE FUNCTION price_books_lifecycle() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'UPDATE'
        AND NEW.version = OLD.version
        AND NEW.created_action_id = OLD.created_action_id
        AND NEW.created_at = OLD.created_at
        AND ((OLD.status = 'draft' AND NEW.status IN ('draft', 'active'))
          OR (OLD.status = 'active' AND NEW.status IN ('active', 'retired'))
          OR (OLD.status = 'retired' AND NEW.status = 'retired'))
        AND (OLD.activated_at IS NULL OR NEW.activated_at = OLD.activated_at)
        AND (OLD.activated_action_id IS NULL OR NEW.activated_action_id = OLD.activated_action_id)
        AND (OLD.retired_at IS NULL OR NEW.retired_at = OLD.retired_at) THEN
        RETURN NEW;
      END IF;
      RAISE EXCEPTION 'price book %: % refused (% -> %)', OLD.version, TG_OP, OLD.status,
        coalesce(NEW.status, 'deleted') USING ERRCODE = 'P0004';
    END $$;
    CREATE TRIGGER price_books_lifecycle BEFORE UPDATE OR DELETE ON price_books
      FOR EACH ROW EXECUTE FUNCTION price_books_lifecycle();

    -- The application role: versions are created and move along their lifecycle; items are only added.
    GRANT SELECT, INSERT, UPDATE ON price_books TO credits_app;
    GRANT SELECT, INSERT ON price_items TO credits_app;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP TABLE price_items, price_books;
    DROP FUNCTION price_items_frozen, price_books_lifecycle;
    ALTER TABLE admin_actions DROP CONSTRAINT admin_actions_action_check;
    ALTER TABLE admin_actions ADD CONSTRAINT admin_actions_action_check CHECK (action IN ('adjust', 'freeze',
      'unfreeze', 'anonymize', 'replay_event', 'start_reconciliation', 'request_grant', 'approve_grant',
      'reject_grant', 'create_coupon', 'disable_coupon'));
  `.execute(db);
}
