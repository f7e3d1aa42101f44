//! Policy version floors: the enclave's defence against a policy rolled back in the
//! parent's store (DESIGN.md §4).
//!
//! A sealed policy's MAC proves that this enclave wrote it, not that it is the newest:
//! a database admin could put back an older, looser policy row with its valid MAC. The
//! enclave has no disk, so it remembers, per key id, the highest policy version it has
//! issued ([`PolicyFloors::raise`] at `SetPolicy`) or seen authenticated (at `Sign`), and
//! refuses any older version from then on.
//!
//! Limits, by design of a stateless enclave: floors live in memory, so an enclave restart
//! forgets them; and at most [`MAX_TRACKED_KEYS`] keys are tracked (the oldest entries are
//! dropped first, with a warning). A persistent anchor (owner-signed policies with
//! versions, or a counter outside the parent's reach) is the next step.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Keys whose floors are remembered at once (~100 bytes each).
pub const MAX_TRACKED_KEYS: usize = 1 << 20;

/// Per-key minimum policy versions (see the module docs).
#[derive(Debug, Default)]
pub struct PolicyFloors {
    inner: Mutex<Floors>,
}

#[derive(Debug, Default)]
struct Floors {
    by_key: HashMap<String, u64>,
    /// Insertion order, for dropping the oldest entry when full.
    order: VecDeque<String>,
}

/// A policy version below the key's floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("policy version is older than one this enclave has already used")]
pub struct RolledBack;

impl PolicyFloors {
    /// Checks that `version` is not below `key_id`'s floor, then raises the floor to
    /// `version`. Call only with a version whose MAC has been verified.
    ///
    /// # Errors
    /// [`RolledBack`] when `version` is below the floor (nothing changes).
    pub fn check_and_raise(&self, key_id: &str, version: u64) -> Result<(), RolledBack> {
        let mut floors = self.lock();
        match floors.by_key.get_mut(key_id) {
            Some(floor) if version < *floor => Err(RolledBack),
            Some(floor) => {
                *floor = version;
                Ok(())
            }
            None => {
                floors.insert(key_id, version);
                Ok(())
            }
        }
    }

    /// Raises `key_id`'s floor to `version` (a policy version this enclave just issued);
    /// never lowers it.
    pub fn raise(&self, key_id: &str, version: u64) {
        let mut floors = self.lock();
        match floors.by_key.get_mut(key_id) {
            Some(floor) => *floor = (*floor).max(version),
            None => floors.insert(key_id, version),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Floors> {
        // Every critical section leaves the maps consistent before it can panic.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Floors {
    fn insert(&mut self, key_id: &str, version: u64) {
        if self.by_key.len() >= MAX_TRACKED_KEYS {
            if let Some(oldest) = self.order.pop_front() {
                self.by_key.remove(&oldest);
                tracing::warn!("policy floor table full: forgot the oldest key's floor");
            }
        }
        self.by_key.insert(key_id.to_owned(), version);
        self.order.push_back(key_id.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_equal_and_newer_versions() {
        let f = PolicyFloors::default();
        f.check_and_raise("k", 1).unwrap();
        f.check_and_raise("k", 1).unwrap();
        f.check_and_raise("k", 3).unwrap();
        f.check_and_raise("other", 1).unwrap();
    }

    #[test]
    fn rejects_version_below_floor() {
        let f = PolicyFloors::default();
        f.check_and_raise("k", 2).unwrap();
        assert_eq!(f.check_and_raise("k", 1), Err(RolledBack));
        // A refused check leaves the floor where it was.
        f.check_and_raise("k", 2).unwrap();
    }

    #[test]
    fn rejects_old_version_after_an_issued_one() {
        let f = PolicyFloors::default();
        f.check_and_raise("k", 1).unwrap();
        f.raise("k", 2);
        assert_eq!(f.check_and_raise("k", 1), Err(RolledBack));
        f.raise("k", 1);
        assert_eq!(
            f.check_and_raise("k", 1),
            Err(RolledBack),
            "raise never lowers"
        );
    }
}
