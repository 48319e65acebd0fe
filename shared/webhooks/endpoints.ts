import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import { type AdminActor, recordAdminAction } from '../audit/audit.js';
import type { Database, WebhookEndpoint } from '../db/schema.js';
import { ServiceError, ValidationError } from '../errors.js';
import { ipLiteralOf, isAllowedAddress } from './address.js';
import { isWebhookEventType, WEBHOOK_EVENT_TYPES, type WebhookEventType } from './events.js';
import { generateSigningSecret, type SecretCipher } from './secrets.js';

/** The only writer of `webhook_endpoints`. */

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost']);

/**
 * Throws a ValidationError on `url` unless it is an absolute https URL without credentials whose host is not
 * an address off the public internet (a private, loopback, link-local or reserved IP, or localhost: see
 * address.ts; a name is judged by what it resolves to at each delivery). With `allowLoopbackHttp` (the local
 * stack only), loopback hosts are allowed, and http to 127.0.0.1, ::1 or localhost too.
 */
export function checkEndpointUrl(raw: string, options: { readonly allowLoopbackHttp: boolean }): URL {
  // The URL parser would strip or encode these silently, so the endpoint stored would not be the one given.
  if (/\s/.test(raw) || [...raw].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f)) {
    throw new ValidationError('url', 'must not contain whitespace or control characters');
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ValidationError('url', 'is not an absolute URL');
  }
  if (url.username || url.password) throw new ValidationError('url', 'must not carry credentials');
  if (url.port === '0') throw new ValidationError('url', 'must not use port 0');
  if (url.protocol === 'https:') {
    const ip = ipLiteralOf(url.hostname);
    const name = url.hostname.replace(/\.$/, '');
    const localhost = name === 'localhost' || name.endsWith('.localhost');
    if (ip ? !isAllowedAddress(ip, options.allowLoopbackHttp) : localhost && !options.allowLoopbackHttp) {
      throw new ValidationError(
        'url',
        `points at ${url.hostname}, which is not a public address (private, loopback, link-local or reserved); an endpoint must be reachable on the public internet`,
      );
    }
    return url;
  }
  if (url.protocol === 'http:' && options.allowLoopbackHttp) {
    if (LOOPBACK_HOSTS.has(url.hostname)) return url;
    throw new ValidationError(
      'url',
      'http is allowed only for loopback hosts (127.0.0.1, ::1, localhost) in the local stack; use https',
    );
  }
  throw new ValidationError('url', 'must use https');
}

/** Throws a ValidationError on `events` unless it lists known types; returns them without repeats. */
export function checkEventTypes(events: readonly string[]): WebhookEventType[] {
  if (events.length === 0) throw new ValidationError('events', 'must name at least one event type');
  const unknown = events.filter((e) => !isWebhookEventType(e));
  if (unknown.length > 0) {
    throw new ValidationError(
      'events',
      `unknown event type ${unknown.map((e) => JSON.stringify(e)).join(', ')}; known: ${WEBHOOK_EVENT_TYPES.join(', ')}`,
    );
  }
  return [...new Set(events as WebhookEventType[])];
}

export interface NewWebhookEndpoint {
  readonly url: string;
  readonly events: readonly string[];
  readonly description: string | null;
}

/**
 * Registers an endpoint (audited) with a new signing secret, stored encrypted; returns the row and the secret
 * in clear, which is never readable again. Bad input throws a ValidationError before anything is written.
 */
export async function createEndpoint(
  db: Kysely<Database>,
  cipher: SecretCipher,
  input: NewWebhookEndpoint,
  actor: AdminActor,
  options: { readonly allowLoopbackHttp: boolean },
): Promise<{ endpoint: WebhookEndpoint; secret: string }> {
  const url = checkEndpointUrl(input.url, options);
  const events = checkEventTypes(input.events);
  const id = randomUUID();
  const secret = generateSigningSecret();
  const secretCiphertext = await cipher.encrypt(secret, id);
  const endpoint = await db.transaction().execute(async (trx) => {
    const actionId = await recordAdminAction(trx, 'create_webhook_endpoint', actor, {
      payload: { endpointId: id, url: url.href, events },
    });
    return trx
      .insertInto('webhook_endpoints')
      .values({
        id,
        url: url.href,
        event_types: events,
        description: input.description,
        secret_ciphertext: secretCiphertext,
        created_action_id: actionId,
      })
      .returningAll()
      .executeTakeFirstOrThrow();
  });
  return { endpoint, secret };
}

/** Endpoints not deleted, newest first. */
export function listEndpoints(db: Kysely<Database>, limit = 500): Promise<WebhookEndpoint[]> {
  return db
    .selectFrom('webhook_endpoints')
    .selectAll()
    .where('deleted_at', 'is', null)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(limit)
    .execute();
}

/** Deletes an endpoint (audited): it receives nothing more; its deliveries stay listed. Idempotent. */
export async function deleteEndpoint(
  db: Kysely<Database>,
  id: string,
  actor: AdminActor,
): Promise<WebhookEndpoint> {
  return db.transaction().execute(async (trx) => {
    const endpoint = await trx
      .selectFrom('webhook_endpoints')
      .selectAll()
      .where('id', '=', id)
      .forUpdate()
      .executeTakeFirst();
    if (!endpoint) throw new ServiceError('webhook_endpoint_not_found', `no webhook endpoint ${id}`);
    if (endpoint.deleted_at) return endpoint;
    const actionId = await recordAdminAction(trx, 'delete_webhook_endpoint', actor, {
      payload: { endpointId: id, url: endpoint.url },
    });
    return trx
      .updateTable('webhook_endpoints')
      .set({ deleted_at: new Date(), deleted_action_id: actionId })
      .where('id', '=', id)
      .returningAll()
      .executeTakeFirstOrThrow();
  });
}
