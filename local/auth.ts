import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Hash } from '@smithy/hash-node';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { exportJWK, generateKeyPair, importJWK, type JWK, jwtVerify, SignJWT } from 'jose';
import { signRequest as signWithClient } from '../shared/client/credits-client.js';

const Sha256 = Hash.bind(null, 'sha256');

export const LOCAL_ISSUER = 'https://local-issuer.credits.invalid';
export const LOCAL_AUDIENCE = 'credits-local';
export const LOCAL_ACCOUNT = '000000000000';
export const LOCAL_REGION = 'us-east-1';

/** The local IAM principals: one service caller and two admins (four-eyes approvals need a second ARN). */
export const PRINCIPAL_NAMES = ['service', 'admin', 'second-admin'] as const;
export type PrincipalName = (typeof PRINCIPAL_NAMES)[number];

const PRINCIPAL_ARNS: Record<PrincipalName, string> = {
  service: `arn:aws:iam::${LOCAL_ACCOUNT}:role/credits-local-service`,
  admin: `arn:aws:iam::${LOCAL_ACCOUNT}:user/credits-local-admin`,
  'second-admin': `arn:aws:iam::${LOCAL_ACCOUNT}:user/credits-local-second-admin`,
};

export interface LocalPrincipal {
  readonly name: PrincipalName;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly arn: string;
}

/** Which kind of route a principal may invoke, as the IAM policies in AWS allow it. */
export const principalKind = (principal: LocalPrincipal): 'service' | 'admin' =>
  principal.name === 'service' ? 'service' : 'admin';

interface AuthState {
  readonly signingKey: JWK;
  readonly principals: LocalPrincipal[];
}

/** A SigV4-signed request as it arrived: the path as sent (still percent-encoded), every query pair. */
export interface SignedRequest {
  readonly method: string;
  readonly host: string;
  readonly path: string;
  readonly query: ReadonlyArray<readonly [string, string]>;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
}

/**
 * Why a SigV4 check failed, in AWS's terms: `missing` (no AWS4-HMAC-SHA256 Authorization header),
 * `incomplete` (the header or the signed headers are malformed), `unknown_key` (no such access key),
 * `scope` (credential scoped to another service, region or day), `expired` (x-amz-date too far from now),
 * `mismatch` (the signature does not match the request as received, its body included).
 */
export type SigV4Failure = {
  readonly ok: false;
  readonly reason: 'missing' | 'incomplete' | 'unknown_key' | 'scope' | 'expired' | 'mismatch';
  readonly message: string;
};
export type SigV4Result = { readonly ok: true; readonly principal: LocalPrincipal } | SigV4Failure;

const AUTHORIZATION =
  /^AWS4-HMAC-SHA256 Credential=([^/,\s]+)\/(\d{8})\/([^/,\s]+)\/([^/,\s]+)\/aws4_request, ?SignedHeaders=([a-z0-9;_.-]+), ?Signature=([0-9a-f]{64})$/;
const AMZ_DATE = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/;

const newPrincipal = (name: PrincipalName): LocalPrincipal => ({
  name,
  accessKeyId: `AKIALOCAL${randomBytes(6).toString('hex').toUpperCase()}`,
  secretAccessKey: randomBytes(30).toString('base64url'),
  arn: PRINCIPAL_ARNS[name],
});

/**
 * The local stand-ins for API Gateway's authorizers and for IAM, kept in `<dataDir>/local-auth.json`
 * (created on first use, upgraded in place when a principal is missing): an ES256 key that issues and
 * verifies user tokens (the JWT authorizer), and the IAM principals `service`, `admin` and `second-admin`,
 * whose SigV4 signatures are verified as API Gateway (service execute-api) and SQS (service sqs) verify them.
 */
export class LocalAuth {
  // Keys are imported and SigV4 signing keys derived once, not per request.
  private readonly signingKey: ReturnType<typeof importJWK>;
  private readonly verifyingKey: ReturnType<typeof importJWK>;
  private readonly signers = new Map<string, SignatureV4>();

  private constructor(private readonly state: AuthState) {
    const { d: _private, ...publicJwk } = state.signingKey;
    this.signingKey = importJWK(state.signingKey, 'ES256');
    this.verifyingKey = importJWK(publicJwk, 'ES256');
  }

