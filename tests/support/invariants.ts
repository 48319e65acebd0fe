import type { Kysely } from 'kysely';
import { expect } from 'vitest';
import type { Database } from '../../shared/db/schema.js';
import { checkInvariants } from '../../shared/ledger/invariants.js';

/** Fails the test with every violated invariant listed. */
export async function expectInvariantsHold(db: Kysely<Database>): Promise<void> {
  const report = await checkInvariants(db);
  expect(report.violations).toEqual([]);
}
