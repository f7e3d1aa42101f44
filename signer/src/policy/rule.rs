//! The names of the policy rules a denial cites (STYLE rule 18): programs match on
//! these strings (`PolicyDenied.rule` on the wire, `"rule"` in the API), so they are
//! an enum, pinned by a test that lists them all. A name is the path of the policy
//! field that refused (`evm.tokens.max_per_tx` for `evm.tokens.<token>.max_per_tx`).
//! Names are never renamed or reused; new rules are appended.

/// A policy rule, as a [`crate::Denial`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Rule {
    /// The key is disabled.
    Enabled,
    /// `not_before`: the request came before the policy's validity window.
    NotBefore,
    /// `not_after`: the request came after the policy's validity window.
    NotAfter,
    /// `allowed_kinds` (v2), or a kind a version 1 policy cannot allow.
    AllowedKinds,
    /// `rate_limit`: signatures per rolling window (enforced by the enclave).
    RateLimit,
    /// The policy has no `evm` section.
    Evm,
    /// `evm.chain_ids`.
    EvmChainIds,
    /// A contract creation (v2: unless `evm.contract_creation` is true).
    EvmContractCreation,
    /// `evm.allowed_destinations`.
    EvmAllowedDestinations,
    /// `evm.max_value_wei`.
    EvmMaxValueWei,
    /// `evm.max_value_wei_per_window` (rolling, enforced by the enclave).
    EvmMaxValueWeiPerWindow,
    /// `evm.max_fee_wei`.
    EvmMaxFeeWei,
    /// `evm.max_fee_per_gas`.
    EvmMaxFeePerGas,
    /// `evm.max_priority_fee_per_gas`.
    EvmMaxPriorityFeePerGas,
    /// `evm.gas_limit`.
    EvmGasLimit,
    /// `evm.function_selectors`: call data to a contract whose selector is not listed.
    EvmFunctionSelectors,
    /// `evm.tokens`: an ERC-20 call or permit for a token not listed, or call data that does not decode.
    EvmTokens,
    /// `evm.tokens.<token>.max_per_tx`.
    EvmTokensMaxPerTx,
    /// `evm.tokens.<token>.per_window` (rolling, enforced by the enclave).
    EvmTokensPerWindow,
    /// `evm.recipients`: the receiver of an ERC-20 transfer.
    EvmRecipients,
    /// `evm.spenders`: the spender of an approval or permit.
    EvmSpenders,
    /// An unlimited approval or permit without `evm.allow_unlimited_approve`.
    EvmUnlimitedApprove,
    /// `evm.messages`: an EIP-191 message not allowed.
    EvmMessages,
    /// `evm.typed_data.domains`.
    EvmTypedDataDomains,
    /// `evm.typed_data.primary_types`.
    EvmTypedDataPrimaryTypes,
    /// A raw digest without `evm.allow_raw_digest`.
    EvmAllowRawDigest,
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
    /// `solana.max_lamports_per_window` (rolling, enforced by the enclave).
    SolanaMaxLamportsPerWindow,
    /// `solana.max_fee_lamports`.
    SolanaMaxFeeLamports,
    /// The fee payer is neither the key nor in `solana.allowed_fee_payers`.
    SolanaFeePayer,
    /// `solana.allowed_destinations` (also: a destination loaded from an address
    /// lookup table, which cannot be checked).
    SolanaAllowedDestinations,
    /// `solana.max_compute_unit_price`.
    SolanaMaxComputeUnitPrice,
    /// `solana.max_compute_unit_limit`.
    SolanaMaxComputeUnitLimit,
    /// An SPL Token / Token-2022 instruction other than `TransferChecked` (v2).
    SolanaSplInstructions,
    /// `solana.spl_tokens`: a mint not listed, not visible (address table), or a plain
    /// `Transfer`, which names no mint.
    SolanaSplTokens,
    /// `solana.spl_tokens.<mint>.max_per_tx`.
    SolanaSplTokensMaxPerTx,
    /// `solana.spl_tokens.<mint>.per_window` (rolling, enforced by the enclave).
    SolanaSplTokensPerWindow,
    /// `solana.offchain_messages`: an off-chain message not allowed.
    SolanaOffchainMessages,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 44] = [
        Rule::Enabled,
        Rule::NotBefore,
        Rule::NotAfter,
        Rule::AllowedKinds,
        Rule::RateLimit,
        Rule::Evm,
        Rule::EvmChainIds,
        Rule::EvmContractCreation,
        Rule::EvmAllowedDestinations,
        Rule::EvmMaxValueWei,
        Rule::EvmMaxValueWeiPerWindow,
        Rule::EvmMaxFeeWei,
        Rule::EvmMaxFeePerGas,
        Rule::EvmMaxPriorityFeePerGas,
        Rule::EvmGasLimit,
        Rule::EvmFunctionSelectors,
        Rule::EvmTokens,
        Rule::EvmTokensMaxPerTx,
        Rule::EvmTokensPerWindow,
        Rule::EvmRecipients,
        Rule::EvmSpenders,
        Rule::EvmUnlimitedApprove,
        Rule::EvmMessages,
        Rule::EvmTypedDataDomains,
        Rule::EvmTypedDataPrimaryTypes,
        Rule::EvmAllowRawDigest,
        Rule::Solana,
        Rule::SolanaSigner,
        Rule::SolanaAllowedPrograms,
        Rule::SolanaSystemInstructions,
        Rule::SolanaComputeBudget,
        Rule::SolanaMaxLamportsPerTransfer,
        Rule::SolanaMaxLamportsPerTransaction,
        Rule::SolanaMaxLamportsPerWindow,
        Rule::SolanaMaxFeeLamports,
        Rule::SolanaFeePayer,
        Rule::SolanaAllowedDestinations,
        Rule::SolanaMaxComputeUnitPrice,
        Rule::SolanaMaxComputeUnitLimit,
        Rule::SolanaSplInstructions,
        Rule::SolanaSplTokens,
        Rule::SolanaSplTokensMaxPerTx,
        Rule::SolanaSplTokensPerWindow,
        Rule::SolanaOffchainMessages,
    ];

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Enabled => "enabled",
            Rule::NotBefore => "not_before",
            Rule::NotAfter => "not_after",
            Rule::AllowedKinds => "allowed_kinds",
            Rule::RateLimit => "rate_limit",
            Rule::Evm => "evm",
            Rule::EvmChainIds => "evm.chain_ids",
            Rule::EvmContractCreation => "evm.contract_creation",
            Rule::EvmAllowedDestinations => "evm.allowed_destinations",
            Rule::EvmMaxValueWei => "evm.max_value_wei",
            Rule::EvmMaxValueWeiPerWindow => "evm.max_value_wei_per_window",
            Rule::EvmMaxFeeWei => "evm.max_fee_wei",
            Rule::EvmMaxFeePerGas => "evm.max_fee_per_gas",
            Rule::EvmMaxPriorityFeePerGas => "evm.max_priority_fee_per_gas",
            Rule::EvmGasLimit => "evm.gas_limit",
            Rule::EvmFunctionSelectors => "evm.function_selectors",
            Rule::EvmTokens => "evm.tokens",
            Rule::EvmTokensMaxPerTx => "evm.tokens.max_per_tx",
            Rule::EvmTokensPerWindow => "evm.tokens.per_window",
            Rule::EvmRecipients => "evm.recipients",
            Rule::EvmSpenders => "evm.spenders",
            Rule::EvmUnlimitedApprove => "evm.allow_unlimited_approve",
            Rule::EvmMessages => "evm.messages",
            Rule::EvmTypedDataDomains => "evm.typed_data.domains",
            Rule::EvmTypedDataPrimaryTypes => "evm.typed_data.primary_types",
            Rule::EvmAllowRawDigest => "evm.allow_raw_digest",
            Rule::Solana => "solana",
            Rule::SolanaSigner => "solana.signer",
            Rule::SolanaAllowedPrograms => "solana.allowed_programs",
            Rule::SolanaSystemInstructions => "solana.system_instructions",
            Rule::SolanaComputeBudget => "solana.compute_budget",
            Rule::SolanaMaxLamportsPerTransfer => "solana.max_lamports_per_transfer",
            Rule::SolanaMaxLamportsPerTransaction => "solana.max_lamports_per_transaction",
            Rule::SolanaMaxLamportsPerWindow => "solana.max_lamports_per_window",
            Rule::SolanaMaxFeeLamports => "solana.max_fee_lamports",
            Rule::SolanaFeePayer => "solana.fee_payer",
            Rule::SolanaAllowedDestinations => "solana.allowed_destinations",
            Rule::SolanaMaxComputeUnitPrice => "solana.max_compute_unit_price",
            Rule::SolanaMaxComputeUnitLimit => "solana.max_compute_unit_limit",
            Rule::SolanaSplInstructions => "solana.spl_instructions",
            Rule::SolanaSplTokens => "solana.spl_tokens",
            Rule::SolanaSplTokensMaxPerTx => "solana.spl_tokens.max_per_tx",
            Rule::SolanaSplTokensPerWindow => "solana.spl_tokens.per_window",
            Rule::SolanaOffchainMessages => "solana.offchain_messages",
        }
    }

    /// Reads a stable name; `None` for anything else.
    pub fn from_name(s: &str) -> Option<Rule> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl core::fmt::Display for Rule {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
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
                "not_before",
                "not_after",
                "allowed_kinds",
                "rate_limit",
                "evm",
                "evm.chain_ids",
                "evm.contract_creation",
                "evm.allowed_destinations",
                "evm.max_value_wei",
                "evm.max_value_wei_per_window",
                "evm.max_fee_wei",
                "evm.max_fee_per_gas",
                "evm.max_priority_fee_per_gas",
                "evm.gas_limit",
                "evm.function_selectors",
                "evm.tokens",
                "evm.tokens.max_per_tx",
                "evm.tokens.per_window",
                "evm.recipients",
                "evm.spenders",
                "evm.allow_unlimited_approve",
                "evm.messages",
                "evm.typed_data.domains",
                "evm.typed_data.primary_types",
                "evm.allow_raw_digest",
                "solana",
                "solana.signer",
                "solana.allowed_programs",
                "solana.system_instructions",
                "solana.compute_budget",
                "solana.max_lamports_per_transfer",
                "solana.max_lamports_per_transaction",
                "solana.max_lamports_per_window",
                "solana.max_fee_lamports",
                "solana.fee_payer",
                "solana.allowed_destinations",
                "solana.max_compute_unit_price",
                "solana.max_compute_unit_limit",
                "solana.spl_instructions",
                "solana.spl_tokens",
                "solana.spl_tokens.max_per_tx",
                "solana.spl_tokens.per_window",
                "solana.offchain_messages",
            ]
        );
        for r in Rule::ALL {
            assert_eq!(Rule::from_name(r.as_str()), Some(r));
        }
    }
}
