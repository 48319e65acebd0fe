import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type ServiceError, ValidationError } from '../../shared/errors.js';
import { costOf, providerOf, type Usage } from '../../shared/pricing/cost.js';
import {
  type PriceItem,
  type PriceItemInput,
  type TokenRates,
  validatePriceItems,
} from '../../shared/pricing/price-book.js';

/** A token SKU priced with `rates` (credits per 1,000,000 tokens), in version v1. */
const tokens = (rates: TokenRates, perRequest?: string) => ({
  version: 'v1',
  item: {
    sku: 'openai/gpt-test',
    kind: 'tokens',
    rates,
    ...(perRequest !== undefined && { perRequest }),
  } satisfies PriceItem,
});
const unit = (unitCredits: string) => ({
  version: 'v1',
  item: { sku: 'image.generate', kind: 'unit', unitCredits } satisfies PriceItem,
});

/** The error `fn` throws: its code and message. */
function failure(fn: () => unknown): { code: string; message: string } {
  try {
    fn();
  } catch (error: unknown) {
    const { code, message } = error as ServiceError;
    return { code, message };
  }
  throw new Error('expected an error');
}

describe('cost of a usage', () => {
  it('prices each pool at its rate: plain input, cache reads, cache writes, plain output, reasoning', () => {
    const price = tokens({
      input: '100',
      cacheRead: '10',
      cacheWrite: '125',
      output: '400',
      reasoning: '800',
    });
    const usage = {
      inputTokens: 10_000,
      cacheReadTokens: 3_000,
      cacheWriteTokens: 2_000,
      outputTokens: 5_000,
      reasoningTokens: 1_500,
    };

    const cost = costOf(price, usage);

    // 5,000 x 100 + 3,000 x 10 + 2,000 x 125 + 3,500 x 400 + 1,500 x 800 = 3,380,000 per million: 3.38.
    expect(cost).toEqual({
      sku: 'openai/gpt-test',
      provider: 'openai',
      priceVersion: 'v1',
      credits: 4,
      exact: '3.38',
      breakdown: [
        { pool: 'input', quantity: 5_000, rate: '100', credits: '0.5' },
        { pool: 'cacheRead', quantity: 3_000, rate: '10', credits: '0.03' },
        { pool: 'cacheWrite', quantity: 2_000, rate: '125', credits: '0.25' },
        { pool: 'output', quantity: 3_500, rate: '400', credits: '1.4' },
        { pool: 'reasoning', quantity: 1_500, rate: '800', credits: '1.2' },
      ],
    });
  });

  it('prices a part without its own rate as its whole: cache tokens as input, reasoning as output', () => {
    const cost = costOf(tokens({ input: '100', output: '400' }), {
      inputTokens: 10_000,
      cacheReadTokens: 3_000,
      cacheWriteTokens: 1_000,
      outputTokens: 5_000,
      reasoningTokens: 1_500,
    });

    // 10,000 x 100 + 5,000 x 400 = 3,000,000 per million: exactly 3, so no rounding up.
    expect(cost.credits).toBe(3);
    expect(cost.exact).toBe('3');
    expect(cost.breakdown.map((l) => [l.pool, l.quantity, l.rate])).toEqual([
      ['input', 6_000, '100'],
      ['cacheRead', 3_000, '100'],
      ['cacheWrite', 1_000, '100'],
      ['output', 3_500, '400'],
      ['reasoning', 1_500, '400'],
    ]);
  });

  it('adds the per-request credits once, and rounds the total up once', () => {
    const price = tokens({ input: '300', output: '1200' }, '0.25');

    const empty = costOf(price, { inputTokens: 0, outputTokens: 0 });
    // 1,000 x 300 + 250 x 1,200 = 600,000 per million: 0.6, plus 0.25 = 0.85.
    const small = costOf(price, { inputTokens: 1_000, outputTokens: 250 });

    expect(empty).toMatchObject({
      credits: 1,
      exact: '0.25',
      breakdown: [{ pool: 'request', quantity: 1, rate: '0.25', credits: '0.25' }],
    });
    expect(small).toMatchObject({ credits: 1, exact: '0.85' });
    expect(small.breakdown.map((l) => l.pool)).toEqual(['input', 'output', 'request']);
  });

  it('charges a whole credit for the smallest fraction, and nothing for no usage without a per-request price', () => {
    // 2.5 credits per million x 1 token = 0.0000025 credits.
    expect(costOf(tokens({ input: '2.5', output: '10' }), { inputTokens: 1, outputTokens: 0 })).toMatchObject(
      {
        credits: 1,
        exact: '0.0000025',
      },
    );
    // 0.000001 credits per million x 1 token = 10^-12 credits.
    expect(
      costOf(tokens({ input: '0.000001', output: '0.000001' }), { inputTokens: 1, outputTokens: 0 }),
    ).toMatchObject({ credits: 1, exact: '0.000000000001' });
    expect(
      costOf(tokens({ input: '0.000001', output: '1' }), { inputTokens: 0, outputTokens: 0 }),
    ).toMatchObject({
      credits: 0,
      exact: '0',
      breakdown: [],
    });
  });

  it('is exact where binary floats are not: 100,000,000 tokens at 0.07 credits per million are 7 credits, not 8', () => {
    expect((100_000_000 * 0.07) / 1e6).not.toBe(7);

    const cost = costOf(tokens({ input: '0.07', output: '0.07' }), {
      inputTokens: 100_000_000,
      outputTokens: 0,
    });

    expect(cost).toMatchObject({ credits: 7, exact: '7' });
  });

  it('prices units at unitCredits each, rounded up', () => {
    expect(costOf(unit('2.5'), { units: 3 })).toEqual({
      sku: 'image.generate',
      provider: null,
      priceVersion: 'v1',
      credits: 8,
      exact: '7.5',
      breakdown: [{ pool: 'units', quantity: 3, rate: '2.5', credits: '7.5' }],
    });
    expect(costOf(unit('2.5'), { units: 0 })).toMatchObject({ credits: 0, breakdown: [] });
  });

  it('refuses parts larger than their whole, and usage that does not fit the SKU', () => {
    const price = tokens({ input: '1', output: '1' });
    const cases: Array<[Usage, RegExp]> = [
      [
        { inputTokens: 10, cacheReadTokens: 11, outputTokens: 0 },
        /cacheReadTokens \+ cacheWriteTokens \(11\) exceed inputTokens \(10\)/,
      ],
      [
        { inputTokens: 10, cacheReadTokens: 6, cacheWriteTokens: 5, outputTokens: 0 },
        /\(11\) exceed inputTokens \(10\)/,
      ],
      [
        { inputTokens: 0, outputTokens: 10, reasoningTokens: 11 },
        /reasoningTokens \(11\) exceed outputTokens \(10\)/,
      ],
      [{ inputTokens: 10 }, /needs inputTokens and outputTokens/],
      [{ units: 1 }, /priced per token/],
      [{ inputTokens: -1, outputTokens: 0 }, /inputTokens must be a non-negative integer/],
      [{ inputTokens: 1.5, outputTokens: 0 }, /inputTokens must be a non-negative integer/],
    ];
    for (const [usage, message] of cases) {
      const error = failure(() => costOf(price, usage));
      expect(error.code, JSON.stringify(usage)).toBe('invalid_usage');
      expect(error.message).toMatch(message);
    }
    expect(failure(() => costOf(unit('1'), { inputTokens: 1, outputTokens: 1 }))).toMatchObject({
      code: 'invalid_usage',
      message: expect.stringMatching(/priced per unit/),
    });
    expect(failure(() => costOf(unit('1'), {})).code).toBe('invalid_usage');
  });

  it('refuses a cost above 2^53 - 1 credits instead of rounding it', () => {
    const price = tokens({ input: '999999999999.999999999', output: '1' });

    expect(failure(() => costOf(price, { inputTokens: Number.MAX_SAFE_INTEGER, outputTokens: 0 })).code).toBe(
      'limit_exceeded',
    );
  });

  it('agrees with integer arithmetic on nano-credits for any usage and rates', () => {
    const nanoRate = fc.bigInt({ min: 0n, max: 10n ** 15n });
    const asRate = (nano: bigint) => {
      const text = nano.toString().padStart(10, '0');
      return `${text.slice(0, -9)}.${text.slice(-9)}`;
    };
    fc.assert(
      fc.property(
        fc.record({
          input: nanoRate,
          cacheRead: nanoRate,
          output: nanoRate,
          reasoning: nanoRate,
          perRequest: nanoRate,
        }),
        fc.record({
          input: fc.nat(10 ** 9),
          cacheRead: fc.nat(10 ** 9),
          output: fc.nat(10 ** 9),
          reasoning: fc.nat(10 ** 9),
        }),
        (rates, t) => {
          const inputTokens = t.input + t.cacheRead;
          const outputTokens = t.output + t.reasoning;
          const cost = costOf(
            tokens(
              {
                input: asRate(rates.input),
                cacheRead: asRate(rates.cacheRead),
                output: asRate(rates.output),
                reasoning: asRate(rates.reasoning),
              },
              asRate(rates.perRequest),
            ),
            { inputTokens, cacheReadTokens: t.cacheRead, outputTokens, reasoningTokens: t.reasoning },
          );
          // In units of 10^-15 credits (nano-credits per million tokens): every term is an integer.
          const total =
            BigInt(t.input) * rates.input +
            BigInt(t.cacheRead) * rates.cacheRead +
            BigInt(t.output) * rates.output +
            BigInt(t.reasoning) * rates.reasoning +
            rates.perRequest * 10n ** 6n;
          const scale = 10n ** 15n;
          const ceiling = (total + scale - 1n) / scale;
          expect(BigInt(cost.credits)).toBe(ceiling);
        },
      ),
    );
  });

  it('names the provider by the part of the SKU before its first /', () => {
    expect(providerOf('openai/gpt-4o')).toBe('openai');
    expect(providerOf('openrouter/openai/gpt-4o')).toBe('openrouter');
    expect(providerOf('image.generate')).toBeNull();
  });
});

