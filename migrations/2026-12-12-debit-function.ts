import { type Kysely, sql } from 'kysely';

/**
 * The debit as one server-side call (issue 21): `debit_credits` does a spend, a hold's creation, a hold's
 * capture or a usage event whole (the account lock, the idempotency check, the plan's rate limit and caps, the
 * balance check, the entry with its draws on grants in burn order, the day's total, the kind's own row, and the
 * balance and cap events into the outbox), so the lock is held for one round trip and the commit. It runs with
 * the caller's privileges (the application role's grants apply) and is called by shared/ledger/debit.ts only.
 *
 * It never writes anything before it has decided: a refusal returns `{status}` with what the caller needs for
 * its error, and nothing is written. Two preparations stay with their modules in TypeScript and are asked for
 * instead of done: the month's allowance (`allowance_due`: shared/plans grants it) and the write-off of grants
 * expired by now (`expiry_due`: the ledger's expireDueGrants); the caller does it and calls again.
 *
 * Frozen in time: never import application code here.
 */

/**
 * Whether a price book version was active at an instant (what callers priced a debit by, checked again).
 * PL/pgSQL, not SQL: a SQL function with a subquery is not inlined and is planned again on every call
 * (0.14 ms a usage event, measured); PL/pgSQL keeps its plan for the connection.
 */
const PRICE_FUNCTION = sql`
CREATE FUNCTION price_version_active(p_version text, p_at timestamptz) RETURNS boolean
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
  RETURN EXISTS (SELECT FROM price_books WHERE version = p_version AND activated_at IS NOT NULL
                 AND tstzrange(activated_at, retired_at, '[)') @> p_at);
END $fn$`;

