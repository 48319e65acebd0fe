/** An error answered in Stripe's shape: `{ error: { type, code, message, param } }` with Stripe's status. */
export class StripeApiError extends Error {
  constructor(
    readonly status: number,
    readonly type:
      | 'invalid_request_error'
      | 'card_error'
      | 'api_error'
      | 'idempotency_error'
      | 'rate_limit_error'
      | 'authentication_error',
    message: string,
    readonly code?: string,
    readonly param?: string,
    /** More fields of Stripe's error object: a card error's decline_code, charge, payment_intent, payment_method. */
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }

  toJSON() {
    return {
      error: { type: this.type, code: this.code, message: this.message, param: this.param, ...this.extra },
    };
  }
}

export const missing = (kind: string, id: string, param = 'id') =>
  new StripeApiError(404, 'invalid_request_error', `No such ${kind}: '${id}'`, 'resource_missing', param);

export const invalid = (param: string, message: string, code = 'parameter_invalid') =>
  new StripeApiError(400, 'invalid_request_error', message, code, param);
