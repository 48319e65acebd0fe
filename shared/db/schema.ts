import type { ColumnType, Generated, Insertable, Selectable } from 'kysely';

/** Credits and minor currency units: int8 in Postgres, a safe integer in TypeScript (see `client.ts`). */
type Int8 = ColumnType<number, number | undefined, number>;
type CreatedAt = ColumnType<Date, never, never>;
type UpdatedAt = ColumnType<Date, Date | undefined, Date>;
type Json = ColumnType<unknown, string | undefined, string>;

export type AccountStatus = 'active' | 'frozen';
export type PaymentStatus =
  | 'INIT'
  | 'PAID'
  | 'CREDITED'
  | 'PARTIALLY_REFUNDED'
  | 'REFUNDED'
  | 'CHARGEBACK'
  | 'EXPIRED'
  | 'FAILED';
export type EntryKind =
  | 'purchase'
  | 'spend'
  | 'refund_clawback'
  | 'refund_reversal'
  | 'dispute_clawback'
  | 'dispute_reinstatement'
  | 'admin_adjustment'
  | 'grant_expiry'
  | 'coupon_redemption'
  | 'hold_capture'
  | 'usage'
  | 'allowance';
export type AdminActionKind =
  | 'adjust'
  | 'freeze'
  | 'unfreeze'
  | 'anonymize'
  | 'replay_event'
  | 'start_reconciliation'
  | 'request_grant'
  | 'approve_grant'
  | 'reject_grant'
  | 'create_coupon'
  | 'disable_coupon'
  | 'create_prices'
  | 'activate_prices'
  | 'change_plan'
  | 'create_webhook_endpoint'
  | 'delete_webhook_endpoint'
  | 'redeliver_webhook';
export type GrantCategory = 'paid' | 'promotional';
export type GrantSource =
  | 'purchase'
  | 'coupon'
  | 'admin'
  | 'allowance'
  | 'auto_topup'
  | 'reinstatement'
  | 'opening_balance';
export type ApprovalStatus = 'pending' | 'approved' | 'rejected';
export type PriceBookStatus = 'draft' | 'active' | 'retired';
export type PriceItemKind = 'tokens' | 'unit';
export type EventOutcome = 'applied' | 'ignored' | 'parked';
export type RunStatus = 'running' | 'succeeded' | 'partial' | 'failed';

export interface AccountsTable {
  id: Generated<string>;
  external_user_id: string | null;
  stripe_customer_id: string | null;
  balance: Int8;
  version: Int8;
  status: ColumnType<AccountStatus, AccountStatus | undefined, AccountStatus>;
  anonymized_at: Date | null;
  created_at: CreatedAt;
  updated_at: UpdatedAt;
  /** The card saved on the Stripe customer for off-session top-ups, and when Stripe created its PaymentIntent. */
  stripe_payment_method_id: ColumnType<string | null, string | null | undefined, string | null>;
  payment_method_saved_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
}

/** checkout: bought through Stripe Checkout; auto_topup: an off-session PaymentIntent on the saved card. */
export type PaymentKind = 'checkout' | 'auto_topup';

export interface PaymentsTable {
  id: Generated<string>;
  account_id: string;
  package_id: string;
  credits: Int8;
  amount_total: Int8;
  currency: string;
  status: ColumnType<PaymentStatus, PaymentStatus | undefined, PaymentStatus>;
  stripe_checkout_session_id: string | null;
  stripe_payment_intent_id: string | null;
  stripe_charge_id: string | null;
  amount_refunded: Int8;
  disputed: ColumnType<boolean, boolean | undefined, boolean>;
  created_at: CreatedAt;
  updated_at: UpdatedAt;
  kind: ColumnType<PaymentKind, PaymentKind | undefined, PaymentKind>;
  /** Why Stripe refused a FAILED payment: its error code (card_declined, authentication_required...). */
  failure_code: ColumnType<string | null, string | null | undefined, string | null>;
  failure_message: ColumnType<string | null, string | null | undefined, string | null>;
}

export interface LedgerEntriesTable {
  id: ColumnType<number, never, never>;
  account_id: string;
  amount: number;
  balance_after: number;
  kind: EntryKind;
  reference: string;
  payment_id: string | null;
  admin_action_id: string | null;
  stripe_event_id: string | null;
  request_hash: string | null;
  description: string | null;
  metadata: Json | null;
  created_at: CreatedAt;
}

export interface AdminActionsTable {
  id: Generated<string>;
  actor_arn: string;
  action: AdminActionKind;
  account_id: string | null;
  reason: string;
  payload: Json;
  created_at: CreatedAt;
}

export interface ProcessedEventsTable {
  event_id: string;
  event_type: string;
  outcome: EventOutcome;
  reason: string | null;
  payload: Json | null;
  created_at: CreatedAt;
  updated_at: UpdatedAt;
}

export interface StripeChargeFactsTable {
  payment_intent_id: string;
  charge_amount_refunded: Int8;
  refunds: Json;
  disputes: Json;
  updated_at: UpdatedAt;
}

