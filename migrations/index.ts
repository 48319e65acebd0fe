import type { Migration, MigrationProvider } from 'kysely';
import * as ledger from './2026-11-21-ledger.js';
import * as ledgerEventIndex from './2026-11-22-ledger-event-index.js';
import * as databaseRoles from './2026-12-01-database-roles.js';
import * as dropLedgerEventIndex from './2026-12-01-drop-ledger-event-index.js';
import * as creditGrants from './2026-12-02-credit-grants.js';
import * as priceBook from './2026-12-03-price-book.js';
import * as holds from './2026-12-04-holds.js';
import * as usage from './2026-12-05-usage.js';
import * as plans from './2026-12-06-plans.js';
import * as webhooks from './2026-12-07-webhooks.js';
import * as savedCards from './2026-12-08-saved-cards.js';
import * as grantExpiring from './2026-12-09-grant-expiring.js';
import * as autoTopUp from './2026-12-10-auto-topup.js';
import * as webhookRetention from './2026-12-11-webhook-retention.js';
import * as debitFunction from './2026-12-12-debit-function.js';
import * as usageBatch from './2026-12-13-usage-batch.js';

/** Every migration, in order. Static imports so the set survives bundling into a Lambda. */
const migrations: Record<string, Migration> = {
  '2026-11-21-ledger': ledger,
  '2026-11-22-ledger-event-index': ledgerEventIndex,
  '2026-12-01-database-roles': databaseRoles,
  '2026-12-01-drop-ledger-event-index': dropLedgerEventIndex,
  '2026-12-02-credit-grants': creditGrants,
  '2026-12-03-price-book': priceBook,
  '2026-12-04-holds': holds,
  '2026-12-05-usage': usage,
  '2026-12-06-plans': plans,
  '2026-12-07-webhooks': webhooks,
  '2026-12-08-saved-cards': savedCards,
  '2026-12-09-grant-expiring': grantExpiring,
  '2026-12-10-auto-topup': autoTopUp,
  '2026-12-11-webhook-retention': webhookRetention,
  '2026-12-12-debit-function': debitFunction,
  '2026-12-13-usage-batch': usageBatch,
};

/** A kysely migration provider over the static set above. */
export const migrationProvider: MigrationProvider = {
  getMigrations: async () => migrations,
};
