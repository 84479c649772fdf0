use tally_core::{
    TenantError, TenantId,
    otlp::common::v1::{AnyValue, KeyValue, any_value::Value},
};

use crate::TenancyConfig;

/// Where a tenant lookup ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(TenantId),
    /// A tenant was named but is not a valid tenant id: refused, never
    /// redirected to the default tenant.
    Invalid(TenantError),
    NotFound,
}

/// Finds the tenant of resources and items, per `[tenancy]`.
#[derive(Debug, Clone)]
pub struct TenantResolver {
    resource_attributes: Vec<String>,
    header: Option<http::HeaderName>,
    host_attributes: Vec<String>,
    /// `(prefix, suffix)` around `{tenant}`, lowercased.
    host_pattern: Option<(String, String)>,
    default_tenant: Option<TenantId>,
}

#[derive(Debug, thiserror::Error)]
pub enum TenancyConfigError {
    #[error("tenancy.header: {0:?} is not a valid header name")]
    Header(String),
    #[error("tenancy.host_pattern: {0:?} must contain `{{tenant}}` exactly once, like `{{tenant}}.example.com`")]
    HostPattern(String),
    #[error("tenancy.default_tenant: {0}")]
    DefaultTenant(TenantError),
}

impl TenantResolver {
    pub fn new(config: &TenancyConfig) -> Result<TenantResolver, TenancyConfigError> {
        let header = match config.header.trim() {
            "" => None,
            h => Some(
                http::HeaderName::try_from(h.to_ascii_lowercase())
                    .map_err(|_| TenancyConfigError::Header(h.to_owned()))?,
            ),
        };
        let host_pattern = match config.host_pattern.trim() {
            "" => None,
            p => {
                let p = p.to_ascii_lowercase();
                match p.split_once("{tenant}") {
                    Some((pre, suf)) if !suf.contains("{tenant}") => Some((pre.to_owned(), suf.to_owned())),
                    _ => return Err(TenancyConfigError::HostPattern(p)),
                }
            }
        };
        let default_tenant = match config.default_tenant.as_str() {
            "" => None,
            t => Some(TenantId::parse(t).map_err(TenancyConfigError::DefaultTenant)?),
        };
        Ok(TenantResolver {
            resource_attributes: config.resource_attributes.clone(),
            header,
            host_attributes: config.host_attributes.clone(),
            host_pattern,
            default_tenant,
        })
    }

    pub fn header_name(&self) -> Option<&http::HeaderName> {
        self.header.as_ref()
    }

    /// Whether items whose resource names no tenant are looked at one by one.
    pub fn resolves_items(&self) -> bool {
        self.host_pattern.is_some() && !self.host_attributes.is_empty()
    }

    pub fn resource_attribute_names(&self) -> &[String] {
        &self.resource_attributes
    }

    pub fn default_tenant(&self) -> Option<&TenantId> {
        self.default_tenant.as_ref()
    }

    /// The tenant of a resource: its attributes, then the request header,
    /// then a host attribute on the resource. The default tenant is not
    /// applied here, since items may still name their own.
    pub fn resource_tenant(&self, attrs: &[KeyValue], header_tenant: Option<&str>) -> Lookup {
        for key in &self.resource_attributes {
            if let Some(v) = attr_string(attrs, key) {
                return parse(&v);
            }
        }
        if let Some(h) = header_tenant {
            return parse(h);
        }
        self.host_tenant(attrs)
    }

    /// The tenant of one span, log record or data point from its host
    /// attribute, when the resource named none.
    pub fn item_tenant(&self, attrs: &[KeyValue]) -> Lookup {
        self.host_tenant(attrs)
    }

