import type Stripe from 'stripe';
import { createStripeClient } from './client.js';
import { stripeSecrets } from './secrets.js';

/**
 * A lazily built Stripe API client: the key from Secrets Manager by name (AWS) or from the environment
 * (local), pointed at `apiBase` when set (the emulator). `maxNetworkRetries` as for createStripeClient.
 */
export function lazyStripe(source: {
  secretName?: string;
  secretKey?: string;
  apiBase?: string;
  maxNetworkRetries?: number;
}): () => Promise<Stripe> {
  let client: Promise<Stripe> | undefined;
  return () => {
    client ??= (async () => {
      const secretKey = source.secretName
        ? (await stripeSecrets(source.secretName)).apiKey
        : source.secretKey;
      if (!secretKey) throw new Error('no Stripe API key configured');
      return createStripeClient({
        secretKey,
        apiBase: source.apiBase,
        ...(source.maxNetworkRetries !== undefined && { maxNetworkRetries: source.maxNetworkRetries }),
      });
    })();
    client.catch(() => {
      client = undefined; // a failed secret fetch is retried on the next call
    });
    return client;
  };
}
