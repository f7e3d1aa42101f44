//! Unsigned EVM transactions: decoding EIP-2718 bytes into [`EvmTx`].
//!
//! Accepted (the bytes a wallet would hash to get the signing hash):
//! - legacy, EIP-155 form only: `rlp([nonce, gasPrice, gas, to, value, data, chainId, 0, 0])`;
//! - EIP-2930: `0x01 || rlp([chainId, nonce, gasPrice, gas, to, value, data, accessList])`;
//! - EIP-1559: `0x02 || rlp([chainId, nonce, maxPriorityFee, maxFee, gas, to, value, data,
//!   accessList])`.
//!
//! Refused: the 6-field pre-EIP-155 legacy form (no chain id: valid on every chain),
//! EIP-4844 blob (0x03) and EIP-7702 (0x04) transactions and unknown types (a policy
//! cannot yet reason about blobs or delegations), chain id 0, trailing bytes, anything
//! over [`MAX_EVM_PAYLOAD`], and any encoding that is not the canonical one alloy
//! re-encodes (so the signing hash is always `keccak256` of exactly the bytes given).
//!
//! Field decoding is alloy's (`alloy-consensus` types, `alloy-rlp`); only the legacy
//! EIP-155 trailer `chainId, 0, 0` is read here, because alloy's own `Decodable` for
//! `TxLegacy` is deliberately permissive about it.

use alloy_consensus::transaction::RlpEcdsaDecodableTx;
use alloy_consensus::{SignableTransaction, TxEip1559, TxEip2930, TxLegacy};
use alloy_primitives::{keccak256, TxKind, U256};
use alloy_rlp::{Decodable, Header};

use crate::SignerError;

/// Largest unsigned EVM payload accepted, in bytes (128 KiB: geth's transaction pool
/// limit for a non-blob transaction). Checked before decoding.
pub const MAX_EVM_PAYLOAD: usize = 128 * 1024;

/// Largest chain id accepted: the legacy `v = chainId * 2 + 35 + yParity` must fit in
/// a `u64` (EIP-155).
const MAX_CHAIN_ID: u64 = (u64::MAX - 36) / 2;

/// The EIP-2718 transaction types this signer accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EvmTxType {
    /// Legacy transaction with an EIP-155 chain id (type byte 0, untyped encoding).
    Legacy,
    /// EIP-2930 access-list transaction (type 0x01).
    Eip2930,
    /// EIP-1559 fee-market transaction (type 0x02).
    Eip1559,
}

impl EvmTxType {
    /// The EIP-2718 type number (0 for legacy).
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Legacy => 0,
            Self::Eip2930 => 1,
            Self::Eip1559 => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inner {
    Legacy(TxLegacy),
    Eip2930(TxEip2930),
    Eip1559(TxEip1559),
}

/// A decoded, unsigned EVM transaction of an accepted type, with its signing hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvmTx {
    pub(crate) inner: Inner,
    pub(crate) chain_id: u64,
    pub(crate) sighash: [u8; 32],
}

impl EvmTx {
    /// The EIP-155 chain id (always present and non-zero).
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The destination address, or `None` for a contract creation.
    pub fn to(&self) -> Option<[u8; 20]> {
        match self.kind() {
            TxKind::Call(addr) => Some(addr.into_array()),
            TxKind::Create => None,
        }
    }

    /// The value transferred, in wei.
    pub fn value(&self) -> U256 {
        match &self.inner {
            Inner::Legacy(tx) => tx.value,
            Inner::Eip2930(tx) => tx.value,
            Inner::Eip1559(tx) => tx.value,
        }
    }

    /// The call data (or init code for a contract creation).
    pub fn input(&self) -> &[u8] {
        match &self.inner {
            Inner::Legacy(tx) => &tx.input,
            Inner::Eip2930(tx) => &tx.input,
            Inner::Eip1559(tx) => &tx.input,
        }
    }

    /// The sender's nonce.
    pub fn nonce(&self) -> u64 {
        match &self.inner {
            Inner::Legacy(tx) => tx.nonce,
            Inner::Eip2930(tx) => tx.nonce,
            Inner::Eip1559(tx) => tx.nonce,
        }
    }

