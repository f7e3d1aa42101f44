//! Message kinds: `evm_message` (EIP-191), `evm_typed_data` (EIP-712), `evm_digest`
//! and `solana_offchain_message`. Owns `evm.messages`, `evm.typed_data`,
//! `evm.allow_raw_digest` and `solana.offchain_messages`.

use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::U256;
use serde::{Deserialize, Serialize};

use super::fields::{check_len, evm_address, present};
use super::limits::Charges;
use super::tokens::{check_grant, Grant};
use super::{deny, Denial, EvmRules, EvmV2Rules, Rule};
use crate::address::{eip55, evm_lower_hex};
use crate::evm::{PersonalMessage, TypedDataPayload};
use crate::SignerError;

/// `evm.messages` / `solana.offchain_messages`: which message texts may be signed.
/// A message is allowed when it equals an `exact` entry, starts with a `prefixes`
/// entry, or, with `hex_hash`, is exactly `0x` followed by 64 lowercase hex digits
/// (the text form of a 32-byte hash, which Flashbots' `X-Flashbots-Signature` signs
/// for a request body).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageRules {
    /// Messages allowed exactly (UTF-8 text).
    pub exact: BTreeSet<String>,
    /// Prefixes a message may start with.
    pub prefixes: BTreeSet<String>,
    /// Whether `0x` + 64 lowercase hex digits is allowed.
    pub hex_hash: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MessagesDoc {
    #[serde(default)]
    exact: Vec<String>,
    #[serde(default)]
    prefixes: Vec<String>,
    #[serde(default)]
    hex_hash: bool,
}

/// Longest entry of a message allow-list, in bytes.
const MAX_MESSAGE_ENTRY: usize = 1024;

impl MessageRules {
    pub(crate) fn parse(field: &str, doc: MessagesDoc) -> Result<MessageRules, SignerError> {
        check_len(&format!("{field}.exact"), doc.exact.len())?;
        check_len(&format!("{field}.prefixes"), doc.prefixes.len())?;
        for e in doc.exact.iter().chain(&doc.prefixes) {
            if e.is_empty() || e.len() > MAX_MESSAGE_ENTRY {
                return Err(SignerError::policy(format!(
                    "{field}: entries must be 1 to {MAX_MESSAGE_ENTRY} bytes"
                )));
            }
        }
        Ok(MessageRules {
            exact: doc.exact.into_iter().collect(),
            prefixes: doc.prefixes.into_iter().collect(),
            hex_hash: doc.hex_hash,
        })
    }

    pub(crate) fn doc(&self) -> MessagesDoc {
        MessagesDoc {
            exact: self.exact.iter().cloned().collect(),
            prefixes: self.prefixes.iter().cloned().collect(),
            hex_hash: self.hex_hash,
        }
    }

    /// Whether `message` is allowed.
    pub fn allows(&self, message: &[u8]) -> bool {
        let is_hex_hash = message.len() == 66
            && message.starts_with(b"0x")
            && message[2..]
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
        self.exact.iter().any(|e| e.as_bytes() == message)
            || self
                .prefixes
                .iter()
                .any(|p| message.starts_with(p.as_bytes()))
            || (self.hex_hash && is_hex_hash)
    }
}

/// One allowed EIP-712 domain: every field it states must be present in the request's
/// domain with that value; a field it omits may be anything (or absent).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainRule {
    /// `name`.
    pub name: Option<String>,
    /// `version`.
    pub version: Option<String>,
    /// `chainId`.
    pub chain_id: Option<u64>,
    /// `verifyingContract`.
    pub verifying_contract: Option<[u8; 20]>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DomainDoc {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    name: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    version: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    chain_id: Option<u64>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    verifying_contract: Option<String>,
}

impl DomainRule {
    fn matches(&self, t: &TypedDataPayload) -> bool {
        self.name
            .as_deref()
            .is_none_or(|n| t.domain_name() == Some(n))
            && self
                .version
                .as_deref()
                .is_none_or(|v| t.domain_version() == Some(v))
            && self
                .chain_id
                .is_none_or(|c| t.domain_chain_id() == Some(U256::from(c)))
            && self
                .verifying_contract
                .is_none_or(|a| t.domain_verifying_contract() == Some(a))
    }
}

/// `evm.typed_data`: the EIP-712 domains and primary types that may be signed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TypedDataRules {
    /// Allowed domains (one must match).
    pub domains: BTreeSet<DomainRule>,
    /// Allowed primary types, by name.
    pub primary_types: BTreeSet<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TypedDataDoc {
    #[serde(default)]
    domains: Vec<DomainDoc>,
    #[serde(default)]
    primary_types: Vec<String>,
}

