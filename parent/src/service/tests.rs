//! Tests of the service layer as the JSON-RPC endpoint will use it (no HTTP): the keys
//! a token may sign with, a key found by address among them, the typed signature and
//! the typed refusal carrying the policy rule.

use ekms_shared::{Algorithm, PayloadKind, SignOutput, SignPayload};

use super::keys::CreateKey;
use super::sign::SignRequest;
use super::*;
use crate::auth::{authenticate, Caller};
use crate::store::KeySummary;
use crate::testing::{token, Harness, G_ADDRESS};

/// The caller `token` authenticates as.
async fn caller(h: &Harness, token: &str) -> Caller {
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        axum::http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    authenticate(&headers, h.service.store().as_ref())
        .await
        .unwrap()
}

async fn create(h: &Harness, admin: &Caller, algorithm: Algorithm) -> KeySummary {
    let new = CreateKey {
        algorithm,
        label: None,
        policy_json: r#"{"enabled":true}"#.into(),
        owner: None,
    };
    h.service.create_key(admin, new).await.unwrap().summary
}

/// A `sign` token for `key` (the EVM key of `G_ADDRESS`) alone, checked: its signable
/// keys are that key, which it finds by its address in lower case (JSON-RPC clients send
/// them so; EVM addresses match whatever their case).
async fn bot_for(h: &Harness, key: &KeySummary) -> Caller {
    let (_, bot) = token(&h.store, "sign", Some(&[key.key_id.as_str()]), None).await;
    let bot = caller(h, &bot).await;
    let keys = h.service.signable_keys(&bot).await.unwrap();
    let ids: Vec<_> = keys.iter().map(|k| k.key_id.as_str()).collect();
    assert_eq!(ids, [key.key_id.as_str()]);
    let found = h
        .service
        .key_by_address(&bot, &G_ADDRESS.to_lowercase())
        .await
        .unwrap();
    assert_eq!(found.key_id, key.key_id);
    bot
}

fn payload(kind: PayloadKind, bytes: &[u8]) -> SignPayload {
    SignPayload {
        kind,
        bytes: bytes.to_vec(),
    }
}

#[tokio::test]
async fn finds_a_callers_key_by_address_and_signs_with_it() {
    let h = Harness::start(1).await;
    let admin = caller(&h, &h.admin_token).await;
    let evm = create(&h, &admin, Algorithm::Secp256k1).await;
    let sol = create(&h, &admin, Algorithm::Ed25519).await;
    let bot = bot_for(&h, &evm).await;
    let request = SignRequest {
        key_id: evm.key_id.clone(),
        payload: payload(PayloadKind::EvmTransaction, &[0x02, 0xf8]),
    };
    let signed = h.service.sign(&bot, request).await.unwrap();
    assert!(
        matches!(signed.output, SignOutput::Evm { ref signed_transaction, .. } if signed_transaction == &[0x02, 0xf8, 0xee]),
        "{signed:?}"
    );
    // Every key of an admin token.
    assert_eq!(h.service.signable_keys(&admin).await.unwrap().len(), 2);
    assert_eq!(
        h.service
            .key_by_address(&admin, &sol.address)
            .await
            .unwrap()
            .key_id,
        sol.key_id
    );
}

#[tokio::test]
async fn rejects_keys_the_token_may_not_use() {
    let h = Harness::start(1).await;
    let admin = caller(&h, &h.admin_token).await;
    let evm = create(&h, &admin, Algorithm::Secp256k1).await;
    let sol = create(&h, &admin, Algorithm::Ed25519).await;
    let (_, bot) = token(&h.store, "sign", Some(&[evm.key_id.as_str()]), None).await;
    let bot = caller(&h, &bot).await;
    assert!(matches!(
        h.service.key_by_address(&bot, &sol.address).await,
        Err(ServiceError::KeyNotFound)
    ));
    let request = SignRequest {
        key_id: sol.key_id,
        payload: payload(PayloadKind::SolanaTransaction, b"tx"),
    };
    assert!(matches!(
        h.service.sign(&bot, request).await,
        Err(ServiceError::Forbidden(_))
    ));
    let (_, reader) = token(&h.store, "keys:read", None, None).await;
    let reader = caller(&h, &reader).await;
    assert!(matches!(
        h.service.signable_keys(&reader).await,
        Err(ServiceError::Forbidden(_))
    ));
}

#[tokio::test]
async fn rejects_signing_outside_the_policy_with_the_rule() {
    let h = Harness::start(1).await;
    let admin = caller(&h, &h.admin_token).await;
    let evm = create(&h, &admin, Algorithm::Secp256k1).await;
    let request = SignRequest {
        key_id: evm.key_id.clone(),
        payload: payload(PayloadKind::EvmTransaction, b"deny"),
    };
    match h.service.sign(&admin, request).await {
        Err(ServiceError::PolicyDenied(refusal)) => assert_eq!(refusal.rule, "evm.chain_ids"),
        other => panic!("{other:?}"),
    }
    let request = SignRequest {
        key_id: evm.key_id,
        payload: payload(PayloadKind::SolanaTransaction, b"tx"),
    };
    assert!(matches!(
        h.service.sign(&admin, request).await,
        Err(ServiceError::Invalid {
            what: Invalid::KindMismatch,
            ..
        })
    ));
}

