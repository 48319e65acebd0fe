import { randomBytes } from 'node:crypto';
import { type Kysely, sql } from 'kysely';
import { type AdminActor, recordAdminAction } from '../audit/audit.js';
import type { Trx } from '../db/locks.js';
import type {
  Database,
  WebhookAttempt,
  WebhookDelivery,
  WebhookDeliveryStatus,
  WebhookEndpoint,
} from '../db/schema.js';
import { ServiceError } from '../errors.js';
import {
  isWebhookEventType,
  type WebhookEvent,
  type WebhookEventData,
  type WebhookEventType,
} from './events.js';
import { type DeliveryQueue, MAX_QUEUE_DELAY_SECONDS } from './queue.js';

/**
 * The only writer of `webhook_outbox`, `webhook_deliveries` and `webhook_attempts`: events in, deliveries and
 * their attempts out.
 */

/**
 * The waits between attempts, in seconds: 12 attempts over about 2.8 days, then the delivery is dead.
 * WEBHOOK_RETRY_SECONDS replaces it.
 */
export const DEFAULT_RETRY_SECONDS: readonly number[] = [
  5, 300, 1800, 7200, 18_000, 36_000, 36_000, 36_000, 36_000, 36_000, 36_000,
];

/** A queued attempt this late was lost (a crash, a failed send): the sweeper sends it again. */
export const LOST_MESSAGE_GRACE_MS = 120_000;
/** How long one attempt may hold its delivery; longer than the POST's timeout. */
export const LEASE_MS = 60_000;
/** A delayed message may surface this early (SQS delays are whole seconds). */
const EARLY_TOLERANCE_MS = 1_000;
/** How much of an endpoint's answer the delivery log keeps. */
export const RESPONSE_EXCERPT_CHARS = 1024;

const inMs = (date: Date, ms: number) => new Date(date.getTime() + ms);

export interface NewWebhookEvent<T extends WebhookEventType = WebhookEventType> {
  readonly type: T;
  /** The account the event is about (kept for operators; the body names the user in `data.userId`). */
  readonly accountId?: string | null;
  readonly data: WebhookEventData;
  /** @default now */
  readonly createdAt?: Date;
}

/**
 * Writes an event to the outbox in the caller's transaction `trx`: it is sent if and only if that transaction
 * commits. Call `flushWebhooks` (below) after the commit to send it within seconds; the
 * sweeper sends whatever a crash left behind. Returns the event with its id. Throws when `trx` is not a
 * transaction or the type is not one of WEBHOOK_EVENT_TYPES.
 */
export async function emitEvent<T extends WebhookEventType>(
  trx: Trx,
  event: NewWebhookEvent<T>,
): Promise<WebhookEvent<T>> {
  if (!trx.isTransaction) throw new Error('emitEvent must run in the transaction of the change it reports');
  if (!isWebhookEventType(event.type)) throw new Error(`unknown webhook event type ${String(event.type)}`);
  const createdAt = event.createdAt ?? new Date();
  const body: WebhookEvent<T> = {
    id: `evt_${randomBytes(16).toString('hex')}`,
    type: event.type,
    createdAt: createdAt.toISOString(),
    data: event.data,
  };
  await trx
    .insertInto('webhook_outbox')
    .values({
      id: body.id,
      type: body.type,
      account_id: event.accountId ?? null,
      payload: JSON.stringify(body),
      created_at: createdAt,
    })
    .execute();
  return body;
}

/**
 * Fans out outbox events not yet fanned out: one pending delivery per endpoint subscribed to the type (and
 * registered by the time of the event). Concurrent callers skip each other's rows. Returns the events done.
 */
