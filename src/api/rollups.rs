//! Rollup queries (tenant-scoped like usage queries), all over `[from, to)`
//! in steps:
//!
//! - `GET /v1/slo`: request rate, error rate and p50/p90/p95/p99 latency per
//!   step, for a tenant and optionally one service and operation;
//! - `GET /v1/slo/top`: the tenant's operations ranked by p95, error rate or
//!   requests;
//! - `GET /v1/gauges`: a gauge's last/min/max/avg per step and attribute set
//!   (queue depth);
//! - `GET /v1/histograms`: an OTLP histogram metric's count, sum and
//!   percentiles per step and attribute set;
//! - `GET /v1/logs/counts`: log records per step by severity.
//!
//! Percentiles always come from the histograms merged over the step (or the
//! whole range), never from averaging stored percentiles.

use std::collections::BTreeMap;

use axum::{Json, Router, extract::State, routing::get};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tally_core::{
    TenantId,
    rollup::{ALL, HISTOGRAM_SCALE, RollupKind, RollupRow, RollupValues},
};
use tally_store::{RollupFilter, Store};

use super::{ApiError, Query, ReadTenant, parse_time, rfc3339};

/// Most steps one query may ask for.
const MAX_STEPS: i64 = 11_000;

/// The query API's view of the rollups: the store, and from when on rows
/// are hourly or daily (so a step never splits a stored row).
#[derive(Clone)]
pub struct RollupState {
    pub store: Store,
    /// `rollups.window_retention`: older data is in hour rows.
    pub hourly_after_ms: i64,
    /// `rollups.hour_retention`: older data is in day rows.
    pub daily_after_ms: i64,
}

pub fn router(state: RollupState) -> Router {
    Router::new()
        .route("/v1/slo", get(slo))
        .route("/v1/slo/top", get(top))
        .route("/v1/gauges", get(gauges))
        .route("/v1/histograms", get(histograms))
        .route("/v1/logs/counts", get(log_counts))
        .with_state(state)
}

#[derive(Deserialize)]
struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
    step: Option<String>,
    service: Option<String>,
    operation: Option<String>,
    name: Option<String>,
    by: Option<String>,
    limit: Option<usize>,
}

/// A query's checked tenant and range: `to` defaults to now, `from` to an
/// hour before `to`, `step` to 60 s.
struct Range {
    tenant: TenantId,
    from_ms: i64,
    to_ms: i64,
    step_ms: i64,
}

impl Range {
    /// `stepped`: the answer has a point per step, so the number of steps
    /// is bounded; without steps (a ranking over the range) any range goes.
    fn parse(tenant: TenantId, q: &RangeQuery, st: &RollupState, stepped: bool) -> Result<Range, ApiError> {
        for (field, v) in [("service", &q.service), ("operation", &q.operation), ("name", &q.name)] {
            if let Some(v) = v {
                crate::api::check_text(field, v)?;
            }
        }
        let to_ms = match &q.to {
            Some(t) => parse_time("to", t)?,
            None => tally_core::now_ms(),
        };
        let from_ms = match &q.from {
            Some(t) => parse_time("from", t)?,
            None => to_ms - 3_600_000,
        };
        if from_ms >= to_ms {
            return Err(ApiError::bad_request("from: must be before to"));
        }
        let step_ms = match &q.step {
            Some(s) => humantime::parse_duration(s)
                .map_err(|_| ApiError::bad_request(format!("step: {s:?} is not a duration like 60s, 5m or 1h")))?
                .as_millis() as i64,
            None => 60_000,
        };
        if step_ms < 1000 {
            return Err(ApiError::bad_request("step: must be at least 1s"));
        }
        // Older data is stored per hour or day: a finer step would put each
        // hour's total in one step and nothing in the others.
        let now = tally_core::now_ms();
        let step_ms = if from_ms < now - st.daily_after_ms {
            step_ms.max(86_400_000)
        } else if from_ms < now - st.hourly_after_ms {
            step_ms.max(3_600_000)
        } else {
            step_ms
        };
        if stepped && (to_ms - from_ms) / step_ms > MAX_STEPS {
            return Err(ApiError::bad_request(format!("step: the range holds more than {MAX_STEPS} steps")));
        }
        Ok(Range { tenant, from_ms, to_ms, step_ms })
    }

    fn bucket(&self, start_ms: i64) -> i64 {
        self.from_ms + (start_ms - self.from_ms).div_euclid(self.step_ms) * self.step_ms
    }

    async fn read(
        &self,
        store: &Store,
        kind: RollupKind,
        service: Option<&str>,
        name: Option<&str>,
        detail: Option<&str>,
    ) -> Result<Vec<RollupRow>, ApiError> {
        let f = RollupFilter {
            tenant: &self.tenant,
            kind,
            service,
            name,
            detail,
            from_ms: self.from_ms,
            to_ms: self.to_ms,
        };
        store.read_rollups(&f).await.map_err(ApiError::internal)
    }

