use std::{net::SocketAddr, time::Duration};

use serde::Deserialize;

/// `[otlp]`: the OTLP receivers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// Address of the OTLP/gRPC receiver.
    pub grpc_addr: SocketAddr,
    /// Address of the OTLP/HTTP receiver.
    pub http_addr: SocketAddr,
    /// Largest request accepted, in bytes, after decompression.
    pub max_request_bytes: usize,
    /// Largest request accepted, in bytes, as received (before decompression).
    pub max_compressed_request_bytes: usize,
    /// Most spans, log records or data points in one request.
    pub max_items_per_request: u64,
    /// Most memory one request may take once decoded (an upper bound,
    /// computed before decoding).
    pub max_decoded_bytes: u64,
    /// How long a request may wait for room in the pipeline queue before it
    /// is refused with 429 / RESOURCE_EXHAUSTED.
    #[serde(with = "humantime_serde")]
    pub enqueue_timeout: Duration,
    /// Seconds a refused sender is told to wait (`Retry-After`).
    pub retry_after_secs: u32,
    /// Export requests handled at once, across both transports; more wait
    /// up to `enqueue_timeout`, then are refused like a full queue. With
    /// `max_request_bytes` this bounds the memory of requests in flight.
    pub max_concurrent_requests: usize,
    /// Of those, at most this many from one caller (API key, or address
    /// when tally runs open): one caller's stalled uploads cannot take
    /// every slot.
    pub max_concurrent_requests_per_caller: usize,
    /// Longest time to receive and handle one request (slow senders are cut
    /// off with 408 / DEADLINE_EXCEEDED).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl OtlpConfig {
    pub fn decode_limits(&self) -> crate::otlp::DecodeLimits {
        crate::otlp::DecodeLimits { max_items: self.max_items_per_request, max_decoded_bytes: self.max_decoded_bytes }
    }
}

/// `[pipeline]`: the queue between the receivers and the downstream stages
/// (sizes [`crate::Pipeline`]), and how often those stages write.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Requests the queue holds before receivers push back (429 / RESOURCE_EXHAUSTED).
    pub queue_capacity: usize,
    /// Request bytes (decompressed wire size) the queue may hold; bounds
    /// tally's memory under load, decoded data taking a few times this.
    pub max_queued_bytes: usize,
    /// How often downstream state is written to the database.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
}

/// `[tenancy]`: how the tenant of each resource or item is found.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenancyConfig {
    /// Resource attributes naming the tenant; the first present wins.
    #[serde(deserialize_with = "tally_core::lenient::string_list")]
    pub resource_attributes: Vec<String>,
    /// Request header naming the tenant when no resource attribute does
    /// (empty: disabled).
    #[serde(deserialize_with = "tally_core::lenient::string")]
    pub header: String,
    /// Attributes holding a host name, looked up on the resource and then on
    /// each span, log record or data point, matched against `host_pattern`.
    #[serde(deserialize_with = "tally_core::lenient::string_list")]
    pub host_attributes: Vec<String>,
    /// Pattern like `{tenant}.example.com` (empty: disabled).
    #[serde(deserialize_with = "tally_core::lenient::string")]
    pub host_pattern: String,
    /// Tenant for items that name none (empty: such items are refused).
    #[serde(deserialize_with = "tally_core::lenient::string")]
    pub default_tenant: String,
}
