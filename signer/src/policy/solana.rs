//! The `solana` section: its version 2 document part ([`SolanaV2Rules`]) and the
//! evaluation of Solana transactions (the program list, the System allow-list,
//! Compute Budget, the lamport caps and the fee cap; in version 2 also the fee payer,
//! destinations, compute caps, SPL tokens and the lamport window) and off-chain
//! messages (module docs of [`super`]).

use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::U256;
use serde::{Deserialize, Serialize};

use super::fields::{present, solana_addresses, u64_window, unique_map, Window, WindowDoc};
use super::limits::{Charges, LimitId};
use super::messages::{show, MessageRules, MessagesDoc};
use super::spl::{check_spl, parse_spl_tokens, spl_tokens_doc, SplDoc, SplRules};
use super::{deny, Denial, Policy, Rule, SolanaRules};
use crate::address::solana_address;
use crate::solana::{OffchainMessage, SolanaPayload, SystemInstruction, SystemInstructionName};
use crate::SignerError;

/// The rules version 2 adds to the `solana` section (module docs of [`super`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SolanaV2Rules {
    /// Who may receive lamports (every System instruction that moves them, a
    /// `CreateAccount`'s new account included) and SPL tokens (the destination token
    /// account).
    pub allowed_destinations: BTreeSet<[u8; 32]>,
    /// Fee payers other than the key itself.
    pub allowed_fee_payers: BTreeSet<[u8; 32]>,
    /// Lamports moved per rolling window.
    pub max_lamports_per_window: Option<Window<u64>>,
    /// Cap on `SetComputeUnitPrice`, in micro-lamports per unit.
    pub max_compute_unit_price: Option<u64>,
    /// Cap on the compute unit limit (set, or the runtime's default for the message).
    pub max_compute_unit_limit: Option<u32>,
    /// SPL mints that may move, with their caps.
    pub spl_tokens: BTreeMap<[u8; 32], SplRules>,
    /// Off-chain messages allowed; `None`: any (when the kind is allowed).
    pub offchain_messages: Option<MessageRules>,
}

/// The `solana` section of a version 2 document; field order is the canonical order.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SolanaV2Doc {
    #[serde(default)]
    allowed_programs: Vec<String>,
    #[serde(default)]
    max_lamports_per_transfer: u64,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    system_instructions: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    max_lamports_per_transaction: Option<u64>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    max_lamports_per_window: Option<WindowDoc<u64>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    max_fee_lamports: Option<u64>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    max_compute_unit_price: Option<u64>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    max_compute_unit_limit: Option<u32>,
    #[serde(default)]
    allowed_destinations: Vec<String>,
    #[serde(default)]
    allowed_fee_payers: Vec<String>,
    #[serde(default, deserialize_with = "unique_map")]
    spl_tokens: BTreeMap<String, SplDoc>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    offchain_messages: Option<MessagesDoc>,
}

pub(crate) fn parse_solana_v2(doc: SolanaV2Doc) -> Result<SolanaRules, SignerError> {
    let mut base = super::parse_solana(super::SolanaDoc {
        allowed_programs: doc.allowed_programs,
        max_lamports_per_transfer: doc.max_lamports_per_transfer,
        system_instructions: doc.system_instructions,
        max_lamports_per_transaction: doc.max_lamports_per_transaction,
        max_fee_lamports: doc.max_fee_lamports,
    })?;
    base.v2 = Some(SolanaV2Rules {
        allowed_destinations: solana_addresses(
            "solana.allowed_destinations",
            &doc.allowed_destinations,
        )?,
        allowed_fee_payers: solana_addresses("solana.allowed_fee_payers", &doc.allowed_fee_payers)?,
        max_lamports_per_window: doc
            .max_lamports_per_window
            .as_ref()
            .map(|w| u64_window("solana.max_lamports_per_window", w))
            .transpose()?,
        max_compute_unit_price: doc.max_compute_unit_price,
        max_compute_unit_limit: doc.max_compute_unit_limit,
        spl_tokens: parse_spl_tokens(doc.spl_tokens)?,
        offchain_messages: doc
            .offchain_messages
            .map(|m| MessageRules::parse("solana.offchain_messages", m))
            .transpose()?,
    });
    Ok(base)
}

