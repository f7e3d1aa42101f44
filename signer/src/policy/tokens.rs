//! ERC-20 tokens on EVM chains: `evm.tokens` (per-token caps per transaction and per
//! window), `evm.recipients`, `evm.spenders` and `evm.allow_unlimited_approve`, applied
//! to decoded ERC-20 calls and to EIP-712 permits alike.

use std::collections::BTreeMap;

use alloy_primitives::U256;
use serde::{Deserialize, Serialize};

use super::fields::{evm_address, present, wei, wei_window, Window, WindowDoc};
use super::limits::{Charges, LimitId};
use super::{deny, Denial, EvmV2Rules, Rule};
use crate::address::eip55;
use crate::evm::calldata::Erc20Call;
use crate::SignerError;

/// The rules of one token (`evm.tokens.<token address>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRules {
    /// The most one request may move or approve, in base units.
    pub max_per_tx: U256,
    /// The most per rolling window, in base units, if set.
    pub per_window: Option<Window<U256>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenDoc {
    max_per_tx: String,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    per_window: Option<WindowDoc<String>>,
}

pub(crate) fn parse_tokens(
    docs: BTreeMap<String, TokenDoc>,
) -> Result<BTreeMap<[u8; 20], TokenRules>, SignerError> {
    super::fields::check_len("evm.tokens", docs.len())?;
    let mut out = BTreeMap::new();
    for (addr, doc) in docs {
        let token = evm_address("evm.tokens", &addr)?;
        let field = format!("evm.tokens.{addr}");
        let rules = TokenRules {
            max_per_tx: wei(&format!("{field}.max_per_tx"), &doc.max_per_tx)?,
            per_window: doc
                .per_window
                .map(|w| wei_window(&format!("{field}.per_window"), &w))
                .transpose()?,
        };
        if out.insert(token, rules).is_some() {
            return Err(SignerError::policy(format!(
                "evm.tokens: {addr:.48} is listed twice"
            )));
        }
    }
    Ok(out)
}

pub(crate) fn tokens_doc(tokens: &BTreeMap<[u8; 20], TokenRules>) -> BTreeMap<String, TokenDoc> {
    tokens
        .iter()
        .map(|(t, r)| {
            (
                crate::address::evm_lower_hex(t),
                TokenDoc {
                    max_per_tx: r.max_per_tx.to_string(),
                    per_window: r.per_window.map(|w| w.doc()),
                },
            )
        })
        .collect()
}

/// What a call or permit does with a token.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Grant {
    /// Moves tokens to `to`.
    Transfer { to: [u8; 20] },
    /// Lets `spender` move tokens.
    Approval { spender: [u8; 20] },
}

/// Checks one token movement or approval and charges its window. Order: token
/// listed; recipient or spender listed (an approval of 0, a revocation, needs no
/// listed spender); unlimited only for approvals with `allow_unlimited_approve` (and
/// then charged nothing: it is outside every cap, which is why it is off by
/// default); amount ≤ `max_per_tx`; charge `per_window`.
pub(crate) fn check_grant(
    v2: &EvmV2Rules,
    chain_id: u64,
    token: [u8; 20],
    grant: Grant,
    amount: U256,
    unlimited: bool,
    charges: &mut Charges,
) -> Result<(), Denial> {
    let rules = v2.tokens.get(&token).ok_or_else(|| {
        deny(
            Rule::EvmTokens,
            format!("token {} is not in evm.tokens", eip55(&token)),
        )
    })?;
    match grant {
        Grant::Transfer { to } => {
            if !v2.recipients.contains(&to) {
                return Err(deny(
                    Rule::EvmRecipients,
                    format!("recipient {} is not in evm.recipients", eip55(&to)),
                ));
            }
        }
        Grant::Approval { spender } => {
            if amount.is_zero() {
                return Ok(());
            }
            if !v2.spenders.contains(&spender) {
                return Err(deny(
                    Rule::EvmSpenders,
                    format!("spender {} is not in evm.spenders", eip55(&spender)),
                ));
            }
            if unlimited {
                return if v2.allow_unlimited_approve {
                    Ok(())
                } else {
                    Err(deny(
                        Rule::EvmUnlimitedApprove,
                        format!(
                            "an unlimited approval ({amount}) of {} is not allowed",
                            eip55(&token)
                        ),
                    ))
                };
            }
        }
    }
    if amount > rules.max_per_tx {
        return Err(deny(
            Rule::EvmTokensMaxPerTx,
            format!(
                "{amount} of token {} exceeds the maximum {} per request",
                eip55(&token),
                rules.max_per_tx
            ),
        ));
    }
    if let Some(w) = rules.per_window {
        charges.add(
            LimitId::Erc20 { chain_id, token },
            amount,
            w.max,
            w.window_secs,
        )?;
    }
    Ok(())
}

/// Checks a decoded ERC-20 call to `token`.
pub(crate) fn check_call(
    v2: &EvmV2Rules,
    chain_id: u64,
    token: [u8; 20],
    call: &Erc20Call,
    charges: &mut Charges,
) -> Result<(), Denial> {
    let (grant, amount) = match *call {
        Erc20Call::Transfer { to, amount } | Erc20Call::TransferFrom { to, amount, .. } => {
            (Grant::Transfer { to }, amount)
        }
        Erc20Call::Approve { spender, amount }
        | Erc20Call::IncreaseAllowance { spender, amount } => (Grant::Approval { spender }, amount),
    };
    let unlimited = matches!(grant, Grant::Approval { .. }) && amount == U256::MAX;
    check_grant(v2, chain_id, token, grant, amount, unlimited, charges)
}
