import { type Kysely, sql } from 'kysely';
import { type AdminActor, recordAdminAction } from '../audit/audit.js';
import type { Trx } from '../db/locks.js';
import type { Database, PriceBookRow, PriceBookStatus, PriceItemRow } from '../db/schema.js';
import { ServiceError, ValidationError } from '../errors.js';
import { plain, rate, rateProblem } from './decimal.js';

/** The only writer of `price_books` and `price_items`. */

/** A version name: 1-64 of A-Z, a-z, 0-9, `.`, `_` and `-`, starting with a letter or digit. */
export const VERSION_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** A SKU: `provider/model` (`openai/gpt-4o`) or a product feature (`image.generate`); 1-200 characters. */
export const SKU_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:/@~+-]{0,199}$/;
/** Items a version may hold. */
export const MAX_ITEMS = 5000;

/** A rate as given: a decimal string, or a JSON number of up to 15 significant digits. */
export type RateInput = string | number;

export interface TokenRatesInput {
  readonly input: RateInput;
  readonly cacheRead?: RateInput;
  readonly cacheWrite?: RateInput;
  readonly output: RateInput;
  readonly reasoning?: RateInput;
}

/** An item as an admin writes it; rates are credits per 1,000,000 tokens, unitCredits per unit. */
export type PriceItemInput =
  | {
      readonly sku: string;
      readonly kind: 'tokens';
      readonly rates: TokenRatesInput;
      readonly perRequest?: RateInput;
    }
  | { readonly sku: string; readonly kind: 'unit'; readonly unitCredits: RateInput };

export interface TokenRates {
  readonly input: string;
  readonly cacheRead?: string;
  readonly cacheWrite?: string;
  readonly output: string;
  readonly reasoning?: string;
}

/** A stored item: rates are exact decimal strings in plain notation (`2.5`, `0.000001`). */
export type PriceItem =
  | {
      readonly sku: string;
      readonly kind: 'tokens';
      readonly rates: TokenRates;
      readonly perRequest?: string;
    }
  | { readonly sku: string; readonly kind: 'unit'; readonly unitCredits: string };

export interface PriceBookSummary {
  readonly version: string;
  readonly status: PriceBookStatus;
  readonly itemCount: number;
  readonly createdAt: Date;
  /** null while a draft; [activatedAt, retiredAt) is when the version was the active one. */
  readonly activatedAt: Date | null;
  readonly retiredAt: Date | null;
}

export interface PriceBook extends PriceBookSummary {
  readonly items: readonly PriceItem[];
}

/** One SKU's price and the version it comes from. */
export interface Price {
  readonly version: string;
  readonly item: PriceItem;
}

function checkedRate(value: RateInput, field: string): string {
  const problem = rateProblem(value);
  if (problem) throw new ValidationError(field, problem);
  return plain(rate(value));
}

/**
 * The items of a new version, checked and in canonical form (rates as plain decimal strings, in input order).
 * Throws a ValidationError naming the first offending field: 1 to 5000 items, SKUs well-formed and unique,
 * every rate a non-negative decimal with at most 9 decimal places.
 */
export function validatePriceItems(items: readonly PriceItemInput[]): PriceItem[] {
  if (items.length === 0 || items.length > MAX_ITEMS) {
    throw new ValidationError('items', `must hold 1 to ${MAX_ITEMS} items`);
  }
  const seen = new Set<string>();
  return items.map((item, i): PriceItem => {
    const at = `items.${i}`;
    if (typeof item.sku !== 'string' || !SKU_PATTERN.test(item.sku)) {
      throw new ValidationError(
        `${at}.sku`,
        'must be 1-200 of A-Z, a-z, 0-9 and ._:/@~+- starting with a letter or digit',
      );
    }
    if (seen.has(item.sku)) throw new ValidationError(`${at}.sku`, `${item.sku} appears more than once`);
    seen.add(item.sku);
    if (item.kind === 'unit') {
      return { sku: item.sku, kind: 'unit', unitCredits: checkedRate(item.unitCredits, `${at}.unitCredits`) };
    }
    if (item.kind !== 'tokens') throw new ValidationError(`${at}.kind`, 'must be "tokens" or "unit"');
    const optional = (value: RateInput | undefined, field: string) =>
      value === undefined ? {} : { [field]: checkedRate(value, `${at}.rates.${field}`) };
    return {
      sku: item.sku,
      kind: 'tokens',
      rates: {
        input: checkedRate(item.rates.input, `${at}.rates.input`),
        ...optional(item.rates.cacheRead, 'cacheRead'),
        ...optional(item.rates.cacheWrite, 'cacheWrite'),
        output: checkedRate(item.rates.output, `${at}.rates.output`),
        ...optional(item.rates.reasoning, 'reasoning'),
      },
      ...(item.perRequest !== undefined && { perRequest: checkedRate(item.perRequest, `${at}.perRequest`) }),
    };
  });
}

