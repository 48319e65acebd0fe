import { SendMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';

/** Sends a verified Stripe event, byte for byte as Stripe signed it, to the crediting queue. */
export async function enqueueStripeEvent(
  sqs: SQSClient,
  queueUrl: string,
  event: { id: string; type: string },
  rawBody: string,
): Promise<void> {
  await sqs.send(
    new SendMessageCommand({
      QueueUrl: queueUrl,
      MessageBody: rawBody,
      MessageAttributes: {
        eventId: { DataType: 'String', StringValue: event.id },
        eventType: { DataType: 'String', StringValue: event.type },
      },
    }),
  );
}
