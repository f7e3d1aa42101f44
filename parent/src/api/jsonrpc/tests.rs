//! Tests of the JSON-RPC protocol part: envelopes, parameters, the transaction object's
//! unsigned encoding (signing hashes from eth-account 0.14, an independent
//! implementation), results and error objects. The backend here is a recording stand-in
//! for the service layer; e2e/test_jsonrpc.py runs the endpoint on a real simulation.

use std::sync::Mutex;

use serde_json::{json, Value};
use sha3::{Digest as _, Keccak256};

use super::*;

const DEAD: &str = "0x000000000000000000000000000000000000dEaD";
const FROM: &str = "0x1111111111111111111111111111111111111111";

fn from() -> [u8; 20] {
    [0x11; 20]
}

fn keccak_hex(bytes: &[u8]) -> String {
    hex::encode(Keccak256::digest(bytes))
}

/// One signing request the backend saw: address, kind, bytes.
type Asked = ([u8; 20], PayloadKind, Vec<u8>);

/// Answers with fixed outputs and remembers what it was asked.
#[derive(Default)]
struct Recording {
    asked: Mutex<Vec<Asked>>,
    refuse: Option<RpcError>,
}

impl Backend for Recording {
    async fn accounts(&self) -> Result<Vec<[u8; 20]>, RpcError> {
        Ok(vec![from(), [0xab; 20]])
    }

    async fn sign(
        &self,
        address: [u8; 20],
        kind: PayloadKind,
        bytes: Vec<u8>,
    ) -> Result<SignOutput, RpcError> {
        self.asked
            .lock()
            .unwrap()
            .push((address, kind, bytes.clone()));
        if address != from() {
            return Err(RpcError::unknown_account(&address));
        }
        if let Some(e) = &self.refuse {
            return Err(e.clone());
        }
        Ok(match kind {
            PayloadKind::EvmTransaction => SignOutput::Evm {
                r: [1; 32],
                s: [2; 32],
                y_parity: 1,
                v: 1,
                signed_transaction: vec![0x02, 0xaa, 0xbb],
                transaction_hash: [3; 32],
            },
            _ => SignOutput::EvmDigest {
                digest: [4; 32],
                r: [5; 32],
                s: [6; 32],
                y_parity: 0,
            },
        })
    }
}

fn call(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
}

async fn answer(backend: &Recording, request: Value) -> Value {
    handle(backend, request.to_string().as_bytes()).await
}

fn error_code(answer: &Value) -> i64 {
    answer["error"]["code"].as_i64().unwrap()
}

#[test]
fn codes_are_pinned() {
    let codes: Vec<i64> = RpcCode::ALL.iter().map(|c| c.as_i64()).collect();
    assert_eq!(
        codes,
        [-32700, -32600, -32601, -32602, -32603, -32002, -32003, 4100]
    );
}

#[test]
fn encodes_an_eip1559_transaction_as_eth_account_hashes_it() {
    let (address, bytes) = unsigned_transaction(json!({
        "from": FROM, "type": "0x2", "chainId": "0x1", "nonce": "0x7", "to": DEAD,
        "value": "0x38d7ea4c68000", "gas": "0x5208", "maxFeePerGas": "0x6fc23ac00",
        "maxPriorityFeePerGas": "0x3b9aca00", "data": "0x1234", "accessList": []
    }))
    .unwrap();
    assert_eq!(address, from());
    assert_eq!(
        keccak_hex(&bytes),
        "a1daa2fd32d5ae3883d2001950173b4223466dc26ea2790dc8e71899da4c3c8b"
    );
    let tx = ekms_signer::decode_unsigned(&bytes).unwrap();
    assert_eq!(tx.chain_id(), 1);
    assert_eq!(tx.nonce(), 7);
}

