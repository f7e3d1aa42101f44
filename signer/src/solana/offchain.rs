//! Solana off-chain messages (the "Off-chain message signing" proposal of the Solana
//! docs, as `solana-offchain-message` implements it and `solana sign-offchain-message`
//! uses it), header version 0:
//!
//! | field | bytes |
//! |---|---|
//! | signing domain `b"\xffsolana offchain"` | 16 |
//! | header version (0) | 1 |
//! | application domain | 32 |
//! | message format (0 restricted ASCII, 1 limited UTF-8, 2 extended UTF-8) | 1 |
//! | signer count (≥ 1) | 1 |
//! | signers (ed25519 public keys) | 32 × count |
//! | message length (u16 LE, ≥ 1) | 2 |
//! | message | length |
//!
//! The signature is ed25519 over the whole serialization. Its `0xff` first byte can
//! never begin a transaction message: a first byte with the high bit set marks a
//! versioned message, and version 127 does not exist. So a signature of this kind is
//! never a valid transaction signature, and a transaction can never pass as a message.
//!
//! Decoding is exact, as agave's `deserialize_v0`: no trailing bytes, the format byte
//! must be the one the content and total size imply (printable ASCII and ≤ 1232 bytes
//! in total: 0; other UTF-8 ≤ 1232: 1; UTF-8 up to 65535: 2), and a zero signer key is
//! refused when there are several signers.

use crate::SignerError;

/// The signing domain specifier.
pub const SIGNING_DOMAIN: &[u8; 16] = b"\xffsolana offchain";

/// Largest serialized off-chain message (u16::MAX, the extended format's limit).
pub const MAX_OFFCHAIN_MESSAGE: usize = u16::MAX as usize;

/// Largest total size of the formats a hardware wallet shows (0 and 1).
const MAX_LEDGER: usize = 1232;

/// The message format byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffchainFormat {
    /// 0: printable ASCII, total ≤ 1232 bytes.
    RestrictedAscii,
    /// 1: UTF-8, total ≤ 1232 bytes.
    LimitedUtf8,
    /// 2: UTF-8, total ≤ 65535 bytes.
    ExtendedUtf8,
}

/// A decoded off-chain message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffchainMessage {
    bytes: Vec<u8>,
    application_domain: [u8; 32],
    format: OffchainFormat,
    signers: Vec<[u8; 32]>,
    body_offset: usize,
}

