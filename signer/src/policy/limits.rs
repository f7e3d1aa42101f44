//! What an approved request spends against the policy's **rolling** limits.
//!
//! The engine checks every per-request rule itself; a limit over a rolling window
//! needs state (what was spent in the last `window_secs`), which the enclave keeps.
//! So an [`Approval`] lists [`Charge`]s, one per windowed limit the request touches,
//! and the enclave reserves each against its window before signing and commits or
//! releases it afterwards. Each charge's amount is already checked to be ≤ its cap
//! (a request that alone exceeds a window's cap is denied here).
//!
//! A [`LimitId`] names a window independently of the policy's wording, as a stable
//! string ([`LimitId`]'s `Display` / `FromStr`, also its serde form):
//!
//! | limit | id | rule cited when full |
//! |---|---|---|
//! | `rate_limit` | `signatures` | `rate_limit` |
//! | `evm.max_value_wei_per_window` | `evm:<chain id>:native` | `evm.max_value_wei_per_window` |
//! | `evm.tokens.<token>.per_window` | `evm:<chain id>:erc20:<0x lowercase token>` | `evm.tokens.per_window` |
//! | `solana.max_lamports_per_window` | `solana:native` | `solana.max_lamports_per_window` |
//! | `solana.spl_tokens.<mint>.per_window` | `solana:spl:<base58 mint>` | `solana.spl_tokens.per_window` |

use std::collections::BTreeMap;
use std::str::FromStr;

use alloy_primitives::U256;
use serde::{Deserialize, Serialize};

use super::{deny, Denial, Rule};
use crate::address::{evm_lower_hex, parse_evm_address, parse_solana_address, solana_address};

/// A rolling-window limit, by what it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LimitId {
    /// Signatures of the key (`rate_limit`).
    Signatures,
    /// Native value (wei) sent on an EVM chain.
    EvmNative {
        /// The EIP-155 chain id.
        chain_id: u64,
    },
    /// An ERC-20 token (base units) on an EVM chain.
    Erc20 {
        /// The EIP-155 chain id.
        chain_id: u64,
        /// The token contract.
        token: [u8; 20],
    },
    /// Lamports moved by System instructions.
    SolanaNative,
    /// An SPL token (base units), by mint.
    Spl {
        /// The mint.
        mint: [u8; 32],
    },
}

impl LimitId {
    /// The rule a denial cites when this window is full.
    pub fn rule(&self) -> Rule {
        match self {
            Self::Signatures => Rule::RateLimit,
            Self::EvmNative { .. } => Rule::EvmMaxValueWeiPerWindow,
            Self::Erc20 { .. } => Rule::EvmTokensPerWindow,
            Self::SolanaNative => Rule::SolanaMaxLamportsPerWindow,
            Self::Spl { .. } => Rule::SolanaSplTokensPerWindow,
        }
    }
}

impl core::fmt::Display for LimitId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Signatures => f.write_str("signatures"),
            Self::EvmNative { chain_id } => write!(f, "evm:{chain_id}:native"),
            Self::Erc20 { chain_id, token } => {
                write!(f, "evm:{chain_id}:erc20:{}", evm_lower_hex(token))
            }
            Self::SolanaNative => f.write_str("solana:native"),
            Self::Spl { mint } => write!(f, "solana:spl:{}", solana_address(mint)),
        }
    }
}

/// A string that is not a [`LimitId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a limit id: {0:.100}")]
pub struct BadLimitId(String);

impl FromStr for LimitId {
    type Err = BadLimitId;

    fn from_str(s: &str) -> Result<LimitId, BadLimitId> {
        let bad = || BadLimitId(s.to_owned());
        let parts: Vec<&str> = s.split(':').collect();
        let chain = |c: &str| {
            c.parse::<u64>()
                .ok()
                .filter(|id| *id > 0 && id.to_string() == c)
        };
        let id = match parts.as_slice() {
            ["signatures"] => LimitId::Signatures,
            ["evm", c, "native"] => LimitId::EvmNative {
                chain_id: chain(c).ok_or_else(bad)?,
            },
            ["evm", c, "erc20", t] if t.bytes().all(|b| !b.is_ascii_uppercase()) => {
                LimitId::Erc20 {
                    chain_id: chain(c).ok_or_else(bad)?,
                    token: parse_evm_address(t).ok_or_else(bad)?,
                }
            }
            ["solana", "native"] => LimitId::SolanaNative,
            ["solana", "spl", m] => LimitId::Spl {
                mint: parse_solana_address(m).ok_or_else(bad)?,
            },
            _ => return Err(bad()),
        };
        Ok(id)
    }
}

