//! SPL Token (`TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA`) and Token-2022
//! (`TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb`) instructions.
//!
//! Both programs share the instruction layout of `spl-token`'s `TokenInstruction`: a
//! one-byte tag, then the fields little-endian. Two are decoded, exactly (the data
//! length must be the variant's):
//!
//! | tag | instruction | data | accounts |
//! |---|---|---|---|
//! | 3 | `Transfer` | `u64` amount | `[source, destination, authority, signers…]` |
//! | 12 | `TransferChecked` | `u64` amount, `u8` decimals | `[source, mint, destination, authority, signers…]` |
//!
//! Every other tag decodes to [`SplTokenInstruction::Other`] with its name, so that a
//! policy can refuse it by name (`Approve`, `SetAuthority` and `CloseAccount` hand a
//! token account to someone else without a transfer). A plain `Transfer` names no mint:
//! only the source account's data (not in the message) says which token moves.

use crate::SignerError;

/// The SPL Token program id.
pub const TOKEN_PROGRAM_ID: [u8; 32] = [
    6, 221, 246, 225, 215, 101, 161, 147, 217, 203, 225, 70, 206, 235, 121, 172, 28, 180, 133, 237,
    95, 91, 55, 145, 58, 140, 245, 133, 126, 255, 0, 169,
];

/// The Token-2022 program id.
pub const TOKEN_2022_PROGRAM_ID: [u8; 32] = [
    6, 221, 246, 225, 238, 117, 143, 222, 24, 66, 93, 188, 228, 108, 205, 218, 182, 26, 252, 77,
    131, 185, 13, 39, 254, 189, 249, 40, 216, 161, 139, 252,
];

/// Whether `program_id` is SPL Token or Token-2022.
pub fn is_token_program(program_id: &[u8; 32]) -> bool {
    program_id == &TOKEN_PROGRAM_ID || program_id == &TOKEN_2022_PROGRAM_ID
}

/// A decoded SPL Token instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplTokenInstruction {
    /// 3: moves `amount` base units from `accounts[0]` to `accounts[1]`.
    Transfer {
        /// Base units.
        amount: u64,
    },
    /// 12: moves `amount` base units of mint `accounts[1]` from `accounts[0]` to
    /// `accounts[2]`, checking the mint's `decimals`.
    TransferChecked {
        /// Base units.
        amount: u64,
        /// The mint's decimals.
        decimals: u8,
    },
    /// Any other instruction (not decoded further), by tag.
    Other {
        /// The tag byte.
        tag: u8,
    },
}

impl SplTokenInstruction {
    /// Account position of the destination token account.
    pub const fn destination_position(&self) -> Option<usize> {
        match self {
            Self::Transfer { .. } => Some(1),
            Self::TransferChecked { .. } => Some(2),
            Self::Other { .. } => None,
        }
    }

    /// Account position of the mint (only `TransferChecked` names it).
    pub const fn mint_position(&self) -> Option<usize> {
        match self {
            Self::TransferChecked { .. } => Some(1),
            _ => None,
        }
    }

    /// Decodes instruction data (module docs).
    ///
    /// # Errors
    /// [`SignerError::UnsupportedPayload`] for empty data, or a `Transfer` /
    /// `TransferChecked` whose data is not exactly 9 / 10 bytes.
    pub fn decode(data: &[u8]) -> Result<SplTokenInstruction, SignerError> {
        let bad = |what: &str| {
            SignerError::unsupported(format!(
                "SPL Token {what} of {} bytes does not decode exactly",
                data.len()
            ))
        };
        match data {
            [] => Err(bad("instruction")),
            [3, rest @ ..] => <[u8; 8]>::try_from(rest)
                .map(|a| Self::Transfer {
                    amount: u64::from_le_bytes(a),
                })
                .map_err(|_| bad("Transfer")),
            [12, rest @ ..] => match rest {
                [a0, a1, a2, a3, a4, a5, a6, a7, decimals] => Ok(Self::TransferChecked {
                    amount: u64::from_le_bytes([*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7]),
                    decimals: *decimals,
                }),
                _ => Err(bad("TransferChecked")),
            },
            [tag, ..] => Ok(Self::Other { tag: *tag }),
        }
    }

