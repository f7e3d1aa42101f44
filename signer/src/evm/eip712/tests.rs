//! Tests of EIP-712 decoding: the spec's `Mail` example, permits, bounds.

use super::*;
use crate::evm::sign::sign_evm_hash;
use crate::secret::{evm_address, Secp256k1Secret};

/// The example of EIP-712 ("Specification of the eth_signTypedData JSON RPC", the
/// `Example.js` / `Example.sol` of the EIP's assets), whose signing hash and signature
/// by the key `keccak256("cow")` the EIP publishes.
pub(crate) const MAIL: &str = r#"{
  "types": {
    "EIP712Domain": [
      {"name": "name", "type": "string"},
      {"name": "version", "type": "string"},
      {"name": "chainId", "type": "uint256"},
      {"name": "verifyingContract", "type": "address"}
    ],
    "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
    "Mail": [
      {"name": "from", "type": "Person"},
      {"name": "to", "type": "Person"},
      {"name": "contents", "type": "string"}
    ]
  },
  "primaryType": "Mail",
  "domain": {
    "name": "Ether Mail",
    "version": "1",
    "chainId": 1,
    "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"
  },
  "message": {
    "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
    "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
    "contents": "Hello, Bob!"
  }
}"#;

#[test]
fn eip712_mail_example_hash_and_signature() {
    let t = TypedDataPayload::decode(MAIL.as_bytes()).unwrap();
    assert_eq!(
        hex::encode(t.signing_hash()),
        "be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
    );
    assert_eq!(t.primary_type(), "Mail");
    assert_eq!(t.domain_name(), Some("Ether Mail"));
    assert_eq!(t.domain_chain_id(), Some(U256::from(1u8)));
    assert!(t.permit().is_none());

    let cow = alloy_primitives::keccak256(b"cow").0;
    let key = Secp256k1Secret::from_bytes(&cow).unwrap();
    assert_eq!(
        crate::secret::eip55(&evm_address(&key.public_key()).unwrap()),
        "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"
    );
    let sig = sign_evm_hash(&t.signing_hash(), &key).unwrap();
    // EIP-712's published signature (v, r, s); RFC 6979 makes it deterministic.
    assert_eq!(sig.v, 28);
    assert_eq!(
        hex::encode(sig.r),
        "4355c47d63924e8a72e509b65029052eb6c299d53a04e167c5775fd466751c9d"
    );
    assert_eq!(
        hex::encode(sig.s),
        "07299936d304c153f6443dfa05f40ff007d72911b6f72307f996231605b91562"
    );
}

pub(crate) fn permit2_single(spender: &str, token: &str, amount: &str) -> String {
    format!(
        r#"{{"types":{{
  "EIP712Domain":[{{"name":"name","type":"string"}},{{"name":"chainId","type":"uint256"}},{{"name":"verifyingContract","type":"address"}}],
  "PermitSingle":[{{"name":"details","type":"PermitDetails"}},{{"name":"spender","type":"address"}},{{"name":"sigDeadline","type":"uint256"}}],
  "PermitDetails":[{{"name":"token","type":"address"}},{{"name":"amount","type":"uint160"}},{{"name":"expiration","type":"uint48"}},{{"name":"nonce","type":"uint48"}}]}},
 "primaryType":"PermitSingle",
 "domain":{{"name":"Permit2","chainId":1,"verifyingContract":"0x000000000022D473030F116dDEE9F6B43aC78BA3"}},
 "message":{{"details":{{"token":"{token}","amount":"{amount}","expiration":1700000000,"nonce":0}},"spender":"{spender}","sigDeadline":1700000000}}}}"#
    )
}

#[test]
fn decodes_permit2_single() {
    let json = permit2_single(
        "0x3fC91A3afd70395Cd496C647d5a6CC9D4B2b7FAD",
        "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
        "1000000",
    );
    let t = TypedDataPayload::decode(json.as_bytes()).unwrap();
    let p = t.permit().unwrap();
    assert_eq!(p.kind, "PermitSingle");
    assert_eq!(
        hex::encode(p.spender),
        "3fc91a3afd70395cd496c647d5a6cc9d4b2b7fad"
    );
    assert_eq!(p.grants.len(), 1);
    assert_eq!(p.grants[0].amount, U256::from(1_000_000u64));
    assert!(!p.grants[0].unlimited);
    let max = uint160_max().to_string();
    let json = permit2_single(
        "0x3fC91A3afd70395Cd496C647d5a6CC9D4B2b7FAD",
        "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
        &max,
    );
    let t = TypedDataPayload::decode(json.as_bytes()).unwrap();
    assert!(t.permit().unwrap().grants[0].unlimited);
}

