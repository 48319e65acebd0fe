import type { Kysely } from 'kysely';
import { inAccountTransaction } from '../accounts/accounts.js';
import type { Database } from '../db/schema.js';
import { accountsWithDueGrants } from '../grants/grants.js';
import { expireDueGrants } from './ledger.js';

export interface SweepResult {
  /** Accounts whose expired grants were written off. */
  readonly accounts: number;
  /** `grant_expiry` entries written. */
  readonly expiredGrants: number;
  /** true when the time budget ran out with accounts still due (the next sweep goes on). */
  readonly unfinished?: boolean;
}

/**
 * Writes off every grant expired at `now` with credits left (one `grant_expiry` entry for its remainder,
 * in its account's transaction), `batch` accounts at a time until none is left or the time budget runs
 * out (the next sweep goes on). Idempotent: a second run
 * writes nothing more. Debits do the same for their own account, so the sweeper only catches up idle ones.
 */
export async function sweepExpiredGrants(
  db: Kysely<Database>,
  now = new Date(),
  options: { readonly batch?: number; readonly budgetMs?: number } = {},
): Promise<SweepResult> {
  const batch = options.batch ?? 200;
  const stopAt = Date.now() + (options.budgetMs ?? Number.POSITIVE_INFINITY);
  let accounts = 0;
  let expiredGrants = 0;
  for (;;) {
    const due = await accountsWithDueGrants(db, now, batch);
    for (const accountId of due) {
      // Each account commits on its own: stopping between two loses nothing.
      if (Date.now() >= stopAt) return { accounts, expiredGrants, unfinished: true };
      const { expired } = await inAccountTransaction(db, accountId, (trx, account) =>
        expireDueGrants(trx, account, now),
      );
      if (expired > 0) accounts++;
      expiredGrants += expired;
    }
    if (due.length < batch) return { accounts, expiredGrants };
  }
}
