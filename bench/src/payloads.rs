//! The benchmark's payloads and policies: a real unsigned EIP-1559 transaction, a real
//! Solana System Program transfer, the two key policies that allow exactly them, and
//! the one-time checks that an answer of the API really is a valid signature by the
//! key that was created (so the timed loops only need to check the status and shape).

use alloy_consensus::{SignableTransaction, TxEip1559};
use alloy_primitives::{Address, Bytes, Signature, TxKind, U256};
use base64::Engine as _;
use ed25519_dalek::Verifier as _;
use ekms_shared::api::SignRequest;
use serde_json::{json, Value};
use solana_message::{AccountMeta, Hash, Instruction, Message, VersionedMessage};

use crate::Error;

/// Chain id of the benchmark's EVM transaction (Ethereum mainnet, EIP-155).
pub const EVM_CHAIN_ID: u64 = 1;

/// Destination of the benchmark's EVM transaction, the only one its policy allows.
pub const EVM_DESTINATION: [u8; 20] = [0x11; 20];

/// Value of the benchmark's EVM transaction, in wei (0.001 ether).
pub const EVM_VALUE_WEI: u64 = 1_000_000_000_000_000;

/// Recipient of the benchmark's Solana transfer.
pub const SOLANA_RECIPIENT: [u8; 32] = [0x22; 32];

/// Lamports moved by the benchmark's Solana transfer.
pub const SOLANA_LAMPORTS: u64 = 5_000;

/// The System Program id, base58 (all zero bytes).
pub const SYSTEM_PROGRAM: &str = "11111111111111111111111111111111";

/// The unsigned EIP-2718 bytes (`0x02 || rlp([chain_id, nonce, …, access_list])`,
/// EIP-1559) of a plain ether transfer to [`EVM_DESTINATION`] on [`EVM_CHAIN_ID`]:
/// what a wallet back end sends to be signed.
pub fn evm_unsigned_tx() -> Vec<u8> {
    let tx = TxEip1559 {
        chain_id: EVM_CHAIN_ID,
        nonce: 42,
        gas_limit: 21_000,
        max_fee_per_gas: 30_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: TxKind::Call(Address::from(EVM_DESTINATION)),
        value: U256::from(EVM_VALUE_WEI),
        access_list: Default::default(),
        input: Bytes::new(),
    };
    let mut out = Vec::new();
    SignableTransaction::<Signature>::encode_for_signing(&tx, &mut out);
    out
}

/// An unsigned legacy Solana transaction (`compact-u16 1 || 64 zero bytes || message`)
/// whose message is one System Program `Transfer` of [`SOLANA_LAMPORTS`] from `payer`
/// (the fee payer and only signer) to [`SOLANA_RECIPIENT`], with a fixed blockhash.
///
/// # Errors
/// [`Error::Payload`] if the message does not serialize (not expected).
pub fn solana_unsigned_tx(payer: [u8; 32]) -> Result<Vec<u8>, Error> {
    // SystemInstruction::Transfer: u32 LE discriminant 2, then u64 LE lamports.
    let mut data = 2u32.to_le_bytes().to_vec();
    data.extend_from_slice(&SOLANA_LAMPORTS.to_le_bytes());
    let ix = Instruction::new_with_bytes(
        solana_message::Address::from([0u8; 32]),
        &data,
        vec![
            AccountMeta::new(solana_message::Address::from(payer), true),
            AccountMeta::new(solana_message::Address::from(SOLANA_RECIPIENT), false),
        ],
    );
    let msg = Message::new_with_blockhash(
        &[ix],
        Some(&solana_message::Address::from(payer)),
        &Hash::new_from_array([7; 32]),
    );
    let message = wincode::serialize(&VersionedMessage::Legacy(msg))
        .map_err(|e| Error::Payload(format!("Solana message: {e}")))?;
    // One signature slot: compact-u16 of a count below 128 is that single byte.
    let mut out = Vec::with_capacity(1 + 64 + message.len());
    out.push(1);
    out.resize(1 + 64, 0);
    out.extend_from_slice(&message);
    Ok(out)
}

/// The policy of the benchmark's secp256k1 key: chain [`EVM_CHAIN_ID`], destination
/// [`EVM_DESTINATION`], at most 1 ether per transaction
/// and 0.01 ether in fees.
pub fn evm_policy() -> Value {
    json!({
        "enabled": true,
        "evm": {
            "chain_ids": [EVM_CHAIN_ID],
            "allowed_destinations": [format!("0x{}", hex::encode(EVM_DESTINATION))],
            "max_value_wei": "1000000000000000000",
            "max_fee_wei": "10000000000000000",
        }
    })
}

/// The policy of the benchmark's ed25519 key: System Program only, at most 1,000,000
/// lamports per transfer and per transaction, at most 10,000 lamports in fees.
pub fn solana_policy() -> Value {
    json!({
        "enabled": true,
        "solana": {
            "allowed_programs": [SYSTEM_PROGRAM],
            "max_lamports_per_transfer": 1_000_000u64,
            "max_lamports_per_transaction": 1_000_000u64,
            "max_fee_lamports": 10_000u64,
        }
    })
}

