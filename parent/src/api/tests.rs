//! Tests of the application API through its router (the fake enclave of
//! [`crate::testing`] behind a real relay and store).

use super::*;
use crate::error::SEALED_STATE_INVALID_MESSAGE;
use crate::format;
use crate::store::SqliteStore as Store;
use crate::testing::{relay_config, Harness, G_ADDRESS, G_COMPRESSED};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::Router;
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// The router, with the harness's admin token on every request that has none.
pub(crate) fn app(h: &Harness, max_body_bytes: usize, in_flight: usize) -> Router {
    crate::testing::authorized(
        bare_app(h, max_body_bytes, in_flight),
        h.admin_token.clone(),
    )
}

/// The router as served: requests carry only the headers a test gives them.
pub(crate) fn bare_app(h: &Harness, max_body_bytes: usize, in_flight: usize) -> Router {
    router(AppState {
        service: h.service.clone(),
        in_flight: Arc::new(Semaphore::new(in_flight)),
        read_timeout: Duration::from_secs(2),
        max_body_bytes,
    })
}

pub(crate) async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json)
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error code>")
}

pub(crate) async fn create(app: &Router, body: &str) -> Value {
    let (s, v) = send(app, "POST", "/v1/keys", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}

#[tokio::test]
async fn health_reports_mode_and_pcrs() {
    let h = Harness::start(1).await;
    let (s, v) = send(&app(&h, 1024, 8), "GET", "/v1/health", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["mode"], "simulation");
    assert_eq!(v["pcrs"]["0"], hex::encode(crate::testing::fake_pcr0()));
}

#[tokio::test]
async fn rejects_health_before_ready_and_requests_without_enclave() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_in_memory().unwrap();
    let service = crate::service::Service::start(
        relay_config(&dir.path().join("none.sock"), 1),
        Arc::new(store.clone()),
        "default",
        crate::testing::identity_check(),
    );
    let relay = service.relay().clone();
    let (_, admin) = crate::testing::token(&store, "admin", None, None).await;
    let app = router(AppState {
        service,
        in_flight: Arc::new(Semaphore::new(8)),
        read_timeout: Duration::from_secs(2),
        max_body_bytes: 1024,
    });
    let app = crate::testing::authorized(app, admin);
    let (s, v) = send(&app, "GET", "/v1/health", None).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    );
    let (s, v) = send(&app, "POST", "/v1/keys", Some(r#"{"algorithm":"ed25519"}"#)).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "enclave_unavailable")
    );
    let (s, v) = send(&app, "GET", "/v1/attestation", None).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "enclave_unavailable")
    );
    relay.shutdown();
}

