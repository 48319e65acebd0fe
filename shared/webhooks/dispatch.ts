import type { Kysely } from 'kysely';
import { Webhook } from 'standardwebhooks';
import type { Database } from '../db/schema.js';
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

/** POSTs and reads what the endpoint answered; never throws (a refused or timed-out POST is status null). */
async function post(url: string, headers: Record<string, string>, body: string, timeoutMs: number) {
  try {
    // No redirects: an endpoint answers itself, it does not send its events elsewhere.
    const response = await fetch(url, {
      method: 'POST',
      headers,
      body,
      redirect: 'manual',
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await response.text().catch(() => '');
    return { status: response.status, response: text.slice(0, RESPONSE_EXCERPT_CHARS) };
  } catch (error: unknown) {
    const cause = (error as { cause?: { code?: string } }).cause?.code;
    const name = (error as Error).name === 'TimeoutError' ? 'timed out' : (cause ?? (error as Error).message);
    return { status: null, response: `no response: ${name}` };
  }
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
  const result = await post(endpoint.url, headers, payload, deps.timeoutMs ?? 10_000);
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
