//! The enclave's counters ([`ekms_shared::metrics`]): signatures and refusals by
//! payload kind and reason, KMS calls by operation (errors by kind, latency histogram),
//! data-key cache hits and misses. Read by `Request::Metrics` in any state.
//!
//! Rules for maintainers:
//! - the signing path only does relaxed atomic adds on fixed arrays (no lock, no
//!   allocation); a snapshot ([`Counters::snapshot`]) allocates, on the parent's request;
//! - labels are indexes into closed sets (payload kinds, the signer's `Rule::ALL` and a
//!   fixed list of wire error codes), never a key id, an address or a keyring name;
//! - nothing here reads or depends on a secret.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ekms_shared::metrics::{
    EnclaveMetrics, KmsErrorCount, KmsErrorKind, KmsOperation, KmsOperationMetrics, RefusalCount,
    SignatureCount, KMS_DURATION_BUCKETS_SECONDS,
};
use ekms_shared::PayloadKind;
use ekms_signer::Rule;

use crate::kms::KmsError;

/// Refusal reasons that are not policy rules: the [`ekms_shared::WireError::code`]s a
/// `Sign` can be refused (and audited) with, then `other` for anything else.
const OTHER_REASONS: [&str; 10] = [
    "key_disabled",
    "store_stopped",
    "invalid_payload",
    "unsupported_payload",
    "invalid_policy",
    "bad_request",
    "sealed_state_invalid",
    "busy",
    "internal",
    "other",
];

const KINDS: usize = PayloadKind::ALL.len();
const REASONS: usize = Rule::ALL.len() + OTHER_REASONS.len();
const OPS: usize = KmsOperation::ALL.len();
const ERROR_KINDS: usize = KmsErrorKind::ALL.len();
const BUCKETS: usize = KMS_DURATION_BUCKETS_SECONDS.len() + 1;

/// Calls of one KMS operation.
#[derive(Debug, Default)]
struct KmsCounters {
    requests: AtomicU64,
    errors: [AtomicU64; ERROR_KINDS],
    buckets: [AtomicU64; BUCKETS],
    sum_micros: AtomicU64,
}

/// Every counter, since boot.
#[derive(Debug)]
pub struct Counters {
    booted: Instant,
    signatures: [AtomicU64; KINDS],
    refusals: [[AtomicU64; REASONS]; KINDS],
    kms: [KmsCounters; OPS],
    dek_hits: AtomicU64,
    dek_misses: AtomicU64,
    dek_refreshes: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            booted: Instant::now(),
            signatures: Default::default(),
            refusals: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            kms: Default::default(),
            dek_hits: AtomicU64::new(0),
            dek_misses: AtomicU64::new(0),
            dek_refreshes: AtomicU64::new(0),
        }
    }
}

fn kind_index(kind: PayloadKind) -> usize {
    PayloadKind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or_default()
}

fn op_index(op: KmsOperation) -> usize {
    KmsOperation::ALL
        .iter()
        .position(|o| *o == op)
        .unwrap_or_default()
}

/// Index of a refusal reason: a policy rule name, a known wire code, else `other`.
fn reason_index(reason: &str) -> usize {
    Rule::ALL
        .iter()
        .position(|r| r.as_str() == reason)
        .or_else(|| {
            OTHER_REASONS
                .iter()
                .position(|r| *r == reason)
                .map(|i| Rule::ALL.len() + i)
        })
        .unwrap_or(REASONS - 1)
}

fn reason_name(index: usize) -> &'static str {
    match Rule::ALL.get(index) {
        Some(rule) => rule.as_str(),
        None => OTHER_REASONS
            .get(index - Rule::ALL.len())
            .copied()
            .unwrap_or("other"),
    }
}

/// The kind of a failed KMS call (AWS codes folded into a closed set).
pub fn error_kind(e: &KmsError) -> KmsErrorKind {
    match e {
        KmsError::Service { code, .. } => match code.as_str() {
            "AccessDeniedException" => KmsErrorKind::AccessDenied,
            "ThrottlingException"
            | "Throttling"
            | "RequestLimitExceeded"
            | "LimitExceededException" => KmsErrorKind::Throttled,
            _ => KmsErrorKind::Service,
        },
        KmsError::Transport(_) | KmsError::Config(_) => KmsErrorKind::Transport,
        KmsError::Recipient(_) => KmsErrorKind::Recipient,
        KmsError::Answer(_) => KmsErrorKind::Answer,
        KmsError::Attestation(_) => KmsErrorKind::Attestation,
    }
}

impl Counters {
    /// One payload of `kind` signed.
    pub fn signed(&self, kind: PayloadKind) {
        self.signatures[kind_index(kind)].fetch_add(1, Ordering::Relaxed);
    }

    /// One `Sign` of `kind` refused for `reason` (a rule name or a wire error code).
    pub fn refused(&self, kind: PayloadKind, reason: &str) {
        self.refusals[kind_index(kind)][reason_index(reason)].fetch_add(1, Ordering::Relaxed);
    }

