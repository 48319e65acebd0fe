import type { Kysely } from 'kysely';
import type { Database } from '../db/schema.js';
import { ServiceError } from '../errors.js';
import { count, type Decimal, decimal, plain, roundUp } from './decimal.js';
import { findPrice, type Price, type PriceItem, pricesAt } from './price-book.js';

/**
 * Usage as genai-prices counts it: `inputTokens` is the whole input (cache reads and writes are parts of it),
 * `reasoningTokens` is part of `outputTokens`; or `units` for a unit SKU. Counts are non-negative integers.
 */
export interface Usage {
  readonly inputTokens?: number;
  readonly cacheReadTokens?: number;
  readonly cacheWriteTokens?: number;
  readonly outputTokens?: number;
  readonly reasoningTokens?: number;
  readonly units?: number;
}

export type Pool = 'input' | 'cacheRead' | 'cacheWrite' | 'output' | 'reasoning' | 'request' | 'units';

/** One priced pool: `quantity` tokens at `rate` credits per 1,000,000 (request: 1 at `rate`; units: per unit). */
export interface CostLine {
  readonly pool: Pool;
  readonly quantity: number;
  readonly rate: string;
  /** Exact, before the one rounding: a plain decimal string. */
  readonly credits: string;
}

export interface Cost {
  readonly sku: string;
  /** The part of the SKU before its first `/`; null for a product feature (a SKU without `/`). */
  readonly provider: string | null;
  readonly priceVersion: string;
  /** The exact total rounded up to a whole credit, once. */
  readonly credits: number;
  /** The exact total, a plain decimal string. */
  readonly exact: string;
  readonly breakdown: readonly CostLine[];
}

/** The provider of a SKU: `openai/gpt-4o` -> `openai`; null for a SKU without `/`. */
export function providerOf(sku: string): string | null {
  const slash = sku.indexOf('/');
  return slash > 0 ? sku.slice(0, slash) : null;
}

const invalid = (message: string) => new ServiceError('invalid_usage', message);
const PER_MILLION = decimal('0.000001');

const TOKEN_FIELDS = [
  'inputTokens',
  'cacheReadTokens',
  'cacheWriteTokens',
  'outputTokens',
  'reasoningTokens',
] as const;

function checkCount(usage: Usage, field: keyof Usage): number {
  const n = usage[field] ?? 0;
  if (!Number.isSafeInteger(n) || n < 0) throw invalid(`${field} must be a non-negative integer`);
  return n;
}

function tokenLines(item: Extract<PriceItem, { kind: 'tokens' }>, usage: Usage) {
  if (usage.units !== undefined) {
    throw invalid(`${item.sku} is priced per token: usage takes token counts, not units`);
  }
  if (usage.inputTokens === undefined || usage.outputTokens === undefined) {
    throw invalid(`${item.sku} is priced per token: usage needs inputTokens and outputTokens`);
  }
  const [input, cacheRead, cacheWrite, output, reasoning] = TOKEN_FIELDS.map((f) => checkCount(usage, f)) as [
    number,
    number,
    number,
    number,
    number,
  ];
  if (cacheRead + cacheWrite > input) {
    throw invalid(
      `cacheReadTokens + cacheWriteTokens (${cacheRead + cacheWrite}) exceed inputTokens (${input}), which includes them`,
    );
  }
  if (reasoning > output) {
    throw invalid(`reasoningTokens (${reasoning}) exceed outputTokens (${output}), which includes them`);
  }
  const { rates } = item;
  // A part without its own rate is priced as its whole, as genai-prices does.
  const pools: Array<[Pool, number, string]> = [
    ['input', input - cacheRead - cacheWrite, rates.input],
    ['cacheRead', cacheRead, rates.cacheRead ?? rates.input],
    ['cacheWrite', cacheWrite, rates.cacheWrite ?? rates.input],
    ['output', output - reasoning, rates.output],
    ['reasoning', reasoning, rates.reasoning ?? rates.output],
  ];
  const lines = pools
    .filter(([, tokens]) => tokens > 0)
    .map(([pool, tokens, rate]) => ({
      pool,
      quantity: tokens,
      rate,
      exact: count(tokens).times(rate).times(PER_MILLION),
    }));
  if (item.perRequest !== undefined) {
    lines.push({ pool: 'request', quantity: 1, rate: item.perRequest, exact: decimal(item.perRequest) });
  }
  return lines;
}

function unitLines(item: Extract<PriceItem, { kind: 'unit' }>, usage: Usage) {
  const tokens = TOKEN_FIELDS.filter((f) => usage[f] !== undefined);
  if (tokens.length > 0 || usage.units === undefined) {
    throw invalid(`${item.sku} is priced per unit: usage takes {units}, not token counts`);
  }
  const units = checkCount(usage, 'units');
  return units > 0
    ? [
        {
          pool: 'units' as const,
          quantity: units,
          rate: item.unitCredits,
          exact: count(units).times(item.unitCredits),
        },
      ]
    : [];
}

/**
 * The cost of one usage at one price, exactly: the sum over pools of tokens x rate / 1,000,000, plus the
 * per-request credits, rounded up to a whole credit once. Throws invalid_usage (400) when the usage does
 * not fit the SKU's kind or a part exceeds its whole, limit_exceeded (422) past 2^53 - 1 credits.
 */
export function costOf(price: Price, usage: Usage): Cost {
  const { item } = price;
  const lines = item.kind === 'tokens' ? tokenLines(item, usage) : unitLines(item, usage);
  const exact = lines.reduce((sum: Decimal, line) => sum.plus(line.exact), decimal('0'));
  const credits = roundUp(exact);
  if (credits.gt(String(Number.MAX_SAFE_INTEGER))) {
    throw new ServiceError('limit_exceeded', `a cost of ${plain(credits)} credits is above 2^53 - 1`);
  }
  return {
    sku: item.sku,
    provider: providerOf(item.sku),
    priceVersion: price.version,
    credits: credits.toNumber(),
    exact: plain(exact),
    breakdown: lines.map(({ exact: lineExact, ...line }) => ({ ...line, credits: plain(lineExact) })),
  };
}

/**
 * The cost of `usage` of `sku` at `price`. No price (`book` names the version that lacks the SKU) is 422
 * unknown_sku: never a cost of 0.
 */
export function costAtPrice(price: Price | undefined, sku: string, usage: Usage, book: string): Cost {
  if (!price) throw new ServiceError('unknown_sku', `${book} has no SKU ${JSON.stringify(sku)}`, { sku });
  return costOf(price, usage);
}

/**
 * Prices `usage` of `sku` for a hold at `now` from what the process last read of the price books
 * (`pricesAt`; `fresh`: read them first). The debit checks the version again and answers PricesChangedError
 * when one was activated since: price it again with `fresh`. A SKU the version does not list is unknown_sku.
 */
export async function priceUsageAt(
  db: Kysely<Database>,
  sku: string,
  usage: Usage,
  now: Date,
  fresh: boolean,
): Promise<Cost> {
  const [price] = await pricesAt(db, [{ sku, at: now }], { fresh });
  return costAtPrice(price, sku, usage, 'the active price book');
}

/**
 * Prices `usage` of `sku` with the active version, or with the version active at `at` when given. A SKU
 * the version does not list (or no version at all) is unknown_sku (422): never a price of 0.
 */
export async function quoteUsage(db: Kysely<Database>, sku: string, usage: Usage, at?: Date): Promise<Cost> {
  const book = at ? `the price book active at ${at.toISOString()}` : 'the active price book';
  return costAtPrice(await findPrice(db, sku, at), sku, usage, book);
}
