//! Rules every version 2 policy has, whatever the chain: the validity window
//! (`not_before`, `not_after`, Unix seconds, inclusive), `allowed_kinds` and
//! `rate_limit`.

use std::collections::BTreeSet;

use alloy_primitives::U256;
use serde::{Deserialize, Serialize};

use super::fields::{check_len, window_secs, Window};
use super::limits::{Charges, LimitId};
use super::{deny, Denial, Rule};
use crate::payload::PayloadKind;
use crate::SignerError;

/// The common rules. A version 1 policy has none of them (its kinds follow from its
/// sections: `evm_transaction` and `solana_transaction`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommonRules {
    /// No signature before this Unix time (seconds).
    pub not_before: Option<u64>,
    /// No signature after this Unix time (seconds).
    pub not_after: Option<u64>,
    /// The payload kinds that may be signed.
    pub allowed_kinds: BTreeSet<PayloadKind>,
    /// Signatures per rolling window.
    pub rate_limit: Option<Window<u64>>,
}

/// `rate_limit` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimitDoc {
    pub(crate) max_signatures: u64,
    pub(crate) window_secs: u64,
}

impl CommonRules {
    pub(crate) fn parse(
        not_before: Option<u64>,
        not_after: Option<u64>,
        allowed_kinds: &[String],
        rate_limit: Option<&RateLimitDoc>,
    ) -> Result<CommonRules, SignerError> {
        if let (Some(a), Some(b)) = (not_before, not_after) {
            if a > b {
                return Err(SignerError::policy(format!(
                    "not_before {a} is after not_after {b}"
                )));
            }
        }
        check_len("allowed_kinds", allowed_kinds.len())?;
        let allowed_kinds = allowed_kinds
            .iter()
            .map(|k| {
                PayloadKind::from_name(k).ok_or_else(|| {
                    SignerError::policy(format!("allowed_kinds: {k:.48} is not a payload kind"))
                })
            })
            .collect::<Result<BTreeSet<_>, _>>()?;
        let rate_limit = rate_limit
            .map(|r| {
                Ok::<_, SignerError>(Window {
                    max: r.max_signatures,
                    window_secs: window_secs("rate_limit", r.window_secs)?,
                })
            })
            .transpose()?;
        Ok(CommonRules {
            not_before,
            not_after,
            allowed_kinds,
            rate_limit,
        })
    }

    pub(crate) fn kinds_doc(&self) -> Vec<String> {
        self.allowed_kinds
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect()
    }

    pub(crate) fn rate_limit_doc(&self) -> Option<RateLimitDoc> {
        self.rate_limit.map(|w| RateLimitDoc {
            max_signatures: w.max,
            window_secs: w.window_secs,
        })
    }

    /// Kind, then time.
    pub(crate) fn check(&self, kind: PayloadKind, now_secs: u64) -> Result<(), Denial> {
        if !self.allowed_kinds.contains(&kind) {
            return Err(deny(
                Rule::AllowedKinds,
                format!("payload kind {} is not allowed", kind.as_str()),
            ));
        }
        if let Some(t) = self.not_before {
            if now_secs < t {
                return Err(deny(
                    Rule::NotBefore,
                    format!("time {now_secs} is before not_before {t}"),
                ));
            }
        }
        if let Some(t) = self.not_after {
            if now_secs > t {
                return Err(deny(
                    Rule::NotAfter,
                    format!("time {now_secs} is after not_after {t}"),
                ));
            }
        }
        Ok(())
    }

    /// The signature-count charge of `rate_limit`.
    pub(crate) fn charge(&self, charges: &mut Charges) -> Result<(), Denial> {
        if let Some(w) = self.rate_limit {
            charges.add(
                LimitId::Signatures,
                U256::from(1u8),
                U256::from(w.max),
                w.window_secs,
            )?;
        }
        Ok(())
    }
}
