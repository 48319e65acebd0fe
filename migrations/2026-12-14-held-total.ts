import { type Kysely, type RawBuilder, sql } from 'kysely';
import { BATCH_FUNCTION, DEBIT_FUNCTION } from './2026-12-13-usage-batch.js';

/**
 * The credits an account's active holds reserve, kept on the account (issue 21). Every debit summed the
 * account's active holds (they stop counting at their expiry, so the sum was taken at the instant): a cost
 * that grows with the holds, 0.46 ms for 1,500 of them, as much as the rest of a debit, and on one account
 * it is paid inside the account lock. 1,000 active holds on one account took its spends from 983/s to 820/s
 * (pgbench, 16 clients, a scratch server).
 *
 * `accounts.held` is the credits of the account's holds whose status is `active`, past their expiry or not;
 * a trigger on `holds` keeps it, so every writer of a hold (a debit function, a void, a clawback's shrink,
 * the sweeper) keeps it without knowing, and so would one written later. What the holds reserve at an
 * instant is `held_credits(account, held, now)`: the counter less the holds past their expiry that the
 * sweeper has not marked yet (an index range of the account's active holds up to now: none, or the last
 * minute's, whatever the number of holds). Every reader goes through it, and reads the counter and those
 * holds in one statement, so one snapshot, whoever writes holds meanwhile: both debit functions,
 * shared/accounts' `heldCredits` and the auto top-up sweep's query.
 *
 * The debit functions are 2026-12-13's with that one read changed, replaced in their text (each replaced
 * part must occur exactly once, or the migration stops).
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
  [
    `  -- Credits reserved by active holds, a capture's own hold excluded (a replayed capture's is not active).
  SELECT coalesce(sum(credits), 0) INTO v_held FROM holds
    WHERE account_id = p_account AND status = 'active' AND expires_at > p_now
      AND (p_kind <> 'capture' OR id <> p_hold);
`,
    `  -- Credits reserved by active holds, a capture's own hold excluded (a replayed capture's is not active):
  -- the counter, the holds past their expiry and the capture's own hold read in one statement.
  v_held := (SELECT held_credits(id, held, p_now) FROM accounts WHERE id = p_account)
    - CASE WHEN p_kind = 'capture' THEN coalesce((SELECT credits FROM holds
        WHERE id = p_hold AND status = 'active' AND expires_at > p_now), 0) ELSE 0 END;
`,
  ],
];

const BATCH_EDITS: [string, string][] = [
  [
    `        (SELECT coalesce(sum(credits), 0)::bigint FROM holds
          WHERE account_id = a.id AND status = 'active' AND expires_at > p_now) AS held,
`,
    `        held_credits(a.id, a.held, p_now) AS held,
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
  CREATE TRIGGER holds_keep_held AFTER INSERT OR DELETE OR UPDATE OF status, credits, account_id ON holds
    FOR EACH ROW EXECUTE FUNCTION holds_keep_held();

  -- What the account's active holds reserve at p_now, from its counter (p_held: accounts.held, read in
  -- the same statement or under the account lock): the counter less the holds past their expiry that
  -- are still marked active.
  CREATE FUNCTION held_credits(p_account uuid, p_held bigint, p_now timestamptz) RETURNS bigint
  LANGUAGE plpgsql STABLE AS $fn$
  BEGIN
    RETURN p_held - coalesce((SELECT sum(credits) FROM holds
      WHERE account_id = p_account AND status = 'active' AND expires_at <= p_now), 0);
  END $fn$;
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
    DROP FUNCTION holds_keep_held();
    ALTER TABLE accounts DROP COLUMN held;
  `.execute(db);
}