export interface ReconciliationRunsTable {
  id: Generated<string>;
  status: ColumnType<RunStatus, RunStatus | undefined, RunStatus>;
  trigger: 'schedule' | 'admin';
  window_start: Date;
  window_end: Date;
  counts: Json;
  healed: ColumnType<number, number | undefined, number>;
  findings: ColumnType<number, number | undefined, number>;
  error: string | null;
  started_at: CreatedAt;
  finished_at: Date | null;
}

export interface ReconciliationFindingsTable {
  id: ColumnType<number, never, never>;
  run_id: string;
  kind: string;
  stripe_object_id: string | null;
  payment_id: string | null;
  account_id: string | null;
  details: Json;
  created_at: CreatedAt;
}

export interface CreditGrantsTable {
  id: Generated<string>;
  account_id: string;
  category: GrantCategory;
  source: GrantSource;
  amount: Int8;
  remaining: Int8;
  /** null: never expires. */
  expires_at: Date | null;
  payment_id: string | null;
  /** The positive entry that brought the credits in; null for an opening balance. */
  entry_id: number | null;
  reference: string;
  created_at: CreatedAt;
  /** When `grant.expiring` was sent for it (once). */
  expiring_notified_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
  /**
   * `remaining > 0`, generated: the open-grant indexes use it, not `remaining`, so a draw that leaves credits
   * in the grant is a HOT update (no index is rewritten).
   */
  open: ColumnType<boolean, never, never>;
}

export interface GrantAllocationsTable {
  entry_id: number;
  grant_id: string;
  amount: Int8;
}

export interface GrantApprovalsTable {
  id: Generated<string>;
  account_id: string;
  amount: Int8;
  category: GrantCategory;
  expires_at: Date | null;
  description: string | null;
  status: ColumnType<ApprovalStatus, ApprovalStatus | undefined, ApprovalStatus>;
  requested_action_id: string;
  decided_action_id: string | null;
  entry_id: number | null;
  created_at: CreatedAt;
  decided_at: Date | null;
}

export interface CouponsTable {
  code: string;
  credits: Int8;
  grant_expires_in_days: number | null;
  redeem_by: Date | null;
  max_redemptions: number | null;
  plans: string[] | null;
  redemptions: ColumnType<number, number | undefined, number>;
  disabled_at: Date | null;
  created_action_id: string;
  created_at: CreatedAt;
}

export interface CouponRedemptionsTable {
  code: string;
  account_id: string;
  grant_id: string;
  created_at: CreatedAt;
}

export interface CouponFailuresTable {
  id: ColumnType<number, never, never>;
  account_id: string;
  code_tried: string;
  created_at: Date;
}

export interface PriceBooksTable {
  version: string;
  status: ColumnType<PriceBookStatus, PriceBookStatus | undefined, PriceBookStatus>;
  created_action_id: string;
  activated_action_id: string | null;
  created_at: CreatedAt;
  /** null while a draft; [activated_at, retired_at) is when this version was the active one. */
  activated_at: Date | null;
  retired_at: Date | null;
}

/** Rates are numeric(21, 9): pg returns them as decimal strings, exactly (never a binary float). */
type Rate = string | null;

export interface PriceItemsTable {
  version: string;
  sku: string;
  kind: PriceItemKind;
  /** Token SKUs: credits per 1,000,000 tokens of each pool, and per request. */
  input: Rate;
  cache_read: Rate;
  cache_write: Rate;
  output: Rate;
  reasoning: Rate;
  per_request: Rate;
  /** Unit SKUs: credits per unit. */
  unit_credits: Rate;
}

export type HoldStatus = 'active' | 'captured' | 'voided' | 'expired';

export interface HoldsTable {
  id: Generated<string>;
  account_id: string;
  idempotency_key: string;
  request_hash: string;
  sku: string | null;
  price_version: string | null;
  requested_credits: Int8;
  /** Reserved now: what was asked for, unless a clawback below the holds shrank it. */
  credits: Int8;
  status: ColumnType<HoldStatus, HoldStatus | undefined, HoldStatus>;
  description: string | null;
  metadata: Json | null;
  expires_at: Date;
  created_at: CreatedAt;
  settled_at: Date | null;
  capture_hash: string | null;
  captured_credits: Int8 | null;
  shortfall: Int8 | null;
  released: Int8 | null;
  captured_after_expiry: boolean | null;
  entry_id: number | null;
}

export interface UsageEventsTable {
  account_id: string;
  event_id: string;
  payload_hash: string;
  sku: string | null;
  price_version: string | null;
  credits: Int8;
  entry_id: number | null;
  occurred_at: Date;
  created_at: CreatedAt;
}

export interface AccountPlansTable {
  account_id: string;
  /** null: the configured default plan. */
  plan_id: string | null;
  monthly_budget: number | null;
  /** The user's own low-balance threshold; null: the plan's. */
  low_balance_threshold: number | null;
  /** The UTC month (YYYY-MM) whose allowance has been granted. */
  allowance_month: string | null;
  allowance_granted: Int8;
  /** When the latest rate-limited debits were admitted, oldest first. */
  recent_debits: ColumnType<Date[], Date[] | undefined, Date[]>;
  updated_at: UpdatedAt;
}

