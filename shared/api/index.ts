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
import { getAnalytics } from './analytics.js';
import { approveGrant, listGrantApprovals, rejectGrant } from './approvals.js';
import { getMyAutoTopUp, putMyAutoTopUp } from './auto-topup.js';
import { createCheckout } from './checkout.js';
import { createAdminCoupon, disableAdminCoupon, listAdminCoupons } from './coupons.js';
import type { Endpoint } from './endpoint.js';
import { listMyGrants, redeemMyCoupon } from './grants.js';
import { captureHoldEndpoint, createHoldEndpoint, getHold, voidHoldEndpoint } from './holds.js';
import { getMyCredits, listMyPayments, listMyTransactions } from './me.js';
import { changeAccountPlan, getMyAlerts, getMyLimits, putMyAlerts, putMyLimits } from './plans.js';
import {
  activateAdminPrices,
  createAdminPrices,
  getAdminPrices,
  getPrices,
  listAdminPrices,
} from './prices.js';
import { health, listPackages } from './public.js';
import { createQuote } from './quotes.js';
import { getRun, listRuns, startRun } from './reconciliation.js';
import { spend } from './spend.js';
import { getAccountUsage, getMyUsage, recordUsage } from './usage.js';
import {
  createWebhookEndpoint,
  deleteWebhookEndpoint,
  listWebhookDeliveries,
  listWebhookEndpoints,
  redeliverWebhook,
} from './webhooks.js';

/** Every endpoint of the api function (the OpenAPI document lists exactly these). */
export const ENDPOINTS: readonly Endpoint[] = [
  health,
  listPackages,
  getPrices,
  getMyCredits,
  listMyTransactions,
  listMyPayments,
  listMyGrants,
  getMyUsage,
  getMyLimits,
  putMyLimits,
  getMyAlerts,
  putMyAlerts,
  getMyAutoTopUp,
  putMyAutoTopUp,
  redeemMyCoupon,
  createCheckout,
  spend,
  createHoldEndpoint,
  getHold,
  captureHoldEndpoint,
  voidHoldEndpoint,
  recordUsage,
  getAccountUsage,
  getAnalytics,
  createQuote,
  getAccount,
  adjustAccount,
  freezeAccount,
  unfreezeAccount,
  anonymize,
  changeAccountPlan,
  listGrantApprovals,
  approveGrant,
  rejectGrant,
  listAdminCoupons,
  createAdminCoupon,
  disableAdminCoupon,
  listAdminPrices,
  getAdminPrices,
  createAdminPrices,
  activateAdminPrices,
  listRuns,
  startRun,
  getRun,
  listParkedEvents,
  replayParkedEvent,
  getInvariants,
  listWebhookEndpoints,
  createWebhookEndpoint,
  deleteWebhookEndpoint,
  listWebhookDeliveries,
  redeliverWebhook,
];
