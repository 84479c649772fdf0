//! Spans → Request (SERVER, CONSUMER) or RemoteDependency (CLIENT,
//! PRODUCER, INTERNAL) items, and span events → Exception / Message items.
//!
//! The rules are Python's (`export/trace/_exporter.py`, as
//! tests/data/appinsights/README.md describes them) except where marked ⚑:
//! those are deliberate fixes, listed with their reasons in README.md here.

use std::borrow::Cow;

use reqwest::Url;
use tally_core::otlp::{
    common::v1::KeyValue,
    trace::v1::{
        Span,
        span::{Event, SpanKind},
        status::StatusCode,
    },
};

use super::{
    envelope::{
        Data, ExceptionData, ExceptionDetails, MessageData, Properties, RemoteDependencyData, RequestData, Tags,
        format_duration, insert_property,
    },
    mapping::{Ctx, location_tag, user_tags},
    props::{self, LINKS_PROPERTY, first, id_hex, int, text},
};

/// At most this many links go into `_MS.links` (≈ 8 KB of JSON).
const MAX_LINKS: usize = 100;

pub(crate) fn span(ctx: &Ctx<'_>, span: &Span, out: &mut Vec<super::envelope::Envelope>) {
    let attrs = span.attributes.as_slice();
    let mut span_id = props::hex(&span.span_id);
    let mut tags = Tags::new();
    if let Some(trace) = id_hex(&span.trace_id) {
        tags.insert("ai.operation.id", trace);
    }
    if let Some(parent) = id_hex(&span.parent_span_id) {
        tags.insert("ai.operation.parentId", parent);
    }
    user_tags(attrs, &mut tags);

    let failed = span.status.as_ref().is_some_and(|s| s.code == StatusCode::Error as i32);
    let duration = format_duration(span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano));
    let mut properties = Properties::new();
    props::add_properties(&mut properties, attrs, props::is_standard_span_attribute);
    if !span.links.is_empty() {
        let links: Vec<serde_json::Value> = span
            .links
            .iter()
            .take(MAX_LINKS)
            .map(|l| serde_json::json!({"operation_Id": props::hex(&l.trace_id), "id": props::hex(&l.span_id)}))
            .collect();
        insert_property(&mut properties, LINKS_PROPERTY.to_owned(), serde_json::Value::Array(links).to_string());
    }
    let measurements = props::measurements(attrs);

    let kind = SpanKind::try_from(span.kind).unwrap_or(SpanKind::Internal);
    // The id and name stay for the span's events; most spans have none, so
    // they are copied only then.
    let events = !span.events.is_empty();
    let id = if events { span_id.clone() } else { std::mem::take(&mut span_id) };
    let (name, data) = if matches!(kind, SpanKind::Server | SpanKind::Consumer) {
        location_tag(attrs, &mut tags);
        let r = request(span, attrs, &mut tags, failed);
        (r.name.clone(), Data::RequestData(RequestData { id, duration, properties, measurements, ..r }))
    } else {
        let d = dependency(span, attrs, kind, failed);
        (
            d.name.clone(),
            Data::RemoteDependencyData(RemoteDependencyData { id, duration, properties, measurements, ..d }),
        )
    };
    let event_name = if events { name.clone() } else { String::new() };
    tags.insert("ai.operation.name", name);
    ctx.push(out, span.start_time_unix_nano, tags, data, true);

    for event in &span.events {
        span_event(ctx, span, &span_id, &event_name, event, out);
    }
}

