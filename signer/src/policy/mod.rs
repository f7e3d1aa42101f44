//! Key policies (DESIGN §4): parsing, canonical form, and evaluation on *decoded*
//! payloads. Default deny everywhere. The user's reference, with every rule and worked
//! policies, is `docs/POLICY.md`; the JSON Schema is `docs/policy.schema.json`.
//!
//! # Shape
//!
//! One module per rule family, each owning its part of the document, its rules and
//! their evaluation: `common` (`not_before`, `not_after`, `allowed_kinds`,
//! `rate_limit`), `evm` (transactions), `tokens` (ERC-20 calls and permits), `messages`
//! (EIP-191, EIP-712, raw digests, Solana off-chain messages), `solana`
//! (transactions), `spl` (SPL Token mints); `rule` names every refusal, `limits`
//! the rolling-window charges, `fields` the shared field readers. Nothing here does
//! I/O or reads a clock: [`Policy::evaluate`] takes the time, and returns the charges
//! for the enclave to enforce against its window state.
//!
//! # Version 2
//!
//! `"version": 2` documents add the common rules, the four message kinds, EVM call
//! data (selectors, ERC-20), fee caps per gas, permits, Solana destinations, fee
//! payers, compute caps, SPL tokens and rolling windows (`docs/POLICY.md`). They are
//! evaluated only by [`Policy::evaluate`]; the version-1 entry points refuse them.
//! Their canonical JSON writes every non-optional field (lists and maps even when
//! empty, in document order) and optional ones only when set.
//!
//! # Document (version 1)
//!
//! ```json
//! {
//!   "version": 1,
//!   "enabled": true,
//!   "evm": {
//!     "chain_ids": [1, 8453],
//!     "allowed_destinations": ["0x…40 hex…"],
//!     "max_value_wei": "1000000000000000000",
//!     "max_fee_wei": "10000000000000000"
//!   },
//!   "solana": {
//!     "allowed_programs": ["11111111111111111111111111111111"],
//!     "max_lamports_per_transfer": 1000000000,
//!     "max_lamports_per_transaction": 1000000000,
//!     "max_fee_lamports": 1000000,
//!     "system_instructions": ["transfer", "create_account"]
//!   }
//! }
//! ```
//!
//! - `version` defaults to 1; 2 is the format of `docs/POLICY.md`; any other value is
//!   refused (a newer format).
//! - `enabled` is required. `false` refuses everything.
//! - A missing `evm` / `solana` section refuses that chain family.
//! - Inside a section every field is optional and its absence is the strictest
//!   reading: no chain ids, destinations or programs means none allowed; a missing
//!   `max_value_wei` / `max_lamports_per_transfer` means 0 (no value may move). The
//!   exceptions are the fields added after the first release (`max_fee_wei`,
//!   `max_fee_lamports`, `max_lamports_per_transaction`), whose absence means *no such
//!   cap*, because policies stored before they existed must keep their meaning.
//! - **A new or changed policy must state the fee caps** ([`Policy::parse_new`], used
//!   by the enclave's `GenerateKey` and `SetPolicy`): an `evm` section needs
//!   `max_fee_wei`, a `solana` section needs `max_fee_lamports` and
//!   `max_lamports_per_transaction`. Stored policies are read with [`Policy::parse`],
//!   which accepts their absence.
//!
//! ## EVM
//!
//! `max_fee_wei` caps the most a transaction can pay in fees: `gas_limit ×
//! max_fee_per_gas` for EIP-1559, `gas_limit × gas_price` for legacy and EIP-2930,
//! computed exactly in 256 bits and allowed when ≤ the cap (rule `evm.max_fee_wei`).
//! Without it a compromised parent can get a transaction signed whose fee (gas limit
//! times an absurd gas price) drains the account to a block builder it colludes with,
//! however small `max_value_wei` is. `max_value_wei` is per transaction (an EVM
//! transaction moves one value).
//!
//! ## Solana
//!
//! Every instruction must invoke a program in `allowed_programs`. What "allowed"
//! means depends on whether this engine **decodes** the program:
//!
//! - **Decoded programs** (System, Compute Budget): every instruction is decoded
//!   exactly and an instruction the engine does not understand is refused.
//!   - *System Program*: an allow-list by instruction name, `system_instructions`
//!     (snake_case of `SystemInstruction`'s 13 variants: `create_account`, `assign`,
//!     `transfer`, `create_account_with_seed`, `advance_nonce_account`,
//!     `withdraw_nonce_account`, `initialize_nonce_account`,
//!     `authorize_nonce_account`, `allocate`, `allocate_with_seed`,
//!     `assign_with_seed`, `transfer_with_seed`, `upgrade_nonce_account`). Absent
//!     means `["transfer", "create_account"]`. Any other System instruction is
//!     refused on any account, the key's own included (rule
//!     `solana.system_instructions`): `Allocate` + `InitializeNonceAccount` on the
//!     key's account hands its whole balance to the nonce authority, `Allocate` alone
//!     freezes it, `Assign` gives it to another program. A `CreateAccount` is signed
//!     only when its new account is a required signer of the message other than the
//!     key (so it is a fresh account, and the key's address cannot be created under
//!     another program's ownership). In version 2 that new account must also be in
//!     `allowed_destinations`, like every other lamport destination: its key is held
//!     by whoever built the transaction, so funding it pays them. Allowed
//!     lamport-moving instructions (`transfer`, `create_account`, `*_with_seed`,
//!     `withdraw_nonce_account`) each count against `max_lamports_per_transfer`, and
//!     together against `max_lamports_per_transaction`, whoever pays them.
//!   - *Compute Budget*: `RequestHeapFrame`, `SetComputeUnitLimit`,
//!     `SetComputeUnitPrice`, `SetLoadedAccountsDataSizeLimit`, each at most once;
//!     anything else is refused (rule `solana.compute_budget`).
//! - **Programs the engine does not decode** (anything else you list): listing one
//!   in `allowed_programs` means **any instruction of it**, with any accounts and
//!   data, and whatever that program does with the key's signature through
//!   cross-program invocation (signer privileges extend to CPI, so a program handed the
//!   key as a signer can call the System Program with it; no System allow-list or
//!   lamport cap sees that). Only list programs whose every instruction you accept.
//!
//! `max_fee_lamports` caps the most the message can pay in fees, whoever pays them:
//! signature fees plus `ceil(unit_limit × unit_price / 10⁶)` with the runtime's
//! default unit limit when none is set (see [`crate::solana::compute_budget`] for the
//! exact bound and its agave reference); rule `solana.max_fee_lamports`.
//!
//! # Rules for maintainers: growing the format
//!
//! Unknown fields are **refused** at parse time, so an older enclave never silently
//! ignores a restriction written for a newer one. New rules are added as optional
//! fields whose absence keeps today's meaning, and are emitted by
//! [`Policy::canonical_json`] only when present, so the canonical bytes (which the
//! policy MAC covers) of every stored policy stay the same across upgrades. A change
//! that would alter the meaning of an existing document needs a new `version`
//! (the one exception so far is a security fix: System instructions other than
//! `transfer` and `create_account` are refused unless named, even in stored
//! policies).
//!
//! # What version 1 does not bound
//!
//! EVM fees of stored policies without `max_fee_wei`; EVM nonces and call data
//! (function selectors); Solana accounts loaded from v0 address tables (a transfer to
//! or from one is still counted against the lamport caps); instructions of programs
//! the engine does not decode.