/// The JSON body of `POST /v1/keys/{id}/sign` for an EVM payload (`0x` hex).
pub fn evm_sign_body(unsigned: &[u8]) -> Vec<u8> {
    sign_body("evm_transaction", format!("0x{}", hex::encode(unsigned)))
}

/// A sign request body ([`SignRequest`]) as bytes.
fn sign_body(kind: &str, payload: String) -> Vec<u8> {
    let request = SignRequest {
        kind: kind.to_owned(),
        payload: payload.into(),
    };
    serde_json::to_vec(&request).unwrap_or_default()
}

/// The JSON body of `POST /v1/keys/{id}/sign` for a Solana payload (base64).
pub fn solana_sign_body(unsigned: &[u8]) -> Vec<u8> {
    let payload = base64::engine::general_purpose::STANDARD.encode(unsigned);
    sign_body("solana_transaction", payload)
}

/// Checks an EVM sign answer (`{"signature":{"r","s","y_parity"},…}`): the signature
/// over the transaction's EIP-1559 sighash recovers to `address` (`0x` + 40 hex, any
/// case).
///
/// # Errors
/// [`Error::BadAnswer`] if a field is missing or malformed or the signer differs.
pub fn check_evm_answer(answer: &Value, unsigned: &[u8], address: &str) -> Result<(), Error> {
    let bad = |m: &str| Error::BadAnswer(format!("EVM: {m}"));
    let field = |name: &str| -> Result<Vec<u8>, Error> {
        let text = answer["signature"][name]
            .as_str()
            .ok_or_else(|| bad(&format!("no signature.{name}")))?;
        hex::decode(text.trim_start_matches("0x")).map_err(|_| bad(&format!("{name} not hex")))
    };
    let (r, s) = (field("r")?, field("s")?);
    let parity = answer["signature"]["y_parity"]
        .as_u64()
        .ok_or_else(|| bad("no y_parity"))?;
    if r.len() != 32 || s.len() != 32 || parity > 1 {
        return Err(bad("r, s or y_parity out of shape"));
    }
    let tx = ekms_signer::decode_unsigned(unsigned).map_err(|e| bad(&e.to_string()))?;
    let sig = k256::ecdsa::Signature::from_slice(&[r, s].concat()).map_err(|_| bad("r || s"))?;
    let recid = k256::ecdsa::RecoveryId::new(parity == 1, false);
    let vk = k256::ecdsa::VerifyingKey::recover_from_prehash(&tx.sighash(), &sig, recid)
        .map_err(|_| bad("signature does not recover"))?;
    let recovered = ekms_signer::evm_address(vk.to_sec1_point(true).as_bytes())
        .map_err(|e| bad(&e.to_string()))?;
    let expected =
        hex::decode(address.trim_start_matches("0x")).map_err(|_| bad("address not hex"))?;
    if recovered[..] != expected[..] {
        return Err(bad("signature is not by the key's address"));
    }
    Ok(())
}

/// Checks a Solana sign answer (`{"signature":"<base58>",…}`): a valid ed25519
/// signature (RFC 8032, strict) by `public_key` (base58) over the transaction's message.
///
/// # Errors
/// [`Error::BadAnswer`] if a field is missing or malformed or the signature fails.
pub fn check_solana_answer(answer: &Value, unsigned: &[u8], public_key: &str) -> Result<(), Error> {
    let bad = |m: &str| Error::BadAnswer(format!("Solana: {m}"));
    let sig = answer["signature"]
        .as_str()
        .and_then(|s| bs58::decode(s).into_vec().ok())
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .ok_or_else(|| bad("no 64-byte base58 signature"))?;
    let public = decode_solana_key(public_key)?;
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&public).map_err(|_| bad("public key"))?;
    let payload = ekms_signer::decode_solana(unsigned).map_err(|e| bad(&e.to_string()))?;
    vk.verify(
        payload.message_bytes(),
        &ed25519_dalek::Signature::from_bytes(&sig),
    )
    .map_err(|_| bad("signature does not verify"))
}