    /// The gas limit.
    pub fn gas_limit(&self) -> u64 {
        match &self.inner {
            Inner::Legacy(tx) => tx.gas_limit,
            Inner::Eip2930(tx) => tx.gas_limit,
            Inner::Eip1559(tx) => tx.gas_limit,
        }
    }

    /// The most the sender can pay per unit of gas, in wei: `gasPrice` for legacy and
    /// EIP-2930 transactions, `maxFeePerGas` for EIP-1559 (whose effective price,
    /// base fee plus priority fee, never exceeds it: EIP-1559 "Specification").
    pub fn max_fee_per_gas(&self) -> u128 {
        match &self.inner {
            Inner::Legacy(tx) => tx.gas_price,
            Inner::Eip2930(tx) => tx.gas_price,
            Inner::Eip1559(tx) => tx.max_fee_per_gas,
        }
    }

    /// The most the sender offers a block builder per unit of gas, in wei:
    /// `maxPriorityFeePerGas` for EIP-1559; for legacy and EIP-2930 transactions the
    /// whole `gasPrice` (the builder may receive all of it above the base fee, and the
    /// engine does not know the base fee).
    pub fn max_priority_fee_per_gas(&self) -> u128 {
        match &self.inner {
            Inner::Legacy(tx) => tx.gas_price,
            Inner::Eip2930(tx) => tx.gas_price,
            Inner::Eip1559(tx) => tx.max_priority_fee_per_gas,
        }
    }

    /// The largest total fee this transaction can cost its sender, in wei:
    /// `gas_limit × max_fee_per_gas` (the amount EIP-1559 requires the sender's balance
    /// to cover up front, besides `value`). Exact: a `u64` times a `u128` is below
    /// 2^192; the multiplication saturates at `U256::MAX` regardless, so no input can
    /// wrap to a small fee.
    pub fn max_fee_wei(&self) -> U256 {
        U256::from(self.gas_limit()).saturating_mul(U256::from(self.max_fee_per_gas()))
    }

    /// The transaction type.
    pub fn tx_type(&self) -> EvmTxType {
        match &self.inner {
            Inner::Legacy(_) => EvmTxType::Legacy,
            Inner::Eip2930(_) => EvmTxType::Eip2930,
            Inner::Eip1559(_) => EvmTxType::Eip1559,
        }
    }

    /// The signing hash: `keccak256` of the unsigned encoding (EIP-155 / EIP-2718),
    /// which is also `keccak256` of the bytes that were decoded.
    pub fn sighash(&self) -> [u8; 32] {
        self.sighash
    }

    fn kind(&self) -> TxKind {
        match &self.inner {
            Inner::Legacy(tx) => tx.to,
            Inner::Eip2930(tx) => tx.to,
            Inner::Eip1559(tx) => tx.to,
        }
    }
}