    fn host_tenant(&self, attrs: &[KeyValue]) -> Lookup {
        let Some((prefix, suffix)) = &self.host_pattern else {
            return Lookup::NotFound;
        };
        for key in &self.host_attributes {
            if let Some(host) = attr_string(attrs, key) {
                let host = host.to_ascii_lowercase();
                // `acme.example.com:8443` → `acme.example.com`
                let host = host.rsplit_once(':').map_or(host.as_str(), |(h, port)| {
                    if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host.as_str() }
                });
                if let Some(t) = host.strip_prefix(prefix.as_str()).and_then(|r| r.strip_suffix(suffix.as_str())) {
                    // `{tenant}` is one DNS label: `a.b.example.com` does not match.
                    if !t.is_empty() && !t.contains('.') {
                        return parse(t);
                    }
                }
            }
        }
        Lookup::NotFound
    }
}

fn parse(s: &str) -> Lookup {
    match TenantId::parse(s) {
        Ok(t) => Lookup::Found(t),
        Err(e) => Lookup::Invalid(e),
    }
}

/// A string or integer attribute as text (tenant ids are often numeric).
fn attr_string(attrs: &[KeyValue], key: &str) -> Option<String> {
    let v = attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match v {
        AnyValue { value: Some(Value::StringValue(s)) } => Some(s.clone()),
        AnyValue { value: Some(Value::IntValue(i)) } => Some(i.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(Value::StringValue(v.into())) }),
            ..Default::default()
        }
    }

    fn resolver(host_pattern: &str, default_tenant: &str) -> TenantResolver {
        TenantResolver::new(&TenancyConfig {
            resource_attributes: vec!["tenant.id".into(), "org.id".into()],
            header: "X-Tenant-Id".into(),
            host_attributes: vec!["http.host".into(), "server.address".into()],
            host_pattern: host_pattern.into(),
            default_tenant: default_tenant.into(),
        })
        .unwrap()
    }

    fn found(t: &str) -> Lookup {
        Lookup::Found(TenantId::parse(t).unwrap())
    }

    #[test]
    fn first_present_resource_attribute_wins_over_header() {
        let r = resolver("", "");
        assert_eq!(r.resource_tenant(&[kv("org.id", "o"), kv("tenant.id", "t")], Some("h")), found("t"));
        assert_eq!(r.resource_tenant(&[kv("org.id", "o")], Some("h")), found("o"));
        assert_eq!(r.resource_tenant(&[], Some("h")), found("h"));
        assert_eq!(r.resource_tenant(&[], None), Lookup::NotFound);
    }

    #[test]
    fn invalid_tenant_is_not_silently_replaced() {
        let r = resolver("", "fallback");
        assert!(matches!(r.resource_tenant(&[kv("tenant.id", "a/b")], None), Lookup::Invalid(_)));
    }

    #[test]
    fn host_pattern_takes_one_label_and_ignores_port_and_case() {
        let r = resolver("{tenant}.shop.example.com", "");
        assert!(r.resolves_items());
        assert_eq!(r.item_tenant(&[kv("server.address", "Acme.Shop.Example.com:8443")]), found("acme"));
        assert_eq!(r.item_tenant(&[kv("http.host", "acme.shop.example.com")]), found("acme"));
        assert_eq!(r.item_tenant(&[kv("http.host", "a.b.shop.example.com")]), Lookup::NotFound);
        assert_eq!(r.item_tenant(&[kv("http.host", "shop.example.com")]), Lookup::NotFound);
        assert_eq!(r.item_tenant(&[kv("http.host", "acme.other.com")]), Lookup::NotFound);
    }

    #[test]
    fn bad_config_is_named() {
        let mut c = TenancyConfig {
            resource_attributes: vec![],
            header: "".into(),
            host_attributes: vec![],
            host_pattern: "example.com".into(),
            default_tenant: "".into(),
        };
        assert!(TenantResolver::new(&c).unwrap_err().to_string().contains("tenancy.host_pattern"));
        c.host_pattern = "".into();
        c.default_tenant = "no spaces".into();
        assert!(TenantResolver::new(&c).unwrap_err().to_string().contains("tenancy.default_tenant"));
    }
}