/// RequestData without id, duration, properties and measurements.
fn request(span: &Span, attrs: &[KeyValue], tags: &mut Tags, failed: bool) -> RequestData {
    let mut r = RequestData {
        ver: 2,
        id: String::new(),
        name: span.name.clone(),
        duration: String::new(),
        success: !failed,
        response_code: "0".to_owned(),
        source: None,
        url: None,
        properties: Properties::new(),
        measurements: Default::default(),
    };
    if let Some(method) = first(attrs, &["http.request.method", "http.method"]) {
        if let Some(ua) = first(attrs, &["user_agent.original", "http.user_agent"]) {
            tags.insert("ai.user.userAgent", ua.into_owned());
        }
        r.url = request_url(attrs);
        if let Some(route) = text(attrs, "http.route") {
            r.name = format!("{method} {route}");
        } else if let Some(url) = &r.url {
            r.name = format!("{method} {}", url_path(url));
        }
        let code = status_code(attrs);
        r.response_code = code.unwrap_or(0).to_string();
        // ⚑ The docs' rule for requests: a code under 400, or 401 (the
        // first leg of an auth handshake), succeeds. Python fails every 4xx
        // but passes a 5xx with UNSET status.
        r.success = !failed && code.is_none_or(|c| c < 400 || c == 401);
    } else if text(attrs, "messaging.system").is_some() {
        // ⚑ `messaging.destination.name` (current semconv) is read too.
        let destination = first(attrs, &["messaging.destination.name", "messaging.destination"]);
        let peer = first(attrs, &["client.address", "net.peer.name", "net.peer.ip"]);
        r.source = match (peer, destination) {
            (Some(p), Some(d)) => Some(format!("{p}/{d}")),
            (None, Some(d)) => Some(d.into_owned()),
            _ => None,
        };
    }
    r
}

/// RemoteDependencyData without id, duration, properties and measurements.
fn dependency(span: &Span, attrs: &[KeyValue], kind: SpanKind, failed: bool) -> RemoteDependencyData {
    let mut d = RemoteDependencyData {
        ver: 2,
        id: String::new(),
        name: span.name.clone(),
        result_code: "0".to_owned(),
        data: None,
        dependency_type: None,
        target: peer_target(attrs),
        duration: String::new(),
        success: !failed,
        properties: Properties::new(),
        measurements: Default::default(),
    };
    let az = text(attrs, "az.namespace");
    let messaging = text(attrs, "messaging.system");
    // ⚑ `gen_ai.provider.name` is the current name of `gen_ai.system`.
    let gen_ai = first(attrs, &["gen_ai.system", "gen_ai.provider.name"]);
    let destination = || first(attrs, &["messaging.destination.name", "messaging.destination"]).map(Cow::into_owned);
    match kind {
        SpanKind::Client => {
            if let Some(az) = &az {
                d.dependency_type = Some(az.to_string());
                let host = first(attrs, &["server.address", "net.peer.name", "peer.address"]);
                let dest = first(attrs, &["messaging.destination.name", "message_bus.destination"]);
                if let (Some(h), Some(q)) = (host, dest) {
                    d.target = Some(format!("{h}/{q}"));
                }
            } else if let Some(method) = first(attrs, &["http.request.method", "http.method"]) {
                d.dependency_type = Some("HTTP".to_owned());
                d.data = first(attrs, &["url.full", "http.url"]).map(Cow::into_owned).or_else(|| request_url(attrs));
                d.name = format!("{method} {}", d.data.as_deref().map_or(Cow::Borrowed("/"), url_path));
                if let Some(t) = http_target(attrs, d.data.as_deref()) {
                    d.target = Some(t);
                }
                let code = status_code(attrs);
                d.result_code = code.unwrap_or(0).to_string();
                // ⚑ A client call answered 4xx/5xx failed (OTel semconv's
                // rule for CLIENT spans); Python looks at span status only,
                // so a 429 from an LLM API counted as a success.
                d.success = !failed && code.is_none_or(|c| c < 400);
            } else if let Some(system) = first(attrs, &["db.system.name", "db.system"]) {
                d.dependency_type = Some(db_type(&system).to_owned());
                d.data = first(attrs, &["db.query.text", "db.statement", "db.operation.name", "db.operation"])
                    .map(Cow::into_owned);
                d.target = Some(db_target(attrs, &system, d.target.take()));
            } else if let Some(system) = &messaging {
                d.dependency_type = Some(system.to_string());
                d.target = d.target.take().or_else(destination).or_else(|| Some(system.to_string()));
            } else if let Some(system) = text(attrs, "rpc.system") {
                // ⚑ The type is the RPC system (`grpc`), not the literal
                // "rpc.system"; the target is the server, not the system.
                d.dependency_type = Some(system.to_string());
                d.target = d.target.take().or_else(|| host_port(attrs, None)).or_else(|| Some(system.to_string()));
                if let Some(code) = first(attrs, &["rpc.grpc.status_code", "rpc.response.status_code"]) {
                    d.result_code = code.into_owned();
                }
            } else {
                d.dependency_type = Some("N/A".to_owned());
            }
            // Python's rule, kept: GenAI calls are typed by provider (the
            // portal's GenAI views key on it), whatever transport matched.
            if let Some(g) = &gen_ai {
                d.dependency_type = Some(format!("GenAI | {g}"));
                d.target = d.target.take().or_else(|| Some(g.to_string()));
            }
        }
        SpanKind::Producer => {
            d.dependency_type = Some(match (&az, &messaging) {
                (Some(az), _) => format!("Queue Message | {az}"),
                (None, Some(system)) => format!("Queue Message | {system}"),
                (None, None) => "Queue Message".to_owned(),
            });
            d.target = d.target.take().or_else(destination).or_else(|| messaging.as_ref().map(|s| s.to_string()));
        }
        _ => {
            d.dependency_type = Some(match (&gen_ai, &az) {
                (Some(g), _) => format!("GenAI | {g}"),
                (None, Some(az)) => format!("InProc | {az}"),
                (None, None) => "InProc".to_owned(),
            });
            d.target = None;
        }
    }
    d
}