pub(crate) fn solana_v2_doc(rules: &SolanaRules, v2: &SolanaV2Rules) -> SolanaV2Doc {
    let b58 = |set: &BTreeSet<[u8; 32]>| set.iter().map(solana_address).collect();
    SolanaV2Doc {
        allowed_programs: b58(&rules.allowed_programs),
        max_lamports_per_transfer: rules.max_lamports_per_transfer,
        system_instructions: rules
            .system_instructions
            .as_ref()
            .map(|set| set.iter().map(|n| n.as_str().to_owned()).collect()),
        max_lamports_per_transaction: rules.max_lamports_per_transaction,
        max_lamports_per_window: v2.max_lamports_per_window.map(|w| w.doc()),
        max_fee_lamports: rules.max_fee_lamports,
        max_compute_unit_price: v2.max_compute_unit_price,
        max_compute_unit_limit: v2.max_compute_unit_limit,
        allowed_destinations: b58(&v2.allowed_destinations),
        allowed_fee_payers: b58(&v2.allowed_fee_payers),
        spl_tokens: spl_tokens_doc(&v2.spl_tokens),
        offchain_messages: v2.offchain_messages.as_ref().map(MessageRules::doc),
    }
}

impl SolanaRules {
    /// Whether System instructions named `name` may be signed.
    pub fn allows_system(&self, name: SystemInstructionName) -> bool {
        match &self.system_instructions {
            Some(set) => set.contains(&name),
            None => SystemInstructionName::DEFAULT_ALLOWED.contains(&name),
        }
    }
}

impl Policy {
    /// Evaluates a **version 1** policy on a decoded Solana payload to be signed by
    /// `signer`. Checks, in order: enabled, `solana` section present, `signer` is a required
    /// signer, every instruction's program is allowed, every System instruction decodes
    /// and is allowed by name (a `CreateAccount` funds a fresh signing account), every
    /// Compute Budget instruction decodes and none repeats, each lamport movement is ≤
    /// `max_lamports_per_transfer`, their sum is ≤ `max_lamports_per_transaction` (when
    /// set), and the most the message can pay in fees is ≤ `max_fee_lamports` (when
    /// set).
    ///
    /// A version 2 policy is refused here (rule `allowed_kinds`): it needs the clock
    /// and the rolling limits of [`Policy::evaluate`].
    ///
    /// # Errors
    /// The first [`Denial`] met.
    pub fn evaluate_solana(&self, p: &SolanaPayload, signer: &[u8; 32]) -> Result<(), Denial> {
        if !self.enabled {
            return Err(deny(Rule::Enabled, "the key is disabled"));
        }
        if self.version != 1 {
            return Err(super::needs_evaluate());
        }
        let rules = self
            .solana
            .as_ref()
            .ok_or_else(|| deny(Rule::Solana, "the policy allows no Solana transactions"))?;
        evaluate_base(rules, p, signer)
    }
}

