import { en } from 'zod/locales';
import * as z from 'zod/mini';

// zod/mini carries no messages of its own (see shared/config.ts).
z.config(en());

/**
 * The plans on offer (`PLANS`, CDK context `plans`): parsed and checked once at cold start, with errors that
 * name the field. No I/O here, so the config loader and the infrastructure's synth checks can share it.
 */

export interface Plan {
  readonly id: string;
  readonly name: string;
  /** Promotional credits granted each UTC month, expiring at the month's end. */
  readonly monthlyAllowance?: number;
  readonly caps: { readonly monthly?: number; readonly daily?: number };
  /** Spends and hold creations admitted per account in any 60 seconds. */
  readonly rateLimitPerMinute?: number;
  /** `balance.low` fires when available falls below this (a user's own threshold wins). */
  readonly lowBalanceThreshold?: number;
}

export interface PlanCatalog {
  readonly plans: readonly Plan[];
  /** The plan of every account an admin has not moved. */
  readonly defaultPlan: Plan;
}

const credits = () => z.int().check(z.nonnegative(), z.lte(Number.MAX_SAFE_INTEGER));

const planSchema = z.strictObject({
  id: z.string().check(z.regex(/^[a-z0-9_-]{1,64}$/, 'must be 1-64 of a-z, 0-9, _ and -')),
  name: z.string().check(z.minLength(1), z.maxLength(100)),
  default: z.optional(z.boolean()),
  monthlyAllowance: z.optional(credits()),
  caps: z._default(z.strictObject({ monthly: z.optional(credits()), daily: z.optional(credits()) }), {}),
  rateLimitPerMinute: z.optional(z.int().check(z.positive(), z.lte(10_000))),
  lowBalanceThreshold: z.optional(credits()),
});

/** Without `PLANS`: one plan with no allowance, caps or rate limit. */
export const DEFAULT_CATALOG: PlanCatalog = (() => {
  const plan: Plan = { id: 'default', name: 'Default', caps: {} };
  return { plans: [plan], defaultPlan: plan };
})();

/** Parses `PLANS` (a JSON array); throws an Error naming the field at fault (`PLANS[1].caps.daily: ...`). */
export function parsePlans(json: string | undefined): PlanCatalog {
  if (json === undefined || json.trim() === '') return DEFAULT_CATALOG;
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch {
    throw new Error('PLANS is invalid: not valid JSON');
  }
  const parsed = z.array(planSchema).check(z.minLength(1)).safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${fieldOf(issue)}: ${issue.message}`);
    throw new Error(`PLANS is invalid: ${problems.join('; ')}`);
  }
  const entries = parsed.data;
  const seen = new Set<string>();
  entries.forEach((plan, i) => {
    if (seen.has(plan.id)) throw new Error(`PLANS is invalid: PLANS[${i}].id: duplicate id "${plan.id}"`);
    seen.add(plan.id);
  });
  const defaults = entries.flatMap((plan, i) => (plan.default ? [i] : []));
  if (defaults.length > 1) {
    throw new Error(
      `PLANS is invalid: PLANS[${defaults[1]}].default: only one plan may be the default (PLANS[${defaults[0]}] is)`,
    );
  }
  if (defaults.length === 0 && entries.length > 1) {
    throw new Error('PLANS is invalid: PLANS[*].default: mark one plan "default": true');
  }
  const plans: Plan[] = entries.map(({ default: _default, ...plan }) => plan);
  return { plans, defaultPlan: plans[defaults[0] ?? 0]! };
}

function fieldOf(issue: { path: PropertyKey[]; code: string; keys?: string[] }): string {
  const path = issue.code === 'unrecognized_keys' ? [...issue.path, ...(issue.keys ?? [])] : issue.path;
  return path.reduce<string>(
    (out, part) => (typeof part === 'number' ? `${out}[${part}]` : `${out}.${String(part)}`),
    'PLANS',
  );
}

/** The plan with this id, or undefined. */
export const findPlan = (catalog: PlanCatalog, id: string): Plan | undefined =>
  catalog.plans.find((p) => p.id === id);

/** An account's plan from its stored id (null: the default). A plan since removed from `PLANS` is the default. */
export const planOfId = (catalog: PlanCatalog, id: string | null | undefined): Plan =>
  (id ? findPlan(catalog, id) : undefined) ?? catalog.defaultPlan;
