import type { Account, CreditGrant, LedgerEntry, Payment } from '../db/schema.js';
import type { GrantTotals } from '../grants/grants.js';

/** The JSON views the API returns; one place, so every route shows an object the same way. */
export const accountView = (a: Account) => ({
  accountId: a.id,
  userId: a.external_user_id,
  balance: a.balance,
  status: a.status,
  anonymized: a.anonymized_at !== null,
  updatedAt: a.updated_at.toISOString(),
});

export const entryView = (e: LedgerEntry) => ({
  id: e.id,
  amount: e.amount,
  balanceAfter: e.balance_after,
  kind: e.kind,
  description: e.description,
  metadata: e.metadata ?? null,
  createdAt: e.created_at.toISOString(),
});

export const paymentView = (p: Payment) => ({
  id: p.id,
  packageId: p.package_id,
  credits: p.credits,
  amount: p.amount_total,
  currency: p.currency,
  status: p.status,
  createdAt: p.created_at.toISOString(),
});

/** What an account holds: expired credits not yet written off by the sweeper count for nothing; holds reserve. */
export const balanceView = (a: Account, totals: GrantTotals, held: number) => {
  const balance = a.balance - totals.expiredUnswept;
  return {
    balance,
    available: balance - held,
    held,
    grants: {
      paid: totals.paid,
      promotional: totals.promotional,
      nextExpiry: totals.nextExpiry?.toISOString() ?? null,
    },
  };
};

export const grantView = (g: CreditGrant) => ({
  id: g.id,
  category: g.category,
  source: g.source,
  amount: g.amount,
  remaining: g.remaining,
  expiresAt: g.expires_at?.toISOString() ?? null,
  createdAt: g.created_at.toISOString(),
});
