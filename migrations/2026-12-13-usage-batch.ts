import { type Kysely, sql } from 'kysely';
import { USAGE_FUNCTION } from './2026-12-12-debit-function.js';

/**
 * A usage batch decided in memory and written by set (issue 21). `debit_usage` called `debit_credits` once per
 * event: a dozen statements each (the account read again, its holds summed again, its open grants, plan and
 * day's total read again, then five tables written by a statement of their own), about 0.45 ms an event.
 * Now it reads each account's state once, after the locks (one statement for the whole batch), decides every
 * event in the batch's order in PL/pgSQL variables (the same checks in the same order as `debit_credits`, the
 * draws on the grants in burn order, the caps and the balance running), and writes what it decided by set:
 * the accounts, the entries, their draws, the grants, the day's totals, the usage events and their hours'
 * rollups, one statement each. The balance and cap events are written as they are decided (rare).
 *
 * The answers are debit_credits' answers, event by event, as before, so the caller is unchanged; a test
 * (usage-batch-equivalence) runs the same histories through this and through the per-event function of
 * 2026-12-12 (this migration migrated down) and compares every row.
 *
 * `debit_credits` loses its usage branch, which only `debit_usage` called: one way to debit a usage event.
 *
 * Frozen in time: never import application code here (the previous migration's text is frozen too).
 */
