//! Compute Budget Program instructions (`ComputeBudget111111111111111111111111111111`)
//! and the most a message can pay in fees.
//!
//! # Instructions
//!
//! Borsh, as `solana-compute-budget-interface`'s `ComputeBudgetInstruction`: a one-byte
//! variant, then the value little-endian. Decoding is exact (the data length must be
//! the variant's), index 0 (the removed `RequestUnitsDeprecated`) and anything unknown
//! are refused, and so is a second instruction of a kind the message already has
//! (agave refuses such a transaction with `DuplicateInstruction`).
//!
//! | index | instruction | value |
//! |---|---|---|
//! | 1 | `RequestHeapFrame` | `u32` bytes |
//! | 2 | `SetComputeUnitLimit` | `u32` compute units |
//! | 3 | `SetComputeUnitPrice` | `u64` micro-lamports per compute unit |
//! | 4 | `SetLoadedAccountsDataSizeLimit` | `u32` bytes |
//!
//! # The fee bound
//!
//! [`max_fee_lamports`] is `5000 × signatures + ceil(unit_limit × unit_price / 10⁶)`,
//! computed exactly in `u128`, where:
//! - *signatures* is the header's `num_required_signatures` plus, for every
//!   instruction to the ed25519, secp256k1 or secp256r1 signature-verify precompile,
//!   the signature count in the first byte of its data (agave's
//!   `get_num_signatures_in_instruction`); each is charged like a transaction
//!   signature;
//! - *unit_limit* is the `SetComputeUnitLimit` value as written (agave then caps it at
//!   1,400,000; not capping here can only over-estimate), or, with none, the default
//!   [`DEFAULT_INSTRUCTION_COMPUTE_UNIT_LIMIT`] × the number of non-Compute-Budget
//!   instructions, at most [`MAX_COMPUTE_UNIT_LIMIT`]. Agave
//!   (`compute-budget-instruction/src/compute_budget_instruction_details.rs`,
//!   `calculate_default_compute_unit_limit`, SIMD-0170) gives builtin-program
//!   instructions only 3,000 units by default, so counting 200,000 for every
//!   instruction is an over-estimate, which is the safe direction. Agave counts the
//!   Compute Budget instructions too (builtins, 3,000 units each), and so does this
//!   bound: without them, a message of Compute Budget instructions only was bounded at
//!   0 units while the runtime charged the price on 3,000 per instruction;
//! - *unit_price* is the `SetComputeUnitPrice` value, 0 without one. The
//!   prioritization fee rounds up (agave `solana-fee` `calculate_fee_details`).
//!
//! 5,000 lamports per signature is the fee rate every Solana cluster has used since
//! genesis (`solana-fee-calculator` `DEFAULT_TARGET_LAMPORTS_PER_SIGNATURE`); the
//! message does not state it.

use crate::SignerError;

/// The Compute Budget Program id, `ComputeBudget111111111111111111111111111111`.
pub const COMPUTE_BUDGET_PROGRAM_ID: [u8; 32] = [
    3, 6, 70, 111, 229, 33, 23, 50, 255, 236, 173, 186, 114, 195, 155, 231, 188, 140, 229, 187,
    197, 247, 18, 107, 44, 67, 155, 58, 64, 0, 0, 0,
];

/// The ed25519 signature-verify precompile, `Ed25519SigVerify111111111111111111111111111`.
pub const ED25519_PRECOMPILE_ID: [u8; 32] = [
    3, 125, 70, 214, 124, 147, 251, 190, 18, 249, 66, 143, 131, 141, 64, 255, 5, 112, 116, 73, 39,
    244, 138, 100, 252, 202, 112, 68, 128, 0, 0, 0,
];

/// The secp256k1 signature-verify precompile, `KeccakSecp256k11111111111111111111111111111`.
pub const SECP256K1_PRECOMPILE_ID: [u8; 32] = [
    4, 198, 252, 32, 240, 80, 204, 240, 85, 132, 215, 33, 28, 159, 140, 245, 158, 193, 71, 133,
    187, 22, 106, 30, 40, 48, 232, 18, 32, 0, 0, 0,
];

/// The secp256r1 signature-verify precompile, `Secp256r1SigVerify1111111111111111111111111`.
pub const SECP256R1_PRECOMPILE_ID: [u8; 32] = [
    6, 146, 13, 236, 47, 234, 113, 181, 183, 35, 129, 77, 116, 45, 169, 3, 28, 131, 231, 95, 219,
    121, 93, 86, 142, 117, 71, 128, 32, 0, 0, 0,
];

