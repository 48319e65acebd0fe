import { KMSClient } from '@aws-sdk/client-kms';
import { SQSClient } from '@aws-sdk/client-sqs';
import type { WebhookConfig } from '../config.js';
import { DEFAULT_RETRY_SECONDS } from './outbox.js';
import { type DeliveryQueue, sqsDeliveryQueue } from './queue.js';
import { kmsSecretCipher, type SecretCipher } from './secrets.js';

/** What the api, the sweeper and the dispatcher need of outbound webhooks, built once per cold start. */
export interface WebhookRuntime {
  readonly queue: DeliveryQueue;
  readonly cipher: SecretCipher;
  readonly retrySeconds: readonly number[];
  /** http to loopback hosts is accepted as an endpoint URL: the local stack only, never from the environment. */
  readonly allowLoopbackHttp: boolean;
}

/** AWS: SQS for the queues and KMS for the secrets, with the function's role. */
export function awsWebhookRuntime(config: WebhookConfig): WebhookRuntime {
  const sqs = new SQSClient({});
  const kmsKeyId = config.kmsKeyId;
  const unconfigured = (what: string) => () =>
    Promise.reject(new Error(`${what} is not set for this function`));
  return {
    queue: sqsDeliveryQueue(sqs, {
      queueUrl: config.queueUrl,
      deadLetterUrl: config.deadLetterQueueUrl,
    }),
    cipher: kmsKeyId
      ? kmsSecretCipher(new KMSClient({}), kmsKeyId)
      : { encrypt: unconfigured('WEBHOOK_KMS_KEY_ID'), decrypt: unconfigured('WEBHOOK_KMS_KEY_ID') },
    retrySeconds: config.retrySeconds ?? DEFAULT_RETRY_SECONDS,
    allowLoopbackHttp: false,
  };
}
