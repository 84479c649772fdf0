//! Names of tally's own Prometheus metrics, in one place so dashboards, docs
//! and code cannot drift. Labels never include tenants (there can be
//! thousands).

/// Items received and accepted. Labels: `signal`, `transport`.
pub const RECEIVED_ITEMS: &str = "tally_received_items_total";
/// Request bytes received, after decompression. Labels: `signal`, `transport`.
pub const RECEIVED_BYTES: &str = "tally_received_bytes_total";
/// Items refused (partial success or whole request). Labels: `signal`, `reason`.
pub const REFUSED_ITEMS: &str = "tally_refused_items_total";
/// Requests refused before their items could be counted (malformed,
/// oversize, unsupported media type, overload). Labels: `signal`, `transport`, `reason`.
pub const REFUSED_REQUESTS: &str = "tally_refused_requests_total";
/// Export request handling time in seconds. Labels: `signal`, `transport`.
pub const REQUEST_DURATION: &str = "tally_request_duration_seconds";
/// Requests waiting in the pipeline queue.
pub const QUEUE_DEPTH: &str = "tally_pipeline_queue_depth";
/// Capacity of the pipeline queue, in requests.
pub const QUEUE_CAPACITY: &str = "tally_pipeline_queue_capacity";
/// Request bytes (decompressed wire size) held in the pipeline queue.
pub const QUEUE_BYTES: &str = "tally_pipeline_queue_bytes";
/// Budget of request bytes the pipeline queue may hold.
pub const QUEUE_BYTES_CAPACITY: &str = "tally_pipeline_queue_bytes_capacity";
/// Items counted by the downstream stage. Labels: `signal`.
pub const PROCESSED_ITEMS: &str = "tally_processed_items_total";
/// Storage flushes that failed and will be retried.
pub const FLUSH_ERRORS: &str = "tally_flush_errors_total";

/// Telemetry items left out of the rollups. Labels: `signal`, `reason`
/// (`too_old`: before the window retention; `too_new`: beyond `max_future`).
pub const ROLLUP_REFUSED: &str = "tally_rollup_refused_items_total";
/// Items folded into an overflow series by a cardinality limit. Labels:
/// `kind` (span, log, gauge, histogram), `limit` (tenant, metric).
pub const ROLLUP_OVERFLOW: &str = "tally_rollup_overflow_items_total";
/// Series held in open windows.
pub const ROLLUP_OPEN_SERIES: &str = "tally_rollup_open_series";
/// Window rows written (merged) to the database.
pub const ROLLUP_ROWS_WRITTEN: &str = "tally_rollup_rows_written_total";
/// Time to write one flush of window rows.
pub const ROLLUP_FLUSH_DURATION: &str = "tally_rollup_flush_seconds";
/// Partial flushes of the open windows not started because the previous one
/// was still being written (the database is slower than the interval).
pub const ROLLUP_PARTIAL_SKIPPED: &str = "tally_rollup_partial_flushes_skipped_total";
/// 1 while the rollup stage takes no requests because closed windows wait
/// for the database (it is a window behind), else 0.
pub const ROLLUP_BACKPRESSURE: &str = "tally_rollup_backpressure";
/// Window rows dropped because the database stayed unreachable.
pub const ROLLUP_DROPPED_ROWS: &str = "tally_rollup_dropped_rows_total";
/// Rows moved to a coarser resolution or expired. Labels: `table`.
pub const ROLLUP_DOWNSAMPLED_ROWS: &str = "tally_rollup_downsampled_rows_total";

/// Usage events by outcome. Labels: `status` (`accepted`, `duplicate`,
/// `conflict`, `rejected`).
pub const USAGE_EVENTS: &str = "tally_usage_events_total";
/// Telemetry that would have produced usage but did not. Labels: `reason`
/// (`sampled`: the trace was sampled below 100 %; `out_of_range`: the value
/// was negative, not finite or above the meter's `max_value`).
pub const USAGE_SKIPPED: &str = "tally_usage_skipped_total";
/// Time to commit one group of usage records.
pub const LEDGER_COMMIT_DURATION: &str = "tally_ledger_commit_seconds";
/// Usage records per ledger transaction (group commit size).
pub const LEDGER_COMMIT_RECORDS: &str = "tally_ledger_commit_records";
/// Ledger transactions that failed (the requests were answered 503).
pub const LEDGER_ERRORS: &str = "tally_ledger_errors_total";

