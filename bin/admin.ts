import { parseArgs } from 'node:util';
import {
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SQSClient,
  StartMessageMoveTaskCommand,
} from '@aws-sdk/client-sqs';
import { defaultProvider } from '@aws-sdk/credential-provider-node';
import { LOCAL_REGION, LocalAuth, signRequest } from '../local/auth.js';

const USAGE = `usage: npm run admin -- <command> [args] [--endpoint URL] [--region R] [--dlq-url URL]

  account <userId>                       balance, recent entries, payments, admin actions
  adjust <userId> <amount> --reason R    grant (positive) or remove (negative) credits
  freeze <userId> --reason R             refuse spend and checkout
  unfreeze <userId> --reason R
  anonymize <userId> --reason R          GDPR erasure (idempotent)
  reconcile [--window-hours N] [--no-wait]   start a reconciliation run (and wait for it)
  runs [runId]                           reconciliation runs, or one with its findings
  parked                                 events that could not be applied
  replay <eventId> --reason R            apply a parked event again
  invariants                             the ledger invariant report
  dlq [redrive]                          dead-letter queue: count and peek, or move everything back

--endpoint defaults to the local stack (http://127.0.0.1:3000, signed with its local admin credentials);
for a deployed stage pass its API URL: requests are SigV4-signed with the default AWS credential chain.`;

export interface AdminIo {
  out(text: string): void;
  err(text: string): void;
}

class UsageError extends Error {}

/** Runs one admin command; returns the process exit code. */
export async function runAdmin(
  argv: string[],
  io: AdminIo,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      endpoint: { type: 'string', default: env.CREDITS_ENDPOINT ?? 'http://127.0.0.1:3000' },
      region: { type: 'string', default: env.AWS_REGION ?? LOCAL_REGION },
      reason: { type: 'string' },
      'window-hours': { type: 'string' },
      'no-wait': { type: 'boolean', default: false },
      'dlq-url': { type: 'string', default: env.CREDITS_DLQ_URL },
      help: { type: 'boolean', default: false },
    },
  });
  const [command, ...args] = positionals;
  if (values.help || !command) {
    io.out(USAGE);
    return command ? 0 : 2;
  }
  const endpoint = new URL(values.endpoint!);
  const local = ['127.0.0.1', 'localhost', '[::1]'].includes(endpoint.hostname);
  const credentials = local
    ? (await LocalAuth.load(env.DATA_DIR ?? '.data')).principal('admin')
    : await defaultProvider()();
  const region = local ? LOCAL_REGION : values.region!;

  async function call(method: 'GET' | 'POST', path: string, body?: unknown): Promise<unknown> {
    const url = new URL(path, endpoint);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers = await signRequest(
      url,
      { method, body: payload, headers: payload ? { 'content-type': 'application/json' } : {} },
      credentials,
      region,
    );
    const response = await fetch(url, { method, headers, body: payload });
    const text = await response.text();
    const parsed = text ? JSON.parse(text) : {};
    if (!response.ok) throw Object.assign(new Error(`HTTP ${response.status}`), { body: parsed });
    return parsed;
  }
  const need = (value: string | undefined, what: string) => {
    if (!value) throw new UsageError(`${command}: ${what} is required`);
    return value;
  };
  const user = (value: string | undefined) => encodeURIComponent(need(value, '<userId>'));
  const reason = () => need(values.reason, '--reason');
  const print = (value: unknown) => io.out(JSON.stringify(value, null, 2));

  try {
    switch (command) {
      case 'account':
        print(await call('GET', `/v1/admin/accounts/${user(args[0])}`));
        break;
      case 'adjust': {
        const amount = Number(need(args[1], '<amount>'));
        if (!Number.isSafeInteger(amount) || amount === 0)
          throw new UsageError('adjust: <amount> must be a non-zero integer');
        print(
          await call('POST', `/v1/admin/accounts/${user(args[0])}/adjustments`, { amount, reason: reason() }),
        );
        break;
      }
      case 'freeze':
      case 'unfreeze':
      case 'anonymize':
        print(await call('POST', `/v1/admin/accounts/${user(args[0])}/${command}`, { reason: reason() }));
        break;
      case 'reconcile': {
        const windowHours = values['window-hours'] ? Number(values['window-hours']) : undefined;
        let run = (await call(
          'POST',
          '/v1/admin/reconciliation/runs',
          windowHours ? { windowHours } : {},
        )) as { id: string; status: string };
        while (!values['no-wait'] && run.status === 'running') {
          await new Promise((resolve) => setTimeout(resolve, 500));
          run = (await call('GET', `/v1/admin/reconciliation/runs/${run.id}`)) as typeof run;
        }
        print(run);
        break;
      }
      case 'runs':
        print(
          await call(
            'GET',
            args[0]
              ? `/v1/admin/reconciliation/runs/${encodeURIComponent(args[0])}`
              : '/v1/admin/reconciliation/runs',
          ),
        );
        break;
      case 'parked':
        print(await call('GET', '/v1/admin/parked-events'));
        break;
      case 'replay':
        print(
          await call(
            'POST',
            `/v1/admin/parked-events/${encodeURIComponent(need(args[0], '<eventId>'))}/replay`,
            { reason: reason() },
          ),
        );
        break;
      case 'invariants':
        print(await call('GET', '/v1/admin/invariants'));
        break;
      case 'dlq': {
        const info = local
          ? ((await (await fetch(new URL('/_local/info', endpoint))).json()) as { dlqUrl: string })
          : undefined;
        const queueUrl = need(
          values['dlq-url'] ?? info?.dlqUrl,
          '--dlq-url (the stack output DeadLetterQueueUrl)',
        );
        const sqs = new SQSClient({ region, credentials, ...(local && { endpoint: endpoint.origin }) });
        const attributes = await sqs.send(
          new GetQueueAttributesCommand({
            QueueUrl: queueUrl,
            AttributeNames: ['QueueArn', 'ApproximateNumberOfMessages'],
          }),
        );
        if (args[0] === 'redrive') {
          const task = await sqs.send(
            new StartMessageMoveTaskCommand({ SourceArn: attributes.Attributes!.QueueArn! }),
          );
          print({
            redrive: 'started',
            taskHandle: task.TaskHandle,
            messages: Number(attributes.Attributes!.ApproximateNumberOfMessages),
          });
        } else {
          // A peek: received with a zero visibility timeout, so the messages stay available.
          const peek = await sqs.send(
            new ReceiveMessageCommand({
              QueueUrl: queueUrl,
              MaxNumberOfMessages: 10,
              VisibilityTimeout: 0,
              MessageAttributeNames: ['All'],
            }),
          );
          print({
            messages: Number(attributes.Attributes!.ApproximateNumberOfMessages),
            sample: (peek.Messages ?? []).map((m) => ({
              messageId: m.MessageId,
              eventId: m.MessageAttributes?.eventId?.StringValue ?? null,
              eventType: m.MessageAttributes?.eventType?.StringValue ?? null,
              body: m.Body?.slice(0, 300),
            })),
          });
        }
        break;
      }
      default:
        throw new UsageError(`unknown command ${command}`);
    }
    return 0;
  } catch (error: unknown) {
    if (error instanceof UsageError) {
      io.err(`${error.message}\n\n${USAGE}`);
      return 2;
    }
    io.err(
      JSON.stringify((error as { body?: unknown }).body ?? { error: (error as Error).message }, null, 2),
    );
    return 1;
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.exitCode = await runAdmin(process.argv.slice(2), {
    out: (t) => console.log(t),
    err: (t) => console.error(t),
  });
}