/// A base58 Solana public key as its 32 bytes.
///
/// # Errors
/// [`Error::BadAnswer`] if it is not base58 of exactly 32 bytes.
pub fn decode_solana_key(text: &str) -> Result<[u8; 32], Error> {
    bs58::decode(text)
        .into_vec()
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| Error::BadAnswer(format!("{text:?} is not a base58 32-byte key")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ekms_signer::{Ed25519Secret, Policy, Secp256k1Secret};

    fn evm_key() -> (Secp256k1Secret, String) {
        let key = Secp256k1Secret::from_bytes(&[0x42; 32]).unwrap();
        let addr = ekms_signer::evm_address(&key.public_key()).unwrap();
        (key, format!("0x{}", hex::encode(addr)))
    }

    fn sol_key() -> (Ed25519Secret, [u8; 32]) {
        let key = Ed25519Secret::from_bytes(&[0x43; 32]).unwrap();
        let public: [u8; 32] = key.public_key().try_into().unwrap();
        (key, public)
    }

    fn evm_answer(sig: &ekms_signer::EvmSignature) -> Value {
        json!({"signature": {
            "r": format!("0x{}", hex::encode(sig.r)),
            "s": format!("0x{}", hex::encode(sig.s)),
            "y_parity": sig.y_parity,
            "v": sig.v,
        }})
    }

    #[test]
    fn evm_payload_decodes_and_its_policy_allows_it() {
        let bytes = evm_unsigned_tx();
        assert_eq!(bytes[0], 0x02);
        let tx = ekms_signer::decode_unsigned(&bytes).unwrap();
        assert_eq!(tx.chain_id(), EVM_CHAIN_ID);
        assert_eq!(tx.to(), Some(EVM_DESTINATION));
        assert_eq!(tx.value(), U256::from(EVM_VALUE_WEI));
        let policy = Policy::parse(&evm_policy().to_string()).unwrap();
        policy.evaluate_evm(&tx).unwrap();
    }

    #[test]
    fn rejects_evm_payload_under_the_solana_policy() {
        let tx = ekms_signer::decode_unsigned(&evm_unsigned_tx()).unwrap();
        let policy = Policy::parse(&solana_policy().to_string()).unwrap();
        assert!(policy.evaluate_evm(&tx).is_err());
    }

    #[test]
    fn solana_payload_decodes_and_its_policy_allows_it() {
        let (_, public) = sol_key();
        let bytes = solana_unsigned_tx(public).unwrap();
        let p = ekms_signer::decode_solana(&bytes).unwrap();
        assert!(p.is_transaction());
        assert_eq!(p.required_signers(), &[public]);
        let transfers = p.system_transfers().unwrap();
        assert_eq!(transfers.len(), 1);
        assert_eq!(transfers[0].lamports, SOLANA_LAMPORTS);
        assert_eq!(transfers[0].to, Some(SOLANA_RECIPIENT));
        let policy = Policy::parse(&solana_policy().to_string()).unwrap();
        policy.evaluate_solana(&p, &public).unwrap();
    }

    #[test]
    fn rejects_solana_payload_under_the_evm_policy() {
        let (_, public) = sol_key();
        let p = ekms_signer::decode_solana(&solana_unsigned_tx(public).unwrap()).unwrap();
        let policy = Policy::parse(&evm_policy().to_string()).unwrap();
        assert!(policy.evaluate_solana(&p, &public).is_err());
    }

    #[test]
    fn sign_bodies_carry_the_payload() {
        let body: Value = serde_json::from_slice(&evm_sign_body(&[0x02, 0xab])).unwrap();
        assert_eq!(body["kind"], "evm_transaction");
        assert_eq!(body["payload"], "0x02ab");
        let body: Value = serde_json::from_slice(&solana_sign_body(&[1, 2, 3])).unwrap();
        assert_eq!(body["kind"], "solana_transaction");
        assert_eq!(body["payload"], "AQID");
    }

    #[test]
    fn evm_answer_check_accepts_a_real_signature() {
        let (key, address) = evm_key();
        let bytes = evm_unsigned_tx();
        let tx = ekms_signer::decode_unsigned(&bytes).unwrap();
        let sig = ekms_signer::sign_evm(&tx, &key).unwrap();
        check_evm_answer(&evm_answer(&sig), &bytes, &address).unwrap();
    }

    #[test]
    fn rejects_evm_answer_from_another_key() {
        let (_, address) = evm_key();
        let other = Secp256k1Secret::from_bytes(&[0x44; 32]).unwrap();
        let bytes = evm_unsigned_tx();
        let tx = ekms_signer::decode_unsigned(&bytes).unwrap();
        let sig = ekms_signer::sign_evm(&tx, &other).unwrap();
        assert!(check_evm_answer(&evm_answer(&sig), &bytes, &address).is_err());
        assert!(check_evm_answer(&json!({}), &bytes, &address).is_err());
    }

    #[test]
    fn solana_answer_check_accepts_a_real_signature() {
        let (key, public) = sol_key();
        let bytes = solana_unsigned_tx(public).unwrap();
        let p = ekms_signer::decode_solana(&bytes).unwrap();
        let sig = ekms_signer::sign_solana(&p, &key, &public).unwrap();
        let answer = json!({"signature": bs58::encode(sig.signature).into_string()});
        let public58 = bs58::encode(public).into_string();
        check_solana_answer(&answer, &bytes, &public58).unwrap();
    }

    #[test]
    fn rejects_solana_answer_with_a_flipped_bit() {
        let (key, public) = sol_key();
        let bytes = solana_unsigned_tx(public).unwrap();
        let p = ekms_signer::decode_solana(&bytes).unwrap();
        let mut sig = ekms_signer::sign_solana(&p, &key, &public)
            .unwrap()
            .signature;
        sig[5] ^= 1;
        let answer = json!({"signature": bs58::encode(sig).into_string()});
        let public58 = bs58::encode(public).into_string();
        assert!(check_solana_answer(&answer, &bytes, &public58).is_err());
        assert!(decode_solana_key("0OIl").is_err());
    }
}