use std::collections::BTreeSet;

use alloy_primitives::{Address, U256};
use serde::{Deserialize, Serialize};

use crate::payload::{Decoded, SignerIdentity};
use crate::solana::SystemInstructionName;
use crate::SignerError;

mod common;
mod evm;
mod fields;
mod limits;
mod messages;
mod rule;
mod solana;
mod spl;
mod tokens;

pub use common::CommonRules;
pub use evm::EvmV2Rules;
pub use fields::{Window, MAX_WINDOW_SECS};
pub use limits::{Approval, BadLimitId, Charge, LimitId};
pub use messages::{DomainRule, MessageRules, TypedDataRules};
pub use rule::Rule;
pub use solana::SolanaV2Rules;
pub use spl::SplRules;
pub use tokens::TokenRules;

/// Largest policy document accepted, in bytes (16 KiB). Checked before parsing.
pub const MAX_POLICY_BYTES: usize = 16 * 1024;

/// Largest number of entries in any list of a policy.
pub const MAX_LIST_ENTRIES: usize = 256;

/// The newest policy format version this code understands (it reads 1 and 2).
pub const POLICY_VERSION: u32 = 2;

/// A parsed, validated policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// 1 or 2.
    version: u32,
    enabled: bool,
    /// Empty for version 1.
    common: CommonRules,
    evm: Option<EvmRules>,
    solana: Option<SolanaRules>,
}

