import { type Kysely, sql } from 'kysely';
import type { Database } from '../db/schema.js';

/** Reads only: the money flows of the ledger over a period, for admins. */

export interface Analytics {
  readonly from: Date;
  readonly to: Date;
  /** Credits bought through purchases, and what was paid for them per currency (minor units). */
  readonly sold: { readonly credits: number; readonly revenue: Record<string, number> };
  /** Credits that came in otherwise, by grant source (admin, coupon, reinstatement, ...). */
  readonly granted: Record<string, number>;
  /** Credits debited by spends, hold captures and usage events, by SKU (`(spend)` for plain spends) and provider. */
  readonly spent: {
    readonly credits: number;
    readonly bySku: Record<string, number>;
    readonly byProvider: Record<string, number>;
  };
  /** Credits an admin removed. */
  readonly removed: number;
  readonly expired: number;
  readonly clawedBack: number;
  /**
   * Credits outstanding: `total` as of `to` (the sum of every entry before it); `paid` and `promotional` are
   * the unexpired grants' remainders now.
   */
  readonly outstanding: { readonly total: number; readonly paid: number; readonly promotional: number };
  readonly topAccounts: ReadonlyArray<{ readonly userId: string | null; readonly spent: number }>;
}

const DEBIT_KINDS = ['spend', 'hold_capture', 'usage'] as const;

export async function analyticsOf(db: Kysely<Database>, from: Date, to: Date, now: Date): Promise<Analytics> {
  const inRange = sql`e.created_at >= ${from} AND e.created_at < ${to}`;
  const { rows: flows } = await sql<{ kind: string; positive: number; negative: number }>`
    SELECT kind, coalesce(sum(amount) FILTER (WHERE amount > 0), 0)::bigint AS positive,
      coalesce(-sum(amount) FILTER (WHERE amount < 0), 0)::bigint AS negative
    FROM ledger_entries e WHERE ${inRange} GROUP BY kind`.execute(db);
  const flow = (kind: string, side: 'positive' | 'negative') =>
    flows.find((f) => f.kind === kind)?.[side] ?? 0;
  const { rows: revenue } = await sql<{ currency: string; amount: number }>`
    SELECT p.currency, sum(p.amount_total)::bigint AS amount
    FROM ledger_entries e JOIN payments p ON p.id = e.payment_id
    WHERE e.kind = 'purchase' AND ${inRange} GROUP BY p.currency ORDER BY 1`.execute(db);
  const { rows: granted } = await sql<{ source: string; credits: number }>`
    SELECT g.source, sum(g.amount)::bigint AS credits
    FROM credit_grants g JOIN ledger_entries e ON e.id = g.entry_id
    WHERE g.source <> 'purchase' AND ${inRange} GROUP BY g.source ORDER BY 1`.execute(db);
  const { rows: bySku } = await sql<{ sku: string; credits: number }>`
    SELECT coalesce(u.sku, h.sku, '(spend)') AS sku, sum(-e.amount)::bigint AS credits
    FROM ledger_entries e
      LEFT JOIN usage_events u ON u.entry_id = e.id
      LEFT JOIN holds h ON h.entry_id = e.id
    WHERE e.kind IN (${sql.join(DEBIT_KINDS)}) AND ${inRange}
    GROUP BY 1 ORDER BY 2 DESC, 1`.execute(db);
  const byProvider: Record<string, number> = {};
  for (const row of bySku) {
    const slash = row.sku.indexOf('/');
    const provider = slash > 0 ? row.sku.slice(0, slash) : '(none)';
    byProvider[provider] = (byProvider[provider] ?? 0) + row.credits;
  }
  const { rows: outstanding } = await sql<{ total: number; paid: number; promotional: number }>`
    SELECT (SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE created_at < ${to})::bigint AS total,
      (SELECT coalesce(sum(remaining), 0) FROM credit_grants
        WHERE category = 'paid' AND (expires_at IS NULL OR expires_at > ${now}))::bigint AS paid,
      (SELECT coalesce(sum(remaining), 0) FROM credit_grants
        WHERE category = 'promotional' AND (expires_at IS NULL OR expires_at > ${now}))::bigint AS promotional`.execute(
    db,
  );
  const { rows: top } = await sql<{ user_id: string | null; spent: number }>`
    SELECT a.external_user_id AS user_id, sum(-e.amount)::bigint AS spent
    FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
    WHERE e.kind IN (${sql.join(DEBIT_KINDS)}) AND ${inRange}
    GROUP BY a.id ORDER BY 2 DESC LIMIT 10`.execute(db);
  const spentTotal = DEBIT_KINDS.reduce((sum, kind) => sum + flow(kind, 'negative'), 0);
  return {
    from,
    to,
    sold: {
      credits: flow('purchase', 'positive'),
      revenue: Object.fromEntries(revenue.map((r) => [r.currency, r.amount])),
    },
    granted: Object.fromEntries(granted.map((g) => [g.source, g.credits])),
    spent: {
      credits: spentTotal,
      bySku: Object.fromEntries(bySku.map((r) => [r.sku, r.credits])),
      byProvider,
    },
    removed: flow('admin_adjustment', 'negative'),
    expired: flow('grant_expiry', 'negative'),
    clawedBack: flow('refund_clawback', 'negative') + flow('dispute_clawback', 'negative'),
    outstanding: outstanding[0] ?? { total: 0, paid: 0, promotional: 0 },
    topAccounts: top.map((t) => ({ userId: t.user_id, spent: t.spent })),
  };
}
