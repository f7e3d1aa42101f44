//! `GET /v1/openapi.json`: the OpenAPI 3.1 description of the application API, the
//! committed `docs/openapi.json` compiled in. Open like `GET /v1/health` (no token): it
//! is public documentation, the same text as in the source.
//!
//! Rule for maintainers: a route added to (or removed from) the router goes into
//! `docs/openapi.json` and [`ROUTES`] in the same change. The tests below fail when the
//! document's operations differ from [`ROUTES`], when the router's source registers a
//! path [`ROUTES`] lacks (or lacks one it lists), or when the router does not answer a
//! listed method on a listed path, or answers another one there with anything but 405.
//! `e2e/test_openapi.py` (schemathesis) checks a real sim's answers against the document.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The document (`docs/openapi.json`).
pub const DOCUMENT: &str = include_str!("../../../docs/openapi.json");

/// Every route of the application API as `(method, path template)`: the router's
/// routes, which the document must describe exactly.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/health"),
    ("GET", "/v1/openapi.json"),
    ("POST", "/v1/keys"),
    ("GET", "/v1/keys"),
    ("GET", "/v1/keys/{key_id}"),
    ("PUT", "/v1/keys/{key_id}/policy"),
    ("POST", "/v1/keys/{key_id}/policy/proposal"),
    ("POST", "/v1/keys/{key_id}/disable"),
    ("POST", "/v1/keys/{key_id}/enable"),
    ("POST", "/v1/keys/{key_id}/enable/proposal"),
    ("POST", "/v1/keys/{key_id}/sign"),
    ("POST", "/v1/rpc/evm"),
    ("POST", "/v1/admin/stop"),
    ("POST", "/v1/admin/resume"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/attestation"),
    ("POST", "/v1/tokens"),
    ("GET", "/v1/tokens"),
    ("DELETE", "/v1/tokens/{token_id}"),
];

/// `GET /v1/openapi.json`: [`DOCUMENT`] as `application/json`.
pub(crate) async fn document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Harness;

    fn app(h: &Harness) -> axum::Router {
        crate::api::tests::bare_app(h, 4096, 8)
    }
    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::StatusCode;
    use axum::Router;
    use http_body_util::BodyExt as _;
    use serde_json::Value;
    use std::collections::BTreeSet;
    use tower::ServiceExt as _;

    const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

    fn parsed() -> Value {
        serde_json::from_str(DOCUMENT).expect("docs/openapi.json is JSON")
    }

    /// Status, `Content-Type`, `Allow` and body of one request with `token` (if any).
    async fn call(
        app: &Router,
        token: Option<&str>,
        method: &str,
        uri: &str,
    ) -> (StatusCode, String, Option<String>, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let res = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let text = |name| {
            res.headers()
                .get(name)
                .map(|v: &axum::http::HeaderValue| v.to_str().unwrap().to_owned())
        };
        let (content_type, allow) = (text(header::CONTENT_TYPE), text(header::ALLOW));
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
        (status, content_type.unwrap_or_default(), allow, body)
    }

    /// A path of `template` with its parameter filled in (a well-formed id nobody has).
    fn concrete(template: &str) -> String {
        template
            .replace("{key_id}", "6b3c1e4e-6a43-4bb4-9d7e-2f0a3c1a9b10")
            .replace("{token_id}", "0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn describes_openapi_3_1_and_exactly_the_routes() {
        let doc = parsed();
        let version = doc["openapi"].as_str().unwrap();
        assert!(version.starts_with("3.1."), "{version}");
        let mut described = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if method != "parameters" {
                    described.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let routes: BTreeSet<_> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        assert_eq!(routes.len(), ROUTES.len(), "a route is listed twice");
        assert_eq!(described, routes);
    }

    /// Every `$ref` names something the document has (a dangling one would make
    /// generators and validators give up).
    #[test]
    fn rejects_a_dangling_ref() {
        fn walk(v: &Value, doc: &Value) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        let pointer = r.strip_prefix('#').expect("local $ref");
                        assert!(doc.pointer(pointer).is_some(), "dangling {r}");
                    }
                    m.values().for_each(|x| walk(x, doc));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, doc)),
                _ => {}
            }
        }
        let doc = parsed();
        walk(&doc, &doc);
    }

    /// The policy schema is docs/policy.schema.json, embedded (without `$schema`/`$id`).
    #[test]
    fn embeds_the_policy_schema_unchanged() {
        let mut schema: Value =
            serde_json::from_str(include_str!("../../../docs/policy.schema.json")).unwrap();
        let m = schema.as_object_mut().unwrap();
        m.remove("$schema");
        m.remove("$id");
        assert_eq!(parsed()["components"]["schemas"]["Policy"], schema);
    }

    #[tokio::test]
    async fn serves_the_document_without_a_token() {
        let h = Harness::start(1).await;
        let (s, content_type, _, body) = call(&app(&h), None, "GET", "/v1/openapi.json").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(content_type, "application/json");
        assert_eq!(body, DOCUMENT.as_bytes());
    }

    /// The path templates the router's source registers (`.route("…"` in every
    /// non-test source file of `src/api/`) are exactly [`ROUTES`]' paths: axum cannot
    /// list its routes, so a route added to the router but not to [`ROUTES`] (and so
    /// neither to the document nor to this module's other tests) is caught here. Methods
    /// on a listed path are held by `routes_every_listed_route_and_rejects_other_methods`.
    #[test]
    fn the_routers_source_registers_exactly_the_listed_paths() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
        let mut registered = BTreeSet::new();
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".rs") || name == "tests.rs" {
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            let source = text.split("#[cfg(test)]").next().unwrap();
            assert!(
                !source.contains(".nest(") && !source.contains("route_service("),
                "{name}: nested or service routes: teach this test to read them"
            );
            for (i, _) in source.match_indices(".route(") {
                let rest = source[i + ".route(".len()..].trim_start();
                let literal = rest
                    .strip_prefix('"')
                    .and_then(|r| r.split('"').next())
                    .unwrap_or_else(|| panic!("{name}: a route whose path is not a literal"));
                registered.insert(literal.to_owned());
            }
        }
        assert!(files > 5, "read the API's sources");
        let listed: BTreeSet<String> = ROUTES.iter().map(|(_, p)| (*p).to_owned()).collect();
        assert_eq!(registered, listed);
    }

    /// Each listed route is routed (its handler answers, not the router's 404 or 405),
    /// and every other method on a listed path is 405 `method_not_allowed`.
    #[tokio::test]
    async fn routes_every_listed_route_and_rejects_other_methods() {
        let h = Harness::start(1).await;
        let app = app(&h);
        let paths: BTreeSet<&str> = ROUTES.iter().map(|(_, p)| *p).collect();
        for template in paths {
            let uri = concrete(template);
            for method in METHODS {
                let listed = ROUTES.contains(&(method, template));
                let (s, _, allow, body) = call(&app, Some(&h.admin_token), method, &uri).await;
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let code = v["error"]["code"].as_str().unwrap_or("");
                if listed {
                    assert!(
                        s != StatusCode::METHOD_NOT_ALLOWED && code != "not_found",
                        "{method} {uri}: {s} {v}"
                    );
                } else {
                    assert_eq!(
                        (s, code),
                        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
                        "{method} {uri}"
                    );
                    let allow = allow.unwrap_or_default();
                    for (m, p) in ROUTES {
                        if *p == template {
                            assert!(allow.contains(m), "{method} {uri}: Allow {allow:?}");
                        }
                    }
                }
            }
        }
    }
}
