//! Frame codec: `u32` big-endian length prefix + one CBOR value (RFC 8949) per frame.
//!
//! Hostile-input rules, in the order they apply (rustls `codec.rs` style):
//! 1. [`frame_len`] refuses a prefix above [`MAX_FRAME_LEN`] before anything is read or
//!    allocated;
//! 2. a first pass reads only the header (`version`, `request_id`) and skips the body
//!    without allocating it, with nesting capped at [`MAX_CBOR_DEPTH`] (RUSTSEC-2019-0025
//!    was a nesting stack overflow) and leftover bytes refused;
//! 3. an unknown version is refused before the body is interpreted;
//! 4. the second pass decodes the typed message (again depth-capped; declared lengths are
//!    never trusted for preallocation, so a header claiming 2^60 bytes just hits the end
//!    of the frame), then per-field limits are checked.

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;
use crate::messages::{RequestFrame, ResponseFrame};

/// Version of this protocol, carried in every frame.
pub const PROTOCOL_VERSION: u16 = 3;

/// Largest frame body accepted or produced, in bytes (256 KiB), excluding the prefix.
pub const MAX_FRAME_LEN: usize = 256 * 1024;

/// Length of the frame prefix: a `u32` big-endian body length.
pub const FRAME_PREFIX_LEN: usize = 4;

/// Deepest CBOR nesting (arrays, maps, enum variants) a frame may have. The deepest
/// message needs 7 (tested), so new messages have headroom.
pub const MAX_CBOR_DEPTH: usize = 16;

/// Longest reason kept in an error message, in characters (serde's messages can quote
/// attacker-chosen strings).
const MAX_REASON_CHARS: usize = 200;

/// The part of a frame read by the first pass.
#[derive(Deserialize)]
struct Header {
    version: u16,
    request_id: u64,
    /// Walked (depth-capped, not stored) so that pass one bounds the whole frame.
    #[serde(rename = "body")]
    _body: IgnoredAny,
}

/// Body length announced by a frame prefix.
///
/// # Errors
/// [`ProtocolError::FrameTooLarge`] above [`MAX_FRAME_LEN`], [`ProtocolError::EmptyFrame`]
/// for zero. Call this before reading or allocating the body.
pub fn frame_len(prefix: [u8; FRAME_PREFIX_LEN]) -> Result<usize, ProtocolError> {
    let max = MAX_FRAME_LEN;
    match usize::try_from(u32::from_be_bytes(prefix)) {
        Ok(0) => Err(ProtocolError::EmptyFrame),
        Ok(len) if len <= max => Ok(len),
        Ok(len) => Err(ProtocolError::FrameTooLarge { len, max }),
        Err(_) => Err(ProtocolError::FrameTooLarge {
            len: usize::MAX,
            max,
        }),
    }
}

/// Encodes a request as a whole frame: 4-byte big-endian length, then the CBOR body.
///
/// # Errors
/// [`ProtocolError::Encode`] if `frame.version` is not [`PROTOCOL_VERSION`] or a field is
/// over its limit; [`ProtocolError::FrameTooLarge`] if the body exceeds [`MAX_FRAME_LEN`].
pub fn encode_request(frame: &RequestFrame) -> Result<Vec<u8>, ProtocolError> {
    frame
        .check_limits()
        .map_err(|reason| ProtocolError::Encode { reason })?;
    encode_frame(frame.version, frame)
}

/// Decodes a request frame body (without the length prefix).
///
/// # Errors
/// [`ProtocolError::EmptyFrame`], [`ProtocolError::FrameTooLarge`],
/// [`ProtocolError::Truncated`], [`ProtocolError::TrailingBytes`],
/// [`ProtocolError::TooDeep`], [`ProtocolError::Malformed`] (header unreadable),
/// [`ProtocolError::UnsupportedVersion`] and [`ProtocolError::InvalidBody`] (the last two
/// carry the request id, see [`ProtocolError::request_id`]).
pub fn decode_request(body: &[u8]) -> Result<RequestFrame, ProtocolError> {
    decode_checked(body, |f: &RequestFrame| (f.request_id, f.check_limits()))
}

/// Encodes a response as a whole frame (length prefix + CBOR body).
///
/// # Errors
/// As [`encode_request`].
pub fn encode_response(frame: &ResponseFrame) -> Result<Vec<u8>, ProtocolError> {
    frame
        .check_limits()
        .map_err(|reason| ProtocolError::Encode { reason })?;
    encode_frame(frame.version, frame)
}