/// Span event → Exception (`exception` events) or Message item, tied to its
/// span by `ai.operation.parentId` = the span's id.
fn span_event(
    ctx: &Ctx<'_>,
    span: &Span,
    span_id: &str,
    name: &str,
    event: &Event,
    out: &mut Vec<super::envelope::Envelope>,
) {
    let attrs = event.attributes.as_slice();
    let is_exception = event.name == "exception";
    if !is_exception && !ctx.span_events {
        return;
    }
    let mut tags = Tags::new();
    if let Some(trace) = id_hex(&span.trace_id) {
        tags.insert("ai.operation.id", trace);
    }
    tags.insert("ai.operation.parentId", span_id.to_owned());
    // ⚑ The span's operation name, so its exceptions group with it.
    tags.insert("ai.operation.name", name.to_owned());
    if let Some(session) = text(attrs, "session.id").or_else(|| text(&span.attributes, "session.id")) {
        tags.insert("ai.session.id", session.into_owned());
    }
    let mut properties = Properties::new();
    props::add_properties(&mut properties, attrs, props::is_standard_span_attribute);
    let data = if is_exception {
        Data::ExceptionData(ExceptionData {
            ver: 2,
            exceptions: vec![exception_details(attrs, None)],
            severity_level: None,
            problem_id: None,
            properties,
            measurements: Default::default(),
        })
    } else {
        Data::MessageData(MessageData {
            ver: 2,
            message: event.name.clone(),
            severity_level: None,
            properties,
            measurements: Default::default(),
        })
    };
    ctx.push(out, event.time_unix_nano, tags, data, true);
}

/// `exceptions[0]` from `exception.*` attributes. ⚑ No stack is sent as no
/// `stack` (Python sends the text "None"); the message is the exception's
/// own (`fallback` only when it has none).
pub(crate) fn exception_details(attrs: &[KeyValue], fallback: Option<&str>) -> ExceptionDetails {
    let type_name = text(attrs, "exception.type").map_or_else(|| "Exception".to_owned(), Cow::into_owned);
    let message = text(attrs, "exception.message")
        .map(Cow::into_owned)
        .or_else(|| fallback.map(str::to_owned))
        .unwrap_or_else(|| "Exception".to_owned());
    let stack = text(attrs, "exception.stacktrace").map(Cow::into_owned);
    ExceptionDetails { type_name, message, has_full_stack: stack.is_some(), stack }
}

fn status_code(attrs: &[KeyValue]) -> Option<i64> {
    ["http.response.status_code", "http.status_code"].iter().find_map(|k| int(attrs, k)).filter(|c| *c > 0)
}