/// Values of the `reason` label.
pub mod reason {
    pub const MISSING_TENANT: &str = "missing_tenant";
    pub const INVALID_TENANT: &str = "invalid_tenant";
    pub const TENANT_MISMATCH: &str = "tenant_mismatch";
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    pub const MALFORMED: &str = "malformed";
    pub const EMPTY: &str = "empty";
    pub const TOO_LARGE: &str = "too_large";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    pub const UNSUPPORTED_ENCODING: &str = "unsupported_encoding";
    pub const OVERLOADED: &str = "overloaded";
    pub const SHUTTING_DOWN: &str = "shutting_down";
    pub const TIMEOUT: &str = "timeout";
    pub const USAGE_UNAVAILABLE: &str = "usage_unavailable";
    pub const TOO_OLD: &str = "too_old";
    pub const TOO_NEW: &str = "too_new";
}

/// Alert instances by state (`pending`, `firing`, `resolved`), after each
/// evaluation round. Labels: `state`.
pub const ALERTS: &str = "tally_alerts";
/// Evaluation rounds run by this replica, and their duration in seconds.
pub const ALERT_EVAL_DURATION: &str = "tally_alert_eval_seconds";
/// Rules whose evaluation failed (e.g. the database was unreachable). Labels: `rule`.
pub const ALERT_EVAL_ERRORS: &str = "tally_alert_eval_errors_total";
/// Notifications by outcome: `delivered`, `retry` (an attempt failed and
/// will be retried), `failed` (given up). Labels: `receiver`, `outcome`.
pub const ALERT_NOTIFICATIONS: &str = "tally_alert_notifications_total";
/// Notifications waiting in the outbox (all receivers).
pub const ALERT_NOTIFICATIONS_PENDING: &str = "tally_alert_notifications_pending";
/// Seconds from a notification's state change to its delivery. Labels: `receiver`.
pub const ALERT_DELIVERY_SECONDS: &str = "tally_alert_delivery_seconds";

/// Rows written to lake files. Labels: `signal` (`spans`, `logs`, `metrics`, `usage`).
pub const LAKE_ROWS: &str = "tally_lake_rows_total";
/// Lake files completed into the spool, and their bytes. Labels: `signal`.
pub const LAKE_FILES_WRITTEN: &str = "tally_lake_files_written_total";
pub const LAKE_BYTES_WRITTEN: &str = "tally_lake_bytes_written_total";
/// Bytes in the spool: complete files waiting for upload plus open files.
pub const LAKE_SPOOL_BYTES: &str = "tally_lake_spool_bytes";
/// Lake files open for writing.
pub const LAKE_OPEN_FILES: &str = "tally_lake_open_files";
/// Approximate bytes of rows waiting to be encoded into open files.
pub const LAKE_BUFFERED_BYTES: &str = "tally_lake_buffered_bytes";
/// 1 while the spool is full and ingestion is pushed back, else 0.
pub const LAKE_BACKPRESSURE: &str = "tally_lake_backpressure";
/// Local failures writing lake files (disk full, permissions).
pub const LAKE_ERRORS: &str = "tally_lake_errors_total";
/// Files and bytes uploaded to the object store.
pub const LAKE_FILES_UPLOADED: &str = "tally_lake_files_uploaded_total";
pub const LAKE_BYTES_UPLOADED: &str = "tally_lake_bytes_uploaded_total";
/// Failed upload attempts (retried with backoff).
pub const LAKE_UPLOAD_ERRORS: &str = "tally_lake_upload_errors_total";

/// Items a shedding branch of the pipeline (a forwarder) missed because it
/// was full. Labels: `branch`.
pub const PIPELINE_SHED_ITEMS: &str = "tally_pipeline_shed_items_total";

/// Connections open, per listener. Labels: `listener` (`otlp_grpc`,
/// `otlp_http`, `api`, or `all` in one-port mode).
pub const CONNECTIONS: &str = "tally_connections";
/// Connections closed at once because the listener was at
/// `server.max_connections`. Labels: `listener`.
pub const CONNECTIONS_REFUSED: &str = "tally_connections_refused_total";
/// Connections closed after `server.idle_timeout` without traffic. Labels: `listener`.
pub const CONNECTIONS_IDLE_CLOSED: &str = "tally_connections_idle_closed_total";

