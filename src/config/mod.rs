//! Layered configuration: the embedded `tally.default.toml`, then
//! `tally.toml` (or `--config FILE`), then `TALLY_*` environment variables.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use serde::Deserialize;
use tally_aggregator::{
    RollupConfig,
    alert::{AlertRuleConfig, AlertingConfig, Rule, RuleContext, compile_rules},
    lake::LakeConfig,
};
use tally_collector::{OtlpConfig, PipelineConfig, TenancyConfig, TenantResolver, events::EventsConfig};
use tally_core::{MeterConfig, Secret, meter::validate_meters};
use tally_exporter::{
    alerts::{Receiver, ReceiverConfig, check_receivers},
    stripe::StripeConfig,
};

mod env;

pub use env::{EnvKey, EnvKeys};

pub const DEFAULTS: &str = include_str!("../../tally.default.toml");

/// Reads an environment variable (secrets named by `*_env` keys).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub database_url: Secret,
    pub database_auth: DatabaseAuth,
    #[serde(deserialize_with = "tally_core::lenient::string")]
    pub database_client_id: String,
    #[serde(deserialize_with = "tally_core::lenient::string")]
    pub lake_url: String,
    pub log_format: LogFormat,
    #[serde(deserialize_with = "tally_core::lenient::string")]
    pub log_level: String,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    pub api: ApiConfig,
    pub server: crate::serve::ServerConfig,
    pub otlp: OtlpConfig,
    pub tenancy: TenancyConfig,
    pub pipeline: PipelineConfig,
    pub rollups: RollupConfig,
    pub lake: LakeConfig,
    pub events: EventsConfig,
    pub auth: AuthConfig,
    /// `[[meters]]`: what usage is counted (see the defaults file).
    #[serde(default)]
    pub meters: Vec<MeterConfig>,
    pub alerting: AlertingConfig,
    /// `[[alerts]]`: alert rules (see the defaults file).
    #[serde(default)]
    pub alerts: Vec<AlertRuleConfig>,
    /// `[[receivers]]`: where alert notifications go.
    #[serde(default)]
    pub receivers: Vec<ReceiverConfig>,
    /// `[stripe]`: the usage sync to Stripe Billing, and its webhooks.
    pub stripe: StripeConfig,
    /// `[self_telemetry]`: tally's own traces over OTLP.
    pub self_telemetry: SelfTelemetry,
    /// `[appinsights]`: forwarding to Application Insights.
    pub appinsights: tally_exporter::appinsights::AppInsightsConfig,
    /// `[entitlements]`: who may still use what.
    pub entitlements: tally_aggregator::entitlements::EntitlementsConfig,
    /// What loading the config noticed but did not refuse (unknown
    /// `TALLY_*` variables), logged once logging is set up.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// `database_auth`: the password of `database_url`, or an Entra ID token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseAuth {
    Password,
    Azure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[auth]`: API keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// With no API key created, accept unauthenticated traffic even on
    /// non-loopback addresses (otherwise tally refuses to start there).
    pub open: bool,
    /// How often active keys are reloaded from the database (revocations
    /// take effect within this).
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
}

/// `[api]`: the query/admin HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub addr: SocketAddr,
}

/// `[self_telemetry]`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelfTelemetry {
    /// OTLP/HTTP base URL (e.g. `http://127.0.0.1:4318`, or another tally);
    /// empty: off.
    pub otlp_endpoint: String,
    /// `service.name` of tally's spans.
    pub service_name: String,
    /// `tenant.id` resource attribute, so a receiving tally files them.
    pub tenant: String,
}

