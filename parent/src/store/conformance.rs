//! The conformance suite of [`KeyStore`]: what every backend must do, checked through
//! the trait only. A backend's tests call [`run_all`] with a function that makes an
//! empty store (the SQLite backend's do, in `store/sqlite/tests.rs`, so it runs in
//! `cargo test` and `make test`).
//!
//! Each check takes a fresh store; the fixtures ([`keyring`], [`new_key`],
//! [`token_row`]) are shared with the backends' own tests.

use std::future::Future;

use ekms_shared::statement::SignedKeyStatement;
use ekms_shared::{Algorithm, KeyringRef, SealedCheckpoint, SealedKeyRecord, SealedPolicy};

use super::{KeyStore, NewKey, StoreError, StoredStatement, TokenRow, MAX_KEYS_BY_ADDRESS};

/// Runs every check of the suite, each on a store `make` returns (empty).
///
/// # Panics
/// On the first check the backend fails.
pub async fn run_all<S: KeyStore, F: Future<Output = S>>(make: impl Fn() -> F) {
    keyrings(&make().await).await;
    keys_round_trip_and_list_newest_first(&make().await).await;
    rejects_duplicate_and_mismatched_keys(&make().await).await;
    policy_compare_and_set(&make().await).await;
    cached_key_follows_policy_writes(&make().await).await;
    statements(&make().await).await;
    tokens(&make().await).await;
    checkpoints_with_policies(&make().await).await;
    keys_by_address_any_case_newest_first(&make().await).await;
    audit_records_and_documents(&make().await).await;
}

/// Keyring `default` epoch 1.
pub fn keyring() -> KeyringRef {
    KeyringRef {
        keyring: "default".into(),
        epoch: 1,
        dek_ciphertext: vec![0xde; 40],
    }
}