pub(crate) fn eip2612(token: &str, chain_id: u64, spender: &str, value: &str) -> String {
    format!(
        r#"{{"types":{{
  "EIP712Domain":[{{"name":"name","type":"string"}},{{"name":"version","type":"string"}},{{"name":"chainId","type":"uint256"}},{{"name":"verifyingContract","type":"address"}}],
  "Permit":[{{"name":"owner","type":"address"}},{{"name":"spender","type":"address"}},{{"name":"value","type":"uint256"}},{{"name":"nonce","type":"uint256"}},{{"name":"deadline","type":"uint256"}}]}},
 "primaryType":"Permit",
 "domain":{{"name":"USD Coin","version":"2","chainId":{chain_id},"verifyingContract":"{token}"}},
 "message":{{"owner":"0x1111111111111111111111111111111111111111","spender":"{spender}","value":"{value}","nonce":0,"deadline":1700000000}}}}"#
    )
}

#[test]
fn decodes_eip2612_permit() {
    let json = eip2612(
        "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
        1,
        "0x2222222222222222222222222222222222222222",
        "5",
    );
    let t = TypedDataPayload::decode(json.as_bytes()).unwrap();
    let p = t.permit().unwrap();
    assert_eq!(p.kind, "Permit");
    assert_eq!(p.spender, [0x22; 20]);
    assert_eq!(
        hex::encode(p.grants[0].token),
        "a0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
    );
    assert_eq!(p.grants[0].amount, U256::from(5u8));
}

#[test]
fn rejects_permit_of_unknown_shape() {
    // DAI's permit: `holder, spender, nonce, expiry, allowed`.
    let json = r#"{"types":{"Permit":[{"name":"holder","type":"address"},{"name":"spender","type":"address"},
      {"name":"nonce","type":"uint256"},{"name":"expiry","type":"uint256"},{"name":"allowed","type":"bool"}]},
      "primaryType":"Permit","domain":{"name":"Dai Stablecoin","chainId":1},
      "message":{"holder":"0x1111111111111111111111111111111111111111","spender":"0x2222222222222222222222222222222222222222","nonce":0,"expiry":0,"allowed":true}}"#;
    assert!(matches!(
        TypedDataPayload::decode(json.as_bytes()),
        Err(SignerError::UnsupportedPayload { .. })
    ));
}

#[test]
fn rejects_deep_string_form_mismatched_domain_and_oversize() {
    let deep = format!(
        "{}{}",
        "[".repeat(MAX_TYPED_DATA_DEPTH + 1),
        "]".repeat(MAX_TYPED_DATA_DEPTH + 1)
    );
    assert!(TypedDataPayload::decode(deep.as_bytes()).is_err());
    let stringified = serde_json::to_string(MAIL).unwrap();
    assert!(TypedDataPayload::decode(stringified.as_bytes()).is_err());
    // declared domain type without `version`, domain object with it
    let mismatched = MAIL.replace(r#"{"name": "version", "type": "string"},"#, "");
    assert!(TypedDataPayload::decode(mismatched.as_bytes()).is_err());
    let big = vec![b' '; MAX_TYPED_DATA_BYTES + 1];
    assert!(matches!(
        TypedDataPayload::decode(&big),
        Err(SignerError::Oversize { .. })
    ));
    // a message that does not fit its type
    let wrong = MAIL.replace(r#""contents": "Hello, Bob!""#, r#""contents": 5"#);
    assert!(TypedDataPayload::decode(wrong.as_bytes()).is_err());
    assert!(TypedDataPayload::decode(b"{}").is_err());
}

#[test]
fn rejects_typed_data_that_repeats_a_key() {
    // serde kept the last value: a reader that keeps the first saw a permit of 5 where
    // an unlimited one was signed, or a `uint256` field where a `uint8` was hashed.
    let permit = eip2612(
        "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
        1,
        "0x2222222222222222222222222222222222222222",
        "5",
    );
    assert!(TypedDataPayload::decode(permit.as_bytes()).is_ok());
    let max = U256::MAX.to_string();
    let repeated_value =
        permit.replace(r#""value":"5""#, &format!(r#""value":"5","value":"{max}""#));
    let repeated_type = permit.replace(
        r#""primaryType":"Permit""#,
        r#""primaryType":"Permit","primaryType":"Permit""#,
    );
    let repeated_struct = permit.replace(
        r#""types":{"#,
        r#""types":{"Permit":[{"name":"value","type":"uint8"}],"#,
    );
    for json in [repeated_value, repeated_type, repeated_struct] {
        assert_ne!(json, permit);
        let err = TypedDataPayload::decode(json.as_bytes()).unwrap_err();
        assert!(
            matches!(err, SignerError::Malformed { .. })
                && err.to_string().contains("repeats a key"),
            "{err}"
        );
    }
}