const BATCH_FUNCTION = sql`
CREATE OR REPLACE FUNCTION debit_usage(p_events jsonb, p_plans jsonb, p_now timestamptz, p_check_prices boolean)
RETURNS jsonb
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $fn$
DECLARE
  v_month_start date := date_trunc('month', p_now AT TIME ZONE 'UTC')::date;
  v_today date := (p_now AT TIME ZONE 'UTC')::date;
  v_ids jsonb;
  v_accounts uuid[];
  v_answers jsonb[] := array_fill(NULL::jsonb, ARRAY[jsonb_array_length(p_events)]);
  v record;
  s record;
  v_account accounts;
  -- The running state of the account whose events are being decided.
  v_balance bigint;
  v_version bigint;
  v_grants uuid[];
  v_remaining bigint[];
  v_used_day bigint;
  v_used_month bigint;
  v_seen jsonb;
  v_stop boolean;
  v_plan jsonb;
  -- One event's decision.
  v_previous jsonb;
  v_day_cap bigint;
  v_month_cap bigint;
  v_month_source text;
  v_day_left bigint;
  v_month_left bigint;
  v_room bigint;
  v_threshold bigint;
  v_before bigint;
  v_after bigint;
  v_events int;
  v_entry bigint;
  v_need bigint;
  v_draw bigint;
  v_answer jsonb;
  -- What is written at the end, by set (arrays appended in place; null until the first append).
  e_id bigint[];
  e_account uuid[];
  e_amount bigint[];
  e_balance bigint[];
  e_reference text[];
  d_entry bigint[];
  d_grant uuid[];
  d_amount bigint[];
  a_id uuid[];
  a_balance bigint[];
  a_version bigint[];
  u_ord int[];
  u_account uuid[];
  u_entry bigint[];
BEGIN
  -- Each priced event's version must have been active at its occurredAt. A version is active over one
  -- interval, so it was over all of a version's events when it was at the first and at the last of them.
  IF p_check_prices AND EXISTS (
       SELECT FROM (SELECT e -> 'item' ->> 'priceVersion' AS version,
                           min((e -> 'item' ->> 'occurredAt')::timestamptz) AS first,
                           max((e -> 'item' ->> 'occurredAt')::timestamptz) AS last
                    FROM jsonb_array_elements(p_events) AS e
                    WHERE e -> 'item' ->> 'priceVersion' IS NOT NULL GROUP BY 1) AS versions
       WHERE NOT (price_version_active(version, first) AND price_version_active(version, last))) THEN
    RETURN '"prices_changed"';
  END IF;
  SELECT coalesce(jsonb_object_agg(external_user_id, id), '{}'), coalesce(array_agg(id), '{}')
    INTO v_ids, v_accounts FROM accounts
    WHERE external_user_id IN (SELECT DISTINCT e ->> 'user' FROM jsonb_array_elements(p_events) AS e);
  -- The accounts locked first, in the order of their lock keys (so two batches, or a batch and a single
  -- debit, never deadlock); everything below reads after the locks.
  PERFORM pg_advisory_xact_lock(1, key) FROM (
    SELECT DISTINCT hashtext(id::text) AS key FROM unnest(v_accounts) AS id ORDER BY 1) AS keys;

  -- The events in the batch's order, account by account, each with what its id already recorded (and
  -- whether the batch repeats it); each account's state is read once, at its first event.
  FOR v IN
    SELECT e.ord, e.account_id, e.reference, e.hash, e.credits,
           count(*) OVER (PARTITION BY e.account_id, e.reference) > 1 AS repeated,
           (SELECT jsonb_build_array(u.payload_hash, u.credits) FROM usage_events u
             WHERE u.account_id = e.account_id AND u.event_id = e.reference) AS recorded
    FROM (SELECT x.ord::int AS ord, (v_ids ->> (x.value ->> 'user'))::uuid AS account_id,
                 x.value ->> 'reference' AS reference, x.value ->> 'hash' AS hash,
                 (x.value ->> 'credits')::bigint AS credits
          FROM jsonb_array_elements(p_events) WITH ORDINALITY AS x(value, ord)) AS e
    WHERE e.account_id IS NOT NULL
    ORDER BY e.account_id, e.ord
  LOOP
    IF v_account.id IS DISTINCT FROM v.account_id THEN
      -- The next account: what the previous one ends at, then this one's state: the account, the credits
      -- its active holds reserve, whether a grant of it is expired by now (the caller writes those off
      -- first), its plan row, its open grants in burn order, and its totals this month and today.
      IF v_version <> v_account.version THEN
        a_id := a_id || v_account.id;
        a_balance := a_balance || v_balance;
        a_version := a_version || v_version;
      END IF;
      SELECT a AS account,
        (SELECT coalesce(sum(credits), 0) FROM holds
          WHERE account_id = a.id AND status = 'active' AND expires_at > p_now) AS held,
        EXISTS (SELECT FROM credit_grants WHERE account_id = a.id AND open AND expires_at <= p_now)
          AS expiry_due,
        p.plan_id, p.allowance_month, p.allowance_granted, p.monthly_budget, p.low_balance_threshold,
        g.ids AS grant_ids, g.remaining AS grant_remaining, d.used_month, d.used_day
        INTO s
        FROM accounts a
        LEFT JOIN account_plans p ON p.account_id = a.id,
        LATERAL (SELECT array_agg(id ORDER BY expires_at ASC NULLS LAST, (category = 'paid') ASC, created_at, id)
                          AS ids,
                        array_agg(remaining ORDER BY expires_at ASC NULLS LAST, (category = 'paid') ASC,
                                  created_at, id) AS remaining
                 FROM credit_grants WHERE account_id = a.id AND open) AS g,
        LATERAL (SELECT coalesce(sum(credits), 0) AS used_month,
                        coalesce(sum(credits) FILTER (WHERE day = v_today), 0) AS used_day
                 FROM debit_days WHERE account_id = a.id AND day >= v_month_start) AS d
        WHERE a.id = v.account_id;
      v_account := s.account;
      v_balance := v_account.balance;
      v_version := v_account.version;
      v_grants := coalesce(s.grant_ids, '{}');
      v_remaining := coalesce(s.grant_remaining, '{}');
      v_used_day := s.used_day;
      v_used_month := s.used_month;
      v_seen := '{}';
      v_stop := false;
      v_plan := coalesce(p_plans -> 'plans' -> s.plan_id, p_plans -> 'plans' -> (p_plans ->> 'default'));
    END IF;
    -- The event, decided as debit_credits decides one, in its order of checks. An id the batch repeats
    -- finds what its earlier occurrence recorded.
    v_previous := CASE WHEN v.repeated THEN coalesce(v_seen -> v.reference, v.recorded) ELSE v.recorded END;
    v_day_left := NULL;
    v_month_left := NULL;
    v_answer := NULL;
    IF v_stop THEN
      -- After an event that asked for a preparation: sent again once it is done.
      v_answer := jsonb_build_object('status', 'deferred');
    ELSIF v_previous IS NOT NULL THEN
      IF v_previous ->> 0 IS DISTINCT FROM v.hash THEN
        v_answer := jsonb_build_object('status', 'idempotency_conflict');
      ELSE
        v_answer := jsonb_build_object('status', 'replayed', 'account', jsonb_build_object('id', v_account.id,
          'balance', v_balance, 'version', v_version), 'credits', v_previous -> 1);
      END IF;
    ELSIF v_account.status = 'frozen' THEN
      v_answer := jsonb_build_object('status', 'account_frozen');
    ELSIF v.credits IS NULL THEN
      v_answer := jsonb_build_object('status', 'unpriced');
    ELSIF s.expiry_due THEN
      v_answer := jsonb_build_object('status', 'expiry_due', 'accountId', v_account.id);
      v_stop := true;
    ELSIF p_plans IS NOT NULL AND v.credits > 0 AND v_plan ? 'monthlyAllowance'
          AND (v_plan ->> 'monthlyAllowance')::bigint >
              (CASE WHEN s.allowance_month = to_char(p_now AT TIME ZONE 'UTC', 'YYYY-MM')
                    THEN s.allowance_granted ELSE 0 END) THEN
      v_answer := jsonb_build_object('status', 'allowance_due', 'accountId', v_account.id);
      v_stop := true;
    ELSE
      -- The caps: the plan's daily one, and the plan's monthly one or the user's lower budget.
      IF p_plans IS NOT NULL AND v.credits > 0 THEN
        v_day_cap := (v_plan -> 'caps' ->> 'daily')::bigint;
        v_month_cap := (v_plan -> 'caps' ->> 'monthly')::bigint;
        v_month_source := 'plan';
        IF s.monthly_budget IS NOT NULL AND (v_month_cap IS NULL OR s.monthly_budget < v_month_cap) THEN
          v_month_cap := s.monthly_budget;
          v_month_source := 'budget';
        END IF;
        IF v_day_cap IS NOT NULL OR v_month_cap IS NOT NULL THEN
          v_day_left := CASE WHEN v_day_cap IS NOT NULL THEN greatest(v_day_cap - v_used_day - s.held, 0) END;
          v_month_left := CASE WHEN v_month_cap IS NOT NULL
                               THEN greatest(v_month_cap - v_used_month - s.held, 0) END;
          v_room := least(v_day_left, v_month_left);
          IF v.credits > v_room THEN
            v_answer := jsonb_build_object('status', 'spend_cap_reached', 'cap', CASE WHEN v_day_left = v_room
              THEN jsonb_build_object('period', 'day', 'limit', v_day_cap, 'used', v_used_day, 'source', 'plan',
                'resetsAt', v_today + 1, 'held', s.held, 'remaining', v_day_left)
              ELSE jsonb_build_object('period', 'month', 'limit', v_month_cap, 'used', v_used_month,
                'source', v_month_source, 'resetsAt', (v_month_start + interval '1 month')::date,
                'held', s.held, 'remaining', v_month_left) END);
          END IF;
        END IF;
      END IF;
      IF v_answer IS NULL AND v_balance - s.held < v.credits THEN
        v_answer := jsonb_build_object('status', 'insufficient_credits', 'balance', v_balance, 'held', s.held);
      END IF;
    END IF;

    IF v_answer IS NULL THEN
      -- Applied: the entry and its draws on the open grants in burn order (none is expired: checked).
      v_before := v_balance - s.held;
      v_entry := NULL;
      IF v.credits > 0 THEN
        v_entry := nextval('ledger_entries_id_seq');
        v_balance := v_balance - v.credits;
        v_version := v_version + 1;
        e_id := e_id || v_entry;
        e_account := e_account || v_account.id;
        e_amount := e_amount || -v.credits;
        e_balance := e_balance || v_balance;
        e_reference := e_reference || v.reference;
        v_need := v.credits;
        FOR k IN 1 .. cardinality(v_grants) LOOP
          EXIT WHEN v_need = 0;
          CONTINUE WHEN v_remaining[k] = 0;
          v_draw := least(v_remaining[k], v_need);
          v_remaining[k] := v_remaining[k] - v_draw;
          v_need := v_need - v_draw;
          d_entry := d_entry || v_entry;
          d_grant := d_grant || v_grants[k];
          d_amount := d_amount || v_draw;
        END LOOP;
        v_used_day := v_used_day + v.credits;
        v_used_month := v_used_month + v.credits;
      END IF;
      u_ord := u_ord || v.ord;
      u_account := u_account || v_account.id;
      u_entry := u_entry || v_entry;
      IF v.repeated THEN
        v_seen := v_seen || jsonb_build_object(v.reference, jsonb_build_array(v.hash, v.credits));
      END IF;

      -- What follows from it, when a plan applies: balance and cap events (the outbox).
      v_after := v_balance - s.held;
      v_events := 0;
      IF p_plans IS NOT NULL AND v.credits > 0 THEN
        v_threshold := coalesce(s.low_balance_threshold, (v_plan ->> 'lowBalanceThreshold')::bigint);
        IF v_threshold IS NOT NULL AND v_before >= v_threshold AND v_after < v_threshold THEN
          PERFORM debit_event('balance.low', v_account, jsonb_build_object('available', v_after,
            'balance', v_balance, 'threshold', v_threshold));
          v_events := v_events + 1;
        END IF;
        IF v_before > 0 AND v_after <= 0 THEN
          PERFORM debit_event('balance.depleted', v_account, jsonb_build_object('available', v_after,
            'balance', v_balance));
          v_events := v_events + 1;
        END IF;
        IF v_day_left > 0 AND v_day_left - v.credits <= 0 THEN
          PERFORM debit_event('spend_cap.reached', v_account, jsonb_build_object('period', 'day',
            'source', 'plan', 'cap', v_day_cap,
            'resetsAt', to_char(v_today + 1, 'YYYY-MM-DD"T00:00:00.000Z"')));
          v_events := v_events + 1;
        END IF;
        IF v_month_left > 0 AND v_month_left - v.credits <= 0 THEN
          PERFORM debit_event('spend_cap.reached', v_account, jsonb_build_object('period', 'month',
            'source', v_month_source, 'cap', v_month_cap,
            'resetsAt', to_char(v_month_start + interval '1 month', 'YYYY-MM-DD"T00:00:00.000Z"')));
          v_events := v_events + 1;
        END IF;
      END IF;
      v_answer := jsonb_build_object('status', 'applied', 'account', jsonb_build_object('id', v_account.id,
          'balance', v_balance, 'version', v_version), 'held', s.held, 'availableAfter', v_after,
        'events', v_events, 'credits', v.credits,
        'topUp', p_plans IS NOT NULL AND v.credits > 0 AND v_account.stripe_payment_method_id IS NOT NULL);
      IF v_entry IS NOT NULL THEN
        v_answer := v_answer || jsonb_build_object('entry', jsonb_build_object('id', v_entry,
          'amount', -v.credits, 'balance_after', v_balance, 'created_at', now()));
      END IF;
    END IF;
    v_answers[v.ord] := v_answer;
  END LOOP;
  IF v_version <> v_account.version THEN
    a_id := a_id || v_account.id;
    a_balance := a_balance || v_balance;
    a_version := a_version || v_version;
  END IF;

  -- The writes, by set, in the order of the foreign keys.
  IF e_id IS NOT NULL THEN
    UPDATE accounts a SET balance = n.balance, version = n.version, updated_at = now()
      FROM unnest(a_id, a_balance, a_version) AS n(id, balance, version) WHERE a.id = n.id;
    INSERT INTO ledger_entries (id, account_id, amount, balance_after, kind, reference)
      SELECT id, account_id, amount, balance_after, 'usage', reference
      FROM unnest(e_id, e_account, e_amount, e_balance, e_reference)
        AS n(id, account_id, amount, balance_after, reference)
      ORDER BY id;
    INSERT INTO grant_allocations (entry_id, grant_id, amount)
      SELECT * FROM unnest(d_entry, d_grant, d_amount);
    UPDATE credit_grants g SET remaining = g.remaining - d.amount
      FROM (SELECT grant_id, sum(amount) AS amount FROM unnest(d_grant, d_amount) AS n(grant_id, amount)
            GROUP BY grant_id) AS d
      WHERE g.id = d.grant_id;
    INSERT INTO debit_days (account_id, day, credits)
      SELECT account_id, v_today, -sum(amount) FROM unnest(e_account, e_amount) AS n(account_id, amount)
      GROUP BY account_id
      ON CONFLICT (account_id, day) DO UPDATE SET credits = debit_days.credits + excluded.credits;
  END IF;
  IF u_ord IS NOT NULL THEN
    INSERT INTO usage_events (account_id, event_id, payload_hash, sku, price_version, credits, entry_id,
                              occurred_at)
      SELECT n.account_id, e.value ->> 'reference', e.value ->> 'hash', e.value -> 'item' ->> 'sku',
             e.value -> 'item' ->> 'priceVersion', (e.value ->> 'credits')::bigint, n.entry_id,
             (e.value -> 'item' ->> 'occurredAt')::timestamptz
      FROM unnest(u_ord, u_account, u_entry) AS n(ord, account_id, entry_id)
      JOIN jsonb_array_elements(p_events) WITH ORDINALITY AS e(value, ord) ON e.ord = n.ord;
    INSERT INTO usage_rollups AS r (account_id, hour, sku, credits, events, input_tokens, cache_read_tokens,
                                    cache_write_tokens, output_tokens, reasoning_tokens, units)
      SELECT n.account_id,
             date_trunc('hour', (e.value -> 'item' ->> 'occurredAt')::timestamptz AT TIME ZONE 'UTC')
               AT TIME ZONE 'UTC',
             coalesce(e.value -> 'item' ->> 'sku', ''), sum((e.value ->> 'credits')::bigint), count(*),
             sum(coalesce((e.value -> 'item' -> 'usage' ->> 'inputTokens')::bigint, 0)),
             sum(coalesce((e.value -> 'item' -> 'usage' ->> 'cacheReadTokens')::bigint, 0)),
             sum(coalesce((e.value -> 'item' -> 'usage' ->> 'cacheWriteTokens')::bigint, 0)),
             sum(coalesce((e.value -> 'item' -> 'usage' ->> 'outputTokens')::bigint, 0)),
             sum(coalesce((e.value -> 'item' -> 'usage' ->> 'reasoningTokens')::bigint, 0)),
             sum(coalesce((e.value -> 'item' -> 'usage' ->> 'units')::bigint, 0))
      FROM unnest(u_ord, u_account) AS n(ord, account_id)
      JOIN jsonb_array_elements(p_events) WITH ORDINALITY AS e(value, ord) ON e.ord = n.ord
      GROUP BY 1, 2, 3
      ON CONFLICT (account_id, hour, sku) DO UPDATE SET credits = r.credits + excluded.credits,
        events = r.events + excluded.events, input_tokens = r.input_tokens + excluded.input_tokens,
        cache_read_tokens = r.cache_read_tokens + excluded.cache_read_tokens,
        cache_write_tokens = r.cache_write_tokens + excluded.cache_write_tokens,
        output_tokens = r.output_tokens + excluded.output_tokens,
        reasoning_tokens = r.reasoning_tokens + excluded.reasoning_tokens, units = r.units + excluded.units;
  END IF;

  -- The events of users with no account.
  FOR k IN 1 .. cardinality(v_answers) LOOP
    IF v_answers[k] IS NULL THEN v_answers[k] := jsonb_build_object('status', 'account_not_found'); END IF;
  END LOOP;
  RETURN to_jsonb(v_answers);
END $fn$`;

export async function up(db: Kysely<unknown>): Promise<void> {
  await BATCH_FUNCTION.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP FUNCTION debit_usage(jsonb, jsonb, timestamptz, boolean)`.execute(db);
  await USAGE_FUNCTION.execute(db);
  await sql`
    REVOKE ALL ON FUNCTION debit_usage(jsonb, jsonb, timestamptz, boolean) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION debit_usage(jsonb, jsonb, timestamptz, boolean) TO credits_app;
  `.execute(db);
}
