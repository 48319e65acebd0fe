import { type Kysely, type RawBuilder, sql } from 'kysely';
import { BATCH_FUNCTION, DEBIT_FUNCTION } from './2026-12-13-usage-batch.js';

/**
 * The credits an account's active holds reserve, kept on the account (issue 21). Every debit summed the
 * account's active holds (they stop counting at their expiry, so the sum was taken at the instant): a cost
 * that grows with the holds, 0.46 ms for 1,500 of them, as much as the rest of a debit, and on one account
 * it is paid inside the account lock. 1,000 active holds on one account took its spends from 983/s to 820/s
 * (pgbench, 16 clients, a scratch server).
 *
 * `accounts.held` is the credits of the account's holds whose status is `active`, past their expiry or not.
 * `debit_credits`, the one writer that creates and captures holds, counts them in the statement that creates
 * the hold and in the account write a capture makes anyway; a trigger on `holds` keeps it through every
 * other change (a void, a clawback's shrink, the sweeper's expiry, a deletion), so those writers keep it
 * without knowing. The trigger did it all at first: that cost a hold created and captured 15 % (an account
 * write more for each, pgbench on 1,000 accounts); counted in the function, 3 %. What the holds reserve at an
 * instant is `held_credits(account, held, now)`: the counter less the holds past their expiry that the
 * sweeper has not marked yet (an index range of the account's active holds up to now: none, or the last
 * minute's, whatever the number of holds). Every reader goes through it, and reads the counter and those
 * holds in one statement, so one snapshot, whoever writes holds meanwhile: both debit functions,
 * shared/accounts' `heldCredits` and the auto top-up sweep's query.
 *
 * The debit functions are 2026-12-13's with that read and the counting changed, replaced in their text (each
 * replaced part must occur exactly once, or the migration stops). `held_credits` is a SQL function returning
 * a table, which Postgres inlines into the statement: the account and what is held come in one read, as
 * cheap as the sum they replace when an account has no holds (pgbench, interleaved rounds).
 *
 * A deploy runs this before the functions' new code: until the sweeper's is in place, the old one marks
 * holds expired in one statement without the accounts' locks, and the trigger then writes their accounts'
 * rows, so it can deadlock with a capture or void of one of them. Postgres ends one of the two: the sweep
 * runs again a minute later; the request fails with 500 and its retry replays nothing twice. No read is
 * inexact meanwhile (one statement each, above).
 *
 * Frozen in time: never import application code here (2026-12-13's text, imported, is frozen too).
 */

/** `text` with `from` replaced by `to`; `from` must occur in it exactly once. */
function replaceOnce(text: string, from: string, to: string): string {
  const at = text.indexOf(from);
  if (at < 0 || text.indexOf(from, at + 1) >= 0) {
    throw new Error(`2026-12-14: expected exactly one ${JSON.stringify(from.slice(0, 60))}`);
  }
  return text.slice(0, at) + to + text.slice(at + from.length);
}

/** A function's text with its edits, as CREATE OR REPLACE (its grants stay). */
function restated(db: Kysely<unknown>, fn: RawBuilder<unknown>, edits: readonly [string, string][]) {
  let text = fn.compile(db).sql.replace(/CREATE (OR REPLACE )?FUNCTION/, 'CREATE OR REPLACE FUNCTION');
  for (const [from, to] of edits) text = replaceOnce(text, from, to);
  return sql.raw(text);
}

