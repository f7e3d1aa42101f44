//! Message types of the parent↔enclave protocol (DESIGN §2–§4) and the canonical byte
//! layouts that sealing binds: [`SealedKeyRecord::aad`] (AES-256-GCM AAD) and
//! [`SealedPolicy::mac_input`] (HMAC-SHA256 input).
//!
//! The enclave holds no state but cached data keys: the parent stores every sealed blob
//! and sends it back with each request. Byte fields are CBOR byte strings (`serde_bytes`),
//! and every struct refuses unknown fields.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::audit::SignedAuditRecord;
use crate::codec::PROTOCOL_VERSION;
use crate::error::WireError;
use crate::metrics::EnclaveMetrics;
use crate::statement::SignedKeyStatement;

/// Most nonce bytes an attestation request may carry (the NSM's limit).
pub const MAX_ATTESTATION_NONCE_LEN: usize = 512;
/// Most user-data bytes an attestation request may carry (the NSM's limit).
pub const MAX_ATTESTATION_USER_DATA_LEN: usize = 512;

/// A request frame, parent → enclave. Build it with [`RequestFrame::new`]; many requests
/// may be in flight on one connection, matched to responses by `request_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFrame {
    /// Always [`PROTOCOL_VERSION`]; other versions are refused by the codec.
    pub version: u16,
    /// Chosen by the parent, echoed in the response.
    pub request_id: u64,
    /// The request.
    pub body: Request,
}

impl RequestFrame {
    /// A frame of the current [`PROTOCOL_VERSION`].
    pub fn new(request_id: u64, body: Request) -> Self {
        RequestFrame {
            version: PROTOCOL_VERSION,
            request_id,
            body,
        }
    }

    /// Checks per-field limits beyond the frame size: attestation nonce and user data at
    /// most 512 bytes each. Returns the reason on failure.
    pub(crate) fn check_limits(&self) -> Result<(), String> {
        if let Request::Attestation { nonce, user_data } = &self.body {
            for (name, field, max) in [
                ("nonce", nonce, MAX_ATTESTATION_NONCE_LEN),
                ("user_data", user_data, MAX_ATTESTATION_USER_DATA_LEN),
            ] {
                let len = field.as_ref().map_or(0, |b| b.len());
                if len > max {
                    return Err(format!("{name} is {len} bytes, more than {max}"));
                }
            }
        }
        Ok(())
    }
}

/// A response frame, enclave → parent: the `request_id` of the request it answers and
/// either a [`ResponseBody`] or a [`WireError`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseFrame {
    /// Always [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The `request_id` of the request answered.
    pub request_id: u64,
    /// The answer.
    pub body: Result<ResponseBody, WireError>,
}

/// Alias of [`ResponseFrame`] (the name used in the design notes).
pub type Response = ResponseFrame;

impl ResponseFrame {
    /// A successful response of the current [`PROTOCOL_VERSION`].
    pub fn ok(request_id: u64, body: ResponseBody) -> Self {
        ResponseFrame {
            version: PROTOCOL_VERSION,
            request_id,
            body: Ok(body),
        }
    }

    /// Checks per-field limits beyond the frame size: [`EnclaveMetrics`]' bounds
    /// (entry count, label shapes). Returns the reason on failure.
    pub(crate) fn check_limits(&self) -> Result<(), String> {
        match &self.body {
            Ok(ResponseBody::Metrics(m)) => m.check_limits(),
            _ => Ok(()),
        }
    }

    /// An error response of the current [`PROTOCOL_VERSION`].
    pub fn err(request_id: u64, error: WireError) -> Self {
        ResponseFrame {
            version: PROTOCOL_VERSION,
            request_id,
            body: Err(error),
        }
    }
}

