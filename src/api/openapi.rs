//! The HTTP API's contract: `GET /openapi.json` serves the OpenAPI 3.1
//! document (`openapi.json` beside this file, written by hand), and unknown
//! paths get a JSON 404 naming the path. The tests keep the document and the
//! routers in step: every route the code declares is in the document with
//! its methods, and nothing else is.

use axum::{
    Router,
    http::{HeaderMap, HeaderName, Method, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};

use super::ApiError;

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// `GET /openapi.json` (no credentials needed: it describes, it reveals nothing).
pub fn router() -> Router {
    Router::new().route("/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], DOCUMENT) }))
}

/// The answer for a path no route has.
pub async fn not_found(method: Method, uri: Uri) -> Response {
    ApiError::not_found(format!("no route for {method} {} (see GET /openapi.json)", uri.path())).into_response()
}

/// One-port mode's answer for a path no route has: gRPC's "unimplemented"
/// to a gRPC call (as tonic answers), else [`not_found`].
pub async fn one_port_not_found(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/grpc"));
    if grpc {
        return ([(header::CONTENT_TYPE, "application/grpc"), (HeaderName::from_static("grpc-status"), "12")], ())
            .into_response();
    }
    not_found(method, uri).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::disallowed_methods)] // a test reading the source tree
mod tests {
    use std::{
        collections::{BTreeMap, BTreeSet},
        path::Path,
    };

    /// Router `route(PATH, get(…).post(…))` calls in `dir`'s Rust files:
    /// path → methods. `X::HTTP_PATH` constants are the OTLP signals'.
    fn routes_in(dir: &Path, out: &mut BTreeMap<String, BTreeSet<String>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                routes_in(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let needle = [".rou", "te("].concat(); // not itself a match in this file
                for (i, _) in text.match_indices(&needle) {
                    let args = &text[i + needle.len()..];
                    let mut depth = 1;
                    let end = args
                        .char_indices()
                        .find(|&(_, c)| {
                            depth += match c {
                                '(' => 1,
                                ')' => -1,
                                _ => 0,
                            };
                            depth == 0
                        })
                        .map(|(j, _)| j)
                        .unwrap();
                    let Some((first, rest)) = args[..end].split_once(',') else { continue }; // prose
                    let first = first.trim();
                    let route = match first.strip_suffix("::HTTP_PATH") {
                        Some(signal) => format!("/v1/{}", signal.to_lowercase()),
                        None => first.trim_matches('"').to_owned(),
                    };
                    let methods = out.entry(route).or_default();
                    for m in ["get", "post", "put", "delete", "patch"] {
                        let called = rest.match_indices(&format!("{m}(")).any(|(k, _)| {
                            k == 0 || !rest[..k].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':')
                        });
                        if called {
                            methods.insert(m.to_owned());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_route_is_in_the_document_and_nothing_else() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut code = BTreeMap::new();
        for dir in ["src", "collector/src"] {
            routes_in(&root.join(dir), &mut code);
        }
        assert!(code.len() > 20, "the scan found the routers: {code:?}");
        let doc: serde_json::Value = serde_json::from_str(super::DOCUMENT).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let documented: BTreeMap<String, BTreeSet<String>> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(path, ops)| {
                let methods = ops.as_object().unwrap().keys().filter(|k| *k != "parameters").cloned().collect();
                (path.clone(), methods)
            })
            .collect();
        assert_eq!(documented, code, "openapi.json (left) and the routers (right) differ");
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap().iter().filter(|(k, _)| *k != "parameters") {
                assert!(op["operationId"].is_string(), "{method} {path}: operationId");
                let responses = op["responses"].as_object().unwrap();
                for (status, r) in responses.iter().filter(|(s, _)| s.starts_with('4') || s.starts_with('5')) {
                    assert!(r["content"].is_object() || r["$ref"].is_string(), "{method} {path} {status}: error body");
                }
            }
        }
    }
}
