//! The Ethereum remote-signer JSON-RPC 2.0 endpoint (`POST /v1/rpc/evm`), as
//! Web3Signer and Clef offer one: the protocol part, no I/O.
//!
//! Methods (Ethereum JSON-RPC spec names and shapes):
//! - `eth_accounts` `[]` → the EIP-55 addresses of the secp256k1 keys the caller's token
//!   may sign with;
//! - `eth_signTransaction` `[tx]` → the signed raw transaction (`0x` hex of the EIP-2718
//!   bytes). `tx` uses the spec's field names and hex quantities (`from`, `type`,
//!   `chainId`, `nonce`, `to`, `value`, `data`/`input`, `gas`, `gasPrice`,
//!   `maxFeePerGas`, `maxPriorityFeePerGas`, `accessList`), decoded by alloy's
//!   `TransactionRequest`;
//! - `eth_sign` `[address, data]` and `personal_sign` `[data, address]` → the EIP-191
//!   `personal_sign` signature of the bytes `data` (`0x` hex), 65 bytes `r || s || v`,
//!   `v` = 27 + parity;
//! - `eth_signTypedData_v4` `[address, typedData]` (an object or its JSON text) → the
//!   EIP-712 signature, same shape.
//!
//! Nothing here decides whether to sign: [`Backend::sign`] goes through the parent's
//! service layer, with the caller's token scopes, and the enclave evaluates the key's
//! policy on the decoded payload. What this module refuses (missing `chainId`, a type
//! the fields contradict, conflicting `data` and `input`) it refuses so that the bytes
//! signed are the ones the caller described, never a default filled in for them.
//!
//! Errors are JSON-RPC error objects ([`RpcCode`]): a policy refusal is `-32003`
//! ("transaction rejected", EIP-1474) with the rule in `message` and `data.rule` (also
//! for a disabled key, `key_disabled`, and a stopped store, `store_stopped`); an
//! unknown account `-32602`; a missing, unknown or out-of-scope token `4100`
//! ("unauthorized", EIP-1193). A body whose objects repeat a key anywhere is `-32600`
//! (parsers disagree on which value wins). A token refused before the body is read answers with the
//! HTTP status REST gives (401) and a `4100` object with `id: null`; a body REST would
//! refuse (415, 413, 408) answers with that status and a `-32600` object; every other
//! answer is HTTP 200.
//!
//! [`rpc_evm`] is the HTTP handler; [`handle`] and [`unsigned_transaction`] are the
//! protocol, tested without HTTP in `jsonrpc/tests.rs` and on a real simulation in
//! `e2e/test_jsonrpc.py` and `clients/typescript/test/jsonrpc.test.ts` (viem).

use alloy_consensus::{SignableTransaction as _, TypedTransaction};
use alloy_primitives::TxKind;
use alloy_rpc_types_eth::TransactionRequest;
use axum::extract::{FromRequest as _, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ekms_shared::{Algorithm, PayloadKind, SignOutput, SignPayload};
use serde_json::{json, Value};

use super::extract::{JsonBytes, StrictJson};
use super::{ApiCode, ApiError, AppState};
use crate::auth::Caller;
use crate::format;
use crate::service::sign::SignRequest;
use crate::service::{Service, ServiceError};

/// Most requests in one JSON-RPC batch; a longer batch is refused whole (`-32600`).
pub const MAX_BATCH: usize = 32;

/// The JSON-RPC error codes this endpoint answers with (JSON-RPC 2.0 §5.1, EIP-1474,
/// EIP-1193). Programs match on these numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RpcCode {
    /// `-32700`: the body is not JSON.
    ParseError,
    /// `-32600`: not a JSON-RPC 2.0 request object (or batch).
    InvalidRequest,
    /// `-32601`: no such method.
    MethodNotFound,
    /// `-32602`: wrong parameters, or an account the caller may not sign with.
    InvalidParams,
    /// `-32603`: the parent failed (details in its log, not here).
    Internal,
    /// `-32002`: the enclave is not ready or the store is stopped (EIP-1474 "resource
    /// unavailable").
    ResourceUnavailable,
    /// `-32003`: the key's policy refused the payload (EIP-1474 "transaction rejected").
    TransactionRejected,
    /// `4100`: no token, an unknown, expired or revoked one, or one without the `sign`
    /// scope (EIP-1193 "unauthorized").
    Unauthorized,
}

