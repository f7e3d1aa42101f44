//! The enclave's state that outlives a restart (issue 7 item 4): per key, the newest
//! policy version it issued or used (the floor below which a stored policy row is a
//! rollback, [`crate::floor`]); the store-wide stop; and where the audit chain stands.
//!
//! The enclave has no disk, so it hands this state to the parent as a **checkpoint**:
//! a CBOR [`CheckpointBody`] with a monotonic sequence number, MAC'd (HMAC-SHA256) with
//! a key derived from a keyring's data key ([`crate::sealing::mac_checkpoint`]), which
//! only an attested enclave gets from KMS. A host can store, withhold or replay a
//! checkpoint, never forge or edit one.
//!
//! Every state change runs in two phases, one at a time (the [`Durable`] lock is held
//! from the first phase to the second):
//!
//! 1. the request (`SetPolicy`, `DisableKey`, `EnableKey`, `StopAll`, `ResumeAll`,
//!    `Restore`) is checked and answered with `CheckpointPending`: the checkpoint of the
//!    state *after* the change (and the key's new sealed policy); nothing changes in
//!    the enclave yet but the key's policy floor, which is raised to the new version at
//!    once (the sealed policy exists from now on, so its version is used up whether or
//!    not it is committed: two policies of one version would let a stashed,
//!    uncommitted one outlive a later disable);
//! 2. once the parent has stored them durably it sends `Commit { seq }`: the enclave
//!    applies the change in memory, appends its audit record and answers. The parent
//!    releases the API answer only then. An uncommitted change is dropped after
//!    [`ekms_shared::PENDING_CHECKPOINT_SECS`].
//!
//! So the state in force is never ahead of a stored checkpoint. At boot the parent hands
//! back its newest checkpoint in `Restore`; key requests are refused until that is
//! committed. What a malicious host can still do (replay an older checkpoint, or none)
//! and how it shows is in docs/SECURITY.md.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ekms_shared::{KeyringRef, SealedCheckpoint, WireError, PENDING_CHECKPOINT_SECS};
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedMutexGuard;

use crate::audit::AuditHead;
use crate::floor::{PolicyFloors, RecordId};

/// Most keys whose floor (a policy version above 1) a checkpoint carries: 40 bytes
/// each (160,000 bytes), so that with the rolling limits' snapshot
/// ([`crate::limits::MAX_SNAPSHOT_BYTES`]) a checkpoint stays inside one frame. A change
/// that would exceed it is refused.
pub const MAX_CHECKPOINT_FLOORS: usize = 4000;
/// Bytes of one floor entry: the 32-byte [`RecordId`] and the version, `u64` big-endian.
const FLOOR_ENTRY_LEN: usize = 40;
/// How long a state change waits for the one before it to commit.
const STATE_LOCK_WAIT: Duration = Duration::from_secs(10);

/// The state a checkpoint carries (CBOR, the enclave's own format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointBody {
    /// Enclave clock when written, milliseconds since the Unix epoch.
    pub written_at: u64,
    /// The store-wide stop.
    pub stopped: bool,
    /// The audit key of the boot that wrote it.
    #[serde(with = "serde_bytes")]
    pub audit_key: [u8; 32],
    /// The audit chain head when written: its `seq`.
    pub audit_seq: u64,
    /// The audit chain head when written: SHA-256 of its record.
    #[serde(with = "serde_bytes")]
    pub audit_hash: [u8; 32],
    /// Floors, [`FLOOR_ENTRY_LEN`] bytes each, sorted by record id, versions ≥ 2.
    #[serde(with = "serde_bytes")]
    pub floors: Vec<u8>,
    /// The rolling limits as of `written_at` ([`crate::limits::Limits::snapshot`]).
    #[serde(with = "serde_bytes")]
    pub limits: Vec<u8>,
}