    /// Rows merged per (step, group), in step order then group order.
    fn merge_by<G: Ord>(
        &self,
        rows: Vec<RollupRow>,
        group: impl Fn(&RollupRow) -> G,
    ) -> BTreeMap<(i64, G), RollupValues> {
        let mut groups: BTreeMap<(i64, G), Vec<RollupValues>> = BTreeMap::new();
        for row in rows {
            groups.entry((self.bucket(row.start_ms), group(&row))).or_default().push(row.values);
        }
        groups
            .into_iter()
            .map(|(k, mut vs)| (k, if vs.len() == 1 { vs.remove(0) } else { RollupValues::merged(&vs) }))
            .collect()
    }

    fn header(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("tenant".into(), self.tenant.as_str().into());
        m.insert("from".into(), rfc3339(self.from_ms).into());
        m.insert("to".into(), rfc3339(self.to_ms).into());
        m.insert("step_seconds".into(), (self.step_ms / 1000).into());
        m
    }
}

/// p50…p99 of `v`'s histogram, stored values divided by `scale`, as `p50{unit}`…
fn percentiles(v: &RollupValues, scale: f64, out: &mut Map<String, Value>, unit: &str) {
    for (label, q) in [("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)] {
        let p = v.hist.as_ref().and_then(|h| h.value_at_quantile(q)).map(|x| x as f64 / scale);
        out.insert(format!("{label}{unit}"), json!(p));
    }
}

/// Requests, errors, rates and latency of merged span rows.
fn slo_point(v: &RollupValues, seconds: f64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("requests".into(), v.count.into());
    m.insert("errors".into(), v.errors.into());
    let error_rate = if v.count > 0 { v.errors as f64 / v.count as f64 } else { 0.0 };
    m.insert("error_rate".into(), json!(error_rate));
    m.insert("rate_per_s".into(), json!(v.count as f64 / seconds));
    let avg = (v.count > 0).then(|| v.sum / v.count as f64 / 1000.0);
    m.insert("avg_ms".into(), json!(avg));
    m.insert("max_ms".into(), json!(v.max_opt().map(|x| x / 1000.0)));
    percentiles(v, 1000.0, &mut m, "_ms");
    m
}

async fn slo(
    State(st): State<RollupState>,
    ReadTenant(tenant): ReadTenant,
    Query(q): Query<RangeQuery>,
) -> Result<Json<Value>, ApiError> {
    let r = Range::parse(tenant, &q, &st, true)?;
    // A tenant's or service's SLO reads its pre-aggregated entry-span series;
    // an operation's, that operation's series of every span kind.
    let rows = match q.operation.as_deref() {
        None => {
            r.read(&st.store, RollupKind::Span, Some(q.service.as_deref().unwrap_or(ALL)), Some(ALL), Some(ALL)).await?
        }
        Some(op) => {
            let mut rows = r.read(&st.store, RollupKind::Span, q.service.as_deref(), Some(op), None).await?;
            rows.retain(|row| &*row.key.detail != ALL);
            rows
        }
    };
    let total = RollupValues::merged(rows.iter().map(|r| &r.values));
    let step_s = r.step_ms as f64 / 1000.0;
    let series: Vec<Value> = r
        .merge_by(rows, |_| ())
        .into_iter()
        .map(|((start, ()), v)| {
            let mut m = slo_point(&v, step_s);
            m.insert("start".into(), rfc3339(start).into());
            Value::Object(m)
        })
        .collect();
    let mut out = r.header();
    out.insert("service".into(), json!(q.service));
    out.insert("operation".into(), json!(q.operation));
    out.insert("total".into(), Value::Object(slo_point(&total, (r.to_ms - r.from_ms) as f64 / 1000.0)));
    out.insert("series".into(), Value::Array(series));
    Ok(Json(Value::Object(out)))
}

/// `by` = `p95` (default), `p99`, `error_rate` or `requests`; `limit` (10).
async fn top(
    State(st): State<RollupState>,
    ReadTenant(tenant): ReadTenant,
    Query(q): Query<RangeQuery>,
) -> Result<Json<Value>, ApiError> {
    let r = Range::parse(tenant, &q, &st, false)?;
    let by = q.by.as_deref().unwrap_or("p95");
    let rank: fn(&RollupValues) -> f64 = match by {
        "p95" => |v| v.hist.as_ref().and_then(|h| h.value_at_quantile(0.95)).unwrap_or(0) as f64,
        "p99" => |v| v.hist.as_ref().and_then(|h| h.value_at_quantile(0.99)).unwrap_or(0) as f64,
        "error_rate" => |v| if v.count > 0 { v.errors as f64 / v.count as f64 } else { 0.0 },
        "requests" => |v| v.count as f64,
        other => {
            return Err(ApiError::bad_request(format!("by: {other:?} is not one of p95, p99, error_rate, requests")));
        }
    };
    let mut rows = r.read(&st.store, RollupKind::Span, q.service.as_deref(), None, None).await?;
    rows.retain(|row| &*row.key.detail != ALL);
    let mut ops: BTreeMap<(Box<str>, Box<str>, Box<str>), Vec<RollupValues>> = BTreeMap::new();
    for row in rows {
        let k = row.key;
        ops.entry((k.service, k.name, k.detail)).or_default().push(row.values);
    }
    let mut ranked: Vec<_> = ops.into_iter().map(|(k, vs)| (k, RollupValues::merged(&vs))).collect();
    ranked.sort_by(|a, b| rank(&b.1).total_cmp(&rank(&a.1)));
    let seconds = (r.to_ms - r.from_ms) as f64 / 1000.0;
    let operations: Vec<Value> = ranked
        .into_iter()
        .take(q.limit.unwrap_or(10).clamp(1, 1000))
        .map(|((service, operation, kind), v)| {
            let mut m = slo_point(&v, seconds);
            m.insert("service".into(), service.as_ref().into());
            m.insert("operation".into(), operation.as_ref().into());
            m.insert("kind".into(), kind.as_ref().into());
            Value::Object(m)
        })
        .collect();
    let mut out = r.header();
    out.insert("by".into(), by.into());
    out.insert("operations".into(), Value::Array(operations));
    Ok(Json(Value::Object(out)))
}

fn name_param(q: &RangeQuery) -> Result<&str, ApiError> {
    q.name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("name: the metric name is required"))
}