export interface DebitDaysTable {
  account_id: string;
  /** A UTC day, written and compared as YYYY-MM-DD. */
  day: ColumnType<string, string, string>;
  credits: Int8;
}

export interface UsageRollupsTable {
  account_id: string;
  hour: Date;
  /** '' for raw debits that name no SKU. */
  sku: string;
  credits: Int8;
  events: number;
  input_tokens: Int8;
  cache_read_tokens: Int8;
  cache_write_tokens: Int8;
  output_tokens: Int8;
  reasoning_tokens: Int8;
  units: Int8;
}

/** The whole schema as kysely sees it; the migrations are the source of truth. */
/** An account's auto top-up settings (shared/topup is the only writer). */
export interface AutoTopUpSettingsTable {
  account_id: string;
  enabled: boolean;
  package_id: string;
  threshold_credits: Int8;
  max_per_month: number;
  /** Top-ups that failed in a row since the last one credited; three disable auto top-up. */
  consecutive_declines: ColumnType<number, number | undefined, number>;
  /** Why auto top-up was turned off by the service (not the user); null otherwise. */
  disabled_reason: string | null;
  created_at: CreatedAt;
  updated_at: UpdatedAt;
}

export interface Database {
  accounts: AccountsTable;
  payments: PaymentsTable;
  ledger_entries: LedgerEntriesTable;
  admin_actions: AdminActionsTable;
  processed_events: ProcessedEventsTable;
  stripe_charge_facts: StripeChargeFactsTable;
  reconciliation_runs: ReconciliationRunsTable;
  reconciliation_findings: ReconciliationFindingsTable;
  credit_grants: CreditGrantsTable;
  grant_allocations: GrantAllocationsTable;
  grant_approvals: GrantApprovalsTable;
  coupons: CouponsTable;
  coupon_redemptions: CouponRedemptionsTable;
  coupon_failures: CouponFailuresTable;
  holds: HoldsTable;
  usage_events: UsageEventsTable;
  usage_rollups: UsageRollupsTable;
  account_plans: AccountPlansTable;
  debit_days: DebitDaysTable;
  price_books: PriceBooksTable;
  price_items: PriceItemsTable;
  webhook_endpoints: WebhookEndpointsTable;
  webhook_outbox: WebhookOutboxTable;
  webhook_deliveries: WebhookDeliveriesTable;
  webhook_attempts: WebhookAttemptsTable;
  auto_topup_settings: AutoTopUpSettingsTable;
}

export type Account = Selectable<AccountsTable>;
export type Payment = Selectable<PaymentsTable>;
export type NewPayment = Insertable<PaymentsTable>;
export type LedgerEntry = Selectable<LedgerEntriesTable>;
export type AdminAction = Selectable<AdminActionsTable>;
export type ReconciliationRun = Selectable<ReconciliationRunsTable>;
export type CreditGrant = Selectable<CreditGrantsTable>;
export type GrantApproval = Selectable<GrantApprovalsTable>;
export type Coupon = Selectable<CouponsTable>;
export type PriceBookRow = Selectable<PriceBooksTable>;
export type PriceItemRow = Selectable<PriceItemsTable>;
export type Hold = Selectable<HoldsTable>;

export type WebhookDeliveryStatus = 'pending' | 'delivered' | 'failed' | 'dead';

export interface WebhookEndpointsTable {
  id: string;
  url: string;
  event_types: string[];
  description: string | null;
  /** `kms:` or `local:` and the ciphertext of the signing secret (shared/webhooks/secrets.ts). */
  secret_ciphertext: string;
  created_action_id: string;
  deleted_action_id: string | null;
  created_at: CreatedAt;
  deleted_at: Date | null;
}

export interface WebhookOutboxTable {
  /** `evt_` and 32 hex digits: the event body's `id`. */
  id: string;
  type: string;
  account_id: string | null;
  /** The JSON body every endpoint receives, byte for byte. */
  payload: string;
  created_at: ColumnType<Date, Date | undefined, never>;
  fanned_out_at: Date | null;
}

export interface WebhookDeliveriesTable {
  id: Generated<string>;
  /** The Standard Webhooks `webhook-id`: the same on every attempt. */
  webhook_id: string;
  event_id: string;
  endpoint_id: string;
  type: string;
  status: ColumnType<WebhookDeliveryStatus, WebhookDeliveryStatus | undefined, WebhookDeliveryStatus>;
  attempts: ColumnType<number, number | undefined, number>;
  last_status: number | null;
  last_response: string | null;
  last_attempt_at: Date | null;
  next_attempt_at: Date | null;
  enqueued_at: Date | null;
  lease_until: Date | null;
  created_at: ColumnType<Date, Date | undefined, never>;
}

export interface WebhookAttemptsTable {
  id: Generated<number>;
  delivery_id: string;
  webhook_id: string;
  status: number | null;
  response: string | null;
  attempted_at: Date;
}

export type WebhookEndpoint = Selectable<WebhookEndpointsTable>;
export type WebhookDelivery = Selectable<WebhookDeliveriesTable>;
export type WebhookAttempt = Selectable<WebhookAttemptsTable>;