impl OffchainMessage {
    /// Decodes a serialized off-chain message (module docs).
    ///
    /// # Errors
    /// [`SignerError::Oversize`] above [`MAX_OFFCHAIN_MESSAGE`];
    /// [`SignerError::Malformed`] for a wrong signing domain, a version other than 0,
    /// truncation, trailing bytes, a zero count or length, or a format byte the
    /// content does not imply.
    pub fn decode(bytes: &[u8]) -> Result<OffchainMessage, SignerError> {
        if bytes.len() > MAX_OFFCHAIN_MESSAGE {
            return Err(SignerError::Oversize {
                what: "Solana off-chain message",
                len: bytes.len(),
                limit: MAX_OFFCHAIN_MESSAGE,
            });
        }
        let bad = |m: &str| SignerError::malformed(format!("Solana off-chain message: {m}"));
        let rest = bytes
            .strip_prefix(SIGNING_DOMAIN.as_slice())
            .ok_or_else(|| bad("no \\xffsolana offchain signing domain"))?;
        let (&version, rest) = rest.split_first().ok_or_else(|| bad("truncated"))?;
        if version != 0 {
            return Err(bad("header version is not 0"));
        }
        let (domain, rest) = rest.split_at_checked(32).ok_or_else(|| bad("truncated"))?;
        let (&format, rest) = rest.split_first().ok_or_else(|| bad("truncated"))?;
        let (&count, mut rest) = rest.split_first().ok_or_else(|| bad("truncated"))?;
        if count == 0 {
            return Err(bad("no signers"));
        }
        let mut signers = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let (key, r) = rest.split_at_checked(32).ok_or_else(|| bad("truncated"))?;
            let mut k = [0u8; 32];
            k.copy_from_slice(key);
            signers.push(k);
            rest = r;
        }
        if signers.len() > 1 && signers.contains(&[0u8; 32]) {
            return Err(bad("a zero signer among several"));
        }
        let (len, body) = rest.split_at_checked(2).ok_or_else(|| bad("truncated"))?;
        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        if len == 0 {
            return Err(bad("empty message"));
        }
        if body.len() != len {
            return Err(bad(
                "message length does not match (truncated or trailing bytes)",
            ));
        }
        let expected =
            if bytes.len() <= MAX_LEDGER && body.iter().all(|b| (0x20..=0x7e).contains(b)) {
                OffchainFormat::RestrictedAscii
            } else if std::str::from_utf8(body).is_err() {
                return Err(bad("message is not UTF-8"));
            } else if bytes.len() <= MAX_LEDGER {
                OffchainFormat::LimitedUtf8
            } else {
                OffchainFormat::ExtendedUtf8
            };
        let declared = match format {
            0 => OffchainFormat::RestrictedAscii,
            1 => OffchainFormat::LimitedUtf8,
            2 => OffchainFormat::ExtendedUtf8,
            _ => return Err(bad("unknown message format")),
        };
        if declared != expected {
            return Err(bad("format byte does not match the content"));
        }
        let mut application_domain = [0u8; 32];
        application_domain.copy_from_slice(domain);
        Ok(OffchainMessage {
            bytes: bytes.to_vec(),
            application_domain,
            format: declared,
            signers,
            body_offset: bytes.len() - len,
        })
    }

    /// Serializes a version-0 message with the format its content implies.
    ///
    /// # Errors
    /// As [`OffchainMessage::decode`] of the result (empty message, no signers, too
    /// long, not UTF-8).
    pub fn encode(
        application_domain: &[u8; 32],
        signers: &[[u8; 32]],
        message: &[u8],
    ) -> Result<Vec<u8>, SignerError> {
        let count = u8::try_from(signers.len())
            .map_err(|_| SignerError::invalid("more than 255 off-chain message signers"))?;
        let len = u16::try_from(message.len())
            .map_err(|_| SignerError::invalid("off-chain message too long"))?;
        let total = 16 + 1 + 32 + 1 + 1 + 32 * signers.len() + 2 + message.len();
        let format = if total <= MAX_LEDGER && message.iter().all(|b| (0x20..=0x7e).contains(b)) {
            0
        } else if total <= MAX_LEDGER {
            1
        } else {
            2
        };
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(SIGNING_DOMAIN);
        out.push(0);
        out.extend_from_slice(application_domain);
        out.push(format);
        out.push(count);
        for s in signers {
            out.extend_from_slice(s);
        }
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(message);
        Self::decode(&out)?;
        Ok(out)
    }

    /// The whole serialization: what the signature covers.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The application domain.
    pub fn application_domain(&self) -> &[u8; 32] {
        &self.application_domain
    }

    /// The format.
    pub fn format(&self) -> OffchainFormat {
        self.format
    }

    /// The signers the message names.
    pub fn signers(&self) -> &[[u8; 32]] {
        &self.signers
    }

    /// The message body (UTF-8 text).
    pub fn body(&self) -> &[u8] {
        self.bytes.get(self.body_offset..).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_the_agave_layout() {
        let bytes = OffchainMessage::encode(&[0x42; 32], &[[0x11; 32]], b"Hello").unwrap();
        // agave serialization.rs test_parsing_functions, with the domain and version
        // in front.
        let mut expected = b"\xffsolana offchain\x00".to_vec();
        expected.extend_from_slice(&[0x42; 32]);
        expected.extend_from_slice(&[0, 1]);
        expected.extend_from_slice(&[0x11; 32]);
        expected.extend_from_slice(&[5, 0]);
        expected.extend_from_slice(b"Hello");
        assert_eq!(bytes, expected);
        let m = OffchainMessage::decode(&bytes).unwrap();
        assert_eq!(m.body(), b"Hello");
        assert_eq!(m.signers(), &[[0x11; 32]]);
        assert_eq!(m.format(), OffchainFormat::RestrictedAscii);
        let utf8 = OffchainMessage::encode(&[0; 32], &[[1; 32]], "Привет".as_bytes()).unwrap();
        assert_eq!(
            OffchainMessage::decode(&utf8).unwrap().format(),
            OffchainFormat::LimitedUtf8
        );
        let long = OffchainMessage::encode(&[0; 32], &[[1; 32]], &[b'a'; 2000]).unwrap();
        assert_eq!(
            OffchainMessage::decode(&long).unwrap().format(),
            OffchainFormat::ExtendedUtf8
        );
    }

    #[test]
    fn rejects_malformed_messages() {
        let good = OffchainMessage::encode(&[0; 32], &[[1; 32]], b"Hi").unwrap();
        for cut in 0..good.len() {
            assert!(OffchainMessage::decode(&good[..cut]).is_err(), "cut {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(b'!');
        assert!(OffchainMessage::decode(&trailing).is_err());
        let mut v1 = good.clone();
        v1[16] = 1;
        assert!(OffchainMessage::decode(&v1).is_err());
        let mut wrong_format = good.clone();
        wrong_format[49] = 1;
        assert!(OffchainMessage::decode(&wrong_format).is_err());
        let mut domain = good.clone();
        domain[0] = 0xfe;
        assert!(OffchainMessage::decode(&domain).is_err());
        assert!(OffchainMessage::encode(&[0; 32], &[], b"Hi").is_err());
        assert!(OffchainMessage::encode(&[0; 32], &[[1; 32]], b"").is_err());
        assert!(OffchainMessage::encode(&[0; 32], &[[1; 32], [0; 32]], b"x").is_err());
        assert!(OffchainMessage::encode(&[0; 32], &[[1; 32]], &[0xff, 0xfe]).is_err());
    }
}