/// The `evm` section of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvmRules {
    /// EIP-155 chain ids a transaction may target (all > 0).
    pub chain_ids: BTreeSet<u64>,
    /// Addresses a transaction may call or pay.
    pub allowed_destinations: BTreeSet<[u8; 20]>,
    /// The largest `value` a transaction may carry, in wei.
    pub max_value_wei: U256,
    /// The largest total fee a transaction may be able to pay, in wei, compared with
    /// `gas_limit × max_fee_per_gas` (EIP-1559) or `gas_limit × gas_price` (legacy,
    /// EIP-2930): see [`crate::EvmTx::max_fee_wei`]. `None` (field absent) means no fee cap,
    /// which keeps policies written before the field existed unchanged. Operators
    /// should set it: without it, fees can drain the account whatever
    /// `max_value_wei` says.
    pub max_fee_wei: Option<U256>,
    /// The rules of version 2 (`None` in a version 1 policy).
    pub v2: Option<EvmV2Rules>,
}

/// The `solana` section of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SolanaRules {
    /// Program ids every instruction must invoke one of.
    pub allowed_programs: BTreeSet<[u8; 32]>,
    /// The largest amount any single System Program transfer may move, in lamports.
    pub max_lamports_per_transfer: u64,
    /// The System instructions that may be signed, by name; `None` (field absent)
    /// means [`SystemInstructionName::DEFAULT_ALLOWED`]. See
    /// [`SolanaRules::allows_system`].
    pub system_instructions: Option<BTreeSet<SystemInstructionName>>,
    /// The largest total of all lamport-moving System instructions in one message, in
    /// lamports. `None` (stored policies from before the field) means no total cap.
    pub max_lamports_per_transaction: Option<u64>,
    /// The most a message may be able to pay in fees, in lamports
    /// ([`crate::SolanaPayload::max_fee_lamports`]). `None` (stored policies from before the
    /// field) means no fee cap.
    pub max_fee_lamports: Option<u64>,
    /// The rules of version 2 (`None` in a version 1 policy).
    pub v2: Option<SolanaV2Rules>,
}

/// Why a policy refused a payload: a stable rule name for programs and a message for
/// people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("denied by policy rule {rule}: {message}")]
pub struct Denial {
    /// Stable rule name, one of [`Rule::as_str`]'s.
    pub rule: &'static str,
    /// What the payload did that the rule forbids.
    pub message: String,
}

impl Denial {
    /// The rule, as the enum.
    pub fn rule_id(&self) -> Option<Rule> {
        Rule::from_name(self.rule)
    }
}

fn deny(rule: Rule, message: impl Into<String>) -> Denial {
    Denial {
        rule: rule.as_str(),
        message: message.into(),
    }
}

/// The refusal of the version-1 entry points for a version 2 policy.
fn needs_evaluate() -> Denial {
    deny(
        Rule::AllowedKinds,
        "a version 2 policy is evaluated with Policy::evaluate (clock and rolling limits)",
    )
}

// ---- the document as written (serde) ----

