//! Evaluation of the `evm` section on a decoded EVM transaction.

use super::{deny, Denial, Policy, Rule};
use crate::evm::EvmTx;

impl Policy {
    /// Evaluates the policy on a decoded EVM transaction. Checks, in order: enabled,
    /// `evm` section present, chain id listed, not a contract creation (no rule allows
    /// one yet), destination listed, `value ≤ max_value_wei`, and, when `max_fee_wei`
    /// is set, `gas_limit × max_fee_per_gas ≤ max_fee_wei` ([`EvmTx::max_fee_wei`]).
    ///
    /// # Errors
    /// The first [`Denial`] met.
    pub fn evaluate_evm(&self, tx: &EvmTx) -> Result<(), Denial> {
        if !self.enabled {
            return Err(deny(Rule::Enabled, "the key is disabled"));
        }
        let rules = self
            .evm
            .as_ref()
            .ok_or_else(|| deny(Rule::Evm, "the policy allows no EVM transactions"))?;
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
                format!("destination {} is not allowed", crate::secret::eip55(&to)),
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
}
