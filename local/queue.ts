import { createHash, randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import type { LocalAuth, SigV4Failure } from './auth.js';

export interface LocalMessage {
  readonly messageId: string;
  readonly receiptHandle: string;
  readonly body: string;
  readonly attributes: Record<string, { DataType: string; StringValue?: string }>;
  readonly sentAt: number;
  receiveCount: number;
  firstReceivedAt?: number;
  visibleAt: number;
}

export interface LocalQueueOptions {
  /** Seconds a received message stays invisible before it is delivered again. @default 30 */
  readonly visibilityTimeoutSeconds?: number;
  /** Receives before a message moves to the DLQ. @default 5 */
  readonly maxReceiveCount?: number;
  /** How often the poller looks for visible messages. @default 100 */
  readonly pollIntervalMs?: number;
  /** @default 10 */
  readonly batchSize?: number;
  readonly accountId?: string;
  readonly region?: string;
  /** The queue's name; its DLQ is `<name>-dlq`. @default credits-events */
  readonly name?: string;
  /**
   * The local IAM principals whose SigV4 signatures (service `sqs`) the API accepts. Without it every API
   * call is refused: the queue is never reachable unsigned.
   */
  readonly auth?: LocalAuth;
}

/** SQS refuses a request signed more than 15 minutes from its clock (RequestExpired). */
const SIGV4_MAX_SKEW_SECONDS = 15 * 60;

/**
 * How SQS (AWS JSON 1.0, query-compatible) refuses a request it cannot authenticate: the JSON error type
 * in the body, the query-protocol code in `x-amzn-query-error` (the SDK reports that code as the error's
 * name), and the status of AWS's common errors.
 */
const AUTH_ERRORS: Record<SigV4Failure['reason'], { status: number; type: string; code: string }> = {
  missing: { status: 403, type: 'MissingAuthenticationTokenException', code: 'MissingAuthenticationToken' },
  incomplete: { status: 400, type: 'IncompleteSignatureException', code: 'IncompleteSignature' },
  unknown_key: { status: 403, type: 'UnrecognizedClientException', code: 'InvalidClientTokenId' },
  scope: { status: 403, type: 'InvalidSignatureException', code: 'SignatureDoesNotMatch' },
  expired: { status: 400, type: 'InvalidSignatureException', code: 'RequestExpired' },
  mismatch: { status: 403, type: 'InvalidSignatureException', code: 'SignatureDoesNotMatch' },
};

type BatchHandler = (event: SQSEvent) => Promise<SQSBatchResponse | undefined>;

/**
 * An SQS queue and its dead-letter queue in memory, with SQS's semantics: a received message is invisible
 * for the visibility timeout and comes back unless deleted; after `maxReceiveCount` receives it moves to the
 * DLQ. A poller plays Lambda's event source mapping (batches, ReportBatchItemFailures). `handleSqsApi`
 * answers the AWS JSON protocol for the calls the project makes, so the real SDK client works against it.
 */
export class LocalQueue {
  readonly main: LocalMessage[] = [];
  readonly dlq: LocalMessage[] = [];
  readonly mainArn: string;
  readonly dlqArn: string;
  private timer: NodeJS.Timeout | undefined;
  private polling = false;
  private stopped = false;
  private readonly visibilityMs: number;
  private readonly maxReceiveCount: number;
  private readonly name: string;

  constructor(
    private readonly baseUrl: () => string,
    private readonly options: LocalQueueOptions = {},
  ) {
    const region = options.region ?? 'us-east-1';
    const account = options.accountId ?? '000000000000';
    this.name = options.name ?? 'credits-events';
    this.mainArn = `arn:aws:sqs:${region}:${account}:${this.name}`;
    this.dlqArn = `arn:aws:sqs:${region}:${account}:${this.name}-dlq`;
    this.visibilityMs = (options.visibilityTimeoutSeconds ?? 30) * 1000;
    this.maxReceiveCount = options.maxReceiveCount ?? 5;
  }

  get mainUrl(): string {
    return `${this.baseUrl()}/_local/sqs/000000000000/${this.name}`;
  }

  get dlqUrl(): string {
    return `${this.baseUrl()}/_local/sqs/000000000000/${this.name}-dlq`;
  }

  /** True when `urlOrArn` names this queue or its DLQ: how the local SQS endpoint picks the queue asked. */
  owns(urlOrArn: unknown): boolean {
    if (typeof urlOrArn !== 'string') return false;
    if (urlOrArn === this.mainArn || urlOrArn === this.dlqArn) return true;
    return urlOrArn.endsWith(`/${this.name}`) || urlOrArn.endsWith(`/${this.name}-dlq`);
  }

  /** Enqueues `body`, invisible for `delaySeconds` first (SQS's DelaySeconds). */
  send(
    body: string,
    attributes: LocalMessage['attributes'] = {},
    queue = this.main,
    delaySeconds = 0,
  ): LocalMessage {
    const message: LocalMessage = {
      messageId: randomUUID(),
      receiptHandle: randomUUID(),
      body,
      attributes,
      sentAt: Date.now(),
      receiveCount: 0,
      visibleAt: Date.now() + delaySeconds * 1000,
    };
    queue.push(message);
    return message;
  }

  /** Receives up to `max` visible messages, making them invisible; moves over-received ones to the DLQ. */
  receive(max: number, queue = this.main, visibilityMs = this.visibilityMs): LocalMessage[] {
    const now = Date.now();
    const out: LocalMessage[] = [];
    for (const message of [...queue]) {
      if (out.length >= max) break;
      if (message.visibleAt > now) continue;
      if (queue === this.main && message.receiveCount >= this.maxReceiveCount) {
        queue.splice(queue.indexOf(message), 1);
        this.dlq.push({ ...message, receiveCount: 0, visibleAt: now, receiptHandle: randomUUID() });
        continue;
      }
      message.receiveCount++;
      message.firstReceivedAt ??= now;
      message.visibleAt = now + visibilityMs;
      out.push(message);
    }
    return out;
  }

  delete(messageId: string, queue = this.main): void {
    const index = queue.findIndex((m) => m.messageId === messageId);
    if (index >= 0) queue.splice(index, 1);
  }

  /** Moves every DLQ message back to the main queue (SQS's StartMessageMoveTask). */
  redrive(): number {
    const moved = this.dlq.splice(0, this.dlq.length);
    for (const message of moved) this.send(message.body, message.attributes);
    return moved.length;
  }

  /** Feeds visible messages to `handler` in batches, deleting those it did not report as failed. */
  startPolling(handler: BatchHandler): void {
    const tick = async () => {
      if (this.stopped) return;
      if (!this.polling) {
        this.polling = true;
        try {
          for (;;) {
            const batch = this.receive(this.options.batchSize ?? 10);
            if (batch.length === 0) break;
            let failed = new Set(batch.map((m) => m.messageId));
            try {
              const response = await handler(this.toEvent(batch));
              failed = new Set((response?.batchItemFailures ?? []).map((f) => f.itemIdentifier));
            } catch {
              // the whole invocation failed: every message comes back after the visibility timeout
            }
            for (const message of batch) if (!failed.has(message.messageId)) this.delete(message.messageId);
          }
        } finally {
          this.polling = false;
        }
      }
      this.timer = setTimeout(tick, this.options.pollIntervalMs ?? 100);
    };
    this.timer = setTimeout(tick, 0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    while (this.polling) await new Promise((resolve) => setTimeout(resolve, 10));
  }

  private toEvent(batch: LocalMessage[]): SQSEvent {
    return {
      Records: batch.map(
        (m): SQSRecord => ({
          messageId: m.messageId,
          receiptHandle: m.receiptHandle,
          body: m.body,
          attributes: {
            ApproximateReceiveCount: String(m.receiveCount),
            SentTimestamp: String(m.sentAt),
            SenderId: 'local',
            ApproximateFirstReceiveTimestamp: String(m.firstReceivedAt ?? Date.now()),
          },
          messageAttributes: Object.fromEntries(
            Object.entries(m.attributes).map(([k, v]) => [
              k,
              { dataType: v.DataType, stringValue: v.StringValue },
            ]),
          ),
          md5OfBody: md5(m.body),
          eventSource: 'aws:sqs',
          eventSourceARN: this.mainArn,
          awsRegion: this.options.region ?? 'us-east-1',
        }),
      ),
    };
  }

  /** Why this request is not authenticated, or undefined when a local principal signed it (service sqs). */
  private async authenticate(req: IncomingMessage, body: Buffer): Promise<SigV4Failure | undefined> {
    if (!this.options.auth)
      return { ok: false, reason: 'missing', message: 'Request is missing Authentication Token' };
    const url = new URL(req.url ?? '/', 'http://local');
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (value !== undefined) headers[name.toLowerCase()] = Array.isArray(value) ? value.join(',') : value;
    }
    const verified = await this.options.auth.verifySigV4(
      {
        method: req.method ?? 'POST',
        host: headers.host ?? '',
        path: url.pathname,
        query: [...url.searchParams],
        headers,
        body,
      },
      'sqs',
      SIGV4_MAX_SKEW_SECONDS,
    );
    return verified.ok ? undefined : verified;
  }

  private queueOf(url: unknown): LocalMessage[] {
    if (typeof url === 'string' && url.endsWith(`/${this.name}-dlq`)) return this.dlq;
    if (typeof url === 'string' && url.endsWith(`/${this.name}`)) return this.main;
    throw Object.assign(new Error(`The specified queue does not exist: ${String(url)}`), {
      code: 'AWS.SimpleQueueService.NonExistentQueue',
    });
  }

  /**
   * The AWS JSON 1.0 protocol (X-Amz-Target: AmazonSQS.*) for the calls the service and the admin CLI
   * make. Like SQS, it first authenticates the caller: a SigV4 signature (service `sqs`) by a local
   * principal over the request as received; anything else is refused with SQS's error and nothing changes.
   */
  async handleSqsApi(req: IncomingMessage, res: ServerResponse, rawBody: Buffer): Promise<void> {
    const reply = (status: number, payload: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, {
        'content-type': 'application/x-amz-json-1.0',
        'x-amzn-requestid': randomUUID(),
        ...headers,
      });
      res.end(JSON.stringify(payload));
    };
    const refusal = await this.authenticate(req, rawBody);
    if (refusal) {
      const error = AUTH_ERRORS[refusal.reason];
      return reply(
        error.status,
        { __type: `com.amazon.coral.service#${error.type}`, message: refusal.message },
        { 'x-amzn-query-error': `${error.code};Sender` },
      );
    }
    const action = String(req.headers['x-amz-target'] ?? '').replace('AmazonSQS.', '');
    const body = rawBody.toString('utf8');
    try {
      const input = body ? JSON.parse(body) : {};
      switch (action) {
        case 'SendMessage': {
          const message = this.send(
            String(input.MessageBody ?? ''),
            input.MessageAttributes ?? {},
            this.queueOf(input.QueueUrl),
            Number(input.DelaySeconds ?? 0),
          );
          return reply(200, { MessageId: message.messageId, MD5OfMessageBody: md5(message.body) });
        }
        case 'ReceiveMessage': {
          const queue = this.queueOf(input.QueueUrl);
          const visibility =
            input.VisibilityTimeout === undefined
              ? this.visibilityMs
              : Number(input.VisibilityTimeout) * 1000;
          const messages = this.receive(Number(input.MaxNumberOfMessages ?? 1), queue, visibility);
          return reply(200, {
            Messages: messages.map((m) => ({
              MessageId: m.messageId,
              ReceiptHandle: m.receiptHandle,
              Body: m.body,
              MD5OfBody: md5(m.body),
              Attributes: {
                ApproximateReceiveCount: String(m.receiveCount),
                SentTimestamp: String(m.sentAt),
              },
              ...(Object.keys(m.attributes).length > 0 && { MessageAttributes: m.attributes }),
            })),
          });
        }
        case 'DeleteMessage': {
          const queue = this.queueOf(input.QueueUrl);
          const message = queue.find((m) => m.receiptHandle === input.ReceiptHandle);
          if (message) this.delete(message.messageId, queue);
          return reply(200, {});
        }
        case 'GetQueueAttributes': {
          const queue = this.queueOf(input.QueueUrl);
          const now = Date.now();
          return reply(200, {
            Attributes: {
              QueueArn: queue === this.dlq ? this.dlqArn : this.mainArn,
              ApproximateNumberOfMessages: String(queue.filter((m) => m.visibleAt <= now).length),
              ApproximateNumberOfMessagesNotVisible: String(queue.filter((m) => m.visibleAt > now).length),
            },
          });
        }
        case 'StartMessageMoveTask': {
          if (input.SourceArn !== this.dlqArn)
            throw new Error(`redrive source must be the DLQ ${this.dlqArn}`);
          const moved = this.redrive();
          return reply(200, { TaskHandle: `local-${moved}` });
        }
        default:
          return reply(400, {
            __type: 'com.amazonaws.sqs#UnsupportedOperation',
            message: `${action} is not emulated`,
          });
      }
    } catch (error: unknown) {
      const code = (error as { code?: string }).code ?? 'InvalidParameterValue';
      return reply(400, { __type: `com.amazonaws.sqs#${code}`, message: (error as Error).message });
    }
  }
}

const md5 = (text: string) => createHash('md5').update(text).digest('hex');
