//! The `evm` section: its version 2 document part ([`EvmV2Rules`]) and the
//! evaluation of EVM transactions, version 1 ([`Policy::evaluate_evm`]) and version 2.

use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::U256;
use serde::{Deserialize, Serialize};

use super::fields::{
    check_len, evm_address, evm_addresses, present, unique_map, wei, wei_window, Window, WindowDoc,
};
use super::limits::{Charges, LimitId};
use super::messages::{MessageRules, MessagesDoc, TypedDataDoc, TypedDataRules};
use super::tokens::{check_call, parse_tokens, tokens_doc, TokenDoc, TokenRules};
use super::{deny, Denial, EvmRules, Policy, Rule};
use crate::address::{eip55, evm_lower_hex};
use crate::evm::calldata::{Erc20Call, ERC20_SELECTORS};
use crate::evm::EvmTx;
use crate::SignerError;

/// The rules version 2 adds to the `evm` section (module docs of [`super`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EvmV2Rules {
    /// Whether a contract creation (no `to`) may be signed.
    pub contract_creation: bool,
    /// Per contract, the function selectors its call data may start with (the four
    /// ERC-20 selectors are not listed here: they go through `tokens`).
    pub function_selectors: BTreeMap<[u8; 20], BTreeSet<[u8; 4]>>,
    /// Native value per rolling window, per chain.
    pub max_value_wei_per_window: Option<Window<U256>>,
    /// Cap on `maxFeePerGas` (EIP-1559) or `gasPrice`, in wei.
    pub max_fee_per_gas: Option<U256>,
    /// Cap on `maxPriorityFeePerGas` (EIP-1559) or `gasPrice`, in wei.
    pub max_priority_fee_per_gas: Option<U256>,
    /// Cap on the gas limit.
    pub gas_limit: Option<u64>,
    /// ERC-20 tokens that may be moved or approved, with their caps.
    pub tokens: BTreeMap<[u8; 20], TokenRules>,
    /// Who may receive an ERC-20 transfer.
    pub recipients: BTreeSet<[u8; 20]>,
    /// Who may be approved to spend (by `approve`, `increaseAllowance` or a permit).
    pub spenders: BTreeSet<[u8; 20]>,
    /// Whether an unlimited approval or permit may be signed.
    pub allow_unlimited_approve: bool,
    /// EIP-191 messages allowed; `None`: any message (when `evm_message` is allowed).
    pub messages: Option<MessageRules>,
    /// EIP-712 domains and primary types allowed; `None`: no typed data.
    pub typed_data: Option<TypedDataRules>,
    /// Whether raw digests may be signed. **Bypasses every other rule.**
    pub allow_raw_digest: bool,
}

/// The `evm` section of a version 2 document; field order is the canonical order.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EvmV2Doc {
    #[serde(default)]
    chain_ids: Vec<u64>,
    #[serde(default)]
    allowed_destinations: Vec<String>,
    #[serde(default)]
    contract_creation: bool,
    #[serde(default, deserialize_with = "unique_map")]
    function_selectors: BTreeMap<String, Vec<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    max_value_wei: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    max_value_wei_per_window: Option<WindowDoc<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    max_fee_wei: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    max_fee_per_gas: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    max_priority_fee_per_gas: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    gas_limit: Option<u64>,
    #[serde(default, deserialize_with = "unique_map")]
    tokens: BTreeMap<String, TokenDoc>,
    #[serde(default)]
    recipients: Vec<String>,
    #[serde(default)]
    spenders: Vec<String>,
    #[serde(default)]
    allow_unlimited_approve: bool,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    messages: Option<MessagesDoc>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    typed_data: Option<TypedDataDoc>,
    #[serde(default)]
    allow_raw_digest: bool,
}

fn selector(s: &str) -> Result<[u8; 4], SignerError> {
    let bad = || {
        SignerError::policy(format!(
            "evm.function_selectors: {s:.20} is not 0x + 8 hex digits"
        ))
    };
    let digits = s.strip_prefix("0x").ok_or_else(bad)?;
    let mut out = [0u8; 4];
    if digits.len() != 8 {
        return Err(bad());
    }
    hex::decode_to_slice(digits, &mut out).map_err(|_| bad())?;
    Ok(out)
}

