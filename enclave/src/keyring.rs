//! Keyrings and their data keys (DESIGN §3): creating a keyring epoch's data key with
//! KMS, and the bounded cache of plaintext data keys.
//!
//! A cached data key is found by `(keyring, epoch, SHA-256(dek_ciphertext))`, so a
//! parent that sends another blob under a known keyring name never gets the cached key
//! for it. Entries expire after `ttl_secs` or `max_uses` uses (`Configure`'s
//! [`DekCachePolicy`]); `max_uses == 0` turns caching off: a KMS `Decrypt` for every
//! request. At most [`MAX_CACHED_KEYS`] keys are held; the oldest is evicted first.
//! Plaintext data keys live only in [`DataKey`] (on the heap, zeroized when the last
//! user drops it); the runtime thread that opened KMS's answer scrubs its stack
//! afterwards ([`crate::workers::scrub_stack`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ekms_shared::{DekCachePolicy, KeyringRef, WireError};
use sha2::{Digest, Sha256};

use crate::kms::Kms;
use crate::sealing::DataKey;
use crate::workers;

/// Most plaintext data keys cached at once.
pub const MAX_CACHED_KEYS: usize = 64;

/// Longest keyring name accepted, in bytes (it goes into KMS's `EncryptionContext`).
pub const MAX_KEYRING_NAME_LEN: usize = 128;

/// Largest `dek_ciphertext` accepted, in bytes (a KMS `CiphertextBlob` is at most 6144).
pub const MAX_DEK_CIPHERTEXT_LEN: usize = 6144;

/// Cache key: keyring, epoch, SHA-256 of the KMS ciphertext blob.
type CacheKey = (String, u32, [u8; 32]);

struct Entry {
    dek: Arc<DataKey>,
    created: Instant,
    uses: u64,
    /// Set once a request was told to fetch the next data key ([`DekCache::take`]).
    refreshing: bool,
}

/// A data key taken from the cache.
struct Taken {
    dek: Arc<DataKey>,
    /// The entry is in its last tenth (of uses or of its time to live) and this request
    /// is the one to fetch the next data key ([`Keyrings::cached_data_key`]).
    refresh: bool,
}

/// The bounded cache of plaintext data keys.
pub struct DekCache {
    policy: DekCachePolicy,
    entries: Mutex<HashMap<CacheKey, Entry>>,
}

