import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { DecryptCommand, EncryptCommand, type KMSClient } from '@aws-sdk/client-kms';

/**
 * Encrypts and decrypts endpoint signing secrets. `context` (the endpoint id) is bound to the ciphertext
 * (KMS encryption context, AES-GCM associated data), so a ciphertext copied to another endpoint's row does
 * not decrypt.
 */
export interface SecretCipher {
  encrypt(plaintext: string, context: string): Promise<string>;
  decrypt(ciphertext: string, context: string): Promise<string>;
}

/** A new Standard Webhooks signing secret: `whsec_` and the base64 of 32 random bytes. */
export const generateSigningSecret = (): string => `whsec_${randomBytes(32).toString('base64')}`;

/** AWS: the secret encrypted under a KMS key; the function's role needs kms:Encrypt / kms:Decrypt on it. */
export function kmsSecretCipher(kms: KMSClient, keyId: string): SecretCipher {
  const encryptionContext = (context: string) => ({ purpose: 'webhook-signing-secret', endpointId: context });
  return {
    async encrypt(plaintext, context) {
      const out = await kms.send(
        new EncryptCommand({
          KeyId: keyId,
          Plaintext: Buffer.from(plaintext, 'utf8'),
          EncryptionContext: encryptionContext(context),
        }),
      );
      if (!out.CiphertextBlob) throw new Error('KMS Encrypt returned no ciphertext');
      return `kms:${Buffer.from(out.CiphertextBlob).toString('base64')}`;
    },
    async decrypt(ciphertext, context) {
      if (!ciphertext.startsWith('kms:')) throw new Error('this secret was not encrypted with KMS');
      const out = await kms.send(
        new DecryptCommand({
          KeyId: keyId,
          CiphertextBlob: Buffer.from(ciphertext.slice(4), 'base64'),
          EncryptionContext: encryptionContext(context),
        }),
      );
      if (!out.Plaintext) throw new Error('KMS Decrypt returned no plaintext');
      return Buffer.from(out.Plaintext).toString('utf8');
    },
  };
}

/**
 * The local stack: AES-256-GCM under the 32-byte key in `keyFile` (base64), created on first use with mode
 * 0600. `local:` + base64(iv 12 | tag 16 | ciphertext).
 */
export function localSecretCipher(keyFile: string): SecretCipher {
  const key = loadOrCreateKey(keyFile);
  return {
    async encrypt(plaintext, context) {
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', key, iv);
      cipher.setAAD(Buffer.from(context, 'utf8'));
      const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
      return `local:${Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64')}`;
    },
    async decrypt(ciphertext, context) {
      if (!ciphertext.startsWith('local:'))
        throw new Error('this secret was not encrypted with the local key');
      const raw = Buffer.from(ciphertext.slice(6), 'base64');
      const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12));
      decipher.setAAD(Buffer.from(context, 'utf8'));
      decipher.setAuthTag(raw.subarray(12, 28));
      return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8');
    },
  };
}

function loadOrCreateKey(keyFile: string): Buffer {
  mkdirSync(path.dirname(keyFile), { recursive: true });
  try {
    // 'wx': two processes starting at once cannot both write a key; the loser reads the winner's.
    writeFileSync(keyFile, `${randomBytes(32).toString('base64')}\n`, { flag: 'wx', mode: 0o600 });
  } catch (error: unknown) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  chmodSync(keyFile, 0o600);
  const key = Buffer.from(readFileSync(keyFile, 'utf8').trim(), 'base64');
  if (key.length !== 32) throw new Error(`${keyFile} does not hold a base64 32-byte key`);
  return key;
}

/**
 * `cipher` with decryptions remembered for the life of the process (a warm Lambda): one KMS call per endpoint
 * and ciphertext, not per attempt.
 */
export function cachingDecrypts(cipher: SecretCipher): SecretCipher {
  const plain = new Map<string, string>();
  return {
    encrypt: (plaintext, context) => cipher.encrypt(plaintext, context),
    async decrypt(ciphertext, context) {
      const key = `${context}\u0000${ciphertext}`;
      const known = plain.get(key);
      if (known !== undefined) return known;
      const secret = await cipher.decrypt(ciphertext, context);
      plain.set(key, secret);
      return secret;
    },
  };
}
