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
    /// How long a request may wait for room in the pipeline queue before it
    /// is refused with 429 / UNAVAILABLE.
    #[serde(with = "humantime_serde")]
    pub enqueue_timeout: Duration,
    /// Seconds a refused sender is told to wait (`Retry-After`).
    pub retry_after_secs: u32,
}

/// `[tenancy]`: how the tenant of each resource or item is found.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenancyConfig {
    /// Resource attributes naming the tenant; the first present wins.
    pub resource_attributes: Vec<String>,
    /// Request header naming the tenant when no resource attribute does
    /// (empty: disabled).
    pub header: String,
    /// Attributes holding a host name, looked up on the resource and then on
    /// each span, log record or data point, matched against `host_pattern`.
    pub host_attributes: Vec<String>,
    /// Pattern like `{tenant}.example.com` (empty: disabled).
    pub host_pattern: String,
    /// Tenant for items that name none (empty: such items are refused).
    pub default_tenant: String,
}
