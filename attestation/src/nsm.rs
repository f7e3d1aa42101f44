//! The NSM provider trait shared by the real (`/dev/nsm`) and simulated Nitro Secure
//! Modules, its request type, its error type, and the request-size rules both enforce.
//!
//! The limits are the ones AWS documents for the attestation document
//! (`aws-nitro-enclaves-nsm-api` `docs/attestation_process.md` §3.2, "Syntactical
//! validation"; §2.2 describes the fields, not these bounds): `user_data` and
//! `nonce` at most 512 bytes, `public_key` at most 1024 bytes. Checking them here gives the
//! same error from both providers instead of an opaque `InvalidArgument` from the device.

/// Largest `user_data` the NSM accepts, in bytes.
pub const MAX_USER_DATA_LEN: usize = 512;
/// Largest `nonce` the NSM accepts, in bytes.
pub const MAX_NONCE_LEN: usize = 512;
/// Largest `public_key` the NSM accepts, in bytes.
pub const MAX_PUBLIC_KEY_LEN: usize = 1024;
/// Number of PCRs a Nitro Enclave exposes in its attestation documents (indices `0..16`).
pub const NITRO_PCR_COUNT: u16 = 16;
/// Highest PCR index plus one that the NSM can describe (the NSM has 32 PCRs).
pub const NSM_MAX_PCRS: u16 = 32;

/// What the caller asks the NSM to bind into a fresh attestation document.
///
/// Every field is optional and copied verbatim into the signed payload; an absent field
/// is encoded as CBOR `null`, as the NSM does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttestationRequest<'a> {
    /// Application data (≤ 512 bytes), e.g. a hash binding the document to a session.
    pub user_data: Option<&'a [u8]>,
    /// Freshness nonce chosen by the verifier (≤ 512 bytes).
    pub nonce: Option<&'a [u8]>,
    /// A public key the enclave holds (≤ 1024 bytes, 1 at least), e.g. the DER
    /// SubjectPublicKeyInfo of the RSA key KMS encrypts `CiphertextForRecipient` to.
    pub public_key: Option<&'a [u8]>,
}

impl AttestationRequest<'_> {
    /// Checks the request against the NSM's documented size limits.
    ///
    /// # Errors
    /// [`NsmError::InputTooLarge`] naming the first field over its limit, or
    /// [`NsmError::InvalidArgument`] for an empty `public_key` (the document format
    /// requires 1..=1024 bytes when present).
    pub fn validate(&self) -> Result<(), NsmError> {
        let checks = [
            ("user_data", self.user_data, MAX_USER_DATA_LEN),
            ("nonce", self.nonce, MAX_NONCE_LEN),
            ("public_key", self.public_key, MAX_PUBLIC_KEY_LEN),
        ];
        for (field, value, max) in checks {
            if let Some(v) = value {
                if v.len() > max {
                    return Err(NsmError::InputTooLarge {
                        field,
                        len: v.len(),
                        max,
                    });
                }
            }
        }
        if self.public_key.is_some_and(<[u8]>::is_empty) {
            return Err(NsmError::InvalidArgument("public_key is empty"));
        }
        Ok(())
    }
}

