//! `[[receivers]]`: where notifications go, checked at start: the URL, the
//! secrets named by environment variables, and that the target is not on a
//! loopback or private network unless the receiver says `allow_private`.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
};

use base64::Engine;
use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiverKind {
    /// Alertmanager webhook body (version 4), Standard Webhooks signature.
    Webhook,
    /// PagerDuty Events API v2.
    Pagerduty,
}

/// One `[[receivers]]` entry as written.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ReceiverKind,
    /// Webhook: required. PagerDuty: default `https://events.pagerduty.com/v2/enqueue`.
    pub url: Option<String>,
    /// Webhook: the variable holding the `whsec_…` signing secret.
    pub secret_env: Option<String>,
    /// PagerDuty: the variable holding the integration's routing key.
    pub routing_key_env: Option<String>,
    /// Allow a loopback or private-network target (refused otherwise, so a
    /// rule cannot be used to probe the internal network).
    #[serde(default)]
    pub allow_private: bool,
}

impl std::fmt::Debug for ReceiverConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `check-config` prints this: no token from a URL.
        f.debug_struct("ReceiverConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url.as_deref().map(tally_core::redact::url))
            .field("secret_env", &self.secret_env)
            .field("routing_key_env", &self.routing_key_env)
            .field("allow_private", &self.allow_private)
            .finish()
    }
}

pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// A checked receiver, secrets read.
#[derive(Clone)]
pub struct Receiver {
    pub name: String,
    pub kind: ReceiverKind,
    pub url: Url,
    /// The webhook signing key (the secret's base64 part, decoded).
    pub signing_key: Option<Vec<u8>>,
    pub routing_key: Option<String>,
    pub allow_private: bool,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No secrets in logs.
        f.debug_struct("Receiver")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &tally_core::redact::url(self.url.as_str()))
            .finish()
    }
}

impl ReceiverConfig {
    /// Checks the entry and reads its secrets from `env` (`None`: checks
    /// everything but the secrets, which are left unset); the error names
    /// the receiver and the field.
    pub fn check(&self, env: Option<crate::lake::EnvLookup<'_>>) -> Result<Receiver, String> {
        let at = format!("receivers[{}]", self.name);
        if self.name.is_empty() {
            return Err("receivers: every receiver needs a name".into());
        }
        let url = match (self.kind, &self.url) {
            (_, Some(u)) => u.clone(),
            (ReceiverKind::Pagerduty, None) => PAGERDUTY_URL.into(),
            (ReceiverKind::Webhook, None) => return Err(format!("{at}.url: a webhook needs a url")),
        };
        let url =
            Url::parse(&url).map_err(|e| format!("{at}.url: {:?} is not a URL: {e}", tally_core::redact::url(&url)))?;
        if !["http", "https"].contains(&url.scheme()) {
            return Err(format!("{at}.url: scheme must be http or https"));
        }
        if !self.allow_private
            && let Some(why) = private_host(&url)
        {
            return Err(format!(
                "{at}.url: {} is {why}; set allow_private = true on this receiver if that is intended",
                url.host_str().unwrap_or_default()
            ));
        }
        let read = |field: &str, var: &Option<String>| -> Result<Option<String>, String> {
            match (var, env) {
                (None, _) | (_, None) => Ok(None),
                (Some(v), Some(env)) => {
                    env(v).filter(|s| !s.is_empty()).map(Some).ok_or_else(|| format!("{at}.{field}: {v} is not set"))
                }
            }
        };
        let signing_key = match read("secret_env", &self.secret_env)? {
            Some(secret) => Some(signing_key(&secret).map_err(|e| format!("{at}.secret_env: {e}"))?),
            None => None,
        };
        let routing_key = read("routing_key_env", &self.routing_key_env)?;
        match self.kind {
            ReceiverKind::Pagerduty if self.routing_key_env.is_none() => {
                return Err(format!("{at}.routing_key_env: a pagerduty receiver needs its routing key"));
            }
            ReceiverKind::Webhook if self.routing_key_env.is_some() => {
                return Err(format!("{at}.routing_key_env: only for pagerduty receivers"));
            }
            ReceiverKind::Pagerduty if self.secret_env.is_some() => {
                return Err(format!("{at}.secret_env: only for webhook receivers"));
            }
            ReceiverKind::Webhook if self.secret_env.is_none() => {
                tracing::warn!(receiver = %self.name, "webhook receiver has no secret_env: its requests are not signed");
            }
            _ => {}
        }
        Ok(Receiver {
            name: self.name.clone(),
            kind: self.kind,
            url,
            signing_key,
            routing_key,
            allow_private: self.allow_private,
        })
    }
}

/// Checks every receiver (names unique); `env` as in [`ReceiverConfig::check`].
pub fn check_receivers(
    receivers: &[ReceiverConfig],
    env: Option<crate::lake::EnvLookup<'_>>,
) -> Result<Vec<Receiver>, String> {
    let mut out: Vec<Receiver> = Vec::new();
    for r in receivers {
        let checked = r.check(env)?;
        if out.iter().any(|o| o.name == checked.name) {
            return Err(format!("receivers[{}].name: another receiver has this name", r.name));
        }
        out.push(checked);
    }
    Ok(out)
}

