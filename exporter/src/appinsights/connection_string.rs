//! The Application Insights connection string
//! (`InstrumentationKey=…;IngestionEndpoint=https://…/`), parsed as leniently
//! as Microsoft's SDKs taken together (research brief §1): `;`-separated,
//! empty parts skipped, each part split on its first `=`, keys and values
//! trimmed, keys case-insensitive; duplicate keys and strings over 4096
//! chars refused. The endpoint is `IngestionEndpoint`, else one built from
//! `EndpointSuffix` (and `Location`), else the global default. Unknown keys
//! (`LiveEndpoint`, `ApplicationId`, …) are ignored.
//!
//! Errors name the problem and the key, never a value other than the
//! instrumentation key (which Microsoft documents as not secret): a
//! connection string may one day carry something that is.

use reqwest::Url;

/// Longest connection string accepted, in chars (Microsoft's limit).
pub const MAX_LEN: usize = 4096;
/// Ingestion endpoint when the string names neither an endpoint nor a suffix.
pub const DEFAULT_INGESTION_ENDPOINT: &str = "https://dc.services.visualstudio.com";
/// Entra ID token audience when the string has no `AADAudience`.
pub const DEFAULT_AAD_AUDIENCE: &str = "https://monitor.azure.com";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// The iKey (a GUID, as given): goes into every envelope's `iKey`.
    pub instrumentation_key: String,
    /// Scheme, host, optional port and path, without a trailing slash.
    pub ingestion_endpoint: String,
    /// Token audience for Entra ID auth in sovereign clouds.
    pub aad_audience: Option<String>,
}

impl ConnectionString {
    pub fn parse(s: &str) -> Result<ConnectionString, String> {
        if s.chars().count() > MAX_LEN {
            return Err(format!("connection string is longer than {MAX_LEN} characters"));
        }
        let mut pairs: Vec<(String, &str)> = Vec::new();
        for (i, part) in s.split(';').enumerate() {
            if part.trim().is_empty() {
                continue;
            }
            let Some((key, value)) = part.split_once('=') else {
                return Err(format!("connection string part {} is not `key=value`", i + 1));
            };
            let key = key.trim().to_ascii_lowercase();
            if key.is_empty() {
                return Err(format!("connection string part {} has an empty key", i + 1));
            }
            if pairs.iter().any(|(k, _)| *k == key) {
                return Err(format!("connection string names {} twice", display_key(&key)));
            }
            pairs.push((key, value.trim()));
        }
        // Empty values count as absent, so `Location=;` is harmless.
        let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| *v).filter(|v| !v.is_empty());

        let ikey = get("instrumentationkey").ok_or("connection string has no InstrumentationKey")?;
        if !is_guid(ikey) {
            return Err(format!("InstrumentationKey {ikey:?} is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"));
        }
        if let Some(auth) = get("authorization")
            && !auth.eq_ignore_ascii_case("ikey")
        {
            // Entra ID is switched on outside the string, as in Microsoft's SDKs.
            return Err("connection string Authorization must be `ikey` (Entra ID is configured separately)".into());
        }
        let ingestion_endpoint = match (get("ingestionendpoint"), get("endpointsuffix")) {
            (Some(endpoint), _) => check_endpoint("IngestionEndpoint", endpoint)?,
            (None, Some(suffix)) => {
                let suffix = suffix.trim_matches('.');
                let host = match get("location") {
                    Some(location) => format!("{}.dc.{suffix}", location.trim_matches('.')),
                    None => format!("dc.{suffix}"),
                };
                if !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
                    return Err("EndpointSuffix or Location is not a host name".into());
                }
                check_endpoint("EndpointSuffix", &format!("https://{host}"))?
            }
            (None, None) => DEFAULT_INGESTION_ENDPOINT.to_owned(),
        };
        // An audience is a URL or an app id URI: `/` alone or a space inside
        // would make a scope no token endpoint knows.
        let aad_audience = match get("aadaudience").map(|a| a.trim_end_matches('/').trim()) {
            // (The value is not echoed: a pasted secret must not reach a log.)
            Some(a) if a.is_empty() || a.contains(char::is_whitespace) => {
                return Err("AADAudience is not a token audience (e.g. https://monitor.azure.com)".into());
            }
            a => a.map(str::to_owned),
        };
        Ok(ConnectionString { instrumentation_key: ikey.to_owned(), ingestion_endpoint, aad_audience })
    }

    /// Where envelopes are posted: `{IngestionEndpoint}/v2.1/track` (v2.1
    /// always: it is the path that also takes Entra ID tokens).
    pub fn track_url(&self) -> String {
        format!("{}/v2.1/track", self.ingestion_endpoint)
    }

    /// The OAuth scope for an Entra ID token: `{audience}/.default`.
    pub fn aad_scope(&self) -> String {
        format!("{}/.default", self.aad_audience.as_deref().unwrap_or(DEFAULT_AAD_AUDIENCE))
    }
}