/// A server span's URL: `url.full`, `http.url`, or built from scheme,
/// host, port, path and query. ⚑ The scheme's default port is left out
/// (Python writes `https://host:443/…`), so the same request has one URL
/// whichever attributes described it.
fn request_url(attrs: &[KeyValue]) -> Option<String> {
    if let Some(full) = first(attrs, &["url.full", "http.url"]) {
        return Some(full.into_owned());
    }
    let scheme = first(attrs, &["url.scheme", "http.scheme"])?;
    let (path, query) = match text(attrs, "url.path") {
        Some(p) => (p, text(attrs, "url.query")),
        None => (text(attrs, "http.target")?, None),
    };
    let host = host_port(attrs, Some(&scheme))
        .or_else(|| first(attrs, &["http.host", "http.server_name", "net.host.name"]).map(Cow::into_owned))
        .unwrap_or_default();
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    Some(format!("{scheme}://{host}{path}{query}"))
}

/// `server.address[:server.port]`, the port left out when absent or the
/// default of `scheme`.
fn host_port(attrs: &[KeyValue], scheme: Option<&str>) -> Option<String> {
    let host = text(attrs, "server.address")?;
    let port = int(attrs, "server.port").filter(|p| Some(*p) != scheme.and_then(default_port));
    Some(match port {
        Some(p) => format!("{host}:{p}"),
        None => host.into_owned(),
    })
}

fn default_port(scheme: &str) -> Option<i64> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// An HTTP dependency's target. ⚑ Without `server.port` it is the host
/// alone (Python writes `host:None`), and the scheme for the default port
/// also comes from `url.full` when `url.scheme` is absent.
fn http_target(attrs: &[KeyValue], url: Option<&str>) -> Option<String> {
    let parsed = url.and_then(|u| Url::parse(u).ok());
    let scheme =
        text(attrs, "url.scheme").map(Cow::into_owned).or_else(|| parsed.as_ref().map(|u| u.scheme().to_owned()));
    if let Some(t) = host_port(attrs, scheme.as_deref()) {
        return Some(t);
    }
    if let Some(peer) = text(attrs, "peer.service") {
        return Some(peer.into_owned());
    }
    if let Some(host) = text(attrs, "http.host") {
        let default = scheme.as_deref().and_then(default_port).map(|p| format!(":{p}"));
        return Some(match default {
            Some(d) => host.strip_suffix(d.as_str()).unwrap_or(&host).to_owned(),
            None => host.into_owned(),
        });
    }
    let parsed = parsed?;
    let host = parsed.host_str()?;
    // `Url::port` is `None` for the scheme's default port.
    Some(match parsed.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    })
}

/// Python's first guess for every dependency: `peer.service`, else
/// `net.peer.name`/`net.peer.ip` with a non-default `net.peer.port`.
fn peer_target(attrs: &[KeyValue]) -> Option<String> {
    if let Some(service) = text(attrs, "peer.service") {
        return Some(service.into_owned());
    }
    let host = first(attrs, &["net.peer.name", "net.peer.ip"])?;
    let scheme = text(attrs, "url.scheme");
    let db = first(attrs, &["db.system.name", "db.system"]);
    let port = int(attrs, "net.peer.port").filter(|p| {
        Some(*p) != scheme.as_deref().and_then(default_port) && Some(*p) != db.as_deref().and_then(db_default_port)
    });
    Some(match port {
        Some(p) => format!("{host}:{p}"),
        None => host.into_owned(),
    })
}

fn db_type(system: &str) -> &str {
    match system {
        "db2"
        | "ibm_db2"
        | "derby"
        | "mariadb"
        | "mssql"
        | "microsoft.sql_server"
        | "oracle"
        | "oracle.db"
        | "sqlite"
        | "other_sql"
        | "hsqldb"
        | "h2"
        | "h2database" => "SQL",
        other => other,
    }
}

