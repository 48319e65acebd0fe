/** Every event type an endpoint may subscribe to (DESIGN, "Outbound webhooks and auto top-up"). */
export const WEBHOOK_EVENT_TYPES = [
  'credits.granted',
  'balance.low',
  'balance.depleted',
  'grant.expiring',
  'spend_cap.reached',
  'payment.refunded',
  'payment.disputed',
  'auto_topup.succeeded',
  'auto_topup.failed',
  'auto_topup.requires_action',
] as const;

export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

export const isWebhookEventType = (value: string): value is WebhookEventType =>
  (WEBHOOK_EVENT_TYPES as readonly string[]).includes(value);

/** What every endpoint receives: the JSON body of each delivery. */
export interface WebhookEvent<T extends WebhookEventType = WebhookEventType> {
  readonly id: string;
  readonly type: T;
  readonly createdAt: string;
  readonly data: WebhookEventData;
}

/** An event's data: whose it is (the external user id; null once anonymised) and what the type says. */
export type WebhookEventData = { readonly userId: string | null } & Readonly<Record<string, unknown>>;