/// Keys are compared lower-cased; errors show them as Microsoft spells them.
fn display_key(lower: &str) -> &str {
    const KNOWN: [&str; 9] = [
        "InstrumentationKey",
        "IngestionEndpoint",
        "LiveEndpoint",
        "EndpointSuffix",
        "Location",
        "AADAudience",
        "Authorization",
        "ApplicationId",
        "ProfilerEndpoint",
    ];
    KNOWN.into_iter().find(|k| k.eq_ignore_ascii_case(lower)).unwrap_or(lower)
}

/// Canonical 8-4-4-4-12 hex, any case.
fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A usable endpoint base: https (http only to a loopback host), a host, no
/// credentials, query or fragment; returned without trailing slashes.
fn check_endpoint(key: &str, value: &str) -> Result<String, String> {
    // The URL parser would percent-encode these silently (found by the fuzz
    // target: a NUL became %00); an endpoint never holds them.
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{key} holds a control or whitespace character"));
    }
    let url = Url::parse(value).map_err(|_| format!("{key} is not an absolute URL"))?;
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| format!("{key} has no host"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{key} must not carry credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{key} must not have a query or fragment"));
    }
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(host) => {}
        "http" => {
            return Err(format!(
                "{key} uses http:// for host {host}; only https:// is accepted, except for a loopback \
                 host (127.0.0.1, ::1, localhost) used in tests, because telemetry and tokens would \
                 otherwise travel in clear text"
            ));
        }
        other => return Err(format!("{key} has scheme {other:?}; expected https")),
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn is_loopback(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "[::1]" | "::1") || host.eq_ignore_ascii_case("localhost")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    const IKEY: &str = "00000000-0000-0000-0000-000000000000";

    fn parse(s: &str) -> Result<ConnectionString, String> {
        ConnectionString::parse(s)
    }

    #[test]
    fn reads_the_usual_string() {
        let c = parse(&format!(
            "InstrumentationKey={IKEY};IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/;\
             LiveEndpoint=https://westeurope.livediagnostics.monitor.azure.com/;ApplicationId=1234"
        ))
        .unwrap();
        assert_eq!(c.instrumentation_key, IKEY);
        assert_eq!(c.ingestion_endpoint, "https://westeurope-5.in.applicationinsights.azure.com");
        assert_eq!(c.track_url(), "https://westeurope-5.in.applicationinsights.azure.com/v2.1/track");
        assert_eq!(c.aad_audience, None);
        assert_eq!(c.aad_scope(), "https://monitor.azure.com/.default");
    }

    #[test]
    fn is_lenient_about_spacing_case_empties_and_equals_in_values() {
        let c = parse(&format!(
            " ;instrumentationkey = {IKEY} ;; INGESTIONENDPOINT= https://x.example/a=b/ ; aadaudience=https://monitor.azure.us/;"
        ))
        .unwrap();
        assert_eq!(c.instrumentation_key, IKEY);
        assert_eq!(c.ingestion_endpoint, "https://x.example/a=b");
        assert_eq!(c.aad_audience.as_deref(), Some("https://monitor.azure.us"));
        assert_eq!(c.aad_scope(), "https://monitor.azure.us/.default");
        assert!(parse(&format!("InstrumentationKey={}", IKEY.to_uppercase().replace('0', "A"))).is_ok());
        assert!(parse(&format!("InstrumentationKey={IKEY};Authorization=ikey")).is_ok());
        // Found reading for the fuzz target: `/` alone gave the scope `/.default`.
        for bad in ["/", " / ", "https://a b"] {
            let err = parse(&format!("InstrumentationKey={IKEY};AADAudience={bad}")).unwrap_err();
            assert!(err.contains("AADAudience"), "{err}");
        }
        for bad in ["https://a\u{0}b.example", "https://a.example/p\tq"] {
            let err = parse(&format!("InstrumentationKey={IKEY};IngestionEndpoint={bad}")).unwrap_err();
            assert!(err.contains("control or whitespace"), "{err}");
        }
    }

    #[test]
    fn endpoint_precedence_is_explicit_then_suffix_then_default() {
        let both = parse(&format!(
            "InstrumentationKey={IKEY};EndpointSuffix=applicationinsights.azure.cn;IngestionEndpoint=https://e.example"
        ))
        .unwrap();
        assert_eq!(both.ingestion_endpoint, "https://e.example");
        let suffix = parse(&format!("InstrumentationKey={IKEY};EndpointSuffix=ai.contoso.com")).unwrap();
        assert_eq!(suffix.ingestion_endpoint, "https://dc.ai.contoso.com");
        let located =
            parse(&format!("InstrumentationKey={IKEY};EndpointSuffix=.ai.contoso.com;Location=westus2")).unwrap();
        assert_eq!(located.track_url(), "https://westus2.dc.ai.contoso.com/v2.1/track");
        let default = parse(&format!("InstrumentationKey={IKEY}")).unwrap();
        assert_eq!(default.track_url(), "https://dc.services.visualstudio.com/v2.1/track");
    }

    #[test]
    fn http_only_for_loopback() {
        for ok in ["http://127.0.0.1:35111/", "http://localhost:8080", "http://[::1]:9/"] {
            let c = parse(&format!("InstrumentationKey={IKEY};IngestionEndpoint={ok}")).unwrap();
            assert!(c.ingestion_endpoint.starts_with("http://"), "{ok}");
            assert!(!c.ingestion_endpoint.ends_with('/'), "{ok}");
        }
        let err = parse(&format!("InstrumentationKey={IKEY};IngestionEndpoint=http://dc.example.com/")).unwrap_err();
        assert!(err.contains("only https://") && err.contains("loopback") && err.contains("clear text"), "{err}");
        assert!(parse(&format!("InstrumentationKey={IKEY};IngestionEndpoint=http://127.0.0.2/")).is_err());
        assert!(parse(&format!("InstrumentationKey={IKEY};IngestionEndpoint=ftp://x.example/")).is_err());
    }

    #[test]
    fn refusals_name_the_problem_without_echoing_values() {
        let secretish = "https://user:s3cr3t@x.example/";
        let cases = [
            (String::new(), "no InstrumentationKey"),
            ("IngestionEndpoint=https://x.example".to_owned(), "no InstrumentationKey"),
            ("InstrumentationKey=".to_owned(), "no InstrumentationKey"),
            ("InstrumentationKey=not-a-guid".to_owned(), "not a GUID"),
            (format!("InstrumentationKey={IKEY}0"), "not a GUID"),
            (format!("InstrumentationKey={IKEY};instrumentationKEY={IKEY}"), "InstrumentationKey twice"),
            (format!("InstrumentationKey={IKEY};s3cr3t"), "part 2 is not `key=value`"),
            (format!("InstrumentationKey={IKEY};=s3cr3t"), "part 2 has an empty key"),
            (format!("InstrumentationKey={IKEY};IngestionEndpoint={secretish}"), "must not carry credentials"),
            (format!("InstrumentationKey={IKEY};IngestionEndpoint=s3cr3t"), "IngestionEndpoint is not an absolute URL"),
            (format!("InstrumentationKey={IKEY};IngestionEndpoint=https://x.example/?k=s3cr3t"), "query"),
            (format!("InstrumentationKey={IKEY};Authorization=AAD"), "Authorization must be `ikey`"),
            (format!("InstrumentationKey={IKEY};EndpointSuffix=a/b"), "not a host name"),
            (format!("InstrumentationKey={IKEY};x={}", "y".repeat(4096)), "longer than 4096"),
        ];
        for (input, want) in cases {
            let err = parse(&input).unwrap_err();
            assert!(err.contains(want), "{input:?}: {err}");
            assert!(!err.contains("s3cr3t"), "{input:?} leaks: {err}");
        }
    }
}
