import { randomBytes } from 'node:crypto';
import { invalid, StripeApiError } from './errors.js';
import { metadataOf, obj, type Params, str } from './params.js';
import { newId, nowSeconds, paginate, type Store, type StripeObject } from './store.js';

/** Why a promotion code cannot be applied; the hosted page words each one as Stripe's page does. */
export type PromotionCodeRefusal = 'unknown' | 'inactive' | 'expired' | 'exhausted' | 'currency';

/** A code that cannot be applied: Stripe's 400 error shape, plus the reason for the hosted page. */
export class PromotionCodeRefused extends StripeApiError {
  constructor(
    readonly reason: PromotionCodeRefusal,
    message: string,
    code: string,
  ) {
    super(400, 'invalid_request_error', message, code, 'promotion_code');
  }
}

/** A promotion code checked against a session: what it takes off the subtotal. */
export interface AppliedPromotionCode {
  readonly promotionCode: StripeObject;
  readonly coupon: StripeObject;
  /** In the session's smallest currency unit, never more than the subtotal. */
  readonly amountDiscount: number;
}

const CODE_PATTERN = /^[A-Za-z0-9-]{1,500}$/;
const ALPHANUMERIC = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
const DURATIONS = new Set(['forever', 'once', 'repeating']);

function randomCode(length: number): string {
  let out = '';
  for (const b of randomBytes(length)) out += ALPHANUMERIC[b % ALPHANUMERIC.length];
  return out;
}

/**
 * Stripe's coupons and promotion codes (API version of the installed SDK: a promotion code names its coupon
 * as `promotion: {type: 'coupon', coupon}`). Codes match case-insensitively, as on Stripe.
 */
export class Promotions {
  constructor(private readonly store: Store) {}

  // ---- coupons ----------------------------------------------------------------------------------------

  createCoupon(params: Params): StripeObject {
    for (const unsupported of ['applies_to', 'currency_options']) {
      if (params[unsupported] !== undefined) throw invalid(unsupported, `${unsupported} is not emulated.`);
    }
    const percentText = str(params, 'percent_off');
    const amountText = str(params, 'amount_off');
    if (percentText !== undefined && amountText !== undefined) {
      throw invalid('percent_off', 'You may only specify one of these parameters: amount_off, percent_off.');
    }
    if (percentText === undefined && amountText === undefined) {
      throw invalid('percent_off', 'Missing required param: percent_off or amount_off.', 'parameter_missing');
    }
    let percentOff: number | null = null;
    let amountOff: number | null = null;
    let currency: string | null = null;
    if (percentText !== undefined) {
      percentOff = Number(percentText);
      if (!/^\d+(\.\d+)?$/.test(percentText) || !(percentOff > 0 && percentOff <= 100)) {
        throw invalid('percent_off', 'percent_off must be greater than 0 and at most 100.');
      }
    } else {
      amountOff = positiveInteger(params, 'amount_off');
      currency = str(params, 'currency')?.toLowerCase() ?? null;
      if (!currency) {
        throw invalid(
          'currency',
          'You must specify a currency for an amount_off coupon.',
          'parameter_missing',
        );
      }
      if (!/^[a-z]{3}$/.test(currency)) throw invalid('currency', `Invalid currency: ${currency}`);
    }
    const duration = str(params, 'duration') ?? 'once';
    if (!DURATIONS.has(duration)) {
      throw invalid('duration', `Invalid duration: must be one of forever, once, or repeating`);
    }
    const months =
      str(params, 'duration_in_months') === undefined ? null : positiveInteger(params, 'duration_in_months');
    if ((duration === 'repeating') !== (months !== null)) {
      throw invalid(
        'duration_in_months',
        'duration_in_months is required with, and only with, duration=repeating.',
      );
    }
    const redeemBy = str(params, 'redeem_by') === undefined ? null : positiveInteger(params, 'redeem_by');
    if (redeemBy !== null && redeemBy <= nowSeconds())
      throw invalid('redeem_by', 'redeem_by must be in the future.');
    const id = str(params, 'id') ?? randomCode(8);
    if (this.store.get('coupon', id)) {
      throw invalid('id', 'Coupon already exists.', 'resource_already_exists');
    }
    return this.store.add({
      id,
      object: 'coupon',
      amount_off: amountOff,
      created: nowSeconds(),
      currency,
      duration,
      duration_in_months: months,
      livemode: false,
      max_redemptions:
        str(params, 'max_redemptions') === undefined ? null : positiveInteger(params, 'max_redemptions'),
      metadata: metadataOf(params),
      name: str(params, 'name') ?? null,
      percent_off: percentOff,
      redeem_by: redeemBy,
      times_redeemed: 0,
      valid: true,
    });
  }

