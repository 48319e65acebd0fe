import { type ModelInfo, type ModelPrice, type Provider, waitForUpdate } from '@pydantic/genai-prices';
import { ValidationError } from '../errors.js';
import { type Decimal, decimal, fromFloat, fromNumber, plain, RATE_DECIMALS, roundUpTo } from './decimal.js';
import { type PriceItem, SKU_PATTERN, validatePriceItems } from './price-book.js';

export interface ImportOptions {
  /** What one US dollar buys, in credits (a decimal string or a number). */
  readonly creditsPerUsd: string | number;
  /** The factor applied to the providers' prices: 1.2 sells at 20% above cost. */
  readonly markup: string | number;
  /** Only these models: a model id (`gpt-4o`, every provider listing it) or a SKU (`openai/gpt-4o`). */
  readonly models?: readonly string[];
  /** Only these providers' models (`openai`, `anthropic`). */
  readonly providers?: readonly string[];
  /** The instant whose prices to take, for models whose price changes on a date. @default now */
  readonly at?: Date;
}

export interface ImportResult {
  /** Ready for a draft, in SKU order: `provider/model`, credits per 1,000,000 tokens. */
  readonly items: readonly PriceItem[];
  /** Models left out, and why (no token prices to build an item from). */
  readonly skipped: ReadonlyArray<{ readonly sku: string; readonly reason: string }>;
  /** What an item leaves out of the provider's price (tiers, time-of-day prices, other units). */
  readonly notes: ReadonlyArray<{ readonly sku: string; readonly note: string }>;
}

/** genai-prices keys (USD per 1,000,000 tokens; requests per 1,000) and the rate each becomes. */
const TOKEN_KEYS = {
  input_mtok: 'input',
  cache_read_mtok: 'cacheRead',
  cache_write_mtok: 'cacheWrite',
  output_mtok: 'output',
  output_reasoning_mtok: 'reasoning',
} as const;
const REQUESTS_KEY = 'requests_kcount';

function positive(value: string | number, field: string): Decimal {
  const d =
    typeof value === 'number' ? fromNumber(value) : /^\d+(\.\d+)?$/.test(value) ? decimal(value) : undefined;
  if (!d || d.lte('0')) throw new ValidationError(field, 'must be a positive decimal number');
  return d;
}

/** The prices in force at `at`; time-of-day variants (off-peak discounts) are passed over. */
function pricesAt(model: ModelInfo, at: Date): { prices: ModelPrice; timeOfDay: boolean } {
  if (!Array.isArray(model.prices)) return { prices: model.prices, timeOfDay: false };
  const timeOfDay = model.prices.some((p) => p.constraint?.type === 'time_of_date');
  // As genai-prices does: the last listed variant that applies, else the first.
  for (const variant of [...model.prices].reverse()) {
    const constraint = variant.constraint;
    if (!constraint || (constraint.type === 'start_date' && at >= new Date(constraint.start_date))) {
      return { prices: variant.prices, timeOfDay };
    }
  }
  return { prices: model.prices[0]!.prices, timeOfDay };
}

/**
 * Builds a draft's items from the `@pydantic/genai-prices` data set bundled with the package: for each model,
 * its USD prices per 1,000,000 tokens x creditsPerUsd x markup, exactly (the data set's floats read at 15
 * significant digits), rounded up to 9 decimal places so the result never sells below the given markup.
 * Throws a ValidationError when an option is malformed or names a provider or model the data set lacks.
 */
export async function importFromGenaiPrices(options: ImportOptions): Promise<ImportResult> {
  const factor = positive(options.creditsPerUsd, 'creditsPerUsd').times(positive(options.markup, 'markup'));
  const at = options.at ?? new Date();
  const data: readonly Provider[] = (await waitForUpdate()) ?? [];
  const providers = options.providers
    ? options.providers.map((id) => {
        const provider = data.find((p) => p.id === id);
        if (!provider)
          throw new ValidationError('providers', `genai-prices has no provider ${JSON.stringify(id)}`);
        return provider;
      })
    : data;
  // An entry that is some SKU (`openai/gpt-4o`) names that SKU only, though `openai/gpt-4o` is also the id of
  // a model openrouter lists; any other entry names a model id of every provider listing it.
  const skus = new Set(providers.flatMap((p) => p.models.map((m) => `${p.id}/${m.id}`)));
  const wantedSkus = new Set(options.models?.filter((name) => skus.has(name)));
  const wantedIds = new Set(options.models?.filter((name) => !skus.has(name)));
  const matched = new Set<string>();
  const items: PriceItem[] = [];
  const skipped: Array<{ sku: string; reason: string }> = [];
  const notes: Array<{ sku: string; note: string }> = [];
  const credits = (usd: Decimal) => plain(roundUpTo(usd.times(factor), RATE_DECIMALS));

  for (const provider of providers) {
    for (const model of provider.models) {
      const sku = `${provider.id}/${model.id}`;
      if (options.models) {
        const hit = wantedSkus.has(sku) ? sku : wantedIds.has(model.id) ? model.id : undefined;
        if (hit === undefined) continue;
        matched.add(hit);
      }
      if (!SKU_PATTERN.test(sku)) {
        skipped.push({ sku, reason: 'its id is not a valid SKU' });
        continue;
      }
      const { prices, timeOfDay } = pricesAt(model, at);
      const rates: Partial<Record<(typeof TOKEN_KEYS)[keyof typeof TOKEN_KEYS], string>> = {};
      let perRequest: string | undefined;
      const tiered: string[] = [];
      const ignored: string[] = [];
      for (const [key, price] of Object.entries(prices)) {
        if (price === undefined) continue;
        // Tiers (by prompt length) have no counterpart in a price book: the base tier prices every request.
        const usd = fromFloat(typeof price === 'number' ? price : price.base);
        if (key in TOKEN_KEYS) rates[TOKEN_KEYS[key as keyof typeof TOKEN_KEYS]] = credits(usd);
        else if (key === REQUESTS_KEY) perRequest = credits(usd.times('0.001'));
        else {
          ignored.push(key);
          continue;
        }
        if (typeof price !== 'number') tiered.push(key);
      }
      const { input, output } = rates;
      if (input === undefined || output === undefined) {
        skipped.push({ sku, reason: 'genai-prices lists no input_mtok and output_mtok for it' });
        continue;
      }
      items.push({
        sku,
        kind: 'tokens',
        rates: { ...rates, input, output },
        ...(perRequest !== undefined && { perRequest }),
      });
      if (tiered.length) notes.push({ sku, note: `priced at the base tier of ${tiered.sort().join(', ')}` });
      if (timeOfDay)
        notes.push({ sku, note: 'its time-of-day prices are not modelled: the standard price is used' });
      if (ignored.length) notes.push({ sku, note: `not priced here: ${ignored.sort().join(', ')}` });
    }
  }
  const missing = (options.models ?? []).filter((name) => !matched.has(name));
  if (missing.length) {
    throw new ValidationError(
      'models',
      `genai-prices has no model ${missing.map((m) => JSON.stringify(m)).join(', ')}${options.providers ? ' from these providers' : ''}`,
    );
  }
  // The result must be a valid draft as it stands; this also catches rates pushed past 10^12 by the factor.
  const checked = validatePriceItems(items).sort((a, b) => (a.sku < b.sku ? -1 : 1));
  return { items: checked, skipped, notes };
}
