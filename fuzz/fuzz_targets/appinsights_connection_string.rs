//! The Application Insights connection string parser
//! (`ConnectionString::parse`, what `[appinsights]` reads from the
//! environment).
//!
//! What must hold, besides no panic:
//! - accepted ⇒ the instrumentation key is an 8-4-4-4-12 hex GUID; the
//!   endpoint is an absolute https URL (http only to a loopback host) with a
//!   host, no credentials, query or fragment, and no trailing slash; the
//!   track URL and the token scope are built from them; an AADAudience, if
//!   kept, is not empty (empty values count as absent);
//! - accepted ⇒ re-encodable: `InstrumentationKey=…;IngestionEndpoint=…`
//!   (`;AADAudience=…`) of what was parsed parses to the same; empty parts
//!   around it change nothing;
//! - refused ⇒ the error does not echo a value carrying credentials (an
//!   `@`), except where it is the instrumentation key's or a key's text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_exporter::appinsights::ConnectionString;

const MAX_LEN: usize = 4096;

fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn check_accepted(c: &ConnectionString) {
    assert!(is_guid(&c.instrumentation_key), "instrumentation key {:?}", c.instrumentation_key);
    let endpoint = &c.ingestion_endpoint;
    assert!(!endpoint.ends_with('/'), "endpoint {endpoint:?} ends with a slash");
    let url = match url::Url::parse(endpoint) {
        Ok(u) => u,
        Err(e) => panic!("endpoint {endpoint:?} is not a URL: {e}"),
    };
    let host = url.host_str().unwrap_or("");
    assert!(!host.is_empty(), "endpoint {endpoint:?} has no host");
    assert!(url.username().is_empty() && url.password().is_none(), "endpoint {endpoint:?} carries credentials");
    assert!(url.query().is_none() && url.fragment().is_none(), "endpoint {endpoint:?} has a query or fragment");
    let loopback = matches!(host, "127.0.0.1" | "[::1]" | "::1") || host.eq_ignore_ascii_case("localhost");
    assert!(url.scheme() == "https" || (url.scheme() == "http" && loopback), "endpoint {endpoint:?}: scheme");
    let track = c.track_url();
    assert!(track.starts_with(endpoint.as_str()) && track.ends_with("/v2.1/track"), "track URL {track:?}");
    assert!(url::Url::parse(&track).is_ok(), "track URL {track:?} is not a URL");
    if let Some(a) = &c.aad_audience {
        assert!(!a.is_empty(), "AADAudience kept as an empty string (token scope {:?})", c.aad_scope());
        assert!(!a.ends_with('/'), "AADAudience {a:?} ends with a slash");
    }
    assert!(c.aad_scope().ends_with("/.default"));
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    match ConnectionString::parse(s) {
        Ok(c) => {
            check_accepted(&c);
            let mut again =
                format!("InstrumentationKey={};IngestionEndpoint={}", c.instrumentation_key, c.ingestion_endpoint);
            if let Some(a) = &c.aad_audience {
                again.push_str(";AADAudience=");
                again.push_str(a);
            }
            // (Normalizing may percent-encode: beyond the length limit the
            // re-encoded string is refused for its length alone.)
            if again.chars().count() <= MAX_LEN {
                assert_eq!(ConnectionString::parse(&again).as_ref(), Ok(&c), "{again:?} does not parse back to the same");
            }
            if s.chars().count() + 3 <= MAX_LEN {
                assert_eq!(
                    ConnectionString::parse(&format!(" ;{s};;")).as_ref(),
                    Ok(&c),
                    "empty parts changed the result"
                );
            }
        }
        Err(e) => {
            assert!(!e.is_empty());
            let pairs: Vec<(String, &str)> = s
                .split(';')
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim()))
                .collect();
            // What an error may name: the instrumentation key (not a secret)
            // and key names.
            let named: Vec<String> = pairs
                .iter()
                .flat_map(|(k, v)| {
                    let mut n = vec![k.clone()];
                    if k == "instrumentationkey" {
                        n.push((*v).to_owned());
                        n.push(format!("{v:?}"));
                    }
                    n
                })
                .collect();
            for (k, v) in &pairs {
                if k == "instrumentationkey" || v.len() < 4 || !v.contains('@') || named.iter().any(|n| n.contains(*v))
                {
                    continue;
                }
                assert!(!e.contains(*v), "the error echoes the {k} value: {e}");
            }
        }
    }
});