#[test]
fn encodes_a_legacy_transaction_in_its_eip155_form() {
    let (_, bytes) = unsigned_transaction(json!({
        "from": FROM, "chainId": "0x89", "nonce": "0x1", "to": DEAD, "value": "0x5",
        "gas": "0xc350", "gasPrice": "0x77359400"
    }))
    .unwrap();
    assert_eq!(
        keccak_hex(&bytes),
        "35648f426a46028d02238fce10ab71099c18a87f80e08262f7739ec6ef9409da"
    );
    assert!(ekms_signer::decode_unsigned(&bytes).is_ok());
}

#[test]
fn encodes_an_eip2930_transaction_with_its_access_list_and_input() {
    let (_, bytes) = unsigned_transaction(json!({
        "from": FROM, "type": "0x1", "chainId": "0xa", "nonce": "0x0", "to": DEAD,
        "value": "0x0", "gas": "0xea60", "gasPrice": "0x3b9aca00", "input": "0xab",
        "accessList": [{"address": "0x000000000000000000000000000000000000bEEF",
                        "storageKeys": [format!("0x{}01", "00".repeat(31))]}]
    }))
    .unwrap();
    assert_eq!(
        keccak_hex(&bytes),
        "59aad86bee2869d337292dfc6eadb5e0328a9a92f1f90e1a23c703c9f0692a8e"
    );
}

#[test]
fn a_missing_to_is_a_contract_creation() {
    let (_, bytes) = unsigned_transaction(json!({
        "from": FROM, "chainId": "0x1", "nonce": "0x0", "value": "0x0", "gas": "0x186a0",
        "maxFeePerGas": "0x3b9aca00", "maxPriorityFeePerGas": "0x3b9aca00", "data": "0x6000"
    }))
    .unwrap();
    assert_eq!(
        keccak_hex(&bytes),
        "794deed0be062782db72118bbac985637325616ccfda6a123348d867a95cda54"
    );
}

#[test]
fn rejects_a_transaction_without_chain_id_rather_than_assuming_mainnet() {
    let e = unsigned_transaction(json!({
        "from": FROM, "nonce": "0x0", "to": DEAD, "gas": "0x5208",
        "maxFeePerGas": "0x1", "maxPriorityFeePerGas": "0x1"
    }))
    .unwrap_err();
    assert_eq!(e.code, RpcCode::InvalidParams);
    assert!(e.message.contains("chainId"), "{}", e.message);
}

#[test]
fn rejects_a_transaction_without_from() {
    let e = unsigned_transaction(json!({
        "chainId": "0x1", "nonce": "0x0", "to": DEAD, "gas": "0x5208",
        "maxFeePerGas": "0x1", "maxPriorityFeePerGas": "0x1"
    }))
    .unwrap_err();
    assert!(e.message.contains("from"), "{}", e.message);
}

#[test]
fn rejects_a_type_the_fee_fields_contradict() {
    for (tx, what) in [
        (
            json!({"from": FROM, "type": "0x2", "chainId": "0x1", "nonce": "0x0", "to": DEAD,
                   "gas": "0x5208", "gasPrice": "0x1"}),
            "type 2 with gasPrice",
        ),
        (
            json!({"from": FROM, "type": "0x0", "chainId": "0x1", "nonce": "0x0", "to": DEAD,
                   "gas": "0x5208", "maxFeePerGas": "0x1", "maxPriorityFeePerGas": "0x1"}),
            "type 0 with EIP-1559 fees",
        ),
        (
            json!({"from": FROM, "chainId": "0x1", "nonce": "0x0", "to": DEAD, "gas": "0x5208",
                   "gasPrice": "0x1", "maxFeePerGas": "0x1", "maxPriorityFeePerGas": "0x1"}),
            "both fee kinds",
        ),
    ] {
        let e = unsigned_transaction(tx).unwrap_err();
        assert_eq!(e.code, RpcCode::InvalidParams, "{what}");
    }
}