export async function fanOutOutbox(db: Kysely<Database>, now: Date, limit = 200): Promise<number> {
  return db.transaction().execute(async (trx) => {
    const events = await trx
      .selectFrom('webhook_outbox')
      .select(['id', 'type', 'created_at'])
      .where('fanned_out_at', 'is', null)
      .orderBy('created_at')
      .limit(limit)
      .forUpdate()
      .skipLocked()
      .execute();
    if (events.length === 0) return 0;
    const endpoints = await trx
      .selectFrom('webhook_endpoints')
      .select(['id', 'event_types', 'created_at'])
      .where('deleted_at', 'is', null)
      .execute();
    const deliveries = events.flatMap((event) =>
      endpoints
        .filter((e) => e.event_types.includes(event.type) && e.created_at <= event.created_at)
        .map((endpoint) => ({
          webhook_id: `msg_${randomBytes(16).toString('hex')}`,
          event_id: event.id,
          endpoint_id: endpoint.id,
          type: event.type,
          next_attempt_at: now,
          // Explicit, in milliseconds as JavaScript keeps them: listing cursors carry it back exactly.
          created_at: now,
        })),
    );
    if (deliveries.length > 0) {
      await trx
        .insertInto('webhook_deliveries')
        .values(deliveries)
        .onConflict((oc) => oc.columns(['event_id', 'endpoint_id']).doNothing())
        .execute();
    }
    await trx
      .updateTable('webhook_outbox')
      .set({ fanned_out_at: now })
      .where(
        'id',
        'in',
        events.map((e) => e.id),
      )
      .execute();
    return events.length;
  });
}

/**
 * Sends a queue message for every delivery whose attempt is due and has none in the queue: new deliveries,
 * waits longer than SQS's 15-minute delay that have run out, and messages lost on the way (overdue by
 * LOST_MESSAGE_GRACE_MS). A send that fails leaves its delivery for the next call. Returns the count sent.
 */
export async function enqueueDueDeliveries(
  db: Kysely<Database>,
  queue: DeliveryQueue,
  now: Date,
  limit = 500,
): Promise<number> {
  const lostBefore = new Date(now.getTime() - LOST_MESSAGE_GRACE_MS);
  const claimed = await db
    .updateTable('webhook_deliveries')
    .set({ enqueued_at: now })
    .where('id', 'in', (eb) =>
      eb
        .selectFrom('webhook_deliveries')
        .select('id')
        .where('status', 'in', ['pending', 'failed'])
        .where('next_attempt_at', '<=', now)
        .where((w) =>
          w.or([
            w('enqueued_at', 'is', null),
            w.and([w('enqueued_at', '<=', lostBefore), w('next_attempt_at', '<=', lostBefore)]),
          ]),
        )
        .where((w) => w.or([w('lease_until', 'is', null), w('lease_until', '<', now)]))
        .orderBy('next_attempt_at')
        .limit(limit)
        .forUpdate()
        .skipLocked(),
    )
    .returning('id')
    .execute();
  let sent = 0;
  let failure: unknown;
  for (const { id } of claimed) {
    try {
      await queue.send(id);
      sent++;
    } catch (error: unknown) {
      failure ??= error;
      await db.updateTable('webhook_deliveries').set({ enqueued_at: null }).where('id', '=', id).execute();
    }
  }
  if (failure) throw failure;
  return sent;
}

/**
 * Fans out the outbox and sends what is due: call it after a transaction that emitted events commits, and
 * from the sweeper. Throws when the queue refuses a send (what was not sent stays for the next call).
 */
export async function flushWebhooks(
  db: Kysely<Database>,
  queue: DeliveryQueue,
  now: Date = new Date(),
): Promise<{ events: number; sent: number }> {
  const events = await fanOutOutbox(db, now);
  const sent = await enqueueDueDeliveries(db, queue, now);
  return { events, sent };
}

export interface ClaimedDelivery {
  readonly delivery: WebhookDelivery;
  readonly endpoint: WebhookEndpoint;
  /** The event body, byte for byte as written to the outbox. */
  readonly payload: string;
}

/**
 * Takes `deliveryId` for one attempt when it is due and no other attempt holds it; undefined otherwise (a
 * duplicate or stale message, a delivery already delivered or dead), and the message is then dropped.
 */
export async function claimDelivery(
  db: Kysely<Database>,
  deliveryId: string,
  now: Date,
): Promise<ClaimedDelivery | undefined> {
  const delivery = await db
    .updateTable('webhook_deliveries')
    .set({ lease_until: inMs(now, LEASE_MS) })
    .where('id', '=', deliveryId)
    .where('status', 'in', ['pending', 'failed'])
    .where('next_attempt_at', '<=', inMs(now, EARLY_TOLERANCE_MS))
    .where((w) => w.or([w('lease_until', 'is', null), w('lease_until', '<', now)]))
    .returningAll()
    .executeTakeFirst();
  if (!delivery) return undefined;
  const [endpoint, event] = await Promise.all([
    db
      .selectFrom('webhook_endpoints')
      .selectAll()
      .where('id', '=', delivery.endpoint_id)
      .executeTakeFirstOrThrow(),
    db
      .selectFrom('webhook_outbox')
      .select('payload')
      .where('id', '=', delivery.event_id)
      .executeTakeFirstOrThrow(),
  ]);
  return { delivery, endpoint, payload: event.payload };
}

