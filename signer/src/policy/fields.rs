//! Field readers shared by the rule families: amounts, addresses, lists, maps and
//! windows, each strict (one spelling per value) and each naming the field in its
//! error.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;

use alloy_primitives::U256;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::MAX_LIST_ENTRIES;
use crate::address::{parse_evm_address, parse_solana_address};
use crate::SignerError;

/// The longest rolling window a policy may set: 366 days.
pub const MAX_WINDOW_SECS: u64 = 366 * 24 * 60 * 60;

/// Refuses a list or map longer than [`MAX_LIST_ENTRIES`].
pub(crate) fn check_len(what: &str, len: usize) -> Result<(), SignerError> {
    if len > MAX_LIST_ENTRIES {
        return Err(SignerError::policy(format!(
            "{what} has {len} entries, limit {MAX_LIST_ENTRIES}"
        )));
    }
    Ok(())
}

/// A decimal string of at most 78 digits fitting in 256 bits.
pub(crate) fn wei(field: &str, s: &str) -> Result<U256, SignerError> {
    let bad = || {
        SignerError::policy(format!(
            "{field}: {s:.80} is not a decimal integer below 2^256"
        ))
    };
    if s.is_empty() || s.len() > 78 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    U256::from_str_radix(s, 10).map_err(|_| bad())
}

/// An EVM address (see [`parse_evm_address`]).
pub(crate) fn evm_address(field: &str, s: &str) -> Result<[u8; 20], SignerError> {
    parse_evm_address(s).ok_or_else(|| {
        SignerError::policy(format!(
            "{field}: {s:.48} is not a 0x-prefixed 20-byte hex address (mixed case needs a \
             valid EIP-55 checksum)"
        ))
    })
}

/// A Solana address (see [`parse_solana_address`]).
pub(crate) fn solana_address(field: &str, s: &str) -> Result<[u8; 32], SignerError> {
    parse_solana_address(s).ok_or_else(|| {
        SignerError::policy(format!("{field}: {s:.48} is not a base58 32-byte address"))
    })
}

/// A list of EVM addresses, as a set.
pub(crate) fn evm_addresses(
    field: &str,
    list: &[String],
) -> Result<BTreeSet<[u8; 20]>, SignerError> {
    check_len(field, list.len())?;
    list.iter().map(|s| evm_address(field, s)).collect()
}

/// A list of Solana addresses, as a set.
pub(crate) fn solana_addresses(
    field: &str,
    list: &[String],
) -> Result<BTreeSet<[u8; 32]>, SignerError> {
    check_len(field, list.len())?;
    list.iter().map(|s| solana_address(field, s)).collect()
}

/// For an optional field whose absence has a meaning of its own: present means a
/// value of the field's type (`null` is refused).
pub(crate) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A JSON object read into a map, refusing a repeated key (serde_json would keep the
/// last one silently).
pub(crate) fn unique_map<'de, D: Deserializer<'de>, V: Deserialize<'de>>(
    d: D,
) -> Result<BTreeMap<String, V>, D::Error> {
    struct V2<V>(PhantomData<V>);
    impl<'de, V: Deserialize<'de>> Visitor<'de> for V2<V> {
        type Value = BTreeMap<String, V>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = map.next_entry::<String, V>()? {
                if out.contains_key(&k) {
                    return Err(serde::de::Error::custom(format!("duplicate key {k:.64}")));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(V2(PhantomData))
}

/// A rolling-window limit as written: `{"max": …, "window_secs": …}`; `max` is a
/// decimal string (EVM amounts) or an integer (Solana amounts).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WindowDoc<T> {
    pub(crate) max: T,
    pub(crate) window_secs: u64,
}

/// A parsed rolling-window limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window<T> {
    /// The most the window may hold.
    pub max: T,
    /// Its length in seconds (1 to [`MAX_WINDOW_SECS`]).
    pub window_secs: u64,
}

pub(crate) fn window_secs(field: &str, secs: u64) -> Result<u64, SignerError> {
    if secs == 0 || secs > MAX_WINDOW_SECS {
        return Err(SignerError::policy(format!(
            "{field}.window_secs: {secs} is not in 1..={MAX_WINDOW_SECS}"
        )));
    }
    Ok(secs)
}

/// Reads a window whose `max` is a decimal string (wei or token base units).
pub(crate) fn wei_window(field: &str, w: &WindowDoc<String>) -> Result<Window<U256>, SignerError> {
    Ok(Window {
        max: wei(&format!("{field}.max"), &w.max)?,
        window_secs: window_secs(field, w.window_secs)?,
    })
}

/// Reads a window whose `max` is an integer.
pub(crate) fn u64_window(field: &str, w: &WindowDoc<u64>) -> Result<Window<u64>, SignerError> {
    Ok(Window {
        max: w.max,
        window_secs: window_secs(field, w.window_secs)?,
    })
}

impl Window<U256> {
    pub(crate) fn doc(&self) -> WindowDoc<String> {
        WindowDoc {
            max: self.max.to_string(),
            window_secs: self.window_secs,
        }
    }
}

impl Window<u64> {
    pub(crate) fn doc(&self) -> WindowDoc<u64> {
        WindowDoc {
            max: self.max,
            window_secs: self.window_secs,
        }
    }
}
