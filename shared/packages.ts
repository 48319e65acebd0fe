import * as z from 'zod';

/** A credit pack on sale: `credits` for `amount` minor units of `currency`. */
export interface CreditPackage {
  readonly id: string;
  readonly name: string;
  readonly credits: number;
  readonly amount: number;
  readonly currency: string;
}

export const packageSchema = z
  .object({
    id: z.string().regex(/^[a-z0-9_-]{1,64}$/),
    name: z.string().min(1).max(100),
    credits: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
    amount: z.number().int().positive().max(99_999_999),
    currency: z.string().regex(/^[a-z]{3}$/),
  })
  .strict();

/** The packs sold when `CREDIT_PACKAGES` does not name others. */
export const DEFAULT_PACKAGES: readonly CreditPackage[] = [
  { id: 'pack_small', name: '1,000 credits', credits: 1_000, amount: 500, currency: 'usd' },
  { id: 'pack_medium', name: '5,000 credits', credits: 5_000, amount: 2_000, currency: 'usd' },
  { id: 'pack_large', name: '25,000 credits', credits: 25_000, amount: 8_000, currency: 'usd' },
];

/** Parses the `CREDIT_PACKAGES` JSON array; ids must be unique. */
export function parsePackages(json: string | undefined): readonly CreditPackage[] {
  if (!json) return DEFAULT_PACKAGES;
  const packages = z.array(packageSchema).min(1).parse(JSON.parse(json));
  const ids = new Set(packages.map((p) => p.id));
  if (ids.size !== packages.length) throw new Error('CREDIT_PACKAGES has duplicate ids');
  return packages;
}
