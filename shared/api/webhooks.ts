import * as z from 'zod';
import type { WebhookDelivery, WebhookEndpoint } from '../db/schema.js';
import { ServiceError } from '../errors.js';
import { createEndpoint, deleteEndpoint, listEndpoints } from '../webhooks/endpoints.js';
import { WEBHOOK_EVENT_TYPES } from '../webhooks/events.js';
import { listDeliveries, redeliver } from '../webhooks/outbox.js';
import type { WebhookRuntime } from '../webhooks/runtime.js';
import { type ApiDependencies, adminActor, defineEndpoint, nowOf, ok } from './endpoint.js';
import { decodeCursor, encodeCursor, isCursorInstant, isUuid, pageLimit, pageOf } from './paging.js';
import { reasonBody, storableText } from './schemas.js';

const adminErrors = { 401: 'no IAM identity', 403: 'not an admin principal' } as const;
const DELIVERY_STATUSES = ['pending', 'delivered', 'failed', 'dead'] as const;

const endpointSchema = z.object({
  id: z.string(),
  url: z.string(),
  events: z.array(z.enum(WEBHOOK_EVENT_TYPES)),
  description: z.string().nullable(),
  createdAt: z.string(),
  deletedAt: z.string().nullable(),
});

const endpointView = (e: WebhookEndpoint) => ({
  id: e.id,
  url: e.url,
  events: e.event_types,
  description: e.description,
  createdAt: e.created_at.toISOString(),
  deletedAt: e.deleted_at?.toISOString() ?? null,
});

const deliverySchema = z.object({
  id: z.string(),
  webhookId: z.string(),
  endpointId: z.string(),
  eventId: z.string(),
  type: z.string(),
  status: z.enum(DELIVERY_STATUSES),
  attempts: z.number().int(),
  lastStatus: z.number().int().nullable(),
  lastAttemptAt: z.string().nullable(),
  nextAttemptAt: z.string().nullable(),
  lastResponse: z.string().nullable(),
  createdAt: z.string(),
});

const deliveryView = (d: WebhookDelivery) => ({
  id: d.id,
  webhookId: d.webhook_id,
  endpointId: d.endpoint_id,
  eventId: d.event_id,
  type: d.type,
  status: d.status,
  attempts: d.attempts,
  lastStatus: d.last_status,
  lastAttemptAt: d.last_attempt_at?.toISOString() ?? null,
  nextAttemptAt: d.next_attempt_at?.toISOString() ?? null,
  lastResponse: d.last_response,
  createdAt: d.created_at.toISOString(),
});

function runtimeOf(deps: ApiDependencies): WebhookRuntime {
  if (!deps.webhooks) {
    throw new ServiceError('webhooks_not_configured', 'outbound webhooks are not configured for this stage');
  }
  return deps.webhooks;
}

/** Opaque keyset cursor over (created_at, id), newest first. */
const CURSOR = 'd1.';
const isPosition = (v: unknown): v is [string, string] =>
  Array.isArray(v) && v.length === 2 && isCursorInstant(v[0]) && isUuid(v[1]);
const afterPosition = ([at, id]: [string, string]) => ({ createdAt: new Date(at), id });

const idParams = z.object({ id: z.uuid() }).strict();

export const listWebhookEndpoints = defineEndpoint({
  route: 'GET /v1/admin/webhook-endpoints',
  summary: 'Registered webhook endpoints (not deleted), newest first; their secrets are never shown again',
  responses: { 200: { description: 'the endpoints', schema: z.object({ items: z.array(endpointSchema) }) } },
  errors: adminErrors,
  async handle(_request, { db }) {
    return ok({ items: (await listEndpoints(db)).map(endpointView) });
  },
});

