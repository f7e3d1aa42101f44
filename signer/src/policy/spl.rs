//! SPL Token and Token-2022 in version 2: `solana.spl_tokens` (caps per mint per
//! transaction and per window). Of the two programs' instructions only
//! `TransferChecked` is signed: it names its mint, which must be listed and visible
//! (not from an address lookup table); its destination token account must be in
//! `solana.allowed_destinations`. A plain `Transfer` names no mint, so no mint cap
//! could apply to it: refused. Every other instruction (`Approve`, `SetAuthority`,
//! `CloseAccount`, `Burn`, ...) is refused by name.

use std::collections::BTreeMap;

use alloy_primitives::U256;
use serde::{Deserialize, Serialize};

use super::fields::{check_len, present, solana_address, u64_window, Window, WindowDoc};
use super::limits::{Charges, LimitId};
use super::solana::{check_destination, SolanaV2Rules};
use super::{deny, Denial, Rule};
use crate::solana::spl_token::{is_token_program, SplTokenInstruction};
use crate::solana::SolanaPayload;
use crate::SignerError;

/// The rules of one mint (`solana.spl_tokens.<mint>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplRules {
    /// The most one message may move, in base units (summed over its transfers).
    pub max_per_tx: u64,
    /// The most per rolling window, if set.
    pub per_window: Option<Window<u64>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SplDoc {
    max_per_tx: u64,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    per_window: Option<WindowDoc<u64>>,
}

pub(crate) fn parse_spl_tokens(
    docs: BTreeMap<String, SplDoc>,
) -> Result<BTreeMap<[u8; 32], SplRules>, SignerError> {
    check_len("solana.spl_tokens", docs.len())?;
    docs.iter()
        .map(|(mint, d)| {
            Ok((
                solana_address("solana.spl_tokens", mint)?,
                SplRules {
                    max_per_tx: d.max_per_tx,
                    per_window: d
                        .per_window
                        .as_ref()
                        .map(|w| u64_window(&format!("solana.spl_tokens.{mint}.per_window"), w))
                        .transpose()?,
                },
            ))
        })
        .collect()
}

pub(crate) fn spl_tokens_doc(tokens: &BTreeMap<[u8; 32], SplRules>) -> BTreeMap<String, SplDoc> {
    tokens
        .iter()
        .map(|(m, r)| {
            (
                crate::address::solana_address(m),
                SplDoc {
                    max_per_tx: r.max_per_tx,
                    per_window: r.per_window.map(|w| w.doc()),
                },
            )
        })
        .collect()
}

pub(super) fn check_spl(
    v2: &SolanaV2Rules,
    p: &SolanaPayload,
    charges: &mut Charges,
) -> Result<(), Denial> {
    let mut per_mint: BTreeMap<[u8; 32], u128> = BTreeMap::new();
    for ix in p
        .instructions()
        .iter()
        .filter(|ix| is_token_program(&ix.program_id))
    {
        let decoded = SplTokenInstruction::decode(&ix.data)
            .map_err(|e| deny(Rule::SolanaSplInstructions, e.to_string()))?;
        let amount = match decoded {
            SplTokenInstruction::TransferChecked { amount, .. } => amount,
            SplTokenInstruction::Transfer { .. } => {
                return Err(deny(
                    Rule::SolanaSplTokens,
                    "an SPL Transfer names no mint, so no mint cap can apply; use \
                     TransferChecked",
                ))
            }
            SplTokenInstruction::Other { .. } => {
                return Err(deny(
                    Rule::SolanaSplInstructions,
                    format!("SPL Token instruction {} is not allowed", decoded.name()),
                ))
            }
        };
        let mint = decoded
            .mint_position()
            .and_then(|pos| p.instruction_account(ix, pos))
            .ok_or_else(|| {
                deny(
                    Rule::SolanaSplTokens,
                    "the mint of a TransferChecked is loaded from an address lookup table \
                     and cannot be checked",
                )
            })?;
        let to = decoded
            .destination_position()
            .and_then(|pos| p.instruction_account(ix, pos));
        check_destination(v2, to, "an SPL transfer")?;
        let rules = v2.spl_tokens.get(&mint).ok_or_else(|| {
            deny(
                Rule::SolanaSplTokens,
                format!(
                    "mint {} is not in solana.spl_tokens",
                    crate::address::solana_address(&mint)
                ),
            )
        })?;
        let sum = per_mint.entry(mint).or_default();
        *sum += u128::from(amount);
        if *sum > u128::from(rules.max_per_tx) {
            return Err(deny(
                Rule::SolanaSplTokensMaxPerTx,
                format!(
                    "{sum} of mint {} exceeds the maximum {} per message",
                    crate::address::solana_address(&mint),
                    rules.max_per_tx
                ),
            ));
        }
    }
    for (mint, sum) in per_mint {
        if let Some(w) = v2.spl_tokens.get(&mint).and_then(|r| r.per_window) {
            charges.add(
                LimitId::Spl { mint },
                U256::from(sum),
                U256::from(w.max),
                w.window_secs,
            )?;
        }
    }
    Ok(())
}
