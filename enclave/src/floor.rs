//! Policy version floors: the enclave's defence against a policy rolled back in the
//! parent's store (DESIGN.md §4).
//!
//! A sealed policy's MAC proves that this enclave wrote it, not that it is the newest:
//! a database admin could put back an older, looser policy row with its valid MAC. The
//! enclave has no disk, so it remembers, per sealed key record, the highest policy
//! version it has issued ([`PolicyFloors::raise`] at `SetPolicy`) or seen authenticated
//! (at `Sign`), and refuses any older version from then on.
//!
//! Floors are keyed by [`RecordId`], the SHA-256 of the record's authenticated bytes
//! (its AAD and ciphertext), never by the key id: the parent picks key ids, so a
//! `GenerateKey` reusing a victim's key id followed by `SetPolicy` calls would otherwise
//! raise the victim's floor above its real policy version (a denial of service). Two
//! records that open share a [`RecordId`] only if they are the same record, since the
//! salt and nonce are fresh NSM randomness at every `GenerateKey`.
//!
//! Floors live in memory and survive a restart through the enclave's checkpoints
//! ([`crate::durable`]): every policy version the enclave issues is checkpointed before
//! it takes effect, and `Restore` raises the floors from the newest checkpoint.
//!
//! A floor of version 1 refuses nothing (every key starts there), so none is kept. A
//! floor above 1 is never dropped: were the table to forget one when full, a host that
//! fills it (one `GenerateKey` and one `Sign` per record, straight to the enclave's
//! socket) would make a victim's pre-disable row sign again. At most
//! [`MAX_TRACKED_KEYS`] floors are kept; beyond that a version above 1 of a record not
//! yet tracked is refused (fail closed). Floors above 1 come only from versions the
//! enclave issued, and a checkpoint carries at most
//! [`crate::durable::MAX_CHECKPOINT_FLOORS`] of them, so an honest store never gets
//! near the bound.

use std::collections::HashMap;
use std::sync::Mutex;

use ekms_shared::SealedKeyRecord;
use sha2::{Digest, Sha256};

/// Keys whose floors are remembered at once (~100 bytes each).
pub const MAX_TRACKED_KEYS: usize = 1 << 20;

/// The identity of one sealed key record: SHA-256 over
/// `u64_be(len(aad)) || aad || ciphertext`, where `aad` is [`SealedKeyRecord::aad`]
/// (every field but the ciphertext, length-prefixed, so the encoding is injective).
/// Compute it only for a record that has opened under its data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId([u8; 32]);