/// Stripe push attempts by outcome: `sent`, `duplicate` (a resend Stripe
/// already had: delivered), `retry`, `failed` (refused, not retried),
/// `halted` (the key was refused), `expired` (too old for Stripe),
/// `unconfirmed` (no answer within 23 h: left to reconciliation).
pub const STRIPE_PUSHES: &str = "tally_stripe_pushes_total";
/// Pushes in the sync ledger by state (`pending`, `sent`, `failed`, `expired`).
pub const STRIPE_PUSH_ROWS: &str = "tally_stripe_push_rows";
/// From a push being planned to Stripe confirming it, in seconds.
pub const STRIPE_PUSH_DELAY_SECONDS: &str = "tally_stripe_push_delay_seconds";
/// Pushes planned (written to the sync ledger before sending).
pub const STRIPE_PLANNED: &str = "tally_stripe_planned_pushes_total";
/// 1 while this replica leads the Stripe sync.
pub const STRIPE_LEADER: &str = "tally_stripe_leader";
/// 1 while the sync is halted because Stripe refuses the API key.
pub const STRIPE_HALTED: &str = "tally_stripe_halted";
/// Reconciliation lines (tenant × meter × period) whose drift was confirmed
/// by a second read of Stripe, and the sum of their |drift| in Stripe units.
pub const STRIPE_DRIFT_LINES: &str = "tally_stripe_drift_lines";
pub const STRIPE_DRIFT_UNITS: &str = "tally_stripe_drift_units";

/// Stripe webhook events by outcome: `applied`, `duplicate` (a redelivery:
/// nothing changed), `stale` (older than the state held), `ignored` (a type
/// tally does not act on), `refused` (see the next), `error` (not stored:
/// answered 503, Stripe redelivers).
pub const STRIPE_WEBHOOKS: &str = "tally_stripe_webhooks_total";
/// Webhook requests refused (400, or 503 without a secret). Labels:
/// `reason` (`missing_signature`, `malformed_signature`,
/// `outside_tolerance`, `bad_signature`, `malformed_event`, `not_configured`).
pub const STRIPE_WEBHOOKS_REFUSED: &str = "tally_stripe_webhooks_refused_total";
/// Entitlement checks answered, by `reason` (`ok`, `limit_reached`,
/// `credits_exhausted`, `subscription_inactive`, `unknown_tenant`).
pub const ENTITLEMENT_CHECKS: &str = "tally_entitlement_checks_total";
/// Billing notices queued for the receivers, by `event` (`limit_warning`,
/// `limit_reached`, `credits_exhausted`, `subscription_status`,
/// `payment_failed`, `payment_action_required`).
pub const BILLING_NOTICES: &str = "tally_billing_notices_total";

/// Application Insights track calls by HTTP `status` (`200`, `206`, `429`, …).
pub const APPINSIGHTS_REQUESTS: &str = "tally_appinsights_requests_total";
/// Items accepted by Application Insights.
pub const APPINSIGHTS_ACCEPTED: &str = "tally_appinsights_accepted_items_total";
/// Items sent again (a per-item 408/429/5xx, or the whole batch failed).
pub const APPINSIGHTS_RETRIED: &str = "tally_appinsights_retried_items_total";
/// Items given up. Labels: `reason` (`buffer_full`, `daily_cap`, `too_old`,
/// `refused`: a per-item or batch 4xx other than 408/429, `shutdown`,
/// `sampled`: left out by `sample_percent`).
pub const APPINSIGHTS_DROPPED: &str = "tally_appinsights_dropped_items_total";
/// Items waiting in the exporter's buffer.
pub const APPINSIGHTS_BUFFERED: &str = "tally_appinsights_buffered_items";
/// Bytes in the exporter's disk spool (items memory could not hold).
pub const APPINSIGHTS_SPOOL_BYTES: &str = "tally_appinsights_spool_bytes";
/// 1 while the daily cap stops sending (until the next UTC day).
pub const APPINSIGHTS_DAILY_CAP: &str = "tally_appinsights_daily_cap";

/// PostgreSQL sign-in tokens (`database_auth = "azure"`) by `outcome`
/// (`renewed`, `failed`): a failure keeps the last token, which works until
/// it expires — alert on failures well before the hour is up.
pub const DATABASE_TOKEN_RENEWALS: &str = "tally_database_token_renewals_total";