/// Reads only `version` (refusing it twice), to pick the document type.
#[derive(Deserialize)]
struct VersionProbe {
    #[serde(default = "default_version")]
    version: u32,
}

/// A version 2 document; field order is the canonical order.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PolicyV2Doc {
    version: u32,
    enabled: bool,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    not_before: Option<u64>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    not_after: Option<u64>,
    allowed_kinds: Vec<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    rate_limit: Option<common::RateLimitDoc>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    evm: Option<evm::EvmV2Doc>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    solana: Option<solana::SolanaV2Doc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDoc {
    #[serde(default = "default_version")]
    version: u32,
    enabled: bool,
    #[serde(default)]
    evm: Option<EvmDoc>,
    #[serde(default)]
    solana: Option<SolanaDoc>,
}

fn default_version() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EvmDoc {
    #[serde(default)]
    chain_ids: Vec<u64>,
    #[serde(default)]
    allowed_destinations: Vec<String>,
    #[serde(default)]
    max_value_wei: Option<String>,
    /// Absent means no cap; when present it must be a string (`null` is refused,
    /// rather than silently read as "no cap").
    #[serde(default, deserialize_with = "present_string")]
    max_fee_wei: Option<String>,
}

/// For an optional field whose absence is permissive: present means a JSON string.
fn present_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// For an optional field whose absence has a meaning of its own: present means a
/// value of the field's type (`null` is refused).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SolanaDoc {
    #[serde(default)]
    pub(crate) allowed_programs: Vec<String>,
    #[serde(default)]
    pub(crate) max_lamports_per_transfer: u64,
    #[serde(default, deserialize_with = "present")]
    pub(crate) system_instructions: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    pub(crate) max_lamports_per_transaction: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    pub(crate) max_fee_lamports: Option<u64>,
}

// ---- the canonical form (field order here is the canonical order) ----

#[derive(Serialize)]
struct CanonicalPolicy {
    version: u32,
    enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    evm: Option<CanonicalEvm>,
    #[serde(skip_serializing_if = "Option::is_none")]
    solana: Option<CanonicalSolana>,
}

#[derive(Serialize)]
struct CanonicalEvm {
    chain_ids: Vec<u64>,
    allowed_destinations: Vec<String>,
    max_value_wei: String,
    /// Optional and emitted only when set, so a policy without it keeps the canonical
    /// bytes it had before the field existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_fee_wei: Option<String>,
}

#[derive(Serialize)]
struct CanonicalSolana {
    allowed_programs: Vec<String>,
    max_lamports_per_transfer: u64,
    /// This and the next two: emitted only when set, so policies without them keep
    /// their canonical bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instructions: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_lamports_per_transaction: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_fee_lamports: Option<u64>,
}

impl Policy {
    /// Parses and validates a policy document (see the module docs for the format).
    ///
    /// # Errors
    /// [`SignerError::Oversize`] above [`MAX_POLICY_BYTES`] (checked first);
    /// [`SignerError::InvalidPolicy`] for invalid JSON, unknown or duplicate fields, a
    /// version other than 1, a list longer than [`MAX_LIST_ENTRIES`], a chain id of 0,
    /// an address that is not `0x` + 40 hex digits or is mixed-case without a valid
    /// EIP-55 checksum, a `max_value_wei` or `max_fee_wei` that is not a JSON string of
    /// decimal digits fitting 256 bits, a program id that is not base58 of 32 bytes, or
    /// a `system_instructions` entry that is not one of the 13 names.
    ///
    /// This is the lenient reading, for **stored** policies: the fee caps may be
    /// absent. New and changed policies go through [`Policy::parse_new`].
    pub fn parse(json: &str) -> Result<Policy, SignerError> {
        if json.len() > MAX_POLICY_BYTES {
            return Err(SignerError::Oversize {
                what: "policy",
                len: json.len(),
                limit: MAX_POLICY_BYTES,
            });
        }
        let bad =
            |e: serde_json::Error| SignerError::policy(format!("not a valid policy document: {e}"));
        let probe: VersionProbe = serde_json::from_str(json).map_err(bad)?;
        match probe.version {
            1 => {
                let doc: PolicyDoc = serde_json::from_str(json).map_err(bad)?;
                debug_assert_eq!(doc.version, 1, "the probe read the same field");
                let evm = doc.evm.map(parse_evm).transpose()?;
                let solana = doc.solana.map(parse_solana).transpose()?;
                Ok(Policy {
                    version: 1,
                    enabled: doc.enabled,
                    common: CommonRules::default(),
                    evm,
                    solana,
                })
            }
            2 => Self::parse_v2(serde_json::from_str(json).map_err(bad)?),
            v => Err(SignerError::policy(format!(
                "policy version {v} is not supported (this enclave understands 1 and \
                 {POLICY_VERSION})"
            ))),
        }
    }