/// Requests, parent → enclave. Each names its successful [`ResponseBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Request {
    /// Hand the enclave its KMS settings and credentials. → [`ResponseBody::Configured`].
    /// Sent again to a Ready enclave with the same region, endpoint and key id, it
    /// refreshes the credentials (instance-role credentials rotate); with another KMS
    /// target it is [`WireError::AlreadyConfigured`].
    Configure {
        /// KMS endpoint, key and credentials.
        kms: KmsConfig,
        /// Data-key cache bounds.
        dek_cache: DekCachePolicy,
    },
    /// → [`ResponseBody::Status`].
    Status,
    /// Ask for a fresh attestation document. → [`ResponseBody::Attestation`].
    Attestation {
        /// Freshness nonce, at most [`MAX_ATTESTATION_NONCE_LEN`] bytes.
        #[serde(with = "serde_bytes")]
        nonce: Option<Vec<u8>>,
        /// User data, at most [`MAX_ATTESTATION_USER_DATA_LEN`] bytes.
        #[serde(with = "serde_bytes")]
        user_data: Option<Vec<u8>>,
    },
    /// Create the data key of a keyring epoch (KMS `GenerateDataKey` with `Recipient`).
    /// → [`ResponseBody::KeyringCreated`].
    CreateKeyring {
        /// Keyring name.
        keyring: String,
        /// Epoch (data-key generation) of the keyring.
        epoch: u32,
    },
    /// Generate an execution key inside the enclave and seal it. →
    /// [`ResponseBody::KeyGenerated`]. The enclave chooses the key id (a UUID v4 from
    /// NSM randomness, in the record): were the caller to choose it, a host could make
    /// a second key under a victim's id, with a genuine statement and a policy of its
    /// own, and serve it in the victim's place.
    GenerateKey {
        /// Signature algorithm.
        algorithm: Algorithm,
        /// Owner, whose signature authorises policy changes.
        owner: Option<String>,
        /// Free-form label (not sealed).
        label: Option<String>,
        /// Initial policy document (JSON).
        policy_json: String,
        /// The keyring whose data key seals the new key.
        keyring: KeyringRef,
    },
    /// Replace a key's policy with version `current.version + 1`. For a key with an
    /// owner, `approval` must carry the owner's signature over the
    /// [`crate::owner::Authorization`] (`set_policy`) of exactly this change. →
    /// [`ResponseBody::CheckpointPending`] with the new policy (in force once
    /// [`Request::Commit`] is answered), or [`ResponseBody::Refused`]
    /// ([`WireError::OwnerAuthorizationInvalid`]).
    SetPolicy {
        /// The key's sealed record.
        record: SealedKeyRecord,
        /// Its keyring.
        keyring: KeyringRef,
        /// The policy currently stored (must verify).
        current: SealedPolicy,
        /// The new policy document (JSON).
        policy_json: String,
        /// The owner's authorization, for a key with an owner.
        approval: Option<OwnerApproval>,
    },
    /// Emergency stop of one key: the enclave issues version `current.version + 1`,
    /// the same rules with `enabled: false`. Needs no owner (it only removes rights). →
    /// [`ResponseBody::CheckpointPending`].
    DisableKey {
        /// The key's sealed record.
        record: SealedKeyRecord,
        /// Its keyring.
        keyring: KeyringRef,
        /// The policy currently stored (must verify).
        current: SealedPolicy,
    },
    /// Re-enable a disabled key: version `current.version + 1`, the same rules with
    /// `enabled: true`; for a key with an owner, only with the owner's `enable`
    /// authorization. → [`ResponseBody::CheckpointPending`] or
    /// [`ResponseBody::Refused`].
    EnableKey {
        /// The key's sealed record.
        record: SealedKeyRecord,
        /// Its keyring.
        keyring: KeyringRef,
        /// The policy currently stored (must verify, and be disabled).
        current: SealedPolicy,
        /// The owner's authorization, for a key with an owner.
        approval: Option<OwnerApproval>,
    },
    /// Store-wide stop: every `Sign` is refused until [`Request::ResumeAll`]. →
    /// [`ResponseBody::CheckpointPending`].
    StopAll,
    /// Ends the store-wide stop. → [`ResponseBody::CheckpointPending`].
    ResumeAll,
    /// Load the enclave's durable state (once per boot, after `Configure` made it
    /// `Ready`; key requests are [`WireError::NotReady`] until the state is restored
    /// and committed). `checkpoint` is the newest one the parent stored (`None` on the
    /// very first boot), `last_audit` the newest audit record. →
    /// [`ResponseBody::CheckpointPending`].
    Restore {
        /// The keyring whose data key MACs checkpoints from now on (and, for
        /// `checkpoint`, the one it names).
        keyring: KeyringRef,
        /// The newest stored checkpoint.
        checkpoint: Option<SealedCheckpoint>,
        /// The newest stored audit record.
        last_audit: Option<SignedAuditRecord>,
    },
    /// Second phase of a state change: the parent has durably stored the checkpoint
    /// `seq` (and the policy that came with it); the enclave now applies the change and
    /// answers. → [`ResponseBody::Committed`].
    Commit {
        /// The pending checkpoint's sequence number.
        seq: u64,
    },
    /// Issue a key statement for an existing key (one stored before statements
    /// existed, or whose stored statement was lost): the enclave opens the sealed
    /// record and states what it holds. → [`ResponseBody::KeyCertified`].
    CertifyKey {
        /// The key's sealed record.
        record: SealedKeyRecord,
        /// Its keyring.
        keyring: KeyringRef,
    },
    /// The enclave's counters ([`crate::metrics`]). Accepted in every state (also
    /// before `Configure`), touches no secret. → [`ResponseBody::Metrics`].
    Metrics,
    /// Sign a payload if the key's policy allows it. → [`ResponseBody::Signed`].
    Sign {
        /// The key's sealed record.
        record: SealedKeyRecord,
        /// Its keyring.
        keyring: KeyringRef,
        /// The key's sealed policy.
        policy: SealedPolicy,
        /// What to sign.
        payload: SignPayload,
    },
}