impl RpcCode {
    /// Every code, for tests that pin them.
    pub const ALL: [RpcCode; 8] = [
        RpcCode::ParseError,
        RpcCode::InvalidRequest,
        RpcCode::MethodNotFound,
        RpcCode::InvalidParams,
        RpcCode::Internal,
        RpcCode::ResourceUnavailable,
        RpcCode::TransactionRejected,
        RpcCode::Unauthorized,
    ];

    /// The number in the error object's `code`.
    pub fn as_i64(self) -> i64 {
        match self {
            RpcCode::ParseError => -32700,
            RpcCode::InvalidRequest => -32600,
            RpcCode::MethodNotFound => -32601,
            RpcCode::InvalidParams => -32602,
            RpcCode::Internal => -32603,
            RpcCode::ResourceUnavailable => -32002,
            RpcCode::TransactionRejected => -32003,
            RpcCode::Unauthorized => 4100,
        }
    }
}

/// A JSON-RPC error object (JSON-RPC 2.0 §5.1): `{code, message, data?}`.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// Which error.
    pub code: RpcCode,
    /// One line for a person; never a secret or a token.
    pub message: String,
    /// Structured detail (for a refusal: `{"rule": …, "code": …}`).
    pub data: Option<Value>,
}

impl RpcError {
    /// An error without `data`.
    pub fn new(code: RpcCode, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// `-32602` with `message`.
    pub fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(RpcCode::InvalidParams, message)
    }

    /// `-32602` for an address that is not one of the caller's keys (the same answer
    /// whether no key has it or the token may not use it).
    pub fn unknown_account(address: &[u8; 20]) -> RpcError {
        RpcError::invalid_params(format!(
            "unknown account {}",
            ekms_signer::address::eip55(address)
        ))
    }

    /// `-32003` for a policy refusal: `rule` is the policy rule that refused (the
    /// `rule` of the REST API's `policy_denied` error), `detail` its explanation.
    pub fn rejected(rule: &str, detail: &str) -> RpcError {
        RpcError {
            code: RpcCode::TransactionRejected,
            message: format!("transaction rejected by policy rule {rule}: {detail}"),
            data: Some(json!({ "rule": rule, "reason": detail })),
        }
    }

    /// The error object.
    pub fn to_json(&self) -> Value {
        let mut e = json!({ "code": self.code.as_i64(), "message": self.message });
        if let Some(data) = &self.data {
            e["data"] = data.clone();
        }
        e
    }
}

/// One decoded call.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `eth_accounts`.
    Accounts,
    /// A signature by the key of `address` over `bytes` of `kind`.
    Sign {
        /// The signer's address (`from`, or the address parameter).
        address: [u8; 20],
        /// `evm_transaction` (unsigned EIP-2718 bytes, EIP-155 form for legacy),
        /// `evm_message` (the EIP-191 message bytes) or `evm_typed_data` (EIP-712 JSON).
        kind: PayloadKind,
        /// The payload as the REST API's `payload` would carry it, decoded.
        bytes: Vec<u8>,
    },
}

/// What [`handle`] needs from the service layer, for one caller (token) already
/// authenticated by the HTTP layer.
pub trait Backend {
    /// The addresses of the secp256k1 keys the caller may sign with, newest first.
    fn accounts(&self) -> impl std::future::Future<Output = Result<Vec<[u8; 20]>, RpcError>>;

