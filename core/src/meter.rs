//! Meters: what usage is counted, from which events, and how it adds up.

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Deserializer};

/// How a meter's values combine over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    Sum,
    Count,
    Min,
    Max,
    Avg,
    Last,
    UniqueCount,
}

impl Aggregation {
    pub const fn as_str(self) -> &'static str {
        match self {
            Aggregation::Sum => "sum",
            Aggregation::Count => "count",
            Aggregation::Min => "min",
            Aggregation::Max => "max",
            Aggregation::Avg => "avg",
            Aggregation::Last => "last",
            Aggregation::UniqueCount => "unique_count",
        }
    }

    /// Whether events must carry a value (`count` counts events; the others
    /// need a number, `unique_count` any scalar).
    pub const fn needs_value(self) -> bool {
        !matches!(self, Aggregation::Count)
    }
}

/// `[[meters]]` in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterConfig {
    /// Unique name; also the default Stripe event name.
    pub name: String,
    pub aggregation: Aggregation,
    #[serde(default)]
    pub unit: String,
    #[serde(default)]
    pub description: String,
    /// CloudEvents `type` whose events feed this meter.
    pub event_type: Option<String>,
    /// JSON path of the value in the event's `data`, e.g. `$.tokens`.
    pub value: Option<JsonPath>,
    /// Group-by dimension name → JSON path in `data` (event meters) or
    /// attribute name, looked up on the span then its resource (span meters).
    #[serde(default)]
    pub group_by: BTreeMap<String, String>,
    /// OTLP metric feeding this meter: points of a monotonic Sum (delta or
    /// cumulative, converted to deltas per stream) or a Gauge.
    pub otlp_metric: Option<String>,
    /// Numeric span attribute feeding this meter, e.g.
    /// `gen_ai.usage.output_tokens`; each span carrying it is one usage record.
    pub span_attribute: Option<String>,
    /// Span meters: only spans with this name.
    pub span_name: Option<String>,
    /// Span and metric meters: only spans / points whose attributes (or
    /// resource attributes) have these values.
    #[serde(default)]
    pub filter: BTreeMap<String, String>,
    /// Span meters: bill spans of traces sampled below 100 % by dividing the
    /// value by the sampling probability. Off: such spans are not billed.
    #[serde(default)]
    pub scale_sampled: bool,
    /// Numeric log-record attribute feeding this meter; each record carrying
    /// it is one usage record, identified by a hash of its content.
    pub log_attribute: Option<String>,
    /// Largest value one event (span, log record, metric point or delta)
    /// may carry; larger ones are refused. Default [`DEFAULT_MAX_VALUE`];
    /// at most [`MAX_EXACT`], so sums stay exact integers and no stored
    /// aggregate can overflow.
    pub max_value: Option<f64>,
    /// Stripe: whether the meter is synced (when the sync is on); `false`
    /// for a meter with no Stripe meter. Default true.
    #[serde(default = "yes")]
    pub stripe: bool,
    /// Stripe: the Stripe meter's `event_name` (default: this meter's name).
    pub stripe_event_name: Option<String>,
    /// Stripe: units pushed per unit of this meter, for meters whose values
    /// are fractional (1000 turns GB into MB). Whole units go out; the
    /// fraction carries to the next window, so a period's pushes add up to
    /// floor(its total × scale). Default 1.
    pub stripe_scale: Option<f64>,
    /// Entitlements: the allowance per billing period, for every tenant
    /// without its own (`PUT /v1/tenants/{tenant}`). `sum` and `count`
    /// meters only. None: no allowance (unlimited unless credits are set).
    pub limit: Option<f64>,
}

fn yes() -> bool {
    true
}

/// The default largest value of one usage event: 10^15.
pub const DEFAULT_MAX_VALUE: f64 = 1e15;
/// 2^53: integers up to this are exact in an f64.
pub const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

impl MeterConfig {
    /// The largest value one event may carry.
    pub fn max_value(&self) -> f64 {
        self.max_value.unwrap_or(DEFAULT_MAX_VALUE)
    }

    /// Whether one event's value is within the meter's bounds (finite,
    /// ≥ 0, ≤ `max_value`).
    pub fn accepts(&self, value: f64) -> bool {
        value.is_finite() && value >= 0.0 && value <= self.max_value()
    }

    /// The Stripe meter's event name.
    pub fn stripe_event_name(&self) -> &str {
        self.stripe_event_name.as_deref().unwrap_or(&self.name)
    }

    /// Units pushed to Stripe per unit of this meter.
    pub fn stripe_scale(&self) -> f64 {
        self.stripe_scale.unwrap_or(1.0)
    }