impl CheckpointBody {
    /// The CBOR encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.floors.len());
        ciborium::ser::into_writer(self, &mut out)
            .unwrap_or_else(|_| unreachable!("a struct of integers and bytes always encodes"));
        out
    }

    /// Decodes a body (only ever called on one whose MAC verified).
    ///
    /// # Errors
    /// [`WireError::SealedStateInvalid`] if it does not decode or its floors are not
    /// whole, sorted, unique entries of versions ≥ 2, at most [`MAX_CHECKPOINT_FLOORS`].
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let body: CheckpointBody =
            ciborium::de::from_reader(bytes).map_err(|_| WireError::SealedStateInvalid)?;
        body.floor_entries()?;
        Ok(body)
    }

    /// The floors as `(record, version)`, checked as [`CheckpointBody::decode`] says.
    ///
    /// # Errors
    /// [`WireError::SealedStateInvalid`].
    pub fn floor_entries(&self) -> Result<Vec<(RecordId, u64)>, WireError> {
        if !self.floors.len().is_multiple_of(FLOOR_ENTRY_LEN)
            || self.floors.len() / FLOOR_ENTRY_LEN > MAX_CHECKPOINT_FLOORS
        {
            return Err(WireError::SealedStateInvalid);
        }
        let mut out = Vec::with_capacity(self.floors.len() / FLOOR_ENTRY_LEN);
        for chunk in self.floors.chunks_exact(FLOOR_ENTRY_LEN) {
            let mut id = [0u8; 32];
            id.copy_from_slice(&chunk[..32]);
            let mut v = [0u8; 8];
            v.copy_from_slice(&chunk[32..]);
            let version = u64::from_be_bytes(v);
            if version < 2
                || out
                    .last()
                    .is_some_and(|(last, _)| *last >= RecordId::from(id))
            {
                return Err(WireError::SealedStateInvalid);
            }
            out.push((RecordId::from(id), version));
        }
        Ok(out)
    }
}

/// Packs `floors` (any order; versions below 2 are left out, as every key starts at 1).
///
/// # Errors
/// [`WireError::BadRequest`] above [`MAX_CHECKPOINT_FLOORS`] entries.
pub fn pack_floors(mut floors: Vec<(RecordId, u64)>) -> Result<Vec<u8>, WireError> {
    floors.retain(|(_, v)| *v >= 2);
    if floors.len() > MAX_CHECKPOINT_FLOORS {
        return Err(WireError::BadRequest {
            message: format!(
                "this enclave checkpoints at most {MAX_CHECKPOINT_FLOORS} keys with changed \
                 policies; the change was not made"
            ),
        });
    }
    floors.sort_unstable_by_key(|e| e.0);
    let mut out = Vec::with_capacity(floors.len() * FLOOR_ENTRY_LEN);
    for (id, version) in floors {
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&version.to_be_bytes());
    }
    Ok(out)
}

/// What a pending change does once committed.
#[derive(Debug)]
pub enum Change {
    /// `Restore`: the restored state and the chain head to continue from.
    Restore {
        /// Floors from the checkpoint.
        floors: Vec<(RecordId, u64)>,
        /// The rolling limits as restored (blind interval charged).
        limits: Box<crate::limits::Limits>,
        /// The store-wide stop from the checkpoint.
        stopped: bool,
        /// Where the audit chain continues.
        head: AuditHead,
        /// The keyring that MACs checkpoints from now on.
        keyring: KeyringRef,
    },
    /// A key's policy version changed (`SetPolicy`, `DisableKey`, `EnableKey`).
    KeyPolicy {
        /// The key's record.
        record: RecordId,
        /// Its key id (for the audit record).
        key_id: String,
        /// The new version.
        version: u64,
        /// SHA-256 of the new policy's canonical JSON (for the audit record).
        policy_sha256: [u8; 32],
        /// Which request.
        action: ekms_shared::audit::AuditAction,
    },
    /// `StopAll` (`true`) or `ResumeAll` (`false`).
    Stop(bool),
}

/// The committed state's bookkeeping, behind the state-change lock.
#[derive(Debug, Default)]
pub struct Committed {
    /// Sequence number of the newest committed checkpoint (0 before `Restore`).
    pub seq: u64,
    /// The keyring whose data key MACs checkpoints (set at `Restore`).
    pub keyring: Option<KeyringRef>,
}

struct Pending {
    seq: u64,
    change: Change,
    guard: OwnedMutexGuard<Committed>,
}