    /// Signs through the service layer (token scope, owner and policy checks included)
    /// with the key of `address`; [`RpcError::unknown_account`] if the caller has no
    /// such key.
    fn sign(
        &self,
        address: [u8; 20],
        kind: PayloadKind,
        bytes: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<SignOutput, RpcError>>;
}

/// Answers a request body: a single request object or a batch of at most
/// [`MAX_BATCH`], each answered in order. The body's size is bounded by the HTTP
/// layer. Never fails: every error is an error object (with `id: null` where the id
/// could not be read).
pub async fn handle<B: Backend>(backend: &B, body: &[u8]) -> Value {
    let value: Value = match serde_json::from_slice::<StrictJson>(body) {
        Ok(StrictJson(v)) => v,
        // A repeated key is valid JSON syntax whose meaning parsers disagree on (first
        // or last wins, or an error): `{"to": A, "to": B}` would be signed to B while a
        // proxy, a log or the caller's own code may have read A.
        Err(e) if e.is_data() => {
            return error_response(
                Value::Null,
                &RpcError::new(RpcCode::InvalidRequest, e.to_string()),
            )
        }
        Err(_) => {
            return error_response(
                Value::Null,
                &RpcError::new(RpcCode::ParseError, "the body is not JSON"),
            )
        }
    };
    match value {
        Value::Array(items) if items.is_empty() => error_response(
            Value::Null,
            &RpcError::new(RpcCode::InvalidRequest, "empty batch"),
        ),
        Value::Array(items) if items.len() > MAX_BATCH => error_response(
            Value::Null,
            &RpcError::new(
                RpcCode::InvalidRequest,
                format!("batch of {} requests: at most {MAX_BATCH}", items.len()),
            ),
        ),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(handle_one(backend, item).await);
            }
            Value::Array(out)
        }
        other => handle_one(backend, other).await,
    }
}

/// The response object for an error.
pub fn error_response(id: Value, error: &RpcError) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": error.to_json() })
}