    fn parse_v2(doc: PolicyV2Doc) -> Result<Policy, SignerError> {
        let common = CommonRules::parse(
            doc.not_before,
            doc.not_after,
            &doc.allowed_kinds,
            doc.rate_limit.as_ref(),
        )?;
        let evm = doc.evm.map(evm::parse_evm_v2).transpose()?;
        let solana = doc.solana.map(solana::parse_solana_v2).transpose()?;
        for kind in &common.allowed_kinds {
            let (has, section) = if kind.is_evm() {
                (evm.is_some(), "evm")
            } else {
                (solana.is_some(), "solana")
            };
            if !has {
                return Err(SignerError::policy(format!(
                    "allowed_kinds names {} but the policy has no {section} section",
                    kind.as_str()
                )));
            }
        }
        Ok(Policy {
            version: 2,
            enabled: doc.enabled,
            common,
            evm,
            solana,
        })
    }

    /// Parses a **new or changed** policy: [`Policy::parse`]; no member may be `null`
    /// (an optional member is left out: `"solana": null` would otherwise read as no
    /// Solana section, which docs/policy.schema.json calls invalid); and every present
    /// section must state its fee caps ([`Policy::missing_fee_caps`] is empty).
    ///
    /// Stored policies are the canonical JSON of policies this accepted (no `null`
    /// anywhere), so [`Policy::parse`] keeps reading them.
    ///
    /// # Errors
    /// As [`Policy::parse`], and [`SignerError::InvalidPolicy`] naming the `null` member
    /// or the missing fields.
    pub fn parse_new(json: &str) -> Result<Policy, SignerError> {
        let policy = Policy::parse(json)?;
        // Bounded and well-formed: `parse` read the same text.
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| SignerError::policy(format!("not a valid policy document: {e}")))?;
        if let Some(path) = null_member(&value, "") {
            return Err(SignerError::policy(format!(
                "`{path}` is null: leave an optional member out instead"
            )));
        }
        let missing = policy.missing_fee_caps();
        if !missing.is_empty() {
            return Err(SignerError::policy(format!(
                "a new policy must set {}",
                missing.join(", ")
            )));
        }
        Ok(policy)
    }

    /// The fee-cap fields a present section lacks, in document order: `evm.max_fee_wei`,
    /// `solana.max_lamports_per_transaction`, `solana.max_fee_lamports`. Empty for a
    /// policy that [`Policy::parse_new`] accepts.
    pub fn missing_fee_caps(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.evm.as_ref().is_some_and(|e| e.max_fee_wei.is_none()) {
            out.push("evm.max_fee_wei");
        }
        if let Some(s) = &self.solana {
            if s.max_lamports_per_transaction.is_none() {
                out.push("solana.max_lamports_per_transaction");
            }
            if s.max_fee_lamports.is_none() {
                out.push("solana.max_fee_lamports");
            }
        }
        out
    }

    /// The canonical JSON of this policy: fixed field order, no whitespace, lists
    /// sorted (by value; addresses and program ids by their bytes) and deduplicated,
    /// EVM addresses lowercase `0x` hex, `max_value_wei` and `max_fee_wei` as decimal
    /// strings without leading zeros, absent optional fields written as their strict
    /// default inside a present section, except the fields added later (`max_fee_wei`,
    /// `system_instructions`, `max_lamports_per_transaction`, `max_fee_lamports`), which
    /// are written only when set (their absence has its own meaning), `system_instructions`
    /// in variant index order. These are the bytes
    /// the policy MAC covers. Parsing the output gives back an equal policy, and
    /// canonicalizing that gives the same bytes.
    pub fn canonical_json(&self) -> String {
        if self.version == 2 {
            let doc = PolicyV2Doc {
                version: 2,
                enabled: self.enabled,
                not_before: self.common.not_before,
                not_after: self.common.not_after,
                allowed_kinds: self.common.kinds_doc(),
                rate_limit: self.common.rate_limit_doc(),
                evm: self
                    .evm
                    .as_ref()
                    .map(|e| evm::evm_v2_doc(e, e.v2.as_ref().unwrap_or(&EvmV2Rules::default()))),
                solana: self.solana.as_ref().map(|s| {
                    solana::solana_v2_doc(s, s.v2.as_ref().unwrap_or(&SolanaV2Rules::default()))
                }),
            };
            return serde_json::to_string(&doc)
                .expect("invariant: structs of strings, integers and bools always serialize");
        }
        let canonical = CanonicalPolicy {
            version: 1,
            enabled: self.enabled,
            evm: self.evm.as_ref().map(|e| CanonicalEvm {
                chain_ids: e.chain_ids.iter().copied().collect(),
                allowed_destinations: e
                    .allowed_destinations
                    .iter()
                    .map(|a| format!("0x{}", hex::encode(a)))
                    .collect(),
                max_value_wei: e.max_value_wei.to_string(),
                max_fee_wei: e.max_fee_wei.map(|f| f.to_string()),
            }),
            solana: self.solana.as_ref().map(|s| CanonicalSolana {
                allowed_programs: s
                    .allowed_programs
                    .iter()
                    .map(|p| bs58::encode(p).into_string())
                    .collect(),
                max_lamports_per_transfer: s.max_lamports_per_transfer,
                system_instructions: s
                    .system_instructions
                    .as_ref()
                    .map(|set| set.iter().map(|n| n.as_str()).collect()),
                max_lamports_per_transaction: s.max_lamports_per_transaction,
                max_fee_lamports: s.max_fee_lamports,
            }),
        };
        serde_json::to_string(&canonical)
            .expect("invariant: structs of strings, integers and bools always serialize")
    }

    /// Whether the key may sign at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The document version (1 or 2).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The common rules (empty for version 1).
    pub fn common(&self) -> &CommonRules {
        &self.common
    }

    /// Evaluates the policy on a decoded payload that the key `signer` is to sign at
    /// Unix time `now_secs`, and lists what the request spends against the rolling
    /// limits ([`Approval`]); the caller enforces those windows (reserve before
    /// signing, then commit or release).
    ///
    /// Order: `enabled`; the kind (`allowed_kinds`; a version 1 policy allows
    /// `evm_transaction` and `solana_transaction` only, judged as
    /// [`Policy::evaluate_evm`] and [`Policy::evaluate_solana`] do, with no charges);
    /// `not_before` / `not_after`; the kind's rules (module docs); then the
    /// `rate_limit` charge. A payload whose kind needs the other key type than
    /// `signer` is refused (`solana.signer` / `evm`).
    ///
    /// # Errors
    /// The first [`Denial`] met.
    pub fn evaluate(
        &self,
        decoded: &Decoded,
        signer: &SignerIdentity,
        now_secs: u64,
    ) -> Result<Approval, Denial> {
        if !self.enabled {
            return Err(deny(Rule::Enabled, "the key is disabled"));
        }
        let kind = decoded.kind();
        if self.version == 1 {
            return match decoded {
                Decoded::EvmTransaction(tx) => self.evaluate_evm(tx).map(|()| Approval::default()),
                Decoded::SolanaTransaction(p) => {
                    let key = signer
                        .solana_public_key()
                        .ok_or_else(|| deny(Rule::SolanaSigner, "the key is not an ed25519 key"))?;
                    self.evaluate_solana(p, &key).map(|()| Approval::default())
                }
                _ => Err(deny(
                    Rule::AllowedKinds,
                    format!("payload kind {} needs a version 2 policy", kind.as_str()),
                )),
            };
        }
        self.common.check(kind, now_secs)?;
        let mut charges = limits::Charges::default();
        if kind.is_evm() {
            let rules = self
                .evm
                .as_ref()
                .ok_or_else(|| deny(Rule::Evm, "the policy has no evm section"))?;
            let default = EvmV2Rules::default();
            let v2 = rules.v2.as_ref().unwrap_or(&default);
            if signer.evm_address().is_none() {
                return Err(deny(Rule::Evm, "the key is not a secp256k1 key"));
            }
            match decoded {
                Decoded::EvmTransaction(tx) => evm::evaluate_v2(rules, v2, tx, &mut charges)?,
                Decoded::EvmMessage(m) => messages::evaluate_message(v2, m)?,
                Decoded::EvmTypedData(t) => {
                    messages::evaluate_typed_data(rules, v2, t, &mut charges)?
                }
                Decoded::EvmDigest(_) => messages::evaluate_digest(v2)?,
                Decoded::SolanaTransaction(_) | Decoded::SolanaOffchainMessage(_) => {}
            }
        } else {
            let rules = self
                .solana
                .as_ref()
                .ok_or_else(|| deny(Rule::Solana, "the policy has no solana section"))?;
            let default = SolanaV2Rules::default();
            let v2 = rules.v2.as_ref().unwrap_or(&default);
            let key = signer
                .solana_public_key()
                .ok_or_else(|| deny(Rule::SolanaSigner, "the key is not an ed25519 key"))?;
            match decoded {
                Decoded::SolanaTransaction(p) => {
                    solana::evaluate_v2(rules, v2, p, &key, &mut charges)?
                }
                Decoded::SolanaOffchainMessage(m) => solana::evaluate_offchain(v2, m, &key)?,
                _ => {}
            }
        }
        self.common.charge(&mut charges)?;
        Ok(charges.into_approval())
    }

    /// This policy with `enabled` set to `enabled` and every rule kept: what an
    /// emergency stop (`false`) and a re-enable (`true`) issue as the key's next policy
    /// version (issue 7). The result's canonical JSON is what an owner's `enable`
    /// authorization names.
    #[must_use]
    pub fn with_enabled(mut self, enabled: bool) -> Policy {
        self.enabled = enabled;
        self
    }

    /// The `evm` section, if any.
    pub fn evm(&self) -> Option<&EvmRules> {
        self.evm.as_ref()
    }

    /// The `solana` section, if any.
    pub fn solana(&self) -> Option<&SolanaRules> {
        self.solana.as_ref()
    }
}

