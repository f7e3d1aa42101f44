//! EIP-712 typed data: the JSON `eth_signTypedData_v4` takes, `{types, primaryType,
//! domain, message}`, hashed with alloy-dyn-abi (`keccak256(0x19 0x01 ‖
//! domainSeparator ‖ hashStruct(message))`), and the token permits it may carry.
//!
//! # Bounds and strictness
//!
//! At most [`MAX_TYPED_DATA_BYTES`] bytes and [`MAX_TYPED_DATA_DEPTH`] levels of JSON
//! nesting, both checked before parsing. The document must be a JSON object (not a
//! string holding one) in which no object repeats a key; the message must coerce to the primary type. When `types`
//! declares `EIP712Domain`, its encoding must equal the one the `domain` object's
//! fields give (alloy hashes the domain from its fields, a wallet from the declared
//! type: refusing a mismatch keeps the two readings the same).
//!
//! # Permits
//!
//! A primary type whose name contains `permit` (any case) is a permit: it is decoded
//! when its `encodeType` is exactly one of these, and refused otherwise (a permit the
//! engine cannot read could move any token to anyone):
//!
//! | primary type | standard | tokens, amounts, spender |
//! |---|---|---|
//! | `Permit` | EIP-2612 | the domain's `verifyingContract`, `value`, `spender` |
//! | `PermitSingle` | Permit2 `AllowanceTransfer` | `details.token`, `details.amount`, `spender` |
//! | `PermitBatch` | Permit2 `AllowanceTransfer` | each `details[i]`, `spender` |
//! | `PermitTransferFrom` | Permit2 `SignatureTransfer` | `permitted.token`, `permitted.amount`, `spender` |
//! | `PermitBatchTransferFrom` | Permit2 `SignatureTransfer` | each `permitted[i]`, `spender` |

use alloy_dyn_abi::eip712::TypedData;
use alloy_dyn_abi::DynSolValue;
use alloy_primitives::U256;

use crate::SignerError;

/// Largest typed-data document accepted, in bytes (64 KiB).
pub const MAX_TYPED_DATA_BYTES: usize = 64 * 1024;

/// Deepest JSON nesting accepted (objects and arrays).
pub const MAX_TYPED_DATA_DEPTH: usize = 32;

/// EIP-2612 `Permit`.
const PERMIT: &str =
    "Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)";
const PERMIT_DETAILS: &str =
    "PermitDetails(address token,uint160 amount,uint48 expiration,uint48 nonce)";
const TOKEN_PERMISSIONS: &str = "TokenPermissions(address token,uint256 amount)";

/// The largest `uint160`: Permit2's "unlimited" allowance.
pub fn uint160_max() -> U256 {
    (U256::from(1u8) << 160) - U256::from(1u8)
}

/// One token allowance or transfer a permit grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PermitGrant {
    /// The token contract.
    pub token: [u8; 20],
    /// The amount, in base units.
    pub amount: U256,
    /// Whether the amount is the standard's "unlimited" (`2^256 − 1` for EIP-2612 and
    /// `SignatureTransfer`, `2^160 − 1` for Permit2 allowances).
    pub unlimited: bool,
}

/// A decoded permit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    /// The primary type (`Permit`, `PermitSingle`, ...).
    pub kind: &'static str,
    /// Who may spend.
    pub spender: [u8; 20],
    /// What it grants.
    pub grants: Vec<PermitGrant>,
}

/// Decoded typed data, with its signing hash and what the policy reads.
#[derive(Debug, Clone)]
pub struct TypedDataPayload {
    typed: TypedData,
    hash: [u8; 32],
    permit: Option<Permit>,
}