/// Lamports charged per signature.
pub const LAMPORTS_PER_SIGNATURE: u64 = 5_000;

/// Compute units a non-Compute-Budget instruction gets when no limit is set (agave
/// `DEFAULT_INSTRUCTION_COMPUTE_UNIT_LIMIT`).
pub const DEFAULT_INSTRUCTION_COMPUTE_UNIT_LIMIT: u32 = 200_000;

/// Compute units a builtin instruction (Compute Budget among them) gets when no limit
/// is set (agave `MAX_BUILTIN_ALLOCATION_COMPUTE_UNIT_LIMIT`, SIMD-0170).
pub const BUILTIN_INSTRUCTION_COMPUTE_UNIT_LIMIT: u32 = 3_000;

/// The largest compute unit limit a transaction gets (agave `MAX_COMPUTE_UNIT_LIMIT`).
pub const MAX_COMPUTE_UNIT_LIMIT: u32 = 1_400_000;

/// Micro-lamports per lamport.
const MICRO_LAMPORTS_PER_LAMPORT: u128 = 1_000_000;

/// A decoded Compute Budget instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComputeBudgetInstruction {
    /// 1: heap frame size in bytes.
    RequestHeapFrame(u32),
    /// 2: compute unit limit of the transaction.
    SetComputeUnitLimit(u32),
    /// 3: price of a compute unit in micro-lamports.
    SetComputeUnitPrice(u64),
    /// 4: limit on the bytes of loaded account data.
    SetLoadedAccountsDataSizeLimit(u32),
}

impl ComputeBudgetInstruction {
    /// Decodes one instruction's data (see the module docs).
    ///
    /// # Errors
    /// [`SignerError::UnsupportedPayload`] for an unknown or removed variant, or data
    /// whose length is not exactly the variant's (5 or 9 bytes).
    pub fn decode(data: &[u8]) -> Result<ComputeBudgetInstruction, SignerError> {
        let bad = || {
            SignerError::unsupported(format!(
                "Compute Budget instruction of {} bytes is not one this signer understands",
                data.len()
            ))
        };
        match data {
            [1, rest @ ..] => <[u8; 4]>::try_from(rest)
                .map(|b| Self::RequestHeapFrame(u32::from_le_bytes(b)))
                .map_err(|_| bad()),
            [2, rest @ ..] => <[u8; 4]>::try_from(rest)
                .map(|b| Self::SetComputeUnitLimit(u32::from_le_bytes(b)))
                .map_err(|_| bad()),
            [3, rest @ ..] => <[u8; 8]>::try_from(rest)
                .map(|b| Self::SetComputeUnitPrice(u64::from_le_bytes(b)))
                .map_err(|_| bad()),
            [4, rest @ ..] => <[u8; 4]>::try_from(rest)
                .map(|b| Self::SetLoadedAccountsDataSizeLimit(u32::from_le_bytes(b)))
                .map_err(|_| bad()),
            _ => Err(bad()),
        }
    }

    /// The variant index (1..=4).
    fn index(self) -> usize {
        match self {
            Self::RequestHeapFrame(_) => 1,
            Self::SetComputeUnitLimit(_) => 2,
            Self::SetComputeUnitPrice(_) => 3,
            Self::SetLoadedAccountsDataSizeLimit(_) => 4,
        }
    }
}

/// What a message's Compute Budget instructions request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ComputeBudgetRequest {
    /// `SetComputeUnitLimit`, if present.
    pub unit_limit: Option<u32>,
    /// `SetComputeUnitPrice` in micro-lamports, if present.
    pub unit_price: Option<u64>,
    /// `RequestHeapFrame` in bytes, if present.
    pub heap_frame: Option<u32>,
    /// `SetLoadedAccountsDataSizeLimit` in bytes, if present.
    pub loaded_accounts_data_size: Option<u32>,
}

