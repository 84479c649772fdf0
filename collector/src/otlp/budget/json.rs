//! The JSON walk: OTLP/JSON's objects typed by the field they sit under.
//!
//! Objects under fields the decoder does not know are skipped by it, so
//! they cost nothing here either. A syntax error ends the walk without
//! refusing: the decoder then reports it, naming the place.

use super::{BudgetError, Cost, DecodeLimits, Field, MAX_DEPTH, Msg, Tally};

/// Walks `body` (OTLP/JSON) as a `root` message, refusing it once it
/// exceeds `limits`. `noun` names the items in the error ("spans").
pub fn check(body: &[u8], root: Msg, limits: DecodeLimits, noun: &'static str) -> Result<Cost, BudgetError> {
    let mut w = Walk { buf: body, at: 0, tally: Tally::new(limits, noun) };
    match w.value(Some(Field::Message(root, false)), 0) {
        Ok(()) | Err(Stop::Syntax) => Ok(w.tally.cost),
        Err(Stop::Budget(e)) => Err(e),
    }
}

enum Stop {
    Budget(BudgetError),
    Syntax,
}

impl From<BudgetError> for Stop {
    fn from(e: BudgetError) -> Stop {
        Stop::Budget(e)
    }
}

/// What the field `key` of a `parent` object holds (`None`: a field the
/// decoder ignores).
fn field_of(parent: Msg, key: &[u8]) -> Option<Field> {
    use Field::{Message as M, Numbers, Strings};
    let point = match parent {
        Msg::Gauge | Msg::Sum => Msg::NumberPoint,
        Msg::Histogram => Msg::HistogramPoint,
        Msg::ExpHistogram => Msg::ExpHistogramPoint,
        _ => Msg::SummaryPoint,
    };
    Some(match key {
        b"resourceSpans" => M(Msg::ResourceSpans, true),
        b"resourceLogs" => M(Msg::ResourceLogs, true),
        b"resourceMetrics" => M(Msg::ResourceMetrics, true),
        b"resource" => M(Msg::Resource, false),
        b"scopeSpans" => M(Msg::ScopeSpans, true),
        b"scopeLogs" => M(Msg::ScopeLogs, true),
        b"scopeMetrics" => M(Msg::ScopeMetrics, true),
        b"scope" => M(Msg::Scope, false),
        b"spans" => M(Msg::Span, true),
        b"logRecords" => M(Msg::LogRecord, true),
        b"metrics" => M(Msg::Metric, true),
        b"attributes" | b"filteredAttributes" | b"metadata" => M(Msg::KeyValue, true),
        b"entityRefs" => M(Msg::EntityRef, true),
        b"idKeys" | b"descriptionKeys" => Strings,
        b"events" => M(Msg::Event, true),
        b"links" => M(Msg::Link, true),
        b"status" => M(Msg::Status, false),
        b"body" | b"value" => M(Msg::AnyValue, false),
        b"arrayValue" => M(Msg::ArrayValue, false),
        b"kvlistValue" => M(Msg::KvList, false),
        b"values" if parent == Msg::KvList => M(Msg::KeyValue, true),
        b"values" => M(Msg::AnyValue, true),
        b"gauge" => M(Msg::Gauge, false),
        b"sum" => M(Msg::Sum, false),
        b"histogram" => M(Msg::Histogram, false),
        b"exponentialHistogram" => M(Msg::ExpHistogram, false),
        b"summary" => M(Msg::Summary, false),
        b"dataPoints" => M(point, true),
        b"exemplars" => M(Msg::Exemplar, true),
        b"positive" | b"negative" => M(Msg::Buckets, false),
        b"quantileValues" => M(Msg::Quantile, true),
        b"bucketCounts" | b"explicitBounds" => Numbers(false),
        _ => return None,
    })
}

struct Walk<'a> {
    buf: &'a [u8],
    at: usize,
    tally: Tally,
}