#[tokio::test]
async fn rejects_hiding_a_tokens_key_behind_a_thousand_newer_keys() {
    // An app with keys:create made MAX_SIGNABLE_KEYS keys after the bot's: the bot's key
    // fell out of the newest-keys listing that eth_accounts and the account lookup
    // read, so JSON-RPC answered "unknown account" for the bot's own key.
    let h = Harness::start(1).await;
    let admin = caller(&h, &h.admin_token).await;
    let evm = create(&h, &admin, Algorithm::Secp256k1).await;
    let sol = create(&h, &admin, Algorithm::Ed25519).await;
    {
        let conn = rusqlite::Connection::open(h.db_path()).unwrap();
        for i in 0..super::keys::MAX_SIGNABLE_KEYS {
            let id = uuid::Uuid::new_v4().to_string();
            let later = sol.created_at_ms + 1 + i64::from(i);
            conn.execute(
                "INSERT INTO keys (key_id, algorithm, label, owner, public_key, address, keyring,
                                   epoch, sealed_record, created_at)
                 SELECT ?1, algorithm, label, owner, public_key, address, keyring, epoch,
                        sealed_record, ?2 FROM keys WHERE key_id = ?3",
                rusqlite::params![id, later, sol.key_id],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO policies (key_id, version, policy_json, mac)
                 SELECT ?1, version, policy_json, mac FROM policies WHERE key_id = ?2",
                rusqlite::params![id, sol.key_id],
            )
            .unwrap();
        }
    }
    bot_for(&h, &evm).await;
    // A token without a key list (here the admin's) finds the old key by its address
    // too: the lookup is by address, not through the newest-keys listing.
    let found = h
        .service
        .key_by_address(&admin, &G_ADDRESS.to_uppercase().replacen("0X", "0x", 1))
        .await
        .unwrap();
    assert_eq!(found.key_id, evm.key_id);
}

#[tokio::test]
async fn finds_an_evm_key_by_address_once_then_from_memory_with_scopes_checked_each_call() {
    let h = Harness::start(1).await;
    let admin = caller(&h, &h.admin_token).await;
    let evm = create(&h, &admin, Algorithm::Secp256k1).await;
    let sol = create(&h, &admin, Algorithm::Ed25519).await;
    let address = ekms_signer::address::parse_evm_address(G_ADDRESS).unwrap();
    let bot = bot_for(&h, &evm).await;
    assert!(h.service.evm_addresses.is_empty());
    assert_eq!(
        h.service.evm_key_for_address(&bot, address).await.unwrap(),
        evm.key_id
    );
    assert_eq!(h.service.evm_addresses.len(), 1);
    // The next call reads no database: with the key's address column rewritten (and
    // its statement gone) it still finds the key that the enclave said has it.
    {
        let db = rusqlite::Connection::open(h.db_path()).unwrap();
        db.execute(
            "UPDATE keys SET address = '0x0000000000000000000000000000000000000001' WHERE key_id = ?1",
            [&evm.key_id],
        )
        .unwrap();
        db.execute(
            "DELETE FROM key_statements WHERE key_id = ?1",
            [&evm.key_id],
        )
        .unwrap();
    }
    assert_eq!(
        h.service.evm_key_for_address(&bot, address).await.unwrap(),
        evm.key_id
    );
    // Scopes and key lists are still checked on every call: a token for another key
    // gets the answer an unknown address gets, and one without `sign` is refused.
    let (_, other) = token(&h.store, "sign", Some(&[sol.key_id.as_str()]), None).await;
    let other = caller(&h, &other).await;
    assert!(matches!(
        h.service.evm_key_for_address(&other, address).await,
        Err(ServiceError::KeyNotFound)
    ));
    let (_, reader) = token(&h.store, "keys:read", None, None).await;
    let reader = caller(&h, &reader).await;
    assert!(matches!(
        h.service.evm_key_for_address(&reader, address).await,
        Err(ServiceError::Forbidden(_))
    ));
    // An address no key has is not kept.
    assert!(matches!(
        h.service.evm_key_for_address(&admin, [7u8; 20]).await,
        Err(ServiceError::KeyNotFound)
    ));
    assert_eq!(h.service.evm_addresses.len(), 1);
}

#[tokio::test]
async fn checks_each_keys_statement_once_for_eth_accounts_and_again_when_a_column_changes() {
    let h = Harness::start(1).await;
    let admin = caller(&h, &h.admin_token).await;
    let evm = create(&h, &admin, Algorithm::Secp256k1).await;
    let statements = || {
        rusqlite::Connection::open(h.db_path())
            .unwrap()
            .query_row(
                "SELECT COUNT(*) FROM key_statements WHERE key_id = ?1",
                [&evm.key_id],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
    };
    assert_eq!(h.service.signable_keys(&admin).await.unwrap().len(), 1);
    // Checked once: with its statement row gone, the next listing does not ask the
    // enclave for a new one (checking it again would store one).
    rusqlite::Connection::open(h.db_path())
        .unwrap()
        .execute(
            "DELETE FROM key_statements WHERE key_id = ?1",
            [&evm.key_id],
        )
        .unwrap();
    assert_eq!(statements(), 0);
    assert_eq!(h.service.signable_keys(&admin).await.unwrap().len(), 1);
    assert_eq!(statements(), 0);
    // A rewritten address column is not the kept identity: it is checked against the
    // statement (the enclave's, issued again) and refused.
    rusqlite::Connection::open(h.db_path())
        .unwrap()
        .execute(
            "UPDATE keys SET address = '0x000000000000000000000000000000000000dEaD' WHERE key_id = ?1",
            [&evm.key_id],
        )
        .unwrap();
    assert!(matches!(
        h.service.signable_keys(&admin).await,
        Err(ServiceError::Parent(crate::error::Error::StoreCorrupt(m)))
            if m.contains("differs from the enclave's statement")
    ));
}