/// A Standard Webhooks secret: `whsec_` then the key in base64.
pub fn signing_key(secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret.strip_prefix("whsec_").ok_or("the secret must start with whsec_")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "the part after whsec_ must be base64".to_owned())?;
    if key.len() < 16 {
        return Err("the key must be at least 16 bytes (24 base64 characters)".into());
    }
    Ok(key)
}

/// Why the URL's host is not a public address, if it is not. Host names
/// are checked again when they resolve (see [`PublicOnly`]).
pub fn private_host(url: &Url) -> Option<&'static str> {
    let host = url.host_str()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return private_ip(ip);
    }
    let lower = host.to_ascii_lowercase();
    let lower = lower.trim_end_matches('.');
    if lower == "localhost" || lower.ends_with(".localhost") {
        return Some("a loopback name");
    }
    if lower.ends_with(".internal") || lower.ends_with(".local") || !lower.contains('.') {
        return Some("an internal name");
    }
    None
}

/// Why `ip` is not a public address, if it is not: loopback, private,
/// link-local (cloud metadata), shared, unspecified, multicast, or Azure's
/// platform address 168.63.129.16.
pub fn private_ip(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => private_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return private_v4(v4);
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("a loopback address")
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some("not a unicast address")
            } else if first & 0xfe00 == 0xfc00 {
                Some("a private address (unique local)")
            } else if first & 0xffc0 == 0xfe80 {
                Some("a link-local address")
            } else {
                None
            }
        }
    }
}

fn private_v4(v4: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = v4.octets();
    if v4.is_loopback() {
        Some("a loopback address")
    } else if v4.is_private() {
        Some("a private address")
    } else if v4.is_link_local() {
        Some("a link-local address (cloud metadata)")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a shared (carrier-grade NAT) address")
    } else if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || a == 0 {
        Some("not a unicast address")
    } else if v4 == Ipv4Addr::new(168, 63, 129, 16) {
        Some("Azure's platform address")
    } else {
        None
    }
}

/// A resolver that refuses names resolving to non-public addresses, so a
/// public name pointed at an internal address (or rebound to one after the
/// config check) is refused when it is used.
#[derive(Debug, Clone, Default)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = addrs.iter().copied().filter(|a| private_ip(a.ip()).is_none()).collect();
            if public.is_empty() {
                return Err(format!("{host} resolves to no public address ({addrs:?}); allow_private is off").into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client of a receiver: no redirects (a redirect could lead
/// anywhere), and for public-only receivers the checking resolver.
pub fn client(allow_private: bool, timeout: std::time::Duration) -> reqwest::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tally/", env!("CARGO_PKG_VERSION")));
    if !allow_private {
        b = b.dns_resolver(Arc::new(PublicOnly));
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(u: &str) -> Option<&'static str> {
        private_host(&Url::parse(u).unwrap())
    }

    #[test]
    fn private_targets_are_recognised() {
        for u in [
            "http://127.0.0.1:9099/hook",
            "http://localhost/x",
            "http://10.1.2.3/",
            "http://192.168.0.10/",
            "http://172.20.0.1/",
            "http://169.254.169.254/metadata",
            "http://168.63.129.16/",
            "http://100.64.0.1/",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://0.0.0.0/",
            "http://db.internal/",
            "http://intranet/",
        ] {
            assert!(host(u).is_some(), "{u} should be refused");
        }
        for u in ["https://hooks.example.com/x", "http://8.8.8.8/", "https://[2001:4860::8888]/"] {
            assert_eq!(host(u), None, "{u} is public");
        }
    }

    #[test]
    fn receivers_are_checked_with_their_secrets() {
        let env = &|k: &str| match k {
            "GOOD" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()),
            "BAD" => Some("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()),
            "PD" => Some("R0UTINGKEY".to_owned()),
            _ => None,
        };
        let r = |url: &str, secret: Option<&str>, private: bool| ReceiverConfig {
            name: "oncall".into(),
            kind: ReceiverKind::Webhook,
            url: Some(url.into()),
            secret_env: secret.map(Into::into),
            routing_key_env: None,
            allow_private: private,
        };
        assert!(r("http://127.0.0.1:9099/hook", Some("GOOD"), true).check(Some(env)).is_ok());
        let e = r("http://127.0.0.1:9099/hook", Some("GOOD"), false).check(Some(env)).unwrap_err();
        assert!(e.contains("receivers[oncall].url") && e.contains("allow_private"), "{e}");
        assert!(r("https://x.example.com/", Some("BAD"), false).check(Some(env)).unwrap_err().contains("whsec_"));
        assert!(
            r("https://x.example.com/", Some("MISSING"), false)
                .check(Some(env))
                .unwrap_err()
                .contains("MISSING is not set")
        );
        assert!(r("ftp://x.example.com/", None, false).check(Some(env)).unwrap_err().contains("scheme"));
        let pd = ReceiverConfig {
            name: "pd".into(),
            kind: ReceiverKind::Pagerduty,
            url: None,
            secret_env: None,
            routing_key_env: Some("PD".into()),
            allow_private: false,
        };
        let checked = pd.check(Some(env)).unwrap();
        assert_eq!((checked.url.as_str(), checked.routing_key.as_deref()), (PAGERDUTY_URL, Some("R0UTINGKEY")));
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_internal_addresses() {
        let name: Name = "localhost".parse().unwrap();
        let err = match PublicOnly.resolve(name).await {
            Ok(_) => panic!("localhost must not resolve"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("no public address"), "{err}");
    }
}
