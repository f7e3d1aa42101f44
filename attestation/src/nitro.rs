//! The real Nitro Secure Module: [`NitroNsm`] talks to `/dev/nsm` through the `ioctl`
//! driver of `aws-nitro-enclaves-nsm-api` (whose `unsafe` stays in that crate), and maps
//! its CBOR responses and error codes to [`NsmError`].
//!
//! The device exists only inside a Nitro Enclave. Elsewhere [`NitroNsm::open`] fails with
//! [`NsmError::Open`]; the response mapping is unit-tested without the device.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use aws_nitro_enclaves_nsm_api::api::{ErrorCode, Request, Response};
use aws_nitro_enclaves_nsm_api::driver::nsm_process_request;
use serde_bytes::ByteBuf;

use crate::nsm::{AttestationRequest, NsmError, NsmErrorCode, NsmProvider, NSM_MAX_PCRS};

/// Path of the Nitro Secure Module device inside an enclave.
pub const NSM_DEVICE_PATH: &str = "/dev/nsm";

/// The Nitro Secure Module of the running enclave, reached through `/dev/nsm`.
///
/// The device file stays open for the life of the value and is closed on drop. The
/// kernel driver serialises requests, so one `NitroNsm` can be shared across threads.
#[derive(Debug)]
pub struct NitroNsm {
    device: File,
}

impl NitroNsm {
    /// Opens `/dev/nsm`.
    ///
    /// # Errors
    /// [`NsmError::Open`] when the device does not exist (not in an enclave) or cannot be
    /// opened read-write.
    pub fn open() -> Result<Self, NsmError> {
        Self::open_path(Path::new(NSM_DEVICE_PATH))
    }

    /// Opens the NSM device at `path` (for tests and unusual device layouts).
    ///
    /// # Errors
    /// [`NsmError::Open`] when the file cannot be opened read-write.
    pub fn open_path(path: &Path) -> Result<Self, NsmError> {
        let device = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| NsmError::Open {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Self { device })
    }

    fn request(&self, request: Request) -> Response {
        nsm_process_request(self.device.as_raw_fd(), request)
    }
}

impl NsmProvider for NitroNsm {
    fn attestation_document(&self, req: &AttestationRequest<'_>) -> Result<Vec<u8>, NsmError> {
        req.validate()?;
        let to_buf = |v: Option<&[u8]>| v.map(|b| ByteBuf::from(b.to_vec()));
        let response = self.request(Request::Attestation {
            user_data: to_buf(req.user_data),
            nonce: to_buf(req.nonce),
            public_key: to_buf(req.public_key),
        });
        attestation_from_response(response)
    }

    fn random(&self, out: &mut [u8]) -> Result<(), NsmError> {
        let mut filled = 0;
        while filled < out.len() {
            let chunk = random_from_response(self.request(Request::GetRandom))?;
            let n = chunk.len().min(out.len() - filled);
            out[filled..filled + n].copy_from_slice(&chunk[..n]);
            filled += n;
        }
        Ok(())
    }

    fn describe_pcr(&self, index: u16) -> Result<Vec<u8>, NsmError> {
        if index >= NSM_MAX_PCRS {
            return Err(NsmError::InvalidIndex(index));
        }
        pcr_from_response(self.request(Request::DescribePCR { index }), index)
    }
}

/// Maps the NSM's error code to ours.
pub(crate) fn map_error_code(code: &ErrorCode) -> NsmErrorCode {
    match code {
        ErrorCode::Success => NsmErrorCode::Success,
        ErrorCode::InvalidArgument => NsmErrorCode::InvalidArgument,
        ErrorCode::InvalidIndex => NsmErrorCode::InvalidIndex,
        ErrorCode::InvalidResponse => NsmErrorCode::InvalidResponse,
        ErrorCode::ReadOnlyIndex => NsmErrorCode::ReadOnlyIndex,
        ErrorCode::InvalidOperation => NsmErrorCode::InvalidOperation,
        ErrorCode::BufferTooSmall => NsmErrorCode::BufferTooSmall,
        ErrorCode::InputTooLarge => NsmErrorCode::InputTooLarge,
        ErrorCode::InternalError => NsmErrorCode::InternalError,
    }
}

fn unexpected(response: &Response) -> NsmError {
    match response {
        Response::Error(code) => NsmError::Device(map_error_code(code)),
        _ => NsmError::UnexpectedResponse,
    }
}

/// The document of an `Attestation` response.
pub(crate) fn attestation_from_response(response: Response) -> Result<Vec<u8>, NsmError> {
    match response {
        Response::Attestation { document } if !document.is_empty() => Ok(document),
        Response::Attestation { .. } => Err(NsmError::UnexpectedResponse),
        other => Err(unexpected(&other)),
    }
}

