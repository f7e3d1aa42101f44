//! Solana payloads: decoding transactions and messages (legacy and v0), reading the
//! instructions of the programs the policy understands (System: [`system`], Compute
//! Budget and fees: [`compute_budget`]), and ed25519 signing.
//!
//! Wire formats are `solana-message`'s (`VersionedMessage` through `wincode`) and
//! `solana-short-vec`'s compact-u16; nothing here re-implements them.
//!
//! # Transaction or bare message: the rule
//!
//! A payload is read as a **serialized transaction** when all of these hold: it starts
//! with a compact-u16 signature count `n ≥ 1`, `n` 64-byte signature slots follow, the
//! rest decodes *exactly* (no trailing bytes) as a message, and that message's header
//! has `num_required_signatures == n`. Otherwise the whole payload must decode exactly
//! as a **bare message**, or it is refused. Both readings cannot mislead the policy: in
//! either case the policy is evaluated on the very message whose bytes get signed.
//!
//! Messages must also pass `solana-message`'s sanitization, re-serialize to the same
//! bytes, and have no duplicate static account keys (the runtime refuses those too).
//! Version 1 messages are refused until a policy can reason about them.

use ed25519_dalek::hazmat::{raw_sign, ExpandedSecretKey};
use ed25519_dalek::VerifyingKey;
use solana_message::VersionedMessage;
use solana_short_vec::ShortU16;

use crate::secret::Ed25519Secret;
use crate::SignerError;

pub mod compute_budget;
pub mod offchain;
pub mod spl_token;
pub mod system;

pub use compute_budget::{
    ComputeBudgetInstruction, ComputeBudgetRequest, COMPUTE_BUDGET_PROGRAM_ID,
};
pub use offchain::{OffchainFormat, OffchainMessage, MAX_OFFCHAIN_MESSAGE};
pub use spl_token::{SplTokenInstruction, TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID};
pub use system::{SystemInstruction, SystemInstructionName};

/// Largest Solana payload accepted, in bytes: 1232, the maximum transaction size
/// (IPv6 MTU 1280 − 48 bytes of headers). Checked before decoding.
pub const MAX_SOLANA_PAYLOAD: usize = 1232;

/// Length of an ed25519 signature slot in a transaction.
const SIGNATURE_LEN: usize = 64;

/// The System Program id, `11111111111111111111111111111111` (the all-zero key).
pub const SYSTEM_PROGRAM_ID: [u8; 32] = [0u8; 32];

/// One compiled instruction of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SolanaInstruction {
    /// The program invoked (always a static account key).
    pub program_id: [u8; 32],
    /// Indices into the message's account list (static keys first, then v0
    /// address-table keys, which are not known here).
    pub accounts: Vec<u8>,
    /// The instruction data, opaque except for the System Program.
    pub data: Vec<u8>,
}

/// Which System Program instruction moves lamports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SystemTransferKind {
    /// `CreateAccount` (index 0): funds a new account.
    CreateAccount,
    /// `Transfer` (index 2).
    Transfer,
    /// `CreateAccountWithSeed` (index 3): funds a new derived account.
    CreateAccountWithSeed,
    /// `WithdrawNonceAccount` (index 5): lamports out of a nonce account.
    WithdrawNonceAccount,
    /// `TransferWithSeed` (index 11).
    TransferWithSeed,
}

/// A movement of lamports by a System Program instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemTransfer {
    /// Which instruction.
    pub kind: SystemTransferKind,
    /// The paying account, `None` if it is loaded from a v0 address table.
    pub from: Option<[u8; 32]>,
    /// The receiving account, `None` if it is loaded from a v0 address table.
    pub to: Option<[u8; 32]>,
    /// Amount in lamports.
    pub lamports: u64,
}

/// A decoded Solana transaction or bare message (legacy or v0).
#[derive(Debug, Clone)]
pub struct SolanaPayload {
    /// The whole payload as received.
    bytes: Vec<u8>,
    /// Offset of the message within `bytes` (0 for a bare message).
    message_offset: usize,
    /// Offset of the first signature slot (only meaningful for a transaction).
    signatures_offset: usize,
    is_transaction: bool,
    is_v0: bool,
    has_address_table_lookups: bool,
    num_required_signatures: usize,
    account_keys: Vec<[u8; 32]>,
    instructions: Vec<SolanaInstruction>,
}

impl SolanaPayload {
    /// The serialized message: the bytes an ed25519 signature covers.
    pub fn message_bytes(&self) -> &[u8] {
        self.bytes.get(self.message_offset..).unwrap_or_default()
    }

    /// The static account keys, in message order (signers first).
    pub fn account_keys(&self) -> &[[u8; 32]] {
        &self.account_keys
    }

    /// The keys that must sign: the first `num_required_signatures` static keys; the
    /// first of them is the fee payer.
    pub fn required_signers(&self) -> &[[u8; 32]] {
        self.account_keys
            .get(..self.num_required_signatures)
            .unwrap_or_default()
    }

