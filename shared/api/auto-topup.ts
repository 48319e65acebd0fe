import type { Kysely } from 'kysely';
import * as z from 'zod';
import { findAccountByUserId, findOrCreateAccount } from '../accounts/accounts.js';
import type { Account, Database } from '../db/schema.js';
import {
  checkAutoTopUpInput,
  hasSavedCard,
  readAutoTopUpSettings,
  recentTopUps,
  saveAutoTopUpSettings,
} from '../topup-settings/settings.js';
import { type Caller, defineEndpoint, ok } from './endpoint.js';
import { paymentSchema } from './schemas.js';
import { paymentView } from './views.js';

const userId = (caller: Caller) => (caller.kind === 'user' ? caller.userId : '');

const autoTopUpSchema = z.object({
  enabled: z.boolean(),
  packageId: z.string().nullable().describe('the pack bought on each top-up; null: never set'),
  thresholdCredits: z
    .number()
    .int()
    .nullable()
    .describe('a debit that leaves available below this starts a top-up'),
  maxPerMonth: z.number().int().nullable().describe('top-ups per UTC month at most (failed ones excepted)'),
  consecutiveFailures: z.number().int().describe('top-ups failed in a row; three turn auto top-up off'),
  disabledReason: z
    .string()
    .nullable()
    .describe(
      'why the service turned auto top-up off (three_failed_top_ups_in_a_row); PUT enabled: true clears it',
    ),
  hasSavedCard: z.boolean().describe('a card saved at checkout (saveCard: true) that top-ups charge'),
  recentTopUps: z.array(
    paymentSchema.extend({
      failureCode: z
        .string()
        .nullable()
        .describe("Stripe's code when FAILED: card_declined, authentication_required..."),
    }),
  ),
});

async function autoTopUpView(db: Kysely<Database>, account: Account) {
  const settings = await readAutoTopUpSettings(db, account.id);
  const topUps = await recentTopUps(db, account.id);
  return {
    enabled: settings?.enabled ?? false,
    packageId: settings?.packageId ?? null,
    thresholdCredits: settings?.thresholdCredits ?? null,
    maxPerMonth: settings?.maxPerMonth ?? null,
    consecutiveFailures: settings?.consecutiveDeclines ?? 0,
    disabledReason: settings?.disabledReason ?? null,
    hasSavedCard: hasSavedCard(account),
    recentTopUps: topUps.map((p) => ({ ...paymentView(p), failureCode: p.failure_code })),
  };
}

export const getMyAutoTopUp = defineEndpoint({
  route: 'GET /v1/me/auto-topup',
  summary:
    "The caller's auto top-up settings, whether a card is saved for it, and the latest top-ups with their states",
  responses: { 200: { description: 'the auto top-up settings', schema: autoTopUpSchema } },
  errors: { 401: 'no user token' },
  async handle({ caller }, deps) {
    const account = await findOrCreateAccount(deps.db, userId(caller));
    return ok(await autoTopUpView(deps.db, account));
  },
});

export const putMyAutoTopUp = defineEndpoint({
  route: 'PUT /v1/me/auto-topup',
  summary:
    "Sets the caller's auto top-up: when a debit leaves available below thresholdCredits, the saved card is charged off-session for the pack packageId, one top-up in flight at a time, at most maxPerMonth a UTC month",
  body: z
    .object({
      enabled: z.boolean(),
      packageId: z.string().min(1).max(64),
      thresholdCredits: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
      maxPerMonth: z.number().int().min(1).max(100),
    })
    .strict(),
  responses: { 200: { description: 'the auto top-up settings now', schema: autoTopUpSchema } },
  errors: {
    400: 'invalid body (thresholdCredits negative or fractional, maxPerMonth outside 1..100) or unknown_package',
    401: 'no user token',
    409: 'no_saved_card: enabling needs a card saved at checkout (saveCard: true)',
  },
  async handle({ caller, body }, deps) {
    // Refused before the account of a user never seen is created: a pack not on sale, or enabling with no card.
    const existing = await findAccountByUserId(deps.db, userId(caller));
    checkAutoTopUpInput(deps.config.packages, body, existing);
    const account = existing ?? (await findOrCreateAccount(deps.db, userId(caller)));
    await saveAutoTopUpSettings(deps.db, deps.config.packages, account.id, body);
    return ok(await autoTopUpView(deps.db, account));
  },
});