impl Walk<'_> {
    fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.buf.get(self.at) {
            if !b.is_ascii_whitespace() {
                return Some(b);
            }
            self.at += 1;
        }
        None
    }

    fn expect(&mut self, b: u8) -> Result<(), Stop> {
        if self.peek() == Some(b) {
            self.at += 1;
            Ok(())
        } else {
            Err(Stop::Syntax)
        }
    }

    /// A string's raw bytes (escapes left as written).
    fn string(&mut self) -> Result<&[u8], Stop> {
        self.expect(b'"')?;
        let start = self.at;
        while let Some(&b) = self.buf.get(self.at) {
            self.at += 1;
            match b {
                b'\\' => self.at += 1,
                b'"' => return Ok(&self.buf[start..self.at - 1]),
                _ => {}
            }
        }
        Err(Stop::Syntax)
    }

    /// A value whose field holds `field` (`None`: ignored by the decoder).
    fn value(&mut self, field: Option<Field>, depth: u32) -> Result<(), Stop> {
        if depth > MAX_DEPTH {
            // Not a syntax error: serde_json would take up to 128 levels,
            // and what lies below here would go uncounted.
            return Err(Stop::Budget(BudgetError::TooDeep { limit: MAX_DEPTH }));
        }
        match self.peek().ok_or(Stop::Syntax)? {
            b'{' => {
                let msg = match field {
                    Some(Field::Message(m, repeated)) => {
                        self.tally.message(m, repeated)?;
                        Some(m)
                    }
                    _ => None,
                };
                self.object(msg, depth)
            }
            b'[' => self.array(field, depth),
            b'"' => {
                let len = self.string()?.len();
                if field.is_some() {
                    match field {
                        Some(Field::Strings) => self.tally.string_element(len)?,
                        Some(Field::Numbers(_)) => self.tally.numbers(1)?,
                        _ => self.tally.bytes(len as u64)?,
                    }
                }
                Ok(())
            }
            _ => {
                while self
                    .buf
                    .get(self.at)
                    .is_some_and(|b| !matches!(b, b',' | b']' | b'}') && !b.is_ascii_whitespace())
                {
                    self.at += 1;
                }
                if matches!(field, Some(Field::Numbers(_))) {
                    self.tally.numbers(1)?;
                }
                Ok(())
            }
        }
    }

    fn object(&mut self, msg: Option<Msg>, depth: u32) -> Result<(), Stop> {
        self.expect(b'{')?;
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(());
        }
        loop {
            let key = self.string()?;
            let field = match msg {
                // serde reads `"sp\u0061ns"` as `spans`: so does the walk.
                Some(m) if key.contains(&b'\\') => field_of(m, unescape(key)?.as_bytes()),
                Some(m) => field_of(m, key),
                None => None,
            };
            self.expect(b':')?;
            self.value(field, depth + 1)?;
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(Stop::Syntax),
            }
        }
    }

    /// An array's elements are list elements of `field`.
    fn array(&mut self, field: Option<Field>, depth: u32) -> Result<(), Stop> {
        self.expect(b'[')?;
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(());
        }
        let element = match field {
            Some(Field::Message(m, _)) => Some(Field::Message(m, true)),
            other => other,
        };
        loop {
            self.value(element, depth + 1)?;
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(Stop::Syntax),
            }
        }
    }
}

/// A JSON string's raw bytes (between the quotes) unescaped.
fn unescape(raw: &[u8]) -> Result<String, Stop> {
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice(&quoted).map_err(|_| Stop::Syntax)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_keys_count_as_the_decoder_reads_them() {
        // Found by reading for the otlp_json fuzz target: `sp\u0061ns` is
        // `spans` to serde, and was nothing to the walk.
        let spans = vec!["{}"; 50].join(",");
        let body = format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"sp\u0061ns":[{spans}]}}]}}]}}"#);
        let limits = DecodeLimits { max_items: 10, max_decoded_bytes: u64::MAX };
        assert!(matches!(
            check(body.as_bytes(), Msg::TraceRequest, limits, "spans"),
            Err(BudgetError::TooManyItems { .. })
        ));
    }

    #[test]
    fn nesting_beyond_the_walk_is_refused_not_uncounted() {
        let deep = "[".repeat(120) + &"]".repeat(120);
        let body = format!(r#"{{"resourceSpans":{deep}}}"#);
        assert_eq!(
            check(body.as_bytes(), Msg::TraceRequest, DecodeLimits::NONE, "spans"),
            Err(BudgetError::TooDeep { limit: MAX_DEPTH })
        );
    }

    #[test]
    fn empty_objects_cost_their_structs() {
        let spans = vec!["{}"; 1000].join(",");
        let body = format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{spans}]}}]}}]}}"#);
        let cost = check(body.as_bytes(), Msg::TraceRequest, DecodeLimits::NONE, "spans").unwrap();
        assert_eq!(cost.items, 1000);
        assert!(cost.bytes >= 1000 * Msg::Span.size(), "{cost:?}");
        let limits = DecodeLimits { max_items: 10, max_decoded_bytes: u64::MAX };
        assert!(matches!(
            check(body.as_bytes(), Msg::TraceRequest, limits, "spans"),
            Err(BudgetError::TooManyItems { .. })
        ));
    }

    #[test]
    fn ignored_fields_cost_nothing_and_syntax_errors_are_left_to_the_decoder() {
        let ignored = format!(r#"{{"resource_spans":[{}]}}"#, vec!["{}"; 1000].join(","));
        let cost = check(ignored.as_bytes(), Msg::TraceRequest, DecodeLimits::NONE, "spans").unwrap();
        assert_eq!((cost.items, cost.bytes), (0, Msg::TraceRequest.size()));
        for bad in [&b"{not json"[..], b"", b"[", b"{\"spans\":", b"\"\\"] {
            assert!(check(bad, Msg::TraceRequest, DecodeLimits::NONE, "spans").is_ok());
        }
    }

    #[test]
    fn lists_of_numbers_and_nested_values_are_counted() {
        let body = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"histogram":{"dataPoints":[
            {"bucketCounts":["1","2","3"],"explicitBounds":[1.5,2.5],"attributes":[{"key":"k","value":{"arrayValue":{"values":[{"intValue":"1"}]}}}]}]}}]}]}]}"#;
        let cost = check(body, Msg::MetricsRequest, DecodeLimits::NONE, "data points").unwrap();
        assert_eq!(cost.items, 1);
        let least = Msg::HistogramPoint.size() + 5 * 16 + Msg::KeyValue.size() + Msg::AnyValue.size();
        assert!(cost.bytes >= least, "{cost:?}");
    }
}