impl Request {
    /// Stable snake_case name of the request kind (`"sign"`, `"status"`, …), for logs
    /// and metric labels: a closed set, never anything the request carries.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Configure { .. } => "configure",
            Request::Status => "status",
            Request::Attestation { .. } => "attestation",
            Request::CreateKeyring { .. } => "create_keyring",
            Request::GenerateKey { .. } => "generate_key",
            Request::SetPolicy { .. } => "set_policy",
            Request::DisableKey { .. } => "disable_key",
            Request::EnableKey { .. } => "enable_key",
            Request::StopAll => "stop_all",
            Request::ResumeAll => "resume_all",
            Request::Restore { .. } => "restore",
            Request::Commit { .. } => "commit",
            Request::CertifyKey { .. } => "certify_key",
            Request::Metrics => "metrics",
            Request::Sign { .. } => "sign",
        }
    }
}

/// Successful responses, enclave → parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum ResponseBody {
    /// Answer to [`Request::Configure`].
    Configured,
    /// Answer to [`Request::Status`].
    Status(StatusInfo),
    /// Answer to [`Request::Attestation`].
    Attestation {
        /// COSE_Sign1 attestation document (DESIGN §5).
        #[serde(with = "serde_bytes")]
        document: Vec<u8>,
    },
    /// Answer to [`Request::CreateKeyring`].
    KeyringCreated {
        /// Keyring name.
        keyring: String,
        /// Epoch.
        epoch: u32,
        /// KMS `CiphertextBlob` of the data key, for the parent to store.
        #[serde(with = "serde_bytes")]
        dek_ciphertext: Vec<u8>,
    },
    /// Answer to [`Request::GenerateKey`].
    KeyGenerated {
        /// The sealed key, for the parent to store.
        record: SealedKeyRecord,
        /// The MAC'd initial policy (version 1), for the parent to store.
        policy: SealedPolicy,
        /// The enclave's signed statement of the key's identity
        /// ([`crate::statement`]).
        statement: Box<SignedKeyStatement>,
        /// The attestation document binding the statement's identity key.
        #[serde(with = "serde_bytes")]
        identity_document: Vec<u8>,
        /// The audit record of the creation.
        audit: SignedAuditRecord,
    },
    /// Answer to [`Request::CertifyKey`].
    KeyCertified {
        /// The enclave's signed statement of the key's identity.
        statement: Box<SignedKeyStatement>,
        /// The attestation document binding the statement's identity key.
        #[serde(with = "serde_bytes")]
        identity_document: Vec<u8>,
    },
    /// First phase of a state change ([`Request::SetPolicy`], [`Request::DisableKey`],
    /// [`Request::EnableKey`], [`Request::StopAll`], [`Request::ResumeAll`],
    /// [`Request::Restore`]): store `checkpoint` (and `policy`, in one transaction),
    /// then send [`Request::Commit`] with `checkpoint.seq`. Nothing is in force in the
    /// enclave until then; an uncommitted change is dropped after
    /// [`PENDING_CHECKPOINT_SECS`].
    CheckpointPending {
        /// The enclave's state after the change, MAC'd.
        checkpoint: SealedCheckpoint,
        /// For a key's change: the key's new MAC'd policy.
        policy: Option<SealedPolicy>,
    },
    /// Answer to [`Request::Commit`]: the change is in force.
    Committed {
        /// The audit record of the change (for `Restore`: the boot record).
        audit: SignedAuditRecord,
        /// For `Restore`: the attestation document that binds this boot's audit key.
        #[serde(with = "serde_bytes")]
        audit_document: Option<Vec<u8>>,
    },
    /// Answer to [`Request::Sign`] that signed.
    Signed {
        /// The signature.
        output: SignOutput,
        /// Its audit record (the parent stores it before releasing the signature).
        audit: SignedAuditRecord,
    },
    /// Answer to [`Request::Metrics`].
    Metrics(Box<EnclaveMetrics>),
    /// A refusal the enclave decided on a key and recorded (policy, disabled key,
    /// store stop, owner authorization): the parent stores `audit`, then answers
    /// `error`.
    Refused {
        /// Why.
        error: WireError,
        /// Its audit record.
        audit: SignedAuditRecord,
    },
}

