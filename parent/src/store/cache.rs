//! The key cache: what the sign path needs of a key (its sealed record, its current
//! MAC'd policy, the keyring epoch that seals it), kept in memory so that a signature
//! does not read SQLite (issue 10, "no database on the hot path").
//!
//! Nothing here is trusted more than the database it copies: the enclave authenticates
//! every blob (AES-GCM AAD, policy HMAC) and refuses a policy version below the newest
//! it has seen (its version floor). What the cache must not do is serve a policy that
//! is no longer the stored one. Rules, in the order they apply:
//!
//! - **Filled and invalidated under the connection's lock.** A miss reads the row and
//!   fills the entry while holding the store's connection; every write through the
//!   store that changes a row ([`Connection::total_changes`] moved) empties the cache
//!   before the lock is released, and a policy compare-and-set also drops its key
//!   explicitly. So a policy written through this parent is the one the next signature
//!   uses.
//! - **Writes by other connections** (another parent on the same file, an operator with
//!   `sqlite3`, an attacker with DB access) are seen through SQLite's `PRAGMA
//!   data_version` on a private watch connection: its value moves whenever any *other*
//!   connection commits. The store records the value after each of its own commits
//!   ([`KeyCache::note_commit`]); a hit is served only while the watch still shows that
//!   value, otherwise the key is read again (and the cache emptied). While the
//!   group-commit thread commits audit records (rows no entry copies) it holds
//!   SQLite's write lock, so no other connection can commit: a value that moved then is
//!   ours, and hits go on being served ([`KeyCache::begin_own_commit`]); before this, a
//!   hit that fell between that commit and its [`KeyCache::note_commit`] was a miss (a
//!   database read), which happened often with many signatures in flight. One window is
//!   left: a commit by another process in the microseconds between our commit and the
//!   read of the value. An entry therefore also expires after [`MAX_AGE`], and the sign
//!   path reloads a key once when the enclave refuses a cached row as
//!   `sealed_state_invalid` (e.g. its version floor saw a newer policy).
//! - **Bounded** in entries ([`MAX_ENTRIES`]) and bytes ([`MAX_BYTES`]); the least
//!   recently used entry goes first.
//!
//! A hit costs one uncontended mutex, one `PRAGMA data_version` (no I/O: it reads the
//! WAL index in shared memory) and a read lock; it never leaves the calling task.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ekms_shared::KeyringRef;
use rusqlite::{Connection, OpenFlags};

use super::KeyRow;
use super::StoreError;

/// Most keys kept.
pub const MAX_ENTRIES: usize = 10_000;
/// Most bytes kept (records, policies, keyring ciphertexts, with a fixed overhead per
/// entry).
pub const MAX_BYTES: usize = 64 << 20;
/// Age after which an entry is read again from the database.
pub const MAX_AGE: Duration = Duration::from_secs(10);
/// Bytes counted per entry beyond its variable-length fields.
const ENTRY_OVERHEAD: usize = 256;

/// A key as the sign path needs it.
#[derive(Debug)]
pub struct CachedKey {
    /// The key's row (summary, sealed record, current policy).
    pub row: KeyRow,
    /// The keyring epoch that seals the record.
    pub keyring: KeyringRef,
}

#[derive(Debug)]
struct Entry {
    key: Arc<CachedKey>,
    bytes: usize,
    loaded: Instant,
    last_used: AtomicU64,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<String, Entry>,
    bytes: usize,
}

/// See the module docs.
#[derive(Debug)]
pub struct KeyCache {
    entries: RwLock<Entries>,
    /// A read-only connection used only for `PRAGMA data_version` (`None` for an
    /// in-memory database, which no other connection can write).
    watch: Option<Mutex<Connection>>,
    /// The watch's `data_version` after the store's own last commit.
    /// [`OWN_COMMIT`] from [`KeyCache::begin_own_commit`] until its window closes:
    /// one atomic, so that a hit never sees a new value beside an old flag.
    known: AtomicI64,
    /// `known` as it was when the own-commit window opened (put back if it closes
    /// without a commit). Read and written only under the store's connection lock.
    known_before: AtomicI64,
    /// LRU clock.
    clock: AtomicU64,
    max_entries: usize,
    max_bytes: usize,
}

