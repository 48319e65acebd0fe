import { SendMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';

/** SQS delays a message at most 15 minutes; a longer wait is kept in the database for the sweeper. */
export const MAX_QUEUE_DELAY_SECONDS = 900;

/** The dispatcher's queue: one message per due attempt of a delivery, `{deliveryId}`. */
export interface DeliveryQueue {
  /** Sends the next attempt of `deliveryId`, visible after `delaySeconds` (0-900). */
  send(deliveryId: string, delaySeconds?: number): Promise<void>;
  /** Parks a delivery whose schedule ran out in the dispatcher's DLQ, for operators and alarms. */
  deadLetter(deliveryId: string, reason: string): Promise<void>;
}

export function sqsDeliveryQueue(
  sqs: SQSClient,
  urls: { queueUrl: string; deadLetterUrl?: string },
): DeliveryQueue {
  return {
    async send(deliveryId, delaySeconds = 0) {
      if (!Number.isInteger(delaySeconds) || delaySeconds < 0 || delaySeconds > MAX_QUEUE_DELAY_SECONDS) {
        throw new RangeError(`delay ${delaySeconds} s is outside SQS's 0-${MAX_QUEUE_DELAY_SECONDS}`);
      }
      await sqs.send(
        new SendMessageCommand({
          QueueUrl: urls.queueUrl,
          MessageBody: JSON.stringify({ deliveryId }),
          ...(delaySeconds > 0 && { DelaySeconds: delaySeconds }),
        }),
      );
    },
    async deadLetter(deliveryId, reason) {
      if (!urls.deadLetterUrl) throw new Error('WEBHOOK_DLQ_URL is not set for this function');
      await sqs.send(
        new SendMessageCommand({
          QueueUrl: urls.deadLetterUrl,
          MessageBody: JSON.stringify({ deliveryId, reason }),
        }),
      );
    },
  };
}