/// Decodes unsigned EIP-2718 transaction bytes (see the module docs for the accepted
/// forms).
///
/// # Errors
/// - [`SignerError::Oversize`] above [`MAX_EVM_PAYLOAD`] (checked first);
/// - [`SignerError::UnsupportedPayload`] for types 0x03, 0x04, other type bytes, and
///   the pre-EIP-155 legacy form;
/// - [`SignerError::InvalidPayload`] for chain id 0 or too large, or EIP-155 trailer
///   fields that are not `0, 0`;
/// - [`SignerError::Malformed`] for anything that is not canonical RLP of the type's
///   fields, including truncation and trailing bytes.
pub fn decode_unsigned(bytes: &[u8]) -> Result<EvmTx, SignerError> {
    if bytes.len() > MAX_EVM_PAYLOAD {
        return Err(SignerError::Oversize {
            what: "EVM payload",
            len: bytes.len(),
            limit: MAX_EVM_PAYLOAD,
        });
    }
    let Some((&first, rest)) = bytes.split_first() else {
        return Err(SignerError::malformed("empty EVM payload"));
    };
    let inner = match first {
        // An RLP list: the untyped legacy encoding.
        0xc0..=0xff => Inner::Legacy(decode_legacy(bytes)?),
        0x01 => Inner::Eip2930(decode_typed::<TxEip2930>(rest)?),
        0x02 => Inner::Eip1559(decode_typed::<TxEip1559>(rest)?),
        0x03 => {
            return Err(SignerError::unsupported(
                "EIP-4844 blob transactions (type 0x03) are not signed",
            ))
        }
        0x04 => {
            return Err(SignerError::unsupported(
                "EIP-7702 set-code transactions (type 0x04) are not signed",
            ))
        }
        0x00 | 0x05..=0x7f => {
            return Err(SignerError::unsupported(format!(
                "unknown EIP-2718 transaction type 0x{first:02x}"
            )))
        }
        // 0x80..=0xbf: an RLP string where a transaction list or type byte belongs.
        _ => {
            return Err(SignerError::malformed(
                "neither an RLP list nor an EIP-2718 type byte",
            ))
        }
    };
    let chain_id = match &inner {
        Inner::Legacy(tx) => tx.chain_id.unwrap_or(0),
        Inner::Eip2930(tx) => tx.chain_id,
        Inner::Eip1559(tx) => tx.chain_id,
    };
    if chain_id == 0 || chain_id > MAX_CHAIN_ID {
        return Err(SignerError::invalid(format!(
            "chain id {chain_id} is out of range (1..={MAX_CHAIN_ID})"
        )));
    }

    // Re-encode with alloy and insist on byte equality: what the policy sees and what
    // gets signed are then provably the bytes the caller sent, and no second encoding
    // of the same fields can exist.
    let mut canonical = Vec::with_capacity(bytes.len());
    match &inner {
        Inner::Legacy(tx) => tx.encode_for_signing(&mut canonical),
        Inner::Eip2930(tx) => tx.encode_for_signing(&mut canonical),
        Inner::Eip1559(tx) => tx.encode_for_signing(&mut canonical),
    }
    if canonical != bytes {
        return Err(SignerError::malformed(
            "transaction encoding is not canonical",
        ));
    }
    let sighash = keccak256(&canonical).0;
    Ok(EvmTx {
        inner,
        chain_id,
        sighash,
    })
}

/// Decodes `rlp([nonce, gasPrice, gas, to, value, data, chainId, 0, 0])` strictly.
fn decode_legacy(bytes: &[u8]) -> Result<TxLegacy, SignerError> {
    let mut buf = bytes;
    let header = Header::decode(&mut buf).map_err(rlp_error)?;
    if !header.list {
        return Err(SignerError::malformed(
            "legacy transaction is not an RLP list",
        ));
    }
    if header.payload_length > buf.len() {
        return Err(SignerError::malformed("truncated legacy transaction"));
    }
    if header.payload_length < buf.len() {
        return Err(SignerError::malformed(
            "trailing bytes after the legacy transaction",
        ));
    }
    let mut fields = buf;
    let mut tx = TxLegacy::rlp_decode_fields(&mut fields).map_err(rlp_error)?;
    if fields.is_empty() {
        return Err(SignerError::unsupported(
            "pre-EIP-155 legacy transaction has no chain id and would be valid on every \
             chain; encode it with chainId, 0, 0 (EIP-155)",
        ));
    }
    let chain_id = u64::decode(&mut fields).map_err(rlp_error)?;
    let zero_r = u64::decode(&mut fields).map_err(rlp_error)?;
    let zero_s = u64::decode(&mut fields).map_err(rlp_error)?;
    if zero_r != 0 || zero_s != 0 {
        return Err(SignerError::invalid(
            "EIP-155 signing fields after the chain id must be 0, 0",
        ));
    }
    if !fields.is_empty() {
        return Err(SignerError::malformed(
            "extra fields in the legacy transaction list",
        ));
    }
    tx.chain_id = Some(chain_id);
    Ok(tx)
}

/// Decodes the RLP list after an EIP-2718 type byte, refusing trailing bytes.
fn decode_typed<T: RlpEcdsaDecodableTx>(mut rest: &[u8]) -> Result<T, SignerError> {
    let tx = T::rlp_decode(&mut rest).map_err(rlp_error)?;
    if !rest.is_empty() {
        return Err(SignerError::malformed(
            "trailing bytes after the typed transaction",
        ));
    }
    Ok(tx)
}