impl TypedDataPayload {
    /// Parses and hashes a typed-data JSON document (module docs).
    ///
    /// # Errors
    /// [`SignerError::Oversize`] above [`MAX_TYPED_DATA_BYTES`];
    /// [`SignerError::Malformed`] for JSON that is too deep, not an object, not
    /// typed data, does not hash, or declares an `EIP712Domain` other than its domain;
    /// [`SignerError::UnsupportedPayload`] for a permit of an unknown shape.
    pub fn decode(bytes: &[u8]) -> Result<TypedDataPayload, SignerError> {
        if bytes.len() > MAX_TYPED_DATA_BYTES {
            return Err(SignerError::Oversize {
                what: "EIP-712 typed data",
                len: bytes.len(),
                limit: MAX_TYPED_DATA_BYTES,
            });
        }
        check_depth(bytes)?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(SignerError::malformed(
                "EIP-712 typed data must be a JSON object",
            ));
        }
        // serde keeps the last of two equal keys in `message` and `types`; a wallet, a
        // proxy or the app that showed the data may keep the first (`"value": "5",
        // "value": "<max>"` in a permit).
        serde_json::from_slice::<NoRepeatedKeys>(bytes)
            .map_err(|e| SignerError::malformed(format!("EIP-712 typed data: {e}")))?;
        let typed: TypedData = serde_json::from_slice(bytes)
            .map_err(|e| SignerError::malformed(format!("EIP-712 typed data: {e}")))?;
        if typed.resolver.contains_type_name("EIP712Domain") {
            let declared = typed
                .resolver
                .encode_type("EIP712Domain")
                .map_err(|e| SignerError::malformed(format!("EIP-712 domain type: {e}")))?;
            if declared != typed.domain.encode_type() {
                return Err(SignerError::malformed(format!(
                    "types.EIP712Domain {declared:.200} does not match the domain's fields"
                )));
            }
        }
        let hash = typed
            .eip712_signing_hash()
            .map_err(|e| SignerError::malformed(format!("EIP-712 hashing: {e}")))?
            .0;
        let permit = decode_permit(&typed)?;
        Ok(TypedDataPayload {
            typed,
            hash,
            permit,
        })
    }

    /// The EIP-712 digest that gets signed.
    pub fn signing_hash(&self) -> [u8; 32] {
        self.hash
    }

    /// The primary type's name.
    pub fn primary_type(&self) -> &str {
        &self.typed.primary_type
    }

    /// The domain's `name`, if it has one.
    pub fn domain_name(&self) -> Option<&str> {
        self.typed.domain.name.as_deref()
    }

    /// The domain's `version`, if it has one.
    pub fn domain_version(&self) -> Option<&str> {
        self.typed.domain.version.as_deref()
    }

    /// The domain's `chainId`, if it has one.
    pub fn domain_chain_id(&self) -> Option<U256> {
        self.typed.domain.chain_id
    }

    /// The domain's `verifyingContract`, if it has one.
    pub fn domain_verifying_contract(&self) -> Option<[u8; 20]> {
        self.typed.domain.verifying_contract.map(|a| a.into_array())
    }

    /// The permit, if the primary type is one (module docs).
    pub fn permit(&self) -> Option<&Permit> {
        self.permit.as_ref()
    }
}

/// A JSON document read only to refuse an object that repeats a key, at any depth.
struct NoRepeatedKeys;

impl<'de> serde::Deserialize<'de> for NoRepeatedKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoRepeatedKeys)
    }
}

impl<'de> serde::de::Visitor<'de> for NoRepeatedKeys {
    type Value = NoRepeatedKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<NoRepeatedKeys>()?.is_some() {}
        Ok(self)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key) {
                return Err(serde::de::Error::custom("an object repeats a key"));
            }
            map.next_value::<NoRepeatedKeys>()?;
        }
        Ok(self)
    }
}