export const DEBIT_FUNCTION = sql`
CREATE FUNCTION debit_credits(
  p_kind text,
  p_user text,
  p_account uuid,
  p_hold uuid,
  p_reference text,
  p_credits bigint,
  p_hash text,
  p_item jsonb,
  p_plans jsonb,
  p_now timestamptz
) RETURNS jsonb LANGUAGE plpgsql AS $fn$
DECLARE
  v_account accounts;
  v_account_json jsonb;
  v_replay boolean;
  v_same boolean;
  v_hold holds;
  v_row account_plans;
  v_plan jsonb;
  v_previous record;
  v_held bigint;
  v_available_before bigint;
  v_take bigint;
  v_admitted bigint;
  v_expired boolean := false;
  v_entry ledger_entries;
  v_limit int;
  v_recent timestamptz[];
  v_month_start date := date_trunc('month', p_now AT TIME ZONE 'UTC')::date;
  v_today date := (p_now AT TIME ZONE 'UTC')::date;
  v_used_month bigint := 0;
  v_used_day bigint := 0;
  v_day_cap bigint;
  v_month_cap bigint;
  v_month_source text;
  v_day_left bigint;
  v_month_left bigint;
  v_room bigint := 9007199254740991;
  v_threshold bigint;
  v_events int := 0;
  v_available_after bigint;
  v_result jsonb;
BEGIN
  -- A hold priced by usage: the version it was priced by must be the one active now (see debit_usage).
  IF p_kind = 'hold' AND p_item ->> 'priceVersion' IS NOT NULL
     AND NOT price_version_active(p_item ->> 'priceVersion', p_now) THEN
    RETURN jsonb_build_object('status', 'prices_changed');
  END IF;
  -- The account, locked (the advisory lock every ledger writer takes), read after the lock.
  IF p_kind = 'capture' THEN
    SELECT * INTO v_hold FROM holds WHERE id = p_hold;
    IF NOT FOUND THEN RETURN jsonb_build_object('status', 'hold_not_found'); END IF;
    p_account := v_hold.account_id;
  ELSIF p_account IS NULL THEN
    SELECT id INTO p_account FROM accounts WHERE external_user_id = p_user;
    IF NOT FOUND THEN RETURN jsonb_build_object('status', 'account_not_found'); END IF;
  END IF;
  PERFORM pg_advisory_xact_lock(1, hashtext(p_account::text));
  SELECT * INTO v_account FROM accounts WHERE id = p_account;
  IF NOT FOUND THEN RETURN jsonb_build_object('status', 'account_not_found'); END IF;
  v_account_json := jsonb_build_object('id', v_account.id, 'balance', v_account.balance,
    'version', v_account.version);
  -- Credits reserved by active holds, a capture's own hold excluded (a replayed capture's is not active).
  SELECT coalesce(sum(credits), 0) INTO v_held FROM holds
    WHERE account_id = p_account AND status = 'active' AND expires_at > p_now
      AND (p_kind <> 'capture' OR id <> p_hold);

  -- Idempotency: the same request again answers the first result; another request with its key is refused.
  IF p_kind = 'spend' THEN
    SELECT id, amount, balance_after, created_at, request_hash INTO v_previous FROM ledger_entries
      WHERE account_id = p_account AND kind = 'spend' AND reference = p_reference;
    IF FOUND THEN
      IF v_previous.request_hash IS DISTINCT FROM p_hash THEN
        RETURN jsonb_build_object('status', 'idempotency_conflict');
      END IF;
      RETURN jsonb_build_object('status', 'replayed', 'account', v_account_json,
        'entry', jsonb_build_object('id', v_previous.id, 'amount', v_previous.amount,
          'balance_after', v_previous.balance_after, 'created_at', v_previous.created_at));
    END IF;
  ELSIF p_kind IN ('hold', 'capture') THEN
    -- A hold's creation is replayed by its key and request; a capture by the hold's capture and its request.
    IF p_kind = 'hold' THEN
      SELECT * INTO v_hold FROM holds WHERE account_id = p_account AND idempotency_key = p_reference;
      v_replay := FOUND;
      v_same := v_hold.request_hash IS NOT DISTINCT FROM p_hash;
    ELSE
      SELECT * INTO v_hold FROM holds WHERE id = p_hold FOR UPDATE;
      v_replay := v_hold.status = 'captured';
      v_same := v_hold.capture_hash IS NOT DISTINCT FROM p_hash;
    END IF;
    IF v_replay THEN
      IF NOT v_same THEN
        RETURN jsonb_build_object('status',
          CASE p_kind WHEN 'hold' THEN 'idempotency_conflict' ELSE 'hold_already_captured' END);
      END IF;
      RETURN jsonb_build_object('status', 'replayed', 'account', v_account_json, 'hold', to_jsonb(v_hold),
        'held', v_held);
    END IF;
    IF p_kind = 'capture' THEN
      IF v_hold.status = 'voided' THEN RETURN jsonb_build_object('status', 'hold_voided'); END IF;
      v_expired := v_hold.status = 'expired' OR v_hold.expires_at <= p_now;
    END IF;
  ELSIF p_kind = 'usage' THEN
    SELECT payload_hash, credits INTO v_previous FROM usage_events
      WHERE account_id = p_account AND event_id = p_reference;
    IF FOUND THEN
      IF v_previous.payload_hash IS DISTINCT FROM p_hash THEN
        RETURN jsonb_build_object('status', 'idempotency_conflict');
      END IF;
      RETURN jsonb_build_object('status', 'replayed', 'account', v_account_json,
        'credits', v_previous.credits);
    END IF;
  ELSE
    RAISE EXCEPTION 'debit_credits: unknown kind %', p_kind;
  END IF;
  -- A capture settles a hold admitted while the account was active: it is not refused for a freeze.
  IF p_kind <> 'capture' AND v_account.status = 'frozen' THEN
    RETURN jsonb_build_object('status', 'account_frozen');
  END IF;
  -- A usage event the caller could not price (no credits): refused for that, after what comes first.
  IF p_credits IS NULL THEN RETURN jsonb_build_object('status', 'unpriced'); END IF;

  -- Grants expired by now are written off first (by the caller), so no draw lands on one.
  IF EXISTS (SELECT FROM credit_grants WHERE account_id = p_account AND open AND expires_at <= p_now) THEN
    RETURN jsonb_build_object('status', 'expiry_due', 'accountId', p_account);
  END IF;

  -- The plan: allowance due, rate limit, caps (a usage event of no credits is not a debit).
  IF p_plans IS NOT NULL AND (p_kind <> 'usage' OR p_credits > 0) THEN
    SELECT * INTO v_row FROM account_plans WHERE account_id = p_account;
    v_plan := coalesce(p_plans -> 'plans' -> v_row.plan_id, p_plans -> 'plans' -> (p_plans ->> 'default'));
    IF v_plan ? 'monthlyAllowance' AND (v_plan ->> 'monthlyAllowance')::bigint >
       (CASE WHEN v_row.allowance_month = to_char(p_now AT TIME ZONE 'UTC', 'YYYY-MM')
             THEN v_row.allowance_granted ELSE 0 END) THEN
      RETURN jsonb_build_object('status', 'allowance_due', 'accountId', p_account);
    END IF;
    IF p_kind IN ('spend', 'hold') AND v_plan ? 'rateLimitPerMinute' THEN
      v_limit := (v_plan ->> 'rateLimitPerMinute')::int;
      SELECT coalesce(array_agg(t ORDER BY t), '{}') INTO v_recent
        FROM unnest(coalesce(v_row.recent_debits, '{}')) AS t WHERE t > p_now - interval '1 minute';
      IF cardinality(v_recent) >= v_limit THEN
        RETURN jsonb_build_object('status', 'rate_limited', 'planId', v_plan ->> 'id', 'limit', v_limit,
          'retryAfterSeconds', greatest(ceil(extract(epoch FROM
            v_recent[cardinality(v_recent) - v_limit + 1] + interval '1 minute' - p_now)), 1));
      END IF;
      v_recent := (v_recent || p_now)[greatest(cardinality(v_recent) + 2 - v_limit, 1):];
    END IF;
    -- The caps: the plan's daily one, and the plan's monthly one or the user's lower budget.
    v_day_cap := (v_plan -> 'caps' ->> 'daily')::bigint;
    v_month_cap := (v_plan -> 'caps' ->> 'monthly')::bigint;
    v_month_source := 'plan';
    IF v_row.monthly_budget IS NOT NULL AND (v_month_cap IS NULL OR v_row.monthly_budget < v_month_cap) THEN
      v_month_cap := v_row.monthly_budget;
      v_month_source := 'budget';
    END IF;
    IF v_day_cap IS NOT NULL OR v_month_cap IS NOT NULL THEN
      SELECT coalesce(sum(credits), 0), coalesce(sum(credits) FILTER (WHERE day = v_today), 0)
        INTO v_used_month, v_used_day
        FROM debit_days WHERE account_id = p_account AND day >= v_month_start;
      -- (greatest and least skip a null: a cap that is not there leaves its side null.)
      v_day_left := CASE WHEN v_day_cap IS NOT NULL THEN greatest(v_day_cap - v_used_day - v_held, 0) END;
      v_month_left := CASE WHEN v_month_cap IS NOT NULL THEN greatest(v_month_cap - v_used_month - v_held, 0) END;
      v_room := least(v_day_left, v_month_left);
      IF p_kind <> 'capture' AND p_credits > v_room THEN
        RETURN jsonb_build_object('status', 'spend_cap_reached', 'cap', CASE WHEN v_day_left = v_room
          THEN jsonb_build_object('period', 'day', 'limit', v_day_cap, 'used', v_used_day, 'source', 'plan',
            'resetsAt', v_today + 1, 'held', v_held, 'remaining', v_day_left)
          ELSE jsonb_build_object('period', 'month', 'limit', v_month_cap, 'used', v_used_month,
            'source', v_month_source, 'resetsAt', (v_month_start + interval '1 month')::date, 'held', v_held,
            'remaining', v_month_left) END);
      END IF;
    END IF;
  END IF;

  -- The balance: a spend, hold or usage event must fit in what is available; a capture takes what it can.
  v_available_before := v_account.balance - v_held - CASE WHEN p_kind = 'capture' AND NOT v_expired
                                                         THEN v_hold.credits ELSE 0 END;
  IF p_kind = 'capture' THEN
    v_admitted := least(p_credits, v_room);
    v_take := least(v_admitted, greatest(v_account.balance - v_held, 0));
  ELSE
    IF v_account.balance - v_held < p_credits THEN
      RETURN jsonb_build_object('status', 'insufficient_credits', 'balance', v_account.balance,
        'held', v_held);
    END IF;
    v_take := CASE WHEN p_kind = 'hold' THEN 0 ELSE p_credits END;
  END IF;

  -- Decided: the writes.
  IF v_take > 0 THEN
    -- One statement: the balance, the entry, its draws on the open grants in burn order (none is expired:
    -- checked above) and the day's total.
    WITH moved AS (
      UPDATE accounts SET balance = balance - v_take, version = version + 1, updated_at = now()
        WHERE id = p_account RETURNING balance, version
    ), entry AS (
      INSERT INTO ledger_entries (account_id, amount, balance_after, kind, reference, request_hash,
                                  description, metadata)
        SELECT p_account, -v_take, moved.balance,
               CASE p_kind WHEN 'spend' THEN 'spend' WHEN 'capture' THEN 'hold_capture' ELSE 'usage' END,
               CASE WHEN p_kind = 'capture' THEN p_hold::text ELSE p_reference END,
               CASE WHEN p_kind = 'spend' THEN p_hash END,
               CASE WHEN p_kind = 'spend' THEN p_item ->> 'description' END,
               CASE WHEN p_kind = 'spend' THEN nullif(p_item -> 'metadata', 'null') END
        FROM moved
        RETURNING *
    ), draws AS (
      SELECT id, least(remaining, v_take - (running - remaining)) AS amount FROM (
        SELECT id, remaining, sum(remaining) OVER (ORDER BY expires_at ASC NULLS LAST, (category = 'paid') ASC,
                                                   created_at, id) AS running
        FROM credit_grants WHERE account_id = p_account AND open) AS open_grants
      WHERE running - remaining < v_take
    ), allocated AS (
      INSERT INTO grant_allocations (entry_id, grant_id, amount)
        SELECT entry.id, draws.id, draws.amount FROM entry, draws
    ), drawn AS (
      UPDATE credit_grants g SET remaining = g.remaining - draws.amount FROM draws WHERE g.id = draws.id
    ), counted AS (
      INSERT INTO debit_days (account_id, day, credits) VALUES (p_account, v_today, v_take)
        ON CONFLICT (account_id, day) DO UPDATE SET credits = debit_days.credits + excluded.credits
    )
    SELECT entry.* INTO v_entry FROM entry;
    v_account.balance := v_entry.balance_after;
    v_account.version := v_account.version + 1;
  END IF;
  IF v_recent IS NOT NULL THEN
    INSERT INTO account_plans (account_id, recent_debits) VALUES (p_account, v_recent)
      ON CONFLICT (account_id) DO UPDATE SET recent_debits = excluded.recent_debits, updated_at = now();
  END IF;
  IF p_kind = 'hold' THEN
    INSERT INTO holds (account_id, idempotency_key, request_hash, sku, price_version, requested_credits,
                       credits, description, metadata, expires_at)
      VALUES (p_account, p_reference, p_hash, p_item ->> 'sku', p_item ->> 'priceVersion', p_credits,
              p_credits, p_item ->> 'description', nullif(p_item -> 'metadata', 'null'),
              p_now + make_interval(secs => (p_item ->> 'ttlSeconds')::int))
      RETURNING * INTO v_hold;
    v_take := p_credits;
  ELSIF p_kind = 'capture' THEN
    UPDATE holds SET status = 'captured', settled_at = p_now, capture_hash = p_hash, captured_credits = v_take,
        shortfall = p_credits - v_take,
        released = CASE WHEN v_expired THEN 0 ELSE greatest(v_hold.credits - v_take, 0) END,
        captured_after_expiry = v_expired, entry_id = v_entry.id
      WHERE id = p_hold RETURNING * INTO v_hold;
  ELSIF p_kind = 'usage' THEN
    INSERT INTO usage_events (account_id, event_id, payload_hash, sku, price_version, credits, entry_id,
                              occurred_at)
      VALUES (p_account, p_reference, p_hash, p_item ->> 'sku', p_item ->> 'priceVersion', p_credits,
              v_entry.id, (p_item ->> 'occurredAt')::timestamptz);
    INSERT INTO usage_rollups AS r (account_id, hour, sku, credits, events, input_tokens, cache_read_tokens,
                                    cache_write_tokens, output_tokens, reasoning_tokens, units)
      VALUES (p_account, date_trunc('hour', (p_item ->> 'occurredAt')::timestamptz AT TIME ZONE 'UTC')
                AT TIME ZONE 'UTC', coalesce(p_item ->> 'sku', ''), p_credits, 1,
              coalesce((p_item -> 'usage' ->> 'inputTokens')::bigint, 0),
              coalesce((p_item -> 'usage' ->> 'cacheReadTokens')::bigint, 0),
              coalesce((p_item -> 'usage' ->> 'cacheWriteTokens')::bigint, 0),
              coalesce((p_item -> 'usage' ->> 'outputTokens')::bigint, 0),
              coalesce((p_item -> 'usage' ->> 'reasoningTokens')::bigint, 0),
              coalesce((p_item -> 'usage' ->> 'units')::bigint, 0))
      ON CONFLICT (account_id, hour, sku) DO UPDATE SET credits = r.credits + excluded.credits,
        events = r.events + 1, input_tokens = r.input_tokens + excluded.input_tokens,
        cache_read_tokens = r.cache_read_tokens + excluded.cache_read_tokens,
        cache_write_tokens = r.cache_write_tokens + excluded.cache_write_tokens,
        output_tokens = r.output_tokens + excluded.output_tokens,
        reasoning_tokens = r.reasoning_tokens + excluded.reasoning_tokens, units = r.units + excluded.units;
  END IF;

  -- What follows from it, when a plan applies: balance and cap events, in this transaction (the outbox).
  v_available_after := v_account.balance - v_held - CASE WHEN p_kind = 'hold' THEN p_credits ELSE 0 END;
  IF p_plans IS NOT NULL AND (p_kind <> 'usage' OR p_credits > 0) THEN
    v_threshold := coalesce(v_row.low_balance_threshold, (v_plan ->> 'lowBalanceThreshold')::bigint);
    IF v_threshold IS NOT NULL AND v_available_before >= v_threshold AND v_available_after < v_threshold THEN
      PERFORM debit_event('balance.low', v_account, jsonb_build_object('available', v_available_after,
        'balance', v_account.balance, 'threshold', v_threshold));
      v_events := v_events + 1;
    END IF;
    IF v_available_before > 0 AND v_available_after <= 0 THEN
      PERFORM debit_event('balance.depleted', v_account, jsonb_build_object('available', v_available_after,
        'balance', v_account.balance));
      v_events := v_events + 1;
    END IF;
    IF v_day_left > 0 AND v_day_left - v_take <= 0 THEN
      PERFORM debit_event('spend_cap.reached', v_account, jsonb_build_object('period', 'day', 'source', 'plan',
        'cap', v_day_cap, 'resetsAt', to_char(v_today + 1, 'YYYY-MM-DD"T00:00:00.000Z"')));
      v_events := v_events + 1;
    END IF;
    IF v_month_left > 0 AND v_month_left - v_take <= 0 THEN
      PERFORM debit_event('spend_cap.reached', v_account, jsonb_build_object('period', 'month',
        'source', v_month_source, 'cap', v_month_cap,
        'resetsAt', to_char(v_month_start + interval '1 month', 'YYYY-MM-DD"T00:00:00.000Z"')));
      v_events := v_events + 1;
    END IF;
  END IF;

  v_result := jsonb_build_object('status', 'applied', 'account', jsonb_build_object('id', v_account.id,
      'balance', v_account.balance, 'version', v_account.version), 'held', v_held,
    'availableAfter', v_available_after, 'events', v_events, 'credits', v_take,
    'topUp', p_plans IS NOT NULL AND (p_kind <> 'usage' OR p_credits > 0)
      AND v_account.stripe_payment_method_id IS NOT NULL);
  IF v_entry.id IS NOT NULL THEN
    v_result := v_result || jsonb_build_object('entry', jsonb_build_object('id', v_entry.id,
      'amount', v_entry.amount, 'balance_after', v_entry.balance_after, 'created_at', v_entry.created_at));
  END IF;
  IF v_hold.id IS NOT NULL THEN v_result := v_result || jsonb_build_object('hold', to_jsonb(v_hold)); END IF;
  RETURN v_result;
END $fn$`;

