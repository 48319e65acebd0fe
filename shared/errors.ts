/** Every error the service means to raise: a literal `code`, an HTTP status, and a message safe to show. */
export class ServiceError extends Error {
  constructor(
    readonly code: string,
    readonly status: number,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'ServiceError';
  }
}

/** Input that fails validation; `field` names the offending input. */
export class ValidationError extends ServiceError {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super('validation_error', 400, `${field}: ${message}`, { field });
  }
}

export class AccountNotFoundError extends ServiceError {
  constructor(what: string) {
    super('account_not_found', 404, `no account for ${what}`);
  }
}

/** The balance cannot cover the request; nothing was written. */
export class InsufficientCreditsError extends ServiceError {
  constructor(
    readonly balance: number,
    readonly requested: number,
  ) {
    super('insufficient_credits', 402, `balance ${balance} cannot cover ${requested} credits`, {
      balance,
      requested,
    });
  }
}

/** The idempotency key was used before with a different request. */
export class IdempotencyConflictError extends ServiceError {
  constructor(key: string) {
    super(
      'idempotency_conflict',
      409,
      `idempotency key ${JSON.stringify(key)} was used with a different request`,
    );
  }
}

export class AccountFrozenError extends ServiceError {
  constructor() {
    super('account_frozen', 403, 'account is frozen');
  }
}

/** A money movement that would break a ledger invariant (e.g. clawing back more than was credited). */
export class LedgerRuleError extends ServiceError {
  constructor(message: string) {
    super('ledger_rule', 422, message);
  }
}
