use std::{
    fmt::Write,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tally_core::{Principal, Signal, TelemetryBatch, TenantId, Transport, metric_names, metric_names::reason};

use crate::{
    Authenticator, Pipeline, TenantResolver, UsageLedger,
    admission::{Admission, Admissions, Refused},
    auth::AuthError,
    otlp::{
        DecodeLimits,
        signal::{OtlpSignal, Reason, Route},
    },
    otlp_usage::{OtlpMeters, UsageOut},
    pipeline::EnqueueError,
    tenancy::Lookup,
};

/// What a request carries besides its body.
#[derive(Debug, Default, Clone)]
pub struct RequestContext {
    /// Value of the tenant header, if the rule is enabled and it was sent.
    pub header_tenant: Option<String>,
    /// The authenticated caller (`None`: tally runs open). A tenant key pins
    /// every item to its tenant.
    pub principal: Option<Principal>,
}

/// The accepted part of a request; `rejected` items were refused with
/// `message` (OTLP partial success).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub accepted: u64,
    pub rejected: u64,
    pub message: String,
}

/// A request refused as a whole: nothing of it was enqueued. Both are
/// retriable: the sender should try again after `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("tally is overloaded (queue full or too many requests in flight), retry later")]
    Overloaded,
    #[error("tally is shutting down, retry against another replica or later")]
    ShuttingDown,
    #[error("usage derived from this request could not be recorded (database unavailable), retry later")]
    UsageUnavailable,
    #[error("usage derived from this request was refused by the database; the request was not accepted")]
    UsageRefused,
}

impl IngestError {
    /// The `reason` label in `/metrics`.
    pub fn reason(self) -> &'static str {
        match self {
            IngestError::Overloaded => reason::OVERLOADED,
            IngestError::ShuttingDown => reason::SHUTTING_DOWN,
            IngestError::UsageUnavailable => reason::USAGE_UNAVAILABLE,
            IngestError::UsageRefused => reason::MALFORMED,
        }
    }

    /// OTLP/HTTP status: 429 and 503 are the codes clients retry.
    pub fn http_status(self) -> http::StatusCode {
        match self {
            IngestError::Overloaded => http::StatusCode::TOO_MANY_REQUESTS,
            IngestError::ShuttingDown | IngestError::UsageUnavailable => http::StatusCode::SERVICE_UNAVAILABLE,
            IngestError::UsageRefused => http::StatusCode::BAD_REQUEST,
        }
    }

    /// OTLP/gRPC status: overloaded is RESOURCE_EXHAUSTED with a RetryInfo
    /// of `retry_after` (clients retry that code only with one); the rest
    /// UNAVAILABLE, which every OTLP client retries.
    pub fn grpc_status(self, retry_after: Duration) -> tonic::Status {
        match self {
            IngestError::Overloaded => crate::otlp::rpc_status::resource_exhausted(self.to_string(), retry_after),
            IngestError::ShuttingDown | IngestError::UsageUnavailable => tonic::Status::unavailable(self.to_string()),
            IngestError::UsageRefused => tonic::Status::invalid_argument(self.to_string()),
        }
    }
}

/// The transport-independent part of receiving OTLP: admission, tenant
/// resolution, item checks, partial success, enqueueing.
#[derive(Debug, Clone)]
pub struct Ingest {
    resolver: TenantResolver,
    pipeline: Pipeline,
    admissions: Arc<Admissions>,
    /// What push-back answers tell clients to wait (`otlp.retry_after_secs`).
    retry_after: Duration,
    /// `None`: no authentication (embedding, tests).
    auth: Option<Authenticator>,
    /// Span meters and the ledger their usage goes to, if any are declared.
    otlp_usage: Option<(OtlpMeters, UsageLedger)>,
    /// Tenants already logged as sending sampled metered spans (bounded).
    sampled_logged: Arc<std::sync::Mutex<std::collections::HashSet<TenantId>>>,
    /// What one request may decode into.
    decode_limits: DecodeLimits,
}

/// Counts of refused items per reason, for the partial-success message.
#[derive(Default)]
struct Refusals(Vec<(Reason, u64)>);

impl Refusals {
    fn add(&mut self, reason: Reason, n: u64) {
        if n == 0 {
            return;
        }
        match self.0.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, c)) => *c += n,
            None => self.0.push((reason, n)),
        }
    }

    fn total(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }
}

impl Ingest {
    /// `max_concurrent_requests` requests are handled at once, half of them
    /// at most from one caller (see [`Ingest::with_caller_share`]); more wait
    /// up to `admission_timeout`.
    pub fn new(
        resolver: TenantResolver,
        pipeline: Pipeline,
        max_concurrent_requests: usize,
        admission_timeout: Duration,
    ) -> Ingest {
        let share = max_concurrent_requests.div_ceil(2);
        Ingest {
            resolver,
            pipeline,
            admissions: Arc::new(Admissions::new(max_concurrent_requests, share, admission_timeout)),
            retry_after: Duration::from_secs(1),
            auth: None,
            otlp_usage: None,
            sampled_logged: Arc::default(),
            decode_limits: DecodeLimits::NONE,
        }
    }

