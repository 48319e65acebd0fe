import {
  adjustAccount,
  anonymize,
  freezeAccount,
  getAccount,
  getInvariants,
  listParkedEvents,
  replayParkedEvent,
  unfreezeAccount,
} from './admin.js';
import { createCheckout } from './checkout.js';
import type { Endpoint } from './endpoint.js';
import { getMyCredits, listMyPayments, listMyTransactions } from './me.js';
import { health, listPackages } from './public.js';
import { getRun, listRuns, startRun } from './reconciliation.js';
import { spend } from './spend.js';

/** Every endpoint of the api function (the OpenAPI document lists exactly these). */
export const ENDPOINTS: readonly Endpoint[] = [
  health,
  listPackages,
  getMyCredits,
  listMyTransactions,
  listMyPayments,
  createCheckout,
  spend,
  getAccount,
  adjustAccount,
  freezeAccount,
  unfreezeAccount,
  anonymize,
  listRuns,
  startRun,
  getRun,
  listParkedEvents,
  replayParkedEvent,
  getInvariants,
];
