import { type Kysely, sql } from 'kysely';
import type { Trx } from '../db/locks.js';
import type { Database } from '../db/schema.js';
import type { StripeEvent } from '../stripe/events.js';

/** The only writer of `processed_events`: each Stripe event id claimed once, ignored, or parked with a reason. */

/**
 * Claims an event id in the caller's transaction: true the first time (or, with `replay`, when it was
 * parked), false for a duplicate. The row commits with the event's effects or not at all.
 */
export async function claimEvent(trx: Trx, event: StripeEvent, replay: boolean): Promise<boolean> {
  const inserted = await trx
    .insertInto('processed_events')
    .values({ event_id: event.id, event_type: event.type, outcome: 'applied' })
    .onConflict((oc) =>
      replay
        ? oc
            .column('event_id')
            .doUpdateSet({ outcome: 'applied', reason: null, payload: null, updated_at: sql`now()` })
            .where('processed_events.outcome', '=', 'parked')
        : oc.column('event_id').doNothing(),
    )
    .returning('event_id')
    .executeTakeFirst();
  return inserted !== undefined;
}

/** Marks a claimed event as concerning nothing of ours. */
export async function markIgnored(trx: Trx, eventId: string): Promise<void> {
  await trx
    .updateTable('processed_events')
    .set({ outcome: 'ignored' })
    .where('event_id', '=', eventId)
    .execute();
}

/**
 * jsonb refuses `\u0000` and lone surrogate escapes, which an event may carry: such an event is kept as one
 * JSON string holding its serialized text, so it can still be parked (and replayed) exactly.
 */
const UNSTORABLE_ESCAPE = /\\u0000|\\ud[89a-f][0-9a-f]{2}/i;

function storablePayload(event: StripeEvent): string {
  const text = JSON.stringify(event);
  return UNSTORABLE_ESCAPE.test(text) ? JSON.stringify(text) : text;
}

/** Parks an event for an operator, with its reason and the whole event. Parked again: one row, new reason. */
export async function parkEvent(db: Kysely<Database>, event: StripeEvent, reason: string): Promise<void> {
  await db
    .insertInto('processed_events')
    .values({
      event_id: event.id,
      event_type: event.type,
      outcome: 'parked',
      reason,
      payload: storablePayload(event),
    })
    .onConflict((oc) =>
      oc
        .column('event_id')
        .doUpdateSet({ reason, updated_at: sql`now()` })
        .where('processed_events.outcome', '=', 'parked'),
    )
    .execute();
}

export interface ParkedEvent {
  readonly eventId: string;
  readonly eventType: string;
  readonly reason: string;
  readonly parkedAt: Date;
}

/** Parked events, oldest first. */
export async function listParkedEvents(db: Kysely<Database>, limit: number): Promise<ParkedEvent[]> {
  const rows = await db
    .selectFrom('processed_events')
    .select(['event_id', 'event_type', 'reason', 'updated_at'])
    .where('outcome', '=', 'parked')
    .orderBy('created_at')
    .limit(limit)
    .execute();
  return rows.map((r) => ({
    eventId: r.event_id,
    eventType: r.event_type,
    reason: r.reason ?? '',
    parkedAt: r.updated_at,
  }));
}

/** A parked event's stored payload (the event as Stripe sent it) and reason, or undefined if not parked. */
export async function findParkedEvent(
  db: Kysely<Database>,
  eventId: string,
): Promise<{ readonly payload: unknown; readonly reason: string } | undefined> {
  const row = await db
    .selectFrom('processed_events')
    .select(['payload', 'reason'])
    .where('event_id', '=', eventId)
    .where('outcome', '=', 'parked')
    .executeTakeFirst();
  if (row?.payload == null) return undefined;
  const payload = typeof row.payload === 'string' ? JSON.parse(row.payload) : row.payload;
  return { payload, reason: row.reason ?? '' };
}
