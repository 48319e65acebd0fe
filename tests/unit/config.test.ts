import { describe, expect, it } from 'vitest';
import { loadApiConfig, loadIntakeConfig, loadSweeperConfig, loadWorkerConfig } from '../../shared/config.js';
import { DEFAULT_PACKAGES, parsePackages } from '../../shared/packages.js';
import { DEFAULT_CATALOG, parsePlans } from '../../shared/plan-catalog.js';

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

  it('reads PLANS, and refuses a bad one at start with the field named', () => {
    expect(parsePlans(undefined)).toBe(DEFAULT_CATALOG);
    const free = { id: 'free', name: 'Free', default: true, monthlyAllowance: 100 };
    const pro = { id: 'pro', name: 'Pro', caps: { monthly: 5000, daily: 500 }, rateLimitPerMinute: 60 };
    const catalog = parsePlans(JSON.stringify([free, pro]));
    expect(catalog.defaultPlan).toEqual({ id: 'free', name: 'Free', monthlyAllowance: 100, caps: {} });
    expect(catalog.plans[1]).toEqual(pro);
    const bad = (plans: unknown) => () => parsePlans(JSON.stringify(plans));
    expect(bad([free, { ...pro, id: 'free' }])).toThrow('PLANS is invalid: PLANS[1].id: duplicate id "free"');
    expect(bad([free, { ...pro, default: true }])).toThrow(
      'PLANS is invalid: PLANS[1].default: only one plan may be the default (PLANS[0] is)',
    );
    expect(bad([free, { ...pro, caps: { monthly: -1 } }])).toThrow(
      'PLANS is invalid: PLANS[1].caps.monthly: Too small: expected number to be >=0',
    );
    expect(bad([free, { ...pro, caps: { weekly: 10 } }])).toThrow(
      'PLANS is invalid: PLANS[1].caps.weekly: Unrecognized key: "weekly"',
    );
    expect(bad([{ ...free, seats: 3 }])).toThrow(
      'PLANS is invalid: PLANS[0].seats: Unrecognized key: "seats"',
    );
    expect(bad([free, { ...pro, default: undefined }, { id: 'x', name: 'X' }].slice(1))).toThrow(
      'PLANS[*].default: mark one plan "default": true',
    );
    expect(bad([{ ...free, monthlyAllowance: 2.5 }])).toThrow('PLANS[0].monthlyAllowance');
    expect(() => parsePlans('[{')).toThrow('PLANS is invalid: not valid JSON');
    // The functions read it at cold start: a bad value stops them there.
    expect(() => loadSweeperConfig({ DATABASE_URL: 'postgres://x', PLANS: '[]' })).toThrow(
      'PLANS is invalid: PLANS: Too small',
    );
    expect(
      loadSweeperConfig({ DATABASE_URL: 'postgres://x', PLANS: JSON.stringify([free]) }).plans.defaultPlan.id,
    ).toBe('free');
  });
});