impl TypedDataRules {
    pub(crate) fn parse(doc: TypedDataDoc) -> Result<TypedDataRules, SignerError> {
        check_len("evm.typed_data.domains", doc.domains.len())?;
        check_len("evm.typed_data.primary_types", doc.primary_types.len())?;
        let mut domains = BTreeSet::new();
        for d in doc.domains {
            if d.name.is_none()
                && d.version.is_none()
                && d.chain_id.is_none()
                && d.verifying_contract.is_none()
            {
                return Err(SignerError::policy(
                    "evm.typed_data.domains: an entry must state at least one field",
                ));
            }
            if d.chain_id == Some(0) {
                return Err(SignerError::policy(
                    "evm.typed_data.domains: chain id 0 is not a chain",
                ));
            }
            domains.insert(DomainRule {
                name: d.name,
                version: d.version,
                chain_id: d.chain_id,
                verifying_contract: d
                    .verifying_contract
                    .map(|a| evm_address("evm.typed_data.domains.verifying_contract", &a))
                    .transpose()?,
            });
        }
        if doc
            .primary_types
            .iter()
            .any(|t| t.is_empty() || t.len() > 256)
        {
            return Err(SignerError::policy(
                "evm.typed_data.primary_types: names must be 1 to 256 bytes",
            ));
        }
        Ok(TypedDataRules {
            domains,
            primary_types: doc.primary_types.into_iter().collect(),
        })
    }

    pub(crate) fn doc(&self) -> TypedDataDoc {
        TypedDataDoc {
            domains: self
                .domains
                .iter()
                .map(|d| DomainDoc {
                    name: d.name.clone(),
                    version: d.version.clone(),
                    chain_id: d.chain_id,
                    verifying_contract: d.verifying_contract.as_ref().map(evm_lower_hex),
                })
                .collect(),
            primary_types: self.primary_types.iter().cloned().collect(),
        }
    }
}

/// A short, printable rendering of a message for a denial.
pub(crate) fn show(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    format!("{:?}", text.chars().take(80).collect::<String>())
}

pub(super) fn evaluate_message(v2: &EvmV2Rules, m: &PersonalMessage) -> Result<(), Denial> {
    match &v2.messages {
        Some(rules) if !rules.allows(m.bytes()) => Err(deny(
            Rule::EvmMessages,
            format!("message {} is not allowed", show(m.bytes())),
        )),
        _ => Ok(()),
    }
}

pub(super) fn evaluate_typed_data(
    rules: &EvmRules,
    v2: &EvmV2Rules,
    t: &TypedDataPayload,
    charges: &mut Charges,
) -> Result<(), Denial> {
    let describe = || {
        format!(
            "domain {{name: {:?}, version: {:?}, chainId: {}, verifyingContract: {}}}",
            t.domain_name().unwrap_or("-"),
            t.domain_version().unwrap_or("-"),
            t.domain_chain_id().map_or("-".into(), |c| c.to_string()),
            t.domain_verifying_contract()
                .map_or("-".into(), |a| eip55(&a)),
        )
    };
    let td = v2.typed_data.as_ref().ok_or_else(|| {
        deny(
            Rule::EvmTypedDataDomains,
            "the policy has no evm.typed_data section: no typed data is allowed",
        )
    })?;
    if !td.domains.iter().any(|d| d.matches(t)) {
        return Err(deny(
            Rule::EvmTypedDataDomains,
            format!("{} is not allowed", describe()),
        ));
    }
    if !td.primary_types.contains(t.primary_type()) {
        return Err(deny(
            Rule::EvmTypedDataPrimaryTypes,
            format!("primary type {:.64} is not allowed", t.primary_type()),
        ));
    }
    let chain_id = match t.domain_chain_id() {
        Some(c) => {
            let id = u64::try_from(c)
                .ok()
                .filter(|id| rules.chain_ids.contains(id));
            Some(id.ok_or_else(|| {
                deny(
                    Rule::EvmChainIds,
                    format!("typed data for chain id {c} is not allowed"),
                )
            })?)
        }
        None => None,
    };
    if let Some(permit) = t.permit() {
        let chain_id = chain_id.ok_or_else(|| {
            deny(
                Rule::EvmTypedDataDomains,
                format!("a {} permit needs a domain chainId", permit.kind),
            )
        })?;
        // One check per token, on the sum of its grants: Permit2's batch transfer
        // moves every `permitted[i]` (a token may repeat), so entries of one token
        // each under `max_per_tx` must not together pass it. Any unlimited entry
        // makes the token's grant unlimited.
        let mut per_token: BTreeMap<[u8; 20], (U256, bool)> = BTreeMap::new();
        for g in &permit.grants {
            let (sum, unlimited) = per_token.entry(g.token).or_insert((U256::ZERO, false));
            *sum = sum.saturating_add(g.amount);
            *unlimited |= g.unlimited;
        }
        for (token, (amount, unlimited)) in per_token {
            check_grant(
                v2,
                chain_id,
                token,
                Grant::Approval {
                    spender: permit.spender,
                },
                amount,
                unlimited,
                charges,
            )?;
        }
    }
    Ok(())
}

pub(super) fn evaluate_digest(v2: &EvmV2Rules) -> Result<(), Denial> {
    if v2.allow_raw_digest {
        Ok(())
    } else {
        Err(deny(
            Rule::EvmAllowRawDigest,
            "raw digests are not allowed (evm.allow_raw_digest is not true)",
        ))
    }
}
