import { createHmac, timingSafeEqual } from 'node:crypto';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import { createWebhookIntake } from '../../functions/webhook-intake.js';
import { loadIntakeConfig } from '../../shared/config.js';
import { signPayload } from '../stripe-emulator/webhooks.js';
import { checkoutSession, lambdaContext, stripeEvent, webhookRequest } from './events.js';
import { type BenchContext, fmt, percentile, timeEach } from './harness.js';

/** The webhook intake handler on signed deliveries (SQS mocked at the SDK), against HMAC + JSON.parse. */
export async function benchIntake({ scale, report }: BenchContext): Promise<void> {
  console.error(`intake: ${fmt(scale.intakeCalls)} signed deliveries`);
  const secret = 'whsec_bench';
  const sqs = mockClient(SQSClient);
  sqs.on(SendMessageCommand).resolves({ MessageId: 'bench' });
  const intake = createWebhookIntake({
    config: loadIntakeConfig({
      QUEUE_URL: 'https://sqs.us-east-1.amazonaws.com/000000000000/bench',
      STRIPE_WEBHOOK_SECRET: secret,
    }),
    sqs: new SQSClient({}),
  });
  const bodies = Array.from({ length: scale.intakeCalls }, () =>
    JSON.stringify(stripeEvent('checkout.session.completed', checkoutSession({})), null, 2),
  );
  const signatures = bodies.map((body) => signPayload(body, secret));
  try {
    const ours = await timeEach(bodies.length, async (i) => {
      const request = webhookRequest(bodies[i]!, { 'stripe-signature': signatures[i]! });
      const response = (await intake(
        request,
        lambdaContext('webhook-intake'),
      )) as APIGatewayProxyStructuredResultV2;
      if (response.statusCode !== 200)
        throw new Error(`intake answered ${response.statusCode}: ${response.body}`);
    });
    // The ceiling: verify the HMAC and parse the JSON, nothing else.
    const raw = await timeEach(bodies.length, (i) => {
      const [t, v1] = signatures[i]!.split(',').map((part) => part.slice(part.indexOf('=') + 1)) as [
        string,
        string,
      ];
      const expected = createHmac('sha256', secret).update(`${t}.${bodies[i]}`).digest();
      if (!timingSafeEqual(expected, Buffer.from(v1, 'hex'))) throw new Error('bad signature');
      JSON.parse(bodies[i]!);
    });
    const p = (s: number[], n: number) => percentile(s, n).toFixed(3);
    report({
      name: 'intake handler (SQS mocked at the SDK)',
      ours: `p50 ${p(ours, 50)} ms, p99 ${p(ours, 99)} ms`,
      baseline: `HMAC + JSON.parse p50 ${p(raw, 50)} ms, p99 ${p(raw, 99)} ms`,
      ratio: null,
      figures: { p50: percentile(ours, 50), p99: percentile(ours, 99), rawP99: percentile(raw, 99) },
    });
  } finally {
    sqs.restore();
  }
}