fn db_default_port(system: &str) -> Option<i64> {
    match system {
        "postgresql" => Some(5432),
        "mysql" | "mariadb" => Some(3306),
        "mssql" | "microsoft.sql_server" => Some(1433),
        "oracle" | "oracle.db" => Some(1521),
        "db2" | "ibm_db2" => Some(50000),
        "redis" => Some(6379),
        "cassandra" => Some(9042),
        "mongodb" => Some(27017),
        _ => None,
    }
}

/// `{host[:non-default port]}|{db name}`, or whichever half exists, or the
/// system.
fn db_target(attrs: &[KeyValue], system: &str, peer: Option<String>) -> String {
    let host = peer.or_else(|| {
        let host = text(attrs, "server.address")?;
        Some(match int(attrs, "server.port").filter(|p| Some(*p) != db_default_port(system)) {
            Some(p) => format!("{host}:{p}"),
            None => host.into_owned(),
        })
    });
    let db = first(attrs, &["db.namespace", "db.name"]);
    match (host, db) {
        (Some(h), Some(d)) => format!("{h}|{d}"),
        (Some(h), None) => h,
        (None, Some(d)) => d.into_owned(),
        (None, None) => system.to_owned(),
    }
}

/// The path of a URL (`/` when it has none); a text that does not parse as
/// a URL is read from its first `/` after the authority.
fn url_path(url: &str) -> Cow<'_, str> {
    if let Ok(u) = Url::parse(url) {
        let p = u.path();
        return Cow::Owned(if p.is_empty() { "/".to_owned() } else { p.to_owned() });
    }
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    Cow::Borrowed(path.split(['?', '#']).next().filter(|p| !p.is_empty()).unwrap_or("/"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use tally_core::otlp::common::v1::{AnyValue, any_value::Value};

    use super::*;

    fn s(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(Value::StringValue(v.into())) }),
            ..Default::default()
        }
    }
    fn i(k: &str, v: i64) -> KeyValue {
        KeyValue { key: k.into(), value: Some(AnyValue { value: Some(Value::IntValue(v)) }), ..Default::default() }
    }

    #[test]
    fn urls_drop_default_ports_and_paths_parse() {
        let a = [
            s("url.scheme", "https"),
            s("server.address", "h"),
            i("server.port", 443),
            s("url.path", "/p"),
            s("url.query", "q=1"),
        ];
        assert_eq!(request_url(&a).unwrap(), "https://h/p?q=1");
        let b = [s("url.scheme", "http"), s("server.address", "h"), i("server.port", 8080), s("http.target", "/x?y")];
        assert_eq!(request_url(&b).unwrap(), "http://h:8080/x?y");
        assert_eq!(url_path("https://h:1/a/b?c"), "/a/b");
        assert_eq!(url_path("https://h"), "/");
        assert_eq!(url_path("not a url/with/path?q"), "/with/path");
    }

    #[test]
    fn http_targets_never_say_none() {
        let a = [s("server.address", "api.openai.com")];
        assert_eq!(http_target(&a, Some("https://api.openai.com/v1/x")).unwrap(), "api.openai.com");
        let b = [s("server.address", "api.stripe.com"), i("server.port", 443)];
        assert_eq!(http_target(&b, Some("https://api.stripe.com/v1")).unwrap(), "api.stripe.com");
        assert_eq!(http_target(&[], Some("https://x.example:8443/p")).unwrap(), "x.example:8443");
        assert_eq!(http_target(&[], Some("https://x.example:443/p")).unwrap(), "x.example");
        assert_eq!(http_target(&[s("http.host", "x:443")], Some("https://x/p")).unwrap(), "x");
        assert_eq!(http_target(&[], None), None);
    }

    #[test]
    fn db_targets() {
        let a = [s("server.address", "db"), i("server.port", 5432), s("db.namespace", "orders")];
        assert_eq!(db_target(&a, "postgresql", None), "db|orders");
        let b = [s("server.address", "db"), i("server.port", 6000)];
        assert_eq!(db_target(&b, "postgresql", None), "db:6000");
        assert_eq!(db_target(&[], "sqlite", None), "sqlite");
        assert_eq!(db_type("mssql"), "SQL");
        assert_eq!(db_type("cosmosdb"), "cosmosdb");
    }
}