fn check_len(what: &str, len: usize) -> Result<(), SignerError> {
    if len > MAX_LIST_ENTRIES {
        return Err(SignerError::policy(format!(
            "{what} has {len} entries, limit {MAX_LIST_ENTRIES}"
        )));
    }
    Ok(())
}

fn parse_evm(doc: EvmDoc) -> Result<EvmRules, SignerError> {
    check_len("evm.chain_ids", doc.chain_ids.len())?;
    check_len("evm.allowed_destinations", doc.allowed_destinations.len())?;
    if doc.chain_ids.contains(&0) {
        return Err(SignerError::policy(
            "evm.chain_ids: chain id 0 is not a chain",
        ));
    }
    let allowed_destinations = doc
        .allowed_destinations
        .iter()
        .map(|a| parse_address(a))
        .collect::<Result<BTreeSet<_>, _>>()?;
    let max_value_wei = match doc.max_value_wei {
        None => U256::ZERO,
        Some(s) => parse_wei("evm.max_value_wei", &s)?,
    };
    let max_fee_wei = doc
        .max_fee_wei
        .map(|s| parse_wei("evm.max_fee_wei", &s))
        .transpose()?;
    Ok(EvmRules {
        chain_ids: doc.chain_ids.into_iter().collect(),
        allowed_destinations,
        max_value_wei,
        max_fee_wei,
        v2: None,
    })
}

