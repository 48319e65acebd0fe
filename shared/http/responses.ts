import type { APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { ServiceError } from '../errors.js';

/** A JSON response. */
export function json(
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): APIGatewayProxyStructuredResultV2 {
  return {
    statusCode: status,
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  };
}

/**
 * An `application/problem+json` (RFC 9457) response for a ServiceError; anything else becomes a generic 500
 * that says nothing about the cause. `requestId` (API Gateway's) lets a caller quote the failed request; a
 * `retryAfterSeconds` detail is also sent as `Retry-After`.
 */
export function problem(
  error: unknown,
  options: { readonly headers?: Record<string, string>; readonly requestId?: string } = {},
): APIGatewayProxyStructuredResultV2 {
  const known =
    error instanceof ServiceError
      ? error
      : new ServiceError('internal_error', 'An internal error occurred. It has been logged.');
  const retryAfter = known.details.retryAfterSeconds;
  return {
    statusCode: known.status,
    headers: {
      'content-type': 'application/problem+json',
      ...(typeof retryAfter === 'number' && { 'retry-after': String(retryAfter) }),
      ...options.headers,
    },
    body: JSON.stringify({
      type: `https://credits.dev/problems/${known.code.replaceAll('_', '-')}`,
      title: known.code.replaceAll('_', ' '),
      status: known.status,
      code: known.code,
      detail: known.message,
      ...(options.requestId && { requestId: options.requestId }),
      ...known.details,
    }),
  };
}

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * A request body as text, refusing bytes that are not valid UTF-8 (a lone 0xff, an overlong form, an encoded
 * surrogate): decoding them lossily would let two different bodies read, hash and replay as the same one.
 */
export function decodeUtf8(bytes: Uint8Array): string {
  try {
    return UTF8.decode(bytes);
  } catch {
    throw new ServiceError('invalid_encoding', 'the body is not valid UTF-8');
  }
}