#[test]
fn rejects_data_and_input_that_differ() {
    let e = unsigned_transaction(json!({
        "from": FROM, "chainId": "0x1", "nonce": "0x0", "to": DEAD, "gas": "0x5208",
        "maxFeePerGas": "0x1", "maxPriorityFeePerGas": "0x1", "data": "0x01", "input": "0x02"
    }))
    .unwrap_err();
    assert!(e.message.contains("differ"), "{}", e.message);
    // The same bytes under both names are one input.
    assert!(unsigned_transaction(json!({
        "from": FROM, "chainId": "0x1", "nonce": "0x0", "to": DEAD, "gas": "0x5208",
        "maxFeePerGas": "0x1", "maxPriorityFeePerGas": "0x1", "data": "0x01", "input": "0x01"
    }))
    .is_ok());
}

#[test]
fn rejects_incomplete_transactions_naming_what_is_missing() {
    let e = unsigned_transaction(json!({
        "from": FROM, "chainId": "0x1", "to": DEAD, "maxFeePerGas": "0x1",
        "maxPriorityFeePerGas": "0x1"
    }))
    .unwrap_err();
    assert!(
        e.message.contains("nonce") && e.message.contains("gas"),
        "{}",
        e.message
    );
}

#[test]
fn rejects_blob_and_delegation_transactions() {
    let e = unsigned_transaction(json!({
        "from": FROM, "chainId": "0x1", "nonce": "0x0", "to": DEAD, "gas": "0x5208",
        "maxFeePerGas": "0x1", "maxPriorityFeePerGas": "0x1",
        "authorizationList": [{"chainId": "0x1", "address": DEAD, "nonce": "0x0",
                               "yParity": "0x0", "r": "0x1", "s": "0x1"}]
    }))
    .unwrap_err();
    assert_eq!(e.code, RpcCode::InvalidParams);
}

#[test]
fn rejects_malformed_quantities_and_non_objects() {
    for tx in [
        json!({"from": FROM, "chainId": "1", "nonce": "0x0", "to": DEAD, "gas": "0x5208",
               "maxFeePerGas": "0x1", "maxPriorityFeePerGas": "0x1"}),
        json!({"from": FROM, "chainId": 1, "nonce": "0x0", "to": DEAD, "gas": "0x5208",
               "maxFeePerGas": "0x1", "maxPriorityFeePerGas": "0x1"}),
        json!({"from": FROM, "chainId": "0x1", "nonce": "0x0", "to": DEAD, "gas": "0x5208",
               "value": "100", "maxFeePerGas": "0x1", "maxPriorityFeePerGas": "0x1"}),
        json!({"from": FROM, "chainId": "0x1", "nonce": "0x0", "To": DEAD, "gas": "0x5208",
               "maxFeePerGas": "0x1", "maxPriorityFeePerGas": "0x1"}),
        json!({"from": "0x12", "chainId": "0x1"}),
        json!("0x02"),
        json!([]),
    ] {
        assert_eq!(
            unsigned_transaction(tx).unwrap_err().code,
            RpcCode::InvalidParams
        );
    }
}

#[tokio::test]
async fn eth_accounts_lists_eip55_addresses() {
    let b = Recording::default();
    let a = answer(&b, call("eth_accounts", json!([]))).await;
    assert_eq!(a["id"], 7);
    assert_eq!(a["jsonrpc"], "2.0");
    assert_eq!(
        a["result"],
        json!([
            ekms_signer::address::eip55(&from()),
            ekms_signer::address::eip55(&[0xab; 20])
        ])
    );
}

#[tokio::test]
async fn sign_transaction_returns_the_raw_signed_transaction() {
    let b = Recording::default();
    let a = answer(
        &b,
        call(
            "eth_signTransaction",
            json!([{"from": FROM, "chainId": "0x1", "nonce": "0x0", "to": DEAD,
                    "gas": "0x5208", "maxFeePerGas": "0x1", "maxPriorityFeePerGas": "0x1"}]),
        ),
    )
    .await;
    assert_eq!(a["result"], "0x02aabb");
    let asked = b.asked.lock().unwrap();
    assert_eq!(asked[0].1, PayloadKind::EvmTransaction);
    assert_eq!(asked[0].2[0], 0x02);
}