  static async load(dataDir: string): Promise<LocalAuth> {
    const file = path.join(dataDir, 'local-auth.json');
    if (existsSync(file)) {
      const saved = JSON.parse(readFileSync(file, 'utf8')) as AuthState;
      const missing = PRINCIPAL_NAMES.filter((name) => !saved.principals.some((p) => p.name === name));
      if (missing.length === 0) return new LocalAuth(saved);
      // A data dir from before a principal existed: add it, keep every existing key.
      const upgraded: AuthState = {
        ...saved,
        principals: [...saved.principals, ...missing.map(newPrincipal)],
      };
      writeFileSync(file, JSON.stringify(upgraded, null, 2), { mode: 0o600 });
      return new LocalAuth(upgraded);
    }
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    const state: AuthState = {
      signingKey: await exportJWK(privateKey),
      principals: PRINCIPAL_NAMES.map(newPrincipal),
    };
    mkdirSync(dataDir, { recursive: true });
    writeFileSync(file, JSON.stringify(state, null, 2), { mode: 0o600 });
    return new LocalAuth(state);
  }

  principal(name: PrincipalName): LocalPrincipal {
    const found = this.state.principals.find((p) => p.name === name);
    if (!found) throw new Error(`local-auth.json has no principal named ${name}`);
    return found;
  }

  /** A user token as the app's identity provider would issue it. */
  async issueToken(sub: string, ttlSeconds = 12 * 3600): Promise<string> {
    const key = await this.signingKey;
    return new SignJWT({ scope: 'credits' })
      .setProtectedHeader({ alg: 'ES256', kid: 'local' })
      .setSubject(sub)
      .setIssuer(LOCAL_ISSUER)
      .setAudience(LOCAL_AUDIENCE)
      .setIssuedAt()
      .setExpirationTime(`${ttlSeconds}s`)
      .sign(key);
  }

  /** The claims of a valid bearer token (as API Gateway passes them: strings), or undefined. */
  async verifyBearer(authorization: string | undefined): Promise<Record<string, string> | undefined> {
    const token = /^Bearer (\S+)$/i.exec(authorization ?? '')?.[1];
    if (!token) return undefined;
    try {
      const { payload } = await jwtVerify(token, await this.verifyingKey, {
        issuer: LOCAL_ISSUER,
        audience: LOCAL_AUDIENCE,
        algorithms: ['ES256'],
      });
      return Object.fromEntries(
        Object.entries(payload).map(([k, v]) => [k, Array.isArray(v) ? `[${v.join(' ')}]` : String(v)]),
      );
    } catch {
      return undefined;
    }
  }