/**
 * A batch of usage events in one call and one transaction: the accounts of its users locked first, in the
 * order of their lock keys (so two batches, or a batch and a single debit, never deadlock), then each event
 * through debit_credits in the batch's order. `p_events`: [{user, reference, credits, hash, item}]. Answers
 * one debit_credits answer per event, in order. Once an account's event asks for a preparation
 * (`allowance_due`, `expiry_due`), its later events answer `deferred`, so the caller, having prepared it,
 * sends them again in their order. The caller prices events from what it last read of the price books; when
 * a priced event's version was not active at its occurredAt (a version activated since), the batch answers
 * "prices_changed" before it locks or writes anything, and the caller prices it again from the database.
 * (`p_check_prices` false: the deferred events of a batch checked a moment ago, sent again.)
 */
export const USAGE_FUNCTION = sql`
CREATE FUNCTION debit_usage(p_events jsonb, p_plans jsonb, p_now timestamptz, p_check_prices boolean)
RETURNS jsonb
LANGUAGE plpgsql AS $fn$
DECLARE
  v_ids jsonb;
  v_deferred jsonb := '{}';
  v_event jsonb;
  v_account text;
  v_answer jsonb;
  -- An array appended in place (a jsonb appended to would be copied whole for every event).
  v_answers jsonb[] := '{}';
BEGIN
  IF p_check_prices AND EXISTS (SELECT FROM jsonb_array_elements(p_events) AS e
             WHERE e -> 'item' ->> 'priceVersion' IS NOT NULL
               AND NOT price_version_active(e -> 'item' ->> 'priceVersion',
                                            (e -> 'item' ->> 'occurredAt')::timestamptz)) THEN
    RETURN '"prices_changed"';
  END IF;
  SELECT coalesce(jsonb_object_agg(external_user_id, id), '{}') INTO v_ids FROM accounts
    WHERE external_user_id IN (SELECT DISTINCT e ->> 'user' FROM jsonb_array_elements(p_events) AS e);
  PERFORM pg_advisory_xact_lock(1, key) FROM (
    SELECT DISTINCT hashtext(value #>> '{}') AS key FROM jsonb_each(v_ids) ORDER BY 1) AS keys;
  FOR v_event IN SELECT e FROM jsonb_array_elements(p_events) AS e LOOP
    v_account := v_ids ->> (v_event ->> 'user');
    IF v_account IS NULL THEN
      v_answer := jsonb_build_object('status', 'account_not_found');
    ELSIF v_deferred ? v_account THEN
      v_answer := jsonb_build_object('status', 'deferred');
    ELSE
      v_answer := debit_credits('usage', NULL, v_account::uuid, NULL, v_event ->> 'reference',
        (v_event ->> 'credits')::bigint, v_event ->> 'hash', v_event -> 'item', p_plans, p_now);
      IF v_answer ->> 'status' IN ('allowance_due', 'expiry_due') THEN
        v_deferred := v_deferred || jsonb_build_object(v_account, true);
      END IF;
    END IF;
    v_answers := v_answers || v_answer;
  END LOOP;
  RETURN to_jsonb(v_answers);
END $fn$`;

