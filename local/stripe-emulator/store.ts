import { randomBytes } from 'node:crypto';
import { invalid } from './errors.js';
import { type Params, str } from './params.js';
import { type StripeObject, withStripeShape } from './shapes.js';

export type { StripeObject };

export interface ListEnvelope<T> {
  object: 'list';
  url: string;
  has_more: boolean;
  data: T[];
}

/** Stripe-style ids: a prefix and 24 random base62 characters. */
export function newId(prefix: string): string {
  const alphabet = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
  const bytes = randomBytes(24);
  let out = '';
  for (const b of bytes) out += alphabet[b % 62];
  return `${prefix}_${out}`;
}

export const nowSeconds = () => Math.floor(Date.now() / 1000);

/** Objects of every kind in creation order (a saved state is brought to the current shape on load); lists come newest first, like Stripe's. */
export class Store {
  private readonly kinds = new Map<string, Map<string, StripeObject>>();

  /** Stores `item` with every field of Stripe's shape for its kind (see shapes.ts); returns what is stored. */
  add<T extends StripeObject>(item: T): T {
    const stored = withStripeShape(item);
    this.kind(stored.object).set(stored.id, stored);
    return stored;
  }

  get<T extends StripeObject = StripeObject>(object: string, id: string): T | undefined {
    return this.kind(object).get(id) as T | undefined;
  }

  all<T extends StripeObject = StripeObject>(object: string): T[] {
    return [...this.kind(object).values()] as T[];
  }

  count(object: string): number {
    return this.kind(object).size;
  }

  toJSON(): Record<string, StripeObject[]> {
    return Object.fromEntries([...this.kinds].map(([kind, items]) => [kind, [...items.values()]]));
  }

  load(snapshot: Record<string, StripeObject[]>): void {
    this.kinds.clear();
    for (const items of Object.values(snapshot)) for (const item of items) this.add(item);
  }

  private kind(object: string): Map<string, StripeObject> {
    let items = this.kinds.get(object);
    if (!items) {
      items = new Map();
      this.kinds.set(object, items);
    }
    return items;
  }
}

function createdFilter(params: Params): (created: number) => boolean {
  const raw = params.created;
  if (raw === undefined) return () => true;
  const bound = (v: ParamsValue, name: string) => {
    const n = Number(v);
    if (typeof v !== 'string' || !Number.isInteger(n)) throw invalid(`created${name}`, 'Invalid integer');
    return n;
  };
  if (typeof raw === 'string') {
    const exact = bound(raw, '');
    return (c) => c === exact;
  }
  const range = raw as Params;
  const checks: Array<(c: number) => boolean> = [];
  if (range.gt !== undefined) checks.push((c) => c > bound(range.gt!, '[gt]'));
  if (range.gte !== undefined) checks.push((c) => c >= bound(range.gte!, '[gte]'));
  if (range.lt !== undefined) checks.push((c) => c < bound(range.lt!, '[lt]'));
  if (range.lte !== undefined) checks.push((c) => c <= bound(range.lte!, '[lte]'));
  return (c) => checks.every((check) => check(c));
}
type ParamsValue = Params[string];

/**
 * Stripe's list semantics: newest first, `limit` 1..100 (default 10), cursor by `starting_after` (older
 * than) or `ending_before` (newer than), `created` exact or `[gt|gte|lt|lte]`, plus `filter` for the rest.
 */
export function paginate<T extends StripeObject>(
  items: T[],
  params: Params,
  url: string,
  filter: (item: T) => boolean = () => true,
): ListEnvelope<T> {
  const limitText = str(params, 'limit') ?? '10';
  const limit = Number(limitText);
  if (!Number.isInteger(limit) || limit < 1 || limit > 100) {
    throw invalid('limit', 'This value must be greater than or equal to 1 and less than or equal to 100.');
  }
  const inCreated = createdFilter(params);
  const newestFirst = items.filter((item) => inCreated(item.created) && filter(item)).reverse();
  const after = str(params, 'starting_after');
  const before = str(params, 'ending_before');
  if (after !== undefined && before !== undefined) {
    throw invalid(
      'starting_after',
      'You may only specify one of these parameters: starting_after, ending_before.',
    );
  }
  const cursorIndex = (id: string, param: string) => {
    const index = newestFirst.findIndex((item) => item.id === id);
    if (index < 0) throw invalid(param, `No such object: '${id}'`, 'resource_missing');
    return index;
  };
  if (before !== undefined) {
    const end = cursorIndex(before, 'ending_before');
    const start = Math.max(0, end - limit);
    return { object: 'list', url, has_more: start > 0, data: newestFirst.slice(start, end) };
  }
  const start = after === undefined ? 0 : cursorIndex(after, 'starting_after') + 1;
  const data = newestFirst.slice(start, start + limit);
  return { object: 'list', url, has_more: start + limit < newestFirst.length, data };
}
