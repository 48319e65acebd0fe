import http from 'node:http';
import https from 'node:https';
import type { Kysely } from 'kysely';
import { Webhook } from 'standardwebhooks';
import type { Database } from '../db/schema.js';
import { ipLiteralOf, isAllowedAddress, NotPublicAddressError, publicOnlyLookup } from './address.js';
import { abandonDelivery, claimDelivery, RESPONSE_EXCERPT_CHARS, recordAttempt } from './outbox.js';
import type { DeliveryQueue } from './queue.js';
import type { SecretCipher } from './secrets.js';

export interface DispatchDependencies {
  readonly db: Kysely<Database>;
  readonly queue: DeliveryQueue;
  readonly cipher: SecretCipher;
  /** The waits between attempts, in seconds (WEBHOOK_RETRY_SECONDS). */
  readonly retrySeconds: readonly number[];
  /** The time schedules are judged at; tests move it. Signatures always carry the real time. @default system */
  readonly clock?: () => Date;
  /** How long an endpoint has to answer. @default 10 s */
  readonly timeoutMs?: number;
  /** Deliveries may go to loopback addresses: the local stack only (see address.ts). @default false */
  readonly allowLoopbackHttp?: boolean;
}

export type DispatchOutcome =
  | { readonly outcome: 'skipped' }
  | { readonly outcome: 'abandoned'; readonly webhookId: string }
  | {
      readonly outcome: 'delivered' | 'failed' | 'dead';
      readonly webhookId: string;
      readonly attempts: number;
      readonly httpStatus: number | null;
      readonly retryInSeconds?: number;
    };

/** The Standard Webhooks headers and the body of one attempt. */
export function signedRequest(secret: string, webhookId: string, payload: string, at: Date) {
  return {
    'content-type': 'application/json',
    'user-agent': 'credits-webhooks/1',
    'webhook-id': webhookId,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': new Webhook(secret).sign(webhookId, at, payload),
  };
}

/**
 * POSTs and reads what the endpoint answered; never throws (a refused or timed-out POST is status null). The
 * connection goes only to an address the endpoint may be reached at (address.ts: never a private one, loopback
 * only with `allowLoopback`), whatever its name resolves to now. No redirects: an endpoint answers itself, it
 * does not send its events elsewhere. `timeoutMs` bounds the whole exchange, the answer's body included.
 */
function post(
  url: string,
  headers: Record<string, string>,
  body: string,
  timeoutMs: number,
  allowLoopback: boolean,
): Promise<{ status: number | null; response: string }> {
  const target = new URL(url);
  const literal = ipLiteralOf(target.hostname);
  if (literal && !isAllowedAddress(literal, allowLoopback)) {
    const refused = new NotPublicAddressError(target.hostname, [literal]);
    return Promise.resolve({ status: null, response: `no response: ${refused.code}: ${refused.message}` });
  }
  return new Promise((resolve) => {
    let settled = false;
    // Once the endpoint has answered, its status stands, even when its body is cut short or times out.
    let answered: { status: number | null; text: string } | undefined;
    const settle = (error?: unknown) => {
      if (settled) return;
      settled = true;
      if (answered) {
        resolve({ status: answered.status, response: answered.text.slice(0, RESPONSE_EXCERPT_CHARS) });
        return;
      }
      const e = error as { name?: string; code?: string; message?: string } | undefined;
      const why =
        e?.name === 'AbortError'
          ? 'timed out'
          : e?.code === 'ENOTPUBLIC'
            ? `${e.code}: ${e.message}`
            : (e?.code ?? e?.message ?? String(error));
      resolve({ status: null, response: `no response: ${why}` });
    };
    const request = (target.protocol === 'https:' ? https : http).request(
      target,
      {
        method: 'POST',
        headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
        // A connection of its own: a pooled one would skip the lookup, and with it the address check.
        agent: false,
        lookup: publicOnlyLookup(allowLoopback),
        signal: AbortSignal.timeout(timeoutMs),
      },
      (response) => {
        const reply = { status: response.statusCode ?? null, text: '' };
        answered = reply;
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          reply.text += chunk;
          // The excerpt is all that is kept: read no further ('close' settles with what was read).
          if (reply.text.length >= RESPONSE_EXCERPT_CHARS) response.destroy();
        });
        response.on('error', settle);
        response.on('close', () => settle());
      },
    );
    request.on('error', settle);
    request.end(body);
  });
}

/**
 * One attempt of one delivery, as one queue message asks: claims it (a message for a delivery that is not due,
 * already delivered or dead, or held by another attempt is skipped), signs and POSTs the event, records the
 * attempt, and schedules what follows: the next message with an SQS delay when the wait allows it (longer
 * waits are sent by the sweeper when due), or the DLQ once the schedule has run out. Throws only when the
 * database or the queue fails; the message is then retried by SQS and the attempt is not lost.
 */
export async function dispatchDelivery(
  deps: DispatchDependencies,
  deliveryId: string,
): Promise<DispatchOutcome> {
  const now = () => deps.clock?.() ?? new Date();
  const claimed = await claimDelivery(deps.db, deliveryId, now());
  if (!claimed) return { outcome: 'skipped' };
  const { delivery, endpoint, payload } = claimed;
  if (endpoint.deleted_at) {
    await abandonDelivery(deps.db, claimed, now());
    return { outcome: 'abandoned', webhookId: delivery.webhook_id };
  }
  const secret = await deps.cipher.decrypt(endpoint.secret_ciphertext, endpoint.id);
  const headers = signedRequest(secret, delivery.webhook_id, payload, new Date());
  const result = await post(
    endpoint.url,
    headers,
    payload,
    deps.timeoutMs ?? 10_000,
    deps.allowLoopbackHttp ?? false,
  );
  const recorded = await recordAttempt(deps.db, claimed, result, now(), deps.retrySeconds);
  if (recorded.enqueueDelaySeconds !== undefined) {
    await deps.queue.send(delivery.id, recorded.enqueueDelaySeconds);
  } else if (recorded.status === 'dead') {
    await deps.queue.deadLetter(delivery.id, `no 2xx after ${recorded.attempts} attempts`);
  }
  return {
    outcome: recorded.status as 'delivered' | 'failed' | 'dead',
    webhookId: delivery.webhook_id,
    attempts: recorded.attempts,
    httpStatus: result.status,
    ...(recorded.retryInSeconds !== undefined && { retryInSeconds: recorded.retryInSeconds }),
  };
}
