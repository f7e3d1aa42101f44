//! System Program instructions (`11111111111111111111111111111111`), decoded into a
//! typed enum so that the policy can allow or refuse each one by name.
//!
//! The wire format is `solana-system-interface`'s `SystemInstruction` under bincode's
//! fixed-int encoding: a `u32` LE variant index (0..=12), then the fields in order
//! (`u64` LE integers, 32-byte public keys, strings as a `u64` LE byte length followed
//! by UTF-8). Decoding is **exact**: unknown indices, short data, trailing bytes and
//! seeds that are not UTF-8 are refused (the runtime tolerates trailing bytes; we do
//! not, so no two readings of one instruction exist).
//!
//! Rule for maintainers: a new System variant is refused until it gets a variant
//! here *and* a name in [`SystemInstructionName`]; nothing is skipped silently.

use crate::SignerError;

/// The name of a System Program instruction, as a policy writes it in
/// `solana.system_instructions` (snake_case of the `SystemInstruction` variant). The
/// declaration order is the variant index order, which is also the canonical order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SystemInstructionName {
    /// 0 `CreateAccount`.
    CreateAccount,
    /// 1 `Assign`.
    Assign,
    /// 2 `Transfer`.
    Transfer,
    /// 3 `CreateAccountWithSeed`.
    CreateAccountWithSeed,
    /// 4 `AdvanceNonceAccount`.
    AdvanceNonceAccount,
    /// 5 `WithdrawNonceAccount`.
    WithdrawNonceAccount,
    /// 6 `InitializeNonceAccount`.
    InitializeNonceAccount,
    /// 7 `AuthorizeNonceAccount`.
    AuthorizeNonceAccount,
    /// 8 `Allocate`.
    Allocate,
    /// 9 `AllocateWithSeed`.
    AllocateWithSeed,
    /// 10 `AssignWithSeed`.
    AssignWithSeed,
    /// 11 `TransferWithSeed`.
    TransferWithSeed,
    /// 12 `UpgradeNonceAccount`.
    UpgradeNonceAccount,
}

impl SystemInstructionName {
    /// Every name, in variant index order.
    pub const ALL: [SystemInstructionName; 13] = [
        Self::CreateAccount,
        Self::Assign,
        Self::Transfer,
        Self::CreateAccountWithSeed,
        Self::AdvanceNonceAccount,
        Self::WithdrawNonceAccount,
        Self::InitializeNonceAccount,
        Self::AuthorizeNonceAccount,
        Self::Allocate,
        Self::AllocateWithSeed,
        Self::AssignWithSeed,
        Self::TransferWithSeed,
        Self::UpgradeNonceAccount,
    ];

    /// The names a policy allows when it has no `solana.system_instructions` field.
    pub const DEFAULT_ALLOWED: [SystemInstructionName; 2] = [Self::Transfer, Self::CreateAccount];

    /// The policy spelling (snake_case).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateAccount => "create_account",
            Self::Assign => "assign",
            Self::Transfer => "transfer",
            Self::CreateAccountWithSeed => "create_account_with_seed",
            Self::AdvanceNonceAccount => "advance_nonce_account",
            Self::WithdrawNonceAccount => "withdraw_nonce_account",
            Self::InitializeNonceAccount => "initialize_nonce_account",
            Self::AuthorizeNonceAccount => "authorize_nonce_account",
            Self::Allocate => "allocate",
            Self::AllocateWithSeed => "allocate_with_seed",
            Self::AssignWithSeed => "assign_with_seed",
            Self::TransferWithSeed => "transfer_with_seed",
            Self::UpgradeNonceAccount => "upgrade_nonce_account",
        }
    }

    /// Reads a policy spelling; `None` for anything that is not exactly one of
    /// [`Self::as_str`]'s outputs.
    pub fn from_name(s: &str) -> Option<SystemInstructionName> {
        Self::ALL.into_iter().find(|n| n.as_str() == s)
    }

    /// The bincode variant index.
    pub fn index(self) -> u32 {
        // Fieldless, declared in index order: the discriminant is the index.
        self as u32
    }
}