/// The durable state's in-memory side (see the module docs).
#[derive(Debug)]
pub struct Durable {
    committed: Arc<tokio::sync::Mutex<Committed>>,
    pending: Arc<Mutex<Option<Pending>>>,
    stopped: AtomicBool,
    restored: AtomicBool,
    /// How long an uncommitted change is kept.
    pending_timeout: Duration,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Default for Durable {
    fn default() -> Self {
        Self {
            committed: Arc::new(tokio::sync::Mutex::new(Committed::default())),
            pending: Arc::new(Mutex::new(None)),
            stopped: AtomicBool::new(false),
            restored: AtomicBool::new(false),
            pending_timeout: Duration::from_secs(PENDING_CHECKPOINT_SECS),
        }
    }
}

impl Durable {
    /// Whether `Restore` has been committed (key requests are refused before).
    pub fn is_restored(&self) -> bool {
        self.restored.load(Ordering::Acquire)
    }

    /// Whether the store-wide stop is in force.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Marks `Restore` committed (after the audit head is set): key requests are
    /// served from now on.
    pub fn mark_restored(&self) {
        self.restored.store(true, Ordering::Release);
    }

    /// Takes the state-change lock, waiting at most 10 s for a pending change.
    ///
    /// # Errors
    /// [`WireError::Busy`] if another change stays pending that long.
    pub async fn lock(&self) -> Result<OwnedMutexGuard<Committed>, WireError> {
        tokio::time::timeout(STATE_LOCK_WAIT, Arc::clone(&self.committed).lock_owned())
            .await
            .map_err(|_| WireError::Busy)
    }

    /// Parks a change whose checkpoint `seq` went to the parent, holding the lock until
    /// [`Durable::take`] or the deadline.
    pub fn park(&self, guard: OwnedMutexGuard<Committed>, seq: u64, change: Change) {
        *lock(&self.pending) = Some(Pending { seq, change, guard });
        let pending = Arc::clone(&self.pending);
        let timeout = self.pending_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let mut slot = lock(&pending);
            if slot.as_ref().is_some_and(|p| p.seq == seq) {
                tracing::warn!(seq, "checkpoint never committed: change dropped");
                *slot = None;
            }
        });
    }

    /// Takes the parked change of checkpoint `seq` and applies its effect on the stop
    /// and the floors; the caller appends the audit record and drops the guard.
    ///
    /// # Errors
    /// [`WireError::BadRequest`] when no change with this `seq` is pending (never
    /// parked, dropped at its deadline, or already committed).
    pub fn take(
        &self,
        seq: u64,
        floors: &PolicyFloors,
    ) -> Result<(Change, OwnedMutexGuard<Committed>), WireError> {
        let pending = {
            let mut slot = lock(&self.pending);
            match slot.take() {
                Some(p) if p.seq == seq => p,
                other => {
                    *slot = other;
                    return Err(WireError::BadRequest {
                        message: format!("no state change with checkpoint {seq} is pending"),
                    });
                }
            }
        };
        let Pending {
            change, mut guard, ..
        } = pending;
        match &change {
            Change::Restore {
                floors: restored,
                stopped,
                keyring,
                ..
            } => {
                for (record, version) in restored {
                    floors.raise(*record, *version);
                }
                self.stopped.store(*stopped, Ordering::Release);
                guard.keyring = Some(keyring.clone());
            }
            Change::KeyPolicy {
                record, version, ..
            } => floors.raise(*record, *version),
            Change::Stop(stopped) => self.stopped.store(*stopped, Ordering::Release),
        }
        guard.seq = seq;
        Ok((change, guard))
    }
}

fn lock(m: &Mutex<Option<Pending>>) -> std::sync::MutexGuard<'_, Option<Pending>> {
    // Each critical section assigns the slot in one step.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The sealed checkpoint for `body` (MAC filled in by the caller, on a signing thread).
