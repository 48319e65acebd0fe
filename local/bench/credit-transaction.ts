import { createCreditWorker } from '../../functions/credit-worker.js';
import { DEFAULT_PACKAGES } from '../../shared/packages.js';
import { type CapturedTransaction, captureTransaction, connect, type Item } from './captured-transaction.js';
import { lambdaContext, sqsEvent } from './events.js';

/** One payment awaiting credit and the checkout.session.completed event that credits it. */
export interface WorkItem {
  readonly accountId: string;
  readonly paymentId: string;
  readonly sessionId: string;
  readonly intentId: string;
  readonly eventId: string;
  readonly body: string;
}

/** The ids of a work item a replayed statement may carry (the event body is the worker's input only). */
export const replayItem = ({ body: _, ...ids }: WorkItem): Item => ids;

/**
 * Captures the worker's transaction for a credited purchase: the real worker (one instance, one
 * connection) credits `first`, then `second` (a second purchase of the same account, so its balance
 * differs), with its query log on; its rows are those of the transaction that claimed the event. Throws
 * unless the second payment ended CREDITED.
 */
export async function captureCreditTransaction(
  databaseUrl: string,
  first: WorkItem,
  second: WorkItem,
): Promise<CapturedTransaction> {
  const bodies = new Map([first, second].map((w) => [w.eventId, w.body]));
  const transaction = await captureTransaction(
    databaseUrl,
    [replayItem(first), replayItem(second)],
    async (db, item) => {
      const worker = createCreditWorker({ db, packages: DEFAULT_PACKAGES });
      const response = await worker(sqsEvent([bodies.get(item.eventId!)!]), lambdaContext('credit-worker'));
      if (response.batchItemFailures.length > 0) throw new Error('the worker failed the capture event');
    },
    { sql: 'select xmin::text as xid from processed_events where event_id = $1', field: 'eventId' },
  );
  const client = await connect(databaseUrl);
  try {
    const { rows } = await client.query<{ status: string }>('select status from payments where id = $1', [
      second.paymentId,
    ]);
    if (rows[0]?.status !== 'CREDITED')
      throw new Error(`the capture purchase ended ${rows[0]?.status ?? 'missing'}, not CREDITED`);
    return transaction;
  } finally {
    await client.end();
  }
}
