/**
 * Every CloudWatch metric the functions emit, and the namespace they emit them in: the one catalog the
 * functions and the alarms and dashboard in infra/ share, so a renamed metric cannot leave an alarm watching
 * nothing. Data only (no imports): the infrastructure reads it without pulling in runtime code.
 */
export const METRICS_NAMESPACE = 'Credits';

export const METRICS = {
  // webhook-intake
  webhookReceived: 'WebhookReceived',
  webhookRejected: 'WebhookRejected',
  webhookIgnored: 'WebhookIgnored',
  webhookEnqueued: 'WebhookEnqueued',
  webhookEnqueueFailed: 'WebhookEnqueueFailed',
  // credit-worker
  eventReceived: 'EventReceived',
  eventApplied: 'EventApplied',
  eventDuplicate: 'EventDuplicate',
  eventIgnored: 'EventIgnored',
  eventParked: 'EventParked',
  eventRetried: 'EventRetried',
  creditsGranted: 'CreditsGranted',
  creditsClawedBack: 'CreditsClawedBack',
  // api
  apiSuccess: 'ApiSuccess',
  apiClientError: 'ApiClientError',
  apiServerError: 'ApiServerError',
  // reconcile
  reconciliationHealed: 'ReconciliationHealed',
  reconciliationFindings: 'ReconciliationFindings',
  reconciliationSucceeded: 'ReconciliationSucceeded',
  reconciliationFailed: 'ReconciliationFailed',
  // sweeper
  grantsExpired: 'GrantsExpired',
  allowancesGranted: 'AllowancesGranted',
  holdsExpired: 'HoldsExpired',
  webhookOutboxSent: 'WebhookOutboxSent',
  // webhook-dispatcher
  webhookDelivered: 'WebhookDelivered',
  webhookAttemptFailed: 'WebhookAttemptFailed',
  webhookDead: 'WebhookDead',
} as const;

export type MetricName = (typeof METRICS)[keyof typeof METRICS];

/**
 * The function that emits each metric, as its POWERTOOLS_SERVICE_NAME: Powertools publishes every metric with
 * that `service` dimension, so an alarm must name it to find the metric.
 */
export const METRIC_SERVICE = {
  WebhookReceived: 'webhook-intake',
  WebhookRejected: 'webhook-intake',
  WebhookIgnored: 'webhook-intake',
  WebhookEnqueued: 'webhook-intake',
  WebhookEnqueueFailed: 'webhook-intake',
  EventReceived: 'credit-worker',
  EventApplied: 'credit-worker',
  EventDuplicate: 'credit-worker',
  EventIgnored: 'credit-worker',
  EventParked: 'credit-worker',
  EventRetried: 'credit-worker',
  CreditsGranted: 'credit-worker',
  CreditsClawedBack: 'credit-worker',
  ApiSuccess: 'api',
  ApiClientError: 'api',
  ApiServerError: 'api',
  ReconciliationHealed: 'reconcile',
  ReconciliationFindings: 'reconcile',
  ReconciliationSucceeded: 'reconcile',
  ReconciliationFailed: 'reconcile',
  GrantsExpired: 'sweeper',
  AllowancesGranted: 'sweeper',
  HoldsExpired: 'sweeper',
  WebhookOutboxSent: 'sweeper',
  WebhookDelivered: 'webhook-dispatcher',
  WebhookAttemptFailed: 'webhook-dispatcher',
  WebhookDead: 'webhook-dispatcher',
} as const satisfies Record<
  MetricName,
  'webhook-intake' | 'credit-worker' | 'api' | 'reconcile' | 'sweeper' | 'webhook-dispatcher'
>;