/// Series of metric rows per step, service and attribute set, each point
/// built by `point` from the merged values.
async fn metric_series(
    st: &RollupState,
    q: &RangeQuery,
    tenant: TenantId,
    kind: RollupKind,
    point: fn(&RollupValues) -> Map<String, Value>,
) -> Result<Json<Value>, ApiError> {
    let r = Range::parse(tenant, q, st, true)?;
    let name = name_param(q)?;
    let rows = r.read(&st.store, kind, q.service.as_deref(), Some(name), None).await?;
    let series: Vec<Value> = r
        .merge_by(rows, |row| (row.key.service.clone(), row.key.detail.clone()))
        .into_iter()
        .map(|((start, (service, detail)), v)| {
            let mut m = point(&v);
            m.insert("start".into(), rfc3339(start).into());
            m.insert("service".into(), service.as_ref().into());
            m.insert("attributes".into(), serde_json::from_str(&detail).unwrap_or(Value::Null));
            Value::Object(m)
        })
        .collect();
    let mut out = r.header();
    out.insert("name".into(), name.into());
    out.insert("series".into(), Value::Array(series));
    Ok(Json(Value::Object(out)))
}

async fn gauges(
    State(st): State<RollupState>,
    ReadTenant(tenant): ReadTenant,
    Query(q): Query<RangeQuery>,
) -> Result<Json<Value>, ApiError> {
    metric_series(&st, &q, tenant, RollupKind::Gauge, |v| {
        let mut m = Map::new();
        m.insert("last".into(), json!(v.last_opt()));
        m.insert("min".into(), json!(v.min_opt()));
        m.insert("max".into(), json!(v.max_opt()));
        m.insert("avg".into(), json!((v.count > 0).then(|| v.sum / v.count as f64)));
        m.insert("points".into(), v.count.into());
        m
    })
    .await
}

async fn histograms(
    State(st): State<RollupState>,
    ReadTenant(tenant): ReadTenant,
    Query(q): Query<RangeQuery>,
) -> Result<Json<Value>, ApiError> {
    metric_series(&st, &q, tenant, RollupKind::Histogram, |v| {
        let mut m = Map::new();
        m.insert("count".into(), v.count.into());
        m.insert("sum".into(), json!(v.sum));
        m.insert("min".into(), json!(v.min_opt()));
        m.insert("max".into(), json!(v.max_opt()));
        percentiles(v, HISTOGRAM_SCALE, &mut m, "");
        m
    })
    .await
}

async fn log_counts(
    State(st): State<RollupState>,
    ReadTenant(tenant): ReadTenant,
    Query(q): Query<RangeQuery>,
) -> Result<Json<Value>, ApiError> {
    let r = Range::parse(tenant, &q, &st, true)?;
    let rows = r.read(&st.store, RollupKind::Log, q.service.as_deref(), None, None).await?;
    let mut total: BTreeMap<Box<str>, u64> = BTreeMap::new();
    let mut steps: BTreeMap<i64, BTreeMap<Box<str>, u64>> = BTreeMap::new();
    for row in rows {
        *total.entry(row.key.name.clone()).or_default() += row.values.count;
        *steps.entry(r.bucket(row.start_ms)).or_default().entry(row.key.name).or_default() += row.values.count;
    }
    let series: Vec<Value> = steps
        .into_iter()
        .map(|(start, counts)| {
            json!({ "start": rfc3339(start), "total": counts.values().sum::<u64>(), "counts": counts })
        })
        .collect();
    let mut out = r.header();
    out.insert("service".into(), json!(q.service));
    out.insert("total".into(), json!({ "total": total.values().sum::<u64>(), "counts": total }));
    out.insert("series".into(), Value::Array(series));
    Ok(Json(Value::Object(out)))
}