    /// The instruction's name in `spl-token` (`TokenInstruction` variants, then
    /// Token-2022's), or `"unknown"`.
    pub fn name(&self) -> &'static str {
        let tag = match self {
            Self::Transfer { .. } => 3,
            Self::TransferChecked { .. } => 12,
            Self::Other { tag } => *tag,
        };
        const NAMES: [&str; 45] = [
            "InitializeMint",
            "InitializeAccount",
            "InitializeMultisig",
            "Transfer",
            "Approve",
            "Revoke",
            "SetAuthority",
            "MintTo",
            "Burn",
            "CloseAccount",
            "FreezeAccount",
            "ThawAccount",
            "TransferChecked",
            "ApproveChecked",
            "MintToChecked",
            "BurnChecked",
            "InitializeAccount2",
            "SyncNative",
            "InitializeAccount3",
            "InitializeMultisig2",
            "InitializeMint2",
            "GetAccountDataSize",
            "InitializeImmutableOwner",
            "AmountToUiAmount",
            "UiAmountToAmount",
            "InitializeMintCloseAuthority",
            "TransferFeeExtension",
            "ConfidentialTransferExtension",
            "DefaultAccountStateExtension",
            "Reallocate",
            "MemoTransferExtension",
            "CreateNativeMint",
            "InitializeNonTransferableMint",
            "InterestBearingMintExtension",
            "CpiGuardExtension",
            "InitializePermanentDelegate",
            "TransferHookExtension",
            "ConfidentialTransferFeeExtension",
            "WithdrawExcessLamports",
            "MetadataPointerExtension",
            "GroupPointerExtension",
            "GroupMemberPointerExtension",
            "ConfidentialMintBurnExtension",
            "ScaledUiAmountExtension",
            "PausableExtension",
        ];
        NAMES.get(usize::from(tag)).copied().unwrap_or("unknown")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_ids_are_the_published_base58() {
        assert_eq!(
            crate::address::solana_address(&TOKEN_PROGRAM_ID),
            "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
        );
        assert_eq!(
            crate::address::solana_address(&TOKEN_2022_PROGRAM_ID),
            "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb"
        );
    }

    #[test]
    fn decodes_transfer_and_transfer_checked() {
        let mut d = vec![3];
        d.extend_from_slice(&1_000u64.to_le_bytes());
        assert_eq!(
            SplTokenInstruction::decode(&d).unwrap(),
            SplTokenInstruction::Transfer { amount: 1_000 }
        );
        let mut d = vec![12];
        d.extend_from_slice(&7u64.to_le_bytes());
        d.push(6);
        let ix = SplTokenInstruction::decode(&d).unwrap();
        assert_eq!(
            ix,
            SplTokenInstruction::TransferChecked {
                amount: 7,
                decimals: 6
            }
        );
        assert_eq!(ix.mint_position(), Some(1));
        assert_eq!(ix.destination_position(), Some(2));
        assert_eq!(ix.name(), "TransferChecked");
    }

    #[test]
    fn names_other_instructions() {
        assert_eq!(
            SplTokenInstruction::decode(&[6, 0]).unwrap().name(),
            "SetAuthority"
        );
        assert_eq!(
            SplTokenInstruction::decode(&[9]).unwrap().name(),
            "CloseAccount"
        );
        assert_eq!(
            SplTokenInstruction::decode(&[200]).unwrap().name(),
            "unknown"
        );
    }

    #[test]
    fn rejects_short_long_and_empty() {
        assert!(SplTokenInstruction::decode(&[]).is_err());
        assert!(SplTokenInstruction::decode(&[3, 1, 2]).is_err());
        assert!(SplTokenInstruction::decode(&[3; 10]).is_err());
        assert!(SplTokenInstruction::decode(&[12; 9]).is_err());
        assert!(SplTokenInstruction::decode(&[12; 11]).is_err());
    }
}