const canonical = (value: string | null) => (value === null ? undefined : plain(rate(value)));

function itemOf(row: PriceItemRow): PriceItem {
  if (row.kind === 'unit') return { sku: row.sku, kind: 'unit', unitCredits: canonical(row.unit_credits)! };
  const optional = (value: string | null, field: string) =>
    value === null ? {} : { [field]: canonical(value) };
  return {
    sku: row.sku,
    kind: 'tokens',
    rates: {
      input: canonical(row.input)!,
      ...optional(row.cache_read, 'cacheRead'),
      ...optional(row.cache_write, 'cacheWrite'),
      output: canonical(row.output)!,
      ...optional(row.reasoning, 'reasoning'),
    },
    ...optional(row.per_request, 'perRequest'),
  };
}

function rowOf(version: string, item: PriceItem): PriceItemRow {
  const none = {
    input: null,
    cache_read: null,
    cache_write: null,
    output: null,
    reasoning: null,
    per_request: null,
    unit_credits: null,
  };
  if (item.kind === 'unit')
    return { ...none, version, sku: item.sku, kind: 'unit', unit_credits: item.unitCredits };
  return {
    ...none,
    version,
    sku: item.sku,
    kind: 'tokens',
    input: item.rates.input,
    cache_read: item.rates.cacheRead ?? null,
    cache_write: item.rates.cacheWrite ?? null,
    output: item.rates.output,
    reasoning: item.rates.reasoning ?? null,
    per_request: item.perRequest ?? null,
  };
}

const summaryOf = (row: PriceBookRow, itemCount: number): PriceBookSummary => ({
  version: row.version,
  status: row.status,
  itemCount,
  createdAt: row.created_at,
  activatedAt: row.activated_at,
  retiredAt: row.retired_at,
});

async function withItems(db: Kysely<Database>, row: PriceBookRow): Promise<PriceBook> {
  const items = await db
    .selectFrom('price_items')
    .selectAll()
    .where('version', '=', row.version)
    .orderBy(sql`sku COLLATE "C"`)
    .execute();
  return { ...summaryOf(row, items.length), items: items.map(itemOf) };
}

/** Versions, newest first, without their items. */
export async function listPriceBooks(db: Kysely<Database>, limit: number): Promise<PriceBookSummary[]> {
  const rows = await db
    .selectFrom('price_books as b')
    .selectAll('b')
    .select((eb) =>
      eb
        .selectFrom('price_items as i')
        .whereRef('i.version', '=', 'b.version')
        .select((c) => c.fn.countAll<string>().as('n'))
        .as('item_count'),
    )
    .orderBy('b.created_at', 'desc')
    .orderBy('b.version')
    .limit(limit)
    .execute();
  return rows.map(({ item_count, ...row }) => summaryOf(row, Number(item_count)));
}

/** One version with its items (any status), or undefined. */
export async function findPriceBook(db: Kysely<Database>, version: string): Promise<PriceBook | undefined> {
  const row = await db
    .selectFrom('price_books')
    .selectAll()
    .where('version', '=', version)
    .executeTakeFirst();
  return row && withItems(db, row);
}

/** The active version with its items, or undefined when none was ever activated. */
export async function findActivePriceBook(db: Kysely<Database>): Promise<PriceBook | undefined> {
  const row = await db
    .selectFrom('price_books')
    .selectAll()
    .where('status', '=', 'active')
    .executeTakeFirst();
  return row && withItems(db, row);
}

/** `activated_at <= at < retired_at`: served by the index of the no-overlap exclusion constraint. */
const activeAt = (at: Date) =>
  sql<boolean>`activated_at IS NOT NULL AND tstzrange(activated_at, retired_at, '[)') @> ${at}::timestamptz`;
// (Unqualified: only price_books has these columns, so the same condition serves joins with price_items.)

/** The version that was active at `at` (usage is priced by its occurredAt), or undefined. */
export async function findPriceBookAt(db: Kysely<Database>, at: Date): Promise<PriceBook | undefined> {
  const row = await db.selectFrom('price_books').selectAll().where(activeAt(at)).executeTakeFirst();
  return row && withItems(db, row);
}

/**
 * The price of one SKU in the active version, or in the version active at `at` when given; undefined when
 * that version has no such SKU (or no version was active). Reads one row of price_items.
 */
