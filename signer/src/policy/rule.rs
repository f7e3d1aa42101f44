//! The names of the policy rules a denial cites (STYLE rule 18): programs match on
//! these strings (`PolicyDenied.rule` on the wire, `"rule"` in the API), so they are
//! an enum, pinned by a test that lists them all.

/// A policy rule, as a [`crate::Denial`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// The key is disabled.
    Enabled,
    /// The policy has no `evm` section.
    Evm,
    /// `evm.chain_ids`.
    EvmChainIds,
    /// A contract creation (no rule allows one yet).
    EvmContractCreation,
    /// `evm.allowed_destinations`.
    EvmAllowedDestinations,
    /// `evm.max_value_wei`.
    EvmMaxValueWei,
    /// `evm.max_fee_wei`.
    EvmMaxFeeWei,
    /// The policy has no `solana` section.
    Solana,
    /// The key is not a required signer of the message.
    SolanaSigner,
    /// `solana.allowed_programs`.
    SolanaAllowedPrograms,
    /// `solana.system_instructions`: a System instruction not allowed by name, not
    /// decodable, or a `CreateAccount` whose new account does not sign.
    SolanaSystemInstructions,
    /// A Compute Budget instruction that is unknown, malformed or duplicated.
    SolanaComputeBudget,
    /// `solana.max_lamports_per_transfer`.
    SolanaMaxLamportsPerTransfer,
    /// `solana.max_lamports_per_transaction`.
    SolanaMaxLamportsPerTransaction,
    /// `solana.max_fee_lamports`.
    SolanaMaxFeeLamports,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 15] = [
        Rule::Enabled,
        Rule::Evm,
        Rule::EvmChainIds,
        Rule::EvmContractCreation,
        Rule::EvmAllowedDestinations,
        Rule::EvmMaxValueWei,
        Rule::EvmMaxFeeWei,
        Rule::Solana,
        Rule::SolanaSigner,
        Rule::SolanaAllowedPrograms,
        Rule::SolanaSystemInstructions,
        Rule::SolanaComputeBudget,
        Rule::SolanaMaxLamportsPerTransfer,
        Rule::SolanaMaxLamportsPerTransaction,
        Rule::SolanaMaxFeeLamports,
    ];

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Enabled => "enabled",
            Rule::Evm => "evm",
            Rule::EvmChainIds => "evm.chain_ids",
            Rule::EvmContractCreation => "evm.contract_creation",
            Rule::EvmAllowedDestinations => "evm.allowed_destinations",
            Rule::EvmMaxValueWei => "evm.max_value_wei",
            Rule::EvmMaxFeeWei => "evm.max_fee_wei",
            Rule::Solana => "solana",
            Rule::SolanaSigner => "solana.signer",
            Rule::SolanaAllowedPrograms => "solana.allowed_programs",
            Rule::SolanaSystemInstructions => "solana.system_instructions",
            Rule::SolanaComputeBudget => "solana.compute_budget",
            Rule::SolanaMaxLamportsPerTransfer => "solana.max_lamports_per_transfer",
            Rule::SolanaMaxLamportsPerTransaction => "solana.max_lamports_per_transaction",
            Rule::SolanaMaxFeeLamports => "solana.max_fee_lamports",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_are_pinned() {
        let names: Vec<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "enabled",
                "evm",
                "evm.chain_ids",
                "evm.contract_creation",
                "evm.allowed_destinations",
                "evm.max_value_wei",
                "evm.max_fee_wei",
                "solana",
                "solana.signer",
                "solana.allowed_programs",
                "solana.system_instructions",
                "solana.compute_budget",
                "solana.max_lamports_per_transfer",
                "solana.max_lamports_per_transaction",
                "solana.max_fee_lamports",
            ]
        );
    }
}