/// A Nitro Secure Module: the enclave's source of attestation documents and entropy.
///
/// Implemented by [`crate::NitroNsm`] (the `/dev/nsm` device) and, with the `simulation`
/// feature, by `SimulatedNsm`. Implementations are shareable across threads.
pub trait NsmProvider: Send + Sync {
    /// COSE_Sign1 bytes of a fresh attestation document.
    ///
    /// The bytes are the untagged COSE_Sign1 (RFC 9052 §4.2) the NSM emits: protected
    /// header `{1: -35}` (ES384), empty unprotected header, the CBOR attestation document
    /// as payload and a 96-byte raw `r || s` P-384 signature.
    ///
    /// # Errors
    /// [`NsmError::InputTooLarge`] / [`NsmError::InvalidArgument`] for a request over the
    /// documented limits; any device or signing failure.
    fn attestation_document(&self, req: &AttestationRequest<'_>) -> Result<Vec<u8>, NsmError>;

    /// Fills `out` entirely with random bytes from the NSM's entropy source.
    ///
    /// # Errors
    /// A device failure, or a device that returns no entropy.
    fn random(&self, out: &mut [u8]) -> Result<(), NsmError>;

    /// The current value of PCR `index` (48 bytes for the SHA-384 bank).
    ///
    /// # Errors
    /// [`NsmError::InvalidIndex`] for an index the NSM does not have (≥ 32), or a device
    /// failure.
    fn describe_pcr(&self, index: u16) -> Result<Vec<u8>, NsmError>;
}

/// The error codes a Nitro Secure Module answers with (`aws_nitro_enclaves_nsm_api::api::ErrorCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NsmErrorCode {
    /// `Success` inside an error response: the device contradicted itself.
    Success,
    /// Input argument(s) invalid.
    InvalidArgument,
    /// PCR index out of bounds.
    InvalidIndex,
    /// The response does not correspond to the request.
    InvalidResponse,
    /// The PCR is locked (read-only).
    ReadOnlyIndex,
    /// The NSM lacks the capability for the request.
    InvalidOperation,
    /// The output buffer was too small.
    BufferTooSmall,
    /// The input was too large.
    InputTooLarge,
    /// An internal NSM error (also what the driver reports for an `ioctl` failure).
    InternalError,
}

impl std::fmt::Display for NsmErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Success => "success code in an error response",
            Self::InvalidArgument => "invalid argument",
            Self::InvalidIndex => "PCR index out of bounds",
            Self::InvalidResponse => "response does not match the request",
            Self::ReadOnlyIndex => "PCR is locked",
            Self::InvalidOperation => "operation not supported",
            Self::BufferTooSmall => "output buffer too small",
            Self::InputTooLarge => "input too large",
            Self::InternalError => "internal error",
        })
    }
}

/// Errors of an [`NsmProvider`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NsmError {
    /// The NSM device could not be opened (not inside a Nitro Enclave, or no permission).
    #[error("cannot open the Nitro Secure Module device {path}: {source}")]
    Open {
        /// The device path tried.
        path: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The NSM answered a request with an error code.
    #[error("the Nitro Secure Module refused the request: {0}")]
    Device(NsmErrorCode),
    /// The NSM answered with a response of another kind than the request.
    #[error("the Nitro Secure Module answered with an unexpected response kind")]
    UnexpectedResponse,
    /// The NSM returned no entropy.
    #[error("the Nitro Secure Module returned no random bytes")]
    NoEntropy,
    /// A request field is over its documented limit.
    #[error("{field} is {len} bytes; the Nitro Secure Module accepts at most {max}")]
    InputTooLarge {
        /// The field (`user_data`, `nonce` or `public_key`).
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A request argument is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The PCR index does not exist.
    #[error("PCR index {0} does not exist")]
    InvalidIndex(u16),
    /// The simulated NSM failed to build or sign a document.
    #[error("simulated NSM: {0}")]
    Simulation(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_requests_at_the_limits() {
        let big = vec![1u8; 1024];
        let req = AttestationRequest {
            user_data: Some(&big[..512]),
            nonce: Some(&big[..512]),
            public_key: Some(&big),
        };
        assert!(req.validate().is_ok());
        assert!(AttestationRequest::default().validate().is_ok());
    }

    #[test]
    fn rejects_requests_over_the_limits() {
        let big = vec![1u8; 1025];
        for (req, field) in [
            (
                AttestationRequest {
                    user_data: Some(&big[..513]),
                    ..Default::default()
                },
                "user_data",
            ),
            (
                AttestationRequest {
                    nonce: Some(&big[..513]),
                    ..Default::default()
                },
                "nonce",
            ),
            (
                AttestationRequest {
                    public_key: Some(&big),
                    ..Default::default()
                },
                "public_key",
            ),
        ] {
            match req.validate() {
                Err(NsmError::InputTooLarge { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let empty_key = AttestationRequest {
            public_key: Some(&[]),
            ..Default::default()
        };
        assert!(matches!(
            empty_key.validate(),
            Err(NsmError::InvalidArgument(_))
        ));
    }
}
