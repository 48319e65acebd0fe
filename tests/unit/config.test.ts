import { describe, expect, it } from 'vitest';
import { loadApiConfig, loadIntakeConfig, loadWorkerConfig } from '../../shared/config.js';
import { DEFAULT_PACKAGES, parsePackages } from '../../shared/packages.js';

describe('configuration', () => {
  it('parses the intake settings with their defaults', () => {
    expect(loadIntakeConfig({ QUEUE_URL: 'https://sqs.example/1/q', STRIPE_SECRET_NAME: 'stripe' })).toEqual({
      QUEUE_URL: 'https://sqs.example/1/q',
      STRIPE_SECRET_NAME: 'stripe',
      STRIPE_LIVEMODE: false,
      WEBHOOK_MAX_BYTES: 262_144,
    });
  });

  it('names every missing or invalid variable and says what is wrong', () => {
    expect(() => loadIntakeConfig({ STRIPE_LIVEMODE: 'yes', WEBHOOK_MAX_BYTES: '-1' })).toThrow(
      'invalid configuration: QUEUE_URL: Invalid input: expected string, received undefined; ' +
        'STRIPE_LIVEMODE: Invalid option: expected one of "true"|"false"; ' +
        'WEBHOOK_MAX_BYTES: Too small: expected number to be >0',
    );
    expect(() => loadIntakeConfig({ QUEUE_URL: 'https://sqs.example/1/q' })).toThrow(
      'STRIPE_SECRET_NAME (AWS) or STRIPE_WEBHOOK_SECRET (local) must be set',
    );
    expect(() => loadWorkerConfig({})).toThrow('DATABASE_URL (local) or DB_HOST (AWS) must be set');
    expect(() => loadApiConfig({ DATABASE_URL: 'postgres://x', STRIPE_SECRET_KEY: 'pk_test_1' })).toThrow(
      /STRIPE_SECRET_KEY: .*; CHECKOUT_SUCCESS_URL: .*; CHECKOUT_CANCEL_URL: /,
    );
  });

  it('reads credit packs from CREDIT_PACKAGES, naming the pack field that is wrong', () => {
    expect(parsePackages(undefined)).toBe(DEFAULT_PACKAGES);
    const pack = { id: 'pack_x', name: 'X', credits: 10, amount: 100, currency: 'eur' };
    expect(parsePackages(JSON.stringify([pack]))).toEqual([pack]);
    expect(() => parsePackages(JSON.stringify([{ ...pack, credits: 1.5 }]))).toThrow(
      'CREDIT_PACKAGES is invalid: 0.credits: Invalid input: expected int, received number',
    );
    expect(() => parsePackages('[]')).toThrow('CREDIT_PACKAGES is invalid: the list: Too small');
    expect(() => parsePackages(JSON.stringify([pack, pack]))).toThrow('duplicate ids');
  });
});
