import type { Kysely } from 'kysely';
import { expect } from 'vitest';
import type { Database } from '../../shared/db/schema.js';
import { checkInvariants } from '../../shared/invariants.js';

/** Fails the test with every violated invariant listed; `now` is the test's clock where it moves one. */
export async function expectInvariantsHold(db: Kysely<Database>, now?: Date): Promise<void> {
  const report = await checkInvariants(db, now);
  expect(report.violations).toEqual([]);
}