    /// A data key served from the cache.
    pub fn dek_hit(&self) {
        self.dek_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// A data key that needed KMS.
    pub fn dek_miss(&self) {
        self.dek_misses.fetch_add(1, Ordering::Relaxed);
    }

    /// A cached data key fetched again ahead of its entry's end.
    pub fn dek_refresh(&self) {
        self.dek_refreshes.fetch_add(1, Ordering::Relaxed);
    }

    /// One KMS call of `op` that took `elapsed` and ended with `result`.
    pub fn kms_call<T>(&self, op: KmsOperation, elapsed: Duration, result: &Result<T, KmsError>) {
        let c = &self.kms[op_index(op)];
        c.requests.fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let bucket = KMS_DURATION_BUCKETS_SECONDS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(BUCKETS - 1);
        c.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        c.sum_micros.fetch_add(micros, Ordering::Relaxed);
        if let Err(e) = result {
            let kind = error_kind(e);
            let i = KmsErrorKind::ALL
                .iter()
                .position(|k| *k == kind)
                .unwrap_or_default();
            c.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters now, non-zero entries only (each counter is read on its own: a
    /// snapshot taken during a signature may show it in one counter and not yet in
    /// another, as any Prometheus scrape may).
    pub fn snapshot(&self) -> EnclaveMetrics {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut m = EnclaveMetrics {
            uptime_secs: self.booted.elapsed().as_secs(),
            dek_cache_hits: load(&self.dek_hits),
            dek_cache_misses: load(&self.dek_misses),
            dek_cache_refreshes: load(&self.dek_refreshes),
            ..EnclaveMetrics::default()
        };
        for (k, kind) in PayloadKind::ALL.into_iter().enumerate() {
            let count = load(&self.signatures[k]);
            if count > 0 {
                m.signatures.push(SignatureCount { kind, count });
            }
            for (r, counter) in self.refusals[k].iter().enumerate() {
                let count = load(counter);
                if count > 0 {
                    m.refusals.push(RefusalCount {
                        kind,
                        rule: reason_name(r).to_owned(),
                        count,
                    });
                }
            }
        }
        for (o, operation) in KmsOperation::ALL.into_iter().enumerate() {
            let c = &self.kms[o];
            let requests = load(&c.requests);
            if requests > 0 {
                m.kms.push(KmsOperationMetrics {
                    operation,
                    requests,
                    duration_buckets: c.buckets.iter().map(load).collect(),
                    duration_sum_micros: load(&c.sum_micros),
                });
            }
            for (e, kind) in KmsErrorKind::ALL.into_iter().enumerate() {
                let count = load(&c.errors[e]);
                if count > 0 {
                    m.kms_errors.push(KmsErrorCount {
                        operation,
                        kind,
                        count,
                    });
                }
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_well_formed_label_and_its_own_slot() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..REASONS {
            let name = reason_name(i);
            assert!(ekms_shared::metrics::is_rule_label(name), "{name}");
            assert!(seen.insert(name), "{name} twice");
            assert_eq!(reason_index(name), i);
        }
    }

    #[test]
    fn unknown_reasons_count_as_other() {
        let c = Counters::default();
        c.refused(
            PayloadKind::EvmMessage,
            "0x52908400098527886E0F7030069857D2E4169EE7",
        );
        let m = c.snapshot();
        assert_eq!(m.refusals.len(), 1);
        assert_eq!(m.refusals[0].rule, "other");
    }

    #[test]
    fn counts_signatures_refusals_and_cache() {
        let c = Counters::default();
        c.signed(PayloadKind::EvmTransaction);
        c.signed(PayloadKind::EvmTransaction);
        c.refused(PayloadKind::SolanaTransaction, "key_disabled");
        c.dek_hit();
        c.dek_miss();
        c.dek_miss();
        let m = c.snapshot();
        assert_eq!(
            m.signatures,
            [SignatureCount {
                kind: PayloadKind::EvmTransaction,
                count: 2
            }]
        );
        assert_eq!(m.refusals[0].rule, "key_disabled");
        assert_eq!((m.dek_cache_hits, m.dek_cache_misses), (1, 2));
        assert!(m.kms.is_empty() && m.kms_errors.is_empty());
    }

    #[test]
    fn kms_calls_land_in_their_bucket_and_errors_by_kind() {
        let c = Counters::default();
        let ok: Result<(), KmsError> = Ok(());
        c.kms_call(KmsOperation::Decrypt, Duration::from_millis(7), &ok);
        let denied: Result<(), KmsError> = Err(KmsError::Service {
            code: "AccessDeniedException".into(),
            message: "no".into(),
        });
        c.kms_call(KmsOperation::Decrypt, Duration::from_secs(60), &denied);
        let m = c.snapshot();
        let d = &m.kms[0];
        assert_eq!((d.operation, d.requests), (KmsOperation::Decrypt, 2));
        assert_eq!(d.duration_buckets[1], 1, "7 ms is in le=0.01");
        assert_eq!(d.duration_buckets[BUCKETS - 1], 1, "60 s is in +Inf");
        assert_eq!(d.duration_sum_micros, 60_007_000);
        assert_eq!(
            m.kms_errors,
            [KmsErrorCount {
                operation: KmsOperation::Decrypt,
                kind: KmsErrorKind::AccessDenied,
                count: 1
            }]
        );
    }
}
