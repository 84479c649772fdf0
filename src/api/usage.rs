//! Usage queries: `GET /v1/usage` (a meter over a range, by window and
//! group) and `GET /v1/usage/summary` (every meter over a billing period).
//! Answers come from the hourly rollup; only `unique_count` reads the ledger.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

use axum::{Json, Router, extract::State, routing::get};
use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use tally_core::{Aggregation, MeterConfig, TenantId};
use tally_store::{HourlyUsage, Store};

use super::{ApiError, Query, ReadTenant, parse_time as time, rfc3339};

#[derive(Clone)]
pub struct UsageState {
    pub store: Store,
    pub meters: Arc<Vec<MeterConfig>>,
}

pub fn router(state: UsageState) -> Router {
    Router::new().route("/v1/usage", get(usage)).route("/v1/usage/summary", get(summary)).with_state(state)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Window {
    Hour,
    Day,
    /// ISO weeks: Monday 00:00 UTC.
    Week,
    Month,
}

impl Window {
    fn bucket(self, hour_ms: i64) -> i64 {
        let t = Utc.timestamp_millis_opt(hour_ms).single().unwrap_or_default();
        let start = match self {
            Window::Hour => return hour_ms,
            Window::Day => t.date_naive(),
            Window::Week => {
                let day = t.date_naive();
                day - chrono::Days::new(u64::from(day.weekday().num_days_from_monday()))
            }
            Window::Month => NaiveDate::from_ymd_opt(t.year(), t.month(), 1).unwrap_or_default(),
        };
        start.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc().timestamp_millis()
    }
}

#[derive(Deserialize)]
struct UsageQuery {
    meter: String,
    from: String,
    to: String,
    window: Option<Window>,
    group_by: Option<String>,
}

fn meter<'a>(meters: &'a [MeterConfig], name: &str) -> Result<&'a MeterConfig, ApiError> {
    meters
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| ApiError::bad_request(format!("meter: no meter named {name:?}")))
}

/// Running aggregate of hourly rows (or distinct keys) into one value.
#[derive(Default)]
struct Acc {
    sum: f64,
    count: i64,
    min: Option<f64>,
    max: Option<f64>,
    last: Option<(i64, f64)>,
    distinct: HashSet<String>,
}

impl Acc {
    fn add(&mut self, h: &HourlyUsage) {
        self.sum += h.sum;
        self.count += h.count;
        self.min = Some(self.min.map_or(h.min, |m| m.min(h.min)));
        self.max = Some(self.max.map_or(h.max, |m| m.max(h.max)));
        if self.last.is_none_or(|(t, _)| h.last_time_ms >= t) {
            self.last = Some((h.last_time_ms, h.last_value));
        }
    }

    fn value(&self, aggregation: Aggregation) -> f64 {
        match aggregation {
            Aggregation::Sum => self.sum,
            Aggregation::Count => self.count as f64,
            Aggregation::Min => self.min.unwrap_or(0.0),
            Aggregation::Max => self.max.unwrap_or(0.0),
            Aggregation::Avg if self.count > 0 => self.sum / self.count as f64,
            Aggregation::Avg => 0.0,
            Aggregation::Last => self.last.map_or(0.0, |(_, v)| v),
            Aggregation::UniqueCount => self.distinct.len() as f64,
        }
    }
}

/// The `group` object of a series point: the chosen dimension, or none.
fn group_of(group_key: &str, group_by: Option<&str>) -> BTreeMap<String, Value> {
    let Some(dim) = group_by else { return BTreeMap::new() };
    let all: BTreeMap<String, Value> = serde_json::from_str(group_key).unwrap_or_default();
    BTreeMap::from([(dim.to_owned(), all.get(dim).cloned().unwrap_or(Value::Null))])
}