const DEBIT_EDITS: [string, string][] = [
  // Generic plans without sequential scans, as debit_usage has (see 2026-12-13). With custom plans the plan
  // cache planned the function's statements again on every call, because a custom plan folds the kind and
  // the hold's state into constants and so always looks cheaper than the generic one: 0.43 ms a capture
  // against 0.17 ms (pg_stat_statements, the two interleaved in one pgbench run on a scratch server). A
  // generic plan is made once per connection, maybe while the tables are small, and kept as they grow:
  // without sequential scans every statement goes by its key's index whatever the sizes then.
  [
    `) RETURNS jsonb LANGUAGE plpgsql AS $fn$`,
    `) RETURNS jsonb LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $fn$`,
  ],
  [
    `  v_previous record;
  v_held bigint;
`,
    `  v_previous record;
  v_held bigint;
  v_read record;
`,
  ],
  [
    `  SELECT * INTO v_account FROM accounts WHERE id = p_account;
  IF NOT FOUND THEN RETURN jsonb_build_object('status', 'account_not_found'); END IF;
  v_account_json := jsonb_build_object('id', v_account.id, 'balance', v_account.balance,
    'version', v_account.version);
  -- Credits reserved by active holds, a capture's own hold excluded (a replayed capture's is not active).
  SELECT coalesce(sum(credits), 0) INTO v_held FROM holds
    WHERE account_id = p_account AND status = 'active' AND expires_at > p_now
      AND (p_kind <> 'capture' OR id <> p_hold);
`,
    `  -- The account, and the credits its active holds reserve, a capture's own hold excluded (a replayed
  -- capture's is not active): one statement, so the counter and the holds are read in one snapshot.
  SELECT a AS account, h.held - CASE WHEN p_kind = 'capture' THEN coalesce((SELECT credits FROM holds
      WHERE id = p_hold AND status = 'active' AND expires_at > p_now), 0) ELSE 0 END AS held
    INTO v_read FROM accounts a, held_credits(a.id, a.held, p_now) h WHERE a.id = p_account;
  IF NOT FOUND THEN RETURN jsonb_build_object('status', 'account_not_found'); END IF;
  v_account := v_read.account;
  v_held := v_read.held;
  v_account_json := jsonb_build_object('id', v_account.id, 'balance', v_account.balance,
    'version', v_account.version);
`,
  ],
  // A capture takes its hold off the counter in the account write it makes anyway.
  [
    `      UPDATE accounts SET balance = balance - v_take, version = version + 1, updated_at = now()
`,
    `      UPDATE accounts SET balance = balance - v_take, version = version + 1, updated_at = now(),
          held = held - CASE WHEN p_kind = 'capture' AND v_hold.status = 'active' THEN v_hold.credits ELSE 0 END
`,
  ],
  // A hold's creation adds it to the counter in the same statement; a capture that takes nothing takes it off.
  [
    `  IF p_kind = 'hold' THEN
    INSERT INTO holds (account_id, idempotency_key, request_hash, sku, price_version, requested_credits,
                       credits, description, metadata, expires_at)
      VALUES (p_account, p_reference, p_hash, p_item ->> 'sku', p_item ->> 'priceVersion', p_credits,
              p_credits, p_item ->> 'description', nullif(p_item -> 'metadata', 'null'),
              p_now + make_interval(secs => (p_item ->> 'ttlSeconds')::int))
      RETURNING * INTO v_hold;
    v_take := p_credits;
  ELSIF p_kind = 'capture' THEN
`,
    `  IF p_kind = 'hold' THEN
    WITH created AS (
      INSERT INTO holds (account_id, idempotency_key, request_hash, sku, price_version, requested_credits,
                         credits, description, metadata, expires_at)
        VALUES (p_account, p_reference, p_hash, p_item ->> 'sku', p_item ->> 'priceVersion', p_credits,
                p_credits, p_item ->> 'description', nullif(p_item -> 'metadata', 'null'),
                p_now + make_interval(secs => (p_item ->> 'ttlSeconds')::int))
        RETURNING *
    ), counted AS (
      UPDATE accounts SET held = held + p_credits WHERE id = p_account
    )
    SELECT * INTO v_hold FROM created;
    v_take := p_credits;
  ELSIF p_kind = 'capture' THEN
    IF v_take = 0 AND v_hold.status = 'active' THEN
      UPDATE accounts SET held = held - v_hold.credits WHERE id = p_account;
    END IF;
`,
  ],
];

const BATCH_EDITS: [string, string][] = [
  [
    `        (SELECT coalesce(sum(credits), 0)::bigint FROM holds
          WHERE account_id = a.id AND status = 'active' AND expires_at > p_now) AS held,
`,
    `        (SELECT held FROM held_credits(a.id, a.held, p_now)) AS held,
`,
  ],
];

/**
 * The counter, filled in, its trigger and its reader. Exported for tests/integration/usage-batch-equivalence,
 * whose database migrated down to 2026-12-12 gets it too, as the application code reads it.
 */