/// A decoded System Program instruction. Account positions (`accounts[i]` of the
/// compiled instruction) are those of `solana-system-interface`'s documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemInstruction {
    /// 0: `[funding (signer, writable), new account (signer, writable)]`.
    CreateAccount {
        /// Lamports moved to the new account.
        lamports: u64,
        /// Bytes of data to allocate.
        space: u64,
        /// Program that will own the new account.
        owner: [u8; 32],
    },
    /// 1: `[account (signer, writable)]`: makes `owner` the account's owner program.
    Assign {
        /// The new owner program.
        owner: [u8; 32],
    },
    /// 2: `[from (signer, writable), to (writable)]`.
    Transfer {
        /// Lamports moved.
        lamports: u64,
    },
    /// 3: `[funding (signer, writable), created (writable), base (signer)?]`.
    CreateAccountWithSeed {
        /// Base public key of the derived address.
        base: [u8; 32],
        /// Seed of the derived address.
        seed: String,
        /// Lamports moved to the new account.
        lamports: u64,
        /// Bytes of data to allocate.
        space: u64,
        /// Program that will own the new account.
        owner: [u8; 32],
    },
    /// 4: `[nonce (writable), recent blockhashes sysvar, nonce authority (signer)]`.
    AdvanceNonceAccount,
    /// 5: `[nonce (writable), to (writable), recent blockhashes sysvar, rent sysvar,
    /// nonce authority (signer)]`.
    WithdrawNonceAccount {
        /// Lamports moved out of the nonce account.
        lamports: u64,
    },
    /// 6: `[nonce (writable), recent blockhashes sysvar, rent sysvar]`: makes an
    /// (allocated, system-owned) account a nonce account controlled by `authority`.
    InitializeNonceAccount {
        /// The nonce authority, who may then withdraw everything.
        authority: [u8; 32],
    },
    /// 7: `[nonce (writable), nonce authority (signer)]`.
    AuthorizeNonceAccount {
        /// The new nonce authority.
        authority: [u8; 32],
    },
    /// 8: `[account (signer, writable)]`.
    Allocate {
        /// Bytes of data to allocate.
        space: u64,
    },
    /// 9: `[allocated (writable), base (signer)]`.
    AllocateWithSeed {
        /// Base public key of the derived address.
        base: [u8; 32],
        /// Seed of the derived address.
        seed: String,
        /// Bytes of data to allocate.
        space: u64,
        /// The new owner program.
        owner: [u8; 32],
    },
    /// 10: `[assigned (writable), base (signer)]`.
    AssignWithSeed {
        /// Base public key of the derived address.
        base: [u8; 32],
        /// Seed of the derived address.
        seed: String,
        /// The new owner program.
        owner: [u8; 32],
    },
    /// 11: `[from (writable), base (signer), to (writable)]`.
    TransferWithSeed {
        /// Lamports moved.
        lamports: u64,
        /// Seed of the paying derived address.
        from_seed: String,
        /// Owner program of the paying derived address.
        from_owner: [u8; 32],
    },
    /// 12: `[nonce (writable)]`.
    UpgradeNonceAccount,
}

impl SystemInstruction {
    /// Decodes System Program instruction data (see the module docs for the format).
    ///
    /// # Errors
    /// [`SignerError::UnsupportedPayload`] for an unknown variant index, data too short
    /// for its variant, trailing bytes, or a seed that is not UTF-8.
    pub fn decode(data: &[u8]) -> Result<SystemInstruction, SignerError> {
        let mut r = Reader { data, at: 0 };
        let variant = r.u32()?;
        let ix = match variant {
            0 => Self::CreateAccount {
                lamports: r.u64()?,
                space: r.u64()?,
                owner: r.key()?,
            },
            1 => Self::Assign { owner: r.key()? },
            2 => Self::Transfer { lamports: r.u64()? },
            3 => Self::CreateAccountWithSeed {
                base: r.key()?,
                seed: r.string()?,
                lamports: r.u64()?,
                space: r.u64()?,
                owner: r.key()?,
            },
            4 => Self::AdvanceNonceAccount,
            5 => Self::WithdrawNonceAccount { lamports: r.u64()? },
            6 => Self::InitializeNonceAccount {
                authority: r.key()?,
            },
            7 => Self::AuthorizeNonceAccount {
                authority: r.key()?,
            },
            8 => Self::Allocate { space: r.u64()? },
            9 => Self::AllocateWithSeed {
                base: r.key()?,
                seed: r.string()?,
                space: r.u64()?,
                owner: r.key()?,
            },
            10 => Self::AssignWithSeed {
                base: r.key()?,
                seed: r.string()?,
                owner: r.key()?,
            },
            11 => Self::TransferWithSeed {
                lamports: r.u64()?,
                from_seed: r.string()?,
                from_owner: r.key()?,
            },
            12 => Self::UpgradeNonceAccount,
            other => {
                return Err(SignerError::unsupported(format!(
                    "unknown System Program instruction {other}"
                )))
            }
        };
        if r.at != data.len() {
            return Err(SignerError::unsupported(format!(
                "System Program instruction {variant} has {} trailing bytes",
                data.len().saturating_sub(r.at)
            )));
        }
        Ok(ix)
    }

