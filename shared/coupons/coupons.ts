import { type Kysely, sql } from 'kysely';
import { inAccountTransaction } from '../accounts/accounts.js';
import { type AdminActor, recordAdminAction } from '../audit/audit.js';
import type { Account, Coupon, Database } from '../db/schema.js';
import { ServiceError } from '../errors.js';
import { creditEntry } from '../ledger/ledger.js';
import { DEFAULT_CATALOG, type PlanCatalog } from '../plan-catalog.js';
import { planOf } from '../plans/plans.js';

/** The only writer of `coupons`, `coupon_redemptions` and `coupon_failures`. */

/** Failed redemption attempts an account may make per hour before every attempt answers 429. */
export const MAX_FAILED_ATTEMPTS_PER_HOUR = 10;

/** Codes compare case-insensitively: stored and looked up upper-cased. */
export const normalizeCode = (code: string) => code.toUpperCase();

export interface NewCoupon {
  readonly code: string;
  readonly credits: number;
  readonly grantExpiresInDays: number | null;
  readonly redeemBy: Date | null;
  readonly maxRedemptions: number | null;
  readonly plans: readonly string[] | null;
}

/** Creates a coupon, audited; a code taken already (in any case) is 409. */
export async function createCoupon(
  db: Kysely<Database>,
  coupon: NewCoupon,
  actor: AdminActor,
): Promise<Coupon> {
  const code = normalizeCode(coupon.code);
  try {
    return await db.transaction().execute(async (trx) => {
      const actionId = await recordAdminAction(trx, 'create_coupon', actor, {
        payload: { code, credits: coupon.credits },
      });
      return trx
        .insertInto('coupons')
        .values({
          code,
          credits: coupon.credits,
          grant_expires_in_days: coupon.grantExpiresInDays,
          redeem_by: coupon.redeemBy,
          max_redemptions: coupon.maxRedemptions,
          plans: coupon.plans ? [...coupon.plans] : null,
          created_action_id: actionId,
        })
        .returningAll()
        .executeTakeFirstOrThrow();
    });
  } catch (error: unknown) {
    if ((error as { code?: string }).code === '23505') {
      throw new ServiceError('coupon_exists', `a coupon ${code} exists already`);
    }
    throw error;
  }
}

export function listCoupons(db: Kysely<Database>, limit: number): Promise<Coupon[]> {
  return db.selectFrom('coupons').selectAll().orderBy('created_at', 'desc').limit(limit).execute();
}

/** Disables a coupon (audited); disabling it again changes nothing. */
export async function disableCoupon(
  db: Kysely<Database>,
  rawCode: string,
  actor: AdminActor,
): Promise<Coupon> {
  const code = normalizeCode(rawCode);
  return db.transaction().execute(async (trx) => {
    const coupon = await trx
      .selectFrom('coupons')
      .selectAll()
      .where('code', '=', code)
      .forUpdate()
      .executeTakeFirst();
    if (!coupon) throw new ServiceError('coupon_not_found', `no coupon ${code}`);
    if (coupon.disabled_at) return coupon;
    await recordAdminAction(trx, 'disable_coupon', actor, { payload: { code } });
    return trx
      .updateTable('coupons')
      .set({ disabled_at: sql`now()` })
      .where('code', '=', code)
      .returningAll()
      .executeTakeFirstOrThrow();
  });
}

export interface Redemption {
  readonly grantId: string;
  readonly credits: number;
  readonly expiresAt: Date | null;
}

/**
 * Redeems a coupon for an account, once: one promotional grant, the redemption counted atomically (never past
 * `maxRedemptions`, whatever the concurrency). Unknown, disabled, exhausted, expired, already redeemed or
 * not-for-this-plan codes write nothing but a failed attempt; ten failures in an hour answer 429.
 */
export async function redeemCoupon(
  db: Kysely<Database>,
  account: Account,
  rawCode: string,
  now = new Date(),
  plans: PlanCatalog = DEFAULT_CATALOG,
): Promise<Redemption> {
  const code = normalizeCode(rawCode);
  const since = new Date(now.getTime() - 3_600_000);
  const failures = await db
    .selectFrom('coupon_failures')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .where('account_id', '=', account.id)
    .where('created_at', '>', since)
    .executeTakeFirstOrThrow();
  if (Number(failures.n) >= MAX_FAILED_ATTEMPTS_PER_HOUR) {
    throw new ServiceError(
      'too_many_attempts',
      `too many failed coupon attempts; try again within the hour`,
      {
        retryAfterSeconds: 3600,
      },
    );
  }
  try {
    return await inAccountTransaction(db, account.id, async (trx, locked) => {
      const coupon = await trx.selectFrom('coupons').selectAll().where('code', '=', code).executeTakeFirst();
      if (!coupon) throw new ServiceError('coupon_not_found', `no coupon ${code}`);
      const redeemed = await trx
        .selectFrom('coupon_redemptions')
        .select('grant_id')
        .where('code', '=', code)
        .where('account_id', '=', locked.id)
        .executeTakeFirst();
      if (redeemed)
        throw new ServiceError('coupon_already_redeemed', `coupon ${code} was redeemed by this account`);
      if (coupon.disabled_at) throw new ServiceError('coupon_disabled', `coupon ${code} is no longer valid`);
      if (coupon.redeem_by && coupon.redeem_by <= now) {
        throw new ServiceError(
          'coupon_expired',
          `coupon ${code} could be redeemed until ${coupon.redeem_by.toISOString()}`,
        );
      }
      if (coupon.plans) {
        const plan = await planOf(trx, plans, locked.id);
        if (!coupon.plans.includes(plan.id)) {
          throw new ServiceError('coupon_not_for_plan', `coupon ${code} is not for plan ${plan.id}`);
        }
      }
      // The row lock of this UPDATE serializes concurrent redemptions; its condition keeps the limit.
      const counted = await trx
        .updateTable('coupons')
        .set({ redemptions: sql`redemptions + 1` })
        .where('code', '=', code)
        .where((eb) =>
          eb.or([eb('max_redemptions', 'is', null), eb('redemptions', '<', eb.ref('max_redemptions'))]),
        )
        .executeTakeFirst();
      if (counted.numUpdatedRows !== 1n) {
        throw new ServiceError('coupon_exhausted', `coupon ${code} has been redeemed as often as it may be`);
      }
      const expiresAt = coupon.grant_expires_in_days
        ? new Date(now.getTime() + coupon.grant_expires_in_days * 86_400_000)
        : null;
      const { grant } = await creditEntry(
        trx,
        locked,
        { amount: coupon.credits, kind: 'coupon_redemption', reference: code, description: `Coupon ${code}` },
        { category: 'promotional', source: 'coupon', expiresAt },
      );
      await trx
        .insertInto('coupon_redemptions')
        .values({ code, account_id: locked.id, grant_id: grant.id })
        .execute();
      return { grantId: grant.id, credits: coupon.credits, expiresAt };
    });
  } catch (error: unknown) {
    if (error instanceof ServiceError && error.code.startsWith('coupon_')) {
      await db
        .insertInto('coupon_failures')
        .values({ account_id: account.id, code_tried: code, created_at: now })
        .execute();
    }
    throw error;
  }
}