    /// Bounds what one request may decode into (items, bytes).
    pub fn with_decode_limits(mut self, limits: DecodeLimits) -> Ingest {
        self.decode_limits = limits;
        self
    }

    pub fn decode_limits(&self) -> DecodeLimits {
        self.decode_limits
    }

    /// The wait push-back answers ask of clients (gRPC RetryInfo; HTTP
    /// sends its own Retry-After).
    pub fn with_retry_after(mut self, retry_after: Duration) -> Ingest {
        self.retry_after = retry_after;
        self
    }

    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// Derives usage from spans for `meters` (if any), written to `ledger`
    /// before requests are acknowledged.
    pub fn with_otlp_usage(mut self, meters: OtlpMeters, ledger: UsageLedger) -> Ingest {
        self.otlp_usage = (!meters.is_empty()).then_some((meters, ledger));
        self
    }

    /// Logs once per tenant (up to 10,000 tenants) that sampled spans were not billed.
    fn note_sampled(&self, tenant: &TenantId, n: u64) {
        let mut seen = self.sampled_logged.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() < 10_000 && seen.insert(tenant.clone()) {
            tracing::warn!(%tenant, spans = n, "spans of traces sampled below 100% carry metered attributes; not billed (set scale_sampled on the meter to bill them scaled)");
        }
    }

    /// Requires API keys per `auth` (unless it runs open).
    pub fn with_auth(mut self, auth: Authenticator) -> Ingest {
        self.auth = Some(auth);
        self
    }