    fn validate_stripe(&self) -> Result<(), String> {
        let name = &self.name;
        let event = self.stripe_event_name();
        if event.is_empty() || event.len() > 100 || event.chars().any(char::is_control) {
            return Err(format!("meters.{name}.stripe_event_name: 1 to 100 characters, no control characters"));
        }
        if let Some(scale) = self.stripe_scale
            && !(scale.is_finite() && scale > 0.0 && scale <= 1e9)
        {
            return Err(format!("meters.{name}.stripe_scale: must be > 0 and at most 1e9"));
        }
        Ok(())
    }

    /// Whether an allowance or credits can apply: the meter's period value
    /// only grows (`sum` of values ≥ 0, `count`).
    pub fn limitable(&self) -> bool {
        matches!(self.aggregation, Aggregation::Sum | Aggregation::Count)
    }

    /// Checks one meter on its own; `validate_meters` checks them together.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        self.validate_stripe()?;
        if let Some(limit) = self.limit {
            if !self.limitable() {
                return Err(format!("meters.{name}.limit: only sum and count meters take a limit"));
            }
            if !(limit.is_finite() && (0.0..=MAX_EXACT).contains(&limit)) {
                return Err(format!("meters.{name}.limit: must be >= 0 and at most 2^53"));
            }
        }
        if let Some(max) = self.max_value
            && !(max > 0.0 && max <= MAX_EXACT)
        {
            return Err(format!("meters.{name}.max_value: must be > 0 and at most 2^53 (9007199254740992)"));
        }
        let ok_name = !name.is_empty()
            && name.len() <= 100
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !ok_name {
            return Err(format!("meters: name {name:?} must be 1-100 ASCII letters, digits, _ - ."));
        }
        let sources = [&self.event_type, &self.span_attribute, &self.otlp_metric, &self.log_attribute]
            .iter()
            .filter(|s| s.is_some())
            .count();
        if sources != 1 {
            return Err(format!(
                "meters.{name}: set exactly one of event_type, span_attribute, otlp_metric or log_attribute"
            ));
        }
        if self.otlp_metric.is_some() || self.log_attribute.is_some() {
            if self.value.is_some() || self.span_name.is_some() || self.scale_sampled {
                return Err(format!(
                    "meters.{name}: value, span_name and scale_sampled do not apply to otlp_metric or log_attribute"
                ));
            }
            if self.aggregation == Aggregation::UniqueCount {
                return Err(format!("meters.{name}: unique_count is not available for metric and log meters"));
            }
            return Ok(());
        }
        if self.span_attribute.is_some() {
            if self.value.is_some() {
                return Err(format!("meters.{name}.value: span meters take their value from span_attribute"));
            }
            if self.aggregation == Aggregation::UniqueCount {
                return Err(format!("meters.{name}: unique_count is not available for span meters"));
            }
            return Ok(());
        }
        if self.span_name.is_some() || !self.filter.is_empty() || self.scale_sampled {
            return Err(format!("meters.{name}: span_name, filter and scale_sampled apply to span meters only"));
        }
        if self.event_type.as_deref().is_some_and(str::is_empty) {
            return Err(format!("meters.{name}.event_type: must not be empty"));
        }
        for (dim, path) in &self.group_by {
            JsonPath::parse(path).map_err(|e| format!("meters.{name}.group_by.{dim}: {e}"))?;
        }
        if self.aggregation.needs_value() && self.value.is_none() {
            return Err(format!(
                "meters.{name}.value: a JSON path like \"$.tokens\" is required for aggregation {}",
                self.aggregation.as_str()
            ));
        }
        Ok(())
    }

    /// Event meters: the group-by JSON paths (checked by `validate`).
    pub fn group_paths(&self) -> Vec<(String, JsonPath)> {
        self.group_by.iter().filter_map(|(dim, p)| Some((dim.clone(), JsonPath::parse(p).ok()?))).collect()
    }
}

/// Checks a set of meters: each valid, names unique.
pub fn validate_meters(meters: &[MeterConfig]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for m in meters {
        m.validate()?;
        if !seen.insert(&m.name) {
            return Err(format!("meters: name {:?} is declared twice", m.name));
        }
        if m.stripe
            && let Some(other) =
                meters.iter().find(|o| o.stripe && o.name != m.name && o.stripe_event_name() == m.stripe_event_name())
        {
            return Err(format!(
                "meters.{}.stripe_event_name: {:?} is also meter {:?}'s; a Stripe meter takes one tally meter",
                m.name,
                m.stripe_event_name(),
                other.name
            ));
        }
    }
    Ok(())
}

