/**
 * The error catalog: every code the service answers, with its one HTTP status. A condition has one code, so it
 * answers the same status wherever it is found (the router, the intake, a domain).
 */
export const ERROR_STATUS = {
  validation_error: 400,
  malformed_json: 400,
  invalid_encoding: 400,
  unknown_package: 400,
  empty_body: 400,
  malformed_event: 400,
  invalid_signature: 400,
  livemode_mismatch: 400,
  invalid_usage: 400,
  unauthorized: 401,
  insufficient_credits: 402,
  forbidden: 403,
  account_frozen: 403,
  four_eyes_required: 403,
  coupon_not_for_plan: 403,
  spend_cap_reached: 403,
  cors_origin_refused: 403,
  not_found: 404,
  account_not_found: 404,
  coupon_not_found: 404,
  price_book_not_found: 404,
  plan_not_found: 404,
  webhook_endpoint_not_found: 404,
  webhook_delivery_not_found: 404,
  idempotency_conflict: 409,
  reconciliation_running: 409,
  approval_decided: 409,
  coupon_exists: 409,
  coupon_already_redeemed: 409,
  hold_already_captured: 409,
  hold_voided: 409,
  price_book_exists: 409,
  price_book_not_draft: 409,
  no_saved_card: 409,
  coupon_disabled: 410,
  coupon_exhausted: 410,
  coupon_expired: 410,
  payload_too_large: 413,
  unsupported_media_type: 415,
  ledger_rule: 422,
  limit_exceeded: 422,
  event_parked: 422,
  unknown_sku: 422,
  too_many_open_checkouts: 429,
  too_many_attempts: 429,
  rate_limited: 429,
  internal_error: 500,
  stripe_unavailable: 502,
  database_unavailable: 503,
  queue_unavailable: 503,
  webhooks_not_configured: 503,
} as const satisfies Record<string, number>;

export type ErrorCode = keyof typeof ERROR_STATUS;

/** Every error the service means to raise: a catalog `code`, its HTTP status, and a message safe to show. */
export class ServiceError extends Error {
  readonly status: number;

  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'ServiceError';
    this.status = ERROR_STATUS[code];
  }
}

/** Input that fails validation; `field` names the offending input. */
export class ValidationError extends ServiceError {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super('validation_error', `${field}: ${message}`, { field });
  }
}

export class AccountNotFoundError extends ServiceError {
  constructor(what: string) {
    super('account_not_found', `no account for ${what}`);
  }
}

/** The balance cannot cover the request; nothing was written. */
export class InsufficientCreditsError extends ServiceError {
  constructor(
    readonly balance: number,
    readonly requested: number,
    /** Credits reserved by active holds: what is available is the balance less these. */
    readonly held = 0,
  ) {
    super(
      'insufficient_credits',
      held > 0
        ? `available ${balance - held} (balance ${balance} less ${held} held) cannot cover ${requested} credits`
        : `balance ${balance} cannot cover ${requested} credits`,
      { balance, requested, available: balance - held },
    );
  }
}

/** The idempotency key was used before with a different request. */
export class IdempotencyConflictError extends ServiceError {
  constructor(key: string) {
    super('idempotency_conflict', `idempotency key ${JSON.stringify(key)} was used with a different request`);
  }
}

export class AccountFrozenError extends ServiceError {
  constructor() {
    super('account_frozen', 'account is frozen');
  }
}

/** A money movement that would break a ledger invariant (e.g. clawing back more than was credited). */
export class LedgerRuleError extends ServiceError {
  constructor(message: string) {
    super('ledger_rule', message);
  }
}

/** An event that can never be applied as it stands: parked with `reason` for an operator, never dropped. */
export class ParkEventError extends ServiceError {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super('event_parked', message, { reason });
  }
}
