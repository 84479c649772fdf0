//! `TALLY_*` environment variables as config: which ones are config keys,
//! which are someone else's, and which deserve a warning.
//!
//! - A top-level key (`TALLY_LAKE_URL` → `lake_url`) or an alias
//!   (`TALLY_LISTEN_ADDR` → `server.addr`) wins over a section prefix.
//! - `TALLY_<SECTION>_<KEY>` → `<section>.<key>` for every section of the
//!   defaults; a key the section does not have is kept, so the config is
//!   refused naming it (`TALLY_OTLP_GRCP_ADDR`: a typo).
//! - Variables named by a `*_env` key of the config (secrets such as
//!   `secret_env = "TALLY_ONCALL_SECRET"`) are never config.
//! - Kubernetes service links for a Service whose name starts with `tally`
//!   (`TALLY_SERVICE_HOST`, `TALLY_PORT=tcp://…`, `TALLY_PORT_8080_TCP_ADDR`,
//!   `TALLY_OTLP_SERVICE_PORT`) are ignored.
//! - Anything else is ignored with a warning (a misspelt section, or a
//!   variable meant for another program).

use std::collections::BTreeSet;

use figment::value::{Dict, Value};

/// Aliases: variable name (without `TALLY_`, lowercase) → config key.
const ALIASES: &[(&str, &str)] = &[("listen_addr", "server.addr")];

/// What a `TALLY_*` variable is to tally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvKey {
    /// A config key (dotted path).
    Config(String),
    /// Someone else's: ignored silently.
    Ignored,
    /// Not tally's as far as it can tell: ignored with a warning.
    Unknown,
}

/// The names a config layer can take from the environment.
#[derive(Debug, Clone, Default)]
pub struct EnvKeys {
    top_level: BTreeSet<String>,
    sections: BTreeSet<String>,
    /// Full variable names named by `*_env` keys.
    secrets: BTreeSet<String>,
}

impl EnvKeys {
    /// From the defaults (every key and section) and the merged file layers
    /// (their `*_env` values).
    pub fn new(defaults: &Dict, layers: &Dict) -> EnvKeys {
        let mut keys = EnvKeys::default();
        for (k, v) in defaults {
            match v {
                Value::Dict(..) => keys.sections.insert(k.clone()),
                _ => keys.top_level.insert(k.clone()),
            };
        }
        collect_secret_names(&Value::from(layers.clone()), &mut keys.secrets);
        collect_secret_names(&Value::from(defaults.clone()), &mut keys.secrets);
        keys
    }

    /// What `name` (a full variable name) is.
    pub fn classify(&self, name: &str) -> EnvKey {
        let Some(rest) = name.strip_prefix("TALLY_") else { return EnvKey::Ignored };
        if self.secrets.contains(name) {
            return EnvKey::Ignored;
        }
        let key = rest.to_ascii_lowercase();
        if let Some((_, to)) = ALIASES.iter().find(|(from, _)| *from == key) {
            return EnvKey::Config((*to).to_owned());
        }
        if self.top_level.contains(&key) {
            return EnvKey::Config(key);
        }
        if service_link(&key) {
            return EnvKey::Ignored;
        }
        match self.sections.iter().find(|s| key.strip_prefix(s.as_str()).is_some_and(|r| r.starts_with('_'))) {
            Some(section) => EnvKey::Config(format!("{section}.{}", &key[section.len() + 1..])),
            None => EnvKey::Unknown,
        }
    }
}

/// Kubernetes' service-link variables, without the `TALLY_` prefix:
/// `[<name>_]service_host`, `[<name>_]service_port[_<port name>]`,
/// `[<name>_]port[_<n>_<proto>[_addr|_port|_proto]]`.
fn service_link(key: &str) -> bool {
    let parts: Vec<&str> = key.split('_').collect();
    let at = |i: usize| parts.get(i).copied();
    for (i, p) in parts.iter().enumerate() {
        match *p {
            "service" if matches!(at(i + 1), Some("host")) && i + 2 == parts.len() => return true,
            "service" if matches!(at(i + 1), Some("port")) => return true,
            "port" if i + 1 == parts.len() => return true,
            "port" => {
                let number = at(i + 1).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                let proto = matches!(at(i + 2), Some("tcp" | "udp" | "sctp"));
                let tail = match parts.len() - i {
                    3 => true,
                    4 => matches!(at(i + 3), Some("addr" | "port" | "proto")),
                    _ => false,
                };
                if number && proto && tail {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

/// Every string value of a `*_env` key, recursively.
fn collect_secret_names(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Dict(_, d) => {
            for (k, v) in d {
                match v {
                    Value::String(_, s) if k.ends_with("_env") => {
                        out.insert(s.clone());
                    }
                    _ => collect_secret_names(v, out),
                }
            }
        }
        Value::Array(_, a) => a.iter().for_each(|v| collect_secret_names(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use figment::{Figment, providers::Format};

    use super::*;

    fn keys(layers: &str) -> EnvKeys {
        let dict = |toml: &str| Figment::from(figment::providers::Toml::string(toml)).extract::<Dict>().unwrap();
        EnvKeys::new(&dict(super::super::DEFAULTS), &dict(layers))
    }

    #[test]
    fn names_map_to_keys_or_are_ignored() {
        let k = keys("[[receivers]]\nname = \"oncall\"\ntype = \"webhook\"\nsecret_env = \"TALLY_ONCALL_SECRET\"\n");
        let config = |s: &str| EnvKey::Config(s.to_owned());
        assert_eq!(k.classify("TALLY_LAKE_URL"), config("lake_url"));
        assert_eq!(k.classify("TALLY_LAKE_ENABLED"), config("lake.enabled"));
        assert_eq!(k.classify("TALLY_DATA_DIR"), config("data_dir"));
        assert_eq!(k.classify("TALLY_DATABASE_URL"), config("database_url"));
        assert_eq!(k.classify("TALLY_LOG_FORMAT"), config("log_format"));
        assert_eq!(k.classify("TALLY_OTLP_GRPC_ADDR"), config("otlp.grpc_addr"));
        assert_eq!(k.classify("TALLY_OTLP_GRCP_ADDR"), config("otlp.grcp_addr"));
        assert_eq!(k.classify("TALLY_API_ADDR"), config("api.addr"));
        assert_eq!(k.classify("TALLY_LISTEN_ADDR"), config("server.addr"));
        assert_eq!(k.classify("TALLY_ONCALL_SECRET"), EnvKey::Ignored);
        // The defaults' commented example names it: no receiver uses it here.
        assert_eq!(k.classify("TALLY_PAGERDUTY_ROUTING_KEY"), EnvKey::Unknown);
        for link in [
            "TALLY_SERVICE_HOST",
            "TALLY_SERVICE_PORT",
            "TALLY_SERVICE_PORT_OTLP_GRPC",
            "TALLY_PORT",
            "TALLY_PORT_8080_TCP",
            "TALLY_PORT_8080_TCP_ADDR",
            "TALLY_PORT_4317_TCP_PORT",
            "TALLY_PORT_4317_TCP_PROTO",
            "TALLY_OTLP_SERVICE_HOST",
            "TALLY_API_PORT_8080_TCP_ADDR",
        ] {
            assert_eq!(k.classify(link), EnvKey::Ignored, "{link}");
        }
        assert_eq!(k.classify("TALLY_NO_SUCH_KEY"), EnvKey::Unknown);
        assert_eq!(k.classify("OTHER_X"), EnvKey::Ignored);
    }
}
