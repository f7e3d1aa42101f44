//! Fault injection (SIMULATION ONLY): added latency, and the next N requests answered
//! with `ThrottlingException` (400) or `KMSInternalException` (500). Set from flags at
//! startup and at run time through `GET`/`POST /_sim/faults` on the KMS listener.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorKind};

/// A snapshot or update of the fault settings (the JSON body of `/_sim/faults`).
/// In an update, an absent field leaves the setting unchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSettings {
    /// Delay added to every KMS request, in milliseconds.
    pub latency_ms: Option<u64>,
    /// The next N KMS requests answer `ThrottlingException`.
    pub throttle_next: Option<u64>,
    /// The next N KMS requests answer `KMSInternalException` (HTTP 500).
    pub fail_next: Option<u64>,
}

/// Live fault state, shared by all requests.
#[derive(Debug, Default)]
pub struct Faults {
    latency_ms: AtomicU64,
    throttle_next: AtomicU64,
    fail_next: AtomicU64,
}

/// Longest latency that can be injected: 10 minutes, in milliseconds.
pub const MAX_LATENCY_MS: u64 = 600_000;

impl Faults {
    /// Fault state with `settings` applied.
    pub fn new(settings: FaultSettings) -> Self {
        let faults = Self::default();
        faults.apply(settings);
        faults
    }

    /// Applies the fields present in `update`; latency is capped at [`MAX_LATENCY_MS`].
    pub fn apply(&self, update: FaultSettings) {
        if let Some(ms) = update.latency_ms {
            self.latency_ms
                .store(ms.min(MAX_LATENCY_MS), Ordering::SeqCst);
        }
        if let Some(n) = update.throttle_next {
            self.throttle_next.store(n, Ordering::SeqCst);
        }
        if let Some(n) = update.fail_next {
            self.fail_next.store(n, Ordering::SeqCst);
        }
    }

    /// The current settings, every field present.
    pub fn snapshot(&self) -> FaultSettings {
        FaultSettings {
            latency_ms: Some(self.latency_ms.load(Ordering::SeqCst)),
            throttle_next: Some(self.throttle_next.load(Ordering::SeqCst)),
            fail_next: Some(self.fail_next.load(Ordering::SeqCst)),
        }
    }

    /// Called once per KMS request before it is handled: sleeps the injected latency,
    /// then consumes one pending throttle or failure, if any.
    ///
    /// # Errors
    /// The injected [`ApiError`].
    pub async fn before_request(&self) -> Result<(), ApiError> {
        let latency = self.latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
        }
        if take_one(&self.throttle_next) {
            return Err(ApiError::new(
                ErrorKind::Throttling,
                "Rate exceeded (injected by kms-sim)",
            ));
        }
        if take_one(&self.fail_next) {
            return Err(ApiError::internal("internal failure (injected by kms-sim)"));
        }
        Ok(())
    }
}

fn take_one(counter: &AtomicU64) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn injects_exactly_the_requested_faults() {
        let faults = Faults::new(FaultSettings {
            throttle_next: Some(1),
            fail_next: Some(2),
            ..Default::default()
        });
        let mut kinds = Vec::new();
        for _ in 0..4 {
            kinds.push(faults.before_request().await.err().map(|e| e.kind));
        }
        assert_eq!(
            kinds,
            vec![
                Some(ErrorKind::Throttling),
                Some(ErrorKind::Internal),
                Some(ErrorKind::Internal),
                None
            ]
        );
        assert_eq!(faults.snapshot().fail_next, Some(0));
    }

    #[tokio::test]
    async fn rejects_nothing_when_no_fault_is_set() {
        let faults = Faults::default();
        assert!(faults.before_request().await.is_ok());
        faults.apply(FaultSettings {
            latency_ms: Some(u64::MAX),
            ..Default::default()
        });
        assert_eq!(faults.snapshot().latency_ms, Some(MAX_LATENCY_MS));
    }
}