impl From<[u8; 32]> for RecordId {
    /// A record id as carried in a checkpoint ([`crate::durable`]).
    fn from(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl RecordId {
    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The id of `record` (see the type's docs).
    pub fn of(record: &SealedKeyRecord) -> Self {
        let aad = record.aad();
        let mut h = Sha256::new();
        h.update((aad.len() as u64).to_be_bytes());
        h.update(&aad);
        h.update(&record.ciphertext);
        Self(h.finalize().into())
    }
}

/// Per-record minimum policy versions (see the module docs).
#[derive(Debug, Default)]
pub struct PolicyFloors {
    inner: Mutex<Floors>,
}

#[derive(Debug, Default)]
struct Floors {
    by_key: HashMap<RecordId, u64>,
}

/// A policy version below the key's floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("policy version is older than one this enclave has already used")]
pub struct RolledBack;

impl PolicyFloors {
    /// Checks that `version` is not below `record`'s floor, then raises the floor to
    /// `version`. Call only with a version whose MAC has been verified.
    ///
    /// # Errors
    /// [`RolledBack`] when `version` is below the floor (nothing changes).
    pub fn check_and_raise(&self, record: RecordId, version: u64) -> Result<(), RolledBack> {
        let mut floors = self.lock();
        let full = floors.by_key.len() >= MAX_TRACKED_KEYS;
        match floors.by_key.get_mut(&record) {
            Some(floor) if version < *floor => Err(RolledBack),
            Some(floor) => {
                *floor = version;
                Ok(())
            }
            None if version <= 1 => Ok(()),
            None if full => {
                tracing::error!("policy floor table full: refusing a key not yet tracked");
                Err(RolledBack)
            }
            None => {
                floors.by_key.insert(record, version);
                Ok(())
            }
        }
    }

    /// Raises `record`'s floor to `version` (a policy version this enclave just issued);
    /// never lowers it. Kept even beyond [`MAX_TRACKED_KEYS`]: issued versions are
    /// bounded by the checkpoints' own limit.
    pub fn raise(&self, record: RecordId, version: u64) {
        let mut floors = self.lock();
        match floors.by_key.get_mut(&record) {
            Some(floor) => *floor = (*floor).max(version),
            None if version <= 1 => {}
            None => {
                floors.by_key.insert(record, version);
            }
        }
    }

    /// Every floor above `min`, for a checkpoint ([`crate::durable`]).
    pub fn above(&self, min: u64) -> Vec<(RecordId, u64)> {
        self.lock()
            .by_key
            .iter()
            .filter(|(_, v)| **v > min)
            .map(|(k, v)| (*k, *v))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Floors> {
        // Every critical section leaves the maps consistent before it can panic.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> RecordId {
        RecordId([b; 32])
    }

    #[test]
    fn accepts_equal_and_newer_versions() {
        let f = PolicyFloors::default();
        f.check_and_raise(id(1), 1).unwrap();
        f.check_and_raise(id(1), 1).unwrap();
        f.check_and_raise(id(1), 3).unwrap();
        f.check_and_raise(id(2), 1).unwrap();
    }

    #[test]
    fn rejects_version_below_floor() {
        let f = PolicyFloors::default();
        f.check_and_raise(id(1), 2).unwrap();
        assert_eq!(f.check_and_raise(id(1), 1), Err(RolledBack));
        // A refused check leaves the floor where it was.
        f.check_and_raise(id(1), 2).unwrap();
    }

    #[test]
    fn rejects_old_version_after_an_issued_one() {
        let f = PolicyFloors::default();
        f.check_and_raise(id(1), 1).unwrap();
        f.raise(id(1), 2);
        assert_eq!(f.check_and_raise(id(1), 1), Err(RolledBack));
        f.raise(id(1), 1);
        assert_eq!(
            f.check_and_raise(id(1), 1),
            Err(RolledBack),
            "raise never lowers"
        );
    }

    fn record(key_id: &str, salt: u8) -> SealedKeyRecord {
        SealedKeyRecord {
            version: 1,
            key_id: key_id.into(),
            owner: None,
            algorithm: ekms_shared::Algorithm::Secp256k1,
            public_key: vec![2; 33],
            keyring: "default".into(),
            epoch: 1,
            salt: [salt; 32],
            nonce: [0; 12],
            ciphertext: vec![9; 48],
        }
    }

    #[test]
    fn record_id_depends_on_every_byte_not_the_key_id_alone() {
        let a = record("victim", 1);
        assert_eq!(RecordId::of(&a), RecordId::of(&a.clone()));
        // Same key id, another record (fresh salt): another floor.
        assert_ne!(RecordId::of(&a), RecordId::of(&record("victim", 2)));
        let mut c = a.clone();
        c.ciphertext[47] ^= 1;
        assert_ne!(RecordId::of(&a), RecordId::of(&c));
    }

    /// A host attacker fills the table with records it signs once (version 1 each:
    /// one `GenerateKey` and one `Sign` per record, straight to the enclave socket)
    /// until the victim's floor (a committed disable at version 5) is the oldest entry
    /// and is dropped; the victim's pre-disable row then signs again, with no restart
    /// and no replayed checkpoint.
    #[test]
    fn never_forgets_a_raised_floor_when_the_table_fills() {
        let f = PolicyFloors::default();
        let victim = id(0xee);
        f.raise(victim, 5);
        for i in 0..MAX_TRACKED_KEYS as u32 {
            let mut other = [0u8; 32];
            other[..4].copy_from_slice(&i.to_be_bytes());
            let _ = f.check_and_raise(RecordId(other), 1);
        }
        assert_eq!(
            f.check_and_raise(victim, 4),
            Err(RolledBack),
            "the victim's floor was evicted"
        );
        // Filled with floors above 1 instead: still kept; a new record is refused.
        for i in 1..MAX_TRACKED_KEYS as u32 {
            let mut other = [0u8; 32];
            other[..4].copy_from_slice(&i.to_be_bytes());
            f.check_and_raise(RecordId(other), 2).unwrap();
        }
        assert_eq!(f.check_and_raise(id(0xfe), 2), Err(RolledBack));
        f.check_and_raise(id(0xfe), 1).unwrap();
        assert_eq!(f.check_and_raise(victim, 4), Err(RolledBack));
        f.check_and_raise(victim, 5).unwrap();
    }

    #[test]
    fn rejects_nothing_of_a_victim_when_another_record_reuses_its_key_id() {
        let f = PolicyFloors::default();
        let victim = RecordId::of(&record("victim", 1));
        let attacker = RecordId::of(&record("victim", 2));
        f.check_and_raise(victim, 1).unwrap();
        f.raise(attacker, 50);
        f.check_and_raise(attacker, 50).unwrap();
        assert_eq!(f.check_and_raise(attacker, 1), Err(RolledBack));
        // The victim's floor is its own.
        f.check_and_raise(victim, 1).unwrap();
    }
}