/// The entropy of a `GetRandom` response; an empty answer is an error so that
/// [`NitroNsm::random`] cannot loop forever.
pub(crate) fn random_from_response(response: Response) -> Result<Vec<u8>, NsmError> {
    match response {
        Response::GetRandom { random } if !random.is_empty() => Ok(random),
        Response::GetRandom { .. } => Err(NsmError::NoEntropy),
        other => Err(unexpected(&other)),
    }
}

/// The PCR value of a `DescribePCR` response.
pub(crate) fn pcr_from_response(response: Response, index: u16) -> Result<Vec<u8>, NsmError> {
    match response {
        Response::DescribePCR { data, .. } => Ok(data),
        Response::Error(ErrorCode::InvalidIndex) => Err(NsmError::InvalidIndex(index)),
        other => Err(unexpected(&other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_fails_cleanly_without_the_device() {
        let missing = Path::new("/nonexistent/dev/nsm");
        match NitroNsm::open_path(missing) {
            Err(NsmError::Open { path, source }) => {
                assert_eq!(path, "/nonexistent/dev/nsm");
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        if !Path::new(NSM_DEVICE_PATH).exists() {
            let err = NitroNsm::open().expect_err("no /dev/nsm on this machine");
            assert!(err.to_string().contains("/dev/nsm"), "{err}");
        }
    }

    #[test]
    fn rejects_oversized_requests_before_the_device() {
        // A regular file stands in for the device: validation fails before any ioctl.
        let file = tempfile::NamedTempFile::new().unwrap();
        let nsm = NitroNsm::open_path(file.path()).unwrap();
        let big = [0u8; 513];
        let req = AttestationRequest {
            nonce: Some(&big),
            ..Default::default()
        };
        assert!(matches!(
            nsm.attestation_document(&req),
            Err(NsmError::InputTooLarge { field: "nonce", .. })
        ));
        assert!(matches!(
            nsm.describe_pcr(NSM_MAX_PCRS),
            Err(NsmError::InvalidIndex(32))
        ));
    }

    #[test]
    fn maps_attestation_responses() {
        let doc = attestation_from_response(Response::Attestation {
            document: vec![0x84, 1, 2],
        })
        .unwrap();
        assert_eq!(doc, vec![0x84, 1, 2]);
    }

    #[test]
    fn rejects_wrong_or_failed_attestation_responses() {
        assert!(matches!(
            attestation_from_response(Response::Error(ErrorCode::InputTooLarge)),
            Err(NsmError::Device(NsmErrorCode::InputTooLarge))
        ));
        assert!(matches!(
            attestation_from_response(Response::GetRandom { random: vec![1] }),
            Err(NsmError::UnexpectedResponse)
        ));
        assert!(matches!(
            attestation_from_response(Response::Attestation { document: vec![] }),
            Err(NsmError::UnexpectedResponse)
        ));
    }

    #[test]
    fn maps_random_and_pcr_responses() {
        assert_eq!(
            random_from_response(Response::GetRandom { random: vec![7; 4] }).unwrap(),
            vec![7; 4]
        );
        assert_eq!(
            pcr_from_response(
                Response::DescribePCR {
                    lock: true,
                    data: vec![9; 48]
                },
                3
            )
            .unwrap(),
            vec![9; 48]
        );
    }

    #[test]
    fn rejects_empty_entropy_and_bad_pcr_responses() {
        assert!(matches!(
            random_from_response(Response::GetRandom { random: vec![] }),
            Err(NsmError::NoEntropy)
        ));
        assert!(matches!(
            random_from_response(Response::Error(ErrorCode::InternalError)),
            Err(NsmError::Device(NsmErrorCode::InternalError))
        ));
        assert!(matches!(
            pcr_from_response(Response::Error(ErrorCode::InvalidIndex), 40),
            Err(NsmError::InvalidIndex(40))
        ));
        assert!(matches!(
            pcr_from_response(Response::LockPCR, 1),
            Err(NsmError::UnexpectedResponse)
        ));
    }

    #[test]
    fn maps_every_error_code() {
        let all = [
            (ErrorCode::Success, NsmErrorCode::Success),
            (ErrorCode::InvalidArgument, NsmErrorCode::InvalidArgument),
            (ErrorCode::InvalidIndex, NsmErrorCode::InvalidIndex),
            (ErrorCode::InvalidResponse, NsmErrorCode::InvalidResponse),
            (ErrorCode::ReadOnlyIndex, NsmErrorCode::ReadOnlyIndex),
            (ErrorCode::InvalidOperation, NsmErrorCode::InvalidOperation),
            (ErrorCode::BufferTooSmall, NsmErrorCode::BufferTooSmall),
            (ErrorCode::InputTooLarge, NsmErrorCode::InputTooLarge),
            (ErrorCode::InternalError, NsmErrorCode::InternalError),
        ];
        for (code, ours) in all {
            assert_eq!(map_error_code(&code), ours);
        }
    }
}