#[tokio::test]
async fn message_methods_take_their_parameters_in_their_own_order() {
    let b = Recording::default();
    let expected = format!("0x{}{}1b", "05".repeat(32), "06".repeat(32));
    let a = answer(&b, call("eth_sign", json!([FROM, "0x68656c6c6f"]))).await;
    assert_eq!(a["result"], expected);
    let a = answer(&b, call("personal_sign", json!(["0x68656c6c6f", FROM]))).await;
    assert_eq!(a["result"], expected);
    let typed = json!({"types": {"EIP712Domain": []}, "primaryType": "EIP712Domain",
                       "domain": {}, "message": {}});
    let a = answer(
        &b,
        call("eth_signTypedData_v4", json!([FROM, typed.to_string()])),
    )
    .await;
    assert_eq!(a["result"], expected);
    let a = answer(&b, call("eth_signTypedData_v4", json!([FROM, typed]))).await;
    assert_eq!(a["result"], expected);
    let asked = b.asked.lock().unwrap();
    assert_eq!(asked[0].1, PayloadKind::EvmMessage);
    assert_eq!(asked[0].2, b"hello");
    assert_eq!(asked[1].2, b"hello");
    assert_eq!(asked[2].1, PayloadKind::EvmTypedData);
}

#[tokio::test]
async fn rejects_swapped_or_malformed_message_parameters() {
    let b = Recording::default();
    // personal_sign's order given to eth_sign: the data is not an address.
    let a = answer(&b, call("eth_sign", json!(["0x68656c6c6f", FROM]))).await;
    assert_eq!(error_code(&a), -32602);
    let a = answer(&b, call("personal_sign", json!(["hello", FROM]))).await;
    assert_eq!(error_code(&a), -32602, "text that is not hex is refused");
    let a = answer(&b, call("personal_sign", json!(["0x68", FROM, "password"]))).await;
    assert_eq!(error_code(&a), -32602);
    let a = answer(&b, call("eth_signTypedData_v4", json!([FROM, 5]))).await;
    assert_eq!(error_code(&a), -32602);
    assert!(
        b.asked.lock().unwrap().is_empty(),
        "nothing reached the backend"
    );
}

#[tokio::test]
async fn an_unknown_account_is_invalid_params() {
    let b = Recording::default();
    let other = "0x2222222222222222222222222222222222222222";
    let a = answer(&b, call("eth_sign", json!([other, "0x01"]))).await;
    assert_eq!(error_code(&a), -32602);
    assert!(a["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unknown account"));
}

#[tokio::test]
async fn a_policy_refusal_is_transaction_rejected_with_the_rule() {
    let b = Recording {
        refuse: Some(RpcError::rejected(
            "evm.max_value_wei",
            "value over the cap",
        )),
        ..Recording::default()
    };
    let a = answer(&b, call("eth_sign", json!([FROM, "0x01"]))).await;
    assert_eq!(error_code(&a), -32003);
    assert_eq!(a["error"]["data"]["rule"], "evm.max_value_wei");
    assert!(a["error"]["message"]
        .as_str()
        .unwrap()
        .contains("evm.max_value_wei"));
    assert_eq!(a["id"], 7);
}

