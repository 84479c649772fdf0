//! `[appinsights]`: forwarding to Application Insights, on when the
//! variable named by `connection_string_env` holds a connection string.

use std::time::Duration;

use serde::Deserialize;

use super::ConnectionString;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AppInsightsConfig {
    /// The variable holding the connection string (Microsoft's SDKs use
    /// `APPLICATIONINSIGHTS_CONNECTION_STRING`).
    pub connection_string_env: String,
    /// Which signals go.
    pub traces: bool,
    pub logs: bool,
    pub metrics: bool,
    /// Authenticate with Entra ID (a managed identity's token for the
    /// connection string's AADAudience, default https://monitor.azure.com)
    /// instead of the instrumentation key alone; needed when the resource
    /// has local authentication disabled.
    pub entra_id: bool,
    /// A user-assigned managed identity's client id (none: the system-assigned one).
    pub managed_identity_client_id: Option<String>,
    /// Fixed-rate sampling of spans and logs by trace id, in percent (a
    /// trace is kept or dropped whole, and kept items carry `sampleRate`
    /// so Azure's counts stay right); None: everything. Never for usage.
    pub sample_percent: Option<f64>,
    /// Per-tenant usage from the ledger: one `tally.usage` item per
    /// (tenant, meter, minute recorded), from the replica that leads.
    pub usage: bool,
    /// How often the usage feed looks for closed minutes.
    #[serde(with = "humantime_serde")]
    pub usage_interval: Duration,
    /// Items per track call (Azure takes up to 1,024 per call by default).
    pub max_batch_items: usize,
    /// A batch goes at the latest this long after its first item.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// The exporter's buffer; beyond it items are dropped and counted.
    pub max_buffer_items: usize,
    pub max_buffer_bytes: usize,
    /// The disk spool under `data_dir/appinsights-spool` behind the memory
    /// buffer (also what is still buffered at shutdown); 0: none.
    pub spool_max_bytes: u64,
    /// Request bytes the pipeline holds for this branch before it sheds.
    pub max_queued_bytes: usize,
    /// Per track call.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// At shutdown, how long buffered items may take to go.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for AppInsightsConfig {
    fn default() -> Self {
        AppInsightsConfig {
            connection_string_env: "APPLICATIONINSIGHTS_CONNECTION_STRING".into(),
            traces: true,
            logs: true,
            metrics: true,
            entra_id: false,
            managed_identity_client_id: None,
            sample_percent: None,
            usage: true,
            usage_interval: Duration::from_secs(15),
            max_batch_items: 1024,
            flush_interval: Duration::from_secs(5),
            max_buffer_items: 100_000,
            max_buffer_bytes: 64 << 20,
            spool_max_bytes: 256 << 20,
            max_queued_bytes: 32 << 20,
            timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

impl AppInsightsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(p) = self.sample_percent
            && !(p > 0.0 && p <= 100.0)
        {
            return Err("appinsights.sample_percent: must be > 0 and at most 100".into());
        }
        if !(1..=1024).contains(&self.max_batch_items) {
            return Err("appinsights.max_batch_items: 1 to 1024".into());
        }
        if self.max_buffer_items == 0 || self.max_buffer_bytes == 0 || self.max_queued_bytes == 0 {
            return Err("appinsights.max_buffer_items, max_buffer_bytes and max_queued_bytes must be > 0".into());
        }
        if self.flush_interval.is_zero() || self.timeout.is_zero() || self.usage_interval.is_zero() {
            return Err("appinsights.flush_interval, usage_interval and timeout must be > 0".into());
        }
        Ok(())
    }

    /// The connection string from the environment: None when the variable
    /// is unset or empty (forwarding off); an error names what is wrong.
    /// `http://` endpoints are accepted for loopback hosts only.
    pub fn connection_string(&self, value: Option<String>) -> Result<Option<ConnectionString>, String> {
        let Some(value) = value.filter(|v| !v.trim().is_empty()) else { return Ok(None) };
        let cs = ConnectionString::parse(&value).map_err(|e| format!("{}: {e}", self.connection_string_env))?;
        Ok(Some(cs))
    }
}
