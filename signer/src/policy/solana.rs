//! Evaluation of the `solana` section on a decoded Solana payload: the program list,
//! the System allow-list, Compute Budget, the lamport caps and the fee cap (module
//! docs of [`super`]).

use super::{deny, Denial, Policy, Rule, SolanaRules};
use crate::solana::{SolanaPayload, SystemInstruction, SystemInstructionName};

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
    /// Evaluates the policy on a decoded Solana payload to be signed by `signer`.
    /// Checks, in order: enabled, `solana` section present, `signer` is a required
    /// signer, every instruction's program is allowed, every System instruction decodes
    /// and is allowed by name (a `CreateAccount` funds a fresh signing account), every
    /// Compute Budget instruction decodes and none repeats, each lamport movement is ≤
    /// `max_lamports_per_transfer`, their sum is ≤ `max_lamports_per_transaction` (when
    /// set), and the most the message can pay in fees is ≤ `max_fee_lamports` (when
    /// set).
    ///
    /// # Errors
    /// The first [`Denial`] met.
    pub fn evaluate_solana(&self, p: &SolanaPayload, signer: &[u8; 32]) -> Result<(), Denial> {
        if !self.enabled {
            return Err(deny(Rule::Enabled, "the key is disabled"));
        }
        let rules = self
            .solana
            .as_ref()
            .ok_or_else(|| deny(Rule::Solana, "the policy allows no Solana transactions"))?;
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
        self.check_system_instructions(rules, p, signer)?;
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

    /// Every System instruction must decode, be allowed by name, and, for
    /// `CreateAccount`, create a fresh account: one that signs the message and is not
    /// the key.
    fn check_system_instructions(
        &self,
        rules: &SolanaRules,
        p: &SolanaPayload,
        signer: &[u8; 32],
    ) -> Result<(), Denial> {
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
