//! Tests of the SQLite backend beyond the conformance suite: durability, schema
//! migration, rows edited outside the parent, the caches.

use super::schema::{SCHEMA_V1, SCHEMA_V2};
use super::*;
use crate::service::journal::Journal;
use crate::store::conformance::{self, keyring, new_key, token_row};

#[tokio::test]
async fn passes_the_conformance_suite() {
    conformance::run_all(|| async { SqliteStore::open_in_memory().unwrap() }).await;
}

#[tokio::test]
async fn passes_the_conformance_suite_on_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    conformance::run_all(|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.path().join(format!("ekms-{i}.db"));
        async move { SqliteStore::open(&path).unwrap() }
    })
    .await;
}

#[tokio::test]
async fn migrates_a_version_1_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(SCHEMA_V1).unwrap();
        c.execute("INSERT INTO schema_version (version) VALUES (1)", [])
            .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    store.insert_keyring(keyring(), 1).await.unwrap();
    store.insert_key(new_key("k1", 1)).await.unwrap();
    drop(store);
    // Reopening a migrated database is a no-op.
    let store = SqliteStore::open(&path).unwrap();
    assert!(store.statement("k1".into()).await.unwrap().is_some());
}

#[tokio::test]
async fn migrates_a_version_2_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.db");
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(SCHEMA_V1).unwrap();
        c.execute_batch(SCHEMA_V2).unwrap();
        c.execute("INSERT INTO schema_version (version) VALUES (1), (2)", [])
            .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    store.insert_token(token_row("t1", 1), None).await.unwrap();
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.list_tokens().await.unwrap(), [token_row("t1", 1)]);
    let version: i64 = store
        .conn
        .lock()
        .unwrap()
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

#[tokio::test]
async fn rejects_a_token_row_of_the_wrong_shape() {
    let s = SqliteStore::open_in_memory().unwrap();
    s.insert_token(token_row("t1", 1), None).await.unwrap();
    s.conn
        .lock()
        .unwrap()
        .execute("UPDATE tokens SET key_ids = '{'", [])
        .unwrap();
    assert!(matches!(
        s.token_by_hash([1; 32]).await,
        Err(StoreError::Corrupt(_))
    ));
}

#[tokio::test]
async fn rejects_a_statement_row_of_the_wrong_shape() {
    let store = store_with_keyring().await;
    store.insert_key(new_key("k1", 1)).await.unwrap();
    store
        .with(|c| {
            c.execute("UPDATE key_statements SET signature = x'00'", [])?;
            Ok(())
        })
        .await
        .unwrap();
    assert!(matches!(
        store.statement("k1".into()).await,
        Err(StoreError::Corrupt(_))
    ));
}

async fn store_with_keyring() -> SqliteStore {
    let s = SqliteStore::open_in_memory().unwrap();
    s.insert_keyring(keyring(), 1).await.unwrap();
    s
}

#[tokio::test]
async fn key_round_trips_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ekms.db");
    {
        let s = SqliteStore::open(&path).unwrap();
        s.insert_keyring(keyring(), 1).await.unwrap();
        s.insert_key(new_key("k1", 10)).await.unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let row = s.key("k1".into()).await.unwrap().unwrap();
    let want = new_key("k1", 10);
    assert_eq!(row.record, want.record);
    assert_eq!(row.policy, want.policy);
    assert_eq!(row.summary.label.as_deref(), Some("bot"));
    assert_eq!(row.summary.policy_version, 1);
    assert_eq!(
        s.latest_keyring("default".into()).await.unwrap(),
        Some(keyring())
    );
    let mode: String = s
        .conn
        .lock()
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = s
        .conn
        .lock()
        .unwrap()
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "synchronous=FULL");
}

#[tokio::test]
async fn key_with_keyring_reads_both_in_one_call() {
    let s = store_with_keyring().await;
    s.insert_key(new_key("k1", 10)).await.unwrap();
    let (row, ring) = s.key_with_keyring("k1".into()).await.unwrap().unwrap();
    assert_eq!(row.record, new_key("k1", 10).record);
    assert_eq!(ring, keyring());
    assert!(s.key_with_keyring("nope".into()).await.unwrap().is_none());
}

