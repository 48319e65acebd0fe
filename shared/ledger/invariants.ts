import { type Kysely, sql } from 'kysely';
import type { Database } from '../db/schema.js';
import { CREDITED_STATUSES } from '../payments/payments.js';

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
  /** Returns one row per violation, with optional account_id, payment_id, entry_id and a detail text. */
  readonly query: ReturnType<typeof sql>;
}

const CREDITED_STATES = sql`(${sql.join(CREDITED_STATUSES)})`;

const CHECKS: Check[] = [
  {
    invariant: 1,
    rule: 'cached balance equals the sum of entries',
    query: sql`
      SELECT a.id AS account_id, format('balance %s, entries sum to %s', a.balance, coalesce(sum(e.amount), 0)) AS detail
      FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
      GROUP BY a.id HAVING a.balance <> coalesce(sum(e.amount), 0)`,
  },
  {
    invariant: 1,
    rule: 'balance_after chains',
    query: sql`
      SELECT account_id, id AS entry_id, format('balance_after %s, expected %s', balance_after, expected) AS detail
      FROM (SELECT account_id, id, balance_after,
              coalesce(lag(balance_after) OVER (PARTITION BY account_id ORDER BY id), 0) + amount AS expected
            FROM ledger_entries) chain
      WHERE balance_after <> expected`,
  },
  {
    invariant: 2,
    rule: 'credited payments have exactly one purchase entry of the pack size; others none',
    query: sql`
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
    query: sql`
      SELECT e.account_id, e.id AS entry_id, format('event %s has no applied processed_events row', e.stripe_event_id) AS detail
      FROM ledger_entries e LEFT JOIN processed_events pe ON pe.event_id = e.stripe_event_id AND pe.outcome = 'applied'
      WHERE e.stripe_event_id IS NOT NULL AND pe.event_id IS NULL`,
  },
  {
    invariant: 4,
    rule: 'the append-only triggers are installed and enabled',
    query: sql`
      SELECT format('trigger %s is missing or disabled', name) AS detail
      FROM unnest(ARRAY['ledger_entries_append_only', 'ledger_entries_no_truncate']) AS name
      WHERE NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgname = name
        AND t.tgrelid = 'ledger_entries'::regclass AND t.tgenabled IN ('O', 'A'))`,
  },
  {
    invariant: 5,
    rule: 'only clawbacks take or keep a balance below zero',
    query: sql`
      SELECT account_id, id AS entry_id, format('%s entry of %s left balance %s', kind, amount, balance_after) AS detail
      FROM ledger_entries
      WHERE balance_after < 0 AND amount < 0 AND kind NOT IN ('refund_clawback', 'dispute_clawback')`,
  },
  {
    invariant: 6,
    rule: 'per payment, clawed back minus reinstated stays within 0 and what was credited',
    query: sql`
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
    query: sql`
      SELECT 'trigger payments_state_machine is missing or disabled' AS detail
      WHERE NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgname = 'payments_state_machine'
        AND t.tgrelid = 'payments'::regclass AND t.tgenabled IN ('O', 'A'))`,
  },
  {
    invariant: 8,
    rule: 'every admin entry has its audit row, written in the same transaction',
    query: sql`
      SELECT e.account_id, e.id AS entry_id, 'admin entry without a matching audit row' AS detail
      FROM ledger_entries e LEFT JOIN admin_actions a ON a.id = e.admin_action_id
      WHERE e.kind = 'admin_adjustment' AND (a.id IS NULL OR a.action <> 'adjust'
        OR a.account_id <> e.account_id OR a.created_at <> e.created_at)`,
  },
];

/**
 * Checks the ledger invariants of DESIGN.md over the whole database, in one repeatable-read snapshot.
 * Read-only; never throws on a violation, it reports it.
 */
export async function checkInvariants(db: Kysely<Database>): Promise<InvariantReport> {
  return db
    .transaction()
    .setIsolationLevel('repeatable read')
    .setAccessMode('read only')
    .execute(async (trx) => {
      const violations: InvariantViolation[] = [];
      for (const check of CHECKS) {
        const { rows } = await check.query.execute(trx);
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