impl ComputeBudgetRequest {
    /// Folds the data of every Compute Budget instruction of a message, in order.
    ///
    /// # Errors
    /// [`SignerError::UnsupportedPayload`] for an instruction
    /// [`ComputeBudgetInstruction::decode`] refuses, and for a second instruction of a
    /// kind already seen.
    pub fn from_instructions<'a>(
        datas: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<ComputeBudgetRequest, SignerError> {
        let mut out = ComputeBudgetRequest::default();
        let mut seen = [false; 5];
        for data in datas {
            let ix = ComputeBudgetInstruction::decode(data)?;
            let slot = seen
                .get_mut(ix.index())
                .ok_or_else(|| SignerError::unsupported("Compute Budget index out of range"))?;
            if *slot {
                return Err(SignerError::unsupported(format!(
                    "Compute Budget instruction {} appears twice (the runtime refuses that)",
                    ix.index()
                )));
            }
            *slot = true;
            match ix {
                ComputeBudgetInstruction::RequestHeapFrame(v) => out.heap_frame = Some(v),
                ComputeBudgetInstruction::SetComputeUnitLimit(v) => out.unit_limit = Some(v),
                ComputeBudgetInstruction::SetComputeUnitPrice(v) => out.unit_price = Some(v),
                ComputeBudgetInstruction::SetLoadedAccountsDataSizeLimit(v) => {
                    out.loaded_accounts_data_size = Some(v)
                }
            }
        }
        Ok(out)
    }

    /// The compute unit limit the fee is computed on: the requested one, or the
    /// default (module docs): 200,000 units for each of `non_compute_budget_instructions`
    /// plus [`BUILTIN_INSTRUCTION_COMPUTE_UNIT_LIMIT`] for each of the message's
    /// `compute_budget_instructions`, at most [`MAX_COMPUTE_UNIT_LIMIT`]. Agave counts
    /// the Compute Budget instructions too (they are builtins, 3,000 units each):
    /// leaving them out bounded a message of Compute Budget instructions only at 0
    /// units, and one with a non-builtin instruction 12,000 units short.
    pub fn effective_unit_limit(
        &self,
        non_compute_budget_instructions: usize,
        compute_budget_instructions: usize,
    ) -> u32 {
        self.unit_limit.unwrap_or_else(|| {
            let others = u32::try_from(non_compute_budget_instructions).unwrap_or(u32::MAX);
            let cb = u32::try_from(compute_budget_instructions).unwrap_or(u32::MAX);
            others
                .saturating_mul(DEFAULT_INSTRUCTION_COMPUTE_UNIT_LIMIT)
                .saturating_add(cb.saturating_mul(BUILTIN_INSTRUCTION_COMPUTE_UNIT_LIMIT))
                .min(MAX_COMPUTE_UNIT_LIMIT)
        })
    }
}

/// The most a message can pay in fees, in lamports (module docs): `signatures` is the
/// total signature count (required signers plus precompile signatures), `unit_limit`
/// and `unit_price` (micro-lamports) as in [`ComputeBudgetRequest`]. Exact: a `u64`
/// count times 5000 plus a `u32 × u64` product fits in `u128`.
pub fn max_fee_lamports(signatures: u64, unit_limit: u32, unit_price: u64) -> u128 {
    let signature_fee = u128::from(signatures) * u128::from(LAMPORTS_PER_SIGNATURE);
    let micro = u128::from(unit_limit) * u128::from(unit_price);
    let priority_fee = micro.div_ceil(MICRO_LAMPORTS_PER_LAMPORT);
    signature_fee + priority_fee
}