/// Seconds an uncommitted [`ResponseBody::CheckpointPending`] is kept before the
/// enclave drops it (and takes other state changes again).
pub const PENDING_CHECKPOINT_SECS: u64 = 30;

/// An owner's authorization as sent with a change (the enclave rebuilds the message
/// itself, [`crate::owner::Authorization`], from the change and these fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerApproval {
    /// The policy version the owner approved (must be `current.version + 1`).
    pub version: u64,
    /// Unix seconds after which the approval is void (enclave clock).
    pub expires_at: u64,
    /// The signature: 65 bytes `r || s || v` (eip191) or 64 bytes (ed25519).
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Most bytes of [`OwnerApproval::signature`].
pub const MAX_OWNER_SIGNATURE_LEN: usize = 65;

/// The enclave's durable state (issue 7 item 4), MAC'd with a key derived from the data
/// key of `keyring`/`epoch` ([`SealedCheckpoint::mac_input`]). The parent stores it;
/// only the enclave can make one. `body` is the enclave's own CBOR encoding.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedCheckpoint {
    /// Monotonic sequence number (1 for the first).
    pub seq: u64,
    /// Keyring whose data key MACs it.
    pub keyring: String,
    /// Its epoch.
    pub epoch: u32,
    /// The state (enclave-defined CBOR).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// HMAC-SHA256 over [`SealedCheckpoint::mac_input`].
    #[serde(with = "serde_bytes")]
    pub mac: [u8; 32],
}

impl fmt::Debug for SealedCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedCheckpoint")
            .field("seq", &self.seq)
            .field("keyring", &self.keyring)
            .field("epoch", &self.epoch)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// Domain separator of [`SealedCheckpoint::mac_input`].
const CHECKPOINT_MAC_DOMAIN: &[u8] = b"ekms/v1/checkpoint-mac";

impl SealedCheckpoint {
    /// The bytes the checkpoint MAC covers:
    /// `lp("ekms/v1/checkpoint-mac") || u64_be seq || lp(keyring) || u32_be epoch || lp(body)`.
    pub fn mac_input(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.keyring.len() + self.body.len());
        put_lp(&mut out, CHECKPOINT_MAC_DOMAIN);
        out.extend_from_slice(&self.seq.to_be_bytes());
        put_lp(&mut out, self.keyring.as_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        put_lp(&mut out, &self.body);
        out
    }
}

/// KMS settings for the enclave's own KMS client (DESIGN §2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsConfig {
    /// AWS region, e.g. `us-east-1`.
    pub region: String,
    /// Endpoint override (the KMS emulator in simulation); `None` = the regional endpoint.
    pub endpoint_url: Option<String>,
    /// KMS key id or ARN used for `GenerateDataKey`/`Decrypt`.
    pub kms_key_id: String,
    /// Credentials for the calls.
    pub credentials: Credentials,
}

/// The instance role's temporary AWS credentials. Not secret from the parent (it fetched
/// them), but kept out of logs: `Debug` shows only the access key id.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// `AccessKeyId`.
    pub access_key_id: String,
    /// `SecretAccessKey`.
    pub secret_access_key: String,
    /// `SessionToken` (present for role credentials).
    pub session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Bounds on how long and how often a plaintext data key stays cached in the enclave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DekCachePolicy {
    /// Time to live of a cached data key, in seconds.
    pub ttl_secs: u64,
    /// Uses before eviction; `0` = no caching, a KMS `Decrypt` for every signature.
    pub max_uses: u64,
}

