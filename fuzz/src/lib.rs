//! What the fuzz targets share: the config they run under (tally's defaults
//! plus the meters below, loaded by `Config::from_toml`, so the limits are
//! exactly the receivers'), a counting allocator to check the decode
//! budget's memory bound, and the OTLP harness (protobuf and JSON).

use std::sync::OnceLock;

use tally_collector::otlp::{DecodeLimits, budget::Cost};

pub mod alloc;
pub mod otlp;

/// Meters of every kind, fed by what the seed corpora carry (attribute and
/// metric names of the SDK captures, the CloudEvents of tally's tests), so
/// the usage paths downstream of an accepted request are exercised.
pub const FUZZ_TOML: &str = r#"
[[meters]]
name = "llm_tokens"
aggregation = "sum"
event_type = "llm.completion"
value = "$.tokens"
group_by = { model = "$.model" }

[[meters]]
name = "llm_calls"
aggregation = "count"
event_type = "llm.completion"

[[meters]]
name = "active_users"
aggregation = "unique_count"
event_type = "login"
value = "$.user"

[[meters]]
name = "storage_gb"
aggregation = "max"
event_type = "storage.sample"
value = "$.usage.gb"
max_value = 1000000.0
group_by = { region = "$.region", sku = "$.items[0].sku", tier = '$["tier"]' }

[[meters]]
name = "db_rows"
aggregation = "sum"
span_attribute = "rows"
scale_sampled = true
group_by = { db = "db.system", model = "gen_ai.request.model" }

[[meters]]
name = "order_lookups"
aggregation = "count"
span_attribute = "http.response.status_code"
span_name = "GET /orders/{id}"
filter = { "http.request.method" = "GET" }

[[meters]]
name = "orders"
aggregation = "sum"
otlp_metric = "orders.placed"
group_by = { plan = "plan" }

[[meters]]
name = "queue_depth"
aggregation = "max"
otlp_metric = "queue.depth"

[[meters]]
name = "active_jobs"
aggregation = "last"
otlp_metric = "jobs.active"

[[meters]]
name = "log_lines"
aggregation = "sum"
log_attribute = "lines"
group_by = { plan = "plan" }

[[meters]]
name = "log_items"
aggregation = "count"
log_attribute = "items"
"#;

/// tally's defaults with [`FUZZ_TOML`], through the real loader and its
/// validation.
pub fn config() -> &'static tally::Config {
    static CONFIG: OnceLock<tally::Config> = OnceLock::new();
    CONFIG.get_or_init(|| match tally::Config::from_toml(&[FUZZ_TOML]) {
        Ok(c) => c,
        Err(e) => panic!("the fuzz config (tally.default.toml + FUZZ_TOML) does not load: {e:#}"),
    })
}

/// The receivers' decode limits (`otlp.max_items_per_request`,
/// `otlp.max_decoded_bytes`), as `Ingest::with_decode_limits` gets them.
pub fn decode_limits() -> DecodeLimits {
    config().otlp.decode_limits()
}

/// `otlp.max_request_bytes`: over this the gRPC codec
/// (`max_decoding_message_size`) and the HTTP body reader refuse a request
/// before it is decoded, and decompression stops.
pub fn max_request_bytes() -> usize {
    config().otlp.max_request_bytes
}

/// The most heap a decoded request may hold, given the budget's estimate
/// `cost` of it and the body's length. The estimate counts every struct
/// (twice for list elements) and every string's length; what it leaves out,
/// bounded here:
/// - a list of one element takes 4 slots (`Vec`'s first allocation), 2× the
///   2 slots counted: hence 2 × the estimate;
/// - a string or byte string of 1 to 7 bytes takes 8 (prost), and OTLP/JSON
///   strings under fields the walk does not type (names, keys, ids) are not
///   counted at all; neither is longer than the body: 4 bytes per body byte.
pub fn memory_bound(cost: &Cost, body_len: usize) -> u64 {
    cost.bytes.saturating_mul(2).saturating_add(4 * body_len as u64).saturating_add(4096)
}