/// Decodes a response frame body (without the length prefix).
///
/// # Errors
/// As [`decode_request`].
pub fn decode_response(body: &[u8]) -> Result<ResponseFrame, ProtocolError> {
    decode_checked(body, |f: &ResponseFrame| (f.request_id, f.check_limits()))
}

/// Decodes a frame, then checks its per-field limits: `check` gives the frame's request
/// id and the verdict; a failure is [`ProtocolError::InvalidBody`] with that id.
fn decode_checked<F: DeserializeOwned>(
    body: &[u8],
    check: impl Fn(&F) -> (u64, Result<(), String>),
) -> Result<F, ProtocolError> {
    let frame: F = decode_frame(body)?;
    let (request_id, verdict) = check(&frame);
    verdict.map_err(|reason| ProtocolError::InvalidBody { request_id, reason })?;
    Ok(frame)
}

/// Fuzz entry point (for a `cargo fuzz` target: `fuzz_target!(|d: &[u8]| fuzz_decode(d))`).
/// Runs [`frame_len`] on the first four bytes and [`decode_request`] and
/// [`decode_response`] on all of `data`; every frame that decodes must re-encode and
/// decode to an equal frame.
///
/// # Panics
/// Only if that round trip fails, which is a codec bug; never on malformed input.
pub fn fuzz_decode(data: &[u8]) {
    if let Some((prefix, _)) = data.split_first_chunk::<FRAME_PREFIX_LEN>() {
        let _ = frame_len(*prefix);
    }
    if let Ok(frame) = decode_request(data) {
        let bytes = encode_request(&frame);
        let again = bytes.and_then(|b| decode_request(b.get(FRAME_PREFIX_LEN..).unwrap_or(&[])));
        assert_eq!(again, Ok(frame), "request round trip");
    }
    if let Ok(frame) = decode_response(data) {
        let bytes = encode_response(&frame);
        let again = bytes.and_then(|b| decode_response(b.get(FRAME_PREFIX_LEN..).unwrap_or(&[])));
        assert_eq!(again, Ok(frame), "response round trip");
    }
}

fn encode_frame<F: Serialize>(version: u16, frame: &F) -> Result<Vec<u8>, ProtocolError> {
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::Encode {
            reason: format!("version {version} is not {PROTOCOL_VERSION}"),
        });
    }
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&[0; FRAME_PREFIX_LEN]);
    ciborium::ser::into_writer(frame, &mut out).map_err(|e| ProtocolError::Encode {
        reason: e.to_string(),
    })?;
    let len = out.len() - FRAME_PREFIX_LEN;
    let prefix = u32::try_from(len)
        .ok()
        .filter(|_| len <= MAX_FRAME_LEN)
        .ok_or(ProtocolError::FrameTooLarge {
            len,
            max: MAX_FRAME_LEN,
        })?;
    out.splice(..FRAME_PREFIX_LEN, prefix.to_be_bytes());
    Ok(out)
}

fn decode_frame<F: DeserializeOwned>(body: &[u8]) -> Result<F, ProtocolError> {
    if body.is_empty() {
        return Err(ProtocolError::EmptyFrame);
    }
    if body.len() > MAX_FRAME_LEN {
        return Err(ProtocolError::FrameTooLarge {
            len: body.len(),
            max: MAX_FRAME_LEN,
        });
    }
    decode_frame_with_depth(body, MAX_CBOR_DEPTH)
}

fn decode_frame_with_depth<F: DeserializeOwned>(
    body: &[u8],
    max_depth: usize,
) -> Result<F, ProtocolError> {
    let header: Header = cbor_from_slice(body, max_depth)?;
    if header.version != PROTOCOL_VERSION {
        return Err(ProtocolError::UnsupportedVersion {
            version: header.version,
            request_id: header.request_id,
        });
    }
    cbor_from_slice(body, max_depth).map_err(|e| ProtocolError::InvalidBody {
        request_id: header.request_id,
        reason: match e {
            ProtocolError::Malformed { reason } => reason,
            other => other.to_string(),
        },
    })
}

