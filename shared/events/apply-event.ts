import type { Kysely } from 'kysely';
import type { Database, LedgerEntry } from '../db/schema.js';
import { ParkEventError, ServiceError } from '../errors.js';
import type { CreditPackage } from '../packages.js';
import { applyToPayments } from '../payments/stripe-events.js';
import { isHandledEventType, type StripeEvent } from '../stripe/events.js';
import { claimEvent, markIgnored, parkEvent } from './processed-events.js';

export type EventOutcome = 'applied' | 'duplicate' | 'ignored' | 'parked';

export interface ApplyResult {
  readonly outcome: EventOutcome;
  readonly reason?: string;
  readonly creditsGranted: number;
  readonly creditsClawedBack: number;
  /** Ledger entries the event wrote (reversals and reinstatements included). */
  readonly entriesWritten?: number;
}

export interface ApplyOptions {
  readonly packages: readonly CreditPackage[];
  /** Re-apply an event that was parked (admin replay). Applied events stay duplicates. */
  readonly replay?: boolean;
}

const NOTHING = { creditsGranted: 0, creditsClawedBack: 0 } as const;

/** What the entries an event wrote add up to. */
function effectsOf(entries: readonly LedgerEntry[]) {
  let creditsGranted = 0;
  let creditsClawedBack = 0;
  for (const entry of entries) {
    if (entry.kind === 'purchase') creditsGranted += entry.amount;
    if (entry.kind === 'refund_clawback' || entry.kind === 'dispute_clawback')
      creditsClawedBack -= entry.amount;
  }
  return { creditsGranted, creditsClawedBack, entriesWritten: entries.length };
}

/**
 * Why an event fails the same way on every attempt, or undefined for a failure worth retrying (the database
 * down, a lost connection). Deterministic failures are parked, never retried into the DLQ.
 */
function parkReason(error: unknown): { reason: string; message: string } | undefined {
  if (error instanceof ParkEventError) return { reason: error.reason, message: error.message };
  if (error instanceof ServiceError) return { reason: error.code, message: error.message };
  // Postgres class 22 (data exception): text it cannot store, a number out of range. Retrying cannot help.
  const {
    code: sqlState,
    constraint,
    detail,
  } = error as { code?: unknown; constraint?: unknown; detail?: unknown };
  if (typeof sqlState === 'string' && sqlState.startsWith('22')) {
    return { reason: 'unstorable_data', message: `Postgres refused the event's data (SQLSTATE ${sqlState})` };
  }
  // A Stripe id that another payment holds already: an event naming one payment with another's intent or
  // charge. Every write of those columns happens under the intent's payment lock, so this is no race: the
  // constraint will refuse it on every delivery. (A customer id is not among them: its writers check for an
  // owner first, so a violation there is a race between two accounts, and a retry applies the event.)
  if (sqlState === '23505' && typeof constraint === 'string' && HELD_STRIPE_IDS.has(constraint)) {
    return {
      reason: 'stripe_id_conflict',
      message: `the event names a Stripe id another payment holds (${typeof detail === 'string' ? detail : constraint})`,
    };
  }
  return undefined;
}

/** The unique constraints on Stripe ids whose violation is deterministic (see parkReason). */
const HELD_STRIPE_IDS = new Set(['payments_stripe_payment_intent_id_key', 'payments_stripe_charge_id_key']);

/**
 * Applies one Stripe event in one transaction: claims its id in `processed_events`, takes the payment and
 * account locks (always in that order), moves the payment along its state machine and writes the ledger.
 * Idempotent and order-independent. Throws only for retryable failures (e.g. the database is down); an event
 * that can never apply as it stands is parked with its reason.
 */
export async function applyStripeEvent(
  db: Kysely<Database>,
  event: StripeEvent,
  options: ApplyOptions,
): Promise<ApplyResult> {
  try {
    return await db.transaction().execute(async (trx): Promise<ApplyResult> => {
      const claimed = await claimEvent(trx, event, options.replay ?? false);
      if (!claimed) return { outcome: 'duplicate', ...NOTHING };
      const entries = isHandledEventType(event.type)
        ? await applyToPayments(trx, { ...event, type: event.type }, options.packages)
        : null;
      if (!entries) {
        await markIgnored(trx, event.id);
        return { outcome: 'ignored', ...NOTHING };
      }
      return { outcome: 'applied', ...effectsOf(entries) };
    });
  } catch (error: unknown) {
    const park = parkReason(error);
    if (!park) throw error;
    await parkEvent(db, event, park.message);
    return { outcome: 'parked', reason: park.reason, ...NOTHING };
  }
}