/// Answer to [`Request::Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusInfo {
    /// Where the enclave's state machine is.
    pub state: EnclaveState,
    /// Nitro hardware or simulation.
    pub mode: Mode,
    /// Platform configuration registers by index (48 bytes each, SHA-384).
    pub pcrs: BTreeMap<u16, ByteBuf>,
    /// The KMS target a `Ready` enclave serves (`None` before `Ready`), so that the
    /// parent can tell an enclave configured by someone else. Absent on the wire = `None`.
    #[serde(default)]
    pub kms_target: Option<KmsTarget>,
    /// Whether the durable state was restored (`Restore` committed): key requests are
    /// served only then. Absent on the wire = `false`.
    #[serde(default)]
    pub restored: bool,
    /// Whether the store-wide stop is in force.
    #[serde(default)]
    pub stopped: bool,
}

/// Which KMS an enclave uses: [`KmsConfig`] without the credentials (nothing secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsTarget {
    /// AWS region.
    pub region: String,
    /// Endpoint override; `None` = the regional endpoint.
    pub endpoint_url: Option<String>,
    /// KMS key id or ARN.
    pub kms_key_id: String,
}

impl KmsConfig {
    /// The target these settings name (region, endpoint, key; not the credentials).
    pub fn target(&self) -> KmsTarget {
        KmsTarget {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
            kms_key_id: self.kms_key_id.clone(),
        }
    }
}

/// The enclave's state machine (STYLE rule 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnclaveState {
    /// Started, not configured.
    Booting,
    /// Configured, KMS not yet reached.
    Configured,
    /// Serving all requests.
    Ready,
}

/// Whether the enclave runs on Nitro hardware or in simulation (DESIGN §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Simulated NSM and KMS emulator.
    Simulation,
    /// A real Nitro Enclave.
    Nitro,
}

/// Signature algorithm of an execution key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// ECDSA over secp256k1 (EVM).
    Secp256k1,
    /// Ed25519, RFC 8032 (Solana).
    Ed25519,
}

impl Algorithm {
    /// The lower-case name (`"secp256k1"`, `"ed25519"`), as metric labels use it.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Secp256k1 => "secp256k1",
            Algorithm::Ed25519 => "ed25519",
        }
    }

    /// Stable one-byte code used in [`SealedKeyRecord::aad`]: Secp256k1 = 1, Ed25519 = 2.
    pub fn code(self) -> u8 {
        match self {
            Algorithm::Secp256k1 => 1,
            Algorithm::Ed25519 => 2,
        }
    }
}

/// A keyring's data key reference, stored by the parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyringRef {
    /// Keyring name.
    pub keyring: String,
    /// Epoch.
    pub epoch: u32,
    /// KMS `CiphertextBlob` of the data key.
    #[serde(with = "serde_bytes")]
    pub dek_ciphertext: Vec<u8>,
}

/// What to sign: the raw bytes of an unsigned transaction of the given kind. The enclave
/// decodes them itself; the kind only selects the decoder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignPayload {
    /// Payload kind.
    pub kind: PayloadKind,
    /// Unsigned transaction bytes.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// Kinds of payload the enclave can decode and sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PayloadKind {
    /// An unsigned EVM transaction (EIP-2718 typed envelope or legacy RLP).
    EvmTransaction,
    /// An unsigned Solana transaction message.
    SolanaTransaction,
    /// An EIP-191 `personal_sign` message: the message bytes (the enclave adds the
    /// `"\x19Ethereum Signed Message:\n" || len` prefix).
    EvmMessage,
    /// EIP-712 typed data: the UTF-8 JSON `{types, primaryType, domain, message}`.
    EvmTypedData,
    /// A raw 32-byte digest (refused unless the policy sets `allow_raw_digest`).
    EvmDigest,
    /// A Solana off-chain message, serialized with its `"\xffsolana offchain"` header.
    SolanaOffchainMessage,
}

impl PayloadKind {
    /// Every kind, for tests that pin the names.
    pub const ALL: [PayloadKind; 6] = [
        PayloadKind::EvmTransaction,
        PayloadKind::SolanaTransaction,
        PayloadKind::EvmMessage,
        PayloadKind::EvmTypedData,
        PayloadKind::EvmDigest,
        PayloadKind::SolanaOffchainMessage,
    ];