/// Decodes exactly one CBOR value filling `bytes`, nesting capped at `max_depth`.
fn cbor_from_slice<T: DeserializeOwned>(
    bytes: &[u8],
    max_depth: usize,
) -> Result<T, ProtocolError> {
    use ciborium::de::Error;
    let mut rest = bytes;
    let value = ciborium::de::from_reader_with_recursion_limit(&mut rest, max_depth).map_err(
        |e| match e {
            // A slice reader fails only by running out of bytes.
            Error::Io(_) => ProtocolError::Truncated,
            Error::Syntax(offset) => ProtocolError::Malformed {
                reason: format!("invalid CBOR at byte {offset}"),
            },
            Error::Semantic(_, msg) => ProtocolError::Malformed {
                reason: msg.chars().take(MAX_REASON_CHARS).collect(),
            },
            Error::RecursionLimitExceeded => ProtocolError::TooDeep { max: max_depth },
        },
    )?;
    if !rest.is_empty() {
        return Err(ProtocolError::TrailingBytes { count: rest.len() });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_bytes::ByteBuf;

    use super::*;
    use crate::error::WireError;
    use crate::messages::tests::{policy, record};
    use crate::messages::*;

    fn keyring() -> KeyringRef {
        KeyringRef {
            keyring: "default".into(),
            epoch: 3,
            dek_ciphertext: vec![0xab; 184],
        }
    }

    fn checkpoint() -> crate::SealedCheckpoint {
        crate::SealedCheckpoint {
            seq: 3,
            keyring: "default".into(),
            epoch: 1,
            body: vec![0xa0],
            mac: [8; 32],
        }
    }

    fn audit() -> crate::audit::SignedAuditRecord {
        crate::audit::SignedAuditRecord {
            record: "{}".into(),
            signature: [6; 64],
            audit_key: [5; 32],
        }
    }

    fn statement() -> crate::statement::SignedKeyStatement {
        crate::statement::SignedKeyStatement {
            statement: r#"{"statement_version":1}"#.into(),
            signature: [5; 64],
            identity_key: [6; 32],
        }
    }

    fn metrics() -> crate::metrics::EnclaveMetrics {
        use crate::metrics::*;
        let buckets = vec![1; KMS_DURATION_BUCKETS_SECONDS.len() + 1];
        EnclaveMetrics {
            uptime_secs: 60,
            signatures: vec![SignatureCount {
                kind: PayloadKind::EvmTransaction,
                count: 3,
            }],
            refusals: vec![RefusalCount {
                kind: PayloadKind::SolanaTransaction,
                rule: "solana.max_lamports".into(),
                count: 1,
            }],
            kms: vec![KmsOperationMetrics {
                operation: KmsOperation::Decrypt,
                requests: 12,
                duration_buckets: buckets,
                duration_sum_micros: 12_345,
            }],
            kms_errors: vec![KmsErrorCount {
                operation: KmsOperation::Decrypt,
                kind: KmsErrorKind::Throttled,
                count: 2,
            }],
            dek_cache_hits: 40,
            dek_cache_misses: 12,
            dek_cache_refreshes: 1,
        }
    }

    /// Encodes `m` as a response body without the encoder's checks (as a hostile
    /// enclave, or a bug, could send it).
    fn unchecked_metrics_frame(m: crate::metrics::EnclaveMetrics) -> Vec<u8> {
        let frame = ResponseFrame::ok(5, ResponseBody::Metrics(Box::new(m)));
        let mut out = Vec::new();
        ciborium::ser::into_writer(&frame, &mut out).unwrap();
        out
    }

    #[test]
    fn metrics_round_trip() {
        let frame = ResponseFrame::ok(5, ResponseBody::Metrics(Box::new(metrics())));
        let bytes = encode_response(&frame).unwrap();
        assert_eq!(decode_response(body_of(&bytes)).unwrap(), frame);
        let request = RequestFrame::new(6, Request::Metrics);
        let bytes = encode_request(&request).unwrap();
        assert_eq!(decode_request(body_of(&bytes)).unwrap(), request);
    }

    /// `n` refusals like `m`'s first, each with a rule of its own (`rule.0`, `rule.1`, …).
    fn distinct_refusals(
        m: &crate::metrics::EnclaveMetrics,
        n: usize,
    ) -> Vec<crate::metrics::RefusalCount> {
        (0..n)
            .map(|i| crate::metrics::RefusalCount {
                rule: format!("rule.{i}"),
                ..m.refusals[0].clone()
            })
            .collect()
    }

    #[test]
    fn metrics_at_the_entry_limit_decode() {
        let mut m = metrics();
        let n = crate::metrics::MAX_METRIC_ENTRIES - 3;
        m.refusals = distinct_refusals(&m, n);
        assert!(decode_response(&unchecked_metrics_frame(m)).is_ok());
    }

    #[test]
    fn rejects_oversize_metrics() {
        let mut m = metrics();
        let n = crate::metrics::MAX_METRIC_ENTRIES - 2;
        m.refusals = distinct_refusals(&m, n);
        let err = decode_response(&unchecked_metrics_frame(m.clone())).unwrap_err();
        assert!(
            matches!(err, ProtocolError::InvalidBody { request_id: 5, .. }),
            "{err:?}"
        );
        let frame = ResponseFrame::ok(5, ResponseBody::Metrics(Box::new(m)));
        assert!(matches!(
            encode_response(&frame),
            Err(ProtocolError::Encode { .. })
        ));
    }

    #[test]
    fn rejects_metrics_with_free_form_labels_or_wrong_buckets() {
        let mut bad_rule = metrics();
        bad_rule.refusals[0].rule = "0xDeadBeef\"}".into();
        let mut bad_buckets = metrics();
        bad_buckets.kms[0].duration_buckets.pop();
        for m in [bad_rule, bad_buckets] {
            let err = decode_response(&unchecked_metrics_frame(m)).unwrap_err();
            assert!(matches!(err, ProtocolError::InvalidBody { .. }), "{err:?}");
        }
    }

    #[test]
    fn rejects_metrics_whose_histogram_buckets_overflow_when_added() {
        // The parent sums the buckets (count, cumulative buckets): a hostile enclave's
        // `[u64::MAX, 1, ...]` panicked the scrape in a debug parent.
        let mut m = metrics();
        m.kms[0].duration_buckets[0] = u64::MAX;
        let err = decode_response(&unchecked_metrics_frame(m.clone())).unwrap_err();
        assert!(matches!(err, ProtocolError::InvalidBody { .. }), "{err:?}");
        m.kms[0].duration_buckets = vec![0; crate::metrics::KMS_DURATION_BUCKETS_SECONDS.len() + 1];
        m.kms[0].duration_buckets[3] = u64::MAX;
        assert!(decode_response(&unchecked_metrics_frame(m)).is_ok());
    }

    #[test]
    fn rejects_metrics_that_repeat_a_label_set() {
        // Two samples of one series (documented as at most once each): refused rather
        // than left to Prometheus to drop.
        let m = metrics();
        assert!(decode_response(&unchecked_metrics_frame(m.clone())).is_ok());
        let mut twice = m.clone();
        twice.refusals.push(twice.refusals[0].clone());
        let err = decode_response(&unchecked_metrics_frame(twice)).unwrap_err();
        assert!(matches!(err, ProtocolError::InvalidBody { .. }), "{err:?}");
        let mut twice = m.clone();
        twice.kms.push(twice.kms[0].clone());
        assert!(decode_response(&unchecked_metrics_frame(twice)).is_err());
        let mut twice = m;
        twice.signatures.push(twice.signatures[0].clone());
        assert!(decode_response(&unchecked_metrics_frame(twice)).is_err());
    }

    fn all_requests() -> Vec<Request> {
        vec![
            Request::Configure {
                kms: KmsConfig {
                    region: "us-east-1".into(),
                    endpoint_url: Some("http://127.0.0.1:4566".into()),
                    kms_key_id: "alias/ekms".into(),
                    credentials: Credentials {
                        access_key_id: "AKIA".into(),
                        secret_access_key: "secret".into(),
                        session_token: None,
                    },
                },
                dek_cache: DekCachePolicy {
                    ttl_secs: 300,
                    max_uses: 0,
                },
            },
            Request::Status,
            Request::Attestation {
                nonce: Some(vec![1; 32]),
                user_data: None,
            },
            Request::CreateKeyring {
                keyring: "default".into(),
                epoch: 1,
            },
            Request::GenerateKey {
                algorithm: Algorithm::Ed25519,
                owner: None,
                label: Some("bot".into()),
                policy_json: "{}".into(),
                keyring: keyring(),
            },
            Request::SetPolicy {
                record: record(),
                keyring: keyring(),
                current: policy(),
                policy_json: r#"{"chain_ids":[1,10]}"#.into(),
                approval: Some(crate::OwnerApproval {
                    version: 2,
                    expires_at: 1_800_000_000,
                    signature: vec![7; 65],
                }),
            },
            Request::DisableKey {
                record: record(),
                keyring: keyring(),
                current: policy(),
            },
            Request::EnableKey {
                record: record(),
                keyring: keyring(),
                current: policy(),
                approval: None,
            },
            Request::StopAll,
            Request::ResumeAll,
            Request::Restore {
                keyring: keyring(),
                checkpoint: Some(checkpoint()),
                last_audit: Some(audit()),
            },
            Request::Commit { seq: 9 },
            Request::Metrics,
            Request::CertifyKey {
                record: record(),
                keyring: keyring(),
            },
            Request::Sign {
                record: record(),
                keyring: keyring(),
                policy: policy(),
                payload: SignPayload {
                    kind: PayloadKind::EvmTransaction,
                    bytes: vec![0x02, 0xf8, 0x70],
                },
            },
        ]
    }

    fn all_responses() -> Vec<Result<ResponseBody, WireError>> {
        let mut pcrs = BTreeMap::new();
        pcrs.insert(0u16, ByteBuf::from(vec![0u8; 48]));
        pcrs.insert(8u16, ByteBuf::from(vec![1u8; 48]));
        vec![
            Ok(ResponseBody::Configured),
            Ok(ResponseBody::Status(StatusInfo {
                state: EnclaveState::Ready,
                mode: Mode::Simulation,
                pcrs,
                kms_target: Some(crate::KmsTarget {
                    region: "us-east-1".into(),
                    endpoint_url: Some("https://127.0.0.1:4566".into()),
                    kms_key_id: "arn:aws:kms:us-east-1:111122223333:key/k".into(),
                }),
                restored: true,
                stopped: false,
            })),
            Ok(ResponseBody::Attestation {
                document: vec![0xd2, 0x84],
            }),
            Ok(ResponseBody::KeyringCreated {
                keyring: "default".into(),
                epoch: 1,
                dek_ciphertext: vec![9; 184],
            }),
            Ok(ResponseBody::KeyGenerated {
                record: record(),
                policy: policy(),
                statement: Box::new(statement()),
                identity_document: vec![0xd2; 40],
                audit: audit(),
            }),
            Ok(ResponseBody::KeyCertified {
                statement: Box::new(statement()),
                identity_document: vec![0x84; 40],
            }),
            Ok(ResponseBody::CheckpointPending {
                checkpoint: checkpoint(),
                policy: Some(policy()),
            }),
            Ok(ResponseBody::Committed {
                audit: audit(),
                audit_document: Some(vec![0xd2; 10]),
            }),
            Ok(ResponseBody::Metrics(Box::new(metrics()))),
            Ok(ResponseBody::Metrics(Box::default())),
            Ok(ResponseBody::Refused {
                error: WireError::KeyDisabled,
                audit: audit(),
            }),
            Ok(ResponseBody::Signed {
                output: SignOutput::Evm {
                    r: [1; 32],
                    s: [2; 32],
                    y_parity: 1,
                    v: 37,
                    signed_transaction: vec![0x02, 0xf8],
                    transaction_hash: [3; 32],
                },
                audit: audit(),
            }),
            Ok(ResponseBody::Signed {
                output: SignOutput::Solana {
                    signature: [4; 64],
                    signed_transaction: vec![1, 2, 3],
                },
                audit: audit(),
            }),
            Err(WireError::PolicyDenied {
                rule: "max_value".into(),
                message: "too much".into(),
            }),
            Err(WireError::SealedStateInvalid),
            Err(WireError::Kms {
                code: "AccessDeniedException".into(),
                message: "no".into(),
            }),
        ]
    }

    /// Splits an encoded frame, checking the prefix against the body length.
    fn body_of(frame: &[u8]) -> &[u8] {
        let (prefix, body) = frame.split_first_chunk::<4>().unwrap();
        assert_eq!(frame_len(*prefix).unwrap(), body.len());
        body
    }

    /// CBOR of a map {version, request_id, body} with `body` given as raw CBOR bytes.
    fn raw_frame(version: u16, request_id: u64, body: &[u8]) -> Vec<u8> {
        #[derive(Serialize)]
        struct Raw {
            version: u16,
            request_id: u64,
            body: u8,
        }
        let mut out = Vec::new();
        ciborium::ser::into_writer(
            &Raw {
                version,
                request_id,
                body: 0,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(out.pop(), Some(0)); // replace the placeholder body (CBOR 0 = 0x00)
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn round_trips_every_request() {
        for (i, body) in all_requests().into_iter().enumerate() {
            let frame = RequestFrame::new(i as u64 + 1000, body);
            let bytes = encode_request(&frame).unwrap();
            assert_eq!(decode_request(body_of(&bytes)).unwrap(), frame);
        }
    }

    #[test]
    fn round_trips_every_response() {
        for (i, body) in all_responses().into_iter().enumerate() {
            let frame = ResponseFrame {
                version: PROTOCOL_VERSION,
                request_id: u64::MAX - i as u64,
                body,
            };
            let bytes = encode_response(&frame).unwrap();
            assert_eq!(decode_response(body_of(&bytes)).unwrap(), frame);
        }
    }

    #[test]
    fn byte_fields_are_cbor_byte_strings() {
        let frame = ResponseFrame::ok(
            1,
            ResponseBody::Signed {
                output: SignOutput::Solana {
                    signature: [0xee; 64],
                    signed_transaction: vec![],
                },
                audit: audit(),
            },
        );
        let bytes = encode_response(&frame).unwrap();
        // 0x58 0x40 = byte string of 64 bytes, followed by the bytes themselves.
        let needle = [&[0x58, 0x40][..], &[0xee; 64]].concat();
        assert!(bytes.windows(needle.len()).any(|w| w == needle));
    }

    #[test]
    fn frame_len_accepts_up_to_max() {
        assert_eq!(frame_len(1u32.to_be_bytes()), Ok(1));
        assert_eq!(
            frame_len((MAX_FRAME_LEN as u32).to_be_bytes()),
            Ok(MAX_FRAME_LEN)
        );
    }

    #[test]
    fn rejects_oversize_prefix() {
        for len in [MAX_FRAME_LEN as u32 + 1, u32::MAX] {
            assert!(matches!(
                frame_len(len.to_be_bytes()),
                Err(ProtocolError::FrameTooLarge { .. })
            ));
        }
        assert_eq!(frame_len([0; 4]), Err(ProtocolError::EmptyFrame));
    }

    #[test]
    fn rejects_oversize_body() {
        let big = vec![0u8; MAX_FRAME_LEN + 1];
        assert!(matches!(
            decode_request(&big),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
        let frame = ResponseFrame::ok(
            1,
            ResponseBody::Attestation {
                document: vec![0; MAX_FRAME_LEN],
            },
        );
        assert!(matches!(
            encode_response(&frame),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn rejects_truncated_body() {
        let bytes = encode_request(&RequestFrame::new(5, all_requests().remove(6))).unwrap();
        let body = body_of(&bytes);
        for cut in 1..body.len() {
            let err = decode_request(&body[..cut]).unwrap_err();
            assert_eq!(err, ProtocolError::Truncated, "cut at {cut}");
        }
        assert_eq!(decode_request(&[]), Err(ProtocolError::EmptyFrame));
    }

    #[test]
    fn rejects_trailing_bytes() {
        let bytes = encode_request(&RequestFrame::new(5, Request::Status)).unwrap();
        let mut body = body_of(&bytes).to_vec();
        body.extend_from_slice(&[0xf6, 0xf6]);
        assert_eq!(
            decode_request(&body),
            Err(ProtocolError::TrailingBytes { count: 2 })
        );
    }

    #[test]
    fn rejects_unknown_version() {
        // Body of a future version that this build cannot parse: the version is the error.
        let body = raw_frame(PROTOCOL_VERSION + 1, 42, &[0x63, b'N', b'e', b'w']);
        let err = decode_request(&body).unwrap_err();
        assert_eq!(
            err,
            ProtocolError::UnsupportedVersion {
                version: PROTOCOL_VERSION + 1,
                request_id: 42
            }
        );
        assert_eq!(err.request_id(), Some(42));
        assert!(err
            .to_string()
            .contains(&format!("version {}", PROTOCOL_VERSION + 1)));
        assert!(matches!(
            decode_response(&raw_frame(0, 1, &[0xf6])),
            Err(ProtocolError::UnsupportedVersion { version: 0, .. })
        ));
        let mut frame = RequestFrame::new(1, Request::Status);
        frame.version = PROTOCOL_VERSION + 1;
        assert!(matches!(
            encode_request(&frame),
            Err(ProtocolError::Encode { .. })
        ));
    }

    #[test]
    fn current_version_raw_frame_decodes() {
        // Positive twin of the test above: same construction, current version.
        let body = raw_frame(
            PROTOCOL_VERSION,
            42,
            &[0x66, b'S', b't', b'a', b't', b'u', b's'],
        );
        assert_eq!(
            decode_request(&body),
            Ok(RequestFrame::new(42, Request::Status))
        );
    }

    #[test]
    fn rejects_deeply_nested_cbor() {
        // 10_000 nested one-element arrays as the body, and as the whole frame.
        let mut nested = vec![0x81; 10_000];
        nested.push(0x00);
        assert_eq!(
            decode_request(&raw_frame(1, 1, &nested)),
            Err(ProtocolError::TooDeep {
                max: MAX_CBOR_DEPTH
            })
        );
        assert!(decode_request(&nested).is_err());
        // Same with maps and indefinite-length arrays.
        let mut maps = [0xa1, 0x00].repeat(10_000);
        maps.push(0x00);
        assert_eq!(
            decode_response(&raw_frame(1, 1, &maps)),
            Err(ProtocolError::TooDeep {
                max: MAX_CBOR_DEPTH
            })
        );
        let mut indef = vec![0x9f; 10_000];
        indef.extend(std::iter::repeat_n(0xff, 10_000));
        assert!(decode_response(&raw_frame(1, 1, &indef)).is_err());
    }

    /// Depth actually needed by the deepest messages, measured by decoding every message
    /// with increasing limits.
    /// with increasing limits (7: `Metrics` → its list of KMS operations → a histogram).
    const DEEPEST_MESSAGE: usize = 7;

    #[test]
    fn deepest_messages_fit_the_depth_limit() {
        let mut needed = 0;
        for body in all_requests() {
            let bytes = encode_request(&RequestFrame::new(1, body)).unwrap();
            let depth = (1..=MAX_CBOR_DEPTH)
                .find(|&d| decode_frame_with_depth::<RequestFrame>(body_of(&bytes), d).is_ok())
                .unwrap();
            needed = needed.max(depth);
        }
        for body in all_responses() {
            let frame = ResponseFrame {
                version: PROTOCOL_VERSION,
                request_id: 1,
                body,
            };
            let bytes = encode_response(&frame).unwrap();
            let depth = (1..=MAX_CBOR_DEPTH)
                .find(|&d| decode_frame_with_depth::<ResponseFrame>(body_of(&bytes), d).is_ok())
                .unwrap();
            needed = needed.max(depth);
        }
        assert_eq!(needed, DEEPEST_MESSAGE);
        const { assert!(MAX_CBOR_DEPTH >= DEEPEST_MESSAGE + 4, "keep headroom") };
    }

    #[test]
    fn rejects_messages_one_level_too_deep() {
        // With one level less, the deepest messages fail with `TooDeep`, nothing else.
        let limit = DEEPEST_MESSAGE - 1;
        let too_deep = ProtocolError::TooDeep { max: limit };
        let is_too_deep = |e: ProtocolError| match e {
            ProtocolError::InvalidBody { reason, .. } => reason == too_deep.to_string(),
            e => e == too_deep,
        };
        let mut failures = 0;
        for body in all_requests() {
            let bytes = encode_request(&RequestFrame::new(1, body)).unwrap();
            if let Err(e) = decode_frame_with_depth::<RequestFrame>(body_of(&bytes), limit) {
                assert!(is_too_deep(e.clone()), "{e:?}");
                failures += 1;
            }
        }
        for body in all_responses() {
            let frame = ResponseFrame {
                version: PROTOCOL_VERSION,
                request_id: 1,
                body,
            };
            let bytes = encode_response(&frame).unwrap();
            if let Err(e) = decode_frame_with_depth::<ResponseFrame>(body_of(&bytes), limit) {
                assert!(is_too_deep(e.clone()), "{e:?}");
                failures += 1;
            }
        }
        assert!(failures > 0);
    }

    #[test]
    fn rejects_wrong_types() {
        let cases = [
            // body is an integer
            raw_frame(PROTOCOL_VERSION, 7, &[0x01]),
            // unknown request variant
            raw_frame(PROTOCOL_VERSION, 7, &[0x63, b'F', b'o', b'o']),
            // unit variant Status given a payload
            raw_frame(
                PROTOCOL_VERSION,
                7,
                &[0xa1, 0x66, b'S', b't', b'a', b't', b'u', b's', 0x01],
            ),
        ];
        for body in cases {
            let err = decode_request(&body).unwrap_err();
            assert!(matches!(err, ProtocolError::InvalidBody { .. }), "{err:?}");
            assert_eq!(err.request_id(), Some(7));
        }
        // Header fields of the wrong type: no request id can be trusted.
        let mut bad_version = Vec::new();
        ciborium::ser::into_writer(
            &BTreeMap::from([("version", "1"), ("request_id", "x"), ("body", "Status")]),
            &mut bad_version,
        )
        .unwrap();
        assert!(matches!(
            decode_request(&bad_version),
            Err(ProtocolError::Malformed { .. })
        ));
        // A CBOR array instead of a map, a negative request id, a bare integer.
        let negative_id = ciborium::Value::Map(vec![
            ("version".into(), PROTOCOL_VERSION.into()),
            ("request_id".into(), (-1).into()),
            ("body".into(), "Status".into()),
        ]);
        let mut negative = Vec::new();
        ciborium::ser::into_writer(&negative_id, &mut negative).unwrap();
        for bytes in [
            vec![0x83, 0x01, 0x01, 0x66, b'S', b't', b'a', b't', b'u', b's'],
            negative,
            vec![0x01],
        ] {
            assert!(
                matches!(decode_request(&bytes), Err(ProtocolError::Malformed { .. })),
                "{bytes:x?}"
            );
        }
        // Unknown field inside a struct.
        let frame = RequestFrame::new(
            9,
            Request::CreateKeyring {
                keyring: "k".into(),
                epoch: 1,
            },
        );
        let mut value = ciborium::Value::serialized(&frame).unwrap();
        if let ciborium::Value::Map(top) = &mut value {
            if let Some((_, ciborium::Value::Map(body))) = top.get_mut(2) {
                if let Some((_, ciborium::Value::Map(fields))) = body.get_mut(0) {
                    fields.push(("extra".into(), 1.into()));
                }
            }
        }
        let mut bytes = Vec::new();
        ciborium::ser::into_writer(&value, &mut bytes).unwrap();
        assert!(matches!(
            decode_request(&bytes),
            Err(ProtocolError::InvalidBody { request_id: 9, .. })
        ));
    }

    #[test]
    fn rejects_huge_declared_lengths() {
        // Headers claiming 2^60 items or bytes, with nothing behind them: must fail fast
        // without allocating (a 2^60-byte allocation would abort the test process).
        let mut huge = 1u64 << 60;
        let len = huge.to_be_bytes();
        for major in [0x5b, 0x7b, 0x9b, 0xbb] {
            let mut body = vec![0xa1, 0x6b];
            body.extend_from_slice(b"Attestation");
            body.extend_from_slice(&[0xa2, 0x65]);
            body.extend_from_slice(b"nonce");
            body.push(major);
            body.extend_from_slice(&len);
            let err = decode_request(&raw_frame(1, 1, &body)).unwrap_err();
            assert_eq!(err, ProtocolError::Truncated, "major {major:#x}");
        }
        // Also directly as the frame body and as a byte-string array element.
        huge = u64::MAX;
        let mut top = vec![0x9b];
        top.extend_from_slice(&huge.to_be_bytes());
        assert!(decode_response(&top).is_err());
    }

    #[test]
    fn rejects_oversize_attestation_nonce_on_decode() {
        let frame = RequestFrame::new(
            3,
            Request::Attestation {
                nonce: Some(vec![0; 513]),
                user_data: None,
            },
        );
        assert!(matches!(
            encode_request(&frame),
            Err(ProtocolError::Encode { .. })
        ));
        let mut body = Vec::new();
        ciborium::ser::into_writer(&frame, &mut body).unwrap();
        assert!(matches!(
            decode_request(&body),
            Err(ProtocolError::InvalidBody { request_id: 3, .. })
        ));
    }

    #[test]
    fn fuzz_entry_survives_mutations() {
        // A cheap stand-in for cargo-fuzz: mutate valid frames with a xorshift PRNG.
        let mut seeds: Vec<Vec<u8>> = all_requests()
            .into_iter()
            .map(|b| encode_request(&RequestFrame::new(1, b)).unwrap())
            .collect();
        seeds.extend(all_responses().into_iter().map(|b| {
            encode_response(&ResponseFrame {
                version: PROTOCOL_VERSION,
                request_id: 2,
                body: b,
            })
            .unwrap()
        }));
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut decoded = 0;
        for round in 0..20_000 {
            let seed = &seeds[round % seeds.len()];
            let mut data = seed[FRAME_PREFIX_LEN..].to_vec();
            for _ in 0..(next() % 4 + 1) {
                let pos = (next() as usize) % data.len().max(1);
                match next() % 4 {
                    0 if !data.is_empty() => data[pos] ^= 1 << (next() % 8),
                    1 if !data.is_empty() => data[pos] = next() as u8,
                    2 => data.insert(pos.min(data.len()), next() as u8),
                    _ => data.truncate(pos),
                }
            }
            fuzz_decode(&data);
            decoded += usize::from(decode_request(&data).is_ok() || decode_response(&data).is_ok());
        }
        // The mutator is not so destructive that nothing ever decodes.
        assert!(decoded > 0);
    }
}
