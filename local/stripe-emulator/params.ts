/**
 * Stripe's request encoding: `application/x-www-form-urlencoded` (or a query string) with bracketed keys,
 * `metadata[user_id]=u1`, `line_items[0][price_data][currency]=usd`, `expand[]=x`, decoded to nested values.
 */
export type Params = { [key: string]: ParamValue };
export type ParamValue = string | Params | ParamValue[];

/** Decodes a form or query string into nested objects and arrays (numeric or empty brackets make arrays). */
export function parseParams(encoded: string): Params {
  const root: Params = {};
  for (const [rawKey, value] of new URLSearchParams(encoded)) {
    const path = keyPath(rawKey);
    let node: Params | ParamValue[] = root;
    path.forEach((segment, i) => {
      const slot = Array.isArray(node) && segment === '' ? String(node.length) : segment;
      const container = node as Record<string, ParamValue>;
      if (i === path.length - 1) {
        container[slot] = value;
        return;
      }
      if (container[slot] === undefined) container[slot] = /^\d*$/.test(path[i + 1]!) ? [] : {};
      node = container[slot] as Params | ParamValue[];
    });
  }
  return root;
}

function keyPath(key: string): string[] {
  const open = key.indexOf('[');
  if (open < 0) return [key];
  const rest = [...key.slice(open).matchAll(/\[([^\]]*)\]/g)].map((m) => m[1] ?? '');
  return [key.slice(0, open), ...rest];
}

/** A string param, or undefined when absent or not a string. */
export function str(params: Params, key: string): string | undefined {
  const value = params[key];
  return typeof value === 'string' ? value : undefined;
}

/** A nested object param ({} when absent). */
export function obj(params: Params, key: string): Params {
  const value = params[key];
  return value && typeof value === 'object' && !Array.isArray(value) ? value : {};
}

/** Metadata as Stripe stores it: string values only. */
export function metadataOf(params: Params, key = 'metadata'): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(obj(params, key))) if (typeof v === 'string' && v !== '') out[k] = v;
  return out;
}