pub(crate) fn parse_evm_v2(doc: EvmV2Doc) -> Result<EvmRules, SignerError> {
    check_len("evm.chain_ids", doc.chain_ids.len())?;
    if doc.chain_ids.contains(&0) {
        return Err(SignerError::policy(
            "evm.chain_ids: chain id 0 is not a chain",
        ));
    }
    check_len("evm.function_selectors", doc.function_selectors.len())?;
    let mut function_selectors = BTreeMap::new();
    for (addr, sels) in &doc.function_selectors {
        let contract = evm_address("evm.function_selectors", addr)?;
        check_len(&format!("evm.function_selectors.{addr}"), sels.len())?;
        let set = sels
            .iter()
            .map(|s| selector(s))
            .collect::<Result<BTreeSet<_>, _>>()?;
        if let Some(s) = set.iter().find(|s| ERC20_SELECTORS.contains(s)) {
            return Err(SignerError::policy(format!(
                "evm.function_selectors: 0x{} is an ERC-20 function; list the token in \
                 evm.tokens instead",
                hex::encode(s)
            )));
        }
        if function_selectors.insert(contract, set).is_some() {
            return Err(SignerError::policy(format!(
                "evm.function_selectors: {addr:.48} is listed twice"
            )));
        }
    }
    let opt_wei = |field: &str, v: &Option<String>| v.as_ref().map(|s| wei(field, s)).transpose();
    let v2 = EvmV2Rules {
        contract_creation: doc.contract_creation,
        function_selectors,
        max_value_wei_per_window: doc
            .max_value_wei_per_window
            .as_ref()
            .map(|w| wei_window("evm.max_value_wei_per_window", w))
            .transpose()?,
        max_fee_per_gas: opt_wei("evm.max_fee_per_gas", &doc.max_fee_per_gas)?,
        max_priority_fee_per_gas: opt_wei(
            "evm.max_priority_fee_per_gas",
            &doc.max_priority_fee_per_gas,
        )?,
        gas_limit: doc.gas_limit,
        tokens: parse_tokens(doc.tokens)?,
        recipients: evm_addresses("evm.recipients", &doc.recipients)?,
        spenders: evm_addresses("evm.spenders", &doc.spenders)?,
        allow_unlimited_approve: doc.allow_unlimited_approve,
        messages: doc
            .messages
            .map(|m| MessageRules::parse("evm.messages", m))
            .transpose()?,
        typed_data: doc.typed_data.map(TypedDataRules::parse).transpose()?,
        allow_raw_digest: doc.allow_raw_digest,
    };
    Ok(EvmRules {
        chain_ids: doc.chain_ids.into_iter().collect(),
        allowed_destinations: evm_addresses("evm.allowed_destinations", &doc.allowed_destinations)?,
        max_value_wei: opt_wei("evm.max_value_wei", &doc.max_value_wei)?.unwrap_or(U256::ZERO),
        max_fee_wei: opt_wei("evm.max_fee_wei", &doc.max_fee_wei)?,
        v2: Some(v2),
    })
}

pub(crate) fn evm_v2_doc(rules: &EvmRules, v2: &EvmV2Rules) -> EvmV2Doc {
    let hexes = |set: &BTreeSet<[u8; 20]>| set.iter().map(evm_lower_hex).collect();
    EvmV2Doc {
        chain_ids: rules.chain_ids.iter().copied().collect(),
        allowed_destinations: hexes(&rules.allowed_destinations),
        contract_creation: v2.contract_creation,
        function_selectors: v2
            .function_selectors
            .iter()
            .map(|(a, sels)| {
                (
                    evm_lower_hex(a),
                    sels.iter()
                        .map(|s| format!("0x{}", hex::encode(s)))
                        .collect(),
                )
            })
            .collect(),
        max_value_wei: Some(rules.max_value_wei.to_string()),
        max_value_wei_per_window: v2.max_value_wei_per_window.map(|w| w.doc()),
        max_fee_wei: rules.max_fee_wei.map(|f| f.to_string()),
        max_fee_per_gas: v2.max_fee_per_gas.map(|f| f.to_string()),
        max_priority_fee_per_gas: v2.max_priority_fee_per_gas.map(|f| f.to_string()),
        gas_limit: v2.gas_limit,
        tokens: tokens_doc(&v2.tokens),
        recipients: hexes(&v2.recipients),
        spenders: hexes(&v2.spenders),
        allow_unlimited_approve: v2.allow_unlimited_approve,
        messages: v2.messages.as_ref().map(MessageRules::doc),
        typed_data: v2.typed_data.as_ref().map(TypedDataRules::doc),
        allow_raw_digest: v2.allow_raw_digest,
    }
}

