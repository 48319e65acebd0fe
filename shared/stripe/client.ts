import Stripe from 'stripe';

export interface StripeClientOptions {
  /** `sk_test_...` or `sk_live_...`. */
  readonly secretKey: string;
  /** Another API base, e.g. the local emulator `http://127.0.0.1:12111`. @default Stripe's own */
  readonly apiBase?: string;
  /** @default 2 */
  readonly maxNetworkRetries?: number;
  /** @default 10000 */
  readonly timeoutMs?: number;
}

/** The one way the service builds a Stripe client: real Stripe, or the emulator when `apiBase` is set. */
export function createStripeClient(options: StripeClientOptions): Stripe {
  const base = options.apiBase ? new URL(options.apiBase) : undefined;
  return new Stripe(options.secretKey, {
    maxNetworkRetries: options.maxNetworkRetries ?? 2,
    timeout: options.timeoutMs ?? 10_000,
    appInfo: { name: 'credits-service' },
    ...(base && {
      host: base.hostname,
      port: Number(base.port || (base.protocol === 'https:' ? 443 : 80)),
      protocol: base.protocol === 'https:' ? 'https' : 'http',
    }),
  });
}
