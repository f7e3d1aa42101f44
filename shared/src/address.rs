//! Transport addresses, parsed at run time from strings (STYLE rule 6): `vsock://CID:PORT`
//! and `unix:/path`. Parsing and `Display` only; opening the socket is the `io` module of
//! each binary.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::ProtocolError;

/// Longest Unix socket path accepted, in bytes: `sun_path` is 108 bytes on Linux,
/// including the terminating NUL.
const MAX_UNIX_PATH_LEN: usize = 107;

/// Where a protocol endpoint listens or connects.
///
/// Text forms (round-trip through [`FromStr`] and [`Display`](fmt::Display)):
/// - `vsock://CID:PORT`, both decimal `u32` (e.g. `vsock://3:5000`,
///   `vsock://4294967295:5000` for `VMADDR_CID_ANY`);
/// - `unix:/path` (or a relative path), at most 107 bytes, no NUL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// An `AF_VSOCK` address.
    Vsock {
        /// Context id (3 = parent, see [`crate::PARENT_CID`]).
        cid: u32,
        /// vsock port.
        port: u32,
    },
    /// An `AF_UNIX` stream socket path.
    Unix(PathBuf),
}

impl FromStr for Address {
    type Err = ProtocolError;

    /// Parses `vsock://CID:PORT` or `unix:/path`.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidAddress`] for any other scheme, a missing or non-decimal
    /// CID/port, a value above `u32::MAX`, or an empty, NUL-containing or too long path.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason| ProtocolError::InvalidAddress {
            input: input.chars().take(128).collect(),
            reason,
        };
        if let Some(rest) = input.strip_prefix("vsock://") {
            let (cid, port) = rest
                .split_once(':')
                .ok_or_else(|| fail("expected CID:PORT"))?;
            let cid = parse_decimal_u32(cid).ok_or_else(|| fail("CID is not a decimal u32"))?;
            let port = parse_decimal_u32(port).ok_or_else(|| fail("port is not a decimal u32"))?;
            Ok(Address::Vsock { cid, port })
        } else if let Some(path) = input.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(fail("empty socket path"));
            }
            if path.contains('\0') {
                return Err(fail("socket path contains NUL"));
            }
            if path.len() > MAX_UNIX_PATH_LEN {
                return Err(fail("socket path longer than 107 bytes"));
            }
            Ok(Address::Unix(PathBuf::from(path)))
        } else {
            Err(fail("expected vsock://CID:PORT or unix:/path"))
        }
    }
}

/// Strict decimal: ASCII digits only (no sign, no whitespace), fits in `u32`.
fn parse_decimal_u32(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Vsock { cid, port } => write!(f, "vsock://{cid}:{port}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_vsock() {
        let a: Address = "vsock://3:5000".parse().unwrap();
        assert_eq!(
            a,
            Address::Vsock {
                cid: crate::PARENT_CID,
                port: crate::ENCLAVE_PORT
            }
        );
        assert_eq!(a.to_string(), "vsock://3:5000");
        let any: Address = "vsock://4294967295:5000".parse().unwrap();
        assert_eq!(
            any,
            Address::Vsock {
                cid: crate::VMADDR_CID_ANY,
                port: 5000
            }
        );
    }

    #[test]
    fn rejects_bad_vsock() {
        for s in [
            "vsock://3",
            "vsock://:5000",
            "vsock://3:",
            "vsock://+3:5000",
            "vsock://3:-1",
            "vsock://3:5000:1",
            "vsock://4294967296:5000",
            "vsock:// 3:5000",
            "vsock:3:5000",
            "tcp://127.0.0.1:5000",
            "",
        ] {
            assert!(
                matches!(
                    s.parse::<Address>(),
                    Err(ProtocolError::InvalidAddress { .. })
                ),
                "{s}"
            );
        }
    }

    #[test]
    fn parses_and_displays_unix() {
        let a: Address = "unix:/run/ekms/enclave.sock".parse().unwrap();
        assert_eq!(a, Address::Unix("/run/ekms/enclave.sock".into()));
        assert_eq!(a.to_string(), "unix:/run/ekms/enclave.sock");
    }

    #[test]
    fn rejects_bad_unix() {
        let long = format!("unix:/{}", "a".repeat(107));
        for s in ["unix:", "unix:/a\0b", long.as_str(), "/tmp/x.sock"] {
            assert!(s.parse::<Address>().is_err(), "{s:?}");
        }
    }
}
