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
 * that says nothing about the cause.
 */
export function problem(
  error: unknown,
  headers: Record<string, string> = {},
): APIGatewayProxyStructuredResultV2 {
  const known = error instanceof ServiceError ? error : undefined;
  const status = known?.status ?? 500;
  const code = known?.code ?? 'internal_error';
  return {
    statusCode: status,
    headers: { 'content-type': 'application/problem+json', ...headers },
    body: JSON.stringify({
      type: `https://credits.dev/problems/${code.replaceAll('_', '-')}`,
      title: code.replaceAll('_', ' '),
      status,
      code,
      detail: known?.message ?? 'An internal error occurred. It has been logged.',
      ...known?.details,
    }),
  };
}