/// A secp256k1 key `key_id` in keyring `default` epoch 1, policy version 1.
pub fn new_key(key_id: &str, created_at_ms: i64) -> NewKey {
    NewKey {
        label: Some("bot".into()),
        address: "0xabc".into(),
        created_at_ms,
        record: SealedKeyRecord {
            version: 1,
            key_id: key_id.into(),
            owner: None,
            algorithm: Algorithm::Secp256k1,
            public_key: vec![2; 33],
            keyring: "default".into(),
            epoch: 1,
            salt: [7; 32],
            nonce: [9; 12],
            ciphertext: vec![1, 2, 3],
        },
        policy: policy(key_id, 1),
        statement: StoredStatement {
            signed: SignedKeyStatement {
                statement: format!(r#"{{"key_id":"{key_id}"}}"#),
                signature: [3; 64],
                identity_key: [4; 32],
            },
            identity_document: vec![0xd2; 8],
        },
    }
}

/// Policy `version` of `key_id` (its MAC is the version's byte, to tell them apart).
pub fn policy(key_id: &str, version: u64) -> SealedPolicy {
    SealedPolicy {
        key_id: key_id.into(),
        version,
        policy_json: format!(r#"{{"enabled":true,"v":{version}}}"#),
        mac: [u8::try_from(version % 256).unwrap_or(0); 32],
    }
}

/// Token `id` whose hash is `[hash_byte; 32]`.
pub fn token_row(id: &str, hash_byte: u8) -> TokenRow {
    TokenRow {
        token_id: id.into(),
        name: "bot".into(),
        token_hash: [hash_byte; 32],
        scopes: "sign keys:read".into(),
        key_ids: Some(vec!["k1".into()]),
        created_at_ms: 5,
        expires_at_ms: Some(9),
    }
}

fn checkpoint(seq: u64) -> SealedCheckpoint {
    SealedCheckpoint {
        seq,
        keyring: "default".into(),
        epoch: 1,
        body: vec![u8::try_from(seq % 256).unwrap_or(0)],
        mac: [u8::try_from(seq % 256).unwrap_or(0); 32],
    }
}

async fn with_keyring(s: &dyn KeyStore) {
    s.insert_keyring(keyring(), 1).await.unwrap();
}

/// Stored once per `(name, epoch)`; the highest epoch is the latest.
async fn keyrings(s: &dyn KeyStore) {
    assert_eq!(s.latest_keyring("default".into()).await.unwrap(), None);
    with_keyring(s).await;
    assert!(matches!(
        s.insert_keyring(keyring(), 2).await,
        Err(StoreError::AlreadyExists(_))
    ));
    let mut second = keyring();
    second.epoch = 2;
    second.dek_ciphertext = vec![0xee; 40];
    s.insert_keyring(second.clone(), 2).await.unwrap();
    assert_eq!(
        s.latest_keyring("default".into()).await.unwrap(),
        Some(second)
    );
    assert_eq!(s.latest_keyring("other".into()).await.unwrap(), None);
}

/// Inserted keys read back whole, with their keyring; listed newest first, bounded.
async fn keys_round_trip_and_list_newest_first(s: &dyn KeyStore) {
    with_keyring(s).await;
    assert!(s.key("k1".into()).await.unwrap().is_none());
    for (i, id) in ["k1", "k2", "k3"].iter().enumerate() {
        s.insert_key(new_key(id, 10 + i64::try_from(i).unwrap_or(0)))
            .await
            .unwrap();
    }
    let want = new_key("k2", 11);
    let row = s.key("k2".into()).await.unwrap().unwrap();
    assert_eq!(row.record, want.record);
    assert_eq!(row.policy, want.policy);
    assert_eq!(row.summary.key_id, "k2");
    assert_eq!(row.summary.address, "0xabc");
    assert_eq!(row.summary.label.as_deref(), Some("bot"));
    assert_eq!(row.summary.policy_version, 1);
    let (row2, ring) = s.key_with_keyring("k2".into()).await.unwrap().unwrap();
    assert_eq!((row2, ring), (row, keyring()));
    let listed = s.list_keys(2).await.unwrap();
    let ids: Vec<_> = listed.iter().map(|(k, _)| k.key_id.as_str()).collect();
    assert_eq!(ids, ["k3", "k2"]);
    assert_eq!(listed[0].1, want.policy.policy_json);
}

/// Keys are found by address in any ASCII case, newest first, at most
/// [`MAX_KEYS_BY_ADDRESS`]; another address finds none.
async fn keys_by_address_any_case_newest_first(s: &dyn KeyStore) {
    with_keyring(s).await;
    let mut a = new_key("ka", 1);
    a.address = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into();
    s.insert_key(a).await.unwrap();
    s.insert_key(new_key("kb", 2)).await.unwrap();
    let found = s
        .keys_by_address("0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED".into())
        .await
        .unwrap();
    let ids: Vec<_> = found.iter().map(|k| k.key_id.as_str()).collect();
    assert_eq!(ids, ["ka"]);
    assert_eq!(
        found[0].address,
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    );
    assert!(s
        .keys_by_address("0x0000000000000000000000000000000000000001".into())
        .await
        .unwrap()
        .is_empty());
    // "0xabc" (new_key's address) many times: newest first, bounded.
    for i in 0..(MAX_KEYS_BY_ADDRESS + 4) {
        s.insert_key(new_key(&format!("kc{i}"), 10 + i64::from(i)))
            .await
            .unwrap();
    }
    let found = s.keys_by_address("0xABC".into()).await.unwrap();
    assert_eq!(found.len(), MAX_KEYS_BY_ADDRESS as usize);
    assert_eq!(found[0].key_id, format!("kc{}", MAX_KEYS_BY_ADDRESS + 3));
}

/// A duplicate id, or a policy naming another key, is refused and writes nothing.
async fn rejects_duplicate_and_mismatched_keys(s: &dyn KeyStore) {
    with_keyring(s).await;
    s.insert_key(new_key("k1", 1)).await.unwrap();
    let mut again = new_key("k1", 2);
    again.label = Some("other".into());
    assert!(matches!(
        s.insert_key(again).await,
        Err(StoreError::AlreadyExists(_))
    ));
    let mut mismatched = new_key("k2", 3);
    mismatched.policy.key_id = "k1".into();
    assert!(matches!(
        s.insert_key(mismatched).await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(s.key("k2".into()).await.unwrap().is_none());
    let listed = s.list_keys(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0.label.as_deref(), Some("bot"));
}

/// Compare-and-set: the expected version wins once; a stale one, a version that does
/// not increase and a missing key are refused and change nothing.
async fn policy_compare_and_set(s: &dyn KeyStore) {
    with_keyring(s).await;
    s.insert_key(new_key("k1", 1)).await.unwrap();
    s.compare_and_set_policy(1, policy("k1", 2)).await.unwrap();
    assert!(matches!(
        s.compare_and_set_policy(1, policy("k1", 3)).await,
        Err(StoreError::PolicyConflict { expected: 1 })
    ));
    assert!(matches!(
        s.compare_and_set_policy(2, policy("k1", 2)).await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        s.compare_and_set_policy(1, policy("gone", 2)).await,
        Err(StoreError::PolicyConflict { .. })
    ));
    let row = s.key("k1".into()).await.unwrap().unwrap();
    assert_eq!(row.policy, policy("k1", 2), "no change on failure");
    assert_eq!(row.summary.policy_version, 2);
}

/// The sign path's cached read never returns a policy older than one written through
/// the store (directly or with a checkpoint); `forget_key` drops a cached row.
async fn cached_key_follows_policy_writes(s: &dyn KeyStore) {
    with_keyring(s).await;
    s.insert_key(new_key("k1", 1)).await.unwrap();
    assert!(s.cached_key("nope").await.unwrap().is_none());
    let (first, _) = s.cached_key("k1").await.unwrap().unwrap();
    assert_eq!(first.row.policy.version, 1);
    assert_eq!(first.keyring, keyring());
    s.cached_key("k1").await.unwrap();
    s.compare_and_set_policy(1, policy("k1", 2)).await.unwrap();
    let (after, _) = s.cached_key("k1").await.unwrap().unwrap();
    assert_eq!(after.row.policy, policy("k1", 2));
    s.store_checkpoint(checkpoint(1), Some((2, policy("k1", 3))))
        .await
        .unwrap();
    let (after, _) = s.cached_key("k1").await.unwrap().unwrap();
    assert_eq!(after.row.policy, policy("k1", 3));
    s.forget_key("k1");
    let (fresh, cached) = s.cached_key("k1").await.unwrap().unwrap();
    assert!(!cached, "a forgotten key is read again");
    assert_eq!(fresh.row.policy, policy("k1", 3));
}

/// A key's statement is stored with it and can be replaced.
async fn statements(s: &dyn KeyStore) {
    with_keyring(s).await;
    assert_eq!(s.statement("k1".into()).await.unwrap(), None);
    s.insert_key(new_key("k1", 1)).await.unwrap();
    let got = s.statement("k1".into()).await.unwrap().unwrap();
    assert_eq!(got, new_key("k1", 1).statement);
    let mut other = got;
    other.signed.statement = "replaced".into();
    other.signed.identity_key = [9; 32];
    other.identity_document = vec![0xd3; 4];
    s.put_statement("k1".into(), other.clone()).await.unwrap();
    assert_eq!(s.statement("k1".into()).await.unwrap(), Some(other));
}

/// Tokens: found by hash until deleted, listed oldest first, bounded, never duplicated.
async fn tokens(s: &dyn KeyStore) {
    s.insert_token(token_row("t1", 1), Some(2)).await.unwrap();
    s.insert_token(token_row("t2", 2), Some(2)).await.unwrap();
    assert!(matches!(
        s.insert_token(token_row("t3", 3), Some(2)).await,
        Err(StoreError::TooManyTokens(2))
    ));
    // The bootstrap path has no limit; a duplicate hash or id is refused.
    s.insert_token(token_row("t3", 3), None).await.unwrap();
    assert!(s.insert_token(token_row("t4", 3), None).await.is_err());
    assert!(s.insert_token(token_row("t3", 4), None).await.is_err());
    for _ in 0..2 {
        let got = s.token_by_hash([1; 32]).await.unwrap().unwrap();
        assert_eq!(*got, token_row("t1", 1));
    }
    assert!(s.token_by_hash([9; 32]).await.unwrap().is_none());
    assert!(s.delete_token("t1".into()).await.unwrap());
    assert!(
        s.token_by_hash([1; 32]).await.unwrap().is_none(),
        "revoked at once"
    );
    assert!(!s.delete_token("t1".into()).await.unwrap());
    assert_eq!(
        s.list_tokens().await.unwrap(),
        [token_row("t2", 2), token_row("t3", 3)]
    );
}

/// Checkpoints: the newest is read back; a reissued `seq` replaces; a checkpoint whose
/// policy loses the compare-and-set is not stored either.
async fn checkpoints_with_policies(s: &dyn KeyStore) {
    with_keyring(s).await;
    s.insert_key(new_key("k1", 1)).await.unwrap();
    assert_eq!(s.latest_checkpoint().await.unwrap(), None);
    s.store_checkpoint(checkpoint(1), None).await.unwrap();
    s.store_checkpoint(checkpoint(2), Some((1, policy("k1", 2))))
        .await
        .unwrap();
    assert_eq!(s.latest_checkpoint().await.unwrap(), Some(checkpoint(2)));
    let mut again = checkpoint(2);
    again.body = vec![0xee];
    s.store_checkpoint(again.clone(), None).await.unwrap();
    assert_eq!(s.latest_checkpoint().await.unwrap(), Some(again.clone()));
    assert!(matches!(
        s.store_checkpoint(checkpoint(3), Some((1, policy("k1", 3))))
            .await,
        Err(StoreError::PolicyConflict { expected: 1 })
    ));
    assert_eq!(
        s.latest_checkpoint().await.unwrap(),
        Some(again),
        "both or neither"
    );
    assert_eq!(
        s.key("k1".into()).await.unwrap().unwrap().policy,
        policy("k1", 2)
    );
}

/// Audit records: stored once each, paged ascending; documents kept once per key.
async fn audit_records_and_documents(s: &dyn KeyStore) {
    use crate::service::journal::tests::signed;
    assert_eq!(s.latest_audit_record().await.unwrap(), None);
    for seq in 1..=5 {
        s.append_audit(seq, signed(seq)).await.unwrap();
    }
    assert!(matches!(
        s.append_audit(3, signed(3)).await,
        Err(StoreError::AlreadyExists(_))
    ));
    let page = s.audit_records_after(1, 2).await.unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(page[0].signed, signed(2));
    assert_eq!(s.latest_audit_record().await.unwrap().unwrap().seq, 5);
    s.put_audit_document([1; 32], vec![1]).await.unwrap();
    s.put_audit_document([1; 32], vec![2]).await.unwrap();
    assert_eq!(
        s.audit_documents(vec![[1; 32], [2; 32]]).await.unwrap(),
        vec![([1; 32], vec![1])]
    );
}