    /// The instructions, with program ids resolved.
    pub fn instructions(&self) -> &[SolanaInstruction] {
        &self.instructions
    }

    /// Whether the payload was a serialized transaction (`true`) or a bare message.
    pub fn is_transaction(&self) -> bool {
        self.is_transaction
    }

    /// Whether the message is a v0 message (`false`: legacy).
    pub fn is_v0(&self) -> bool {
        self.is_v0
    }

    /// Whether a v0 message loads accounts from address lookup tables (whose keys are
    /// not visible here).
    pub fn has_address_table_lookups(&self) -> bool {
        self.has_address_table_lookups
    }

    /// The static account at `index`, `None` for an address-table account.
    fn account(&self, index: Option<&u8>) -> Option<[u8; 32]> {
        index.and_then(|i| self.account_keys.get(usize::from(*i)).copied())
    }

    /// Every System Program instruction of the message, decoded
    /// ([`SystemInstruction::decode`]), with the compiled instruction it came from, in
    /// message order.
    ///
    /// # Errors
    /// [`SignerError::UnsupportedPayload`] for a System instruction that does not
    /// decode exactly (unknown variant, short data, trailing bytes).
    pub fn system_instructions(
        &self,
    ) -> Result<Vec<(&SolanaInstruction, SystemInstruction)>, SignerError> {
        self.instructions
            .iter()
            .filter(|ix| ix.program_id == SYSTEM_PROGRAM_ID)
            .map(|ix| SystemInstruction::decode(&ix.data).map(|d| (ix, d)))
            .collect()
    }

    /// Every System Program instruction that moves lamports: `CreateAccount` (0),
    /// `Transfer` (2), `CreateAccountWithSeed` (3), `WithdrawNonceAccount` (5),
    /// `TransferWithSeed` (11), with their paying and receiving accounts. Which System
    /// instructions may be signed at all is the policy's decision
    /// (`solana.system_instructions`); this only reads amounts.
    ///
    /// # Errors
    /// As [`Self::system_instructions`].
    pub fn system_transfers(&self) -> Result<Vec<SystemTransfer>, SignerError> {
        let mut out = Vec::new();
        for (ix, decoded) in self.system_instructions()? {
            let Some((lamports, from_pos, to_pos)) = decoded.lamport_movement() else {
                continue;
            };
            let kind = match decoded.name() {
                SystemInstructionName::CreateAccount => SystemTransferKind::CreateAccount,
                SystemInstructionName::CreateAccountWithSeed => {
                    SystemTransferKind::CreateAccountWithSeed
                }
                SystemInstructionName::WithdrawNonceAccount => {
                    SystemTransferKind::WithdrawNonceAccount
                }
                SystemInstructionName::TransferWithSeed => SystemTransferKind::TransferWithSeed,
                _ => SystemTransferKind::Transfer,
            };
            out.push(SystemTransfer {
                kind,
                from: self.account(ix.accounts.get(from_pos)),
                to: self.account(ix.accounts.get(to_pos)),
                lamports,
            });
        }
        Ok(out)
    }

    /// The static account that instruction `ix` names at `position` of its account
    /// list, `None` if absent or loaded from an address table.
    pub fn instruction_account(&self, ix: &SolanaInstruction, position: usize) -> Option<[u8; 32]> {
        self.account(ix.accounts.get(position))
    }

    /// What the message's Compute Budget instructions request.
    ///
    /// # Errors
    /// As [`ComputeBudgetRequest::from_instructions`]: an instruction that does not
    /// decode exactly, or a duplicate kind.
    pub fn compute_budget(&self) -> Result<ComputeBudgetRequest, SignerError> {
        ComputeBudgetRequest::from_instructions(
            self.instructions
                .iter()
                .filter(|ix| ix.program_id == COMPUTE_BUDGET_PROGRAM_ID)
                .map(|ix| ix.data.as_slice()),
        )
    }

    /// The number of signatures the fee is charged on: `num_required_signatures` plus
    /// the count each signature-verify precompile instruction declares in its first
    /// data byte (see [`compute_budget`] module docs).
    pub fn fee_signature_count(&self) -> u64 {
        let precompile: u64 = self
            .instructions
            .iter()
            .filter(|ix| compute_budget::is_signature_precompile(&ix.program_id))
            .map(|ix| u64::from(ix.data.first().copied().unwrap_or(0)))
            .sum();
        // usize → u64 never truncates on supported targets; the count is ≤ 255 anyway.
        u64::try_from(self.num_required_signatures)
            .unwrap_or(u64::MAX)
            .saturating_add(precompile)
    }

