//! Key policies (DESIGN §4): parsing, canonical form, and evaluation on *decoded*
//! payloads. Default deny everywhere.
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
//!     "max_lamports_per_transfer": 1000000000
//!   }
//! }
//! ```
//!
//! - `version` defaults to 1; any other value is refused (a newer format).
//! - `enabled` is required. `false` refuses everything.
//! - A missing `evm` / `solana` section refuses that chain family.
//! - Inside a section every field is optional and its absence is the strictest
//!   reading: no chain ids, destinations or programs means none allowed; a missing
//!   `max_value_wei` / `max_lamports_per_transfer` means 0 (no value may move).
//! - `max_fee_wei` (added after the first release, hence optional) caps the most a
//!   transaction can pay in fees: `gas_limit × max_fee_per_gas` for EIP-1559,
//!   `gas_limit × gas_price` for legacy and EIP-2930, computed exactly in 256 bits
//!   and allowed when ≤ the cap (rule `evm.max_fee_wei`). Its absence means **no fee
//!   cap**, the one exception to "absence is strictest", because policies stored
//!   before the field existed must keep their meaning (see below). **Operators should
//!   set it**: without it a compromised parent can get a transaction signed whose fee
//!   (gas limit times an absurd gas price) drains the account to a block builder it
//!   colludes with, however small `max_value_wei` is.
//!
//! # Rules for maintainers: growing the format
//!
//! Unknown fields are **refused** at parse time, so an older enclave never silently
//! ignores a restriction written for a newer one. New rules are added as optional
//! fields whose absence keeps today's meaning, and are emitted by
//! [`Policy::canonical_json`] only when present, so the canonical bytes (which the
//! policy MAC covers) of every stored policy stay the same across upgrades. A change
//! that would alter the meaning of an existing document needs a new `version`.
//!
//! # What version 1 does not bound
//!
//! EVM fees are bounded only when `max_fee_wei` is set; EVM nonces and call data
//! (function selectors) are not restricted yet; Solana accounts loaded from v0
//! address tables are not visible. Lamport limits apply to every System Program
//! transfer in a message, whoever pays it. System instructions that hand over a whole
//! balance without naming an amount (`Assign`, `AssignWithSeed`, `AllocateWithSeed`,
//! `AuthorizeNonceAccount`) are refused (`solana.system_instructions`), since no
//! lamport limit could bound them.

use std::collections::BTreeSet;

use alloy_primitives::{Address, U256};
use serde::{Deserialize, Serialize};

use crate::evm::EvmTx;
use crate::solana::SolanaPayload;
use crate::SignerError;

/// Largest policy document accepted, in bytes (16 KiB). Checked before parsing.
pub const MAX_POLICY_BYTES: usize = 16 * 1024;

/// Largest number of entries in any list of a policy.
pub const MAX_LIST_ENTRIES: usize = 256;

/// The policy format version this code understands.
pub const POLICY_VERSION: u32 = 1;

/// A parsed, validated policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    enabled: bool,
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
    /// EIP-2930): see [`EvmTx::max_fee_wei`]. `None` (field absent) means no fee cap,
    /// which keeps policies written before the field existed unchanged. Operators
    /// should set it: without it, fees can drain the account whatever
    /// `max_value_wei` says.
    pub max_fee_wei: Option<U256>,
}

/// The `solana` section of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SolanaRules {
    /// Program ids every instruction must invoke one of.
    pub allowed_programs: BTreeSet<[u8; 32]>,
    /// The largest amount any single System Program transfer may move, in lamports.
    pub max_lamports_per_transfer: u64,
}

/// Why a policy refused a payload: a stable rule name for programs and a message for
/// people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("denied by policy rule {rule}: {message}")]
pub struct Denial {
    /// Stable rule name: `enabled`, `evm`, `evm.chain_ids`, `evm.contract_creation`,
    /// `evm.allowed_destinations`, `evm.max_value_wei`, `evm.max_fee_wei`, `solana`,
    /// `solana.signer`, `solana.allowed_programs`, `solana.system_instructions`,
    /// `solana.max_lamports_per_transfer`.
    pub rule: &'static str,
    /// What the payload did that the rule forbids.
    pub message: String,
}

fn deny(rule: &'static str, message: impl Into<String>) -> Denial {
    Denial {
        rule,
        message: message.into(),
    }
}