impl Config {
    /// Defaults, then `file` (which must exist) or else `./tally.toml` if
    /// present, then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        match file {
            Some(path) => {
                anyhow::ensure!(path.is_file(), "config file {} not found", path.display());
                figment = figment.merge(Toml::file_exact(path));
            }
            None if Path::new("tally.toml").is_file() => figment = figment.merge(Toml::file_exact("tally.toml")),
            None => {}
        }
        let (env, warnings) = env_provider(&figment)?;
        let mut config = Config::extract(figment.merge(env))?;
        config.warnings = warnings;
        Ok(config)
    }

    /// Defaults overridden by TOML snippets, later ones winning, ignoring
    /// files and the environment (tests, embedding).
    pub fn from_toml(layers: &[&str]) -> anyhow::Result<Config> {
        let figment =
            layers.iter().fold(Figment::from(Toml::string(DEFAULTS)), |f, layer| f.merge(Toml::string(layer)));
        Config::extract(figment)
    }

    fn extract(figment: Figment) -> anyhow::Result<Config> {
        let config: Config = figment.extract().map_err(|e| {
            // figment lists every error with the key and where it came from.
            anyhow::anyhow!(e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: values that parse but make no sense.
    pub fn validate(&self) -> anyhow::Result<()> {
        let o = &self.otlp;
        anyhow::ensure!(o.max_request_bytes > 0, "otlp.max_request_bytes must be greater than 0");
        anyhow::ensure!(o.max_concurrent_requests > 0, "otlp.max_concurrent_requests must be greater than 0");
        anyhow::ensure!(!o.request_timeout.is_zero(), "otlp.request_timeout must be greater than 0");
        anyhow::ensure!(o.max_compressed_request_bytes > 0, "otlp.max_compressed_request_bytes must be greater than 0");
        anyhow::ensure!(
            self.pipeline.queue_capacity > 0 && self.pipeline.max_queued_bytes > 0,
            "pipeline.queue_capacity and pipeline.max_queued_bytes must be greater than 0"
        );
        anyhow::ensure!(!self.pipeline.flush_interval.is_zero(), "pipeline.flush_interval must be greater than 0");
        anyhow::ensure!(!self.shutdown_timeout.is_zero(), "shutdown_timeout must be greater than 0");
        anyhow::ensure!(!self.auth.refresh_interval.is_zero(), "auth.refresh_interval must be greater than 0");
        TenantResolver::new(&self.tenancy)?;
        self.server.validate().map_err(anyhow::Error::msg)?;
        self.rollups.validate().map_err(anyhow::Error::msg)?;
        self.lake.validate().map_err(anyhow::Error::msg)?;
        validate_meters(&self.meters).map_err(anyhow::Error::msg)?;
        self.alert_rules()?;
        self.alert_receivers(None)?;
        self.stripe.validate().map_err(anyhow::Error::msg)?;
        let receivers: Vec<&str> = self.receivers.iter().map(|r| r.name.as_str()).collect();
        self.entitlements.validate(&receivers).map_err(anyhow::Error::msg)?;
        self.appinsights.validate().map_err(anyhow::Error::msg)?;
        let a = &self.alerting;
        anyhow::ensure!(!a.eval_interval.is_zero(), "alerting.eval_interval must be greater than 0");
        anyhow::ensure!(!a.send_timeout.is_zero(), "alerting.send_timeout must be greater than 0");
        anyhow::ensure!(
            a.external_url.is_empty()
                || a.external_url.starts_with("http://")
                || a.external_url.starts_with("https://"),
            "alerting.external_url: expected http://… or https://…"
        );
        let e = &self.events;
        anyhow::ensure!(
            e.max_body_bytes > 0 && e.max_batch > 0 && e.max_commit_records > 0 && e.ledger_writers > 0,
            "events.max_body_bytes, max_batch, max_commit_records and ledger_writers must be greater than 0"
        );
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .with_context(|| format!("log_level: {:?} is not a valid filter", self.log_level))?;
        let url = self.database_url.expose();
        anyhow::ensure!(
            url.is_empty() || ["postgres://", "postgresql://", "sqlite:"].iter().any(|p| url.starts_with(p)),
            "database_url: expected postgres://…, sqlite:… or empty for the embedded database"
        );
        anyhow::ensure!(
            self.database_auth == DatabaseAuth::Password || url.starts_with("postgres"),
            "database_auth = \"azure\" needs a postgres:// database_url (Entra ID sign-in is PostgreSQL's)"
        );
        Ok(())
    }

    /// One-port mode's address (`server.addr`), if set.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.server.addr.parse().ok()
    }

    /// Where complete lake files wait for upload.
    pub fn spool_dir(&self) -> PathBuf {
        if self.lake.spool_dir.is_empty() { self.data_dir.join("spool") } else { PathBuf::from(&self.lake.spool_dir) }
    }

    /// The alert rules, checked against the rollup window, meters and receivers.
    pub fn alert_rules(&self) -> anyhow::Result<Vec<Rule>> {
        let receivers: Vec<&str> = self.receivers.iter().map(|r| r.name.as_str()).collect();
        let ctx = RuleContext {
            rollup_window: self.rollups.window,
            meters: &self.meters,
            receivers: &receivers,
            default_repeat: self.alerting.repeat_interval,
        };
        compile_rules(&self.alerts, &ctx).map_err(anyhow::Error::msg)
    }

    /// The receivers, with their secrets read through `env` (`None`: all
    /// but the secrets checked).
    pub fn alert_receivers(&self, env: Option<EnvLookup<'_>>) -> anyhow::Result<Vec<Receiver>> {
        check_receivers(&self.receivers, env).map_err(anyhow::Error::msg)
    }

    /// Where on-call reaches tally: `alerting.external_url`, or the API address.
    pub fn external_url(&self, api_addr: SocketAddr) -> String {
        if self.alerting.external_url.is_empty() {
            format!("http://{api_addr}")
        } else {
            self.alerting.external_url.trim_end_matches('/').to_owned()
        }
    }

    /// The database, described without credentials, for logs.
    pub fn database_description(&self) -> String {
        let url = self.database_url.expose();
        if url.is_empty() {
            return format!("sqlite {}", self.data_dir.join("tally.db").display());
        }
        // scheme://[user[:password]@]host… → scheme://host…
        match url.split_once("://") {
            Some((scheme, rest)) => {
                let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                let rest = rest.split('?').next().unwrap_or(rest);
                format!("{scheme}://{rest}")
            }
            None => url.split('?').next().unwrap_or(url).to_owned(),
        }
    }
}

/// The `TALLY_*` variables that are config (see [`env`]), for the layers
/// in `figment`; and a warning for each that tally does not know.
fn env_provider(figment: &Figment) -> anyhow::Result<(Env, Vec<String>)> {
    let dict = |f: &Figment| f.extract::<figment::value::Dict>().map_err(|e| anyhow::anyhow!("{e}"));
    let keys = std::sync::Arc::new(EnvKeys::new(&dict(&Figment::from(Toml::string(DEFAULTS)))?, &dict(figment)?));
    let warnings = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| keys.classify(name) == EnvKey::Unknown)
        .map(|name| format!("environment variable {name} is not a tally setting (see tally.default.toml); ignored"))
        .collect();
    let env = Env::prefixed("TALLY_").filter_map(move |key| {
        match keys.classify(&format!("TALLY_{}", key.as_str().to_ascii_uppercase())) {
            EnvKey::Config(path) => Some(path.into()),
            _ => None,
        }
    });
    Ok((env, warnings))
}

#[cfg(test)]
// figment's Jail closures return its (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_validate() {
        let c = Config::from_toml(&[]).unwrap();
        assert_eq!(c.otlp.grpc_addr.to_string(), "127.0.0.1:4317");
        assert_eq!(c.otlp.http_addr.to_string(), "127.0.0.1:4318");
        assert_eq!(c.api.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.otlp.max_request_bytes, 8 << 20);
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.tenancy.resource_attributes, ["tenant.id"]);
    }

    #[test]
    fn documented_alert_examples_compile() {
        // The commented [[alerts]] and [[receivers]] examples of the defaults
        // file, uncommented, with the meter the usage example names.
        let start = DEFAULTS.find("# [[alerts]]\n# name").unwrap();
        let examples: String = DEFAULTS[start..]
            .lines()
            .filter_map(|l| l.strip_prefix("# ").or_else(|| (l == "#").then_some("")))
            .map(|l| format!("{l}\n"))
            .collect();
        let meter = "[[meters]]\nname = \"llm_tokens\"\naggregation = \"sum\"\nevent_type = \"llm.completion\"\nvalue = \"$.tokens\"\n";
        let c = Config::from_toml(&[&format!("{meter}{examples}")]).unwrap();
        let rules = c.alert_rules().unwrap();
        let names: Vec<&str> = rules.iter().map(|r| r.name()).collect();
        assert_eq!(names, ["HighErrorRate", "SlowRequests", "WorkerQueueBacklog", "CreditsRunningOut"]);
        assert_eq!((rules[0].config.warning, rules[0].config.critical), (Some(0.01), Some(0.05)));
        assert_eq!(c.receivers.len(), 2);
    }

    #[test]
    fn private_alert_targets_need_allow_private() {
        let receiver = |extra: &str| {
            format!(
                "[[receivers]]\nname = \"oncall\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9099/hook\"\n{extra}"
            )
        };
        let err = Config::from_toml(&[&receiver("")]).unwrap_err().to_string();
        assert!(
            err.contains("receivers[oncall].url") && err.contains("loopback") && err.contains("allow_private"),
            "{err}"
        );
        let err =
            Config::from_toml(&[&receiver("").replace("127.0.0.1:9099", "169.254.169.254")]).unwrap_err().to_string();
        assert!(err.contains("link-local"), "{err}");
        assert!(Config::from_toml(&[&receiver("allow_private = true")]).is_ok());
        // A rule naming a receiver that does not exist, or a bad metric, is named too.
        let rule = "[[alerts]]\nname = \"E\"\nmetric = \"error_rate\"\nwarning = 0.01\nreceivers = [\"nobody\"]\n";
        let err = Config::from_toml(&[rule]).unwrap_err().to_string();
        assert!(err.contains("alerts[E].receivers"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = Config::from_toml(&["[otlp]\ngrpc_adr = \"x\""]).unwrap_err().to_string();
        assert!(err.contains("grpc_adr"), "{err}");
        let err = Config::from_toml(&["colour = 1"]).unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn env_maps_sections_and_top_level_keys() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TALLY_OTLP_GRPC_ADDR", "127.0.0.1:9999");
            jail.set_env("TALLY_API_ADDR", "127.0.0.1:9998");
            jail.set_env("TALLY_DATA_DIR", "/tmp/x");
            jail.set_env("TALLY_PIPELINE_QUEUE_CAPACITY", "7");
            jail.set_env("TALLY_DATABASE_URL", "postgres://u:hunter2@db:5432/t?sslmode=require");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.otlp.grpc_addr.to_string(), "127.0.0.1:9999");
            assert_eq!(c.api.addr.to_string(), "127.0.0.1:9998");
            assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
            assert_eq!(c.pipeline.queue_capacity, 7);
            assert!(!format!("{c:?}").contains("hunter2"));
            assert_eq!(c.database_description(), "postgres://db:5432/t");
            jail.set_env("TALLY_TENANCY_DEFAULT_TENANT", "42");
            jail.set_env("TALLY_TENANCY_RESOURCE_ATTRIBUTES", "tenant.id, org.id");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.tenancy.default_tenant, "42");
            assert_eq!(c.tenancy.resource_attributes, ["tenant.id", "org.id"]);
            // A typo in a known section is refused by name; a variable of no
            // section is only warned about.
            jail.set_env("TALLY_OTLP_GRCP_ADDR", "1");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("grcp_addr"), "{err}");
            Ok(())
        });
    }

    /// Every variable name DESIGN lists, the README's and the defaults'
    /// secrets, and a Kubernetes Service named tally: tally starts.
    #[test]
    fn ordinary_environments_start() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "tally.toml",
                "[[receivers]]\nname = \"oncall\"\ntype = \"webhook\"\nurl = \"https://oncall.example.com/hook\"\n\
                 secret_env = \"TALLY_ONCALL_SECRET\"\n",
            )?;
            for (k, v) in [
                ("TALLY_DATABASE_URL", "postgres://db:5432/t"),
                ("TALLY_DATA_DIR", "/tmp/x"),
                ("TALLY_OTLP_GRPC_ADDR", "127.0.0.1:14317"),
                ("TALLY_OTLP_HTTP_ADDR", "127.0.0.1:14318"),
                ("TALLY_API_ADDR", "127.0.0.1:18080"),
                ("TALLY_LAKE_URL", "az://telemetry/tally"),
                ("TALLY_LOG_FORMAT", "json"),
                ("TALLY_ONCALL_SECRET", "whsec_c2VjcmV0"),
                ("TALLY_PAGERDUTY_ROUTING_KEY", "R0UT1NG"),
                ("TALLY_SERVICE_HOST", "10.0.0.7"),
                ("TALLY_SERVICE_PORT", "8080"),
                ("TALLY_PORT", "tcp://10.0.0.7:8080"),
                ("TALLY_PORT_8080_TCP", "tcp://10.0.0.7:8080"),
                ("TALLY_PORT_8080_TCP_ADDR", "10.0.0.7"),
                ("TALLY_PORT_8080_TCP_PORT", "8080"),
                ("TALLY_PORT_8080_TCP_PROTO", "tcp"),
            ] {
                jail.set_env(k, v);
            }
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.lake_url, "az://telemetry/tally");
            assert_eq!(c.log_format, LogFormat::Json);
            assert_eq!(c.api.addr.to_string(), "127.0.0.1:18080");
            // The only warning: a variable no config names.
            assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
            assert!(c.warnings[0].contains("TALLY_PAGERDUTY_ROUTING_KEY"), "{:?}", c.warnings);
            Ok(())
        });
    }

    #[test]
    fn tally_toml_overrides_defaults_and_bad_values_are_named() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("tally.toml", "log_format = \"json\"\n[tenancy]\ndefault_tenant = \"shared\"")?;
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.log_format, LogFormat::Json);
            assert_eq!(c.tenancy.default_tenant, "shared");
            jail.create_file("tally.toml", "[tenancy]\nhost_pattern = \"example.com\"")?;
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("tenancy.host_pattern"), "{err}");
            Ok(())
        });
    }
}