export const HELD_COUNTER = sql`
  -- No hold changes while the counters are filled in, until the trigger that keeps them is in place. The
  -- accounts first: a transaction that writes a hold reads its account before (the other order could
  -- deadlock with one). And no waiting long behind another transaction while every account read queues.
  SET LOCAL lock_timeout = '10s';
  ALTER TABLE accounts ADD COLUMN held bigint NOT NULL DEFAULT 0 CONSTRAINT accounts_held_check CHECK (held >= 0);
  LOCK TABLE holds IN SHARE MODE;
  UPDATE accounts a SET held = h.credits
    FROM (SELECT account_id, sum(credits) AS credits FROM holds WHERE status = 'active' GROUP BY 1) h
    WHERE a.id = h.account_id;

  CREATE FUNCTION holds_keep_held() RETURNS trigger LANGUAGE plpgsql AS $fn$
  DECLARE
    v_was bigint := CASE WHEN TG_OP <> 'INSERT' AND OLD.status = 'active' THEN OLD.credits ELSE 0 END;
    v_is bigint := CASE WHEN TG_OP <> 'DELETE' AND NEW.status = 'active' THEN NEW.credits ELSE 0 END;
  BEGIN
    IF TG_OP = 'UPDATE' AND OLD.account_id <> NEW.account_id THEN
      RAISE EXCEPTION 'hold %: a hold stays on its account', OLD.id;
    END IF;
    IF v_is <> v_was THEN
      UPDATE accounts SET held = held + v_is - v_was WHERE id = coalesce(NEW.account_id, OLD.account_id);
    END IF;
    RETURN NULL;
  END $fn$;
  -- debit_credits, the one writer that creates and captures holds, keeps the counter itself in the account
  -- write it makes then; the trigger keeps it through every other change of a hold (a void, a clawback's
  -- shrink, the sweeper's expiry, a deletion by the owner).
  CREATE TRIGGER holds_keep_held AFTER UPDATE OF status, credits, account_id ON holds
    FOR EACH ROW WHEN (NEW.status <> 'captured' AND (OLD.status = 'active' OR NEW.status = 'active'))
    EXECUTE FUNCTION holds_keep_held();
  CREATE TRIGGER holds_keep_held_deleted AFTER DELETE ON holds
    FOR EACH ROW WHEN (OLD.status = 'active') EXECUTE FUNCTION holds_keep_held();

  -- What the account's active holds reserve at p_now, from its counter (p_held: accounts.held, read in
  -- the same statement): the counter less the holds past their expiry that are still marked active. A SQL
  -- function of one SELECT returning a table, so Postgres inlines it into the statement that reads it
  -- (from accounts a, held_credits(a.id, a.held, now) h): no call, one snapshot.
  CREATE FUNCTION held_credits(p_account uuid, p_held bigint, p_now timestamptz) RETURNS TABLE (held bigint)
  LANGUAGE sql STABLE AS $fn$
    SELECT p_held - coalesce(sum(credits), 0)::bigint FROM holds
      WHERE account_id = p_account AND status = 'active' AND expires_at <= p_now
  $fn$;
  REVOKE ALL ON FUNCTION held_credits(uuid, bigint, timestamptz) FROM PUBLIC;
  GRANT EXECUTE ON FUNCTION held_credits(uuid, bigint, timestamptz) TO credits_app;
`;

export async function up(db: Kysely<unknown>): Promise<void> {
  await HELD_COUNTER.execute(db);
  await restated(db, DEBIT_FUNCTION, DEBIT_EDITS).execute(db);
  await restated(db, BATCH_FUNCTION, BATCH_EDITS).execute(db);
}

/** Back to 2026-12-13: the debit functions sum the holds again; the counter, its trigger and reader go. */
export async function down(db: Kysely<unknown>): Promise<void> {
  await restated(db, DEBIT_FUNCTION, []).execute(db);
  await restated(db, BATCH_FUNCTION, []).execute(db);
  await sql`
    DROP FUNCTION held_credits(uuid, bigint, timestamptz);
    DROP TRIGGER holds_keep_held ON holds;
    DROP TRIGGER holds_keep_held_deleted ON holds;
    DROP FUNCTION holds_keep_held();
    ALTER TABLE accounts DROP COLUMN held;
  `.execute(db);
}
