import { createHmac } from 'node:crypto';
import type { StripeObject } from './store.js';

/** Stripe's signature header for `payload`: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.payload">`. */
export function signPayload(
  payload: string,
  secret: string,
  timestamp = Math.floor(Date.now() / 1000),
): string {
  const v1 = createHmac('sha256', secret).update(`${timestamp}.${payload}`).digest('hex');
  return `t=${timestamp},v1=${v1}`;
}

export interface DeliveryOptions {
  /** Where events are POSTed; no endpoint means events are only kept for `GET /v1/events`. */
  endpoint?: string;
  secret: string;
  /** First retry delay; doubles per attempt up to `maxRetryDelayMs`. @default 1000 */
  retryBaseMs?: number;
  /** @default 60000 */
  maxRetryDelayMs?: number;
  /** Attempts before an event is given up on. @default 12 */
  maxAttempts?: number;
  /** @default 10000 */
  timeoutMs?: number;
}

export interface DeliveryRecord {
  eventId: string;
  type: string;
  attempt: number;
  status: number | 'network_error';
  at: string;
}

interface Pending {
  event: StripeObject;
  attempt: number;
  dueAt: number;
}

/**
 * Delivers events to the endpoint one POST at a time, retrying non-2xx answers with exponential backoff.
 * Paused: events wait. Chaos: each delivery may be duplicated and the queue is taken in random order.
 */
export class WebhookDispatcher {
  readonly log: DeliveryRecord[] = [];
  private queue: Pending[] = [];
  private paused = false;
  private chaos = { duplicateRate: 0, reorder: false };
  private timer: NodeJS.Timeout | undefined;
  private inFlight = 0;
  private closed = false;

  constructor(private readonly options: DeliveryOptions) {}

  get endpoint(): string | undefined {
    return this.options.endpoint;
  }

  setEndpoint(endpoint: string | undefined) {
    this.options.endpoint = endpoint;
    this.schedule();
    return this.status();
  }

  enqueue(event: StripeObject): void {
    if (!this.options.endpoint) return;
    this.queue.push({ event, attempt: 0, dueAt: Date.now() });
    if (Math.random() < this.chaos.duplicateRate) this.queue.push({ event, attempt: 0, dueAt: Date.now() });
    this.schedule();
  }

  pause() {
    this.paused = true;
    return this.status();
  }

  resume() {
    this.paused = false;
    for (const pending of this.queue) pending.dueAt = Math.min(pending.dueAt, Date.now());
    this.schedule();
    return this.status();
  }

  setChaos(chaos: { duplicateRate?: number; reorder?: boolean }): void {
    this.chaos = { duplicateRate: chaos.duplicateRate ?? 0, reorder: chaos.reorder ?? false };
  }

  status() {
    return {
      endpoint: this.options.endpoint ?? null,
      paused: this.paused,
      chaos: this.chaos,
      pending: this.queue.length,
      inFlight: this.inFlight,
      delivered: this.log.filter((d) => typeof d.status === 'number' && d.status < 300).length,
    };
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
  }

  private schedule(): void {
    if (this.closed || this.paused || this.inFlight > 0 || this.queue.length === 0) return;
    clearTimeout(this.timer);
    const next = Math.min(...this.queue.map((p) => p.dueAt));
    this.timer = setTimeout(() => void this.deliverNext(), Math.max(0, next - Date.now()));
  }

  private async deliverNext(): Promise<void> {
    const now = Date.now();
    const due = this.queue.filter((p) => p.dueAt <= now);
    if (this.paused || due.length === 0 || !this.options.endpoint) return this.schedule();
    const pending = this.chaos.reorder ? due[Math.floor(Math.random() * due.length)]! : due[0]!;
    this.queue.splice(this.queue.indexOf(pending), 1);
    this.inFlight++;
    pending.attempt++;
    const status = await this.post(this.options.endpoint, pending.event);
    this.inFlight--;
    this.log.push({
      eventId: pending.event.id,
      type: String(pending.event.type),
      attempt: pending.attempt,
      status,
      at: new Date().toISOString(),
    });
    if ((status === 'network_error' || status >= 300) && pending.attempt < (this.options.maxAttempts ?? 12)) {
      const base = this.options.retryBaseMs ?? 1000;
      const delay = Math.min(base * 2 ** (pending.attempt - 1), this.options.maxRetryDelayMs ?? 60_000);
      this.queue.push({ ...pending, dueAt: Date.now() + delay });
    }
    this.schedule();
  }

  private async post(endpoint: string, event: StripeObject): Promise<number | 'network_error'> {
    const payload = JSON.stringify({ ...event, pending_webhooks: 1 }, null, 2);
    try {
      const response = await fetch(endpoint, {
        method: 'POST',
        headers: {
          'content-type': 'application/json; charset=utf-8',
          'stripe-signature': signPayload(payload, this.options.secret),
          'user-agent': 'Stripe/1.0 (+https://stripe.com/docs/webhooks)',
        },
        body: payload,
        signal: AbortSignal.timeout(this.options.timeoutMs ?? 10_000),
      });
      await response.arrayBuffer();
      return response.status;
    } catch {
      return 'network_error';
    }
  }
}
