import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import type Stripe from 'stripe';
import { afterAll } from 'vitest';
import { type RunningStripeEmulator, startStripeEmulator } from '../../local/stripe-emulator/server.js';
import { createStripeClient } from '../../shared/stripe/client.js';

export const WEBHOOK_SECRET = 'whsec_test_secret_for_the_suite';
export const STRIPE_KEY = 'sk_test_suite';

export interface ReceivedWebhook {
  readonly body: string;
  readonly signature: string;
  readonly event: Stripe.Event;
}

/** A webhook endpoint on 127.0.0.1 that records deliveries; `failNext(n)` answers the next n with 500. */
export async function startWebhookReceiver(verify: (body: string, signature: string) => Stripe.Event) {
  const received: ReceivedWebhook[] = [];
  let failures = 0;
  const server = createServer(async (req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    if (failures > 0) {
      failures--;
      res.writeHead(500).end('try again');
      return;
    }
    const body = Buffer.concat(chunks).toString('utf8');
    const signature = String(req.headers['stripe-signature'] ?? '');
    received.push({ body, signature, event: verify(body, signature) });
    res.writeHead(200).end('{}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/webhooks/stripe`,
    received,
    failNext(n: number) {
      failures = n;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** The emulator on a free port with fast webhook retries, and a stripe SDK client pointed at it. */
export async function startEmulatorForTest(
  options: { webhookEndpoint?: string; asyncSettleMs?: number } = {},
): Promise<{ emulator: RunningStripeEmulator; stripe: Stripe }> {
  const emulator = await startStripeEmulator({
    port: 0,
    webhookSecret: WEBHOOK_SECRET,
    webhookEndpoint: options.webhookEndpoint,
    asyncSettleMs: options.asyncSettleMs ?? 50,
    delivery: { retryBaseMs: 20, maxRetryDelayMs: 200 },
  });
  afterAll(() => emulator.close());
  return {
    emulator,
    stripe: createStripeClient({ secretKey: STRIPE_KEY, apiBase: emulator.url, maxNetworkRetries: 0 }),
  };
}

/** Calls the emulator's control API (`/_emulator/...`) with a JSON body; throws on a non-2xx answer. */
export async function control<T = Record<string, unknown>>(
  emulator: RunningStripeEmulator,
  path: string,
  body: Record<string, unknown> = {},
): Promise<T> {
  const response = await fetch(`${emulator.url}/_emulator/${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const payload = await response.json();
  if (!response.ok) throw new Error(`control ${path}: ${response.status} ${JSON.stringify(payload)}`);
  return payload as T;
}

/** Polls `condition` every 10 ms until it holds or `timeoutMs` passes (then throws with `what`). */
export async function waitFor(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