    /// This instruction's name.
    pub fn name(&self) -> SystemInstructionName {
        use SystemInstructionName as N;
        match self {
            Self::CreateAccount { .. } => N::CreateAccount,
            Self::Assign { .. } => N::Assign,
            Self::Transfer { .. } => N::Transfer,
            Self::CreateAccountWithSeed { .. } => N::CreateAccountWithSeed,
            Self::AdvanceNonceAccount => N::AdvanceNonceAccount,
            Self::WithdrawNonceAccount { .. } => N::WithdrawNonceAccount,
            Self::InitializeNonceAccount { .. } => N::InitializeNonceAccount,
            Self::AuthorizeNonceAccount { .. } => N::AuthorizeNonceAccount,
            Self::Allocate { .. } => N::Allocate,
            Self::AllocateWithSeed { .. } => N::AllocateWithSeed,
            Self::AssignWithSeed { .. } => N::AssignWithSeed,
            Self::TransferWithSeed { .. } => N::TransferWithSeed,
            Self::UpgradeNonceAccount => N::UpgradeNonceAccount,
        }
    }

    /// For the variants that move lamports: `(lamports, position of the paying account,
    /// position of the receiving account)` in the instruction's account list.
    pub fn lamport_movement(&self) -> Option<(u64, usize, usize)> {
        match self {
            Self::CreateAccount { lamports, .. }
            | Self::Transfer { lamports }
            | Self::CreateAccountWithSeed { lamports, .. }
            | Self::WithdrawNonceAccount { lamports } => Some((*lamports, 0, 1)),
            Self::TransferWithSeed { lamports, .. } => Some((*lamports, 0, 2)),
            _ => None,
        }
    }
}

