//! ERC-20 call data (EIP-20): `transfer`, `transferFrom`, `approve` and
//! `increaseAllowance` (OpenZeppelin's, not in EIP-20 but universal), decoded with
//! alloy's `sol!` types.
//!
//! Decoding is exact: the selector, then exactly the static head of the arguments
//! (no trailing bytes), with every word canonical (addresses left-padded with zeros):
//! alloy's validating decoder, then a re-encoding compared byte for byte. Any other
//! call data is not an ERC-20 call to this module ([`Erc20Call::decode`] returns
//! `Ok(None)` for another selector).

use alloy_primitives::U256;
use alloy_sol_types::{sol, SolCall};

use crate::SignerError;

sol! {
    function transfer(address to, uint256 amount) returns (bool);
    function transferFrom(address from, address to, uint256 amount) returns (bool);
    function approve(address spender, uint256 amount) returns (bool);
    function increaseAllowance(address spender, uint256 addedValue) returns (bool);
}

/// `transfer(address,uint256)`.
pub const TRANSFER_SELECTOR: [u8; 4] = transferCall::SELECTOR;
/// `transferFrom(address,address,uint256)`.
pub const TRANSFER_FROM_SELECTOR: [u8; 4] = transferFromCall::SELECTOR;
/// `approve(address,uint256)`.
pub const APPROVE_SELECTOR: [u8; 4] = approveCall::SELECTOR;
/// `increaseAllowance(address,uint256)`.
pub const INCREASE_ALLOWANCE_SELECTOR: [u8; 4] = increaseAllowanceCall::SELECTOR;

/// The four selectors this module decodes.
pub const ERC20_SELECTORS: [[u8; 4]; 4] = [
    TRANSFER_SELECTOR,
    TRANSFER_FROM_SELECTOR,
    APPROVE_SELECTOR,
    INCREASE_ALLOWANCE_SELECTOR,
];

/// A decoded ERC-20 call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erc20Call {
    /// `transfer(to, amount)`: moves `amount` from the caller to `to`.
    Transfer {
        /// Recipient.
        to: [u8; 20],
        /// Amount in the token's base units.
        amount: U256,
    },
    /// `transferFrom(from, to, amount)`: moves `amount` from `from` (who approved the
    /// caller) to `to`.
    TransferFrom {
        /// Owner of the tokens.
        from: [u8; 20],
        /// Recipient.
        to: [u8; 20],
        /// Amount in base units.
        amount: U256,
    },
    /// `approve(spender, amount)`: lets `spender` move up to `amount` of the caller's
    /// tokens (`U256::MAX` is the conventional "unlimited").
    Approve {
        /// Who may spend.
        spender: [u8; 20],
        /// Allowance set.
        amount: U256,
    },
    /// `increaseAllowance(spender, added)`: raises `spender`'s allowance by `added`.
    IncreaseAllowance {
        /// Who may spend.
        spender: [u8; 20],
        /// Allowance added.
        amount: U256,
    },
}

impl Erc20Call {
    /// Decodes call data whose selector is one of [`ERC20_SELECTORS`]; `Ok(None)` for
    /// call data with another selector or shorter than a selector.
    ///
    /// # Errors
    /// [`SignerError::Malformed`] for an ERC-20 selector whose arguments are not
    /// exactly the canonical ABI encoding.
    pub fn decode(data: &[u8]) -> Result<Option<Erc20Call>, SignerError> {
        let Some(selector) = data.get(..4) else {
            return Ok(None);
        };
        let call = match <[u8; 4]>::try_from(selector).unwrap_or_default() {
            TRANSFER_SELECTOR => {
                let c = exact::<transferCall>(data)?;
                Erc20Call::Transfer {
                    to: c.to.into_array(),
                    amount: c.amount,
                }
            }
            TRANSFER_FROM_SELECTOR => {
                let c = exact::<transferFromCall>(data)?;
                Erc20Call::TransferFrom {
                    from: c.from.into_array(),
                    to: c.to.into_array(),
                    amount: c.amount,
                }
            }
            APPROVE_SELECTOR => {
                let c = exact::<approveCall>(data)?;
                Erc20Call::Approve {
                    spender: c.spender.into_array(),
                    amount: c.amount,
                }
            }
            INCREASE_ALLOWANCE_SELECTOR => {
                let c = exact::<increaseAllowanceCall>(data)?;
                Erc20Call::IncreaseAllowance {
                    spender: c.spender.into_array(),
                    amount: c.addedValue,
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(call))
    }

    /// The function name, as Solidity spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Transfer { .. } => "transfer",
            Self::TransferFrom { .. } => "transferFrom",
            Self::Approve { .. } => "approve",
            Self::IncreaseAllowance { .. } => "increaseAllowance",
        }
    }

