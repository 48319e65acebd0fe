import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Hash } from '@smithy/hash-node';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { exportJWK, generateKeyPair, importJWK, type JWK, jwtVerify, SignJWT } from 'jose';

const Sha256 = Hash.bind(null, 'sha256');

export const LOCAL_ISSUER = 'https://local-issuer.credits.invalid';
export const LOCAL_AUDIENCE = 'credits-local';
export const LOCAL_ACCOUNT = '000000000000';
export const LOCAL_REGION = 'us-east-1';

export interface LocalPrincipal {
  readonly name: 'service' | 'admin';
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly arn: string;
}

interface AuthState {
  readonly signingKey: JWK;
  readonly principals: LocalPrincipal[];
}

/**
 * The local stand-ins for API Gateway's authorizers, kept in `<dataDir>/local-auth.json` (created on first
 * use): an ES256 key that issues and verifies user tokens (the JWT authorizer), and two IAM principals,
 * `service` and `admin`, whose SigV4 signatures are verified like the IAM authorizer does.
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
    if (existsSync(file)) return new LocalAuth(JSON.parse(readFileSync(file, 'utf8')));
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    const principal = (name: 'service' | 'admin', arn: string): LocalPrincipal => ({
      name,
      accessKeyId: `AKIALOCAL${randomBytes(6).toString('hex').toUpperCase()}`,
      secretAccessKey: randomBytes(30).toString('base64url'),
      arn,
    });
    const state: AuthState = {
      signingKey: await exportJWK(privateKey),
      principals: [
        principal('service', `arn:aws:iam::${LOCAL_ACCOUNT}:role/credits-local-service`),
        principal('admin', `arn:aws:iam::${LOCAL_ACCOUNT}:user/credits-local-admin`),
      ],
    };
    mkdirSync(dataDir, { recursive: true });
    writeFileSync(file, JSON.stringify(state, null, 2), { mode: 0o600 });
    return new LocalAuth(state);
  }

  principal(name: 'service' | 'admin'): LocalPrincipal {
    return this.state.principals.find((p) => p.name === name)!;
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
   * Verifies an AWS SigV4 signature (service execute-api) over the request as received; returns the
   * principal, or undefined when the signature is missing, unknown, stale (over 5 minutes) or wrong.
   */
  async verifySigV4(request: {
    method: string;
    host: string;
    path: string;
    query: Record<string, string>;
    headers: Record<string, string>;
    body: string;
  }): Promise<LocalPrincipal | undefined> {
    const match =
      /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/.exec(
        request.headers.authorization ?? '',
      );
    if (!match) return undefined;
    const [, accessKeyId, , region, service, signedHeaders, signature] = match as unknown as string[];
    const principal = this.state.principals.find((p) => p.accessKeyId === accessKeyId);
    const amzDate = request.headers['x-amz-date'] ?? '';
    const signedAt = Date.parse(
      amzDate.replace(/^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/, '$1-$2-$3T$4:$5:$6Z'),
    );
    if (
      !principal ||
      service !== 'execute-api' ||
      !Number.isFinite(signedAt) ||
      Math.abs(Date.now() - signedAt) > 5 * 60_000
    ) {
      return undefined;
    }
    const headers = Object.fromEntries(
      signedHeaders!.split(';').map((name) => [name, request.headers[name] ?? '']),
    );
    const signerKey = `${principal.accessKeyId}/${region}`;
    let signer = this.signers.get(signerKey);
    if (!signer) {
      signer = new SignatureV4({
        credentials: { accessKeyId: principal.accessKeyId, secretAccessKey: principal.secretAccessKey },
        region: region!,
        service: 'execute-api',
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
        query: request.query,
        headers,
        body: request.body,
      }),
      { signingDate: new Date(signedAt) },
    );
    const expected = /Signature=([0-9a-f]{64})/.exec(String(signed.headers.authorization))?.[1];
    return expected === signature ? principal : undefined;
  }
}

/** Signs a request with SigV4 for execute-api: what `npm run admin` and service callers do. */
export async function signRequest(
  url: URL,
  init: { method: string; body?: string; headers?: Record<string, string> },
  credentials: { accessKeyId: string; secretAccessKey: string; sessionToken?: string },
  region = LOCAL_REGION,
): Promise<Record<string, string>> {
  const signer = new SignatureV4({ credentials, region, service: 'execute-api', sha256: Sha256 });
  const signed = await signer.sign(
    new HttpRequest({
      method: init.method,
      protocol: url.protocol,
      hostname: url.hostname,
      ...(url.port && { port: Number(url.port) }),
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers: { host: url.host, ...init.headers },
      body: init.body,
    }),
  );
  return signed.headers as Record<string, string>;
}
