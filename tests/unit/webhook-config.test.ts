import { describe, expect, it } from 'vitest';
import { loadApiConfig, loadDispatcherConfig, parseRetrySeconds } from '../../shared/config.js';
import { DEFAULT_RETRY_SECONDS } from '../../shared/webhooks/outbox.js';

const QUEUE = 'https://sqs.us-east-1.amazonaws.com/123456789012/credits-webhook-deliveries';
const API_ENV = {
  DATABASE_URL: 'postgres://localhost/credits',
  STRIPE_SECRET_KEY: 'sk_test_x',
  CHECKOUT_SUCCESS_URL: 'https://app.example.com/ok',
  CHECKOUT_CANCEL_URL: 'https://app.example.com/no',
};

describe('webhook configuration', () => {
  it('retries for about three days by default, and never longer', () => {
    const total = DEFAULT_RETRY_SECONDS.reduce((a, b) => a + b, 0);
    expect(total).toBeGreaterThan(2.5 * 86_400);
    expect(total).toBeLessThanOrEqual(3 * 86_400);
    expect(DEFAULT_RETRY_SECONDS[0]).toBe(5);
  });

  it('reads WEBHOOK_RETRY_SECONDS as comma-separated whole seconds', () => {
    expect(parseRetrySeconds('1, 2,30')).toEqual([1, 2, 30]);
    expect(parseRetrySeconds('0')).toEqual([0]);
  });

  it.each(['', '1,,2', '1.5', '-1', 'soon', '43201', Array(51).fill('1').join(',')])(
    'refuses WEBHOOK_RETRY_SECONDS=%j, naming the variable',
    (raw) => {
      expect(() => parseRetrySeconds(raw)).toThrow(/WEBHOOK_RETRY_SECONDS/);
    },
  );

  it('gives the api webhooks only when WEBHOOK_QUEUE_URL is set', () => {
    expect(loadApiConfig(API_ENV).webhooks).toBeUndefined();
    expect(
      loadApiConfig({ ...API_ENV, WEBHOOK_QUEUE_URL: QUEUE, WEBHOOK_KMS_KEY_ID: 'alias/webhooks' }).webhooks,
    ).toEqual({ queueUrl: QUEUE, kmsKeyId: 'alias/webhooks', deadLetterQueueUrl: undefined });
  });

  it('refuses a dispatcher without its DLQ or KMS key, naming both', () => {
    expect(() =>
      loadDispatcherConfig({ DATABASE_URL: 'postgres://localhost/credits', WEBHOOK_QUEUE_URL: QUEUE }),
    ).toThrow('WEBHOOK_DLQ_URL and WEBHOOK_KMS_KEY_ID must be set');
    expect(() => loadDispatcherConfig({ DATABASE_URL: 'postgres://localhost/credits' })).toThrow(
      /WEBHOOK_QUEUE_URL/,
    );
  });
});