/// Whether `program_id` is one of the signature-verify precompiles whose signatures
/// are charged like transaction signatures.
pub fn is_signature_precompile(program_id: &[u8; 32]) -> bool {
    [
        ED25519_PRECOMPILE_ID,
        SECP256K1_PRECOMPILE_ID,
        SECP256R1_PRECOMPILE_ID,
    ]
    .contains(program_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_ids_are_the_published_base58() {
        for (id, b58) in [
            (
                COMPUTE_BUDGET_PROGRAM_ID,
                "ComputeBudget111111111111111111111111111111",
            ),
            (
                ED25519_PRECOMPILE_ID,
                "Ed25519SigVerify111111111111111111111111111",
            ),
            (
                SECP256K1_PRECOMPILE_ID,
                "KeccakSecp256k11111111111111111111111111111",
            ),
            (
                SECP256R1_PRECOMPILE_ID,
                "Secp256r1SigVerify1111111111111111111111111",
            ),
        ] {
            assert_eq!(bs58::encode(id).into_string(), b58);
        }
    }

    #[test]
    fn decodes_every_instruction() {
        let mut price = vec![3u8];
        price.extend_from_slice(&u64::MAX.to_le_bytes());
        let cases = [
            (
                vec![1u8, 0, 0x80, 0, 0],
                ComputeBudgetInstruction::RequestHeapFrame(32_768),
            ),
            (
                vec![2u8, 0x40, 0x0d, 0x03, 0],
                ComputeBudgetInstruction::SetComputeUnitLimit(200_000),
            ),
            (
                price,
                ComputeBudgetInstruction::SetComputeUnitPrice(u64::MAX),
            ),
            (
                vec![4u8, 1, 0, 0, 0],
                ComputeBudgetInstruction::SetLoadedAccountsDataSizeLimit(1),
            ),
        ];
        for (data, expected) in cases {
            assert_eq!(ComputeBudgetInstruction::decode(&data), Ok(expected));
        }
    }

    #[test]
    fn rejects_unknown_removed_short_and_long_instructions() {
        let cases: [&[u8]; 10] = [
            &[],
            &[0, 1, 0, 0, 0, 1, 0, 0, 0], // RequestUnitsDeprecated
            &[5, 0, 0, 0, 0],
            &[0xff],
            &[1, 0, 0, 0],
            &[1, 0, 0, 0, 0, 0],
            &[2, 0, 0, 0, 0, 0],
            &[3, 0, 0, 0, 0],
            &[3, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[4, 0, 0, 0, 0, 0, 0, 0, 0],
        ];
        for data in cases {
            assert!(
                matches!(
                    ComputeBudgetInstruction::decode(data),
                    Err(SignerError::UnsupportedPayload { .. })
                ),
                "{data:?}"
            );
        }
    }

    #[test]
    fn folds_a_request_and_rejects_duplicates() {
        let limit = [2u8, 0x10, 0, 0, 0];
        let mut price = vec![3u8];
        price.extend_from_slice(&7u64.to_le_bytes());
        let req = ComputeBudgetRequest::from_instructions([&limit[..], &price[..]]).unwrap();
        assert_eq!(req.unit_limit, Some(16));
        assert_eq!(req.unit_price, Some(7));
        for dup in [
            vec![&limit[..], &price[..], &limit[..]],
            vec![&price[..], &price[..]],
            vec![&[1u8, 0, 0x80, 0, 0][..], &[1u8, 0, 0x80, 0, 0][..]],
            vec![&[4u8, 1, 0, 0, 0][..], &[4u8, 2, 0, 0, 0][..]],
        ] {
            assert!(
                ComputeBudgetRequest::from_instructions(dup.clone()).is_err(),
                "{dup:?}"
            );
        }
    }

    #[test]
    fn default_unit_limit_is_200k_per_instruction_capped_at_1_4m() {
        let none = ComputeBudgetRequest::default();
        assert_eq!(none.effective_unit_limit(0, 0), 0);
        // Compute Budget instructions are builtins with 3,000 units each
        assert_eq!(none.effective_unit_limit(0, 1), 3_000);
        assert_eq!(none.effective_unit_limit(1, 4), 212_000);
        assert_eq!(none.effective_unit_limit(1, 0), 200_000);
        assert_eq!(none.effective_unit_limit(7, 0), 1_400_000);
        assert_eq!(none.effective_unit_limit(6, 4), 1_212_000);
        assert_eq!(none.effective_unit_limit(8, 1), 1_400_000);
        assert_eq!(none.effective_unit_limit(usize::MAX, usize::MAX), 1_400_000);
        let set = ComputeBudgetRequest {
            unit_limit: Some(u32::MAX),
            ..Default::default()
        };
        // The requested limit is used as written (an over-estimate past 1.4M).
        assert_eq!(set.effective_unit_limit(3, 1), u32::MAX);
    }

    #[test]
    fn fee_is_exact_and_rounds_the_priority_fee_up() {
        assert_eq!(max_fee_lamports(1, 200_000, 0), 5_000);
        assert_eq!(max_fee_lamports(2, 0, u64::MAX), 10_000);
        // 1 unit at 1 micro-lamport is one lamport after rounding up
        assert_eq!(max_fee_lamports(1, 1, 1), 5_001);
        assert_eq!(max_fee_lamports(1, 1_000_000, 1), 5_001);
        assert_eq!(max_fee_lamports(1, 1_000_001, 1), 5_002);
        // The attack run's drain: 1.4M units at ~14.3M micro-lamports ≈ 20 SOL.
        assert_eq!(
            max_fee_lamports(1, 1_400_000, 14_285_000_000),
            5_000 + 19_999_000_000
        );
        // No wrap at the extremes.
        let top = max_fee_lamports(u64::MAX, u32::MAX, u64::MAX);
        let expected = u128::from(u64::MAX) * 5_000
            + (u128::from(u32::MAX) * u128::from(u64::MAX)).div_ceil(1_000_000);
        assert_eq!(top, expected);
        assert!(top > u128::from(u64::MAX));
    }
}