async fn handle_one<B: Backend>(backend: &B, request: Value) -> Value {
    let (id, method, params) = match envelope(request) {
        Ok(parts) => parts,
        Err((id, e)) => return error_response(id, &e),
    };
    let result = match parse_call(&method, params) {
        Ok(Call::Accounts) => backend.accounts().await.map(|accounts| {
            Value::Array(
                accounts
                    .iter()
                    .map(|a| Value::String(ekms_signer::address::eip55(a)))
                    .collect(),
            )
        }),
        Ok(Call::Sign {
            address,
            kind,
            bytes,
        }) => match backend.sign(address, kind, bytes).await {
            Ok(output) => result_of(kind, output),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err(e) => error_response(id, &e),
    }
}

/// Splits a request object into id, method and params. A request without an `id` (a
/// notification) is refused: a signature nobody receives is a signature the policy's
/// limits pay for with nothing to show.
fn envelope(request: Value) -> Result<(Value, String, Value), (Value, RpcError)> {
    let Value::Object(mut obj) = request else {
        return Err((
            Value::Null,
            RpcError::new(RpcCode::InvalidRequest, "a request is a JSON object"),
        ));
    };
    let id =
        match obj.remove("id") {
            Some(id @ (Value::String(_) | Value::Number(_))) => id,
            Some(Value::Null) | None => return Err((
                Value::Null,
                RpcError::new(
                    RpcCode::InvalidRequest,
                    "a request needs an \"id\" (string or number): notifications are not served",
                ),
            )),
            Some(_) => {
                return Err((
                    Value::Null,
                    RpcError::new(RpcCode::InvalidRequest, "\"id\" is a string or a number"),
                ))
            }
        };
    if obj.get("jsonrpc") != Some(&Value::String("2.0".into())) {
        return Err((
            id,
            RpcError::new(RpcCode::InvalidRequest, "\"jsonrpc\" must be \"2.0\""),
        ));
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        _ => {
            return Err((
                id,
                RpcError::new(RpcCode::InvalidRequest, "\"method\" is a string"),
            ))
        }
    };
    let params = obj.remove("params").unwrap_or(Value::Array(Vec::new()));
    Ok((id, method, params))
}

/// Decodes `method` and its `params` into a [`Call`].
///
/// # Errors
/// `-32601` for an unknown method, `-32602` for parameters of the wrong number or
/// shape, a missing `from` or `chainId`, a transaction type this signer does not take.
pub fn parse_call(method: &str, params: Value) -> Result<Call, RpcError> {
    let mut params = match params {
        Value::Array(p) => p,
        _ => return Err(RpcError::invalid_params("\"params\" is an array")),
    };
    match method {
        "eth_accounts" => {
            arity(&params, 0, 0)?;
            Ok(Call::Accounts)
        }
        "eth_signTransaction" => {
            arity(&params, 1, 1)?;
            let (address, bytes) = unsigned_transaction(params.swap_remove(0))?;
            Ok(Call::Sign {
                address,
                kind: PayloadKind::EvmTransaction,
                bytes,
            })
        }
        "eth_sign" => {
            arity(&params, 2, 2)?;
            Ok(Call::Sign {
                address: address_param(&params[0])?,
                kind: PayloadKind::EvmMessage,
                bytes: data_param(&params[1])?,
            })
        }
        "personal_sign" => {
            // geth's third parameter is a keystore password; a remote signer has none.
            arity(&params, 2, 3)?;
            if params.get(2).is_some_and(|p| !p.is_null() && p != "") {
                return Err(RpcError::invalid_params(
                    "personal_sign takes no password here",
                ));
            }
            Ok(Call::Sign {
                address: address_param(&params[1])?,
                kind: PayloadKind::EvmMessage,
                bytes: data_param(&params[0])?,
            })
        }
        "eth_signTypedData_v4" => {
            arity(&params, 2, 2)?;
            let bytes = match &params[1] {
                Value::Object(_) => serde_json::to_vec(&params[1])
                    .map_err(|_| RpcError::invalid_params("typed data is not serializable"))?,
                Value::String(text) => text.as_bytes().to_vec(),
                _ => {
                    return Err(RpcError::invalid_params(
                        "typed data is an EIP-712 object or its JSON text",
                    ))
                }
            };
            Ok(Call::Sign {
                address: address_param(&params[0])?,
                kind: PayloadKind::EvmTypedData,
                bytes,
            })
        }
        other => Err(RpcError::new(
            RpcCode::MethodNotFound,
            format!(
                "method {:?} is not served here; methods: eth_accounts, eth_signTransaction, \
                 eth_sign, personal_sign, eth_signTypedData_v4",
                truncated(other)
            ),
        )),
    }
}

fn arity(params: &[Value], min: usize, max: usize) -> Result<(), RpcError> {
    if params.len() < min || params.len() > max {
        let want = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(RpcError::invalid_params(format!(
            "expected {want} parameters, got {}",
            params.len()
        )));
    }
    Ok(())
}

fn address_param(value: &Value) -> Result<[u8; 20], RpcError> {
    value
        .as_str()
        .and_then(ekms_signer::address::parse_evm_address)
        .ok_or_else(|| {
            RpcError::invalid_params(
                "an address is 0x + 40 hex digits (mixed case only with a valid EIP-55 checksum)",
            )
        })
}

fn data_param(value: &Value) -> Result<Vec<u8>, RpcError> {
    value
        .as_str()
        .and_then(format::from_0x_hex)
        .filter(|b| !b.is_empty())
        .ok_or_else(|| RpcError::invalid_params("data is non-empty 0x-prefixed hex"))
}

/// A method name as shown back in an error: at most 64 characters.
fn truncated(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// The signer's address and the unsigned transaction bytes (what the REST API's
/// `evm_transaction` payload carries: `0x01`/`0x02 || rlp(…)`, or the EIP-155 legacy
/// form `rlp([nonce, gasPrice, gas, to, value, data, chainId, 0, 0])`) of a JSON-RPC
/// transaction object.
///
/// Unlike alloy's builders this fills in nothing that changes what is signed, and drops
/// nothing the caller gave: `from` and `chainId` are required (alloy would take chain
/// 1); `from` and `to` are addresses as the other methods' address parameters (`0x`,
/// EIP-55 checksum when mixed case); the EIP-4844 and EIP-7702 fields are refused
/// (alloy would build a type 0x2 transaction without a lone `maxFeePerBlobGas`); a
/// `type` must be the one
/// the fee fields describe (`0x0` with `gasPrice`, `0x1` with `gasPrice` and
/// `accessList`, `0x2` with `maxFeePerGas` and `maxPriorityFeePerGas`); `data` and
/// `input` must agree; a missing `to` is a contract creation; a missing `value` is 0.
///
/// # Errors
/// `-32602` naming the missing or contradicting fields, or an unsupported type
/// (EIP-4844 and EIP-7702 transactions, refused by the enclave too).
pub fn unsigned_transaction(tx: Value) -> Result<([u8; 20], Vec<u8>), RpcError> {
    let Value::Object(fields) = &tx else {
        return Err(RpcError::invalid_params("the transaction is a JSON object"));
    };
    for (name, value) in fields {
        if !TX_FIELDS.contains(&name.as_str()) {
            // A misspelt field would otherwise be dropped: `"To"` would make a transfer a
            // contract creation.
            return Err(RpcError::invalid_params(format!(
                "unknown transaction field {:?}; fields: {}",
                truncated(name),
                TX_FIELDS.join(", ")
            )));
        }
        if UNSIGNED_TYPE_FIELDS.contains(&name.as_str()) && !value.is_null() {
            // alloy would drop a lone `maxFeePerBlobGas` or a `sidecar` and build a type
            // 0x2 transaction from the rest: not what the caller described.
            return Err(RpcError::invalid_params(format!(
                "{name} belongs to a transaction type this signer does not sign (EIP-4844, \
                 EIP-7702; legacy, 0x1 and 0x2 are)"
            )));
        }
        if ADDRESS_FIELDS.contains(&name.as_str())
            && !(value.is_null() && name != "from")
            && value
                .as_str()
                .and_then(ekms_signer::address::parse_evm_address)
                .is_none()
        {
            // alloy also reads `0X…`, no prefix, byte arrays and mixed case with a wrong
            // EIP-55 checksum (a mistyped recipient): the address parameters of the other
            // methods refuse them, so does the transaction.
            return Err(RpcError::invalid_params(format!(
                "{name} is an address: 0x + 40 hex digits (mixed case only with a valid \
                 EIP-55 checksum)"
            )));
        }
        if QUANTITY_FIELDS.contains(&name.as_str()) && !is_hex_quantity(value) {
            // alloy also reads decimal strings and JSON numbers: "10" would be ten, where
            // the spec's quantities are hex (0x10 is sixteen).
            return Err(RpcError::invalid_params(format!(
                "{name} is a hex quantity (\"0x\" + hex digits)"
            )));
        }
    }
    let mut request: TransactionRequest = serde_json::from_value(tx)
        .map_err(|e| RpcError::invalid_params(format!("transaction object: {e}")))?;
    let from = request
        .from
        .ok_or_else(|| RpcError::invalid_params("the transaction needs \"from\""))?;
    if request.chain_id.is_none() {
        return Err(RpcError::invalid_params(
            "the transaction needs \"chainId\" (no default chain is assumed)",
        ));
    }
    if request.input.unique_input().is_err() {
        return Err(RpcError::invalid_params(
            "\"data\" and \"input\" are both set and differ",
        ));
    }
    if request.to.is_none() {
        request.to = Some(TxKind::Create);
    }
    let built = u8::from(request.preferred_type());
    if let Some(declared) = request.transaction_type {
        if declared != built {
            return Err(RpcError::invalid_params(format!(
                "\"type\" is 0x{declared:x} but the fee fields describe a type 0x{built:x} \
                 transaction (0x0: gasPrice; 0x1: gasPrice and accessList; 0x2: maxFeePerGas \
                 and maxPriorityFeePerGas)"
            )));
        }
    }
    if request.gas_price.is_some()
        && (request.max_fee_per_gas.is_some() || request.max_priority_fee_per_gas.is_some())
    {
        return Err(RpcError::invalid_params(
            "\"gasPrice\" and EIP-1559 fee fields together describe no one transaction type",
        ));
    }
    let typed = request.build_typed_tx().map_err(|incomplete| {
        let missing = match incomplete.missing_keys() {
            Err((_, missing)) => missing.join(", "),
            Ok(_) => "fields".to_owned(),
        };
        RpcError::invalid_params(format!("the transaction is incomplete: missing {missing}"))
    })?;
    let mut bytes = Vec::with_capacity(256);
    match &typed {
        TypedTransaction::Legacy(t) => t.encode_for_signing(&mut bytes),
        TypedTransaction::Eip2930(t) => t.encode_for_signing(&mut bytes),
        TypedTransaction::Eip1559(t) => t.encode_for_signing(&mut bytes),
        other => {
            return Err(RpcError::invalid_params(format!(
                "transaction type 0x{:x} is not signed here (legacy, 0x1 and 0x2 are)",
                u8::from(other.tx_type())
            )))
        }
    }
    Ok((from.into_array(), bytes))
}

/// The transaction object's fields (Ethereum JSON-RPC `GenericTransaction`) that
/// [`unsigned_transaction`] reads; any other is refused.
const TX_FIELDS: [&str; 17] = [
    "from",
    "to",
    "type",
    "chainId",
    "nonce",
    "value",
    "data",
    "input",
    "gas",
    "gasPrice",
    "maxFeePerGas",
    "maxPriorityFeePerGas",
    "accessList",
    "maxFeePerBlobGas",
    "blobVersionedHashes",
    "authorizationList",
    "sidecar",
];

/// The fields only EIP-4844 and EIP-7702 transactions have (not signed here); refused
/// unless `null`.
const UNSIGNED_TYPE_FIELDS: [&str; 4] = [
    "maxFeePerBlobGas",
    "blobVersionedHashes",
    "authorizationList",
    "sidecar",
];

/// The fields that are addresses (`to` may be `null`: a contract creation).
const ADDRESS_FIELDS: [&str; 2] = ["from", "to"];

/// The fields that are quantities (hex, `0x` prefix).
const QUANTITY_FIELDS: [&str; 8] = [
    "type",
    "chainId",
    "nonce",
    "value",
    "gas",
    "gasPrice",
    "maxFeePerGas",
    "maxPriorityFeePerGas",
];

/// `0x` followed by 1 to 64 hex digits (a `null` is a missing field).
fn is_hex_quantity(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.strip_prefix("0x").is_some_and(|d| {
            !d.is_empty() && d.len() <= 64 && d.bytes().all(|b| b.is_ascii_hexdigit())
        }),
        _ => false,
    }
}

/// The `result` of a signing method: the signed raw transaction for
/// `evm_transaction`, the 65-byte `r || s || v` (v = 27 + parity) otherwise.
fn result_of(kind: PayloadKind, output: SignOutput) -> Result<Value, RpcError> {
    match (kind, output) {
        (
            PayloadKind::EvmTransaction,
            SignOutput::Evm {
                signed_transaction, ..
            },
        ) => Ok(Value::String(format::to_0x_hex(&signed_transaction))),
        (
            PayloadKind::EvmMessage | PayloadKind::EvmTypedData,
            SignOutput::EvmDigest { r, s, y_parity, .. },
        ) => {
            let mut rsv = Vec::with_capacity(65);
            rsv.extend_from_slice(&r);
            rsv.extend_from_slice(&s);
            rsv.push(27 + y_parity);
            Ok(Value::String(format::to_0x_hex(&rsv)))
        }
        _ => Err(RpcError::new(
            RpcCode::Internal,
            "the enclave answered with another kind of signature",
        )),
    }
}

/// `POST /v1/rpc/evm` (module docs): authenticates the bearer token, reads the body
/// with REST's limits, and answers with [`handle`] over the service layer.
pub(crate) async fn rpc_evm(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let caller =
        match crate::auth::authenticate(&parts.headers, state.service.store().as_ref()).await {
            Ok(caller) => caller,
            Err(e) => {
                let code = match e.code {
                    ApiCode::Unauthenticated | ApiCode::Forbidden => RpcCode::Unauthorized,
                    _ => RpcCode::Internal,
                };
                let mut response = http_error(e.status, RpcError::new(code, e.message));
                if e.status == StatusCode::UNAUTHORIZED {
                    // RFC 6750 §3, as REST answers.
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                }
                return response;
            }
        };
    let body = match JsonBytes::from_request(Request::from_parts(parts, body), &state).await {
        Ok(JsonBytes(bytes)) => bytes,
        Err(e) => return http_error(e.status, RpcError::new(RpcCode::InvalidRequest, e.message)),
    };
    let backend = ServiceBackend {
        service: &state.service,
        caller: &caller,
    };
    Json(handle(&backend, &body).await).into_response()
}

/// An error object with `id: null` under an HTTP status other than 200.
fn http_error(status: StatusCode, error: RpcError) -> Response {
    (status, Json(error_response(Value::Null, &error))).into_response()
}

/// [`Backend`] over the service layer, for one authenticated caller.
struct ServiceBackend<'a> {
    service: &'a Service,
    caller: &'a Caller,
}