fn parse_solana(doc: SolanaDoc) -> Result<SolanaRules, SignerError> {
    check_len("solana.allowed_programs", doc.allowed_programs.len())?;
    let allowed_programs = doc
        .allowed_programs
        .iter()
        .map(|p| parse_program(p))
        .collect::<Result<BTreeSet<_>, _>>()?;
    let system_instructions = doc
        .system_instructions
        .map(|names| {
            check_len("solana.system_instructions", names.len())?;
            names
                .iter()
                .map(|n| {
                    SystemInstructionName::from_name(n).ok_or_else(|| {
                        SignerError::policy(format!(
                            "solana.system_instructions: {n:.48} is not a System Program \
                             instruction name"
                        ))
                    })
                })
                .collect::<Result<BTreeSet<_>, _>>()
        })
        .transpose()?;
    Ok(SolanaRules {
        allowed_programs,
        max_lamports_per_transfer: doc.max_lamports_per_transfer,
        system_instructions,
        max_lamports_per_transaction: doc.max_lamports_per_transaction,
        max_fee_lamports: doc.max_fee_lamports,
        v2: None,
    })
}

/// `0x` + 40 hex digits; mixed case must carry a valid EIP-55 checksum.
fn parse_address(s: &str) -> Result<[u8; 20], SignerError> {
    let bad = || {
        SignerError::policy(format!(
            "evm.allowed_destinations: {s:.48} is not a 0x-prefixed 20-byte hex address"
        ))
    };
    let digits = s.strip_prefix("0x").ok_or_else(bad)?;
    if digits.len() != 40 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let has_lower = digits.bytes().any(|b| b.is_ascii_lowercase());
    let has_upper = digits.bytes().any(|b| b.is_ascii_uppercase());
    if has_lower && has_upper {
        let addr = Address::parse_checksummed(s, None).map_err(|_| {
            SignerError::policy(format!(
                "evm.allowed_destinations: {s} is mixed-case but not a valid EIP-55 checksum"
            ))
        })?;
        return Ok(addr.into_array());
    }
    let mut out = [0u8; 20];
    hex::decode_to_slice(digits, &mut out).map_err(|_| bad())?;
    Ok(out)
}