/** What an endpoint answered: its HTTP status (null when it answered nothing) and the start of its body. */
export interface AttemptResult {
  readonly status: number | null;
  readonly response: string;
}

export interface RecordedAttempt {
  readonly status: WebhookDeliveryStatus;
  readonly attempts: number;
  /** When failed: the wait before the next attempt. */
  readonly retryInSeconds?: number;
  /** When failed and the wait fits an SQS delay: the caller sends the next message with this delay. */
  readonly enqueueDelaySeconds?: number;
}

/**
 * Records one attempt in the delivery log and decides what follows: delivered on a 2xx; otherwise failed with
 * the next attempt `retrySeconds[attempts - 1]` seconds on, or dead once the schedule has run out.
 */
export async function recordAttempt(
  db: Kysely<Database>,
  claimed: ClaimedDelivery,
  result: AttemptResult,
  now: Date,
  retrySeconds: readonly number[],
): Promise<RecordedAttempt> {
  const { delivery } = claimed;
  const attempts = delivery.attempts + 1;
  const response = result.response.slice(0, RESPONSE_EXCERPT_CHARS);
  const delivered = result.status !== null && result.status >= 200 && result.status < 300;
  const wait = delivered ? undefined : retrySeconds[attempts - 1];
  const status: WebhookDeliveryStatus = delivered ? 'delivered' : wait === undefined ? 'dead' : 'failed';
  const enqueue = wait !== undefined && wait <= MAX_QUEUE_DELAY_SECONDS;
  await db.transaction().execute(async (trx) => {
    await trx
      .insertInto('webhook_attempts')
      .values({
        delivery_id: delivery.id,
        webhook_id: delivery.webhook_id,
        status: result.status,
        response,
        attempted_at: now,
      })
      .execute();
    await trx
      .updateTable('webhook_deliveries')
      .set({
        status,
        attempts,
        last_status: result.status,
        last_response: response,
        last_attempt_at: now,
        next_attempt_at: wait === undefined ? null : inMs(now, wait * 1000),
        enqueued_at: enqueue ? now : null,
        lease_until: null,
      })
      .where('id', '=', delivery.id)
      .execute();
  });
  return {
    status,
    attempts,
    ...(wait !== undefined && { retryInSeconds: wait }),
    ...(enqueue && { enqueueDelaySeconds: wait }),
  };
}

/** A delivery whose endpoint was deleted: dead without an attempt (nobody is listening for it). */
export async function abandonDelivery(
  db: Kysely<Database>,
  claimed: ClaimedDelivery,
  now: Date,
): Promise<void> {
  await db
    .updateTable('webhook_deliveries')
    .set({
      status: 'dead',
      last_response: 'endpoint deleted: not sent',
      last_attempt_at: now,
      next_attempt_at: null,
      lease_until: null,
    })
    .where('id', '=', claimed.delivery.id)
    .execute();
}

export interface DeliveryFilter {
  readonly endpointId?: string;
  readonly status?: WebhookDeliveryStatus;
  /** Keyset: only deliveries listed after this one (newest first). */
  readonly after?: { readonly createdAt: Date; readonly id: string };
  readonly limit: number;
}

/** Deliveries newest first, filtered by endpoint and status. */
export function listDeliveries(db: Kysely<Database>, filter: DeliveryFilter): Promise<WebhookDelivery[]> {
  let query = db.selectFrom('webhook_deliveries').selectAll();
  if (filter.endpointId) query = query.where('endpoint_id', '=', filter.endpointId);
  if (filter.status) query = query.where('status', '=', filter.status);
  if (filter.after) {
    const { createdAt, id } = filter.after;
    query = query.where((w) =>
      w.or([w('created_at', '<', createdAt), w.and([w('created_at', '=', createdAt), w('id', '<', id)])]),
    );
  }
  return query.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(filter.limit).execute();
}

