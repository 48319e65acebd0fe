import { type Kysely, sql } from 'kysely';
import type { Database } from './db/schema.js';
import { CREDITED_STATUSES } from './payments/payments.js';

export interface InvariantViolation {
  /** The invariant's number in DESIGN.md. */
  readonly invariant: number;
  readonly rule: string;
  readonly accountId?: string | null;
  readonly paymentId?: string | null;
  readonly entryId?: number | null;
  readonly detail: string;
}

export interface InvariantReport {
  readonly ok: boolean;
  readonly checkedAt: string;
  readonly counts: { readonly accounts: number; readonly entries: number; readonly payments: number };
  readonly violations: InvariantViolation[];
}

interface Check {
  readonly invariant: number;
  readonly rule: string;
  /** One row per violation, with optional account_id, payment_id, entry_id and a detail text; `now` is the clock. */
  readonly query: (now: Date) => ReturnType<typeof sql>;
}

const CREDITED_STATES = sql`(${sql.join(CREDITED_STATUSES)})`;

const CHECKS: Check[] = [
  {
    invariant: 1,
    rule: 'cached balance equals the sum of entries',
    query: () => sql`
      SELECT a.id AS account_id, format('balance %s, entries sum to %s', a.balance, coalesce(sum(e.amount), 0)) AS detail
      FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
      GROUP BY a.id HAVING a.balance <> coalesce(sum(e.amount), 0)`,
  },
  {
    invariant: 1,
    rule: 'balance_after chains',
    query: () => sql`
      SELECT account_id, id AS entry_id, format('balance_after %s, expected %s', balance_after, expected) AS detail
      FROM (SELECT account_id, id, balance_after,
              coalesce(lag(balance_after) OVER (PARTITION BY account_id ORDER BY id), 0) + amount AS expected
            FROM ledger_entries) chain
      WHERE balance_after <> expected`,
  },
  {
    invariant: 2,
    rule: 'credited payments have exactly one purchase entry of the pack size; others none',
    query: () => sql`
      SELECT p.id AS payment_id, p.account_id,
        format('status %s with %s purchase entries totalling %s (pack %s)', p.status, count(e.id), coalesce(sum(e.amount), 0), p.credits) AS detail
      FROM payments p LEFT JOIN ledger_entries e ON e.payment_id = p.id AND e.kind = 'purchase'
      GROUP BY p.id
      HAVING (p.status IN ${CREDITED_STATES}) <> (count(e.id) = 1)
        OR count(e.id) > 1
        OR (count(e.id) = 1 AND (sum(e.amount) <> p.credits OR bool_or(e.account_id <> p.account_id)))`,
  },
  {
    invariant: 3,
    rule: 'entries caused by a Stripe event have its processed_events row',
    query: () => sql`
      SELECT e.account_id, e.id AS entry_id, format('event %s has no applied processed_events row', e.stripe_event_id) AS detail
      FROM ledger_entries e LEFT JOIN processed_events pe ON pe.event_id = e.stripe_event_id AND pe.outcome = 'applied'
      WHERE e.stripe_event_id IS NOT NULL AND pe.event_id IS NULL`,
  },
  {
    invariant: 4,
    rule: 'the append-only triggers are installed and enabled',
    query: () => sql`
      SELECT format('trigger %s is missing or disabled', name) AS detail
      FROM unnest(ARRAY['ledger_entries_append_only', 'ledger_entries_no_truncate']) AS name
      WHERE NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgname = name
        AND t.tgrelid = 'ledger_entries'::regclass AND t.tgenabled IN ('O', 'A'))`,
  },
  {
    invariant: 5,
    rule: 'only clawbacks take or keep a balance below zero',
    query: () => sql`
      SELECT account_id, id AS entry_id, format('%s entry of %s left balance %s', kind, amount, balance_after) AS detail
      FROM ledger_entries
      WHERE balance_after < 0 AND amount < 0 AND kind NOT IN ('refund_clawback', 'dispute_clawback')`,
  },
  {
    invariant: 6,
    rule: 'per payment, clawed back minus reinstated stays within 0 and what was credited',
    query: () => sql`
      SELECT p.id AS payment_id, p.account_id,
        format('net clawback %s of %s credited (refund %s, dispute %s)', -(refund + dispute), coalesce(credited, 0), -refund, -dispute) AS detail
      FROM payments p
      JOIN LATERAL (SELECT
          sum(amount) FILTER (WHERE kind = 'purchase') AS credited,
          coalesce(sum(amount) FILTER (WHERE kind IN ('refund_clawback', 'refund_reversal')), 0) AS refund,
          coalesce(sum(amount) FILTER (WHERE kind IN ('dispute_clawback', 'dispute_reinstatement')), 0) AS dispute
        FROM ledger_entries e WHERE e.payment_id = p.id) t ON true
      WHERE refund > 0 OR dispute > 0 OR -(refund + dispute) > coalesce(credited, 0)`,
  },
  {
    invariant: 7,
    rule: 'the payment state machine trigger is installed and enabled',
    query: () => sql`
      SELECT 'trigger payments_state_machine is missing or disabled' AS detail
      WHERE NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgname = 'payments_state_machine'
        AND t.tgrelid = 'payments'::regclass AND t.tgenabled IN ('O', 'A'))`,
  },
  {
    invariant: 8,
    rule: 'every admin entry has its audit row, written in the same transaction',
    query: () => sql`
      SELECT e.account_id, e.id AS entry_id, 'admin entry without a matching audit row' AS detail
      FROM ledger_entries e LEFT JOIN admin_actions a ON a.id = e.admin_action_id
      WHERE e.kind = 'admin_adjustment' AND (a.id IS NULL OR a.action NOT IN ('adjust', 'approve_grant')
        OR a.account_id <> e.account_id OR a.created_at <> e.created_at)`,
  },
  {
    invariant: 10,
    rule: "per account, the unexpired grants' remaining sum to max(balance, 0)",
    query: (now) => sql`
      SELECT a.id AS account_id,
        format('unexpired grants hold %s; balance %s less %s expired and not yet written off', live, a.balance, due) AS detail
      FROM accounts a
      JOIN LATERAL (SELECT
          coalesce(sum(remaining) FILTER (WHERE expires_at IS NULL OR expires_at > ${now}), 0) AS live,
          coalesce(sum(remaining) FILTER (WHERE expires_at <= ${now}), 0) AS due
        FROM credit_grants g WHERE g.account_id = a.id) t ON true
      WHERE live <> greatest(a.balance - due, 0)`,
  },
  {
    invariant: 10,
    rule: "each grant's allocations sum to amount - remaining",
    query: () => sql`
      SELECT g.account_id, format('grant %s: amount %s, remaining %s, allocations %s', g.id, g.amount, g.remaining,
        coalesce(sum(al.amount), 0)) AS detail
      FROM credit_grants g LEFT JOIN grant_allocations al ON al.grant_id = g.id
      GROUP BY g.id HAVING g.amount - g.remaining <> coalesce(sum(al.amount), 0)`,
  },
  {
    invariant: 10,
    rule: 'no grant is drawn after it expired; every debit draws exactly its amount (or less, into debt)',
    query: () => sql`
      SELECT e.account_id, e.id AS entry_id, format('%s entry of %s draws %s', e.kind, e.amount, drawn) AS detail
      FROM ledger_entries e
      JOIN LATERAL (SELECT coalesce(sum(al.amount), 0) AS drawn,
          bool_or(g.expires_at IS NOT NULL AND e.created_at > g.expires_at AND e.kind <> 'grant_expiry') AS late
        FROM grant_allocations al JOIN credit_grants g ON g.id = al.grant_id
        WHERE al.entry_id = e.id AND g.account_id = e.account_id) d ON true
      WHERE e.amount < 0 AND e.id > ledger_grants_start() AND (late OR drawn > -e.amount
        OR (drawn < -e.amount AND e.kind NOT IN ('refund_clawback', 'dispute_clawback')))`,
  },
  {
    invariant: 10,
    rule: 'every positive entry brought in exactly one grant of its amount',
    query: () => sql`
      SELECT e.account_id, e.id AS entry_id, format('%s entry of %s has %s grants', e.kind, e.amount, count(g.id)) AS detail
      FROM ledger_entries e LEFT JOIN credit_grants g ON g.entry_id = e.id
      WHERE e.amount > 0 AND e.id > ledger_grants_start()
      GROUP BY e.id HAVING count(g.id) <> 1 OR bool_or(g.amount <> e.amount OR g.account_id <> e.account_id)`,
  },
  {
    invariant: 11,
    rule: 'active holds never exceed the balance',
    query: (now) => sql`
      SELECT a.id AS account_id, format('active holds reserve %s of a balance of %s', held, a.balance - due) AS detail
      FROM accounts a
      JOIN LATERAL (SELECT coalesce(sum(credits), 0) AS held FROM holds h
        WHERE h.account_id = a.id AND h.status = 'active' AND h.expires_at > ${now}) h ON true
      JOIN LATERAL (SELECT coalesce(sum(remaining) FILTER (WHERE expires_at <= ${now}), 0) AS due
        FROM credit_grants g WHERE g.account_id = a.id) g ON true
      WHERE held > greatest(a.balance - due, 0)`,
  },
  {
    invariant: 11,
    rule: 'a captured hold has one capture entry of what it took, and nothing else does',
    query: () => sql`
      SELECT h.account_id, format('hold %s: %s, captured %s, entry %s', h.id, h.status, h.captured_credits,
        coalesce(e.amount::text, 'none')) AS detail
      FROM holds h LEFT JOIN ledger_entries e ON e.id = h.entry_id
      WHERE (h.status = 'captured' AND h.captured_credits > 0 AND (e.id IS NULL OR e.kind <> 'hold_capture'
          OR e.amount <> -h.captured_credits OR e.reference <> h.id::text))
        OR (h.entry_id IS NOT NULL AND h.status <> 'captured')
      UNION ALL
      SELECT e.account_id, format('capture entry %s names no captured hold', e.id)
      FROM ledger_entries e LEFT JOIN holds h ON h.entry_id = e.id
      WHERE e.kind = 'hold_capture' AND h.id IS NULL`,
  },
  {
    invariant: 12,
    rule: 'the credits caps count (debit_days) equal the spends, captures and usage entries, per account',
    query: () => sql`
      SELECT coalesce(d.account_id, e.account_id) AS account_id,
        format('caps count %s credits used; the entries say %s', coalesce(d.used, 0), coalesce(e.used, 0)) AS detail
      FROM (SELECT account_id, sum(credits) AS used FROM debit_days GROUP BY 1) d
      FULL JOIN (SELECT account_id, -sum(amount) AS used FROM ledger_entries
          WHERE kind IN ('spend', 'hold_capture', 'usage') GROUP BY 1) e ON e.account_id = d.account_id
      WHERE coalesce(d.used, 0) <> coalesce(e.used, 0)`,
  },
  {
    invariant: 13,
    rule: 'a coupon is redeemed at most once per account, within its limit, each with its grant',
    query: () => sql`
      SELECT format('coupon %s counts %s redemptions, %s recorded (limit %s)', c.code,
        c.redemptions, count(r.account_id), coalesce(c.max_redemptions::text, 'none')) AS detail
      FROM coupons c LEFT JOIN coupon_redemptions r ON r.code = c.code
        LEFT JOIN credit_grants g ON g.id = r.grant_id AND g.account_id = r.account_id AND g.source = 'coupon'
      GROUP BY c.code
      HAVING c.redemptions <> count(r.account_id) OR count(g.id) <> count(r.account_id)
        OR (c.max_redemptions IS NOT NULL AND count(r.account_id) > c.max_redemptions)`,
  },
  {
    invariant: 13,
    rule: 'a usage event is applied once, with its entry; each hourly rollup equals the events it counts',
    query: () => sql`
      SELECT coalesce(r.account_id, e.account_id) AS account_id,
        format('rollup %s %s counts %s events, %s credits; the events say %s, %s', coalesce(r.hour, e.hour),
          coalesce(r.sku, e.sku), coalesce(r.events, 0), coalesce(r.credits, 0), coalesce(e.events, 0),
          coalesce(e.credits, 0)) AS detail
      FROM usage_rollups r
      FULL JOIN (SELECT account_id, date_trunc('hour', occurred_at, 'UTC') AS hour, coalesce(sku, '') AS sku,
          sum(credits) AS credits, count(*) AS events
        FROM usage_events GROUP BY 1, 2, 3) e
        ON e.account_id = r.account_id AND e.hour = r.hour AND e.sku = r.sku
      WHERE coalesce(r.credits, 0) <> coalesce(e.credits, 0) OR coalesce(r.events, 0) <> coalesce(e.events, 0)
      UNION ALL
      SELECT u.account_id, format('usage event %s of %s credits has entry %s', u.event_id, u.credits,
        coalesce(l.amount::text, 'none'))
      FROM usage_events u LEFT JOIN ledger_entries l ON l.id = u.entry_id
      WHERE u.credits > 0 AND (l.id IS NULL OR l.kind <> 'usage' OR l.amount <> -u.credits
        OR l.reference <> u.event_id OR l.account_id <> u.account_id)`,
  },
];