/// A decimal string of at most 78 digits fitting in 256 bits; `field` names it in the
/// error.
fn parse_wei(field: &str, s: &str) -> Result<U256, SignerError> {
    let bad = || {
        SignerError::policy(format!(
            "{field}: {s:.80} is not a decimal integer below 2^256"
        ))
    };
    if s.is_empty() || s.len() > 78 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    U256::from_str_radix(s, 10).map_err(|_| bad())
}

/// Base58 of exactly 32 bytes, in its canonical spelling.
fn parse_program(s: &str) -> Result<[u8; 32], SignerError> {
    let bad = || {
        SignerError::policy(format!(
            "solana.allowed_programs: {s:.48} is not a base58 32-byte program id"
        ))
    };
    if s.len() > 44 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    let n = bs58::decode(s).onto(&mut out[..]).map_err(|_| bad())?;
    if n != 32 || bs58::encode(out).into_string() != s {
        return Err(bad());
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

/// The dotted path of a member (or list item) of `value` that is `null`, the first in
/// the order `serde_json::Map` iterates (by key) ([`Policy::parse_new`]).
fn null_member(value: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::Null => Some(if path.is_empty() {
            "(document)".into()
        } else {
            path.to_owned()
        }),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let sub = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            null_member(v, &sub)
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| null_member(v, &format!("{path}[{i}]"))),
        _ => None,
    }
}
