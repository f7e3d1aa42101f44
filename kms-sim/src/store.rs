//! Persistent key store of the emulator: one directory, two files per key, written
//! atomically (temporary file, fsync, rename, fsync of the directory), loaded at
//! startup. A corrupted file stops the start with an error naming it.
//!
//! Layout under the state directory:
//!
//! ```text
//! keys/<uuid>.key   32 raw bytes of AES-256 key material, mode 0600, written once
//! keys/<uuid>.json  {"format":1,"key_id":…,"description":…,"creation_date":…,"policy":…}
//! ```
//!
//! SIMULATION ONLY: the key material is stored in plaintext on disk (0600 in a 0700
//! directory). Anyone who can read the state directory can decrypt every blob.
//!
//! One process per state directory: writers in this process are serialised by a
//! mutex; two emulators on the same directory are not supported.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::blob::{KeyMaterial, KEY_MATERIAL_LEN};
use crate::error::SimError;
use crate::policy::Policy;

/// Version of the `<uuid>.json` metadata format.
const FORMAT: u32 = 1;
/// Largest metadata file read at startup: a 32 KiB policy plus a description.
const MAX_METADATA_BYTES: u64 = 128 * 1024;

/// One KMS key as the emulator holds it. Immutable: a policy change replaces the entry.
#[derive(Debug)]
pub struct StoredKey {
    /// The key id (the UUID of the key ARN).
    pub id: Uuid,
    /// The `Description` given at CreateKey.
    pub description: String,
    /// Creation time, seconds since the Unix epoch.
    pub creation_date: f64,
    /// The key policy as the caller wrote it (GetKeyPolicy returns it verbatim).
    pub policy_text: String,
    /// The parsed key policy.
    pub policy: Policy,
    /// The AES-256 key material.
    pub material: Arc<KeyMaterial>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    format: u32,
    key_id: String,
    description: String,
    creation_date: f64,
    policy: String,
}

/// The key store: an in-memory map backed by the state directory.
#[derive(Debug)]
pub struct KeyStore {
    dir: PathBuf,
    keys: RwLock<BTreeMap<Uuid, Arc<StoredKey>>>,
    writer: Mutex<()>,
}

impl KeyStore {
    /// Opens (creating if needed) the store under `state_dir` and loads every key.
    ///
    /// # Errors
    /// [`SimError::Io`] when the directory cannot be created or read,
    /// [`SimError::CorruptState`] when a key file does not parse.
    pub fn open(state_dir: &Path) -> Result<Self, SimError> {
        let dir = state_dir.join("keys");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| io_error(&dir, source))?;
        let mut keys = BTreeMap::new();
        let entries = fs::read_dir(&dir).map_err(|source| io_error(&dir, source))?;
        for entry in entries {
            let entry = entry.map_err(|source| io_error(&dir, source))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || path.extension().and_then(|e| e.to_str()) != Some("json") {
                // Temporary files of an interrupted write, and key-material files
                // (read below through their metadata file).
                continue;
            }
            let key = load_key(&path)?;
            keys.insert(key.id, Arc::new(key));
        }
        tracing::info!(keys = keys.len(), dir = %dir.display(), "key store loaded");
        Ok(Self {
            dir,
            keys: RwLock::new(keys),
            writer: Mutex::new(()),
        })
    }

    /// The key with id `id`, if any.
    pub fn get(&self, id: &Uuid) -> Option<Arc<StoredKey>> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Creates a key with fresh material, persists it, and returns it. Blocking I/O.
    ///
    /// # Errors
    /// [`SimError::Io`] when the files cannot be written; [`SimError::Config`] when
    /// the random source fails.
    pub fn create(
        &self,
        description: String,
        policy_text: String,
        policy: Policy,
    ) -> Result<Arc<StoredKey>, SimError> {
        let material =
            KeyMaterial::generate().map_err(|e| SimError::Config(format!("key material: {e}")))?;
        let key = StoredKey {
            id: Uuid::new_v4(),
            description,
            creation_date: now_epoch_seconds(),
            policy_text,
            policy,
            material: Arc::new(material),
        };
        let _guard = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        // Material first: a crash between the two writes leaves an orphan `.key`
        // that the loader ignores, never metadata without material.
        write_atomic(
            &self.dir,
            &format!("{}.key", key.id),
            key.material.as_bytes(),
        )?;
        self.write_metadata(&key)?;
        let key = Arc::new(key);
        self.keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.id, key.clone());
        Ok(key)
    }

    /// Replaces the policy of key `id` and persists it. Blocking I/O.
    ///
    /// # Errors
    /// [`SimError::Io`] when the file cannot be written; [`SimError::Config`] when no
    /// such key exists (callers resolve the key first).
    pub fn put_policy(
        &self,
        id: &Uuid,
        policy_text: String,
        policy: Policy,
    ) -> Result<(), SimError> {
        let _guard = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self
            .get(id)
            .ok_or_else(|| SimError::Config(format!("no key {id}")))?;
        let key = StoredKey {
            id: old.id,
            description: old.description.clone(),
            creation_date: old.creation_date,
            policy_text,
            policy,
            material: old.material.clone(),
        };
        self.write_metadata(&key)?;
        self.keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.id, Arc::new(key));
        Ok(())
    }

    fn write_metadata(&self, key: &StoredKey) -> Result<(), SimError> {
        let file = KeyFile {
            format: FORMAT,
            key_id: key.id.to_string(),
            description: key.description.clone(),
            creation_date: key.creation_date,
            policy: key.policy_text.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| SimError::Config(format!("serialising key metadata: {e}")))?;
        write_atomic(&self.dir, &format!("{}.json", key.id), &bytes)
    }
}