    /// The most this message can pay in fees, in lamports: signature fees plus the
    /// prioritization fee `ceil(unit_limit × unit_price / 10⁶)`, with the default unit
    /// limit when the message sets none ([`compute_budget::max_fee_lamports`]).
    ///
    /// # Errors
    /// As [`Self::compute_budget`].
    pub fn max_fee_lamports(&self) -> Result<u128, SignerError> {
        let request = self.compute_budget()?;
        let cb = self
            .instructions
            .iter()
            .filter(|ix| ix.program_id == COMPUTE_BUDGET_PROGRAM_ID)
            .count();
        let others = self.instructions.len().saturating_sub(cb);
        Ok(compute_budget::max_fee_lamports(
            self.fee_signature_count(),
            request.effective_unit_limit(others, cb),
            request.unit_price.unwrap_or(0),
        ))
    }
}

/// Decodes a serialized transaction or a bare message (see the module docs for the
/// rule that tells them apart).
///
/// # Errors
/// - [`SignerError::Oversize`] above [`MAX_SOLANA_PAYLOAD`] (checked first);
/// - [`SignerError::Malformed`] if neither form decodes exactly, or the message does
///   not re-serialize to the same bytes;
/// - [`SignerError::UnsupportedPayload`] for v1 messages;
/// - [`SignerError::InvalidPayload`] if the message fails sanitization or repeats a
///   static account key.
pub fn decode(bytes: &[u8]) -> Result<SolanaPayload, SignerError> {
    if bytes.len() > MAX_SOLANA_PAYLOAD {
        return Err(SignerError::Oversize {
            what: "Solana payload",
            len: bytes.len(),
            limit: MAX_SOLANA_PAYLOAD,
        });
    }
    if bytes.is_empty() {
        return Err(SignerError::malformed("empty Solana payload"));
    }
    let (message, message_offset, signatures_offset, is_transaction) = match as_transaction(bytes) {
        Some((message, sig_offset, msg_offset)) => (message, msg_offset, sig_offset, true),
        None => {
            let message = wincode::deserialize_exact::<VersionedMessage>(bytes).map_err(|e| {
                SignerError::malformed(format!("neither a Solana transaction nor a message: {e}"))
            })?;
            (message, 0, 0, false)
        }
    };
    let message_bytes = bytes.get(message_offset..).unwrap_or_default();

    let is_v0 = match &message {
        VersionedMessage::Legacy(_) => false,
        VersionedMessage::V0(_) => true,
        VersionedMessage::V1(_) => {
            return Err(SignerError::unsupported(
                "Solana v1 messages are not signed yet",
            ))
        }
    };
    message
        .sanitize()
        .map_err(|e| SignerError::invalid(format!("Solana message fails sanitization: {e}")))?;
    let reencoded = wincode::serialize(&message)
        .map_err(|e| SignerError::malformed(format!("Solana message re-encoding: {e}")))?;
    if reencoded != message_bytes {
        return Err(SignerError::malformed(
            "Solana message encoding is not canonical",
        ));
    }

    let account_keys: Vec<[u8; 32]> = message
        .static_account_keys()
        .iter()
        .map(|k| k.to_bytes())
        .collect();
    let mut sorted = account_keys.clone();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(SignerError::invalid(
            "Solana message repeats a static account key",
        ));
    }

    let mut instructions = Vec::with_capacity(message.instructions().len());
    for ix in message.instructions() {
        let program_id = account_keys
            .get(usize::from(ix.program_id_index))
            .copied()
            .ok_or_else(|| {
                SignerError::invalid("instruction program id is not a static account key")
            })?;
        instructions.push(SolanaInstruction {
            program_id,
            accounts: ix.accounts.clone(),
            data: ix.data.clone(),
        });
    }

    Ok(SolanaPayload {
        bytes: bytes.to_vec(),
        message_offset,
        signatures_offset,
        is_transaction,
        is_v0,
        has_address_table_lookups: message
            .address_table_lookups()
            .is_some_and(|l| !l.is_empty()),
        num_required_signatures: usize::from(message.header().num_required_signatures),
        account_keys,
        instructions,
    })
}

/// Tries the transaction reading: `(message, signatures offset, message offset)`.
fn as_transaction(bytes: &[u8]) -> Option<(VersionedMessage, usize, usize)> {
    let (count, prefix_len) = solana_short_vec::decode_shortu16_len(bytes).ok()?;
    if count == 0 {
        return None;
    }
    let message_offset = count.checked_mul(SIGNATURE_LEN)?.checked_add(prefix_len)?;
    let message_bytes = bytes.get(message_offset..)?;
    let message = wincode::deserialize_exact::<VersionedMessage>(message_bytes).ok()?;
    (usize::from(message.header().num_required_signatures) == count).then_some((
        message,
        prefix_len,
        message_offset,
    ))
}