impl std::fmt::Debug for DekCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DekCache")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl DekCache {
    /// An empty cache with these bounds.
    pub fn new(policy: DekCachePolicy) -> Self {
        Self {
            policy,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        self.policy.max_uses > 0 && self.policy.ttl_secs > 0
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(self.policy.ttl_secs)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent (every
        // update is a single insert/remove), so a poisoned lock is still usable.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached key for `key` at `now`, counting one use; expired or used-up entries
    /// are removed. The first take that finds the entry in its last tenth of uses or of
    /// its time to live is told to refresh it ([`Taken::refresh`]): fetching the next
    /// data key then costs that one request, not every request that would otherwise
    /// wait for the fetch once the entry ended (with 64 signatures in flight, each
    /// fetch held all of them for a KMS round trip: a p99 spike every `max_uses`).
    fn take(&self, key: &CacheKey, now: Instant) -> Option<Taken> {
        if !self.enabled() {
            return None;
        }
        let mut map = self.lock();
        let entry = map.get_mut(key)?;
        let age = now.saturating_duration_since(entry.created);
        let ttl = self.ttl();
        if age >= ttl || entry.uses >= self.policy.max_uses {
            map.remove(key);
            return None;
        }
        entry.uses += 1;
        let dek = Arc::clone(&entry.dek);
        // Below 10 uses there is no last tenth of uses to refresh in (a refresh would
        // throw uses away: one fetch per signature at `max_uses` 2); by time there is.
        let tenth = self.policy.max_uses / 10;
        let late =
            (tenth > 0 && self.policy.max_uses - entry.uses <= tenth) || ttl - age <= ttl / 10;
        let refresh = late && !entry.refreshing;
        entry.refreshing |= refresh;
        if entry.uses >= self.policy.max_uses {
            map.remove(key);
        }
        Some(Taken { dek, refresh })
    }

    /// Caches `dek` under `key` with `uses` already counted (no-op when caching is off
    /// or the key is already used up), evicting expired entries and then the oldest
    /// while the cache is full.
    fn put(&self, key: CacheKey, dek: Arc<DataKey>, now: Instant, uses: u64) {
        if !self.enabled() || uses >= self.policy.max_uses {
            return;
        }
        let ttl = self.ttl();
        let mut map = self.lock();
        map.retain(|_, e| now.saturating_duration_since(e.created) < ttl);
        // A key that replaces its own entry (a refresh) evicts no other.
        while !map.contains_key(&key) && map.len() >= MAX_CACHED_KEYS {
            let oldest = map
                .iter()
                .min_by_key(|(_, e)| e.created)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(
            key,
            Entry {
                dek,
                created: now,
                uses,
                refreshing: false,
            },
        );
    }

    /// Number of cached keys (tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no key is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keyring operations against KMS, with the data-key cache in front.
#[derive(Debug)]
pub struct Keyrings {
    kms: Arc<Kms>,
    cache: DekCache,
    /// One lock per data key being fetched, so that concurrent misses for the same key
    /// make one KMS `Decrypt` (only when caching is on).
    fetching: Mutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl Keyrings {
    /// Keyrings served by `kms`, caching data keys under `policy`.
    pub fn new(kms: Arc<Kms>, policy: DekCachePolicy) -> Self {
        Self {
            kms,
            cache: DekCache::new(policy),
            fetching: Mutex::new(HashMap::new()),
        }
    }

    /// The data-key cache.
    pub fn cache(&self) -> &DekCache {
        &self.cache
    }

    /// `CreateKeyring`: a new data key for `(keyring, epoch)` from KMS `GenerateDataKey`;
    /// returns its `CiphertextBlob` for the parent and caches the plaintext key.
    ///
    /// # Errors
    /// [`WireError::BadRequest`] for an invalid keyring name; [`WireError::Kms`] /
    /// [`WireError::Attestation`] from KMS.
    pub async fn create(&self, keyring: &str, epoch: u32) -> Result<Vec<u8>, WireError> {
        check_keyring_name(keyring)?;
        let generated = self.kms.generate_data_key(keyring, epoch).await;
        // The KMS answer was opened (RSA-OAEP, AES-CBC) in frames below this one, on
        // this runtime thread: wipe them (crate::workers).
        workers::scrub_stack();
        let (dek, blob) = generated.map_err(|e| e.to_wire())?;
        self.cache.put(
            cache_key(keyring, epoch, &blob),
            Arc::new(dek),
            Instant::now(),
            0,
        );
        Ok(blob)
    }

    /// The plaintext data key of `keyring`: from the cache, or KMS `Decrypt`.
    ///
    /// # Errors
    /// [`WireError::BadRequest`] for an invalid name or oversized blob;
    /// [`WireError::Kms`] / [`WireError::Attestation`] from KMS.
    pub async fn data_key(&self, keyring: &KeyringRef) -> Result<Arc<DataKey>, WireError> {
        check_keyring_name(&keyring.keyring)?;
        if keyring.dek_ciphertext.is_empty()
            || keyring.dek_ciphertext.len() > MAX_DEK_CIPHERTEXT_LEN
        {
            return Err(WireError::BadRequest {
                message: format!("dek_ciphertext must be 1-{MAX_DEK_CIPHERTEXT_LEN} bytes"),
            });
        }
        let key = cache_key(&keyring.keyring, keyring.epoch, &keyring.dek_ciphertext);
        if let Some(cached) = self.cached_data_key(keyring, &key).await {
            return cached;
        }
        if !self.cache.enabled() {
            self.kms.metrics().dek_miss();
            return self.fetch(keyring).await;
        }
        let lock = {
            let mut map = self
                .fetching
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(map.entry(key.clone()).or_default())
        };
        let _single_flight = lock.lock().await;
        // Another request may have fetched it while this one waited.
        if let Some(cached) = self.cached_data_key(keyring, &key).await {
            return cached;
        }
        self.kms.metrics().dek_miss();
        let fetched = self.fetch(keyring).await;
        self.fetching
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&key);
        let dek = fetched?;
        // The request that fetched it is its first use.
        self.cache.put(key, Arc::clone(&dek), Instant::now(), 1);
        Ok(dek)
    }

    /// The data key from the cache (one use counted), if there; when its entry is in
    /// its last tenth and this request is the one to refresh it, the next data key
    /// fetched now, cached with this request's use counted (it replaces the entry: the
    /// old key's remaining uses are not used) and returned. The old key is not used
    /// after that fetch, which the parent (relaying the KMS traffic) can hold up to the
    /// KMS timeout, so a key is never used past its time to live. If the fetch fails
    /// (logged), the entry serves the other requests until it ends, and this one uses
    /// the old key only if it is still within its bounds (a use is counted again), or
    /// fails with the fetch's error.
    async fn cached_data_key(
        &self,
        keyring: &KeyringRef,
        key: &CacheKey,
    ) -> Option<Result<Arc<DataKey>, WireError>> {
        let Taken { dek, refresh } = self.cache.take(key, Instant::now())?;
        self.kms.metrics().dek_hit();
        if !refresh {
            return Some(Ok(dek));
        }
        drop(dek);
        self.kms.metrics().dek_refresh();
        Some(match self.fetch(keyring).await {
            Ok(next) => {
                self.cache
                    .put(key.clone(), Arc::clone(&next), Instant::now(), 1);
                Ok(next)
            }
            Err(e) => {
                tracing::warn!(
                    error = e.code(),
                    "fetching the next data key ahead of the cached one's end failed"
                );
                match self.cache.take(key, Instant::now()) {
                    Some(taken) => Ok(taken.dek),
                    None => Err(e),
                }
            }
        })
    }

    /// KMS `Decrypt` of `keyring`'s blob, bypassing the cache.
    async fn fetch(&self, keyring: &KeyringRef) -> Result<Arc<DataKey>, WireError> {
        let decrypted = self
            .kms
            .decrypt_data_key(&keyring.keyring, keyring.epoch, &keyring.dek_ciphertext)
            .await;
        // The KMS answer was opened (RSA-OAEP, AES-CBC) in frames below this one, on
        // this runtime thread, in the poll that just completed: wipe them
        // (crate::workers). The data key itself is on the heap ([`DataKey`]).
        workers::scrub_stack();
        Ok(Arc::new(decrypted.map_err(|e| e.to_wire())?))
    }
}

fn cache_key(keyring: &str, epoch: u32, blob: &[u8]) -> CacheKey {
    (keyring.to_owned(), epoch, Sha256::digest(blob).into())
}

/// Checks a keyring name: 1..=[`MAX_KEYRING_NAME_LEN`] bytes of ASCII letters, digits,
/// `-`, `_`, `.`, `/` (it appears in KMS `EncryptionContext` and CloudTrail).
///
/// # Errors
/// [`WireError::BadRequest`] otherwise.
pub fn check_keyring_name(name: &str) -> Result<(), WireError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_KEYRING_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(WireError::BadRequest {
            message: format!(
                "keyring name must be 1-{MAX_KEYRING_NAME_LEN} bytes of letters, digits, '-', '_', '.', '/'"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dek(b: u8) -> Arc<DataKey> {
        Arc::new(DataKey::from_slice(&[b; 32]).unwrap())
    }

    fn policy(ttl_secs: u64, max_uses: u64) -> DekCachePolicy {
        DekCachePolicy { ttl_secs, max_uses }
    }

    #[test]
    fn caches_until_max_uses() {
        let cache = DekCache::new(policy(60, 3));
        let k = cache_key("main", 1, b"blob");
        let now = Instant::now();
        cache.put(k.clone(), dek(1), now, 0);
        for _ in 0..3 {
            assert!(cache.take(&k, now).is_some());
        }
        assert!(cache.take(&k, now).is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn asks_one_take_to_refresh_in_the_last_tenth_of_uses_or_time() {
        let cache = DekCache::new(policy(100, 20));
        let k = cache_key("main", 1, b"blob");
        let now = Instant::now();
        cache.put(k.clone(), dek(1), now, 0);
        // Uses 1..=17 leave more than 2 (a tenth of 20): no refresh.
        let refreshes: Vec<bool> = (0..20)
            .map(|_| cache.take(&k, now).unwrap().refresh)
            .collect();
        let mut expected = vec![false; 20];
        expected[17] = true;
        assert_eq!(refreshes, expected, "only the first take in the last tenth");
        assert!(
            cache.take(&k, now).is_none(),
            "the entry still ends at max_uses"
        );
        // The refreshed key replaces the entry with no use counted.
        let next = dek(2);
        cache.put(k.clone(), Arc::clone(&next), now, 0);
        let taken = cache.take(&k, now).unwrap();
        assert!(!taken.refresh);
        assert!(Arc::ptr_eq(&taken.dek, &next));
        // By time: in the last 10 s of 100 s, once.
        let late = now + Duration::from_secs(91);
        assert!(cache.take(&k, late).unwrap().refresh);
        assert!(!cache.take(&k, late).unwrap().refresh);
        assert!(cache.take(&k, now + Duration::from_secs(100)).is_none());
        // Below 10 uses there is no last tenth of uses: no refresh by uses (at 2, one
        // would throw every other use away), only by time.
        let small = DekCache::new(policy(100, 5));
        small.put(k.clone(), dek(3), now, 0);
        assert!((0..5).all(|_| !small.take(&k, now).unwrap().refresh));
        assert!(small.take(&k, now).is_none());
        small.put(k.clone(), dek(3), now, 0);
        assert!(small.take(&k, late).unwrap().refresh);
    }

    #[test]
    fn a_refresh_replaces_its_entry_without_evicting_another() {
        let cache = DekCache::new(policy(60, 100));
        let now = Instant::now();
        let keys: Vec<_> = (0..MAX_CACHED_KEYS)
            .map(|i| cache_key("main", u32::try_from(i).unwrap(), b"blob"))
            .collect();
        // keys[0] is the oldest: the one an eviction would take.
        for (i, k) in keys.iter().enumerate() {
            let at = now + Duration::from_millis(u64::try_from(i).unwrap());
            cache.put(k.clone(), dek(1), at, 0);
        }
        assert_eq!(cache.len(), MAX_CACHED_KEYS);
        let later = now + Duration::from_secs(1);
        cache.put(keys[5].clone(), dek(2), later, 1);
        assert!(
            keys.iter().all(|k| cache.take(k, later).is_some()),
            "none evicted"
        );
    }

    #[test]
    fn counts_the_fetching_use() {
        let cache = DekCache::new(policy(60, 2));
        let k = cache_key("main", 1, b"blob");
        let now = Instant::now();
        cache.put(k.clone(), dek(1), now, 1);
        assert!(cache.take(&k, now).is_some());
        assert!(cache.take(&k, now).is_none());
        // With max_uses 1 a fetched key is not cached at all.
        let single = DekCache::new(policy(60, 1));
        single.put(k.clone(), dek(1), now, 1);
        assert!(single.is_empty());
    }

    #[test]
    fn rejects_expired_entries() {
        let cache = DekCache::new(policy(10, 100));
        let k = cache_key("main", 1, b"blob");
        let now = Instant::now();
        cache.put(k.clone(), dek(1), now, 0);
        assert!(cache.take(&k, now + Duration::from_secs(9)).is_some());
        assert!(cache.take(&k, now + Duration::from_secs(10)).is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn rejects_caching_when_max_uses_is_zero() {
        let cache = DekCache::new(policy(60, 0));
        let k = cache_key("main", 1, b"blob");
        cache.put(k.clone(), dek(1), Instant::now(), 0);
        assert!(cache.is_empty());
        assert!(cache.take(&k, Instant::now()).is_none());
    }

    #[test]
    fn rejects_other_blob_epoch_or_keyring() {
        let cache = DekCache::new(policy(60, 10));
        let now = Instant::now();
        cache.put(cache_key("main", 1, b"blob"), dek(1), now, 0);
        assert!(cache.take(&cache_key("main", 1, b"blob2"), now).is_none());
        assert!(cache.take(&cache_key("main", 2, b"blob"), now).is_none());
        assert!(cache.take(&cache_key("other", 1, b"blob"), now).is_none());
        assert!(cache.take(&cache_key("main", 1, b"blob"), now).is_some());
    }

    #[test]
    fn bounds_the_number_of_keys() {
        let cache = DekCache::new(policy(600, 10));
        let start = Instant::now();
        for i in 0..(MAX_CACHED_KEYS + 10) {
            let name = format!("k{i}");
            cache.put(
                cache_key(&name, 1, b"b"),
                dek(1),
                start + Duration::from_millis(i as u64),
                0,
            );
        }
        assert_eq!(cache.len(), MAX_CACHED_KEYS);
        // The oldest were evicted, the newest kept.
        let now = start + Duration::from_secs(1);
        assert!(cache.take(&cache_key("k0", 1, b"b"), now).is_none());
        let last = format!("k{}", MAX_CACHED_KEYS + 9);
        assert!(cache.take(&cache_key(&last, 1, b"b"), now).is_some());
    }

    #[test]
    fn keyring_names() {
        check_keyring_name("main").unwrap();
        check_keyring_name("team-a/prod_1.v2").unwrap();
        for bad in ["", "a b", "ä", "x\"y", &"a".repeat(129)] {
            assert!(check_keyring_name(bad).is_err(), "{bad:?}");
        }
    }
}