#[tokio::test]
async fn creates_lists_and_gets_keys() {
    let h = Harness::start(2).await;
    let app = app(&h, 4096, 8);
    let evm = create(&app, r#"{"algorithm":"secp256k1","label":"bot"}"#).await;
    assert_eq!(evm["algorithm"], "secp256k1");
    assert_eq!(evm["public_key"], format!("0x{G_COMPRESSED}"));
    assert_eq!(evm["address"], G_ADDRESS);
    assert_eq!(evm["policy_version"], 1);
    assert_eq!(evm["label"], "bot");
    assert!(evm["created_at"].as_str().unwrap().ends_with('Z'));
    let id = evm["key_id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);

    let sol = create(
        &app,
        r#"{"algorithm":"ed25519","policy":{"enabled":true,"solana":{}}}"#,
    )
    .await;
    let sol_key = format::to_base58(&[0x11; 32]);
    assert_eq!(sol["public_key"], sol_key);
    assert_eq!(sol["address"], sol_key);

    let (s, v) = send(&app, "GET", "/v1/keys?limit=10", None).await;
    assert_eq!(s, StatusCode::OK);
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["key_id"], sol["key_id"], "newest first");

    let (s, v) = send(&app, "GET", &format!("/v1/keys/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["policy"], json!({"enabled": true}), "default policy");
    assert_eq!(v["address"], G_ADDRESS);
}

#[tokio::test]
async fn rejects_malformed_requests() {
    let h = Harness::start(1).await;
    let app = app(&h, 256, 8);
    let cases: &[(&str, &str, Option<&str>, StatusCode, &str)] = &[
        (
            "POST",
            "/v1/keys",
            Some("{not json"),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/keys",
            Some(r#"{"algorithm":"ed25519","x":1}"#),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/keys",
            Some(r#"{"algorithm":"rsa"}"#),
            StatusCode::BAD_REQUEST,
            "unknown_algorithm",
        ),
        (
            "POST",
            "/v1/keys",
            Some(r#"{"algorithm":"ed25519","policy":[1]}"#),
            StatusCode::BAD_REQUEST,
            "invalid_policy",
        ),
        (
            "POST",
            "/v1/keys",
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "GET",
            "/v1/keys?limit=0",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "GET",
            "/v1/keys?limit=1001",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "GET",
            "/v1/keys?limit=1&limit=2",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "GET",
            "/v1/keys?cursor=1",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "GET",
            "/v1/keys/not-a-uuid",
            None,
            StatusCode::NOT_FOUND,
            "key_not_found",
        ),
        (
            "GET",
            "/v1/keys/6b3c1e4e-6a43-4bb4-9d7e-2f0a3c1a9b10",
            None,
            StatusCode::NOT_FOUND,
            "key_not_found",
        ),
        (
            "POST",
            "/v1/keys/6b3c1e4e-6a43-4bb4-9d7e-2f0a3c1a9b10/sign",
            Some(r#"{"kind":"evm_transaction","payload":"0x02"}"#),
            StatusCode::NOT_FOUND,
            "key_not_found",
        ),
        (
            "PUT",
            "/v1/keys/6b3c1e4e-6a43-4bb4-9d7e-2f0a3c1a9b10/policy",
            Some(r#"{"policy":{}}"#),
            StatusCode::NOT_FOUND,
            "key_not_found",
        ),
        (
            "GET",
            "/v1/nothing",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "DELETE",
            "/v1/keys",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "GET",
            "/v1/attestation?nonce=zz",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_nonce",
        ),
    ];
    for (method, uri, body, status, want) in cases {
        let (s, v) = send(&app, method, uri, *body).await;
        assert_eq!(
            (s, code(&v)),
            (*status, *want),
            "{method} {uri} {body:?}: {v}"
        );
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    let big = format!(r#"{{"algorithm":"ed25519","label":"{}"}}"#, "a".repeat(300));
    let (s, v) = send(&app, "POST", "/v1/keys", Some(&big)).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );
    let long_nonce = format!("/v1/attestation?nonce={}", "ab".repeat(513));
    let (s, v) = send(&app, "GET", &long_nonce, None).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_nonce"));
    assert!(
        h.store.list_keys(10).await.unwrap().is_empty(),
        "nothing written"
    );
}

/// A struct also deserializes from a JSON array (serde's sequence form); the API's
/// bodies are objects only.
#[tokio::test]
async fn rejects_a_body_that_is_not_a_json_object() {
    let h = Harness::start(1).await;
    let app = app(&h, 4096, 8);
    for (uri, body) in [
        ("/v1/keys", r#"["ed25519",null,null,null]"#),
        ("/v1/tokens", r#"["bot",["sign"],null,null]"#),
        ("/v1/admin/stop", "[]"),
        ("/v1/admin/stop", " \n[]"),
        ("/v1/admin/stop", "null"),
        ("/v1/admin/stop", "\"{}\""),
    ] {
        let (s, v) = send(&app, "POST", uri, Some(body)).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_json"),
            "{uri} {body}"
        );
    }
    assert!(
        h.store.list_keys(10).await.unwrap().is_empty(),
        "no key created"
    );
    assert_eq!(
        h.store.list_tokens().await.unwrap().len(),
        1,
        "no token created"
    );
    // Positive twin: the same requests as objects (leading white space allowed).
    let (s, v) = send(&app, "POST", "/v1/admin/stop", Some(" \n{}")).await;
    assert_eq!(
        (s, v["stopped"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{v}"
    );
}

/// A repeated key inside a `Value` field (a typed-data payload, a policy) was read
/// last-wins and passed on as one document.
#[tokio::test]
async fn rejects_a_body_that_repeats_a_key() {
    let h = Harness::start(1).await;
    let app = app(&h, 4096, 8);
    for body in [
        r#"{"algorithm": "ed25519", "label": "a", "label": "b"}"#,
        r#"{"algorithm": "ed25519", "policy": {"enabled": false, "enabled": true}}"#,
    ] {
        let (s, v) = send(&app, "POST", "/v1/keys", Some(body)).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_json"),
            "{body}"
        );
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("repeats the key"));
    }
    assert!(
        h.store.list_keys(10).await.unwrap().is_empty(),
        "no key created"
    );
    create(
        &app,
        r#"{"algorithm": "ed25519", "policy": {"enabled": true}}"#,
    )
    .await;
}

#[tokio::test]
async fn rejects_key_creation_the_enclave_refuses_and_stores_nothing() {
    let h = Harness::start(1).await;
    let app = app(&h, 4096, 8);
    let (s, v) = send(
        &app,
        "POST",
        "/v1/keys",
        Some(r#"{"algorithm":"secp256k1","policy":{"kms_fail":1}}"#),
    )
    .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_GATEWAY, "kms_error"));
    let (s, v) = send(
        &app,
        "POST",
        "/v1/keys",
        Some(r#"{"algorithm":"secp256k1","policy":{"bad_rule":1}}"#),
    )
    .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_policy"));
    assert!(h.store.list_keys(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn rejects_everything_once_the_enclave_was_configured_by_another() {
    let mut h = Harness::start(2).await;
    let app = app(&h, 4096, 8);
    let evm = create(&app, r#"{"algorithm":"secp256k1"}"#).await;
    let uri = format!("/v1/keys/{}/sign", evm["key_id"].as_str().unwrap());
    // The enclave restarts, and another process configures it (another KMS key)
    // before the parent reconnects.
    let state = Arc::clone(&h.fake.state);
    let path = h.fake.path.clone();
    h.fake = crate::testing::FakeEnclave::start_configured_by(
        &path,
        state,
        Some("arn:aws:kms:us-east-1:444455556666:key/attacker"),
    );
    for _ in 0..300 {
        if h.relay.alarm().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (s, v) = send(&app, "GET", "/v1/health", None).await;
    assert_eq!(
        (s, code(&v)),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "enclave_configured_by_another"
        )
    );
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("someone else configured it"), "{message}");
    assert!(message.contains("alias/ekms"), "{message}");
    let body = r#"{"kind":"evm_transaction","payload":"0x02f8"}"#;
    let (s, v) = send(&app, "POST", &uri, Some(body)).await;
    assert_eq!(
        (s, code(&v)),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "enclave_configured_by_another"
        )
    );
    let (s, v) = send(&app, "POST", "/v1/keys", Some(r#"{"algorithm":"ed25519"}"#)).await;
    assert_eq!(
        (s, code(&v)),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "enclave_configured_by_another"
        )
    );
}

#[tokio::test]
async fn signs_evm_and_solana_transactions() {
    let h = Harness::start(1).await;
    let app = app(&h, 4096, 8);
    let evm = create(&app, r#"{"algorithm":"secp256k1"}"#).await;
    let uri = format!("/v1/keys/{}/sign", evm["key_id"].as_str().unwrap());
    let (s, v) = send(
        &app,
        "POST",
        &uri,
        Some(r#"{"kind":"evm_transaction","payload":"0x02f8"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["signature"]["r"], format::to_0x_hex(&[1; 32]));
    assert_eq!(v["signature"]["s"], format::to_0x_hex(&[2; 32]));
    assert_eq!(v["signature"]["y_parity"], 1);
    assert_eq!(v["signature"]["v"], 38);
    assert_eq!(v["signed_transaction"], "0x02f8ee");
    assert_eq!(v["transaction_hash"], format::to_0x_hex(&[3; 32]));

    let sol = create(&app, r#"{"algorithm":"ed25519"}"#).await;
    let uri = format!("/v1/keys/{}/sign", sol["key_id"].as_str().unwrap());
    let body =
        json!({"kind": "solana_transaction", "payload": format::to_base64(b"tx")}).to_string();
    let (s, v) = send(&app, "POST", &uri, Some(&body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["signature"], format::to_base58(&[4; 64]));
    assert_eq!(v["signed_transaction"], format::to_base64(b"\xeetx"));
}

#[tokio::test]
async fn rejects_signing_requests_with_each_error_code() {
    let h = Harness::start(1).await;
    let app = app(&h, 4096, 8);
    let evm = create(&app, r#"{"algorithm":"secp256k1"}"#).await;
    let uri = format!("/v1/keys/{}/sign", evm["key_id"].as_str().unwrap());
    let evm_body = |payload: &[u8]| {
        json!({"kind": "evm_transaction", "payload": format::to_0x_hex(payload)}).to_string()
    };
    let cases = [
        (
            r#"{"kind":"eip712","payload":"0x00"}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "unknown_kind",
        ),
        (
            r#"{"kind":"solana_transaction","payload":"AA=="}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "kind_mismatch",
        ),
        (
            r#"{"kind":"evm_transaction","payload":"02f8"}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_payload",
        ),
        (
            r#"{"kind":"evm_transaction","payload":"0x"}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_payload",
        ),
        (
            evm_body(&[0x00]),
            StatusCode::BAD_REQUEST,
            "invalid_payload",
        ),
        (
            evm_body(&[0xff, 1]),
            StatusCode::BAD_REQUEST,
            "unsupported_payload",
        ),
        (evm_body(b"kms"), StatusCode::BAD_GATEWAY, "kms_error"),
        (evm_body(b"deny"), StatusCode::FORBIDDEN, "policy_denied"),
    ];
    for (body, status, want) in cases {
        let (s, v) = send(&app, "POST", &uri, Some(&body)).await;
        assert_eq!((s, code(&v)), (status, want), "{body}: {v}");
    }
    let (_, v) = send(&app, "POST", &uri, Some(&evm_body(b"deny"))).await;
    assert_eq!(v["error"]["rule"], "evm.chain_ids");
    assert_eq!(v["error"]["message"], "chain id 5 is not allowed");

    let sol = create(&app, r#"{"algorithm":"ed25519"}"#).await;
    let uri = format!("/v1/keys/{}/sign", sol["key_id"].as_str().unwrap());
    let (s, v) = send(
        &app,
        "POST",
        &uri,
        Some(r#"{"kind":"solana_transaction","payload":"!!"}"#),
    )
    .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_payload"));
    let (s, v) = send(
        &app,
        "POST",
        &uri,
        Some(r#"{"kind":"evm_transaction","payload":"0x02"}"#),
    )
    .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "kind_mismatch"));
}

#[tokio::test]
async fn rejects_tampered_policy_as_sealed_state_invalid() {
    let h = Harness::start(1).await;
    let app = app(&h, 4096, 8);
    let key = create(
        &app,
        r#"{"algorithm":"secp256k1","policy":{"enabled":true}}"#,
    )
    .await;
    let id = key["key_id"].as_str().unwrap();
    // A DB admin loosens the policy behind the enclave's back.
    rusqlite::Connection::open(h.db_path())
        .unwrap()
        .execute(
            "UPDATE policies SET policy_json = '{\"enabled\":true,\"allow_all\":true}' WHERE key_id = ?1",
            [id],
        )
        .unwrap();
    let body = r#"{"kind":"evm_transaction","payload":"0x02f8"}"#;
    let (s, v) = send(&app, "POST", &format!("/v1/keys/{id}/sign"), Some(body)).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::INTERNAL_SERVER_ERROR, "sealed_state_invalid")
    );
    assert_eq!(v["error"]["message"], SEALED_STATE_INVALID_MESSAGE);
    // A corrupt record blob gives the same answer, before reaching the enclave.
    rusqlite::Connection::open(h.db_path())
        .unwrap()
        .execute(
            "UPDATE keys SET sealed_record = x'a0' WHERE key_id = ?1",
            [id],
        )
        .unwrap();
    let (s, v) = send(&app, "POST", &format!("/v1/keys/{id}/sign"), Some(body)).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::INTERNAL_SERVER_ERROR, "sealed_state_invalid")
    );
}

/// The "redirected deposit address" attack: a DB admin rewrites the address or
/// public key column, or also drops the statement (which the parent then asks the
/// enclave for again, from the sealed record).
#[tokio::test]
async fn rejects_rewritten_address_or_public_key_as_sealed_state_invalid() {
    let h = Harness::start(1).await;
    let app = app(&h, 4096, 8);
    for (column, value) in [
        ("address", "'0x000000000000000000000000000000000000dEaD'"),
        (
            "public_key",
            "x'03aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'",
        ),
    ] {
        for drop_statement in [false, true] {
            let key = create(&app, r#"{"algorithm":"secp256k1"}"#).await;
            let id = key["key_id"].as_str().unwrap().to_owned();
            let uri = format!("/v1/keys/{id}");
            let (s, v) = send(&app, "GET", &uri, None).await;
            assert_eq!(s, StatusCode::OK);
            assert_eq!(v["address"], G_ADDRESS);
            let statement: Value =
                serde_json::from_str(v["statement"]["statement"].as_str().unwrap()).unwrap();
            assert_eq!(statement["address"], G_ADDRESS);
            assert!(v["statement"]["attestation_document"].is_string());
            let db = rusqlite::Connection::open(h.db_path()).unwrap();
            db.execute(
                &format!("UPDATE keys SET {column} = {value} WHERE key_id = ?1"),
                [&id],
            )
            .unwrap();
            if drop_statement {
                db.execute("DELETE FROM key_statements WHERE key_id = ?1", [&id])
                    .unwrap();
            }
            let (s, v) = send(&app, "GET", &uri, None).await;
            assert_eq!(
                (s, code(&v)),
                (StatusCode::INTERNAL_SERVER_ERROR, "sealed_state_invalid"),
                "{column}, statement dropped: {drop_statement}"
            );
            let (s, v) = send(&app, "GET", "/v1/keys", None).await;
            assert_eq!(
                (s, code(&v)),
                (StatusCode::INTERNAL_SERVER_ERROR, "sealed_state_invalid")
            );
            db.execute("DELETE FROM keys WHERE key_id = ?1", [&id])
                .unwrap();
        }
    }
}

#[tokio::test]
async fn rejects_a_forged_statement_and_reissues_a_missing_one() {
    let h = Harness::start(1).await;
    let app = app(&h, 4096, 8);
    let key = create(&app, r#"{"algorithm":"ed25519"}"#).await;
    let id = key["key_id"].as_str().unwrap().to_owned();
    let uri = format!("/v1/keys/{id}");
    let db = rusqlite::Connection::open(h.db_path()).unwrap();
    // A key stored before statements existed: the enclave is asked for one.
    db.execute("DELETE FROM key_statements WHERE key_id = ?1", [&id])
        .unwrap();
    let (s, v) = send(&app, "GET", &uri, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let statement: Value =
        serde_json::from_str(v["statement"]["statement"].as_str().unwrap()).unwrap();
    assert_eq!(statement["created_at"], Value::Null);
    assert_eq!(statement["address"], key["address"]);
    // A statement rewritten to match a rewritten address fails its signature.
    let forged = v["statement"]["statement"].as_str().unwrap().replace(
        key["address"].as_str().unwrap(),
        "11111111111111111111111111111111",
    );
    db.execute(
        "UPDATE key_statements SET statement = ?2 WHERE key_id = ?1",
        [&id, &forged],
    )
    .unwrap();
    db.execute(
        "UPDATE keys SET address = '11111111111111111111111111111111' WHERE key_id = ?1",
        [&id],
    )
    .unwrap();
    let (s, v) = send(&app, "GET", &uri, None).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::INTERNAL_SERVER_ERROR, "sealed_state_invalid")
    );
}

/// A database admin who runs an enclave image of their own (under the AWS root:
/// anyone with an AWS account) stores a statement it signed for the victim's key id,
/// naming their address, with its document, and rewrites the address column.
#[tokio::test]
async fn rejects_a_statement_from_another_enclave_image() {
    let h = Harness::start(1).await;
    let app = app(&h, 4096, 8);
    let key = create(&app, r#"{"algorithm":"secp256k1"}"#).await;
    let id = key["key_id"].as_str().unwrap().to_owned();
    let evil = "0x000000000000000000000000000000000000dEaD";
    let (signed, document) = crate::testing::foreign_image_statement(
        &id,
        "secp256k1",
        key["public_key"].as_str().unwrap(),
        evil,
    );
    let db = rusqlite::Connection::open(h.db_path()).unwrap();
    db.execute(
        "INSERT INTO enclave_identities (identity_key, attestation_document)
         VALUES (?1, ?2)",
        rusqlite::params![signed.identity_key.as_slice(), document],
    )
    .unwrap();
    db.execute(
        "UPDATE key_statements SET statement = ?2, signature = ?3, identity_key = ?4
         WHERE key_id = ?1",
        rusqlite::params![
            id,
            signed.statement,
            signed.signature.as_slice(),
            signed.identity_key.as_slice()
        ],
    )
    .unwrap();
    db.execute(
        "UPDATE keys SET address = ?2 WHERE key_id = ?1",
        rusqlite::params![id, evil],
    )
    .unwrap();
    let (s, v) = send(&app, "GET", &format!("/v1/keys/{id}"), None).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::INTERNAL_SERVER_ERROR, "sealed_state_invalid"),
        "{v}"
    );
    // Put back, the column matches what the enclave states again.
    db.execute(
        "UPDATE keys SET address = ?2 WHERE key_id = ?1",
        rusqlite::params![id, key["address"].as_str().unwrap()],
    )
    .unwrap();
    let (s, v) = send(&app, "GET", &format!("/v1/keys/{id}"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["address"], key["address"]);
}

#[tokio::test]
async fn updates_policy_with_a_new_version() {
    let h = Harness::start(1).await;
    let app = app(&h, 4096, 8);
    let key = create(&app, r#"{"algorithm":"secp256k1"}"#).await;
    let id = key["key_id"].as_str().unwrap();
    let uri = format!("/v1/keys/{id}/policy");
    let (s, v) = send(
        &app,
        "PUT",
        &uri,
        Some(r#"{"policy":{"enabled":true,"evm":{"chain_ids":[1]}}}"#),
    )
    .await;
    assert_eq!((s, &v), (StatusCode::OK, &json!({"policy_version": 2})));
    let (_, v) = send(&app, "GET", &format!("/v1/keys/{id}"), None).await;
    assert_eq!(v["policy_version"], 2);
    assert_eq!(v["policy"]["evm"]["chain_ids"], json!([1]));
    // (the fake enclave here accepts it; a stored policy without max_fee_wei is marked)
    assert_eq!(v["fee_cap"], "none");
    let (_, list) = send(&app, "GET", "/v1/keys", None).await;
    assert_eq!(list["keys"][0]["fee_cap"], "none");
    // The new MAC is stored with it: signing still passes the integrity check.
    let body = r#"{"kind":"evm_transaction","payload":"0x02f8"}"#;
    let (s, _) = send(&app, "POST", &format!("/v1/keys/{id}/sign"), Some(body)).await;
    assert_eq!(s, StatusCode::OK);
}

/// Issue 10: the sign path reads keys from a cache; a policy written through the API
/// must be the one the next signature uses, and a row changed in the database by
/// another connection must not be served from the cache.
#[tokio::test]
async fn signs_with_the_policy_written_last_never_a_cached_one() {
    let h = Harness::start(1).await;
    let app = app(&h, 4096, 8);
    let key = create(&app, r#"{"algorithm":"secp256k1"}"#).await;
    let id = key["key_id"].as_str().unwrap();
    let sign_uri = format!("/v1/keys/{id}/sign");
    let body = r#"{"kind":"evm_transaction","payload":"0x02f8"}"#;
    let last = || {
        h.fake
            .state
            .last_sign_policy
            .lock()
            .unwrap()
            .clone()
            .unwrap()
    };
    for _ in 0..2 {
        let (s, _) = send(&app, "POST", &sign_uri, Some(body)).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(last().0, 1);
    }
    assert_eq!(
        h.store.key_cache().len_and_bytes().0,
        1,
        "the key is cached"
    );
    for (version, chain) in [(2, 1), (3, 10)] {
        let doc = format!(r#"{{"policy":{{"enabled":true,"evm":{{"chain_ids":[{chain}]}}}}}}"#);
        let (s, _) = send(&app, "PUT", &format!("/v1/keys/{id}/policy"), Some(&doc)).await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = send(&app, "POST", &sign_uri, Some(body)).await;
        assert_eq!(s, StatusCode::OK);
        let (v, json) = last();
        assert_eq!(v, version);
        assert!(json.contains(&format!("[{chain}]")), "{json}");
    }
    // Another connection (an operator, another parent) changes the row: the next
    // signature uses the database's row (which fails the fake's MAC), not the cache.
    let db = rusqlite::Connection::open(h.dir.path().join("ekms.db")).unwrap();
    db.execute(
        "UPDATE policies SET mac = zeroblob(32) WHERE key_id = ?1",
        rusqlite::params![id],
    )
    .unwrap();
    let (s, v) = send(&app, "POST", &sign_uri, Some(body)).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::INTERNAL_SERVER_ERROR, "sealed_state_invalid")
    );
}

#[tokio::test]
async fn rejects_policy_update_that_is_not_an_object_or_invalid() {
    let h = Harness::start(1).await;
    let app = app(&h, 4096, 8);
    let key = create(&app, r#"{"algorithm":"secp256k1"}"#).await;
    let uri = format!("/v1/keys/{}/policy", key["key_id"].as_str().unwrap());
    let (s, v) = send(&app, "PUT", &uri, Some(r#"{"policy":"allow"}"#)).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_policy"));
    let (s, v) = send(&app, "PUT", &uri, Some(r#"{"policy":{"bad_rule":true}}"#)).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_policy"));
    let (s, v) = send(&app, "PUT", &uri, Some(r#"{}"#)).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_json"));
    let (_, v) = send(
        &app,
        "GET",
        &format!("/v1/keys/{}", key["key_id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(v["policy_version"], 1, "nothing was written");
}

#[tokio::test]
async fn rejects_policy_too_large_for_a_frame_with_413() {
    // A body limit above the frame limit: the body is read, but the enclave request
    // cannot be encoded. That is the caller's request being too large, not a 500.
    let h = Harness::start(1).await;
    let app = app(&h, 2 * ekms_shared::MAX_FRAME_LEN, 8);
    let key = create(&app, r#"{"algorithm":"secp256k1"}"#).await;
    let id = key["key_id"].as_str().unwrap();
    let uri = format!("/v1/keys/{id}/policy");
    let big = json!({"policy": {"note": "x".repeat(ekms_shared::MAX_FRAME_LEN)}});
    let (s, v) = send(&app, "PUT", &uri, Some(&big.to_string())).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );
    let (_, v) = send(&app, "GET", &format!("/v1/keys/{id}"), None).await;
    assert_eq!(v["policy_version"], 1, "nothing was written");
    // Positive twin: a policy that fits goes through.
    let small = json!({"policy": {"enabled": true}});
    let (s, _) = send(&app, "PUT", &uri, Some(&small.to_string())).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn attestation_returns_the_document_as_base64() {
    let h = Harness::start(1).await;
    let app = app(&h, 4096, 8);
    let (s, v) = send(&app, "GET", "/v1/attestation?nonce=0a0b", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["document"], format::to_base64(b"doc:\x0a\x0b"));
}

#[tokio::test]
async fn rejects_sign_when_the_enclave_drops_mid_request() {
    let h = Harness::start(1).await;
    let app = app(&h, 4096, 8);
    let key = create(&app, r#"{"algorithm":"secp256k1"}"#).await;
    let uri = format!("/v1/keys/{}/sign", key["key_id"].as_str().unwrap());
    let drop =
        json!({"kind": "evm_transaction", "payload": format::to_0x_hex(b"drop")}).to_string();
    let (s, v) = send(&app, "POST", &uri, Some(&drop)).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "enclave_unavailable")
    );
    let ok = r#"{"kind":"evm_transaction","payload":"0x02f8"}"#;
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..100 {
        status = send(&app, "POST", &uri, Some(ok)).await.0;
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, StatusCode::OK, "works again after the reconnect");
}

#[tokio::test]
async fn rejects_requests_over_the_in_flight_cap() {
    let h = Harness::start(1).await;
    let (s, v) = send(&app(&h, 4096, 0), "GET", "/v1/health", None).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
    );
}