    /// The ABI encoding with selector (what [`Erc20Call::decode`] reads back).
    pub fn encode(&self) -> Vec<u8> {
        match *self {
            Self::Transfer { to, amount } => transferCall {
                to: to.into(),
                amount,
            }
            .abi_encode(),
            Self::TransferFrom { from, to, amount } => transferFromCall {
                from: from.into(),
                to: to.into(),
                amount,
            }
            .abi_encode(),
            Self::Approve { spender, amount } => approveCall {
                spender: spender.into(),
                amount,
            }
            .abi_encode(),
            Self::IncreaseAllowance { spender, amount } => increaseAllowanceCall {
                spender: spender.into(),
                addedValue: amount,
            }
            .abi_encode(),
        }
    }
}

fn exact<C: SolCall>(data: &[u8]) -> Result<C, SignerError> {
    let call = C::abi_decode_validate(data)
        .map_err(|e| SignerError::malformed(format!("ERC-20 {}: {e}", C::SIGNATURE)))?;
    if call.abi_encode() != data {
        return Err(SignerError::malformed(format!(
            "ERC-20 {}: not the canonical encoding (trailing or dirty bytes)",
            C::SIGNATURE
        )));
    }
    Ok(call)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_the_published_ones() {
        assert_eq!(hex::encode(TRANSFER_SELECTOR), "a9059cbb");
        assert_eq!(hex::encode(TRANSFER_FROM_SELECTOR), "23b872dd");
        assert_eq!(hex::encode(APPROVE_SELECTOR), "095ea7b3");
        assert_eq!(hex::encode(INCREASE_ALLOWANCE_SELECTOR), "39509351");
    }

    #[test]
    fn decodes_a_known_transfer() {
        // transfer(0x1111…11, 1_000_000), as any ABI encoder writes it.
        let data = hex::decode(concat!(
            "a9059cbb",
            "0000000000000000000000001111111111111111111111111111111111111111",
            "00000000000000000000000000000000000000000000000000000000000f4240"
        ))
        .unwrap();
        assert_eq!(
            Erc20Call::decode(&data).unwrap(),
            Some(Erc20Call::Transfer {
                to: [0x11; 20],
                amount: U256::from(1_000_000u64)
            })
        );
    }

    #[test]
    fn round_trips_every_call() {
        for call in [
            Erc20Call::Transfer {
                to: [1; 20],
                amount: U256::from(5u8),
            },
            Erc20Call::TransferFrom {
                from: [2; 20],
                to: [3; 20],
                amount: U256::MAX,
            },
            Erc20Call::Approve {
                spender: [4; 20],
                amount: U256::ZERO,
            },
            Erc20Call::IncreaseAllowance {
                spender: [5; 20],
                amount: U256::from(7u8),
            },
        ] {
            assert_eq!(Erc20Call::decode(&call.encode()).unwrap(), Some(call));
        }
    }

    #[test]
    fn other_selectors_are_not_erc20() {
        assert_eq!(Erc20Call::decode(&[]).unwrap(), None);
        assert_eq!(Erc20Call::decode(&[0xa9, 0x05, 0x9c]).unwrap(), None);
        assert_eq!(
            Erc20Call::decode(&[0xde, 0xad, 0xbe, 0xef, 0]).unwrap(),
            None
        );
    }

    #[test]
    fn rejects_truncated_trailing_and_dirty_arguments() {
        let good = Erc20Call::Transfer {
            to: [1; 20],
            amount: U256::from(5u8),
        }
        .encode();
        for cut in 4..good.len() {
            assert!(Erc20Call::decode(&good[..cut]).is_err(), "cut {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(Erc20Call::decode(&trailing).is_err());
        let mut dirty = good.clone();
        dirty[4] = 1; // a high byte of the address word
        assert!(Erc20Call::decode(&dirty).is_err());
    }
}