/// `evm.chain_ids`, `evm.max_value_wei`, `evm.max_fee_wei`: the checks both versions
/// make.
fn check_chain_value_fee(rules: &EvmRules, tx: &EvmTx) -> Result<(), Denial> {
    if !rules.chain_ids.contains(&tx.chain_id()) {
        return Err(deny(
            Rule::EvmChainIds,
            format!("chain id {} is not allowed", tx.chain_id()),
        ));
    }
    if tx.value() > rules.max_value_wei {
        return Err(deny(
            Rule::EvmMaxValueWei,
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
                Rule::EvmMaxFeeWei,
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

impl Policy {
    /// Evaluates a **version 1** policy on a decoded EVM transaction. Checks, in
    /// order: enabled, `evm` section present, chain id listed, not a contract creation,
    /// destination listed, `value ≤ max_value_wei`, and, when `max_fee_wei` is set,
    /// `gas_limit × max_fee_per_gas ≤ max_fee_wei` ([`EvmTx::max_fee_wei`]).
    ///
    /// A version 2 policy is refused here (rule `allowed_kinds`): it needs the clock
    /// and the rolling limits of [`Policy::evaluate`].
    ///
    /// # Errors
    /// The first [`Denial`] met.
    pub fn evaluate_evm(&self, tx: &EvmTx) -> Result<(), Denial> {
        if !self.enabled {
            return Err(deny(Rule::Enabled, "the key is disabled"));
        }
        if self.version != 1 {
            return Err(super::needs_evaluate());
        }
        let rules = self
            .evm
            .as_ref()
            .ok_or_else(|| deny(Rule::Evm, "the policy allows no EVM transactions"))?;
        evaluate_v1(rules, tx)
    }
}

pub(super) fn evaluate_v1(rules: &EvmRules, tx: &EvmTx) -> Result<(), Denial> {
    if !rules.chain_ids.contains(&tx.chain_id()) {
        return Err(deny(
            Rule::EvmChainIds,
            format!("chain id {} is not allowed", tx.chain_id()),
        ));
    }
    let to = tx.to().ok_or_else(|| {
        deny(
            Rule::EvmContractCreation,
            "contract creation is not allowed",
        )
    })?;
    if !rules.allowed_destinations.contains(&to) {
        return Err(deny(
            Rule::EvmAllowedDestinations,
            format!("destination {} is not allowed", eip55(&to)),
        ));
    }
    check_chain_value_fee(rules, tx)
}

/// Version 2: chain, fees, value, destination, call data (ERC-20 decoded, other
/// selectors by `function_selectors`), then the native value window.
pub(super) fn evaluate_v2(
    rules: &EvmRules,
    v2: &EvmV2Rules,
    tx: &EvmTx,
    charges: &mut Charges,
) -> Result<(), Denial> {
    check_chain_value_fee(rules, tx)?;
    let over = |rule: Rule, what: &str, value: U256, cap: U256| {
        deny(rule, format!("{what} {value} exceeds the maximum {cap}"))
    };
    if let Some(cap) = v2.max_fee_per_gas {
        let v = U256::from(tx.max_fee_per_gas());
        if v > cap {
            return Err(over(Rule::EvmMaxFeePerGas, "max fee per gas", v, cap));
        }
    }
    if let Some(cap) = v2.max_priority_fee_per_gas {
        let v = U256::from(tx.max_priority_fee_per_gas());
        if v > cap {
            return Err(over(
                Rule::EvmMaxPriorityFeePerGas,
                "max priority fee per gas",
                v,
                cap,
            ));
        }
    }
    if let Some(cap) = v2.gas_limit {
        if tx.gas_limit() > cap {
            return Err(over(
                Rule::EvmGasLimit,
                "gas limit",
                U256::from(tx.gas_limit()),
                U256::from(cap),
            ));
        }
    }
    match tx.to() {
        None => {
            if !v2.contract_creation {
                return Err(deny(
                    Rule::EvmContractCreation,
                    "contract creation is not allowed (evm.contract_creation is not true)",
                ));
            }
        }
        Some(to) => {
            let is_token = v2.tokens.contains_key(&to);
            if !is_token && !rules.allowed_destinations.contains(&to) {
                return Err(deny(
                    Rule::EvmAllowedDestinations,
                    format!("destination {} is not allowed", eip55(&to)),
                ));
            }
            check_calldata(v2, tx.chain_id(), to, tx.input(), charges)?;
        }
    }
    if let Some(w) = v2.max_value_wei_per_window {
        if !tx.value().is_zero() {
            charges.add(
                LimitId::EvmNative {
                    chain_id: tx.chain_id(),
                },
                tx.value(),
                w.max,
                w.window_secs,
            )?;
        }
    }
    Ok(())
}

fn check_calldata(
    v2: &EvmV2Rules,
    chain_id: u64,
    to: [u8; 20],
    input: &[u8],
    charges: &mut Charges,
) -> Result<(), Denial> {
    if input.is_empty() {
        return Ok(());
    }
    match Erc20Call::decode(input) {
        Err(e) => Err(deny(Rule::EvmTokens, e.to_string())),
        Ok(Some(call)) => {
            if !v2.tokens.contains_key(&to) {
                return Err(deny(
                    Rule::EvmTokens,
                    format!(
                        "ERC-20 {} to {}, which is not in evm.tokens",
                        call.name(),
                        eip55(&to)
                    ),
                ));
            }
            check_call(v2, chain_id, to, &call, charges)
        }
        Ok(None) => {
            let allowed = input
                .get(..4)
                .and_then(|s| <[u8; 4]>::try_from(s).ok())
                .is_some_and(|sel| {
                    v2.function_selectors
                        .get(&to)
                        .is_some_and(|set| set.contains(&sel))
                });
            if allowed {
                Ok(())
            } else {
                Err(deny(
                    Rule::EvmFunctionSelectors,
                    format!(
                        "call data 0x{} to {} is not an allowed function",
                        hex::encode(input.get(..4).unwrap_or(input)),
                        eip55(&to)
                    ),
                ))
            }
        }
    }
}