/// Aggregates a meter over `[from, to)` per window bucket and group, and in total.
async fn aggregate(
    store: &Store,
    tenant: &TenantId,
    meter: &MeterConfig,
    from_ms: i64,
    to_ms: i64,
    window: Window,
    group_by: Option<&str>,
) -> Result<(Acc, BTreeMap<(i64, String), Acc>), ApiError> {
    let mut total = Acc::default();
    let mut series: BTreeMap<(i64, String), Acc> = BTreeMap::new();
    let key = |hour_ms: i64, group_key: &str| {
        (window.bucket(hour_ms), serde_json::to_string(&group_of(group_key, group_by)).unwrap_or_default())
    };
    if meter.aggregation == Aggregation::UniqueCount {
        for (hour_ms, group_key, distinct) in
            store.usage_distinct(tenant, &meter.name, from_ms, to_ms).await.map_err(ApiError::internal)?
        {
            series.entry(key(hour_ms, &group_key)).or_default().distinct.insert(distinct.clone());
            total.distinct.insert(distinct);
        }
    } else {
        // Hourly rows whose hour starts in range; ranges are meant to be whole hours.
        let from_hour = tally_core::hour_start(from_ms + tally_core::HOUR_MS - 1);
        for h in store.usage_hourly(tenant, &meter.name, from_hour, to_ms).await.map_err(ApiError::internal)? {
            series.entry(key(h.hour_ms, &h.group_key)).or_default().add(&h);
            total.add(&h);
        }
    }
    Ok((total, series))
}

async fn usage(
    State(st): State<UsageState>,
    ReadTenant(tenant): ReadTenant,
    Query(q): Query<UsageQuery>,
) -> Result<Json<Value>, ApiError> {
    let meter = meter(&st.meters, &q.meter)?;
    let (from_ms, to_ms) = (time("from", &q.from)?, time("to", &q.to)?);
    if from_ms >= to_ms {
        return Err(ApiError::bad_request("from: must be before to"));
    }
    let window = q.window.unwrap_or(Window::Hour);
    let (total, series) = aggregate(&st.store, &tenant, meter, from_ms, to_ms, window, q.group_by.as_deref()).await?;
    let series: Vec<Value> = series
        .iter()
        .map(|((start, group), acc)| {
            json!({
                "start": rfc3339(*start),
                "value": acc.value(meter.aggregation),
                "group": serde_json::from_str::<Value>(group).unwrap_or(Value::Null),
            })
        })
        .collect();
    Ok(Json(json!({
        "tenant": tenant.as_str(), "meter": meter.name, "unit": meter.unit,
        "aggregation": meter.aggregation.as_str(), "window": window,
        "from": rfc3339(from_ms), "to": rfc3339(to_ms),
        "total": total.value(meter.aggregation), "series": series,
    })))
}

#[derive(Deserialize)]
struct SummaryQuery {
    /// `YYYY-MM`, UTC calendar month; default the current month.
    period: Option<String>,
}

async fn summary(
    State(st): State<UsageState>,
    ReadTenant(tenant): ReadTenant,
    Query(q): Query<SummaryQuery>,
) -> Result<Json<Value>, ApiError> {
    let start = match q.period.as_deref() {
        Some(p) => crate::api::parse_period(p)?,
        None => {
            let now_ms = tally_core::now_ms();
            let now = Utc.timestamp_millis_opt(now_ms).single().unwrap_or_default();
            NaiveDate::from_ymd_opt(now.year(), now.month(), 1).unwrap_or_default()
        }
    };
    let end = start.checked_add_months(chrono::Months::new(1)).unwrap_or(start);
    let ms = |d: NaiveDate| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc().timestamp_millis();
    let (from_ms, to_ms) = (ms(start), ms(end));
    let mut meters = Vec::new();
    for meter in st.meters.iter() {
        let (total, _) = aggregate(&st.store, &tenant, meter, from_ms, to_ms, Window::Month, None).await?;
        meters.push(json!({
            "meter": meter.name, "value": total.value(meter.aggregation),
            "unit": meter.unit, "aggregation": meter.aggregation.as_str(),
        }));
    }
    Ok(Json(json!({
        "tenant": tenant.as_str(), "period": start.format("%Y-%m").to_string(),
        "from": rfc3339(from_ms), "to": rfc3339(to_ms), "meters": meters,
    })))
}
