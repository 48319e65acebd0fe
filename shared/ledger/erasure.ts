import { markAnonymized } from '../accounts/accounts.js';
import { type AdminActor, recordAdminAction } from '../audit/audit.js';
import type { Trx } from '../db/locks.js';
import type { Account } from '../db/schema.js';
import { eraseEventsOf } from '../webhooks/outbox.js';
import { eraseEntryText } from './ledger.js';

/**
 * GDPR erasure: drops the external user id, the Stripe customer id, every free-text field of the account's
 * entries and the user id in its outbound events; amounts, balances and the chain stay. Idempotent: a second
 * call changes nothing.
 */
export async function anonymizeAccount(trx: Trx, account: Account, actor: AdminActor): Promise<Account> {
  if (account.anonymized_at) return account;
  await recordAdminAction(trx, 'anonymize', actor, { accountId: account.id });
  await eraseEntryText(trx, account.id);
  await eraseEventsOf(trx, account.id);
  return markAnonymized(trx, account);
}