pub fn unsealed(seq: u64, keyring: &KeyringRef, body: &CheckpointBody) -> SealedCheckpoint {
    SealedCheckpoint {
        seq,
        keyring: keyring.keyring.clone(),
        epoch: keyring.epoch,
        body: body.encode(),
        mac: [0; 32],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(floors: Vec<u8>) -> CheckpointBody {
        CheckpointBody {
            written_at: 1,
            stopped: true,
            audit_key: [1; 32],
            audit_seq: 5,
            audit_hash: [2; 32],
            floors,
            limits: Vec::new(),
        }
    }

    #[test]
    fn bodies_round_trip_with_sorted_floors() {
        let floors = pack_floors(vec![
            (RecordId::from([9; 32]), 3),
            (RecordId::from([1; 32]), 2),
            (RecordId::from([5; 32]), 1),
        ])
        .unwrap();
        assert_eq!(floors.len(), 80, "version 1 is every key's start: left out");
        let b = body(floors);
        let back = CheckpointBody::decode(&b.encode()).unwrap();
        assert_eq!(back, b);
        assert_eq!(
            back.floor_entries().unwrap(),
            vec![(RecordId::from([1; 32]), 2), (RecordId::from([9; 32]), 3)]
        );
    }

    #[test]
    fn rejects_bodies_with_bad_floors() {
        let good = pack_floors(vec![
            (RecordId::from([1; 32]), 2),
            (RecordId::from([2; 32]), 2),
        ])
        .unwrap();
        let mut unsorted = good[40..].to_vec();
        unsorted.extend_from_slice(&good[..40]);
        let mut duplicate = good[..40].to_vec();
        duplicate.extend_from_slice(&good[..40]);
        let mut version_one = good[..40].to_vec();
        version_one[39] = 1;
        for floors in [good[..39].to_vec(), unsorted, duplicate, version_one] {
            assert_eq!(
                CheckpointBody::decode(&body(floors).encode()),
                Err(WireError::SealedStateInvalid)
            );
        }
        assert_eq!(
            CheckpointBody::decode(&[0xff, 0x00]),
            Err(WireError::SealedStateInvalid)
        );
        let many: Vec<_> = (0..=MAX_CHECKPOINT_FLOORS as u32)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&i.to_be_bytes());
                (RecordId::from(id), 2)
            })
            .collect();
        assert!(matches!(
            pack_floors(many),
            Err(WireError::BadRequest { .. })
        ));
    }

    #[tokio::test]
    async fn commits_only_the_parked_change_and_serialises_changes() {
        let d = Durable::default();
        let floors = PolicyFloors::default();
        let guard = d.lock().await.unwrap();
        d.park(guard, 1, Change::Stop(true));
        assert!(matches!(
            d.take(2, &floors),
            Err(WireError::BadRequest { .. })
        ));
        assert!(!d.is_stopped(), "nothing applies before the commit");
        // A second change waits for the first.
        assert!(tokio::time::timeout(Duration::from_millis(50), d.lock())
            .await
            .is_err());
        let (change, guard) = d.take(1, &floors).unwrap();
        assert!(matches!(change, Change::Stop(true)));
        assert!(d.is_stopped());
        assert_eq!(guard.seq, 1);
        drop(guard);
        assert!(matches!(
            d.take(1, &floors),
            Err(WireError::BadRequest { .. })
        ));
        let guard = d.lock().await.unwrap();
        let record = RecordId::from([4; 32]);
        d.park(
            guard,
            2,
            Change::KeyPolicy {
                record,
                key_id: "k".into(),
                version: 7,
                policy_sha256: [0; 32],
                action: ekms_shared::audit::AuditAction::Disable,
            },
        );
        let _ = d.take(2, &floors).unwrap();
        assert!(floors.check_and_raise(record, 6).is_err());
    }

    #[tokio::test]
    async fn drops_a_change_never_committed() {
        let d = Durable {
            pending_timeout: Duration::from_millis(20),
            ..Durable::default()
        };
        let floors = PolicyFloors::default();
        let guard = d.lock().await.unwrap();
        d.park(guard, 1, Change::Stop(true));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(d.take(1, &floors).is_err());
        assert!(!d.is_stopped());
        let guard = d.lock().await.unwrap();
        assert_eq!(
            guard.seq, 0,
            "the dropped change left the committed state alone"
        );
    }
}
