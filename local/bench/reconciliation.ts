import { DEFAULT_PACKAGES } from '../../shared/packages.js';
import { createRun, executeRun } from '../../shared/reconcile/reconcile.js';
import { createStripeClient } from '../../shared/stripe/client.js';
import { startStripeEmulator } from '../stripe-emulator/server.js';
import { type BenchContext, fmt } from './harness.js';

const PACK = DEFAULT_PACKAGES[0]!;

/** One unpaced reconciliation run healing paid sessions whose webhooks never arrived, against listing them. */
export async function benchReconciliation({ db, scale, report }: BenchContext): Promise<void> {
  console.error(`reconciliation: ${fmt(scale.sessions)} paid sessions whose webhooks never arrived`);
  const emulator = await startStripeEmulator({ port: 0, webhookSecret: 'whsec_bench' });
  try {
    for (let i = 0; i < scale.sessions; i++) {
      const session = emulator.emulator.createCheckoutSession({
        mode: 'payment',
        success_url: 'http://127.0.0.1/success',
        line_items: [
          {
            quantity: '1',
            price_data: {
              currency: PACK.currency,
              unit_amount: String(PACK.amount),
              product_data: { name: PACK.name },
            },
          },
        ],
        metadata: { user_id: `recon-${i}`, package_id: PACK.id },
      });
      emulator.emulator.completeSession(String(session.id), 'paid');
    }
    const stripe = createStripeClient({
      secretKey: 'sk_test_bench',
      apiBase: emulator.url,
      maxNetworkRetries: 0,
    });
    const window = { start: new Date(Date.now() - 3_600_000), end: new Date(Date.now() + 60_000) };
    let started = performance.now();
    let listed = 0;
    for await (const _ of stripe.checkout.sessions.list({ limit: 100, status: 'complete' })) listed++;
    const listSeconds = (performance.now() - started) / 1000;
    started = performance.now();
    const summary = await executeRun(
      { db, stripe, packages: DEFAULT_PACKAGES, requestsPerSecond: 10_000 },
      await createRun(db, 'admin', window),
    );
    const seconds = (performance.now() - started) / 1000;
    if (summary.status !== 'succeeded' || summary.healed !== scale.sessions) {
      throw new Error(`reconciliation ended ${summary.status} with ${summary.healed} healed`);
    }
    const paced = summary.counts.stripeRequests / 10;
    report({
      name: `reconciliation, ${fmt(scale.sessions)} sessions healed`,
      ours: `${seconds.toFixed(1)} s unpaced (${fmt(scale.sessions / seconds)} sessions/s, ${summary.counts.stripeRequests} Stripe requests; ${fmt(paced)} s at the default 10 requests/s)`,
      baseline: `of which listing them with the SDK ${listSeconds.toFixed(1)} s (${fmt(listed)} sessions)`,
      ratio: null,
      figures: { seconds, listSeconds, stripeRequests: summary.counts.stripeRequests, pacedSeconds: paced },
    });
  } finally {
    await emulator.close();
  }
}