export async function findPrice(db: Kysely<Database>, sku: string, at?: Date): Promise<Price | undefined> {
  const row = await db
    .selectFrom('price_items as i')
    .innerJoin('price_books as b', 'b.version', 'i.version')
    .selectAll('i')
    .where('i.sku', '=', sku)
    .where(at ? activeAt(at) : sql<boolean>`b.status = 'active'`)
    .executeTakeFirst();
  return row && { version: row.version, item: itemOf(row) };
}

/** What this process last read of the price books, per database (see `pricesAt`). */
interface KnownPrices {
  /** Activated versions, each active over [from, to); `to` null: not retired when last read. */
  readonly books: readonly { readonly version: string; readonly from: number; readonly to: number | null }[];
  /** `version sku` → its price, or null when the version has no such SKU. Items never change once active. */
  readonly items: Map<string, Price | null>;
}

const known = new WeakMap<Kysely<Database>, KnownPrices>();

async function readBooks(db: Kysely<Database>): Promise<KnownPrices> {
  const rows = await db
    .selectFrom('price_books')
    .select(['version', 'activated_at', 'retired_at'])
    .where('activated_at', 'is not', null)
    .execute();
  const prices: KnownPrices = {
    books: rows.map((r) => ({
      version: r.version,
      from: r.activated_at!.getTime(),
      to: r.retired_at?.getTime() ?? null,
    })),
    items: known.get(db)?.items ?? new Map(),
  };
  known.set(db, prices);
  return prices;
}

/**
 * The prices of SKUs each at its instant (a batch of usage events, each priced by its occurredAt): one answer
 * per pair, in order, undefined where `findPrice` would find none. From what this process last read of the
 * price books (which version was active when, and the items of the versions it used, which never change), so
 * a batch usually costs no query; a pair it knows no price for reads the books again before it answers
 * undefined. What it read can only miss a later activation: the database checks each version again when it
 * debits (`debit_usage` answers prices_changed), and the caller then asks again with `fresh`.
 */
export async function pricesAt(
  db: Kysely<Database>,
  wanted: readonly { readonly sku: string; readonly at: Date }[],
  options: { readonly fresh?: boolean } = {},
): Promise<Array<Price | undefined>> {
  if (wanted.length === 0) return [];
  let prices = options.fresh ? await readBooks(db) : (known.get(db) ?? (await readBooks(db)));
  let readNow = options.fresh === true || !known.has(db);
  for (;;) {
    const books = prices.books;
    const versions = wanted.map(
      (w) => books.find((b) => b.from <= w.at.getTime() && (b.to === null || w.at.getTime() < b.to))?.version,
    );
    const keyOf = (at: number) => `${versions[at]} ${wanted[at]!.sku}`;
    const unread = wanted.flatMap((_, at) =>
      versions[at] !== undefined && !prices.items.has(keyOf(at)) ? [at] : [],
    );
    if (unread.length > 0) {
      const rows = await db
        .selectFrom('price_items')
        .selectAll()
        .where('version', 'in', [...new Set(unread.map((at) => versions[at]!))])
        .where('sku', 'in', [...new Set(unread.map((at) => wanted[at]!.sku))])
        .execute();
      for (const at of unread) prices.items.set(keyOf(at), null);
      for (const row of rows)
        prices.items.set(`${row.version} ${row.sku}`, { version: row.version, item: itemOf(row) });
    }
    const found = wanted.map((_, at) =>
      versions[at] === undefined ? undefined : (prices.items.get(keyOf(at)) ?? undefined),
    );
    if (readNow || found.every((price) => price !== undefined)) return found;
    prices = await readBooks(db);
    readNow = true;
  }
}

/** The price of one SKU in a given version (a hold's), or undefined. Reads one row of price_items. */
export async function findPriceInVersion(
  db: Kysely<Database>,
  sku: string,
  version: string,
): Promise<Price | undefined> {
  const row = await db
    .selectFrom('price_items')
    .selectAll()
    .where('sku', '=', sku)
    .where('version', '=', version)
    .executeTakeFirst();
  return row && { version: row.version, item: itemOf(row) };
}

export interface NewPriceBook {
  readonly version: string;
  readonly items: readonly PriceItemInput[];
}