fn rlp_error(e: alloy_rlp::Error) -> SignerError {
    SignerError::malformed(format!("RLP: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evm::sign::{sign_evm, EvmSignature};
    use crate::secret::evm_address;
    use crate::secret::Secp256k1Secret;
    use alloy_consensus::Signed;
    use alloy_primitives::Signature;
    use alloy_primitives::{address, Address, Bytes};
    use k256::ecdsa::{RecoveryId, Signature as KSig, VerifyingKey};

    const EIP155_KEY: [u8; 32] = [0x46; 32];

    /// EIP-155, "Example": signing data and signed transaction for nonce 9, gas price
    /// 20 gwei, gas 21000, to 0x3535…35, value 1 ether, chain id 1, key 0x4646…46.
    /// <https://eips.ethereum.org/EIPS/eip-155>
    const EIP155_SIGNING_DATA: &str =
        "ec098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080018080";
    const EIP155_SIGNING_HASH: &str =
        "daf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53";
    const EIP155_SIGNED: &str = "f86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83";

    fn key() -> Secp256k1Secret {
        Secp256k1Secret::from_bytes(&EIP155_KEY).unwrap()
    }

    fn key_address() -> [u8; 20] {
        evm_address(&key().public_key()).unwrap()
    }

    fn recover(sig: &EvmSignature, sighash: &[u8; 32]) -> [u8; 20] {
        let mut rs = [0u8; 64];
        rs[..32].copy_from_slice(&sig.r);
        rs[32..].copy_from_slice(&sig.s);
        let ksig = KSig::from_slice(&rs).unwrap();
        let recid = RecoveryId::new(sig.y_parity == 1, false);
        let vk = VerifyingKey::recover_from_prehash(sighash, &ksig, recid).unwrap();
        evm_address(vk.to_sec1_point(true).as_bytes()).unwrap()
    }

    fn eip1559() -> TxEip1559 {
        TxEip1559 {
            chain_id: 8453,
            nonce: 7,
            gas_limit: 60_000,
            max_fee_per_gas: 30_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
            to: TxKind::Call(address!("0x1111111111111111111111111111111111111111")),
            value: U256::from(12_345u64),
            input: Bytes::from_static(&[0xa9, 0x05, 0x9c, 0xbb, 1, 2, 3]),
            access_list: Default::default(),
        }
    }

    fn unsigned<T: SignableTransaction<Signature>>(tx: &T) -> Vec<u8> {
        let mut out = Vec::new();
        tx.encode_for_signing(&mut out);
        out
    }

    #[test]
    fn eip155_example_vector() {
        let bytes = hex::decode(EIP155_SIGNING_DATA).unwrap();
        let tx = decode_unsigned(&bytes).unwrap();
        assert_eq!(tx.tx_type(), EvmTxType::Legacy);
        assert_eq!(tx.chain_id(), 1);
        assert_eq!(tx.nonce(), 9);
        assert_eq!(tx.gas_limit(), 21_000);
        assert_eq!(tx.to(), Some([0x35; 20]));
        assert_eq!(tx.value(), U256::from(10u64).pow(U256::from(18u64)));
        assert!(tx.input().is_empty());
        assert_eq!(hex::encode(tx.sighash()), EIP155_SIGNING_HASH);

        let sig = sign_evm(&tx, &key()).unwrap();
        assert_eq!(hex::encode(&sig.signed_transaction), EIP155_SIGNED);
        assert_eq!(sig.v, 37);
        assert_eq!(sig.y_parity, 0);
        assert_eq!(
            sig.transaction_hash,
            keccak256(hex::decode(EIP155_SIGNED).unwrap()).0
        );
        assert_eq!(recover(&sig, &tx.sighash()), key_address());

        // alloy decodes our signed bytes back to the same transaction and hash.
        let mut signed = &sig.signed_transaction[..];
        let decoded = TxLegacy::rlp_decode_signed(&mut signed).unwrap();
        assert_eq!(decoded.tx().chain_id, Some(1));
        assert_eq!(decoded.hash().0, sig.transaction_hash);
    }

    #[test]
    fn rejects_pre_eip155_legacy() {
        // The EIP-155 example without the chainId, 0, 0 trailer.
        let tx = TxLegacy {
            chain_id: None,
            nonce: 9,
            gas_price: 20_000_000_000,
            gas_limit: 21_000,
            to: TxKind::Call(Address::repeat_byte(0x35)),
            value: U256::from(1u64),
            input: Bytes::new(),
        };
        let err = decode_unsigned(&unsigned(&tx)).unwrap_err();
        assert!(
            matches!(err, SignerError::UnsupportedPayload { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("EIP-155"));
    }

    #[test]
    fn rejects_legacy_with_nonzero_eip155_trailer() {
        // …018080 → …018001: s field 1 instead of 0 (list length unchanged).
        let mut bytes = hex::decode(EIP155_SIGNING_DATA).unwrap();
        let last = bytes.len() - 1;
        bytes[last] = 0x01;
        assert!(matches!(
            decode_unsigned(&bytes),
            Err(SignerError::InvalidPayload { .. })
        ));
    }

    #[test]
    fn eip1559_sign_and_recover() {
        let tx1559 = eip1559();
        let bytes = unsigned(&tx1559);
        assert_eq!(bytes[0], 0x02);
        let tx = decode_unsigned(&bytes).unwrap();
        assert_eq!(tx.tx_type(), EvmTxType::Eip1559);
        assert_eq!(tx.chain_id(), 8453);
        assert_eq!(tx.to(), Some([0x11; 20]));
        assert_eq!(tx.value(), U256::from(12_345u64));
        assert_eq!(tx.input(), &[0xa9, 0x05, 0x9c, 0xbb, 1, 2, 3]);
        assert_eq!(tx.sighash(), tx1559.signature_hash().0);

        let sig = sign_evm(&tx, &key()).unwrap();
        assert_eq!(sig.v, u64::from(sig.y_parity));
        assert_eq!(recover(&sig, &tx.sighash()), key_address());
        // low-s (EIP-2): s ≤ n/2
        let half_n =
            hex::decode("7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0")
                .unwrap();
        assert!(sig.s.as_slice() <= half_n.as_slice());

        let mut signed = &sig.signed_transaction[..];
        let decoded: Signed<TxEip1559> = TxEip1559::eip2718_decode(&mut signed).unwrap();
        assert!(signed.is_empty());
        assert_eq!(decoded.tx(), &tx1559);
        assert_eq!(decoded.hash().0, sig.transaction_hash);
        assert_eq!(decoded.signature().r(), U256::from_be_bytes(sig.r));
    }

    #[test]
    fn eip2930_and_contract_creation_decode() {
        let tx2930 = TxEip2930 {
            chain_id: 1,
            nonce: 0,
            gas_price: 1,
            gas_limit: 100_000,
            to: TxKind::Create,
            value: U256::ZERO,
            input: Bytes::from_static(&[0x60, 0x00]),
            access_list: Default::default(),
        };
        let tx = decode_unsigned(&unsigned(&tx2930)).unwrap();
        assert_eq!(tx.tx_type(), EvmTxType::Eip2930);
        assert_eq!(tx.to(), None);
        let sig = sign_evm(&tx, &key()).unwrap();
        assert_eq!(recover(&sig, &tx.sighash()), key_address());
        let mut signed = &sig.signed_transaction[..];
        let decoded: Signed<TxEip2930> = TxEip2930::eip2718_decode(&mut signed).unwrap();
        assert_eq!(decoded.tx(), &tx2930);
    }

    #[test]
    fn max_fee_is_gas_limit_times_fee_cap_per_type() {
        // EIP-155 example: gas price 20 gwei, gas 21000.
        let legacy = decode_unsigned(&hex::decode(EIP155_SIGNING_DATA).unwrap()).unwrap();
        assert_eq!(legacy.max_fee_per_gas(), 20_000_000_000);
        assert_eq!(legacy.max_fee_wei(), U256::from(21_000u64 * 20_000_000_000));

        let t = eip1559();
        let tx = decode_unsigned(&unsigned(&t)).unwrap();
        // maxFeePerGas, not the priority fee.
        assert_eq!(tx.max_fee_per_gas(), t.max_fee_per_gas);
        assert_eq!(tx.max_fee_wei(), U256::from(60_000u64 * 30_000_000_000));

        let t = TxEip2930 {
            chain_id: 1,
            nonce: 0,
            gas_price: 7,
            gas_limit: 100_000,
            to: TxKind::Create,
            value: U256::ZERO,
            input: Bytes::new(),
            access_list: Default::default(),
        };
        let tx = decode_unsigned(&unsigned(&t)).unwrap();
        assert_eq!(tx.max_fee_wei(), U256::from(700_000u64));
    }

    #[test]
    fn max_fee_of_extreme_fields_is_exact_not_wrapped() {
        let mut t = eip1559();
        t.gas_limit = u64::MAX;
        t.max_fee_per_gas = u128::MAX;
        let tx = decode_unsigned(&unsigned(&t)).unwrap();
        // (2^64 - 1)(2^128 - 1) = 2^192 - 2^128 - 2^64 + 1; a u128 product would wrap.
        let one = U256::from(1u8);
        let expected = (one << 192) - (one << 128) - (one << 64) + one;
        assert_eq!(tx.max_fee_wei(), expected);
        assert_ne!(
            tx.max_fee_wei(),
            U256::from(u128::from(t.gas_limit).wrapping_mul(t.max_fee_per_gas))
        );
    }

    #[test]
    fn rejects_chain_id_zero() {
        let mut tx = eip1559();
        tx.chain_id = 0;
        assert!(matches!(
            decode_unsigned(&unsigned(&tx)),
            Err(SignerError::InvalidPayload { .. })
        ));
    }

    #[test]
    fn rejects_garbage() {
        for bytes in [
            &[][..],
            &[0x80][..],
            &[0xb8, 0x01, 0x00][..],
            &[0x02, 0xff, 0xff][..],
            &[0x02][..],
            &[0xc0][..],
            b"hello world".as_slice(),
        ] {
            assert!(decode_unsigned(bytes).is_err(), "{bytes:02x?}");
        }
    }

    #[test]
    fn rejects_truncated() {
        let bytes = unsigned(&eip1559());
        for cut in 1..bytes.len() {
            assert!(decode_unsigned(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let legacy = hex::decode(EIP155_SIGNING_DATA).unwrap();
        for cut in 1..legacy.len() {
            assert!(decode_unsigned(&legacy[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn rejects_trailing_bytes() {
        let mut bytes = unsigned(&eip1559());
        bytes.push(0x00);
        assert!(matches!(
            decode_unsigned(&bytes),
            Err(SignerError::Malformed { .. })
        ));
        let mut legacy = hex::decode(EIP155_SIGNING_DATA).unwrap();
        legacy.push(0x80);
        assert!(matches!(
            decode_unsigned(&legacy),
            Err(SignerError::Malformed { .. })
        ));
    }

    #[test]
    fn rejects_non_canonical_integer() {
        // EIP-155 example with the nonce 9 written as a 1-byte string 0x8109
        // (non-canonical single byte); list length adjusted.
        let bytes = hex::decode(
            "ed81098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080018080",
        )
        .unwrap();
        assert!(matches!(
            decode_unsigned(&bytes),
            Err(SignerError::Malformed { .. })
        ));
    }

    #[test]
    fn rejects_blob_7702_and_unknown_types() {
        for ty in [0x03u8, 0x04, 0x00, 0x05, 0x7f] {
            let mut bytes = vec![ty];
            bytes.extend_from_slice(&unsigned(&eip1559())[1..]);
            let err = decode_unsigned(&bytes).unwrap_err();
            assert!(
                matches!(err, SignerError::UnsupportedPayload { .. }),
                "type {ty}: {err}"
            );
        }
    }

    #[test]
    fn rejects_oversize() {
        let mut tx = eip1559();
        tx.input = Bytes::from(vec![0u8; MAX_EVM_PAYLOAD]);
        let err = decode_unsigned(&unsigned(&tx)).unwrap_err();
        assert!(matches!(err, SignerError::Oversize { .. }), "{err}");
        // Just under the limit still decodes.
        tx.input = Bytes::from(vec![0u8; MAX_EVM_PAYLOAD - 100]);
        assert!(decode_unsigned(&unsigned(&tx)).is_ok());
    }

    #[test]
    fn rejects_signature_by_other_key() {
        let tx = decode_unsigned(&unsigned(&eip1559())).unwrap();
        let other = Secp256k1Secret::from_bytes(&[0x47; 32]).unwrap();
        let sig = sign_evm(&tx, &other).unwrap();
        assert_ne!(recover(&sig, &tx.sighash()), key_address());
    }
}
