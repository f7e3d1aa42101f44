//! What the enclave reports about its own work ([`crate::Request::Metrics`] →
//! [`crate::ResponseBody::Metrics`]): counters of signatures and refusals, of KMS calls,
//! their errors and latency, and of data-key cache hits and misses. The parent turns
//! them into Prometheus metrics (`docs/METRICS.md`).
//!
//! Rules for maintainers:
//! - every label is from a closed set (an enum here, or a policy rule name, which the
//!   decoder checks for shape): never a key id, an address, a keyring name or anything
//!   else a caller chooses, so that the parent's metric cardinality stays bounded;
//! - nothing here is secret or depends on a secret; counters are monotonic `u64` since
//!   the enclave booted (a restart resets them, which Prometheus' `rate()` handles);
//! - histograms have the fixed bounds [`KMS_DURATION_BUCKETS_SECONDS`], so both sides
//!   agree without sending them.

use serde::{Deserialize, Serialize};

use crate::messages::PayloadKind;

/// Upper bounds (seconds, `le`) of the KMS latency histogram's buckets; a last,
/// implicit bucket is `+Inf`. From 5 ms (a cached regional call) to 10 s (the SDK's
/// retries under throttling).
pub const KMS_DURATION_BUCKETS_SECONDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Most entries in all the lists of one [`EnclaveMetrics`] together (signatures,
/// refusals, KMS operations, KMS errors). The real sets are far smaller (6 kinds; 6 × ~60
/// refusal reasons at the very worst; 2 × 7 KMS errors).
pub const MAX_METRIC_ENTRIES: usize = 512;

/// Longest refusal reason ([`RefusalCount::rule`]), in bytes.
pub const MAX_RULE_LABEL_LEN: usize = 64;

/// The enclave's counters since it booted. Lists hold only non-zero entries, each label
/// combination at most once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnclaveMetrics {
    /// Seconds since the enclave booted.
    pub uptime_secs: u64,
    /// Payloads signed, by kind (the algorithm follows from the kind).
    pub signatures: Vec<SignatureCount>,
    /// Sign requests refused and audited (policy, disabled key, store stop, payload),
    /// by kind and reason.
    pub refusals: Vec<RefusalCount>,
    /// KMS calls by operation, with their latency.
    pub kms: Vec<KmsOperationMetrics>,
    /// Failed KMS calls by operation and kind of failure.
    pub kms_errors: Vec<KmsErrorCount>,
    /// Data keys served from the enclave's cache.
    pub dek_cache_hits: u64,
    /// Data keys that needed a KMS `Decrypt` (cache empty, expired, used up or off).
    pub dek_cache_misses: u64,
    /// KMS `Decrypt`s of a cached data key's blob made ahead of the entry's end (its
    /// last tenth of uses or of its time to live), by the one request that found it
    /// due, while the others went on with the cached key.
    #[serde(default)]
    pub dek_cache_refreshes: u64,
}

/// Signatures of one payload kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureCount {
    /// Payload kind.
    pub kind: PayloadKind,
    /// Signatures made.
    pub count: u64,
}

/// Refusals of one payload kind for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefusalCount {
    /// Payload kind.
    pub kind: PayloadKind,
    /// A policy rule name (`Rule::as_str` of the signer, e.g. `evm.max_value`) for a
    /// policy denial, else the [`crate::WireError::code`] of the refusal
    /// (`key_disabled`, `store_stopped`, `invalid_payload`, …), or `other`. At most
    /// [`MAX_RULE_LABEL_LEN`] bytes of `[a-z0-9_.]`.
    pub rule: String,
    /// Refusals.
    pub count: u64,
}

/// KMS operations the enclave calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KmsOperation {
    /// `Decrypt` (a keyring's data key, on a cache miss).
    Decrypt,
    /// `GenerateDataKey` (a new keyring, and the readiness round trip at `Configure`).
    GenerateDataKey,
}

impl KmsOperation {
    /// Every operation.
    pub const ALL: [KmsOperation; 2] = [KmsOperation::Decrypt, KmsOperation::GenerateDataKey];

    /// The AWS API name (`"Decrypt"`, `"GenerateDataKey"`), used as the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            KmsOperation::Decrypt => "Decrypt",
            KmsOperation::GenerateDataKey => "GenerateDataKey",
        }
    }
}

/// Why a KMS call failed, as a closed set (an AWS error code is a free string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KmsErrorKind {
    /// `AccessDeniedException` (key policy, PCRs, IAM).
    AccessDenied,
    /// `ThrottlingException` or another throttling code.
    Throttled,
    /// Any other error KMS answered with.
    Service,
    /// No KMS answer: connection, TLS, timeout.
    Transport,
    /// `CiphertextForRecipient` refused, or a `Plaintext` present.
    Recipient,
    /// An answer lacking a field, or with one of the wrong size.
    Answer,
    /// The attestation document for the `Recipient` could not be made.
    Attestation,
}

impl KmsErrorKind {
    /// Every kind.
    pub const ALL: [KmsErrorKind; 7] = [
        KmsErrorKind::AccessDenied,
        KmsErrorKind::Throttled,
        KmsErrorKind::Service,
        KmsErrorKind::Transport,
        KmsErrorKind::Recipient,
        KmsErrorKind::Answer,
        KmsErrorKind::Attestation,
    ];