/// A cursor over instruction data; every read is bounds-checked.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SignerError> {
        let end = self
            .at
            .checked_add(N)
            .ok_or_else(|| SignerError::unsupported("System instruction data too short"))?;
        let out = self
            .data
            .get(self.at..end)
            .and_then(|b| <[u8; N]>::try_from(b).ok())
            .ok_or_else(|| SignerError::unsupported("System instruction data too short"))?;
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, SignerError> {
        self.take::<4>().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, SignerError> {
        self.take::<8>().map(u64::from_le_bytes)
    }

    fn key(&mut self) -> Result<[u8; 32], SignerError> {
        self.take::<32>()
    }

    fn string(&mut self) -> Result<String, SignerError> {
        let too_short = || SignerError::unsupported("System instruction data too short");
        let len = usize::try_from(self.u64()?).map_err(|_| too_short())?;
        let end = self.at.checked_add(len).ok_or_else(too_short)?;
        let bytes = self.data.get(self.at..end).ok_or_else(too_short)?;
        let s = std::str::from_utf8(bytes)
            .map_err(|_| SignerError::unsupported("System instruction seed is not UTF-8"))?;
        self.at = end;
        Ok(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_variant(v: u32, rest: &[&[u8]]) -> Vec<u8> {
        let mut out = v.to_le_bytes().to_vec();
        for r in rest {
            out.extend_from_slice(r);
        }
        out
    }

    fn seed(s: &str) -> Vec<u8> {
        let mut out = (s.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(s.as_bytes());
        out
    }

    /// One valid encoding of every variant, with the expected decoding.
    fn every_variant() -> Vec<(Vec<u8>, SystemInstruction)> {
        let k = |n: u8| [n; 32];
        let u = |n: u64| n.to_le_bytes();
        vec![
            (
                with_variant(0, &[&u(5), &u(80), &k(1)]),
                SystemInstruction::CreateAccount {
                    lamports: 5,
                    space: 80,
                    owner: k(1),
                },
            ),
            (
                with_variant(1, &[&k(2)]),
                SystemInstruction::Assign { owner: k(2) },
            ),
            (
                with_variant(2, &[&u(7)]),
                SystemInstruction::Transfer { lamports: 7 },
            ),
            (
                with_variant(3, &[&k(3), &seed("ab"), &u(9), &u(10), &k(4)]),
                SystemInstruction::CreateAccountWithSeed {
                    base: k(3),
                    seed: "ab".into(),
                    lamports: 9,
                    space: 10,
                    owner: k(4),
                },
            ),
            (with_variant(4, &[]), SystemInstruction::AdvanceNonceAccount),
            (
                with_variant(5, &[&u(11)]),
                SystemInstruction::WithdrawNonceAccount { lamports: 11 },
            ),
            (
                with_variant(6, &[&k(5)]),
                SystemInstruction::InitializeNonceAccount { authority: k(5) },
            ),
            (
                with_variant(7, &[&k(6)]),
                SystemInstruction::AuthorizeNonceAccount { authority: k(6) },
            ),
            (
                with_variant(8, &[&u(80)]),
                SystemInstruction::Allocate { space: 80 },
            ),
            (
                with_variant(9, &[&k(7), &seed("s"), &u(1), &k(8)]),
                SystemInstruction::AllocateWithSeed {
                    base: k(7),
                    seed: "s".into(),
                    space: 1,
                    owner: k(8),
                },
            ),
            (
                with_variant(10, &[&k(9), &seed(""), &k(10)]),
                SystemInstruction::AssignWithSeed {
                    base: k(9),
                    seed: String::new(),
                    owner: k(10),
                },
            ),
            (
                with_variant(11, &[&u(12), &seed("xyz"), &k(11)]),
                SystemInstruction::TransferWithSeed {
                    lamports: 12,
                    from_seed: "xyz".into(),
                    from_owner: k(11),
                },
            ),
            (
                with_variant(12, &[]),
                SystemInstruction::UpgradeNonceAccount,
            ),
        ]
    }

    #[test]
    fn decodes_every_variant_and_names_it() {
        let all = every_variant();
        assert_eq!(all.len(), SystemInstructionName::ALL.len());
        for (i, (data, expected)) in all.into_iter().enumerate() {
            let ix = SystemInstruction::decode(&data).unwrap();
            assert_eq!(ix, expected);
            assert_eq!(ix.name(), SystemInstructionName::ALL[i]);
            assert_eq!(ix.name().index() as usize, i);
        }
    }

    #[test]
    fn rejects_every_variant_truncated_or_with_trailing_bytes() {
        for (data, _) in every_variant() {
            for cut in 0..data.len() {
                assert!(
                    SystemInstruction::decode(&data[..cut]).is_err(),
                    "{data:?} cut at {cut}"
                );
            }
            let mut longer = data.clone();
            longer.push(0);
            assert!(matches!(
                SystemInstruction::decode(&longer),
                Err(SignerError::UnsupportedPayload { .. })
            ));
        }
    }

    #[test]
    fn rejects_unknown_variants_and_bad_seeds() {
        for v in [13u32, 77, u32::MAX] {
            assert!(SystemInstruction::decode(&v.to_le_bytes()).is_err(), "{v}");
        }
        // a seed length far past the data, and one that overflows usize arithmetic
        let mut huge = 9u32.to_le_bytes().to_vec();
        huge.extend_from_slice(&[1; 32]);
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(SystemInstruction::decode(&huge).is_err());
        // not UTF-8
        let mut bad = 10u32.to_le_bytes().to_vec();
        bad.extend_from_slice(&[1; 32]);
        bad.extend_from_slice(&1u64.to_le_bytes());
        bad.push(0xff);
        bad.extend_from_slice(&[2; 32]);
        assert!(SystemInstruction::decode(&bad).is_err());
    }

    #[test]
    fn names_round_trip_and_are_pinned() {
        let names: Vec<&str> = SystemInstructionName::ALL
            .iter()
            .map(|n| n.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "create_account",
                "assign",
                "transfer",
                "create_account_with_seed",
                "advance_nonce_account",
                "withdraw_nonce_account",
                "initialize_nonce_account",
                "authorize_nonce_account",
                "allocate",
                "allocate_with_seed",
                "assign_with_seed",
                "transfer_with_seed",
                "upgrade_nonce_account",
            ]
        );
        for n in SystemInstructionName::ALL {
            assert_eq!(SystemInstructionName::from_name(n.as_str()), Some(n));
        }
        for bad in ["Transfer", "transfer ", "", "create-account", "nonce"] {
            assert_eq!(SystemInstructionName::from_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lamport_movements_name_the_paying_and_receiving_accounts() {
        let moving: Vec<_> = every_variant()
            .into_iter()
            .filter_map(|(_, ix)| ix.lamport_movement().map(|m| (ix.name(), m)))
            .collect();
        use SystemInstructionName as N;
        assert_eq!(
            moving,
            [
                (N::CreateAccount, (5, 0, 1)),
                (N::Transfer, (7, 0, 1)),
                (N::CreateAccountWithSeed, (9, 0, 1)),
                (N::WithdrawNonceAccount, (11, 0, 1)),
                (N::TransferWithSeed, (12, 0, 2)),
            ]
        );
    }
}
