//! Tests of the client against canned HTTP servers on temporary Unix sockets.

use super::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixListener;

/// Serves one connection with a canned HTTP answer; returns the request head.
async fn serve_once(listener: UnixListener, answer: &'static str) -> String {
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut buf = vec![0u8; 8192];
    let mut got = Vec::new();
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if got.len() >= end + 4 + len || n == 0 {
                break;
            }
        }
        if n == 0 {
            break;
        }
    }
    stream.write_all(answer.as_bytes()).await.unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn sends_json_and_reads_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(serve_once(
        listener,
        "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{\"key_id\":\"k1\"}",
    ));
    let client = ApiClient::new(&path);
    let body = serde_json::json!({"algorithm": "ed25519"});
    let response = client
        .request(Method::POST, "/v1/keys", Some(&body))
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::CREATED);
    assert_eq!(response.clone().into_result().unwrap()["key_id"], "k1");
    let request = server.await.unwrap();
    assert!(
        request.starts_with("POST /v1/keys HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request.ends_with("{\"algorithm\":\"ed25519\"}"),
        "{request}"
    );
}

#[tokio::test]
async fn rejects_error_status_with_the_server_code() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let body = r#"{"error":{"code":"policy_denied","message":"no","rule":"chain_ids"}}"#;
    let answer: &'static str = Box::leak(
        format!(
            "HTTP/1.1 403 Forbidden\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_boxed_str(),
    );
    tokio::spawn(serve_once(listener, answer));
    let response = ApiClient::new(&path)
        .request(Method::GET, "/v1/keys", None)
        .await
        .unwrap();
    match response.into_result().unwrap_err() {
        ClientError::Api {
            status,
            code,
            message,
            rule,
        } => {
            assert_eq!(status, 403);
            assert_eq!(code, "policy_denied");
            assert_eq!(message, "no");
            assert_eq!(rule.as_deref(), Some("chain_ids"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn sends_the_bearer_token_and_never_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(serve_once(
        listener,
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
    ));
    let token = BearerToken::parse(" ekms_secret-value\n", "test").unwrap();
    let client = ApiClient::new(&path).with_token(Some(token));
    assert!(!format!("{client:?}").contains("secret"), "{client:?}");
    client.request(Method::GET, "/v1/keys", None).await.unwrap();
    let request = server.await.unwrap();
    assert!(
        request.contains("\r\nauthorization: Bearer ekms_secret-value\r\n"),
        "{request}"
    );
}

#[test]
fn rejects_token_text_that_is_not_a_token() {
    let long = "a".repeat(MAX_TOKEN_LEN + 1);
    for t in ["", "  \n", "two words", "ekms_é", long.as_str()] {
        let err = BearerToken::parse(t, "EKMS_TOKEN").unwrap_err();
        assert!(matches!(err, ClientError::InvalidToken(_)), "{t:?}");
        if !t.trim().is_empty() {
            assert!(!err.to_string().contains(t.trim()), "{err}");
        }
    }
}

#[tokio::test]
async fn rejects_a_body_that_is_not_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(serve_once(
        listener,
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
    ));
    let err = ApiClient::new(&path)
        .request(Method::GET, "/v1/health", None)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::BadResponse(_)), "{err}");
}

#[tokio::test]
async fn rejects_a_missing_socket() {
    let dir = tempfile::tempdir().unwrap();
    let err = ApiClient::new(dir.path().join("none.sock"))
        .request(Method::GET, "/v1/health", None)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
}

#[tokio::test]
async fn rejects_a_silent_server_after_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let _keep = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(stream);
    });
    let err = ApiClient::new(&path)
        .with_timeout(Duration::from_millis(200))
        .request(Method::GET, "/v1/health", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Http(ref m) if m.contains("within")),
        "{err}"
    );
}

/// A one-connection server that answers every request with `200 {"ok":N}`, N
/// counting from 1, and returns what it read.
async fn serve(listener: UnixListener, answers: usize) -> Vec<u8> {
    let (mut s, _) = listener.accept().await.unwrap();
    let mut seen = Vec::new();
    for n in 1..=answers {
        // read until the end of the headers plus the declared body
        loop {
            let mut buf = [0u8; 4096];
            let k = s.read(&mut buf).await.unwrap();
            seen.extend_from_slice(&buf[..k]);
            let text = String::from_utf8_lossy(&seen);
            if text.matches("\r\n\r\n").count() >= n {
                break;
            }
        }
        let body = format!("{{\"ok\":{n}}}");
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: application/json\r\n\r\n{body}",
            body.len()
        );
        s.write_all(resp.as_bytes()).await.unwrap();
    }
    seen
}

#[tokio::test]
async fn keep_alive_requests_on_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(serve(listener, 2));
    let mut conn = Conn::connect(&path, None).await.unwrap();
    let (st, body) = conn
        .request(Method::GET, "/v1/health", Bytes::new())
        .await
        .unwrap();
    assert_eq!(st, StatusCode::OK);
    assert_eq!(&body[..], b"{\"ok\":1}");
    let (st, body) = conn
        .request(Method::POST, "/v1/keys", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert_eq!(st, StatusCode::OK);
    assert_eq!(&body[..], b"{\"ok\":2}");
    let seen = String::from_utf8(server.await.unwrap()).unwrap();
    assert!(seen.starts_with("GET /v1/health HTTP/1.1\r\n"));
    assert!(seen.contains("POST /v1/keys HTTP/1.1\r\n"));
    assert!(seen.ends_with("\r\n\r\n{}"));
}

#[tokio::test]
async fn rejects_a_keep_alive_socket_nobody_listens_on() {
    let dir = tempfile::tempdir().unwrap();
    let err = Conn::connect(&dir.path().join("none.sock"), None)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
}