describe('price items', () => {
  const item = (rates: Partial<Record<keyof TokenRates, string | number>>): PriceItemInput => ({
    sku: 'openai/gpt-4o',
    kind: 'tokens',
    rates: { input: '1', output: '1', ...rates },
  });

  it('keeps rates exact, in plain notation without trailing zeros', () => {
    const [checked] = validatePriceItems([
      item({ input: '2.500', cacheRead: 1e-7, output: 10, reasoning: '0' }),
    ]);

    expect(checked).toEqual({
      sku: 'openai/gpt-4o',
      kind: 'tokens',
      rates: { input: '2.5', cacheRead: '0.0000001', output: '10', reasoning: '0' },
    });
  });

  it('refuses negative rates, more than 9 decimal places, lossy JSON numbers, duplicate SKUs and no items', () => {
    const cases: Array<[PriceItemInput[], string, RegExp]> = [
      [[item({ input: '-1' })], 'items.0.rates.input', /must not be negative/],
      [[item({ output: -0.5 })], 'items.0.rates.output', /must not be negative/],
      [[item({ reasoning: '-0' })], 'items.0.rates.reasoning', /must not be negative/],
      [[item({ cacheWrite: '0.0000000001' })], 'items.0.rates.cacheWrite', /at most 9 decimal places/],
      [[item({ input: 0.12345678901234568 })], 'items.0.rates.input', /send it as a decimal string/],
      [[item({ input: '1e3' })], 'items.0.rates.input', /decimal number/],
      [[item({ input: '1000000000000' })], 'items.0.rates.input', /below 10\^12/],
      [[item({}), { sku: 'openai/gpt-4o', kind: 'unit', unitCredits: '1' }], 'items.1.sku', /more than once/],
      [[{ ...item({}), sku: ' openai/gpt-4o' }], 'items.0.sku', /must be 1-200 of/],
      [[], 'items', /1 to 5000 items/],
    ];
    for (const [items, field, message] of cases) {
      const error = (() => {
        try {
          validatePriceItems(items);
        } catch (e: unknown) {
          return e;
        }
      })();
      expect(error, field).toBeInstanceOf(ValidationError);
      expect((error as ValidationError).field).toBe(field);
      expect((error as ValidationError).message).toMatch(message);
    }
  });
});