/// Refuses JSON nested deeper than [`MAX_TYPED_DATA_DEPTH`] (brackets outside strings).
fn check_depth(bytes: &[u8]) -> Result<(), SignerError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_TYPED_DATA_DEPTH {
                    return Err(SignerError::malformed(format!(
                        "EIP-712 typed data nests deeper than {MAX_TYPED_DATA_DEPTH}"
                    )));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn decode_permit(typed: &TypedData) -> Result<Option<Permit>, SignerError> {
    if !typed.primary_type.to_ascii_lowercase().contains("permit") {
        return Ok(None);
    }
    let encode_type = typed
        .encode_type()
        .map_err(|e| SignerError::malformed(format!("EIP-712 encodeType: {e}")))?;
    let shape = |p: &str, deps: &str| format!("{p}{deps}");
    let value = typed
        .coerce()
        .map_err(|e| SignerError::malformed(format!("EIP-712 message: {e}")))?;
    let unsupported = || {
        SignerError::unsupported(format!(
            "permit type {:.64} of shape {encode_type:.300} is not one this signer decodes",
            typed.primary_type
        ))
    };
    let et = encode_type.as_str();
    let permit = if et == PERMIT && typed.primary_type == "Permit" {
        let token = typed
            .domain
            .verifying_contract
            .ok_or_else(|| SignerError::invalid("EIP-2612 permit without verifyingContract"))?
            .into_array();
        let amount = uint(&value, "value")?;
        Permit {
            kind: "Permit",
            spender: address(&value, "spender")?,
            grants: vec![PermitGrant {
                token,
                amount,
                unlimited: amount == U256::MAX,
            }],
        }
    } else if et
        == shape(
            "PermitSingle(PermitDetails details,address spender,uint256 sigDeadline)",
            PERMIT_DETAILS,
        )
    {
        Permit {
            kind: "PermitSingle",
            spender: address(&value, "spender")?,
            grants: vec![allowance_grant(field(&value, "details")?)?],
        }
    } else if et
        == shape(
            "PermitBatch(PermitDetails[] details,address spender,uint256 sigDeadline)",
            PERMIT_DETAILS,
        )
    {
        Permit {
            kind: "PermitBatch",
            spender: address(&value, "spender")?,
            grants: array(field(&value, "details")?)?
                .iter()
                .map(allowance_grant)
                .collect::<Result<_, _>>()?,
        }
    } else if et
        == shape(
            "PermitTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline)",
            TOKEN_PERMISSIONS,
        )
    {
        Permit {
            kind: "PermitTransferFrom",
            spender: address(&value, "spender")?,
            grants: vec![transfer_grant(field(&value, "permitted")?)?],
        }
    } else if et
        == shape(
            "PermitBatchTransferFrom(TokenPermissions[] permitted,address spender,uint256 nonce,uint256 deadline)",
            TOKEN_PERMISSIONS,
        )
    {
        Permit {
            kind: "PermitBatchTransferFrom",
            spender: address(&value, "spender")?,
            grants: array(field(&value, "permitted")?)?
                .iter()
                .map(transfer_grant)
                .collect::<Result<_, _>>()?,
        }
    } else {
        return Err(unsupported());
    };
    Ok(Some(permit))
}

fn allowance_grant(details: &DynSolValue) -> Result<PermitGrant, SignerError> {
    let amount = uint(details, "amount")?;
    Ok(PermitGrant {
        token: address(details, "token")?,
        amount,
        unlimited: amount == uint160_max(),
    })
}

fn transfer_grant(permitted: &DynSolValue) -> Result<PermitGrant, SignerError> {
    let amount = uint(permitted, "amount")?;
    Ok(PermitGrant {
        token: address(permitted, "token")?,
        amount,
        unlimited: amount == U256::MAX,
    })
}

fn field<'a>(v: &'a DynSolValue, name: &str) -> Result<&'a DynSolValue, SignerError> {
    match v {
        DynSolValue::CustomStruct {
            prop_names, tuple, ..
        } => prop_names
            .iter()
            .position(|p| p == name)
            .and_then(|i| tuple.get(i))
            .ok_or_else(|| SignerError::malformed(format!("permit has no field {name}"))),
        _ => Err(SignerError::malformed("permit field is not a struct")),
    }
}

fn address(v: &DynSolValue, name: &str) -> Result<[u8; 20], SignerError> {
    match field(v, name)? {
        DynSolValue::Address(a) => Ok(a.into_array()),
        _ => Err(SignerError::malformed(format!(
            "permit {name} is not an address"
        ))),
    }
}

fn uint(v: &DynSolValue, name: &str) -> Result<U256, SignerError> {
    match field(v, name)? {
        DynSolValue::Uint(u, _) => Ok(*u),
        _ => Err(SignerError::malformed(format!(
            "permit {name} is not an integer"
        ))),
    }
}

fn array(v: &DynSolValue) -> Result<&[DynSolValue], SignerError> {
    match v {
        DynSolValue::Array(items) => Ok(items),
        _ => Err(SignerError::malformed("permit list is not an array")),
    }
}

#[cfg(test)]
mod tests;