async function insertDraft(trx: Trx, book: NewPriceBook, actor: AdminActor): Promise<PriceBook> {
  if (!VERSION_PATTERN.test(book.version)) {
    throw new ValidationError('version', 'must be 1-64 of A-Z, a-z, 0-9, ".", "_" and "-"');
  }
  const items = validatePriceItems(book.items);
  const taken = await trx
    .selectFrom('price_books')
    .select('version')
    .where('version', '=', book.version)
    .executeTakeFirst();
  if (taken) throw new ServiceError('price_book_exists', `price book ${book.version} exists already`);
  const actionId = await recordAdminAction(trx, 'create_prices', actor, {
    payload: { version: book.version, items: items.length },
  });
  const row = await trx
    .insertInto('price_books')
    .values({ version: book.version, created_action_id: actionId })
    .returningAll()
    .executeTakeFirstOrThrow();
  // 9 parameters a row: chunks keep each statement far below Postgres's 65,535 parameters.
  for (let i = 0; i < items.length; i += 1000) {
    await trx
      .insertInto('price_items')
      .values(items.slice(i, i + 1000).map((item) => rowOf(book.version, item)))
      .execute();
  }
  // In SKU order, as reads return them (SKUs are ASCII: code unit order is the "C" collation's).
  return { ...summaryOf(row, items.length), items: [...items].sort((a, b) => (a.sku < b.sku ? -1 : 1)) };
}

/**
 * Creates a draft version (audited). Nothing is written when it fails: a malformed item is 400
 * (validation_error, naming the field), a version name taken already is 409 (price_book_exists).
 */
export async function createPriceBookDraft(
  db: Kysely<Database>,
  book: NewPriceBook,
  actor: AdminActor,
): Promise<PriceBook> {
  try {
    return await db.transaction().execute((trx) => insertDraft(trx, book, actor));
  } catch (error: unknown) {
    // Two creations of one version at once: the second finds the first's row only at insert.
    if ((error as { code?: string }).code === '23505') {
      throw new ServiceError('price_book_exists', `price book ${book.version} exists already`);
    }
    throw error;
  }
}

export interface Activation {
  readonly book: PriceBook;
  /** The version that was active until this activation, if any. */
  readonly retired: string | null;
}

async function activateIn(trx: Trx, version: string, actor: AdminActor, now: Date): Promise<Activation> {
  // Activations take turns (quotes and reads go on); a SHARE ROW EXCLUSIVE lock conflicts with itself.
  await sql`LOCK TABLE price_books IN SHARE ROW EXCLUSIVE MODE`.execute(trx);
  const target = await trx
    .selectFrom('price_books')
    .selectAll()
    .where('version', '=', version)
    .executeTakeFirst();
  if (!target) throw new ServiceError('price_book_not_found', `no price book ${version}`);
  if (target.status !== 'draft') {
    throw new ServiceError(
      'price_book_not_draft',
      `price book ${version} is ${target.status}: only a draft can be activated`,
    );
  }
  const current = await trx
    .selectFrom('price_books')
    .selectAll()
    .where('status', '=', 'active')
    .executeTakeFirst();
  // The intervals stay contiguous and ordered even if this clock runs behind the one that activated `current`.
  const at = current?.activated_at && current.activated_at > now ? current.activated_at : now;
  const actionId = await recordAdminAction(trx, 'activate_prices', actor, {
    payload: { version, retired: current?.version ?? null },
  });
  if (current) {
    await trx
      .updateTable('price_books')
      .set({ status: 'retired', retired_at: at })
      .where('version', '=', current.version)
      .execute();
  }
  const row = await trx
    .updateTable('price_books')
    .set({ status: 'active', activated_at: at, activated_action_id: actionId })
    .where('version', '=', version)
    .returningAll()
    .executeTakeFirstOrThrow();
  return { book: await withItems(trx, row), retired: current?.version ?? null };
}

/**
 * Activates a draft (audited): from `now` on it prices everything, and the version active until then is
 * retired at the same instant. An unknown version is 404; an active or retired one is 409
 * (price_book_not_draft). Its items never change from here on.
 */
export function activatePriceBook(
  db: Kysely<Database>,
  version: string,
  actor: AdminActor,
  now = new Date(),
): Promise<Activation> {
  return db.transaction().execute((trx) => activateIn(trx, version, actor, now));
}

/**
 * Creates and activates `book` in one transaction when no version is active; does nothing (undefined) when
 * one is. For the local stack's sample prices.
 */
export function ensureActivePriceBook(
  db: Kysely<Database>,
  book: NewPriceBook,
  actor: AdminActor,
  now = new Date(),
): Promise<Activation | undefined> {
  return db.transaction().execute(async (trx) => {
    await sql`LOCK TABLE price_books IN SHARE ROW EXCLUSIVE MODE`.execute(trx);
    const active = await trx
      .selectFrom('price_books')
      .select('version')
      .where('status', '=', 'active')
      .executeTakeFirst();
    if (active) return undefined;
    await insertDraft(trx, book, actor);
    return activateIn(trx, book.version, actor, now);
  });
}