    /// The metric label (`"access_denied"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            KmsErrorKind::AccessDenied => "access_denied",
            KmsErrorKind::Throttled => "throttled",
            KmsErrorKind::Service => "service",
            KmsErrorKind::Transport => "transport",
            KmsErrorKind::Recipient => "recipient",
            KmsErrorKind::Answer => "answer",
            KmsErrorKind::Attestation => "attestation",
        }
    }
}

/// Calls of one KMS operation and their latency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsOperationMetrics {
    /// The operation.
    pub operation: KmsOperation,
    /// Calls made (successful or not).
    pub requests: u64,
    /// Calls per latency bucket, *not* cumulative: entry `i` counts calls that took at
    /// most [`KMS_DURATION_BUCKETS_SECONDS`]`[i]` and more than the bound before; the
    /// last entry counts the rest (`+Inf`). Exactly
    /// `KMS_DURATION_BUCKETS_SECONDS.len() + 1` entries.
    pub duration_buckets: Vec<u64>,
    /// Sum of the calls' durations, in microseconds.
    pub duration_sum_micros: u64,
}

/// Failed calls of one KMS operation, of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsErrorCount {
    /// The operation.
    pub operation: KmsOperation,
    /// The kind of failure.
    pub kind: KmsErrorKind,
    /// Failures.
    pub count: u64,
}

/// Whether `rule` is a well-formed refusal reason: 1..=[`MAX_RULE_LABEL_LEN`] bytes of
/// `[a-z0-9_.]` (every `Rule::as_str` and `WireError::code` is).
pub fn is_rule_label(rule: &str) -> bool {
    !rule.is_empty()
        && rule.len() <= MAX_RULE_LABEL_LEN
        && rule
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

impl EnclaveMetrics {
    /// Checks the bounds a decoder enforces: at most [`MAX_METRIC_ENTRIES`] entries in
    /// all, well-formed refusal reasons, and histograms of exactly the fixed bucket
    /// count whose buckets add up within a `u64`. Returns the reason on failure.
    pub(crate) fn check_limits(&self) -> Result<(), String> {
        let entries =
            self.signatures.len() + self.refusals.len() + self.kms.len() + self.kms_errors.len();
        if entries > MAX_METRIC_ENTRIES {
            return Err(format!(
                "metrics have {entries} entries, more than {MAX_METRIC_ENTRIES}"
            ));
        }
        if let Some(r) = self.refusals.iter().find(|r| !is_rule_label(&r.rule)) {
            let shown: String = r.rule.chars().take(MAX_RULE_LABEL_LEN).collect();
            return Err(format!(
                "refusal reason {shown:?} is not [a-z0-9_.]{{1,64}}"
            ));
        }
        // Each label set at most once (a second sample of one series would be a
        // contradiction the exposition format cannot carry).
        if has_duplicate(self.signatures.iter().map(|c| c.kind))
            || has_duplicate(self.refusals.iter().map(|c| (c.kind, c.rule.as_str())))
            || has_duplicate(self.kms.iter().map(|k| k.operation))
            || has_duplicate(self.kms_errors.iter().map(|e| (e.operation, e.kind)))
        {
            return Err("metrics repeat a label set".into());
        }
        let want = KMS_DURATION_BUCKETS_SECONDS.len() + 1;
        if let Some(k) = self.kms.iter().find(|k| k.duration_buckets.len() != want) {
            return Err(format!(
                "{} latency histogram has {} buckets, not {want}",
                k.operation.as_str(),
                k.duration_buckets.len()
            ));
        }
        // The parent adds the buckets up (the histogram's count and cumulative buckets):
        // a sum past `u64::MAX` would overflow there.
        if let Some(k) = self.kms.iter().find(|k| {
            k.duration_buckets
                .iter()
                .try_fold(0u64, |sum, b| sum.checked_add(*b))
                .is_none()
        }) {
            return Err(format!(
                "{} latency histogram counts more than 2^64 calls",
                k.operation.as_str()
            ));
        }
        Ok(())
    }
}

/// Whether `labels` holds one value twice (at most [`MAX_METRIC_ENTRIES`] of them:
/// checked after the entry count).
fn has_duplicate<T: Eq + std::hash::Hash>(labels: impl Iterator<Item = T>) -> bool {
    let mut seen = std::collections::HashSet::new();
    labels.into_iter().any(|l| !seen.insert(l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_pinned() {
        let ops: Vec<_> = KmsOperation::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(ops, ["Decrypt", "GenerateDataKey"]);
        let kinds: Vec<_> = KmsErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "access_denied",
                "throttled",
                "service",
                "transport",
                "recipient",
                "answer",
                "attestation"
            ]
        );
    }

    #[test]
    fn rule_labels_have_a_closed_shape() {
        for ok in ["evm.max_value", "key_disabled", "a", &"x".repeat(64)] {
            assert!(is_rule_label(ok), "{ok}");
        }
    }

    #[test]
    fn rejects_rule_labels_of_another_shape() {
        for bad in ["", "Evm", "a b", "a\"}", "0xabc-1", &"x".repeat(65), "é"] {
            assert!(!is_rule_label(bad), "{bad}");
        }
    }

    #[test]
    fn buckets_increase() {
        assert!(KMS_DURATION_BUCKETS_SECONDS.windows(2).all(|w| w[0] < w[1]));
    }
}