/// An ed25519 signature over a Solana message, and the transaction carrying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SolanaSignature {
    /// The ed25519 signature (RFC 8032 `R || S`) over [`SolanaPayload::message_bytes`].
    pub signature: [u8; 64],
    /// The serialized transaction with the signature in the key's slot. From a
    /// transaction payload, the other slots are kept as received (partial signing);
    /// from a bare message, a transaction with `num_required_signatures` slots, the
    /// others zero.
    pub signed_transaction: Vec<u8>,
}

/// Signs a Solana payload with ed25519 (RFC 8032, PureEdDSA) over the message bytes.
///
/// `public_key` must be the key's public key **as stored in the authenticated sealed
/// record**: it is used as-is instead of being recomputed (DESIGN §9), and signing one
/// message under two different public keys with the same secret would leak the
/// secret. It must also be one of the message's required signers.
///
/// # Errors
/// [`SignerError::NotASigner`] if `public_key` is not a required signer;
/// [`SignerError::InvalidKey`] if it is not a valid ed25519 point.
pub fn sign_solana(
    p: &SolanaPayload,
    key: &Ed25519Secret,
    public_key: &[u8; 32],
) -> Result<SolanaSignature, SignerError> {
    let slot = p
        .required_signers()
        .iter()
        .position(|k| k == public_key)
        .ok_or(SignerError::NotASigner)?;
    let verifying_key =
        VerifyingKey::from_bytes(public_key).map_err(|_| SignerError::InvalidKey {
            message: "ed25519 public key is not a valid point",
        })?;
    let expanded = ExpandedSecretKey::from(key.seed());
    let signature =
        raw_sign::<sha2::Sha512>(&expanded, p.message_bytes(), &verifying_key).to_bytes();

    let (mut signed_transaction, signatures_offset) = if p.is_transaction {
        (p.bytes.clone(), p.signatures_offset)
    } else {
        // A bare message: build `short_vec(n) || n zeroed slots || message`.
        let count = u16::try_from(p.num_required_signatures)
            .map_err(|_| SignerError::invalid("too many required signatures"))?;
        let mut out = wincode::serialize(&ShortU16(count))
            .map_err(|e| SignerError::malformed(format!("short_vec encoding: {e}")))?;
        let prefix_len = out.len();
        out.resize(prefix_len + p.num_required_signatures * SIGNATURE_LEN, 0);
        out.extend_from_slice(p.message_bytes());
        (out, prefix_len)
    };
    let start = signatures_offset + slot * SIGNATURE_LEN;
    signed_transaction
        .get_mut(start..start + SIGNATURE_LEN)
        .ok_or_else(|| SignerError::invalid("signature slot out of range"))?
        .copy_from_slice(&signature);
    Ok(SolanaSignature {
        signature,
        signed_transaction,
    })
}