// ---- the document as written (serde) ----

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
    POLICY_VERSION
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SolanaDoc {
    #[serde(default)]
    allowed_programs: Vec<String>,
    #[serde(default)]
    max_lamports_per_transfer: u64,
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
    /// decimal digits fitting 256 bits, or a program id that is not base58 of 32 bytes.
    pub fn parse(json: &str) -> Result<Policy, SignerError> {
        if json.len() > MAX_POLICY_BYTES {
            return Err(SignerError::Oversize {
                what: "policy",
                len: json.len(),
                limit: MAX_POLICY_BYTES,
            });
        }
        let doc: PolicyDoc = serde_json::from_str(json)
            .map_err(|e| SignerError::policy(format!("not a valid policy document: {e}")))?;
        if doc.version != POLICY_VERSION {
            return Err(SignerError::policy(format!(
                "policy version {} is not supported (this enclave understands {POLICY_VERSION})",
                doc.version
            )));
        }
        let evm = doc.evm.map(parse_evm).transpose()?;
        let solana = doc.solana.map(parse_solana).transpose()?;
        Ok(Policy {
            enabled: doc.enabled,
            evm,
            solana,
        })
    }

    /// The canonical JSON of this policy: fixed field order, no whitespace, lists
    /// sorted (by value; addresses and program ids by their bytes) and deduplicated,
    /// EVM addresses lowercase `0x` hex, `max_value_wei` and `max_fee_wei` as decimal
    /// strings without leading zeros, absent optional fields written as their strict
    /// default inside a present section, except `max_fee_wei`, which is written only
    /// when set (see the module docs: its absence means no cap). These are the bytes
    /// the policy MAC covers. Parsing the output gives back an equal policy, and
    /// canonicalizing that gives the same bytes.
    pub fn canonical_json(&self) -> String {
        let canonical = CanonicalPolicy {
            version: POLICY_VERSION,
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
            }),
        };
        serde_json::to_string(&canonical)
            .expect("invariant: structs of strings, integers and bools always serialize")
    }

    /// Whether the key may sign at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The `evm` section, if any.
    pub fn evm(&self) -> Option<&EvmRules> {
        self.evm.as_ref()
    }

    /// The `solana` section, if any.
    pub fn solana(&self) -> Option<&SolanaRules> {
        self.solana.as_ref()
    }

    /// Evaluates the policy on a decoded EVM transaction. Checks, in order: enabled,
    /// `evm` section present, chain id listed, not a contract creation (no rule allows
    /// one yet), destination listed, `value ≤ max_value_wei`, and, when `max_fee_wei`
    /// is set, `gas_limit × max_fee_per_gas ≤ max_fee_wei` ([`EvmTx::max_fee_wei`]).
    ///
    /// # Errors
    /// The first [`Denial`] met.
    pub fn evaluate_evm(&self, tx: &EvmTx) -> Result<(), Denial> {
        if !self.enabled {
            return Err(deny("enabled", "the key is disabled"));
        }
        let rules = self
            .evm
            .as_ref()
            .ok_or_else(|| deny("evm", "the policy allows no EVM transactions"))?;
        if !rules.chain_ids.contains(&tx.chain_id()) {
            return Err(deny(
                "evm.chain_ids",
                format!("chain id {} is not allowed", tx.chain_id()),
            ));
        }
        let to = tx
            .to()
            .ok_or_else(|| deny("evm.contract_creation", "contract creation is not allowed"))?;
        if !rules.allowed_destinations.contains(&to) {
            return Err(deny(
                "evm.allowed_destinations",
                format!("destination {} is not allowed", crate::secret::eip55(&to)),
            ));
        }
        if tx.value() > rules.max_value_wei {
            return Err(deny(
                "evm.max_value_wei",
                format!(
                    "value {} wei exceeds the maximum {} wei",
                    tx.value(),
                    rules.max_value_wei
                ),
            ));
        }
        if let Some(cap) = rules.max_fee_wei {
            let fee = tx.max_fee_wei();
            if fee > cap {
                return Err(deny(
                    "evm.max_fee_wei",
                    format!(
                        "maximum fee {fee} wei (gas limit {} × {} wei per gas) exceeds the \
                         maximum {cap} wei",
                        tx.gas_limit(),
                        tx.max_fee_per_gas()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Evaluates the policy on a decoded Solana payload to be signed by `signer`.
    /// Checks, in order: enabled, `solana` section present, `signer` is a required
    /// signer, every instruction's program is allowed, every System Program
    /// instruction is one whose lamport movement is understood, and each such movement
    /// is ≤ `max_lamports_per_transfer`.
    ///
    /// # Errors
    /// The first [`Denial`] met.
    pub fn evaluate_solana(&self, p: &SolanaPayload, signer: &[u8; 32]) -> Result<(), Denial> {
        if !self.enabled {
            return Err(deny("enabled", "the key is disabled"));
        }
        let rules = self
            .solana
            .as_ref()
            .ok_or_else(|| deny("solana", "the policy allows no Solana transactions"))?;
        if !p.required_signers().contains(signer) {
            return Err(deny(
                "solana.signer",
                "the key is not a required signer of this message",
            ));
        }
        for ix in p.instructions() {
            if !rules.allowed_programs.contains(&ix.program_id) {
                return Err(deny(
                    "solana.allowed_programs",
                    format!(
                        "program {} is not allowed",
                        bs58::encode(ix.program_id).into_string()
                    ),
                ));
            }
        }
        let transfers = p
            .system_transfers()
            .map_err(|e| deny("solana.system_instructions", e.to_string()))?;
        for t in transfers {
            if t.lamports > rules.max_lamports_per_transfer {
                return Err(deny(
                    "solana.max_lamports_per_transfer",
                    format!(
                        "{:?} of {} lamports exceeds the maximum {}",
                        t.kind, t.lamports, rules.max_lamports_per_transfer
                    ),
                ));
            }
        }
        Ok(())
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
    })
}

fn parse_solana(doc: SolanaDoc) -> Result<SolanaRules, SignerError> {
    check_len("solana.allowed_programs", doc.allowed_programs.len())?;
    let allowed_programs = doc
        .allowed_programs
        .iter()
        .map(|p| parse_program(p))
        .collect::<Result<BTreeSet<_>, _>>()?;
    Ok(SolanaRules {
        allowed_programs,
        max_lamports_per_transfer: doc.max_lamports_per_transfer,
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
mod tests {
    use super::*;
    use crate::evm::decode_unsigned;
    use crate::solana::{decode, SYSTEM_PROGRAM_ID};
    use alloy_consensus::{SignableTransaction, TxEip1559, TxEip2930, TxLegacy};
    use alloy_primitives::{Bytes, TxKind};
    use solana_message::{
        AccountMeta, Address as SolAddress, Hash, Instruction, Message, VersionedMessage,
    };

    const DEST: &str = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed";
    /// EIP-55's own example address, checksummed.
    const DEST_EIP55: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    const COMPUTE_BUDGET: &str = "ComputeBudget111111111111111111111111111111";

    fn evm_policy() -> Policy {
        Policy::parse(&format!(
            r#"{{"enabled":true,"evm":{{"chain_ids":[1,8453],
               "allowed_destinations":["{DEST_EIP55}"],"max_value_wei":"1000"}}}}"#
        ))
        .unwrap()
    }

    fn tx(chain_id: u64, to: Option<[u8; 20]>, value: u64) -> EvmTx {
        let t = TxEip1559 {
            chain_id,
            nonce: 0,
            gas_limit: 21_000,
            max_fee_per_gas: 2,
            max_priority_fee_per_gas: 1,
            to: to.map_or(TxKind::Create, |a| TxKind::Call(a.into())),
            value: U256::from(value),
            input: Bytes::new(),
            access_list: Default::default(),
        };
        let mut out = Vec::new();
        t.encode_for_signing(&mut out);
        decode_unsigned(&out).unwrap()
    }

    fn dest() -> [u8; 20] {
        let mut out = [0u8; 20];
        hex::decode_to_slice(&DEST[2..], &mut out).unwrap();
        out
    }

    #[test]
    fn evm_allows_listed_chain_destination_and_value() {
        let p = evm_policy();
        assert_eq!(p.evaluate_evm(&tx(1, Some(dest()), 1000)), Ok(()));
        assert_eq!(p.evaluate_evm(&tx(8453, Some(dest()), 0)), Ok(()));
    }

    #[test]
    fn rejects_evm_disabled_missing_section_chain_creation_destination_value() {
        let rule = |p: &Policy, t: &EvmTx| p.evaluate_evm(t).unwrap_err().rule;
        let ok_tx = tx(1, Some(dest()), 1);

        let disabled = Policy::parse(
            &evm_policy()
                .canonical_json()
                .replace("\"enabled\":true", "\"enabled\":false"),
        )
        .unwrap();
        assert_eq!(rule(&disabled, &ok_tx), "enabled");
        let no_evm = Policy::parse(r#"{"enabled":true}"#).unwrap();
        assert_eq!(rule(&no_evm, &ok_tx), "evm");

        let p = evm_policy();
        assert_eq!(rule(&p, &tx(10, Some(dest()), 1)), "evm.chain_ids");
        assert_eq!(rule(&p, &tx(1, None, 0)), "evm.contract_creation");
        assert_eq!(
            rule(&p, &tx(1, Some([0x11; 20]), 0)),
            "evm.allowed_destinations"
        );
        assert_eq!(rule(&p, &tx(1, Some(dest()), 1001)), "evm.max_value_wei");
    }

    #[test]
    fn evm_absent_lists_and_max_are_strict() {
        let p = Policy::parse(r#"{"enabled":true,"evm":{}}"#).unwrap();
        assert_eq!(
            p.evaluate_evm(&tx(1, Some(dest()), 0)).unwrap_err().rule,
            "evm.chain_ids"
        );
        let p = Policy::parse(r#"{"enabled":true,"evm":{"chain_ids":[1]}}"#).unwrap();
        assert_eq!(
            p.evaluate_evm(&tx(1, Some(dest()), 0)).unwrap_err().rule,
            "evm.allowed_destinations"
        );
        let p = Policy::parse(&format!(
            r#"{{"enabled":true,"evm":{{"chain_ids":[1],"allowed_destinations":["{DEST}"]}}}}"#
        ))
        .unwrap();
        assert_eq!(p.evaluate_evm(&tx(1, Some(dest()), 0)), Ok(()));
        assert_eq!(
            p.evaluate_evm(&tx(1, Some(dest()), 1)).unwrap_err().rule,
            "evm.max_value_wei"
        );
    }

    #[test]
    fn canonical_json_is_sorted_deduplicated_lowercase_and_stable() {
        let p = Policy::parse(&format!(
            r#"{{ "solana": {{"allowed_programs": ["{COMPUTE_BUDGET}", "11111111111111111111111111111111", "{COMPUTE_BUDGET}"]}},
                 "evm": {{"max_value_wei": "0007", "allowed_destinations": ["{DEST_EIP55}", "{DEST}", "0x{}"],
                          "chain_ids": [8453, 1, 1]}},
                 "enabled": true, "version": 1 }}"#,
            "AB".repeat(20)
        ))
        .unwrap();
        let canonical = p.canonical_json();
        assert_eq!(
            canonical,
            format!(
                r#"{{"version":1,"enabled":true,"evm":{{"chain_ids":[1,8453],"allowed_destinations":["{DEST}","0x{}"],"max_value_wei":"7"}},"solana":{{"allowed_programs":["11111111111111111111111111111111","{COMPUTE_BUDGET}"],"max_lamports_per_transfer":0}}}}"#,
                "ab".repeat(20)
            )
        );
        let again = Policy::parse(&canonical).unwrap();
        assert_eq!(again, p);
        assert_eq!(again.canonical_json(), canonical);
        assert_eq!(
            Policy::parse(r#"{"enabled":false}"#)
                .unwrap()
                .canonical_json(),
            r#"{"version":1,"enabled":false}"#
        );
    }

    #[test]
    fn rejects_invalid_policies() {
        let long_list = format!(
            r#"{{"enabled":true,"evm":{{"chain_ids":[{}]}}}}"#,
            (1..=257)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let cases = [
            "not json".to_string(),
            "{}".to_string(),                              // enabled required
            r#"{"enabled":true,"unknown":1}"#.to_string(), // unknown field
            r#"{"enabled":true,"evm":{"chain_ids":[1],"max_gas":1}}"#.to_string(), // unknown nested field
            r#"{"enabled":true,"enabled":false}"#.to_string(), // duplicate field
            r#"{"version":2,"enabled":true}"#.to_string(),     // newer format
            r#"{"enabled":true,"evm":{"chain_ids":[0]}}"#.to_string(),
            r#"{"enabled":true,"evm":{"chain_ids":[-1]}}"#.to_string(),
            r#"{"enabled":true,"evm":{"allowed_destinations":["0x1234"]}}"#.to_string(),
            format!(
                r#"{{"enabled":true,"evm":{{"allowed_destinations":["{}"]}}}}"#,
                &DEST[2..]
            ),
            // mixed case with one checksum letter flipped
            format!(
                r#"{{"enabled":true,"evm":{{"allowed_destinations":["{}"]}}}}"#,
                DEST_EIP55.replace("aAeb", "aaeb")
            ),
            r#"{"enabled":true,"evm":{"max_value_wei":"1e18"}}"#.to_string(),
            r#"{"enabled":true,"evm":{"max_value_wei":""}}"#.to_string(),
            r#"{"enabled":true,"evm":{"max_value_wei":"-1"}}"#.to_string(),
            r#"{"enabled":true,"evm":{"max_value_wei":1000}}"#.to_string(),
            format!(
                r#"{{"enabled":true,"evm":{{"max_value_wei":"{}"}}}}"#,
                "9".repeat(78)
            ), // > 2^256
            r#"{"enabled":true,"solana":{"allowed_programs":["0OIl"]}}"#.to_string(),
            r#"{"enabled":true,"solana":{"allowed_programs":["1111"]}}"#.to_string(),
            r#"{"enabled":true,"solana":{"max_lamports_per_transfer":-5}}"#.to_string(),
            long_list,
        ];
        for json in &cases {
            assert!(
                matches!(Policy::parse(json), Err(SignerError::InvalidPolicy { .. })),
                "accepted: {json}"
            );
        }
        let huge = format!(
            r#"{{"enabled":true,"pad":"{}"}}"#,
            "x".repeat(MAX_POLICY_BYTES)
        );
        assert!(matches!(
            Policy::parse(&huge),
            Err(SignerError::Oversize { .. })
        ));
        // the largest valid value parses
        let max = U256::MAX.to_string();
        let p = Policy::parse(&format!(
            r#"{{"enabled":true,"evm":{{"max_value_wei":"{max}"}}}}"#
        ))
        .unwrap();
        assert_eq!(p.evm().unwrap().max_value_wei, U256::MAX);
    }

    // ---- Solana ----

    fn sol_key(n: u8) -> [u8; 32] {
        [n; 32]
    }

    fn transfer(from: [u8; 32], to: [u8; 32], lamports: u64) -> Instruction {
        let mut data = 2u32.to_le_bytes().to_vec();
        data.extend_from_slice(&lamports.to_le_bytes());
        Instruction::new_with_bytes(
            SolAddress::from(SYSTEM_PROGRAM_ID),
            &data,
            vec![
                AccountMeta::new(SolAddress::from(from), true),
                AccountMeta::new(SolAddress::from(to), false),
            ],
        )
    }

    fn payload(payer: [u8; 32], ixs: &[Instruction]) -> SolanaPayload {
        let msg = Message::new_with_blockhash(
            ixs,
            Some(&SolAddress::from(payer)),
            &Hash::new_from_array([1; 32]),
        );
        decode(&wincode::serialize(&VersionedMessage::Legacy(msg)).unwrap()).unwrap()
    }

    fn solana_policy() -> Policy {
        Policy::parse(
            r#"{"enabled":true,"solana":{"allowed_programs":["11111111111111111111111111111111"],
                "max_lamports_per_transfer":5000}}"#,
        )
        .unwrap()
    }

    #[test]
    fn solana_allows_listed_program_within_limit() {
        let payer = sol_key(1);
        let p = payload(
            payer,
            &[
                transfer(payer, sol_key(2), 5000),
                transfer(payer, sol_key(3), 1),
            ],
        );
        assert_eq!(solana_policy().evaluate_solana(&p, &payer), Ok(()));
    }

    #[test]
    fn rejects_solana_disabled_section_signer_program_and_amount() {
        let payer = sol_key(1);
        let ok = payload(payer, &[transfer(payer, sol_key(2), 10)]);
        let rule = |pol: &Policy, p: &SolanaPayload, s: &[u8; 32]| {
            pol.evaluate_solana(p, s).unwrap_err().rule
        };

        let disabled = Policy::parse(r#"{"enabled":false,"solana":{}}"#).unwrap();
        assert_eq!(rule(&disabled, &ok, &payer), "enabled");
        assert_eq!(rule(&evm_policy(), &ok, &payer), "solana");
        assert_eq!(rule(&solana_policy(), &ok, &sol_key(2)), "solana.signer");

        let other_program = Instruction::new_with_bytes(
            SolAddress::from(sol_key(9)),
            &[1, 2, 3],
            vec![AccountMeta::new(SolAddress::from(payer), true)],
        );
        let p = payload(payer, &[transfer(payer, sol_key(2), 1), other_program]);
        assert_eq!(
            rule(&solana_policy(), &p, &payer),
            "solana.allowed_programs"
        );

        let p = payload(
            payer,
            &[
                transfer(payer, sol_key(2), 1),
                transfer(payer, sol_key(3), 5001),
            ],
        );
        assert_eq!(
            rule(&solana_policy(), &p, &payer),
            "solana.max_lamports_per_transfer"
        );

        let unknown = Instruction::new_with_bytes(
            SolAddress::from(SYSTEM_PROGRAM_ID),
            &[77, 0, 0, 0],
            vec![AccountMeta::new(SolAddress::from(payer), true)],
        );
        assert_eq!(
            rule(&solana_policy(), &payload(payer, &[unknown]), &payer),
            "solana.system_instructions"
        );
    }

    #[test]
    fn rejects_solana_assign_of_the_signers_account() {
        // A zero-lamport Assign would pass a lamport limit, yet makes the attacker's
        // program the owner of the key's account: it can then debit all of it.
        let payer = sol_key(1);
        let mut data = 1u32.to_le_bytes().to_vec();
        data.extend_from_slice(&sol_key(0xaa));
        let assign = Instruction::new_with_bytes(
            SolAddress::from(SYSTEM_PROGRAM_ID),
            &data,
            vec![AccountMeta::new(SolAddress::from(payer), true)],
        );
        let p = payload(payer, &[transfer(payer, sol_key(2), 1), assign]);
        assert_eq!(
            solana_policy()
                .evaluate_solana(&p, &payer)
                .unwrap_err()
                .rule,
            "solana.system_instructions"
        );
    }

    #[test]
    fn solana_absent_fields_are_strict() {
        let payer = sol_key(1);
        let p = payload(payer, &[transfer(payer, sol_key(2), 1)]);
        let no_programs =
            Policy::parse(r#"{"enabled":true,"solana":{"max_lamports_per_transfer":10}}"#).unwrap();
        assert_eq!(
            no_programs.evaluate_solana(&p, &payer).unwrap_err().rule,
            "solana.allowed_programs"
        );
        let no_max = Policy::parse(
            r#"{"enabled":true,"solana":{"allowed_programs":["11111111111111111111111111111111"]}}"#,
        )
        .unwrap();
        assert_eq!(
            no_max.evaluate_solana(&p, &payer).unwrap_err().rule,
            "solana.max_lamports_per_transfer"
        );
        let zero = payload(payer, &[transfer(payer, sol_key(2), 0)]);
        assert_eq!(no_max.evaluate_solana(&zero, &payer), Ok(()));
    }

    // ---- EVM fee cap ----

    /// Fee-capped policy: the cap is 21000 gas at 10 wei per gas.
    const FEE_CAP: u64 = 210_000;

    fn fee_policy() -> Policy {
        Policy::parse(&format!(
            r#"{{"enabled":true,"evm":{{"chain_ids":[1],"allowed_destinations":["{DEST}"],
               "max_value_wei":"1000","max_fee_wei":"{FEE_CAP}"}}}}"#
        ))
        .unwrap()
    }

    fn tx1559(gas_limit: u64, max_fee_per_gas: u128) -> EvmTx {
        let t = TxEip1559 {
            chain_id: 1,
            nonce: 0,
            gas_limit,
            max_fee_per_gas,
            max_priority_fee_per_gas: 1,
            to: TxKind::Call(dest().into()),
            value: U256::from(1u8),
            input: Bytes::new(),
            access_list: Default::default(),
        };
        let mut out = Vec::new();
        t.encode_for_signing(&mut out);
        decode_unsigned(&out).unwrap()
    }

    fn tx_legacy(gas_limit: u64, gas_price: u128) -> EvmTx {
        let t = TxLegacy {
            chain_id: Some(1),
            nonce: 0,
            gas_price,
            gas_limit,
            to: TxKind::Call(dest().into()),
            value: U256::from(1u8),
            input: Bytes::new(),
        };
        let mut out = Vec::new();
        t.encode_for_signing(&mut out);
        decode_unsigned(&out).unwrap()
    }

    fn tx2930(gas_limit: u64, gas_price: u128) -> EvmTx {
        let t = TxEip2930 {
            chain_id: 1,
            nonce: 0,
            gas_price,
            gas_limit,
            to: TxKind::Call(dest().into()),
            value: U256::from(1u8),
            input: Bytes::new(),
            access_list: Default::default(),
        };
        let mut out = Vec::new();
        t.encode_for_signing(&mut out);
        decode_unsigned(&out).unwrap()
    }

    /// Builds a transaction of one type from (gas limit, max fee per gas or gas price).
    type BuildTx = fn(u64, u128) -> EvmTx;

    /// Every accepted type.
    fn fee_builders() -> [(&'static str, BuildTx); 3] {
        [
            ("eip1559", tx1559),
            ("legacy", tx_legacy),
            ("eip2930", tx2930),
        ]
    }

    #[test]
    fn allows_fee_at_and_under_cap() {
        let p = fee_policy();
        for (name, build) in fee_builders() {
            assert_eq!(p.evaluate_evm(&build(21_000, 10)), Ok(()), "{name}");
            assert_eq!(p.evaluate_evm(&build(21_000, 9)), Ok(()), "{name}");
            assert_eq!(p.evaluate_evm(&build(1, 210_000)), Ok(()), "{name}");
        }
    }

    #[test]
    fn rejects_fee_over_cap() {
        let p = fee_policy();
        for (name, build) in fee_builders() {
            // One wei per gas over, and one gas over: both exceed the cap.
            for t in [build(21_000, 11), build(21_001, 10), build(1, 210_001)] {
                let d = p.evaluate_evm(&t).unwrap_err();
                assert_eq!(d.rule, "evm.max_fee_wei", "{name}");
                assert!(d.message.contains("210000"), "{name}: {}", d.message);
            }
        }
    }

    #[test]
    fn rejects_fee_over_cap_using_max_fee_not_priority_fee() {
        // EIP-1559: a tiny priority fee does not hide a huge maxFeePerGas.
        let p = fee_policy();
        let t = TxEip1559 {
            chain_id: 1,
            nonce: 0,
            gas_limit: 21_000,
            max_fee_per_gas: 1_000_000,
            max_priority_fee_per_gas: 0,
            to: TxKind::Call(dest().into()),
            value: U256::ZERO,
            input: Bytes::new(),
            access_list: Default::default(),
        };
        let mut out = Vec::new();
        t.encode_for_signing(&mut out);
        let tx = decode_unsigned(&out).unwrap();
        assert_eq!(p.evaluate_evm(&tx).unwrap_err().rule, "evm.max_fee_wei");
    }

    #[test]
    fn rejects_fee_that_would_wrap_a_narrow_product() {
        // u64::MAX × u128::MAX = 2^192 - 2^128 - 2^64 + 1. Wrapped to u128 it is
        // 2^128 - 2^64 + 1, under a u128::MAX cap; computed in 256 bits it is far over.
        let cap = U256::from(u128::MAX);
        let p = Policy::parse(&format!(
            r#"{{"enabled":true,"evm":{{"chain_ids":[1],"allowed_destinations":["{DEST}"],
               "max_value_wei":"1","max_fee_wei":"{cap}"}}}}"#
        ))
        .unwrap();
        for (name, build) in fee_builders() {
            let t = build(u64::MAX, u128::MAX);
            assert!(
                U256::from(u128::from(u64::MAX).wrapping_mul(u128::MAX)) <= cap,
                "the wrapped product would pass"
            );
            assert_eq!(
                p.evaluate_evm(&t).unwrap_err().rule,
                "evm.max_fee_wei",
                "{name}"
            );
        }
        // With the cap at U256::MAX the same transaction is allowed: the product is
        // exact, not saturated into a refusal.
        let p = Policy::parse(&format!(
            r#"{{"enabled":true,"evm":{{"chain_ids":[1],"allowed_destinations":["{DEST}"],
               "max_value_wei":"1","max_fee_wei":"{}"}}}}"#,
            U256::MAX
        ))
        .unwrap();
        for (name, build) in fee_builders() {
            assert_eq!(
                p.evaluate_evm(&build(u64::MAX, u128::MAX)),
                Ok(()),
                "{name}"
            );
        }
    }

    #[test]
    fn absent_fee_cap_means_no_cap() {
        // Today's policies (no max_fee_wei) keep their meaning: any fee passes.
        let p = evm_policy();
        assert_eq!(p.evm().unwrap().max_fee_wei, None);
        for (name, build) in fee_builders() {
            assert_eq!(
                p.evaluate_evm(&build(u64::MAX, u128::MAX)),
                Ok(()),
                "{name}"
            );
        }
    }

    #[test]
    fn fee_cap_canonical_json_round_trips() {
        let p = Policy::parse(&format!(
            r#"{{"enabled":true,"evm":{{"max_fee_wei":"000123","chain_ids":[1],
               "allowed_destinations":["{DEST}"]}}}}"#
        ))
        .unwrap();
        let canonical = p.canonical_json();
        assert_eq!(
            canonical,
            format!(
                r#"{{"version":1,"enabled":true,"evm":{{"chain_ids":[1],"allowed_destinations":["{DEST}"],"max_value_wei":"0","max_fee_wei":"123"}}}}"#
            )
        );
        let again = Policy::parse(&canonical).unwrap();
        assert_eq!(again, p);
        assert_eq!(again.evm().unwrap().max_fee_wei, Some(U256::from(123u8)));
        assert_eq!(again.canonical_json(), canonical);
        // A cap of 0 is a cap (only zero-fee transactions), distinct from no cap.
        let zero = Policy::parse(r#"{"enabled":true,"evm":{"max_fee_wei":"0"}}"#).unwrap();
        assert_eq!(zero.evm().unwrap().max_fee_wei, Some(U256::ZERO));
        assert!(zero.canonical_json().contains(r#""max_fee_wei":"0""#));
    }

    #[test]
    fn rejects_invalid_fee_cap() {
        let cases = [
            r#""1e18""#.to_string(),
            r#""0x10""#.to_string(),
            r#""""#.to_string(),
            r#"" 1""#.to_string(),
            r#""1.5""#.to_string(),
            r#""-1""#.to_string(),
            r#""+1""#.to_string(),
            "1000".to_string(), // a JSON number, not a string
            "-1".to_string(),
            "null".to_string(),                 // refused: would read as "no cap"
            format!(r#""{}""#, "9".repeat(78)), // > 2^256
            // 2^256 exactly: one over U256::MAX
            r#""115792089237316195423570985008687907853269984665640564039457584007913129639936""#
                .to_string(),
            format!(r#""{}""#, "1".repeat(79)), // too many digits
        ];
        for v in &cases {
            let json = format!(r#"{{"enabled":true,"evm":{{"max_fee_wei":{v}}}}}"#);
            match Policy::parse(&json) {
                Err(SignerError::InvalidPolicy { .. }) => {}
                other => panic!("accepted or wrong error for {v}: {other:?}"),
            }
        }
        let max = U256::MAX.to_string();
        let p = Policy::parse(&format!(
            r#"{{"enabled":true,"evm":{{"max_fee_wei":"{max}"}}}}"#
        ))
        .unwrap();
        assert_eq!(p.evm().unwrap().max_fee_wei, Some(U256::MAX));
    }

    /// The module docs' example as it stood before `max_fee_wei` existed, concretised,
    /// with its canonical bytes computed by the code of that time. Its canonical bytes are pinned: they are
    /// what the MAC of every stored policy covers, so no new optional field may change
    /// them (see "Rules for maintainers").
    #[test]
    fn canonical_json_of_the_module_example_is_pinned() {
        let p = Policy::parse(&format!(
            r#"{{
              "version": 1,
              "enabled": true,
              "evm": {{
                "chain_ids": [1, 8453],
                "allowed_destinations": ["{DEST_EIP55}"],
                "max_value_wei": "1000000000000000000"
              }},
              "solana": {{
                "allowed_programs": ["11111111111111111111111111111111"],
                "max_lamports_per_transfer": 1000000000
              }}
            }}"#
        ))
        .unwrap();
        assert_eq!(
            p.canonical_json(),
            concat!(
                r#"{"version":1,"enabled":true,"evm":{"chain_ids":[1,8453],"#,
                r#""allowed_destinations":["0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"],"#,
                r#""max_value_wei":"1000000000000000000"},"solana":{"allowed_programs":"#,
                r#"["11111111111111111111111111111111"],"max_lamports_per_transfer":1000000000}}"#
            )
        );
    }

    #[test]
    fn denial_display_names_the_rule() {
        let d = deny("evm.chain_ids", "chain id 5 is not allowed");
        assert_eq!(
            d.to_string(),
            "denied by policy rule evm.chain_ids: chain id 5 is not allowed"
        );
    }
}