/**
 * Checks the ledger invariants of DESIGN.md over the whole database, in one repeatable-read snapshot.
 * Read-only; never throws on a violation, it reports it.
 */
export async function checkInvariants(db: Kysely<Database>, now = new Date()): Promise<InvariantReport> {
  return db
    .transaction()
    .setIsolationLevel('repeatable read')
    .setAccessMode('read only')
    .execute(async (trx) => {
      const violations: InvariantViolation[] = [];
      for (const check of CHECKS) {
        const { rows } = await check.query(now).execute(trx);
        for (const row of rows as Array<Record<string, unknown>>) {
          violations.push({
            invariant: check.invariant,
            rule: check.rule,
            accountId: (row.account_id as string | undefined) ?? null,
            paymentId: (row.payment_id as string | undefined) ?? null,
            entryId: (row.entry_id as number | undefined) ?? null,
            detail: String(row.detail),
          });
        }
      }
      const counts = await sql<{ accounts: number; entries: number; payments: number }>`
        SELECT (SELECT count(*) FROM accounts)::int AS accounts,
               (SELECT count(*) FROM ledger_entries)::int AS entries,
               (SELECT count(*) FROM payments)::int AS payments`.execute(trx);
      return {
        ok: violations.length === 0,
        checkedAt: new Date().toISOString(),
        counts: counts.rows[0] ?? { accounts: 0, entries: 0, payments: 0 },
        violations,
      };
    });
}