impl Backend for ServiceBackend<'_> {
    async fn accounts(&self) -> Result<Vec<[u8; 20]>, RpcError> {
        let keys = self
            .service
            .signable_keys(self.caller)
            .await
            .map_err(service_error)?;
        Ok(keys
            .iter()
            .filter(|k| k.algorithm == Algorithm::Secp256k1)
            .filter_map(|k| ekms_signer::address::parse_evm_address(&k.address))
            .collect())
    }

    async fn sign(
        &self,
        address: [u8; 20],
        kind: PayloadKind,
        bytes: Vec<u8>,
    ) -> Result<SignOutput, RpcError> {
        let key_id = match self.service.evm_key_for_address(self.caller, address).await {
            Ok(key_id) => key_id,
            Err(ServiceError::KeyNotFound) => return Err(RpcError::unknown_account(&address)),
            Err(e) => return Err(service_error(e)),
        };
        let request = SignRequest {
            key_id,
            payload: SignPayload { kind, bytes },
        };
        self.service
            .sign(self.caller, request)
            .await
            .map(|signed| signed.output)
            .map_err(service_error)
    }
}

/// A service error as a JSON-RPC error object: a scope refusal `4100`; a policy
/// refusal, a disabled key or a stopped store `-32003` with the rule; what REST answers
/// with a 4xx `-32602`; an enclave or KMS that cannot serve now `-32002`; anything else
/// `-32603`. `data.code` is the REST API's code ([`ApiCode`]).
fn service_error(error: ServiceError) -> RpcError {
    let api = match error {
        ServiceError::Forbidden(message) => {
            return RpcError::new(RpcCode::Unauthorized, message);
        }
        ServiceError::PolicyDenied(refusal) => {
            return RpcError::rejected(&refusal.rule, &refusal.message);
        }
        other => ApiError::from(other),
    };
    let code = match api.code {
        ApiCode::KeyDisabled | ApiCode::StoreStopped => {
            return RpcError::rejected(api.code.as_str(), &api.message);
        }
        _ if api.status.is_client_error() => RpcCode::InvalidParams,
        _ if matches!(
            api.status,
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ) =>
        {
            RpcCode::ResourceUnavailable
        }
        _ => RpcCode::Internal,
    };
    RpcError {
        code,
        message: format!("{}: {}", api.code.as_str(), api.message),
        data: Some(json!({ "code": api.code.as_str() })),
    }
}

#[cfg(test)]
mod tests;