#[tokio::test]
async fn rejects_key_whose_keyring_row_is_gone() {
    let s = store_with_keyring().await;
    s.insert_key(new_key("k1", 10)).await.unwrap();
    {
        let c = s.conn.lock().unwrap();
        c.execute_batch("PRAGMA foreign_keys = OFF; DELETE FROM keyrings;")
            .unwrap();
    }
    assert!(matches!(
        s.key_with_keyring("k1".into()).await,
        Err(StoreError::Corrupt(_))
    ));
}

#[tokio::test]
async fn rejects_key_for_unknown_keyring_and_writes_nothing() {
    let s = SqliteStore::open_in_memory().unwrap();
    assert!(matches!(
        s.insert_key(new_key("k1", 10)).await,
        Err(StoreError::Sqlite(_))
    ));
    assert!(s.key("k1".into()).await.unwrap().is_none());
    assert!(s.list_keys(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn policy_compare_and_set_has_one_winner() {
    let s = store_with_keyring().await;
    s.insert_key(new_key("k1", 10)).await.unwrap();
    let update = |json: &str| SealedPolicy {
        key_id: "k1".into(),
        version: 2,
        policy_json: json.into(),
        mac: [6; 32],
    };
    let (a, b) = tokio::join!(
        s.compare_and_set_policy(1, update(r#"{"a":1}"#)),
        s.compare_and_set_policy(1, update(r#"{"b":1}"#)),
    );
    assert_eq!(
        usize::from(a.is_ok()) + usize::from(b.is_ok()),
        1,
        "exactly one update wins"
    );
    let loser = if a.is_err() { a } else { b };
    assert!(matches!(
        loser,
        Err(StoreError::PolicyConflict { expected: 1 })
    ));
    let row = s.key("k1".into()).await.unwrap().unwrap();
    assert_eq!(row.policy.version, 2);
    assert_eq!(row.policy.mac, [6; 32]);
}

#[tokio::test]
async fn rejects_tampered_rows_as_corrupt() {
    let s = store_with_keyring().await;
    s.insert_key(new_key("k1", 10)).await.unwrap();
    s.insert_key(new_key("k2", 11)).await.unwrap();
    s.insert_key(new_key("k3", 12)).await.unwrap();
    {
        let c = s.conn.lock().unwrap();
        c.execute(
            "UPDATE keys SET sealed_record = x'ff00' WHERE key_id = 'k1'",
            [],
        )
        .unwrap();
        c.execute("UPDATE keys SET public_key = x'03' WHERE key_id = 'k2'", [])
            .unwrap();
        c.execute("UPDATE policies SET mac = x'00' WHERE key_id = 'k3'", [])
            .unwrap();
    }
    for id in ["k1", "k2", "k3"] {
        assert!(
            matches!(s.key(id.into()).await, Err(StoreError::Corrupt(_))),
            "{id}"
        );
    }
}

#[tokio::test]
async fn rejects_rows_with_wrong_column_types_as_corrupt() {
    let s = store_with_keyring().await;
    let tamper = [
        "UPDATE keys SET public_key = 'text' WHERE key_id = 'k1'",
        "UPDATE policies SET mac = 'text' WHERE key_id = 'k2'",
        "UPDATE keys SET sealed_record = 'text' WHERE key_id = 'k3'",
        "UPDATE policies SET policy_json = x'00ff' WHERE key_id = 'k4'",
        "UPDATE keys SET epoch = 99999999999 WHERE key_id = 'k5'",
    ];
    for (i, _) in tamper.iter().enumerate() {
        s.insert_key(new_key(&format!("k{}", i + 1), 10))
            .await
            .unwrap();
    }
    // Positive twin: untouched rows read back.
    assert!(s.key("k1".into()).await.unwrap().is_some());
    {
        let c = s.conn.lock().unwrap();
        c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        for sql in tamper {
            c.execute(sql, []).unwrap();
        }
    }
    for i in 1..=tamper.len() {
        let got = s.key(format!("k{i}")).await;
        assert!(matches!(got, Err(StoreError::Corrupt(_))), "k{i}: {got:?}");
    }
    assert!(matches!(s.list_keys(10).await, Err(StoreError::Corrupt(_))));
    {
        let c = s.conn.lock().unwrap();
        c.execute("UPDATE keyrings SET dek_ciphertext = 'text'", [])
            .unwrap();
    }
    assert!(matches!(
        s.keyring("default".into(), 1).await,
        Err(StoreError::Corrupt(_))
    ));
}

#[tokio::test]
async fn rejects_sealed_record_with_trailing_bytes() {
    let s = store_with_keyring().await;
    s.insert_key(new_key("k1", 10)).await.unwrap();
    {
        let c = s.conn.lock().unwrap();
        c.execute("UPDATE keys SET sealed_record = sealed_record || x'00'", [])
            .unwrap();
    }
    assert!(matches!(
        s.key("k1".into()).await,
        Err(StoreError::Corrupt(_))
    ));
}

#[tokio::test]
async fn cached_key_is_served_until_a_policy_write() {
    let s = store_with_keyring().await;
    s.insert_key(new_key("k1", 10)).await.unwrap();
    let (k, hit) = s.cached_key("k1").await.unwrap().unwrap();
    assert!(!hit);
    assert_eq!(k.keyring, keyring());
    let (k, hit) = s.cached_key("k1").await.unwrap().unwrap();
    assert!(hit);
    assert_eq!(k.row.policy.version, 1);
    let mut p = new_key("k1", 10).policy;
    p.version = 2;
    p.policy_json = r#"{"enabled":false}"#.into();
    s.compare_and_set_policy(1, p.clone()).await.unwrap();
    let (k, hit) = s.cached_key("k1").await.unwrap().unwrap();
    assert!(!hit, "a policy write drops the cached key");
    assert_eq!(k.row.policy, p);
    assert!(s.cached_key("k1").await.unwrap().unwrap().1);
    // Any other write through the store empties the cache too.
    s.insert_key(new_key("k2", 11)).await.unwrap();
    assert!(!s.cached_key("k1").await.unwrap().unwrap().1);
    s.forget_key("k1");
    assert!(!s.cached_key("k1").await.unwrap().unwrap().1);
    assert!(s.cached_key("nope").await.unwrap().is_none());
}

/// A store on a file (another connection can open it) holding key `k1`, cached.
async fn file_store_with_cached_k1() -> (tempfile::TempDir, std::path::PathBuf, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ekms.db");
    let s = SqliteStore::open(&path).unwrap();
    s.insert_keyring(keyring(), 1).await.unwrap();
    s.insert_key(new_key("k1", 10)).await.unwrap();
    s.cached_key("k1").await.unwrap();
    (dir, path, s)
}

#[tokio::test]
async fn rejects_cached_rows_once_another_connection_commits() {
    let (_dir, path, s) = file_store_with_cached_k1().await;
    assert!(s.cached_key("k1").await.unwrap().unwrap().1);
    // The group-commit writer's own commits keep the cache.
    Journal::new(std::sync::Arc::new(s.clone()))
        .store_record(&crate::service::journal::tests::signed(1))
        .await
        .unwrap();
    assert!(s.cached_key("k1").await.unwrap().unwrap().1);
    let other = Connection::open(&path).unwrap();
    other
        .execute("UPDATE policies SET version = 9 WHERE key_id = 'k1'", [])
        .unwrap();
    let (k, hit) = s.cached_key("k1").await.unwrap().unwrap();
    assert!(!hit, "served a row another connection replaced");
    assert_eq!(k.row.policy.version, 9);
    assert!(s.cached_key("k1").await.unwrap().unwrap().1);
}

#[tokio::test]
async fn key_cache_is_bounded_in_entries_and_bytes() {
    let s = store_with_keyring().await;
    for i in 0..4 {
        s.insert_key(new_key(&format!("k{i}"), i)).await.unwrap();
    }
    let read = |id: &str| {
        let s = s.clone();
        let id = id.to_owned();
        async move { s.key_with_keyring(id).await.unwrap().unwrap() }
    };
    let cache = KeyCache::new(None).unwrap().with_bounds(2, 1 << 20);
    for id in ["k0", "k1"] {
        let (row, keyring) = read(id).await;
        cache.insert(CachedKey { row, keyring });
    }
    assert!(
        cache.get("k0").is_some(),
        "k0 is now the most recently used"
    );
    let (row, keyring) = read("k2").await;
    cache.insert(CachedKey { row, keyring });
    assert_eq!(cache.len_and_bytes().0, 2);
    assert!(
        cache.get("k1").is_none(),
        "the least recently used went first"
    );
    assert!(cache.get("k0").is_some() && cache.get("k2").is_some());
    // A byte bound of one entry keeps one.
    let (row, keyring) = read("k3").await;
    let one = KeyCache::new(None).unwrap().with_bounds(100, 700);
    one.insert(CachedKey {
        row: row.clone(),
        keyring: keyring.clone(),
    });
    let (row0, keyring0) = read("k0").await;
    one.insert(CachedKey {
        row: row0,
        keyring: keyring0,
    });
    let (n, bytes) = one.len_and_bytes();
    assert_eq!(n, 1);
    assert!(bytes <= 700);
    // Too large for the bound: not kept at all.
    let none = KeyCache::new(None).unwrap().with_bounds(100, 10);
    none.insert(CachedKey { row, keyring });
    assert_eq!(none.len_and_bytes(), (0, 0));
}

#[test]
fn rejects_unknown_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ekms.db");
    drop(SqliteStore::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .execute("UPDATE schema_version SET version = 99", [])
        .unwrap();
    assert!(matches!(
        SqliteStore::open(&path),
        Err(StoreError::Schema(_))
    ));
}

#[tokio::test]
async fn keeps_the_newest_checkpoints() {
    let s = SqliteStore::open_in_memory().unwrap();
    for seq in 1..=20u8 {
        let checkpoint = ekms_shared::SealedCheckpoint {
            seq: u64::from(seq),
            keyring: "default".into(),
            epoch: 1,
            body: vec![seq],
            mac: [seq; 32],
        };
        s.store_checkpoint(checkpoint, None).await.unwrap();
    }
    let n: i64 = s
        .with(|c| Ok(c.query_row("SELECT COUNT(*) FROM checkpoints", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(n, KEPT_CHECKPOINTS);
    assert_eq!(s.latest_checkpoint().await.unwrap().unwrap().seq, 20);
}

#[tokio::test]
async fn serves_hits_through_its_own_audit_commit_and_not_after_an_aborted_one() {
    // The group-commit thread's commit moves the watch's data_version before it can
    // note the value: hits in between were misses (database reads) under load.
    let (_dir, path, s) = file_store_with_cached_k1().await;
    assert!(s.keys.get("k1").is_some());
    {
        let mut c = s.conn.lock().unwrap();
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        s.keys.check_external(&tx);
        let window = s.keys.begin_own_commit(&tx);
        tx.execute(
            "INSERT INTO audit_records (seq, record, signature, audit_key) VALUES (77, '{}', x'00', x'00')",
            [],
        )
        .unwrap();
        tx.commit().unwrap();
        assert!(
            s.keys.get("k1").is_some(),
            "our own commit is not another writer's"
        );
        window.committed(&c);
    }
    assert!(s.keys.get("k1").is_some());
    // A window opened and closed without a commit leaves another writer visible.
    {
        let c = s.conn.lock().unwrap();
        drop(s.keys.begin_own_commit(&c));
    }
    let other = Connection::open(&path).unwrap();
    other
        .execute("UPDATE policies SET version = 9 WHERE key_id = 'k1'", [])
        .unwrap();
    assert!(
        s.keys.get("k1").is_none(),
        "served a row another connection replaced"
    );
}