    /// The API's snake_case name (`"evm_transaction"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadKind::EvmTransaction => "evm_transaction",
            PayloadKind::SolanaTransaction => "solana_transaction",
            PayloadKind::EvmMessage => "evm_message",
            PayloadKind::EvmTypedData => "evm_typed_data",
            PayloadKind::EvmDigest => "evm_digest",
            PayloadKind::SolanaOffchainMessage => "solana_offchain_message",
        }
    }

    /// The kind named `name` ([`PayloadKind::as_str`]).
    pub fn parse(name: &str) -> Option<PayloadKind> {
        PayloadKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The key algorithm that signs this kind.
    pub fn algorithm(self) -> Algorithm {
        match self {
            PayloadKind::EvmTransaction
            | PayloadKind::EvmMessage
            | PayloadKind::EvmTypedData
            | PayloadKind::EvmDigest => Algorithm::Secp256k1,
            PayloadKind::SolanaTransaction | PayloadKind::SolanaOffchainMessage => {
                Algorithm::Ed25519
            }
        }
    }
}

/// A signature and the signed transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum SignOutput {
    /// secp256k1 ECDSA over an EVM transaction.
    Evm {
        /// Signature `r`, big-endian.
        #[serde(with = "serde_bytes")]
        r: [u8; 32],
        /// Signature `s`, big-endian, low-s (EIP-2).
        #[serde(with = "serde_bytes")]
        s: [u8; 32],
        /// Recovery parity, 0 or 1.
        y_parity: u8,
        /// `v` as encoded in the transaction (EIP-155 for legacy, else `y_parity`).
        v: u64,
        /// The signed transaction, ready to broadcast.
        #[serde(with = "serde_bytes")]
        signed_transaction: Vec<u8>,
        /// Keccak-256 of `signed_transaction`.
        #[serde(with = "serde_bytes")]
        transaction_hash: [u8; 32],
    },
    /// secp256k1 ECDSA over a 32-byte digest (EIP-191 message, EIP-712 typed data, raw
    /// digest): 65 bytes `r || s || v` as `eth_sign` returns them.
    EvmDigest {
        /// The digest signed (EIP-191 or EIP-712 hash, or the raw digest).
        #[serde(with = "serde_bytes")]
        digest: [u8; 32],
        /// Signature `r`, big-endian.
        #[serde(with = "serde_bytes")]
        r: [u8; 32],
        /// Signature `s`, big-endian, low-s.
        #[serde(with = "serde_bytes")]
        s: [u8; 32],
        /// Recovery parity, 0 or 1 (`v` = 27 + parity).
        y_parity: u8,
    },
    /// Ed25519 over a Solana off-chain message (the whole serialized message).
    SolanaMessage {
        /// The signature.
        #[serde(with = "serde_bytes")]
        signature: [u8; 64],
    },
    /// Ed25519 over a Solana message.
    Solana {
        /// The signature.
        #[serde(with = "serde_bytes")]
        signature: [u8; 64],
        /// The signed transaction, ready to broadcast.
        #[serde(with = "serde_bytes")]
        signed_transaction: Vec<u8>,
    },
}

/// A sealed execution key (DESIGN §3), stored by the parent. `ciphertext` is the
/// AES-256-GCM encryption of the private key under the key's wrap key, with
/// [`SealedKeyRecord::aad`] as AAD: moving the record to another key id, owner,
/// algorithm, keyring or epoch makes it fail to open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedKeyRecord {
    /// Record layout version (currently 1).
    pub version: u8,
    /// Key id.
    pub key_id: String,
    /// Owner, if any.
    pub owner: Option<String>,
    /// Algorithm.
    pub algorithm: Algorithm,
    /// Public key (33-byte compressed secp256k1 or 32-byte ed25519).
    #[serde(with = "serde_bytes")]
    pub public_key: Vec<u8>,
    /// Keyring whose data key seals this record.
    pub keyring: String,
    /// Keyring epoch.
    pub epoch: u32,
    /// Per-key HKDF salt.
    #[serde(with = "serde_bytes")]
    pub salt: [u8; 32],
    /// AES-GCM nonce.
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; 12],
    /// AES-GCM ciphertext and tag.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// Domain separator of [`SealedKeyRecord::aad`].
const SEALED_KEY_DOMAIN: &[u8] = b"ekms/v1/sealed-key";
/// Domain separator of [`SealedPolicy::mac_input`].
const POLICY_MAC_DOMAIN: &[u8] = b"ekms/v1/policy-mac";

