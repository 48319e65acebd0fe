import { getSecret } from '@aws-lambda-powertools/parameters/secrets';
import * as z from 'zod/mini';

/** The JSON stored in the Stripe secret (Secrets Manager). */
export const stripeSecretSchema = z.strictObject({
  apiKey: z.string().check(z.regex(/^(sk|rk)_(test|live)_\w+$/, 'must be a Stripe secret or restricted key')),
  webhookSecrets: z
    .array(z.string().check(z.regex(/^whsec_\w+$/, 'must be a whsec_ signing secret')))
    .check(z.minLength(1)),
});
export type StripeSecrets = z.infer<typeof stripeSecretSchema>;

/** How long a fetched secret is reused before Secrets Manager is asked again (rotation takes effect). */
const SECRET_MAX_AGE_SECONDS = 300;

/**
 * The webhook signing secrets: from Secrets Manager by name (cached), or for local runs from the
 * comma-separated `localSecrets`.
 */
export async function webhookSigningSecrets(source: {
  secretName?: string;
  localSecrets?: string;
}): Promise<string[]> {
  if (!source.secretName)
    return (source.localSecrets ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
  return (await stripeSecrets(source.secretName)).webhookSecrets;
}

/** The Stripe secret by name, fetched through Powertools parameters (cached, validated). */
export async function stripeSecrets(secretName: string): Promise<StripeSecrets> {
  const value = await getSecret(secretName, { maxAge: SECRET_MAX_AGE_SECONDS, transform: 'json' });
  const parsed = stripeSecretSchema.safeParse(value);
  if (!parsed.success) {
    throw new Error(
      `secret ${secretName} is not {apiKey, webhookSecrets[]}: ${parsed.error.issues[0]?.message}`,
    );
  }
  return parsed.data;
}