/**
 * One outbound webhook event in the outbox, in the body shape of shared/webhooks/outbox.ts's emitEvent
 * ({id, type, createdAt, data}, data naming the user first).
 */
const EVENT_FUNCTION = sql`
CREATE FUNCTION debit_event(p_type text, p_account accounts, p_data jsonb) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
  v_id text := 'evt_' || replace(gen_random_uuid()::text, '-', '');
  v_at timestamptz := now();
  v_data json;
BEGIN
  SELECT json_object_agg(key, value ORDER BY n) INTO v_data FROM (
    SELECT 'userId' AS key, to_json(p_account.external_user_id) AS value, 0 AS n
    UNION ALL SELECT key, value::json, 1 FROM jsonb_each(p_data)
  ) AS fields;
  INSERT INTO webhook_outbox (id, type, account_id, payload, created_at)
    VALUES (v_id, p_type, p_account.id, json_build_object('id', v_id, 'type', p_type,
      'createdAt', to_char(v_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), 'data', v_data)::text,
      v_at);
END $fn$`;

/**
 * A draw changes a grant's `remaining`; while `remaining` is in an index's predicate, every draw rewrites the
 * row into all six of the table's indexes. The open-grant indexes use the generated `open` instead, so a
 * draw that leaves credits in the grant is a HOT update; only the one that empties it changes `open`.
 */