#[tokio::test]
async fn rejects_bad_envelopes() {
    let b = Recording::default();
    assert_eq!(error_code(&handle(&b, b"{not json").await), -32700);
    for (request, code) in [
        (
            json!({"jsonrpc": "2.0", "method": "eth_accounts", "params": []}),
            -32600,
        ),
        (
            json!({"jsonrpc": "1.0", "id": 1, "method": "eth_accounts"}),
            -32600,
        ),
        (
            json!({"jsonrpc": "2.0", "id": {}, "method": "eth_accounts"}),
            -32600,
        ),
        (json!({"jsonrpc": "2.0", "id": 1, "method": 5}), -32600),
        (
            json!({"jsonrpc": "2.0", "id": 1, "method": "eth_sendTransaction", "params": []}),
            -32601,
        ),
        (
            json!({"jsonrpc": "2.0", "id": 1, "method": "eth_accounts", "params": {}}),
            -32602,
        ),
        (
            json!({"jsonrpc": "2.0", "id": 1, "method": "eth_accounts", "params": [1]}),
            -32602,
        ),
        (json!(5), -32600),
        (json!([]), -32600),
    ] {
        let a = answer(&b, request.clone()).await;
        assert_eq!(error_code(&a), code, "{request}");
    }
}

#[tokio::test]
async fn a_batch_is_answered_in_order_and_bounded() {
    let b = Recording::default();
    let batch = json!([
        call("eth_accounts", json!([])),
        {"jsonrpc": "2.0", "id": "x", "method": "nope"},
    ]);
    let a = answer(&b, batch).await;
    assert_eq!(a[0]["id"], 7);
    assert!(a[0]["result"].is_array());
    assert_eq!(a[1]["id"], "x");
    assert_eq!(error_code(&a[1]), -32601);
    let long = Value::Array(vec![call("eth_accounts", json!([])); MAX_BATCH + 1]);
    assert_eq!(error_code(&answer(&b, long).await), -32600);
}

#[test]
fn an_unknown_method_is_not_echoed_at_length() {
    let e = parse_call(&"x".repeat(10_000), json!([])).unwrap_err();
    assert!(e.message.len() < 300);
}

#[tokio::test]
async fn rejects_repeated_keys_anywhere_in_the_body() {
    // serde_json's `Value` keeps the last of two keys; a proxy, a log or the caller's
    // own parser may keep the first: `to` twice would be signed to the second address.
    let b = Recording::default();
    let tx = format!(
        r#"{{"from": "{FROM}", "chainId": "0x1", "nonce": "0x0", "to": "{DEAD}",
            "to": "0x2222222222222222222222222222222222222222", "gas": "0x5208",
            "maxFeePerGas": "0x1", "maxPriorityFeePerGas": "0x1"}}"#
    );
    for body in [
        format!(
            r#"{{"jsonrpc": "2.0", "id": 1, "method": "eth_signTransaction", "params": [{tx}]}}"#
        ),
        format!(
            r#"[{{"jsonrpc": "2.0", "id": 1, "method": "eth_signTransaction", "params": [{tx}]}}]"#
        ),
        format!(
            r#"{{"jsonrpc": "2.0", "id": 1, "method": "eth_accounts", "method": "eth_sign",
                "params": ["{FROM}", "0x01"]}}"#
        ),
        format!(
            r#"{{"jsonrpc": "2.0", "id": 1, "method": "eth_signTypedData_v4", "params": ["{FROM}",
                {{"types": {{"EIP712Domain": []}}, "primaryType": "EIP712Domain",
                  "domain": {{}}, "message": {{}}, "message": {{"a": 1}}}}]}}"#
        ),
    ] {
        let a = handle(&b, body.as_bytes()).await;
        assert_eq!(a["error"]["code"], -32600, "{a}");
        assert!(
            a["error"]["message"]
                .as_str()
                .unwrap()
                .contains("repeats the key"),
            "{a}"
        );
    }
    assert!(b.asked.lock().unwrap().is_empty(), "nothing was signed");
    // Numbers and escapes read as serde_json's `Value` reads them ("\u0074o" is "to").
    let a = handle(
        &b,
        br#"{"jsonrpc": "2.0", "id": 18446744073709551616, "method": "eth_accounts"}"#,
    )
    .await;
    assert!(a["id"].is_number() && a["result"].is_array(), "{a}");
    let escaped = format!(
        r#"{{"jsonrpc": "2.0", "id": 1, "method": "eth_signTransaction", "params": [{{"from": "{FROM}",
            "chainId": "0x1", "nonce": "0x0", "to": "{DEAD}", "\u0074o": "{DEAD}", "gas": "0x5208",
            "maxFeePerGas": "0x1", "maxPriorityFeePerGas": "0x1"}}]}}"#
    );
    assert_eq!(
        handle(&b, escaped.as_bytes()).await["error"]["code"],
        -32600
    );
    // Nesting is still bounded by serde_json's limit.
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    assert_eq!(handle(&b, deep.as_bytes()).await["error"]["code"], -32700);
    // The same keys once each are served.
    let once = call(
        "eth_signTransaction",
        json!([{"from": FROM, "chainId": "0x1", "nonce": "0x0", "to": DEAD, "gas": "0x5208",
                "maxFeePerGas": "0x1", "maxPriorityFeePerGas": "0x1"}]),
    );
    assert!(answer(&b, once).await["result"].is_string());
}