/// Appends `u64_be(len) || bytes`.
fn put_lp(out: &mut Vec<u8>, bytes: &[u8]) {
    // usize → u64 is lossless on every supported target (≤ 64-bit).
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

impl SealedKeyRecord {
    /// The AES-256-GCM additional authenticated data: every field but `ciphertext`, as
    ///
    /// ```text
    /// lp("ekms/v1/sealed-key")
    /// || u8 version
    /// || lp(key_id)
    /// || owner: 0x00 if None, 0x01 || lp(owner) if Some
    /// || u8 algorithm.code()          (Secp256k1 = 1, Ed25519 = 2)
    /// || lp(public_key)
    /// || lp(keyring)
    /// || u32_be epoch
    /// || salt (32 bytes) || nonce (12 bytes)
    /// ```
    ///
    /// where `lp(x) = u64_be(len(x)) || x` and strings are their UTF-8 bytes. Every
    /// variable-length field is length-prefixed and the rest is fixed-size, so the
    /// encoding is injective: two distinct records never have the same AAD.
    pub fn aad(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            128 + self.key_id.len()
                + self.owner.as_ref().map_or(0, String::len)
                + self.public_key.len()
                + self.keyring.len(),
        );
        put_lp(&mut out, SEALED_KEY_DOMAIN);
        out.push(self.version);
        put_lp(&mut out, self.key_id.as_bytes());
        match &self.owner {
            None => out.push(0),
            Some(owner) => {
                out.push(1);
                put_lp(&mut out, owner.as_bytes());
            }
        }
        out.push(self.algorithm.code());
        put_lp(&mut out, &self.public_key);
        put_lp(&mut out, self.keyring.as_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.nonce);
        out
    }
}

/// A key's policy with its HMAC-SHA256 under the key's policy-MAC key (DESIGN §4),
/// stored by the parent. Versions increase by one with each change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedPolicy {
    /// Key id the policy belongs to.
    pub key_id: String,
    /// Monotonic version, 1 for the initial policy.
    pub version: u64,
    /// The policy in canonical JSON (these exact bytes are MAC'd).
    pub policy_json: String,
    /// HMAC-SHA256 over [`SealedPolicy::mac_input`].
    #[serde(with = "serde_bytes")]
    pub mac: [u8; 32],
}

