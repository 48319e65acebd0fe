import * as z from 'zod/mini';

/** A credit pack on sale: `credits` for `amount` minor units of `currency`. */
export interface CreditPackage {
  readonly id: string;
  readonly name: string;
  readonly credits: number;
  readonly amount: number;
  readonly currency: string;
}

export const packageSchema = z.strictObject({
  id: z.string().check(z.regex(/^[a-z0-9_-]{1,64}$/)),
  name: z.string().check(z.minLength(1), z.maxLength(100)),
  credits: z.int().check(z.positive()),
  amount: z.int().check(z.positive(), z.lte(99_999_999)),
  currency: z.string().check(z.regex(/^[a-z]{3}$/)),
});

/** The packs sold when `CREDIT_PACKAGES` does not name others. */
export const DEFAULT_PACKAGES: readonly CreditPackage[] = [
  { id: 'pack_small', name: '1,000 credits', credits: 1_000, amount: 500, currency: 'usd' },
  { id: 'pack_medium', name: '5,000 credits', credits: 5_000, amount: 2_000, currency: 'usd' },
  { id: 'pack_large', name: '25,000 credits', credits: 25_000, amount: 8_000, currency: 'usd' },
];

/** Parses the `CREDIT_PACKAGES` JSON array; ids must be unique. */
export function parsePackages(json: string | undefined): readonly CreditPackage[] {
  if (!json) return DEFAULT_PACKAGES;
  const parsed = z.array(packageSchema).check(z.minLength(1)).safeParse(JSON.parse(json));
  if (!parsed.success) {
    const problems = parsed.error.issues.map(
      (issue) => `${issue.path.join('.') || 'the list'}: ${issue.message}`,
    );
    throw new Error(`CREDIT_PACKAGES is invalid: ${problems.join('; ')}`);
  }
  const packages = parsed.data;
  const ids = new Set(packages.map((p) => p.id));
  if (ids.size !== packages.length) throw new Error('CREDIT_PACKAGES has duplicate ids');
  return packages;
}