  /**
   * Verifies an AWS SigV4 Authorization header over the request exactly as received: method, path, every
   * query pair, the signed headers (each must be present; host and x-amz-date must be signed) and the
   * SHA-256 of the body bytes that arrived, whatever `x-amz-content-sha256` declares. The credential must
   * be scoped to `service` in the local region on the day of x-amz-date, which must be within
   * `maxSkewSeconds` of now (API Gateway: 5 minutes; SQS: 15). Never throws.
   */
  async verifySigV4(
    request: SignedRequest,
    service: 'execute-api' | 'sqs',
    maxSkewSeconds: number,
  ): Promise<SigV4Result> {
    const fail = (reason: SigV4Failure['reason'], message: string): SigV4Failure => ({
      ok: false,
      reason,
      message,
    });
    const authorization = request.headers.authorization ?? '';
    if (!authorization.startsWith('AWS4-HMAC-SHA256 '))
      return fail('missing', 'Request is missing Authentication Token');
    const match = AUTHORIZATION.exec(authorization);
    if (!match)
      return fail(
        'incomplete',
        'Authorization header requires Credential, SignedHeaders and Signature parameters',
      );
    const [, accessKeyId, scopeDate, region, scopeService, signedHeaderList, signature] =
      match as unknown as [string, string, string, string, string, string, string];
    const principal = this.state.principals.find((p) => p.accessKeyId === accessKeyId);
    if (!principal) return fail('unknown_key', 'The security token included in the request is invalid.');
    const amzDate = request.headers['x-amz-date'] ?? '';
    const signedAt = Date.parse(amzDate.replace(AMZ_DATE, '$1-$2-$3T$4:$5:$6Z'));
    if (!AMZ_DATE.test(amzDate) || !Number.isFinite(signedAt))
      return fail('incomplete', 'Request must carry a valid X-Amz-Date header (yyyyMMddTHHmmssZ)');
    if (scopeService !== service)
      return fail('scope', `Credential should be scoped to correct service: '${service}'.`);
    if (region !== LOCAL_REGION)
      return fail('scope', `Credential should be scoped to a valid region, not '${region}'.`);
    if (scopeDate !== amzDate.slice(0, 8))
      return fail('scope', `Date in Credential scope does not match YYYYMMDD from X-Amz-Date: ${scopeDate}.`);
    const skewMs = Date.now() - signedAt;
    if (Math.abs(skewMs) > maxSkewSeconds * 1000) {
      const stamp = (ms: number) => new Date(ms).toISOString().replace(/[-:]|\.\d{3}/g, '');
      const minutes = maxSkewSeconds / 60;
      return fail(
        'expired',
        skewMs > 0
          ? `Signature expired: ${amzDate} is now earlier than ${stamp(Date.now() - maxSkewSeconds * 1000)} (${stamp(Date.now())} - ${minutes} min.)`
          : `Signature not yet current: ${amzDate} is still later than ${stamp(Date.now() + maxSkewSeconds * 1000)} (${stamp(Date.now())} + ${minutes} min.)`,
      );
    }
    const signedHeaders = signedHeaderList.split(';');
    if (!signedHeaders.includes('host') || !signedHeaders.includes('x-amz-date'))
      return fail('incomplete', 'SignedHeaders must include host and x-amz-date');
    const absent = signedHeaders.filter((name) => request.headers[name] === undefined);
    if (absent.length > 0)
      return fail('incomplete', `Signed headers missing from the request: ${absent.join(', ')}`);
    const bodyHash = createHash('sha256').update(request.body).digest('hex');
    const declared = request.headers['x-amz-content-sha256'];
    if (declared !== undefined && declared !== bodyHash) return fail('mismatch', SIGNATURE_MISMATCH);
    // Only the signed headers enter the canonical request; the payload hash is always the received body's.
    const headers = Object.fromEntries(signedHeaders.map((name) => [name, request.headers[name]!]));
    const query = queryBag(request.query);
    const signerKey = `${principal.accessKeyId}/${service}`;
    let signer = this.signers.get(signerKey);
    if (!signer) {
      signer = new SignatureV4({
        credentials: { accessKeyId: principal.accessKeyId, secretAccessKey: principal.secretAccessKey },
        region: LOCAL_REGION,
        service,
        sha256: Sha256,
      });
      this.signers.set(signerKey, signer);
    }
    const [hostname, port] = request.host.split(':');
    const signed = await signer.sign(
      new HttpRequest({
        method: request.method,
        protocol: 'http:',
        hostname,
        ...(port && { port: Number(port) }),
        path: request.path,
        query,
        headers,
        body: request.body,
      }),
      { signingDate: new Date(signedAt) },
    );
    const expected = /Signature=([0-9a-f]{64})/.exec(String(signed.headers.authorization))?.[1] ?? '';
    return timingSafeEqual(Buffer.from(expected), Buffer.from(signature))
      ? { ok: true, principal }
      : fail('mismatch', SIGNATURE_MISMATCH);
  }
}

const SIGNATURE_MISMATCH =
  'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.';

/** Signs a request with SigV4 for execute-api, as the typed client does (its signer: one implementation). */
export function signRequest(
  url: URL,
  init: { method: string; body?: string; headers?: Record<string, string> },
  credentials: { accessKeyId: string; secretAccessKey: string; sessionToken?: string },
  region = LOCAL_REGION,
): Promise<Record<string, string>> {
  return signWithClient(url, init, credentials, region);
}

/** Every query pair, repeated keys included (a plain object would keep only the last value). */
function queryBag(pairs: Iterable<readonly [string, string]>): Record<string, string[]> {
  const bag: Record<string, string[]> = {};
  for (const [key, value] of pairs) bag[key] = [...(bag[key] ?? []), value];
  return bag;
}
