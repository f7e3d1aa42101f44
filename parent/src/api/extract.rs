//! Request extractors shared by the routes: the JSON body (deadline, size, media type),
//! the `{key_id}` path segment, query pairs, and the policy document's text.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Path, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{ApiCode, ApiError, AppState};
use crate::service::keys::is_key_id;

/// A JSON body read with the state's deadline and size limit; every failure is an
/// [`ApiError`]: 415 `unsupported_media_type`, 413 `body_too_large`, 408
/// `request_timeout`, 400 `invalid_json`.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        // Parsed once, strictly: a repeated key (`"payload": {…, "contents": "Hi",
        // "contents": "Transfer all"}`) would be read last-wins into a `Value` and passed
        // on as one document. The text is not parsed a second time into `T`.
        let StrictJson(value) = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::new(ApiCode::InvalidJson, e.to_string()))?;
        // Every body of this API is an object: serde would also read a struct from a JSON
        // array, positionally (`["ed25519",null,null,null]` created a key).
        if !value.is_object() {
            return Err(ApiError::new(
                ApiCode::InvalidJson,
                "the body must be a JSON object",
            ));
        }
        serde_json::from_value(value)
            .map(JsonBody)
            .map_err(|e| ApiError::new(ApiCode::InvalidJson, e.to_string()))
    }
}

/// A JSON value read like [`Value`], but refusing an object that repeats a key
/// (anywhere in the document): parsers disagree on which value wins. serde_json's
/// nesting limit still applies. JSON-RPC bodies are read with it, REST bodies checked.
pub(crate) struct StrictJson(pub(crate) Value);

impl<'de> serde::Deserialize<'de> for StrictJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictJson)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictJson(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                let shown: String = key.chars().take(64).collect();
                return Err(serde::de::Error::custom(format!(
                    "a JSON object repeats the key {shown:?}"
                )));
            }
            let StrictJson(value) = map.next_value()?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// The bytes of an `application/json` body, read with the state's deadline and size
/// limit, not yet parsed (JSON-RPC parses them itself); failures as [`JsonBody`]'s
/// but `invalid_json`.
pub(crate) struct JsonBytes(pub(crate) Bytes);

impl FromRequest<AppState> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::new(
                ApiCode::UnsupportedMediaType,
                "expected Content-Type: application/json",
            ));
        }
        tokio::time::timeout(state.read_timeout, Bytes::from_request(req, state))
            .await
            .map_err(|_| {
                ApiError::new(
                    ApiCode::RequestTimeout,
                    "the request body was not received in time",
                )
            })?
            .map(JsonBytes)
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        ApiCode::BodyTooLarge,
                        format!("the body exceeds {} bytes", state.max_body_bytes),
                    )
                } else {
                    ApiError::new(ApiCode::InvalidBody, rejection.body_text())
                }
            })
    }
}

/// The `{key_id}` path segment. Anything that is not a canonical UUID cannot name a
/// key, so it is 404 `key_not_found` like an unknown one.
pub(crate) fn key_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    match path {
        Ok(Path(id)) if is_key_id(&id) => Ok(id),
        _ => Err(ApiError::key_not_found()),
    }
}

/// `name=value` pairs of a query string, without percent-decoding (every parameter of
/// this API is digits or hex).
pub(crate) fn query_pairs(
    raw: Option<&str>,
    allowed: &[&str],
) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        if !allowed.contains(&k) || out.iter().any(|(seen, _)| seen == k) {
            return Err(ApiError::new(
                ApiCode::InvalidQuery,
                format!("unexpected or repeated query parameter {k:?}"),
            ));
        }
        out.push((k.to_owned(), v.to_owned()));
    }
    Ok(out)
}

/// A `limit`-style query value: a number in `1..=max`.
pub(crate) fn query_limit(value: &str, max: u32) -> Result<u32, ApiError> {
    value
        .parse()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| ApiError::new(ApiCode::InvalidQuery, format!("limit must be 1 to {max}")))
}

/// The policy document as the string the enclave receives; it must be a JSON object.
pub(crate) fn policy_json(policy: &Value) -> Result<String, ApiError> {
    if !policy.is_object() {
        return Err(ApiError::new(
            ApiCode::InvalidPolicy,
            "the policy must be a JSON object",
        ));
    }
    serde_json::to_string(policy).map_err(|_| ApiError::internal())
}