/// A JSON path into an event's `data`: `$`, then `.field` or `["field"]`
/// or `[index]` steps. Enough for the flat and nested payloads usage events
/// carry; no wildcards or filters.
#[derive(Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Field(String),
    Index(usize),
}

impl JsonPath {
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let err = |why: &str| format!("invalid JSON path {text:?}: {why}");
        let mut rest = text.strip_prefix('$').ok_or_else(|| err("must start with $"))?;
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                if end == 0 {
                    return Err(err("empty field name"));
                }
                steps.push(Step::Field(r[..end].to_owned()));
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix("[\"") {
                let end = r.find("\"]").ok_or_else(|| err("unterminated [\"…\"]"))?;
                steps.push(Step::Field(r[..end].to_owned()));
                rest = &r[end + 2..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']').ok_or_else(|| err("unterminated [ ]"))?;
                let i = r[..end].parse().map_err(|_| err("index must be a number"))?;
                steps.push(Step::Index(i));
                rest = &r[end + 1..];
            } else {
                return Err(err("expected . or ["));
            }
        }
        Ok(JsonPath { text: text.to_owned(), steps })
    }

    /// The value at this path, if present (JSON `null` counts as absent).
    pub fn get<'a>(&self, mut v: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        for step in &self.steps {
            v = match step {
                Step::Field(f) => v.get(f)?,
                Step::Index(i) => v.get(*i)?,
            };
        }
        (!v.is_null()).then_some(v)
    }

    /// The path as a field name for messages: `$.usage.tokens` → `data.usage.tokens`.
    pub fn describe(&self) -> String {
        format!("data{}", &self.text[1..])
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl<'de> Deserialize<'de> for JsonPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<JsonPath, D::Error> {
        let s = String::deserialize(d)?;
        JsonPath::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_reach_nested_fields_and_indexes() {
        let data = json!({"usage": {"tokens": 42, "by": [{"m": "gpt"}]}, "a.b": 1, "z": null});
        let get = |p: &str| JsonPath::parse(p).unwrap().get(&data).cloned();
        assert_eq!(get("$.usage.tokens"), Some(json!(42)));
        assert_eq!(get("$.usage.by[0].m"), Some(json!("gpt")));
        assert_eq!(get("$[\"a.b\"]"), Some(json!(1)));
        assert_eq!(get("$.missing"), None);
        assert_eq!(get("$.z"), None);
        assert_eq!(get("$"), Some(data.clone()));
        assert_eq!(JsonPath::parse("$.usage.tokens").unwrap().describe(), "data.usage.tokens");
        for bad in ["tokens", "$.", "$..a", "$[x]", "$[\"a"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn meters_are_checked() {
        let meter = |toml_value: serde_json::Value| serde_json::from_value::<MeterConfig>(toml_value);
        let ok = meter(
            json!({"name": "llm_tokens", "aggregation": "sum", "event_type": "llm.completion", "value": "$.tokens"}),
        )
        .unwrap();
        assert!(validate_meters(std::slice::from_ref(&ok)).is_ok());
        assert!(validate_meters(&[ok.clone(), ok.clone()]).unwrap_err().contains("twice"));
        let no_value = meter(json!({"name": "t", "aggregation": "sum", "event_type": "x"})).unwrap();
        assert!(no_value.validate().unwrap_err().contains("meters.t.value"));
        let count = meter(json!({"name": "tasks", "aggregation": "count", "event_type": "task.done"})).unwrap();
        assert!(count.validate().is_ok());
        let otlp = meter(json!({"name": "o", "aggregation": "sum", "otlp_metric": "tasks.completed"})).unwrap();
        assert!(otlp.validate().is_ok());
        let logs = meter(json!({"name": "l", "aggregation": "sum", "log_attribute": "bytes"})).unwrap();
        assert!(logs.validate().is_ok());
        let span = meter(json!({"name": "out", "aggregation": "sum", "span_attribute": "gen_ai.usage.output_tokens",
                                "group_by": {"model": "gen_ai.request.model"}}))
        .unwrap();
        assert!(span.validate().is_ok());
        let both = meter(json!({"name": "b", "aggregation": "sum", "span_attribute": "x", "event_type": "y"})).unwrap();
        assert!(both.validate().unwrap_err().contains("exactly one"));
        let bad_path =
            meter(json!({"name": "p", "aggregation": "count", "event_type": "y", "group_by": {"m": "model"}})).unwrap();
        assert!(bad_path.validate().unwrap_err().contains("meters.p.group_by.m"));
        assert!(meter(json!({"name": "x", "aggregation": "median"})).is_err());
        assert!(meter(json!({"name": "x", "aggregation": "sum", "colour": 1})).is_err());
    }
}