fn io_error(path: &Path, source: std::io::Error) -> SimError {
    SimError::Io {
        path: path.to_owned(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> SimError {
    SimError::CorruptState {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn now_epoch_seconds() -> f64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // Millisecond precision, as KMS reports CreationDate.
    (now.as_millis() as f64) / 1000.0
}

fn load_key(path: &Path) -> Result<StoredKey, SimError> {
    let metadata = fs::metadata(path).map_err(|source| io_error(path, source))?;
    if metadata.len() > MAX_METADATA_BYTES {
        return Err(corrupt(path, "metadata file too large"));
    }
    let bytes = fs::read(path).map_err(|source| io_error(path, source))?;
    let file: KeyFile = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(path, format!("not key metadata: {e}")))?;
    if file.format != FORMAT {
        return Err(corrupt(path, format!("unknown format {}", file.format)));
    }
    let key_id =
        Uuid::try_parse(&file.key_id).map_err(|_| corrupt(path, "key_id is not a UUID"))?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if stem != key_id.to_string() {
        return Err(corrupt(path, "file name does not match key_id"));
    }
    let policy =
        Policy::parse(&file.policy).map_err(|e| corrupt(path, format!("stored policy: {e}")))?;
    let material_path = path.with_extension("key");
    let raw = zeroize::Zeroizing::new(
        fs::read(&material_path).map_err(|source| io_error(&material_path, source))?,
    );
    let bytes: [u8; KEY_MATERIAL_LEN] = raw
        .as_slice()
        .try_into()
        .map_err(|_| corrupt(&material_path, "key material is not 32 bytes"))?;
    Ok(StoredKey {
        id: key_id,
        description: file.description,
        creation_date: file.creation_date,
        policy_text: file.policy,
        policy,
        material: Arc::new(KeyMaterial::from_bytes(bytes)),
    })
}

/// Writes `bytes` to `dir/name` atomically: a 0600 temporary file in the same
/// directory, fsync, rename over the target, fsync of the directory.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SimError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let target = dir.join(name);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|source| io_error(&tmp, source))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error(&tmp, source))?;
    drop(file);
    fs::rename(&tmp, &target).map_err(|source| io_error(&target, source))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| io_error(dir, source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob;
    use crate::policy::default_policy;
    use std::os::unix::fs::PermissionsExt;

    fn policy() -> (String, Policy) {
        let text = default_policy("111122223333");
        let parsed = Policy::parse(&text).unwrap();
        (text, parsed)
    }

    #[test]
    fn persists_keys_and_policies_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        assert!(store.is_empty());
        let (text, parsed) = policy();
        let key = store.create("first".into(), text, parsed).unwrap();
        let ctx = blob::EncryptionContext::new();
        let ciphertext = blob::seal(key.id, &key.material, &ctx, b"hello").unwrap();

        let new_text = r#"{"Statement":{"Effect":"Deny","Principal":"*","Action":"kms:*"}}"#;
        store
            .put_policy(&key.id, new_text.into(), Policy::parse(new_text).unwrap())
            .unwrap();
        drop(store);

        let reopened = KeyStore::open(dir.path()).unwrap();
        assert_eq!(reopened.len(), 1);
        let loaded = reopened.get(&key.id).unwrap();
        assert_eq!(loaded.description, "first");
        assert_eq!(loaded.policy_text, new_text);
        assert_eq!(loaded.creation_date, key.creation_date);
        assert_eq!(
            &blob::open(&loaded.material, &ctx, &ciphertext).unwrap()[..],
            b"hello"
        );

        let mode = fs::metadata(dir.path().join(format!("keys/{}.key", key.id)))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn rejects_corrupted_state_at_startup() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let (text, parsed) = policy();
        let key = store.create(String::new(), text, parsed).unwrap();
        drop(store);
        let json = dir.path().join(format!("keys/{}.json", key.id));
        let material = dir.path().join(format!("keys/{}.key", key.id));

        let good = fs::read(&json).unwrap();
        fs::write(&json, b"{not json").unwrap();
        let err = KeyStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, SimError::CorruptState { .. }), "{err}");
        assert!(err.to_string().contains(&key.id.to_string()));

        fs::write(&json, &good).unwrap();
        fs::write(&material, [0u8; 31]).unwrap();
        assert!(matches!(
            KeyStore::open(dir.path()).unwrap_err(),
            SimError::CorruptState { .. }
        ));

        fs::remove_file(&material).unwrap();
        assert!(matches!(
            KeyStore::open(dir.path()).unwrap_err(),
            SimError::Io { .. }
        ));
    }

    #[test]
    fn ignores_leftover_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        drop(KeyStore::open(dir.path()).unwrap());
        fs::write(dir.path().join("keys/.abc.json.tmp"), b"partial").unwrap();
        assert!(KeyStore::open(dir.path()).unwrap().is_empty());
    }
}