/** Every attempt of a delivery, oldest first (redelivered ones included). */
export function listAttempts(db: Kysely<Database>, deliveryId: string): Promise<WebhookAttempt[]> {
  return db
    .selectFrom('webhook_attempts')
    .selectAll()
    .where('delivery_id', '=', deliveryId)
    .orderBy('id')
    .execute();
}

/**
 * Resets a delivery (audited) to pending with a fresh schedule, due now, and sends it with the same
 * `webhook-id`; its attempts so far stay in the log. A send the queue refuses is left to the sweeper.
 */
export async function redeliver(
  db: Kysely<Database>,
  queue: DeliveryQueue,
  deliveryId: string,
  actor: AdminActor,
  now: Date,
): Promise<WebhookDelivery> {
  const delivery = await db.transaction().execute(async (trx) => {
    const current = await trx
      .selectFrom('webhook_deliveries')
      .selectAll()
      .where('id', '=', deliveryId)
      .forUpdate()
      .executeTakeFirst();
    if (!current) throw new ServiceError('webhook_delivery_not_found', `no webhook delivery ${deliveryId}`);
    await recordAdminAction(trx, 'redeliver_webhook', actor, {
      payload: { deliveryId, webhookId: current.webhook_id, previousStatus: current.status },
    });
    return trx
      .updateTable('webhook_deliveries')
      .set({ status: 'pending', attempts: 0, next_attempt_at: now, enqueued_at: now, lease_until: null })
      .where('id', '=', deliveryId)
      .returningAll()
      .executeTakeFirstOrThrow();
  });
  try {
    await queue.send(delivery.id);
  } catch {
    await db
      .updateTable('webhook_deliveries')
      .set({ enqueued_at: null })
      .where('id', '=', deliveryId)
      .execute();
  }
  return delivery;
}

/** How long settled webhook history (events, deliveries, attempts) is kept for the delivery log. */
export const WEBHOOK_RETENTION_DAYS = 30;

/**
 * The sweeper's part: deletes events fanned out more than `retentionDays` ago whose every delivery is settled
 * (delivered or dead), with their deliveries and attempts, a batch at a time, so the history does not grow
 * for ever (and the user ids in old bodies go with it). Returns the events deleted.
 */
export async function pruneWebhookHistory(
  db: Kysely<Database>,
  now: Date,
  options: { readonly retentionDays?: number; readonly batch?: number } = {},
): Promise<number> {
  const cutoff = new Date(now.getTime() - (options.retentionDays ?? WEBHOOK_RETENTION_DAYS) * 86_400_000);
  return db.transaction().execute(async (trx) => {
    const old = await trx
      .selectFrom('webhook_outbox as o')
      .select('o.id')
      .where('o.fanned_out_at', '<', cutoff)
      .where(({ not, exists, selectFrom }) =>
        not(
          exists(
            selectFrom('webhook_deliveries as d')
              .select('d.id')
              .whereRef('d.event_id', '=', 'o.id')
              .where('d.status', 'in', ['pending', 'failed']),
          ),
        ),
      )
      .orderBy('o.fanned_out_at')
      .limit(options.batch ?? 1000)
      .forUpdate()
      .skipLocked()
      .execute();
    if (old.length === 0) return 0;
    const ids = old.map((o) => o.id);
    await trx
      .deleteFrom('webhook_attempts')
      .where(
        'delivery_id',
        'in',
        trx.selectFrom('webhook_deliveries').select('id').where('event_id', 'in', ids),
      )
      .execute();
    await trx.deleteFrom('webhook_deliveries').where('event_id', 'in', ids).execute();
    await trx.deleteFrom('webhook_outbox').where('id', 'in', ids).execute();
    return ids.length;
  });
}

/**
 * GDPR erasure's part, in its transaction: the account's events keep their amounts but no longer name the
 * user (`data.userId` null), so a delivery still pending or a redelivery sends no personal data.
 */
export async function eraseEventsOf(trx: Trx, accountId: string): Promise<void> {
  await trx
    .updateTable('webhook_outbox')
    .set({ payload: sql<string>`jsonb_set(payload::jsonb, '{data,userId}', 'null')::text` })
    .where('account_id', '=', accountId)
    .where(sql<boolean>`payload::jsonb #>> '{data,userId}' IS NOT NULL`)
    .execute();
}