  coupon(id: string, param = 'coupon'): StripeObject {
    const coupon = this.store.get('coupon', id);
    if (!coupon)
      throw new StripeApiError(
        404,
        'invalid_request_error',
        `No such coupon: '${id}'`,
        'resource_missing',
        param,
      );
    return this.refreshCoupon(coupon);
  }

  listCoupons(params: Params, url: string) {
    return paginate(
      this.store.all('coupon').map((c) => this.refreshCoupon(c)),
      params,
      url,
    );
  }

  // ---- promotion codes --------------------------------------------------------------------------------

  createPromotionCode(params: Params): StripeObject {
    if (params.coupon !== undefined) {
      throw invalid(
        'coupon',
        'Received unknown parameter: coupon. Name the coupon as promotion[coupon].',
        'parameter_unknown',
      );
    }
    for (const unsupported of ['customer', 'customer_account', 'restrictions']) {
      if (params[unsupported] !== undefined) throw invalid(unsupported, `${unsupported} is not emulated.`);
    }
    const promotion = obj(params, 'promotion');
    if (str(promotion, 'type') !== 'coupon') {
      throw invalid(
        'promotion[type]',
        'Missing required param: promotion[type] (coupon).',
        'parameter_missing',
      );
    }
    const couponId = str(promotion, 'coupon');
    if (!couponId)
      throw invalid('promotion[coupon]', 'Missing required param: promotion[coupon].', 'parameter_missing');
    const couponObject = this.store.get('coupon', couponId);
    if (!couponObject)
      throw invalid('promotion[coupon]', `No such coupon: '${couponId}'`, 'resource_missing');
    const code = str(params, 'code') ?? randomCode(8);
    if (!CODE_PATTERN.test(code)) {
      throw invalid(
        'code',
        'A promotion code has 1 to 500 characters: letters (a-z, A-Z), digits (0-9) and dashes.',
      );
    }
    const active = booleanParam(params, 'active') ?? true;
    if (active) this.assertCodeFree(code);
    const expiresAt = str(params, 'expires_at') === undefined ? null : positiveInteger(params, 'expires_at');
    if (expiresAt !== null && expiresAt <= nowSeconds())
      throw invalid('expires_at', 'expires_at must be in the future.');
    const redeemBy = couponObject.redeem_by as number | null;
    if (expiresAt !== null && redeemBy !== null && expiresAt > redeemBy) {
      throw invalid('expires_at', "expires_at cannot be after the coupon's redeem_by.");
    }
    return this.store.add({
      id: newId('promo'),
      object: 'promotion_code',
      active,
      code,
      created: nowSeconds(),
      expires_at: expiresAt,
      livemode: false,
      max_redemptions:
        str(params, 'max_redemptions') === undefined ? null : positiveInteger(params, 'max_redemptions'),
      metadata: metadataOf(params),
      promotion: { coupon: couponId, type: 'coupon' },
      times_redeemed: 0,
    });
  }

  promotionCode(id: string): StripeObject {
    const code = this.store.get('promotion_code', id);
    if (!code) {
      throw new StripeApiError(
        404,
        'invalid_request_error',
        `No such promotion code: '${id}'`,
        'resource_missing',
        'id',
      );
    }
    return this.refreshPromotionCode(code);
  }

  /** Stripe's update: `active` and `metadata` (the rest of a promotion code is immutable). */
  updatePromotionCode(id: string, params: Params): StripeObject {
    const promotionCode = this.promotionCode(id);
    const active = booleanParam(params, 'active');
    if (active === true && !promotionCode.active) {
      if (!this.couponOf(promotionCode).valid) {
        throw invalid('active', 'This promotion code cannot be reactivated: its coupon is no longer valid.');
      }
      this.assertCodeFree(String(promotionCode.code));
    }
    if (active !== undefined) promotionCode.active = active;
    if (params.metadata !== undefined) {
      promotionCode.metadata = {
        ...(promotionCode.metadata as Record<string, string>),
        ...metadataOf(params),
      };
    }
    return promotionCode;
  }

  listPromotionCodes(params: Params, url: string) {
    const code = str(params, 'code')?.toLowerCase();
    const active = booleanParam(params, 'active');
    const coupon = str(params, 'coupon');
    return paginate(
      this.store.all('promotion_code').map((p) => this.refreshPromotionCode(p)),
      params,
      url,
      (p) =>
        (code === undefined || String(p.code).toLowerCase() === code) &&
        (active === undefined || p.active === active) &&
        (coupon === undefined || this.couponOf(p).id === coupon),
    );
  }

  // ---- applying a code --------------------------------------------------------------------------------