    /// The caller behind an `Authorization` value.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Option<Principal>, AuthError> {
        match &self.auth {
            Some(auth) => auth.authenticate(authorization).await,
            None => Ok(None),
        }
    }

    /// At most `per_caller` of `max_concurrent_requests` from one caller.
    pub fn with_caller_share(mut self, max_concurrent_requests: usize, per_caller: usize, wait: Duration) -> Ingest {
        self.admissions = Arc::new(Admissions::new(max_concurrent_requests, per_caller, wait));
        self
    }

    /// Admits one request of an authenticated `caller` ([`caller_key`])
    /// before its body is read; the slots are held until it is answered.
    pub async fn admit(&self, caller: &str) -> Result<Admission, IngestError> {
        self.admissions.admit(caller).await.map_err(|r| match r {
            Refused::Busy => IngestError::Overloaded,
            Refused::Closed => IngestError::ShuttingDown,
        })
    }

    pub fn resolver(&self) -> &TenantResolver {
        &self.resolver
    }

    /// Splits `req` by tenant, refuses what has no valid tenant or invalid
    /// ids, and enqueues the rest as one unit. On `Err` nothing was enqueued.
    /// `wire_bytes` is the request's decompressed size, its share of the
    /// queue's memory budget.
    pub async fn export<S: OtlpSignal>(
        &self,
        req: S::Request,
        wire_bytes: usize,
        ctx: &RequestContext,
        transport: Transport,
    ) -> Result<Accepted, IngestError> {
        let mut groups: Vec<(TenantId, Vec<S::Resource>, u64)> = Vec::new();
        let mut refused = Refusals::default();
        for res in S::into_resources(req) {
            self.route_resource::<S>(res, ctx, &mut groups, &mut refused);
        }

        let accepted: u64 = groups.iter().map(|(_, _, n)| n).sum();
        // Billing first: usage derived from this request is committed to the
        // ledger before the request is acknowledged (a resend is deduplicated
        // by the records' deterministic ids).
        if let Some((meters, ledger)) = &self.otlp_usage {
            let mut usage = UsageOut::default();
            for (tenant, resources, _) in &groups {
                let mut sampled = 0;
                for res in resources {
                    sampled += S::extract_usage(meters, tenant, res, &mut usage);
                }
                if sampled > 0 {
                    self.note_sampled(tenant, sampled);
                }
            }
            if !usage.is_empty()
                && let Err(e) = ledger.record_with_streams(usage.records, usage.cumulative).await
            {
                tracing::warn!(error = %e, "usage from telemetry not recorded; refusing the request");
                let err = match e {
                    crate::LedgerError::Refused(_) => IngestError::UsageRefused,
                    _ => IngestError::UsageUnavailable,
                };
                count_refused(S::SIGNAL, err.reason(), accepted);
                return Err(err);
            }
        }
        if !groups.is_empty() {
            let received_at = SystemTime::now();
            let batches = groups
                .into_iter()
                .map(|(tenant, resources, items)| TelemetryBatch {
                    tenant,
                    received_at,
                    items,
                    payload: S::payload(resources),
                })
                .collect();
            if let Err(e) = self.pipeline.send(batches, wire_bytes).await {
                let err = match e {
                    EnqueueError::Full => IngestError::Overloaded,
                    EnqueueError::Closed => IngestError::ShuttingDown,
                };
                count_refused(S::SIGNAL, err.reason(), accepted);
                for (why, n) in &refused.0 {
                    count_refused(S::SIGNAL, why, *n);
                }
                return Err(err);
            }
        }

        metrics::counter!(metric_names::RECEIVED_ITEMS, "signal" => S::SIGNAL.as_str(), "transport" => transport.as_str())
            .increment(accepted);
        for (why, n) in &refused.0 {
            count_refused(S::SIGNAL, why, *n);
        }
        Ok(Accepted { accepted, rejected: refused.total(), message: self.message::<S>(&refused) })
    }

    fn route_resource<S: OtlpSignal>(
        &self,
        res: S::Resource,
        ctx: &RequestContext,
        groups: &mut Vec<(TenantId, Vec<S::Resource>, u64)>,
        refused: &mut Refusals,
    ) {
        let pinned = ctx.principal.as_ref().and_then(Principal::pinned_tenant);
        let lookup =
            match (self.resolver.resource_tenant(S::resource_attributes(&res), ctx.header_tenant.as_deref()), pinned) {
                // A tenant key: data naming no tenant is its tenant's; data
                // naming another tenant is refused.
                (Lookup::NotFound, Some(p)) => Lookup::Found(p.clone()),
                (Lookup::Found(t), Some(p)) if t != *p => {
                    refused.add(reason::TENANT_MISMATCH, S::count_items(&res));
                    return;
                }
                (lookup, _) => lookup,
            };
        let resource_tenant = match lookup {
            Lookup::Found(t) => Some(t),
            Lookup::Invalid(_) => {
                refused.add(reason::INVALID_TENANT, S::count_items(&res));
                return;
            }
            Lookup::NotFound => None,
        };
        // Fast path: one tenant for the whole resource and nothing to refuse.
        let whole = resource_tenant
            .clone()
            .or_else(|| (!self.resolver.resolves_items()).then(|| self.resolver.default_tenant().cloned()).flatten());
        if let Some(tenant) = whole
            && S::all_items_valid(&res)
        {
            let n = S::count_items(&res);
            add_to_group(groups, tenant, res, n);
            return;
        }
        if resource_tenant.is_none() && !self.resolver.resolves_items() && self.resolver.default_tenant().is_none() {
            refused.add(reason::MISSING_TENANT, S::count_items(&res));
            return;
        }
        // Slow path: look at each item (invalid ids, or tenants per item).
        let mut route = |attrs: Option<&[_]>| -> Route<TenantId> {
            let attrs = attrs.ok_or(crate::otlp::signal::INVALID_ID)?;
            if let Some(t) = &resource_tenant {
                return Ok(t.clone());
            }
            match self.resolver.item_tenant(attrs) {
                Lookup::Found(t) => Ok(t),
                Lookup::Invalid(_) => Err(reason::INVALID_TENANT),
                Lookup::NotFound => self.resolver.default_tenant().cloned().ok_or(reason::MISSING_TENANT),
            }
        };
        for (route, part, n) in S::partition(res, &mut route) {
            match route {
                Ok(tenant) => add_to_group(groups, tenant, part, n),
                Err(why) => refused.add(why, n),
            }
        }
    }

    fn message<S: OtlpSignal>(&self, refused: &Refusals) -> String {
        let mut msg = String::new();
        for (why, n) in &refused.0 {
            if !msg.is_empty() {
                msg.push_str("; ");
            }
            let _ = write!(msg, "{n} {} refused: ", S::NOUN);
            let _ = match *why {
                reason::MISSING_TENANT => write!(msg, "no tenant ({})", self.tenant_hint()),
                reason::INVALID_TENANT => write!(msg, "invalid tenant (1-128 ASCII letters, digits or . _ - : @)"),
                reason::TENANT_MISMATCH => write!(msg, "they name another tenant than the API key's"),
                crate::otlp::signal::INVALID_ID => {
                    write!(msg, "invalid trace_id/span_id (need 16/8 non-zero bytes)")
                }
                other => write!(msg, "{other}"),
            };
        }
        msg
    }

    fn tenant_hint(&self) -> String {
        let mut hint = format!("set resource attribute {}", self.resolver.resource_attribute_names().join(" or "));
        if let Some(h) = self.resolver.header_name() {
            let _ = write!(hint, " or header {h}");
        }
        hint
    }
}

fn add_to_group<R>(groups: &mut Vec<(TenantId, Vec<R>, u64)>, tenant: TenantId, res: R, n: u64) {
    match groups.iter_mut().find(|(t, _, _)| *t == tenant) {
        Some((_, rs, c)) => {
            rs.push(res);
            *c += n;
        }
        None => groups.push((tenant, vec![res], n)),
    }
}

pub(crate) fn count_refused(signal: Signal, why: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!(metric_names::REFUSED_ITEMS, "signal" => signal.as_str(), "reason" => why).increment(n);
    }
}