/// The checks of version 1, which version 2 makes too.
pub(super) fn evaluate_base(
    rules: &SolanaRules,
    p: &SolanaPayload,
    signer: &[u8; 32],
) -> Result<(), Denial> {
    {
        if !p.required_signers().contains(signer) {
            return Err(deny(
                Rule::SolanaSigner,
                "the key is not a required signer of this message",
            ));
        }
        for ix in p.instructions() {
            if !rules.allowed_programs.contains(&ix.program_id) {
                return Err(deny(
                    Rule::SolanaAllowedPrograms,
                    format!(
                        "program {} is not allowed",
                        bs58::encode(ix.program_id).into_string()
                    ),
                ));
            }
        }
        check_system_instructions(rules, p, signer)?;
        let fee = p
            .max_fee_lamports()
            .map_err(|e| deny(Rule::SolanaComputeBudget, e.to_string()))?;
        let transfers = p
            .system_transfers()
            .map_err(|e| deny(Rule::SolanaSystemInstructions, e.to_string()))?;
        let mut total: u128 = 0;
        for t in &transfers {
            if t.lamports > rules.max_lamports_per_transfer {
                return Err(deny(
                    Rule::SolanaMaxLamportsPerTransfer,
                    format!(
                        "{:?} of {} lamports exceeds the maximum {}",
                        t.kind, t.lamports, rules.max_lamports_per_transfer
                    ),
                ));
            }
            total += u128::from(t.lamports);
        }
        if let Some(cap) = rules.max_lamports_per_transaction {
            if total > u128::from(cap) {
                return Err(deny(
                    Rule::SolanaMaxLamportsPerTransaction,
                    format!(
                        "{} System transfers move {total} lamports in total, over the \
                         maximum {cap}",
                        transfers.len()
                    ),
                ));
            }
        }
        if let Some(cap) = rules.max_fee_lamports {
            if fee > u128::from(cap) {
                return Err(deny(
                    Rule::SolanaMaxFeeLamports,
                    format!(
                        "the message can pay up to {fee} lamports in fees, over the maximum {cap}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Every System instruction must decode, be allowed by name, and, for
/// `CreateAccount`, create a fresh account: one that signs the message and is not the
/// key.
fn check_system_instructions(
    rules: &SolanaRules,
    p: &SolanaPayload,
    signer: &[u8; 32],
) -> Result<(), Denial> {
    {
        let decoded = p
            .system_instructions()
            .map_err(|e| deny(Rule::SolanaSystemInstructions, e.to_string()))?;
        for (ix, d) in decoded {
            let name = d.name();
            if !rules.allows_system(name) {
                return Err(deny(
                    Rule::SolanaSystemInstructions,
                    format!(
                        "System Program instruction {} is not allowed",
                        name.as_str()
                    ),
                ));
            }
            if let SystemInstruction::CreateAccount { .. } = d {
                let new_account = p.instruction_account(ix, 1);
                let fresh =
                    new_account.is_some_and(|a| &a != signer && p.required_signers().contains(&a));
                if !fresh {
                    return Err(deny(
                        Rule::SolanaSystemInstructions,
                        "create_account must fund a new account that signs the message \
                         and is not the key",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Version 2, after [`evaluate_base`]: fee payer, compute caps, destinations (an
/// address-table account refuses), SPL Token instructions, and the lamport window.
pub(super) fn evaluate_v2(
    rules: &SolanaRules,
    v2: &SolanaV2Rules,
    p: &SolanaPayload,
    signer: &[u8; 32],
    charges: &mut Charges,
) -> Result<(), Denial> {
    evaluate_base(rules, p, signer)?;
    let payer = p.required_signers().first().copied().unwrap_or_default();
    if &payer != signer && !v2.allowed_fee_payers.contains(&payer) {
        return Err(deny(
            Rule::SolanaFeePayer,
            format!(
                "fee payer {} is neither the key nor allowed",
                solana_address(&payer)
            ),
        ));
    }
    let request = p
        .compute_budget()
        .map_err(|e| deny(Rule::SolanaComputeBudget, e.to_string()))?;
    if let (Some(cap), Some(price)) = (v2.max_compute_unit_price, request.unit_price) {
        if price > cap {
            return Err(deny(
                Rule::SolanaMaxComputeUnitPrice,
                format!("compute unit price {price} micro-lamports exceeds the maximum {cap}"),
            ));
        }
    }
    if let Some(cap) = v2.max_compute_unit_limit {
        let cb = p
            .instructions()
            .iter()
            .filter(|ix| ix.program_id == crate::solana::COMPUTE_BUDGET_PROGRAM_ID)
            .count();
        let others = p.instructions().len().saturating_sub(cb);
        let limit = request.effective_unit_limit(others, cb);
        if limit > cap {
            return Err(deny(
                Rule::SolanaMaxComputeUnitLimit,
                format!("compute unit limit {limit} exceeds the maximum {cap}"),
            ));
        }
    }
    let transfers = p
        .system_transfers()
        .map_err(|e| deny(Rule::SolanaSystemInstructions, e.to_string()))?;
    let mut total: u64 = 0;
    for t in &transfers {
        // Every lamport movement, a CreateAccount too: its new account signs the
        // message, so its key is held by whoever built the transaction (the untrusted
        // application), who can move the lamports on at once (a System-owned account
        // of 0 bytes). Funding it is a payment to that party.
        check_destination(v2, t.to, "lamports")?;
        total = total.saturating_add(t.lamports);
    }
    check_spl(v2, p, charges)?;
    if let Some(w) = v2.max_lamports_per_window {
        if total > 0 {
            charges.add(
                LimitId::SolanaNative,
                U256::from(total),
                U256::from(w.max),
                w.window_secs,
            )?;
        }
    }
    Ok(())
}

/// `solana.allowed_destinations` on an account that is `None` when loaded from an
/// address lookup table (and then cannot be checked: refused).
pub(super) fn check_destination(
    v2: &SolanaV2Rules,
    to: Option<[u8; 32]>,
    what: &str,
) -> Result<(), Denial> {
    match to {
        None => Err(deny(
            Rule::SolanaAllowedDestinations,
            format!(
                "the destination of {what} is loaded from an address lookup table and cannot                  be checked"
            ),
        )),
        Some(to) if !v2.allowed_destinations.contains(&to) => Err(deny(
            Rule::SolanaAllowedDestinations,
            format!("destination {} of {what} is not allowed", solana_address(&to)),
        )),
        Some(_) => Ok(()),
    }
}

/// `solana_offchain_message`: the key must be one of the message's signers, and the
/// body allowed by `solana.offchain_messages` when set.
pub(super) fn evaluate_offchain(
    v2: &SolanaV2Rules,
    m: &OffchainMessage,
    signer: &[u8; 32],
) -> Result<(), Denial> {
    if !m.signers().contains(signer) {
        return Err(deny(
            Rule::SolanaSigner,
            "the key is not a signer of this off-chain message",
        ));
    }
    match &v2.offchain_messages {
        Some(rules) if !rules.allows(m.body()) => Err(deny(
            Rule::SolanaOffchainMessages,
            format!("off-chain message {} is not allowed", show(m.body())),
        )),
        _ => Ok(()),
    }
}