impl SealedPolicy {
    /// The bytes the policy MAC covers:
    ///
    /// ```text
    /// lp("ekms/v1/policy-mac") || lp(key_id) || u64_be version || lp(policy_json)
    /// ```
    ///
    /// with `lp(x) = u64_be(len(x)) || x`; injective like [`SealedKeyRecord::aad`].
    pub fn mac_input(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.key_id.len() + self.policy_json.len());
        put_lp(&mut out, POLICY_MAC_DOMAIN);
        put_lp(&mut out, self.key_id.as_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        put_lp(&mut out, self.policy_json.as_bytes());
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn payload_kind_names_are_pinned() {
        let names: Vec<_> = PayloadKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "evm_transaction",
                "solana_transaction",
                "evm_message",
                "evm_typed_data",
                "evm_digest",
                "solana_offchain_message"
            ]
        );
        for k in PayloadKind::ALL {
            assert_eq!(PayloadKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(PayloadKind::parse("EvmTransaction"), None);
    }

    pub(crate) fn record() -> SealedKeyRecord {
        SealedKeyRecord {
            version: 1,
            key_id: "ab".into(),
            owner: Some("c".into()),
            algorithm: Algorithm::Secp256k1,
            public_key: vec![2; 33],
            keyring: "default".into(),
            epoch: 1,
            salt: [7; 32],
            nonce: [9; 12],
            ciphertext: vec![1, 2, 3],
        }
    }

    pub(crate) fn policy() -> SealedPolicy {
        SealedPolicy {
            key_id: "ab".into(),
            version: 1,
            policy_json: r#"{"chain_ids":[1]}"#.into(),
            mac: [5; 32],
        }
    }

    #[test]
    fn aad_layout_is_as_documented() {
        let r = record();
        let mut want = Vec::new();
        want.extend_from_slice(&18u64.to_be_bytes());
        want.extend_from_slice(b"ekms/v1/sealed-key");
        want.push(1);
        want.extend_from_slice(&2u64.to_be_bytes());
        want.extend_from_slice(b"ab");
        want.push(1);
        want.extend_from_slice(&1u64.to_be_bytes());
        want.extend_from_slice(b"c");
        want.push(1);
        want.extend_from_slice(&33u64.to_be_bytes());
        want.extend_from_slice(&[2; 33]);
        want.extend_from_slice(&7u64.to_be_bytes());
        want.extend_from_slice(b"default");
        want.extend_from_slice(&1u32.to_be_bytes());
        want.extend_from_slice(&[7; 32]);
        want.extend_from_slice(&[9; 12]);
        assert_eq!(r.aad(), want);
    }

    #[test]
    fn aad_ignores_only_ciphertext() {
        let r = record();
        let mut c = r.clone();
        c.ciphertext = vec![0xff; 40];
        assert_eq!(r.aad(), c.aad());
    }

    #[test]
    fn rejects_aad_collision_when_any_field_changes() {
        let base = record();
        let edits: Vec<fn(&mut SealedKeyRecord)> = vec![
            |r| r.version = 2,
            |r| r.key_id = "ac".into(),
            |r| r.owner = None,
            |r| r.owner = Some(String::new()),
            |r| r.algorithm = Algorithm::Ed25519,
            |r| r.public_key[0] = 3,
            |r| {
                r.public_key.pop();
            },
            |r| r.keyring = "other".into(),
            |r| r.epoch = 2,
            |r| r.salt[31] ^= 1,
            |r| r.nonce[0] ^= 1,
            // Moving bytes between adjacent variable-length fields.
            |r| {
                r.key_id = "a".into();
                r.owner = Some("bc".into());
            },
            |r| {
                r.key_id = "abc".into();
                r.owner = None;
            },
        ];
        let mut seen = std::collections::BTreeSet::new();
        assert!(seen.insert(base.aad()));
        for (i, edit) in edits.iter().enumerate() {
            let mut r = base.clone();
            edit(&mut r);
            assert!(seen.insert(r.aad()), "edit {i} collides");
        }
    }

    #[test]
    fn rejects_aad_collision_between_owner_none_and_empty() {
        let mut a = record();
        a.owner = None;
        let mut b = record();
        b.owner = Some(String::new());
        assert_ne!(a.aad(), b.aad());
    }

    #[test]
    fn mac_input_layout_is_as_documented() {
        let p = policy();
        let mut want = Vec::new();
        want.extend_from_slice(&18u64.to_be_bytes());
        want.extend_from_slice(b"ekms/v1/policy-mac");
        want.extend_from_slice(&2u64.to_be_bytes());
        want.extend_from_slice(b"ab");
        want.extend_from_slice(&1u64.to_be_bytes());
        want.extend_from_slice(&17u64.to_be_bytes());
        want.extend_from_slice(br#"{"chain_ids":[1]}"#);
        assert_eq!(p.mac_input(), want);
        let mut m = p.clone();
        m.mac = [0; 32];
        assert_eq!(p.mac_input(), m.mac_input(), "the MAC is not its own input");
    }

    #[test]
    fn rejects_mac_input_collision_when_any_field_changes() {
        let base = policy();
        let edits: Vec<fn(&mut SealedPolicy)> = vec![
            |p| p.key_id = "ac".into(),
            |p| p.version = 2,
            |p| p.policy_json = r#"{"chain_ids":[2]}"#.into(),
            |p| {
                p.key_id = "ab{".into();
                p.policy_json = r#""chain_ids":[1]}"#.into();
            },
        ];
        for edit in &edits {
            let mut p = base.clone();
            edit(&mut p);
            assert_ne!(p.mac_input(), base.mac_input());
        }
        // Domain separation: a record's AAD never equals a policy's MAC input.
        assert_ne!(record().aad()[..26], base.mac_input()[..26]);
    }

    #[test]
    fn credentials_debug_is_redacted() {
        let c = Credentials {
            access_key_id: "AKIAEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI".into(),
            session_token: Some("FwoGZXIvYXdzEBYa".into()),
        };
        let s = format!("{c:?}");
        assert!(s.contains("AKIAEXAMPLE"));
        assert!(!s.contains("wJalrXUtnFEMI"), "{s}");
        assert!(!s.contains("FwoGZXIvYXdzEBYa"), "{s}");
    }

    #[test]
    fn rejects_oversize_attestation_fields() {
        let ok = RequestFrame::new(
            1,
            Request::Attestation {
                nonce: Some(vec![0; 512]),
                user_data: Some(vec![0; 512]),
            },
        );
        assert!(ok.check_limits().is_ok());
        for (n, u) in [(513, 0), (0, 513)] {
            let f = RequestFrame::new(
                1,
                Request::Attestation {
                    nonce: Some(vec![0; n]),
                    user_data: Some(vec![0; u]),
                },
            );
            assert!(f.check_limits().is_err());
        }
    }
}