#[test]
fn rejects_blob_and_delegation_fields_alloy_would_drop() {
    // alloy builds a type 0x2 transaction from these, dropping the blob fields.
    for (name, value) in [
        ("maxFeePerBlobGas", json!("0x1")),
        ("sidecar", json!({"blobs": []})),
        ("blobVersionedHashes", json!([])),
        ("authorizationList", json!([])),
    ] {
        let mut tx = json!({"from": FROM, "chainId": "0x1", "nonce": "0x0", "to": DEAD,
            "gas": "0x5208", "maxFeePerGas": "0x1", "maxPriorityFeePerGas": "0x1"});
        tx[name] = value;
        let e = unsigned_transaction(tx).unwrap_err();
        assert_eq!(e.code, RpcCode::InvalidParams);
        assert!(e.message.contains(name), "{}", e.message);
    }
    let mut tx = json!({"from": FROM, "chainId": "0x1", "nonce": "0x0", "to": DEAD,
        "gas": "0x5208", "maxFeePerGas": "0x1", "maxPriorityFeePerGas": "0x1"});
    tx["maxFeePerBlobGas"] = Value::Null;
    assert!(unsigned_transaction(tx).is_ok(), "null is a missing field");
}

#[test]
fn rejects_transaction_addresses_the_address_parameters_refuse() {
    let tx = |field: &str, value: Value| {
        let mut tx = json!({"from": FROM, "chainId": "0x1", "nonce": "0x0", "to": DEAD,
            "gas": "0x5208", "maxFeePerGas": "0x1", "maxPriorityFeePerGas": "0x1"});
        tx[field] = value;
        unsigned_transaction(tx)
    };
    let bad_checksum = "0x000000000000000000000000000000000000dEAD";
    assert!(ekms_signer::address::parse_evm_address(bad_checksum).is_none());
    for field in ["to", "from"] {
        for value in [
            json!(bad_checksum),
            json!("0X000000000000000000000000000000000000dead"),
            json!("000000000000000000000000000000000000dead"),
            json!(" 0x000000000000000000000000000000000000dead"),
            json!([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xde, 0xad]),
            json!(""),
        ] {
            let e = tx(field, value.clone()).unwrap_err();
            assert_eq!(e.code, RpcCode::InvalidParams, "{field} {value}");
            assert!(e.message.starts_with(field), "{}", e.message);
        }
    }
    assert!(tx("from", Value::Null).is_err());
    for (field, value) in [
        ("to", json!("0x000000000000000000000000000000000000DEAD")),
        ("to", json!("0x000000000000000000000000000000000000dead")),
        ("to", Value::Null),
        ("from", json!(FROM)),
    ] {
        assert!(tx(field, value.clone()).is_ok(), "{field} {value}");
    }
}