  /**
   * What the code a buyer typed takes off `subtotal` (in `currency`); throws PromotionCodeRefused when no
   * active promotion code has it, or it or its coupon is expired or used up, or the currency differs.
   */
  check(typed: string, subtotal: number, currency: string): AppliedPromotionCode {
    const code = typed.trim();
    const matching = this.store
      .all('promotion_code')
      .map((p) => this.refreshPromotionCode(p))
      .filter((p) => String(p.code).toLowerCase() === code.toLowerCase());
    if (matching.length === 0) {
      throw new PromotionCodeRefused('unknown', `No such promotion code: '${code}'`, 'resource_missing');
    }
    const promotionCode = matching.find((p) => p.active);
    if (!promotionCode) {
      const coupon = this.couponOf(matching[matching.length - 1]!);
      if (!coupon.valid) throw couponRefusal(coupon, code);
      throw new PromotionCodeRefused(
        'inactive',
        `The promotion code '${code}' is inactive.`,
        'parameter_invalid',
      );
    }
    const coupon = this.couponOf(promotionCode);
    const now = nowSeconds();
    if (promotionCode.expires_at !== null && Number(promotionCode.expires_at) <= now) {
      throw new PromotionCodeRefused(
        'expired',
        `The promotion code '${code}' has expired.`,
        'coupon_expired',
      );
    }
    if (
      promotionCode.max_redemptions !== null &&
      Number(promotionCode.times_redeemed) >= Number(promotionCode.max_redemptions)
    ) {
      throw new PromotionCodeRefused(
        'exhausted',
        `The promotion code '${code}' has reached its maximum number of redemptions.`,
        'coupon_expired',
      );
    }
    if (!coupon.valid) throw couponRefusal(coupon, code);
    if (coupon.amount_off !== null && coupon.currency !== currency) {
      throw new PromotionCodeRefused(
        'currency',
        `The promotion code '${code}' is for ${String(coupon.currency)}; this session is in ${currency}.`,
        'parameter_invalid',
      );
    }
    const amountDiscount =
      coupon.percent_off !== null
        ? Math.round((subtotal * Number(coupon.percent_off)) / 100)
        : Math.min(Number(coupon.amount_off), subtotal);
    return { promotionCode, coupon, amountDiscount };
  }

  /** Counts one redemption on the promotion code and on its coupon (a coupon used up stops being valid). */
  redeem(applied: AppliedPromotionCode): void {
    applied.promotionCode.times_redeemed = Number(applied.promotionCode.times_redeemed) + 1;
    applied.coupon.times_redeemed = Number(applied.coupon.times_redeemed) + 1;
    this.refreshCoupon(applied.coupon);
  }

  // ---- state kept as Stripe keeps it ------------------------------------------------------------------

  private couponOf(promotionCode: StripeObject): StripeObject {
    const id = String((promotionCode.promotion as { coupon: string }).coupon);
    return this.refreshCoupon(this.store.get('coupon', id)!);
  }

  /** A coupon past its redeem_by or used up is no longer valid (Stripe flips `valid` for good). */
  private refreshCoupon(coupon: StripeObject): StripeObject {
    const expired = coupon.redeem_by !== null && Number(coupon.redeem_by) <= nowSeconds();
    const usedUp =
      coupon.max_redemptions !== null && Number(coupon.times_redeemed) >= Number(coupon.max_redemptions);
    if (expired || usedUp) coupon.valid = false;
    return coupon;
  }

  /** "A promotion code is only active if the coupon is also valid" (Stripe's API reference). */
  private refreshPromotionCode(promotionCode: StripeObject): StripeObject {
    if (promotionCode.active && !this.couponOf(promotionCode).valid) promotionCode.active = false;
    return promotionCode;
  }

  private assertCodeFree(code: string): void {
    const taken = this.store
      .all('promotion_code')
      .some((p) => p.active && String(p.code).toLowerCase() === code.toLowerCase());
    if (taken) {
      throw invalid(
        'code',
        `An active promotion code with code '${code}' already exists.`,
        'resource_already_exists',
      );
    }
  }
}

function couponRefusal(coupon: StripeObject, code: string): PromotionCodeRefused {
  const expired = coupon.redeem_by !== null && Number(coupon.redeem_by) <= nowSeconds();
  return expired
    ? new PromotionCodeRefused(
        'expired',
        `The coupon of promotion code '${code}' has expired.`,
        'coupon_expired',
      )
    : new PromotionCodeRefused(
        'exhausted',
        `The coupon of promotion code '${code}' has reached its maximum number of redemptions.`,
        'coupon_expired',
      );
}

function positiveInteger(params: Params, key: string): number {
  const text = str(params, key);
  const value = Number(text);
  if (text === undefined || !/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < 1) {
    throw invalid(key, `Invalid positive integer: ${text ?? ''}`);
  }
  return value;
}

function booleanParam(params: Params, key: string): boolean | undefined {
  const text = str(params, key);
  if (text === undefined) return undefined;
  if (text !== 'true' && text !== 'false') throw invalid(key, `Invalid boolean: ${text}`);
  return text === 'true';
}