const OPEN_GRANTS = sql`
  ALTER TABLE credit_grants ADD COLUMN open boolean GENERATED ALWAYS AS (remaining > 0) STORED;
  DROP INDEX credit_grants_open_idx, credit_grants_due_idx, credit_grants_expiring_idx;
  CREATE INDEX credit_grants_open_idx ON credit_grants (account_id, expires_at, created_at) WHERE open;
  CREATE INDEX credit_grants_due_idx ON credit_grants (expires_at) WHERE open AND expires_at IS NOT NULL;
  CREATE INDEX credit_grants_expiring_idx ON credit_grants (expires_at)
    WHERE expiring_notified_at IS NULL AND open AND expires_at IS NOT NULL;
`;

export async function up(db: Kysely<unknown>): Promise<void> {
  await OPEN_GRANTS.execute(db);
  await PRICE_FUNCTION.execute(db);
  await EVENT_FUNCTION.execute(db);
  await DEBIT_FUNCTION.execute(db);
  await USAGE_FUNCTION.execute(db);
  await sql`
    REVOKE ALL ON FUNCTION debit_usage(jsonb, jsonb, timestamptz, boolean) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION debit_usage(jsonb, jsonb, timestamptz, boolean) TO credits_app;
    REVOKE ALL ON FUNCTION price_version_active(text, timestamptz) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION price_version_active(text, timestamptz) TO credits_app;
    REVOKE ALL ON FUNCTION debit_event(text, accounts, jsonb) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION debit_event(text, accounts, jsonb) TO credits_app;
    REVOKE ALL ON FUNCTION debit_credits(text, text, uuid, uuid, text, bigint, text, jsonb, jsonb, timestamptz)
      FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION debit_credits(text, text, uuid, uuid, text, bigint, text, jsonb, jsonb, timestamptz)
      TO credits_app;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP FUNCTION debit_usage(jsonb, jsonb, timestamptz, boolean);
    DROP FUNCTION debit_credits(text, text, uuid, uuid, text, bigint, text, jsonb, jsonb, timestamptz);
    DROP FUNCTION debit_event(text, accounts, jsonb);
    DROP FUNCTION price_version_active(text, timestamptz);
    DROP INDEX credit_grants_open_idx, credit_grants_due_idx, credit_grants_expiring_idx;
    ALTER TABLE credit_grants DROP COLUMN open;
    CREATE INDEX credit_grants_open_idx ON credit_grants (account_id, expires_at, created_at) WHERE remaining > 0;
    CREATE INDEX credit_grants_due_idx ON credit_grants (expires_at) WHERE remaining > 0 AND expires_at IS NOT NULL;
    CREATE INDEX credit_grants_expiring_idx ON credit_grants (expires_at)
      WHERE expiring_notified_at IS NULL AND remaining > 0 AND expires_at IS NOT NULL;
  `.execute(db);
}