impl KeyCache {
    /// A cache for the database at `path` (`None`: in memory).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] if the watch connection cannot be opened.
    pub fn new(path: Option<&Path>) -> Result<Self, StoreError> {
        let watch = match path {
            Some(p) => Some(Connection::open_with_flags(
                p,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?),
            None => None,
        };
        let cache = KeyCache {
            entries: RwLock::default(),
            watch: watch.map(Mutex::new),
            known: AtomicI64::new(0),
            known_before: AtomicI64::new(0),
            clock: AtomicU64::new(0),
            max_entries: MAX_ENTRIES,
            max_bytes: MAX_BYTES,
        };
        cache.known.store(cache.data_version(), Ordering::Release);
        Ok(cache)
    }

    #[cfg(test)]
    pub(crate) fn with_bounds(mut self, max_entries: usize, max_bytes: usize) -> Self {
        self.max_entries = max_entries;
        self.max_bytes = max_bytes;
        self
    }

    /// The watch's `data_version`; `-1` if it cannot be read (then nothing is served
    /// from the cache until it can), `0` without a watch.
    fn data_version(&self) -> i64 {
        let Some(watch) = &self.watch else { return 0 };
        let c = watch.lock().unwrap_or_else(|p| p.into_inner());
        c.prepare_cached("PRAGMA data_version")
            .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
            .unwrap_or(-1)
    }

    /// The cached key `key_id`, if present, fresh, and no other connection has
    /// committed since the store's last commit.
    pub fn get(&self, key_id: &str) -> Option<Arc<CachedKey>> {
        let version = self.data_version();
        let known = self.known.load(Ordering::Acquire);
        if version < 0 || (known != OWN_COMMIT && version != known) {
            return None;
        }
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let entry = entries.map.get(key_id)?;
        if entry.loaded.elapsed() > MAX_AGE {
            return None;
        }
        entry.last_used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        Some(Arc::clone(&entry.key))
    }

    /// Keeps `key` (read from the database under the connection's lock), evicting the
    /// least recently used entries beyond the bounds. A key larger than the byte bound
    /// is not kept.
    pub fn insert(&self, key: CachedKey) -> Arc<CachedKey> {
        let bytes = ENTRY_OVERHEAD
            + 2 * key.row.summary.key_id.len()
            + key.row.record.ciphertext.len()
            + key.row.record.public_key.len()
            + key.row.summary.address.len()
            + key.row.policy.policy_json.len()
            + key.keyring.dek_ciphertext.len();
        let key = Arc::new(key);
        if bytes > self.max_bytes || self.max_entries == 0 {
            return key;
        }
        let id = key.row.summary.key_id.clone();
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = entries.map.remove(&id) {
            entries.bytes -= old.bytes;
        }
        while entries.map.len() >= self.max_entries || entries.bytes + bytes > self.max_bytes {
            let Some(oldest) = entries
                .map
                .iter()
                .min_by_key(|(_, e)| e.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = entries.map.remove(&oldest) {
                entries.bytes -= e.bytes;
            }
        }
        entries.bytes += bytes;
        entries.map.insert(
            id,
            Entry {
                key: Arc::clone(&key),
                bytes,
                loaded: Instant::now(),
                last_used: AtomicU64::new(self.clock.fetch_add(1, Ordering::Relaxed)),
            },
        );
        key
    }

    /// Drops `key_id` (its policy changed, or the enclave refused the cached row).
    pub fn invalidate(&self, key_id: &str) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = entries.map.remove(key_id) {
            entries.bytes -= e.bytes;
        }
    }

    /// Drops every entry.
    pub fn clear(&self) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        entries.map.clear();
        entries.bytes = 0;
    }

    /// Number of entries and bytes kept.
    pub fn len_and_bytes(&self) -> (usize, usize) {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        (entries.map.len(), entries.bytes)
    }

    /// Called under the connection's lock before the store reads or writes: if another
    /// connection committed since the store's last commit, every entry is dropped.
    pub fn check_external(&self, _c: &Connection) {
        let version = self.data_version();
        if version != self.known.load(Ordering::Acquire) {
            self.clear();
            self.known.store(version, Ordering::Release);
        }
    }

    /// Called by a writer of rows that no entry copies (the audit records of the
    /// group-commit thread) inside its transaction, holding SQLite's write lock and
    /// after [`KeyCache::check_external`]: until its [`KeyCache::note_commit`], a
    /// `data_version` that moves is its own commit's, and hits are still served. Only
    /// for such rows: any other write empties the cache instead.
    ///
    /// The window closes with [`OwnCommit::committed`] or, on any other path (an error,
    /// a panic), when the guard drops: then `known` is put back as it was.
    pub fn begin_own_commit(&self, _tx: &Connection) -> OwnCommit<'_> {
        self.known_before
            .store(self.known.load(Ordering::Acquire), Ordering::Relaxed);
        self.known.store(OWN_COMMIT, Ordering::Release);
        OwnCommit {
            cache: self,
            open: true,
        }
    }

    /// Called under the connection's lock right after the store's own commit: the
    /// watch's new `data_version` is ours.
    pub fn note_commit(&self, _c: &Connection) {
        self.known.store(self.data_version(), Ordering::Release);
    }
}

/// The value of `known` while an own commit is in progress (`data_version` is never
/// negative).
const OWN_COMMIT: i64 = i64::MIN;

/// An open own-commit window ([`KeyCache::begin_own_commit`]).
#[derive(Debug)]
#[must_use = "the window closes when this drops"]
pub struct OwnCommit<'a> {
    cache: &'a KeyCache,
    open: bool,
}

impl OwnCommit<'_> {
    /// The transaction committed: the watch's new `data_version` is ours
    /// ([`KeyCache::note_commit`]). Called under the connection's lock.
    pub fn committed(mut self, c: &Connection) {
        self.open = false;
        self.cache.note_commit(c);
    }
}

impl Drop for OwnCommit<'_> {
    fn drop(&mut self) {
        if self.open {
            let before = self.cache.known_before.load(Ordering::Relaxed);
            self.cache.known.store(before, Ordering::Release);
        }
    }
}