export const createWebhookEndpoint = defineEndpoint({
  route: 'POST /v1/admin/webhook-endpoints',
  summary:
    'Registers an endpoint for the event types named; answers its signing secret, the only time it is shown',
  body: z
    .object({
      url: z.string().min(1).max(2048),
      events: z.array(z.enum(WEBHOOK_EVENT_TYPES)).min(1).max(WEBHOOK_EVENT_TYPES.length),
      description: storableText(500).optional(),
      reason: storableText(2000).optional(),
    })
    .strict(),
  responses: {
    201: {
      description: 'the endpoint and its Standard Webhooks signing secret (whsec_...)',
      schema: endpointSchema.extend({ secret: z.string() }),
    },
  },
  errors: {
    ...adminErrors,
    400: 'invalid body: a URL that is not https (http only to loopback, locally), an unknown event type',
    503: 'webhooks are not configured',
  },
  async handle({ body, caller }, deps) {
    const runtime = runtimeOf(deps);
    const { endpoint, secret } = await createEndpoint(
      deps.db,
      runtime.cipher,
      { url: body.url, events: body.events, description: body.description ?? null },
      adminActor(caller, body.reason ?? 'registered a webhook endpoint'),
      { allowLoopbackHttp: runtime.allowLoopbackHttp },
    );
    return ok({ ...endpointView(endpoint), secret }, 201);
  },
});

export const deleteWebhookEndpoint = defineEndpoint({
  route: 'DELETE /v1/admin/webhook-endpoints/{id}',
  summary: 'Deletes an endpoint: it receives nothing more, its pending deliveries are dropped; idempotent',
  params: idParams,
  responses: { 200: { description: 'the endpoint, deleted', schema: endpointSchema } },
  errors: { ...adminErrors, 400: 'invalid id', 404: 'no such endpoint' },
  async handle({ params, caller }, { db }) {
    const endpoint = await deleteEndpoint(db, params.id, adminActor(caller, 'deleted a webhook endpoint'));
    return ok(endpointView(endpoint));
  },
});

export const listWebhookDeliveries = defineEndpoint({
  route: 'GET /v1/admin/webhook-deliveries',
  summary: 'The delivery log, newest first: one delivery per endpoint and event, with its attempts so far',
  query: z
    .object({
      endpoint: z.uuid().optional(),
      status: z.enum(DELIVERY_STATUSES).optional(),
      limit: pageLimit,
      cursor: z.string().max(200).optional(),
    })
    .strict(),
  responses: {
    200: {
      description: 'one page; pass nextCursor back as cursor for the next (older) page',
      schema: z.object({ items: z.array(deliverySchema), nextCursor: z.string().nullable() }),
    },
  },
  errors: { ...adminErrors, 400: 'bad endpoint, status, limit or cursor' },
  async handle({ query }, { db }) {
    const rows = await listDeliveries(db, {
      endpointId: query.endpoint,
      status: query.status,
      after: query.cursor ? afterPosition(decodeCursor(CURSOR, query.cursor, isPosition)) : undefined,
      limit: query.limit + 1,
    });
    const { page, nextCursor } = pageOf(rows, query.limit, (d) =>
      encodeCursor(CURSOR, [d.created_at.toISOString(), d.id]),
    );
    return ok({ items: page.map(deliveryView), nextCursor });
  },
});

export const redeliverWebhook = defineEndpoint({
  route: 'POST /v1/admin/webhook-deliveries/{id}/redeliver',
  summary: 'Sends a delivery again now, with the same webhook-id and a fresh retry schedule',
  params: idParams,
  body: reasonBody,
  responses: { 200: { description: 'the delivery, pending again', schema: deliverySchema } },
  errors: {
    ...adminErrors,
    400: 'invalid id or body',
    404: 'no such delivery',
    503: 'webhooks are not configured',
  },
  async handle({ params, body, caller }, deps) {
    const runtime = runtimeOf(deps);
    const delivery = await redeliver(
      deps.db,
      runtime.queue,
      params.id,
      adminActor(caller, body.reason),
      nowOf(deps),
    );
    return ok(deliveryView(delivery));
  },
});
