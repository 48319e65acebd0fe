import type { Kysely } from 'kysely';
import { inAccountTransaction } from '../accounts/accounts.js';
import type { Database } from '../db/schema.js';
import { expireDueGrants } from '../ledger/ledger.js';
import { accountsWithDueGrants } from './grants.js';

export interface SweepResult {
  /** Accounts whose expired grants were written off. */
  readonly accounts: number;
  /** `grant_expiry` entries written. */
  readonly expiredGrants: number;
}

/**
 * Writes off every grant expired at `now` with credits left (one `grant_expiry` entry for its remainder,
 * in its account's transaction), `batch` accounts at a time until none is left. Idempotent: a second run
 * writes nothing more. Debits do the same for their own account, so the sweeper only catches up idle ones.
 */
export async function sweepExpiredGrants(
  db: Kysely<Database>,
  now = new Date(),
  batch = 200,
): Promise<SweepResult> {
  let accounts = 0;
  let expiredGrants = 0;
  for (;;) {
    const due = await accountsWithDueGrants(db, now, batch);
    for (const accountId of due) {
      const { expired } = await inAccountTransaction(db, accountId, (trx, account) =>
        expireDueGrants(trx, account, now),
      );
      if (expired > 0) accounts++;
      expiredGrants += expired;
    }
    if (due.length < batch) return { accounts, expiredGrants };
  }
}