impl Serialize for LimitId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LimitId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<LimitId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One amount a request spends against one rolling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    /// Which window.
    pub limit: LimitId,
    /// How much this request spends (signatures, wei, lamports or token base units).
    pub amount: U256,
    /// The most the window may hold, from the policy.
    pub cap: U256,
    /// The window's length, in seconds.
    pub window_secs: u64,
}

/// A request the policy allows, and what it spends against the rolling windows (at
/// most one charge per [`LimitId`], in `LimitId` order).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Approval {
    /// The charges; empty for a policy without windowed limits.
    pub charges: Vec<Charge>,
}

/// Collects charges during one evaluation, summing per limit.
#[derive(Default)]
pub(crate) struct Charges(BTreeMap<LimitId, Charge>);

impl Charges {
    /// Adds `amount` to `limit`'s charge; denies (with the limit's rule) as soon as the
    /// request alone exceeds the cap.
    pub(crate) fn add(
        &mut self,
        limit: LimitId,
        amount: U256,
        cap: U256,
        window_secs: u64,
    ) -> Result<(), Denial> {
        let entry = self.0.entry(limit).or_insert(Charge {
            limit,
            amount: U256::ZERO,
            cap,
            window_secs,
        });
        entry.amount = entry.amount.saturating_add(amount);
        if entry.amount > entry.cap {
            return Err(deny(
                limit.rule(),
                format!(
                    "this request alone spends {} against {limit}, over the window's cap {}",
                    entry.amount, entry.cap
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn into_approval(self) -> Approval {
        Approval {
            charges: self.0.into_values().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_ids_round_trip_as_pinned_strings() {
        let cases = [
            (LimitId::Signatures, "signatures"),
            (LimitId::EvmNative { chain_id: 8453 }, "evm:8453:native"),
            (
                LimitId::Erc20 {
                    chain_id: 1,
                    token: [0xab; 20],
                },
                "evm:1:erc20:0xabababababababababababababababababababab",
            ),
            (LimitId::SolanaNative, "solana:native"),
            (
                LimitId::Spl { mint: [0; 32] },
                "solana:spl:11111111111111111111111111111111",
            ),
        ];
        for (id, s) in cases {
            assert_eq!(id.to_string(), s);
            assert_eq!(s.parse::<LimitId>().unwrap(), id);
            assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{s}\""));
            assert_eq!(
                serde_json::from_str::<LimitId>(&format!("\"{s}\"")).unwrap(),
                id
            );
        }
    }

    #[test]
    fn rejects_other_limit_id_spellings() {
        for s in [
            "",
            "Signatures",
            "evm:0:native",
            "evm:01:native",
            "evm:1:erc20:0xABABABABABABABABABABABABABABABABABABABAB",
            "evm:1:erc20:abababababababababababababababababababab",
            "solana:spl:1111",
            "solana:native:x",
        ] {
            assert!(s.parse::<LimitId>().is_err(), "{s}");
        }
    }

    #[test]
    fn charges_sum_per_limit_and_deny_over_cap() {
        let mut c = Charges::default();
        let id = LimitId::SolanaNative;
        c.add(id, U256::from(3u8), U256::from(5u8), 60).unwrap();
        c.add(id, U256::from(2u8), U256::from(5u8), 60).unwrap();
        let d = c.add(id, U256::from(1u8), U256::from(5u8), 60).unwrap_err();
        assert_eq!(d.rule, "solana.max_lamports_per_window");
        let mut c = Charges::default();
        c.add(LimitId::Signatures, U256::from(1u8), U256::from(9u8), 1)
            .unwrap();
        assert_eq!(c.into_approval().charges[0].amount, U256::from(1u8));
    }
}