/// Signs a Solana off-chain message: ed25519 over its whole serialization
/// ([`OffchainMessage::bytes`]). `public_key` is the stored public key, as for
/// [`sign_solana`], and must be one of the message's signers.
///
/// # Errors
/// [`SignerError::NotASigner`] if it is not; [`SignerError::InvalidKey`] if it is not
/// a valid ed25519 point.
pub fn sign_solana_offchain(
    message: &OffchainMessage,
    key: &Ed25519Secret,
    public_key: &[u8; 32],
) -> Result<[u8; 64], SignerError> {
    if !message.signers().contains(public_key) {
        return Err(SignerError::NotASigner);
    }
    let verifying_key =
        VerifyingKey::from_bytes(public_key).map_err(|_| SignerError::InvalidKey {
            message: "ed25519 public key is not a valid point",
        })?;
    let expanded = ExpandedSecretKey::from(key.seed());
    Ok(raw_sign::<sha2::Sha512>(&expanded, message.bytes(), &verifying_key).to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signature;
    use solana_message::compiled_instruction::CompiledInstruction;
    use solana_message::{v0, AccountMeta, Address, Hash, Instruction, Message};

    fn secret(n: u8) -> (Ed25519Secret, [u8; 32]) {
        let key = Ed25519Secret::from_bytes(&[n; 32]).unwrap();
        let public: [u8; 32] = key.public_key().try_into().unwrap();
        (key, public)
    }

    fn transfer_ix(from: [u8; 32], to: [u8; 32], lamports: u64) -> Instruction {
        let mut data = 2u32.to_le_bytes().to_vec();
        data.extend_from_slice(&lamports.to_le_bytes());
        Instruction::new_with_bytes(
            Address::from(SYSTEM_PROGRAM_ID),
            &data,
            vec![
                AccountMeta::new(Address::from(from), true),
                AccountMeta::new(Address::from(to), false),
            ],
        )
    }

    fn legacy_message(payer: [u8; 32], ixs: &[Instruction]) -> Vec<u8> {
        let msg = Message::new_with_blockhash(
            ixs,
            Some(&Address::from(payer)),
            &Hash::new_from_array([9; 32]),
        );
        wincode::serialize(&VersionedMessage::Legacy(msg)).unwrap()
    }

    fn v0_message(payer: [u8; 32], ixs: &[Instruction]) -> Vec<u8> {
        let msg = v0::Message::try_compile(
            &Address::from(payer),
            ixs,
            &[],
            Hash::new_from_array([8; 32]),
        )
        .unwrap();
        wincode::serialize(&VersionedMessage::V0(msg)).unwrap()
    }

    fn as_tx(n: usize, message: &[u8]) -> Vec<u8> {
        let mut out = wincode::serialize(&ShortU16(n as u16)).unwrap();
        out.resize(out.len() + 64 * n, 0xee);
        out.extend_from_slice(message);
        out
    }

    fn verify(public: &[u8; 32], msg: &[u8], sig: &[u8; 64]) {
        VerifyingKey::from_bytes(public)
            .unwrap()
            .verify_strict(msg, &Signature::from_bytes(sig))
            .unwrap();
    }

    #[test]
    fn legacy_bare_message_sign_and_verify() {
        let (key, public) = secret(1);
        let message = legacy_message(public, &[transfer_ix(public, [5; 32], 1_000)]);
        let p = decode(&message).unwrap();
        assert!(!p.is_transaction());
        assert!(!p.is_v0());
        assert_eq!(p.message_bytes(), &message[..]);
        assert_eq!(p.required_signers(), &[public]);
        assert_eq!(p.instructions().len(), 1);
        assert_eq!(p.instructions()[0].program_id, SYSTEM_PROGRAM_ID);
        assert_eq!(
            p.system_transfers().unwrap(),
            vec![SystemTransfer {
                kind: SystemTransferKind::Transfer,
                from: Some(public),
                to: Some([5; 32]),
                lamports: 1_000
            }]
        );

        let sig = sign_solana(&p, &key, &public).unwrap();
        verify(&public, &message, &sig.signature);
        // the signed transaction is 1 slot + message, and decodes as a transaction
        assert_eq!(sig.signed_transaction, {
            let mut t = vec![1u8];
            t.extend_from_slice(&sig.signature);
            t.extend_from_slice(&message);
            t
        });
        let back = decode(&sig.signed_transaction).unwrap();
        assert!(back.is_transaction());
        assert_eq!(back.message_bytes(), &message[..]);
    }

    #[test]
    fn ed25519_matches_rfc8032_test2() {
        // RFC 8032 §7.1 TEST 2 run through our signing path: the signature over the
        // one-byte message 0x72 must be the published one. We use a payload whose
        // message bytes are that message by constructing it directly.
        let sk = hex::decode("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
            .unwrap();
        let key = Ed25519Secret::from_bytes(&sk).unwrap();
        let public: [u8; 32] = key.public_key().try_into().unwrap();
        let p = SolanaPayload {
            bytes: vec![0x72],
            message_offset: 0,
            signatures_offset: 0,
            is_transaction: false,
            is_v0: false,
            has_address_table_lookups: false,
            num_required_signatures: 1,
            account_keys: vec![public],
            instructions: vec![],
        };
        let sig = sign_solana(&p, &key, &public).unwrap();
        assert_eq!(
            hex::encode(sig.signature),
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
             085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
        );
    }

    #[test]
    fn v0_transaction_with_two_signers() {
        let (payer_key, payer) = secret(1);
        let (other_key, other) = secret(2);
        let message = v0_message(
            payer,
            &[
                transfer_ix(payer, [5; 32], 7),
                transfer_ix(other, [6; 32], 8),
            ],
        );
        let tx = as_tx(2, &message);
        let p = decode(&tx).unwrap();
        assert!(p.is_transaction());
        assert!(p.is_v0());
        assert!(!p.has_address_table_lookups());
        assert_eq!(p.required_signers().len(), 2);
        assert_eq!(p.required_signers()[0], payer);
        assert_eq!(p.message_bytes(), &message[..]);
        let transfers = p.system_transfers().unwrap();
        assert_eq!(
            transfers.iter().map(|t| t.lamports).collect::<Vec<_>>(),
            [7, 8]
        );

        // sign with the second signer: only its slot changes
        let sig = sign_solana(&p, &other_key, &other).unwrap();
        verify(&other, &message, &sig.signature);
        let slot = p
            .required_signers()
            .iter()
            .position(|k| k == &other)
            .unwrap();
        assert_eq!(
            &sig.signed_transaction[1 + 64 * slot..1 + 64 * (slot + 1)],
            &sig.signature[..]
        );
        let other_slot = 1 - slot;
        assert_eq!(
            &sig.signed_transaction[1 + 64 * other_slot..1 + 64 * (other_slot + 1)],
            &[0xee; 64][..]
        );
        assert_eq!(&sig.signed_transaction[1 + 128..], &message[..]);

        let sig = sign_solana(&p, &payer_key, &payer).unwrap();
        verify(&payer, &message, &sig.signature);
    }

    #[test]
    fn system_transfers_decodes_create_account_and_transfer_with_seed() {
        let (_, payer) = secret(1);
        let mut create = 0u32.to_le_bytes().to_vec();
        create.extend_from_slice(&500u64.to_le_bytes()); // lamports
        create.extend_from_slice(&165u64.to_le_bytes()); // space
        create.extend_from_slice(&[3; 32]); // owner
        let mut with_seed = 11u32.to_le_bytes().to_vec();
        with_seed.extend_from_slice(&42u64.to_le_bytes());
        with_seed.extend_from_slice(&3u64.to_le_bytes());
        with_seed.extend_from_slice(b"abc");
        with_seed.extend_from_slice(&[4; 32]);
        let system = Address::from(SYSTEM_PROGRAM_ID);
        let ixs = [
            Instruction::new_with_bytes(
                system,
                &create,
                vec![
                    AccountMeta::new(Address::from(payer), true),
                    AccountMeta::new(Address::from([7; 32]), true),
                ],
            ),
            Instruction::new_with_bytes(
                system,
                &with_seed,
                vec![
                    AccountMeta::new(Address::from([8; 32]), false),
                    AccountMeta::new_readonly(Address::from(payer), true),
                    AccountMeta::new(Address::from([9; 32]), false),
                ],
            ),
            // Allocate (8): no lamports
            Instruction::new_with_bytes(
                system,
                &[8, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0],
                vec![AccountMeta::new(Address::from([7; 32]), true)],
            ),
        ];
        let p = decode(&legacy_message(payer, &ixs)).unwrap();
        let t = p.system_transfers().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].kind, t[0].from, t[0].to, t[0].lamports),
            (
                SystemTransferKind::CreateAccount,
                Some(payer),
                Some([7; 32]),
                500
            )
        );
        assert_eq!(
            (t[1].kind, t[1].from, t[1].to, t[1].lamports),
            (
                SystemTransferKind::TransferWithSeed,
                Some([8; 32]),
                Some([9; 32]),
                42
            )
        );
    }

    #[test]
    fn rejects_unknown_or_short_system_instruction() {
        let (_, payer) = secret(1);
        let system = Address::from(SYSTEM_PROGRAM_ID);
        for data in [vec![99u8, 0, 0, 0], vec![2u8, 0, 0, 0, 1], vec![2u8]] {
            let ix = Instruction::new_with_bytes(
                system,
                &data,
                vec![AccountMeta::new(Address::from(payer), true)],
            );
            let p = decode(&legacy_message(payer, &[ix])).unwrap();
            assert!(matches!(
                p.system_transfers(),
                Err(SignerError::UnsupportedPayload { .. })
            ));
        }
    }

    #[test]
    fn owner_and_nonce_authority_changes_are_decoded_by_name_not_as_transfers() {
        // Assign / AllocateWithSeed / AssignWithSeed make another program the owner of
        // an account; AuthorizeNonceAccount hands over a nonce account's withdrawals.
        // None moves lamports, so none is a transfer: whether they may be signed is the
        // policy's allow-list (`solana.system_instructions`), which reads their names.
        let (_, payer) = secret(1);
        let system = Address::from(SYSTEM_PROGRAM_ID);
        let mut assign = 1u32.to_le_bytes().to_vec();
        assign.extend_from_slice(&[0xaa; 32]); // new owner: an attacker's program
        let mut authorize = 7u32.to_le_bytes().to_vec();
        authorize.extend_from_slice(&[0xbb; 32]); // new nonce authority
        let mut assign_with_seed = 10u32.to_le_bytes().to_vec();
        assign_with_seed.extend_from_slice(&payer);
        assign_with_seed.extend_from_slice(&1u64.to_le_bytes());
        assign_with_seed.extend_from_slice(b"s");
        assign_with_seed.extend_from_slice(&[0xaa; 32]);
        let mut allocate_with_seed = 9u32.to_le_bytes().to_vec();
        allocate_with_seed.extend_from_slice(&payer);
        allocate_with_seed.extend_from_slice(&1u64.to_le_bytes());
        allocate_with_seed.extend_from_slice(b"s");
        allocate_with_seed.extend_from_slice(&0u64.to_le_bytes());
        allocate_with_seed.extend_from_slice(&[0xaa; 32]);
        for (data, name) in [
            (assign, SystemInstructionName::Assign),
            (authorize, SystemInstructionName::AuthorizeNonceAccount),
            (assign_with_seed, SystemInstructionName::AssignWithSeed),
            (allocate_with_seed, SystemInstructionName::AllocateWithSeed),
        ] {
            let ix = Instruction::new_with_bytes(
                system,
                &data,
                vec![AccountMeta::new(Address::from(payer), true)],
            );
            let p = decode(&legacy_message(payer, &[ix])).unwrap();
            let decoded = p.system_instructions().unwrap();
            assert_eq!(decoded.len(), 1);
            assert_eq!(decoded[0].1.name(), name);
            assert_eq!(p.system_transfers().unwrap(), vec![]);
        }
    }

    fn cb_ix(data: &[u8]) -> Instruction {
        Instruction::new_with_bytes(Address::from(COMPUTE_BUDGET_PROGRAM_ID), data, vec![])
    }

    fn limit_ix(units: u32) -> Instruction {
        let mut d = vec![2u8];
        d.extend_from_slice(&units.to_le_bytes());
        cb_ix(&d)
    }

    fn price_ix(micro_lamports: u64) -> Instruction {
        let mut d = vec![3u8];
        d.extend_from_slice(&micro_lamports.to_le_bytes());
        cb_ix(&d)
    }

    #[test]
    fn max_fee_uses_the_set_limit_and_price() {
        let (_, payer) = secret(1);
        let ixs = [
            limit_ix(300_000),
            price_ix(10_000),
            transfer_ix(payer, [5; 32], 1),
        ];
        let p = decode(&legacy_message(payer, &ixs)).unwrap();
        assert_eq!(p.compute_budget().unwrap().unit_limit, Some(300_000));
        // 1 signature + 300_000 × 10_000 / 10⁶ = 3_000 lamports
        assert_eq!(p.max_fee_lamports().unwrap(), 5_000 + 3_000);
    }

    #[test]
    fn max_fee_uses_the_default_limit_per_non_compute_budget_instruction() {
        let (_, payer) = secret(1);
        // price only: 2 non-Compute-Budget instructions → 400_000 units by default,
        // plus 3_000 for the Compute Budget instruction (a builtin)
        let ixs = [
            price_ix(1_000_000),
            transfer_ix(payer, [5; 32], 1),
            transfer_ix(payer, [6; 32], 1),
        ];
        let p = decode(&legacy_message(payer, &ixs)).unwrap();
        assert_eq!(p.max_fee_lamports().unwrap(), 5_000 + 403_000);
        // price alone: 3_000 units
        let p = decode(&legacy_message(payer, &[price_ix(1_000_000)])).unwrap();
        assert_eq!(p.max_fee_lamports().unwrap(), 5_000 + 3_000);
        // 9 instructions would be 1.8M units: capped at 1.4M
        let mut ixs = vec![price_ix(1_000_000)];
        for i in 0..9u8 {
            ixs.push(transfer_ix(payer, [10 + i; 32], 1));
        }
        let p = decode(&legacy_message(payer, &ixs)).unwrap();
        assert_eq!(p.max_fee_lamports().unwrap(), 5_000 + 1_400_000);
        // no Compute Budget instruction at all: signature fees only
        let p = decode(&legacy_message(payer, &[transfer_ix(payer, [5; 32], 1)])).unwrap();
        assert_eq!(p.max_fee_lamports().unwrap(), 5_000);
    }

    #[test]
    fn max_fee_counts_compute_budget_instructions_next_to_a_non_builtin() {
        // On LiteSVM: [price 10⁶, heap frame, an SPL Token instruction] pays 211_000
        // lamports: 5000 + (200_000 + 2 × 3_000) units × 1 lamport. Leaving the Compute
        // Budget instructions out bounded it at 205_000.
        let (_, payer) = secret(1);
        let token = Instruction::new_with_bytes(Address::from([0x77; 32]), &[], vec![]);
        let ixs = [price_ix(1_000_000), cb_ix(&[1, 0, 0, 1, 0]), token];
        let p = decode(&legacy_message(payer, &ixs)).unwrap();
        assert_eq!(p.max_fee_lamports().unwrap(), 211_000);
    }

    #[test]
    fn max_fee_counts_precompile_signatures() {
        let (_, payer) = secret(1);
        let precompiles = [
            compute_budget::ED25519_PRECOMPILE_ID,
            compute_budget::SECP256K1_PRECOMPILE_ID,
            compute_budget::SECP256R1_PRECOMPILE_ID,
        ];
        let ixs: Vec<Instruction> = precompiles
            .iter()
            .enumerate()
            .map(|(i, id)| {
                Instruction::new_with_bytes(Address::from(*id), &[i as u8 + 2, 0], vec![])
            })
            .chain([limit_ix(0), transfer_ix(payer, [5; 32], 1)])
            .collect();
        let p = decode(&legacy_message(payer, &ixs)).unwrap();
        // 1 required + 2 + 3 + 4 declared by the precompiles
        assert_eq!(p.fee_signature_count(), 10);
        assert_eq!(p.max_fee_lamports().unwrap(), 50_000);
    }

    #[test]
    fn rejects_duplicate_or_unknown_compute_budget_instructions() {
        let (_, payer) = secret(1);
        for ixs in [
            vec![limit_ix(1), limit_ix(2)],
            vec![price_ix(1), price_ix(1)],
            vec![cb_ix(&[0, 1, 0, 0, 0, 1, 0, 0, 0])],
            vec![cb_ix(&[9])],
            vec![cb_ix(&[2, 1, 0, 0])],
        ] {
            let p = decode(&legacy_message(payer, &ixs)).unwrap();
            assert!(matches!(
                p.max_fee_lamports(),
                Err(SignerError::UnsupportedPayload { .. })
            ));
        }
    }

    #[test]
    fn offchain_signature_verifies_and_names_the_signer() {
        let (key, public) = secret(3);
        let bytes = OffchainMessage::encode(&[0; 32], &[public], b"log in").unwrap();
        let m = OffchainMessage::decode(&bytes).unwrap();
        let sig = sign_solana_offchain(&m, &key, &public).unwrap();
        verify(&public, &bytes, &sig);
        let (other_key, other) = secret(4);
        assert_eq!(
            sign_solana_offchain(&m, &other_key, &other).unwrap_err(),
            SignerError::NotASigner
        );
        // a transaction message is never an off-chain message
        let tx = legacy_message(public, &[transfer_ix(public, [5; 32], 1)]);
        assert!(OffchainMessage::decode(&tx).is_err());
        assert!(decode(&bytes).is_err());
    }

    #[test]
    fn rejects_key_not_a_signer() {
        let (_, payer) = secret(1);
        let (other_key, other) = secret(2);
        // `other` appears in the message, but only as a non-signer (receiver).
        let message = legacy_message(payer, &[transfer_ix(payer, other, 1)]);
        let p = decode(&message).unwrap();
        assert_eq!(
            sign_solana(&p, &other_key, &other).unwrap_err(),
            SignerError::NotASigner
        );
    }

    #[test]
    fn rejects_garbage() {
        for bytes in [&[][..], &[0xff; 10][..], &[1u8; 100][..], &[0x80, 0x00][..]] {
            assert!(decode(bytes).is_err(), "{bytes:02x?}");
        }
    }

    #[test]
    fn rejects_truncated() {
        let (_, payer) = secret(1);
        let message = legacy_message(payer, &[transfer_ix(payer, [5; 32], 1)]);
        let tx = as_tx(1, &message);
        for cut in 1..message.len() {
            assert!(decode(&message[..cut]).is_err(), "message cut at {cut}");
        }
        for cut in 1..tx.len() {
            assert!(decode(&tx[..cut]).is_err(), "transaction cut at {cut}");
        }
    }

    #[test]
    fn rejects_trailing_bytes() {
        let (_, payer) = secret(1);
        let message = v0_message(payer, &[transfer_ix(payer, [5; 32], 1)]);
        let mut bare = message.clone();
        bare.push(0);
        assert!(matches!(decode(&bare), Err(SignerError::Malformed { .. })));
        let mut tx = as_tx(1, &message);
        tx.push(0);
        assert!(matches!(decode(&tx), Err(SignerError::Malformed { .. })));
    }

    #[test]
    fn rejects_oversize() {
        let bytes = vec![0u8; MAX_SOLANA_PAYLOAD + 1];
        assert!(matches!(decode(&bytes), Err(SignerError::Oversize { .. })));
    }

    #[test]
    fn rejects_signature_count_mismatch() {
        let (_, payer) = secret(1);
        let message = legacy_message(payer, &[transfer_ix(payer, [5; 32], 1)]);
        for n in [0usize, 2, 3] {
            let tx = as_tx(n, &message);
            assert!(decode(&tx).is_err(), "{n} signature slots for 1 signer");
        }
    }

    #[test]
    fn rejects_duplicate_account_keys_and_insane_header() {
        let (_, payer) = secret(1);
        let msg = Message::new_with_compiled_instructions(
            1,
            0,
            1,
            vec![
                Address::from(payer),
                Address::from(payer),
                Address::from(SYSTEM_PROGRAM_ID),
            ],
            Hash::new_from_array([1; 32]),
            vec![CompiledInstruction::new_from_raw_parts(
                2,
                vec![2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
                vec![0, 1],
            )],
        );
        let bytes = wincode::serialize(&VersionedMessage::Legacy(msg)).unwrap();
        assert!(matches!(
            decode(&bytes),
            Err(SignerError::InvalidPayload { .. })
        ));

        // header claims 3 signers but only 2 keys exist
        let msg = Message::new_with_compiled_instructions(
            3,
            0,
            0,
            vec![Address::from(payer), Address::from(SYSTEM_PROGRAM_ID)],
            Hash::new_from_array([1; 32]),
            vec![],
        );
        let bytes = wincode::serialize(&VersionedMessage::Legacy(msg)).unwrap();
        assert!(decode(&bytes).is_err());
    }

    #[test]
    fn system_program_id_is_the_all_ones_address() {
        assert_eq!(
            crate::secret::solana_address(&SYSTEM_PROGRAM_ID),
            "11111111111111111111111111111111"
        );
    }
}
