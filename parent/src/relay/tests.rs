//! Tests of the relay against the fake enclave of [`crate::testing`] (started with the
//! service's keyring bootstrap, as in production).

use super::*;
use crate::store::SqliteStore as Store;
use crate::testing::{relay_config, start_relay, wait_ready, FakeEnclave, Harness};
use ekms_shared::{frame_len, EnclaveState, KeyringRef, FRAME_PREFIX_LEN};
use ekms_shared::{PayloadKind, SealedKeyRecord, SealedPolicy, SignPayload};
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A `Sign` request whose payload steers the fake (record and policy are dummies:
/// the fake acts on `drop` and `hang` before looking at them).
fn sign(payload: &[u8]) -> Request {
    Request::Sign {
        record: SealedKeyRecord {
            version: 1,
            key_id: "k".into(),
            owner: None,
            algorithm: ekms_shared::Algorithm::Secp256k1,
            public_key: vec![2; 33],
            keyring: "default".into(),
            epoch: 1,
            salt: [0; 32],
            nonce: [0; 12],
            ciphertext: vec![],
        },
        keyring: KeyringRef {
            keyring: "default".into(),
            epoch: 1,
            dek_ciphertext: vec![1],
        },
        policy: SealedPolicy {
            key_id: "k".into(),
            version: 1,
            policy_json: "{}".into(),
            mac: [0; 32],
        },
        payload: SignPayload {
            kind: PayloadKind::EvmTransaction,
            bytes: payload.to_vec(),
        },
    }
}

fn attest() -> Request {
    Request::Attestation {
        nonce: Some(vec![1, 2, 3]),
        user_data: None,
    }
}

#[tokio::test]
async fn configures_booting_enclave_and_creates_keyring_once() {
    let h = Harness::start(3).await;
    // Let every slot finish initialising.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.fake.state.configures.load(SeqCst), 1);
    assert_eq!(h.fake.state.keyrings_created.load(SeqCst), 1);
    assert_eq!(h.fake.state.connections.load(SeqCst), 3);
    let stored = h
        .store
        .latest_keyring("default".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.dek_ciphertext, b"dek-ciphertext");
    assert_eq!(h.service.keyring().current(&h.relay).await.unwrap(), stored);
    let health = h.relay.health().unwrap();
    assert_eq!(health.mode, Mode::Simulation);
    assert_eq!(health.pcrs[&0], crate::testing::fake_pcr0());
    // Requests are multiplexed and answered by id.
    let calls = (0..50).map(|_| h.relay.call(attest()));
    for r in futures_join_all(calls).await {
        assert!(matches!(r, Ok(ResponseBody::Attestation { .. })));
    }
}

/// Issue 9: a KMS that refuses the attested round trip (the key policy pins
/// another PCR0) keeps the relay not ready, and says why; once the policy is right,
/// the next attempt gets it ready and the reason is gone.
#[tokio::test]
async fn reports_why_the_enclave_is_not_ready_until_kms_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enclave.sock");
    let fake = FakeEnclave::start(&path);
    let denied = WireError::Kms {
        code: "AccessDeniedException".into(),
        message: "not authorized to perform: kms:GenerateDataKey".into(),
    };
    *fake.state.configure_error.lock().unwrap() = Some(denied);
    let relay = start_relay(relay_config(&path, 1), Store::open_in_memory().unwrap()).0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let not_ready = loop {
        if let Some(n) = relay.not_ready() {
            break n;
        }
        assert!(tokio::time::Instant::now() < deadline, "no reason recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(not_ready.code, NotReadyCode::KmsAccessDenied);
    assert_eq!(not_ready.code.as_str(), "kms_access_denied");
    assert!(
        not_ready.reason.contains("AccessDeniedException"),
        "{not_ready:?}"
    );
    assert!(relay.health().is_none());
    assert_eq!(fake.state.configures.load(SeqCst), 0);

    *fake.state.configure_error.lock().unwrap() = None;
    wait_ready(&relay).await;
    assert_eq!(relay.not_ready(), None);
    relay.shutdown();
}

#[test]
fn not_ready_codes_are_distinct_and_classified() {
    let all = [
        NotReadyCode::KmsAccessDenied,
        NotReadyCode::KmsError,
        NotReadyCode::ConfigureRefused,
        NotReadyCode::NotReady,
    ];
    let names: std::collections::BTreeSet<_> = all.iter().map(|c| c.as_str()).collect();
    assert_eq!(names.len(), all.len());
    let kms = |code: &str| {
        Error::Enclave(WireError::Kms {
            code: code.into(),
            message: String::new(),
        })
    };
    assert_eq!(
        NotReadyCode::of(&kms("AccessDeniedException")),
        NotReadyCode::KmsAccessDenied
    );
    assert_eq!(
        NotReadyCode::of(&kms("ThrottlingException")),
        NotReadyCode::KmsError
    );
    let refused = Error::Enclave(WireError::BadRequest {
        message: "x".into(),
    });
    assert_eq!(NotReadyCode::of(&refused), NotReadyCode::ConfigureRefused);
    assert_eq!(
        NotReadyCode::of(&Error::EnclaveUnavailable("x".into())),
        NotReadyCode::NotReady
    );
}

/// Awaits all futures concurrently (a `join_all` without the futures crate), so the
/// requests are in flight on the connections at the same time.
async fn futures_join_all<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = fs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter().map(|o| o.unwrap()).collect()
}

#[tokio::test]
async fn reuses_stored_keyring_on_a_new_run() {
    let h = Harness::start(1).await;
    let first = h.service.keyring().current(&h.relay).await.unwrap();
    h.relay.shutdown();
    let fake2 = FakeEnclave::start(&h.dir.path().join("enclave2.sock"));
    let (relay2, boot2) = start_relay(relay_config(&fake2.path, 1), h.store.clone());
    wait_ready(&relay2).await;
    assert_eq!(fake2.state.keyrings_created.load(SeqCst), 0);
    assert_eq!(boot2.current(&relay2).await.unwrap(), first);
    relay2.shutdown();
}

#[tokio::test]
async fn rejects_requests_while_no_enclave_is_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_in_memory().unwrap();
    let (relay, boot) = start_relay(relay_config(&dir.path().join("none.sock"), 2), store);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(relay.health().is_none());
    assert!(matches!(
        relay.call(attest()).await,
        Err(Error::EnclaveUnavailable(_))
    ));
    assert!(matches!(
        boot.current(&relay).await,
        Err(Error::EnclaveUnavailable(_))
    ));
    relay.shutdown();
}

#[tokio::test]
async fn rejects_in_flight_request_when_connection_drops_then_recovers() {
    let h = Harness::start(1).await;
    assert!(matches!(
        h.relay.call(sign(b"drop")).await,
        Err(Error::EnclaveUnavailable(_))
    ));
    wait_ready(&h.relay).await;
    let mut ok = false;
    for _ in 0..100 {
        if let Ok(ResponseBody::Attestation { document }) = h.relay.call(attest()).await {
            assert_eq!(document, b"doc:\x01\x02\x03");
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "the relay reconnected");
    assert_eq!(h.fake.state.connections.load(SeqCst), 2);
}

#[tokio::test]
async fn reconfigures_a_restarted_enclave_without_a_new_keyring() {
    let mut h = Harness::start(2).await;
    let state = Arc::clone(&h.fake.state);
    let path = h.fake.path.clone();
    // Restart: every connection closes, the new enclave boots unconfigured.
    h.fake = FakeEnclave::start_with(&path, Arc::clone(&state));
    let mut ok = false;
    for _ in 0..200 {
        if h.relay.call(attest()).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "the relay came back");
    assert_eq!(state.configures.load(SeqCst), 2);
    assert_eq!(state.keyrings_created.load(SeqCst), 1);
}

#[tokio::test]
async fn raises_the_alarm_when_the_enclave_was_configured_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(crate::testing::FakeState::default());
    let fake = FakeEnclave::start_configured_by(
        &dir.path().join("e.sock"),
        Arc::clone(&state),
        Some("arn:aws:kms:us-east-1:444455556666:key/attacker"),
    );
    let (relay, boot) = start_relay(relay_config(&fake.path, 2), store_with_keyring().await);
    for _ in 0..300 {
        if relay.alarm().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let alarm = relay.alarm().expect("the alarm is raised");
    // It names both targets: ours and the one the enclave reported in Status.
    assert!(alarm.contains("alias/ekms"), "{alarm}");
    assert!(alarm.contains("key/attacker"), "{alarm}");
    assert!(relay.health().is_none());
    assert!(matches!(
        relay.call(sign(b"ok")).await,
        Err(Error::EnclaveConfiguredByAnother(_))
    ));
    assert!(matches!(
        boot.current(&relay).await,
        Err(Error::EnclaveConfiguredByAnother(_))
    ));
    // Sticky: the supervisors stopped, nothing is published again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(relay.inner.slots.iter().all(|s| read(s).is_none()));
    assert!(relay.alarm().is_some());
    assert_eq!(state.configures.load(SeqCst), 0);
    relay.shutdown();
}

#[tokio::test]
async fn takes_a_same_target_configure_as_a_refresh_without_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(crate::testing::FakeState::default());
    // Configured first by someone else, but for exactly our target: a credentials
    // refresh, no alarm.
    let fake = FakeEnclave::start_configured_by(
        &dir.path().join("e.sock"),
        Arc::clone(&state),
        Some("alias/ekms"),
    );
    let relay = start_relay(relay_config(&fake.path, 2), store_with_keyring().await).0;
    wait_ready(&relay).await;
    assert!(relay.alarm().is_none());
    assert!(relay.call(attest()).await.is_ok());
    relay.shutdown();
}

#[tokio::test]
async fn raises_the_alarm_when_a_credentials_refresh_meets_another_target() {
    let h = Harness::start(1).await;
    let state = Arc::clone(&h.fake.state);
    // The enclave now serves another target (as if restarted and taken over between
    // two refreshes, on a connection the relay kept).
    *state.target.lock().unwrap() = Some("arn:aws:kms:us-east-1:444455556666:key/x".into());
    let r = h
        .relay
        .set_credentials(AwsCredentials::new("ASIANEW".into(), "s".into(), None))
        .await;
    assert!(
        matches!(r, Err(Error::EnclaveConfiguredByAnother(_))),
        "{r:?}"
    );
    assert!(h.relay.alarm().is_some());
    assert!(matches!(
        h.relay.call(attest()).await,
        Err(Error::EnclaveConfiguredByAnother(_))
    ));
}

#[tokio::test]
async fn rejects_late_answers_after_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeEnclave::start(&dir.path().join("e.sock"));
    let mut cfg = relay_config(&fake.path, 1);
    cfg.request_timeout = Duration::from_millis(200);
    let relay = start_relay(cfg, Store::open_in_memory().unwrap()).0;
    wait_ready(&relay).await;
    assert!(matches!(
        relay.call(sign(b"hang")).await,
        Err(Error::EnclaveTimeout(_))
    ));
    let conn = relay.pick().unwrap();
    assert!(
        lock(&conn.pending).waiters.is_empty(),
        "the waiter was removed"
    );
    relay.shutdown();
}

/// A Ready enclave that records the access key id of every `Configure` and refuses
/// those whose id starts with `REFUSE` with a KMS error, as the real one does when
/// KMS rejects new credentials (it keeps its previous ones).
async fn recording_enclave(
    path: &std::path::Path,
) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    use ekms_shared::{decode_request, encode_response, ResponseFrame};
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                loop {
                    let mut prefix = [0u8; FRAME_PREFIX_LEN];
                    if stream.read_exact(&mut prefix).await.is_err() {
                        return;
                    }
                    let mut body = vec![0; frame_len(prefix).unwrap()];
                    stream.read_exact(&mut body).await.unwrap();
                    let frame = decode_request(&body).unwrap();
                    let answer = match frame.body {
                        Request::Status => Ok(ResponseBody::Status(StatusInfo {
                            state: EnclaveState::Ready,
                            mode: Mode::Simulation,
                            pcrs: BTreeMap::new(),
                            kms_target: None,
                            restored: true,
                            stopped: false,
                        })),
                        Request::Configure { kms, .. } => {
                            let id = kms.credentials.access_key_id;
                            let refuse = id.starts_with("REFUSE");
                            lock(&s).push(id);
                            if refuse {
                                Err(WireError::Kms {
                                    code: "UnrecognizedClientException".into(),
                                    message: "invalid security token".into(),
                                })
                            } else {
                                Ok(ResponseBody::Configured)
                            }
                        }
                        _ => Ok(ResponseBody::Attestation {
                            document: b"doc".to_vec(),
                        }),
                    };
                    let frame = match answer {
                        Ok(b) => ResponseFrame::ok(frame.request_id, b),
                        Err(e) => ResponseFrame::err(frame.request_id, e),
                    };
                    let bytes = encode_response(&frame).unwrap();
                    if stream.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (seen, task)
}

async fn store_with_keyring() -> Store {
    let store = Store::open_in_memory().unwrap();
    let ring = KeyringRef {
        keyring: "default".into(),
        epoch: 1,
        dek_ciphertext: b"dek".to_vec(),
    };
    store.insert_keyring(ring, 0).await.unwrap();
    store
}

#[tokio::test]
async fn pushes_refreshed_credentials_to_a_ready_enclave_on_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.sock");
    let (seen, task) = recording_enclave(&path).await;
    let relay = start_relay(relay_config(&path, 2), store_with_keyring().await).0;
    wait_ready(&relay).await;
    for _ in 0..100 {
        if relay.inner.slots.iter().all(|s| read(s).is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Both connections sent Configure although the enclave was already Ready.
    assert_eq!(*lock(&seen), ["AKIATEST", "AKIATEST"]);
    relay
        .set_credentials(AwsCredentials::new(
            "ASIANEW".into(),
            "s2".into(),
            Some("t2".into()),
        ))
        .await
        .unwrap();
    assert_eq!(lock(&seen)[2..], ["ASIANEW", "ASIANEW"]);
    match session::configure_request(&relay.inner) {
        Request::Configure { kms, .. } => {
            assert_eq!(kms.credentials.secret_access_key, "s2");
            assert_eq!(kms.credentials.session_token.as_deref(), Some("t2"));
            assert_eq!(kms.kms_key_id, "alias/ekms");
        }
        other => panic!("{other:?}"),
    }
    relay.shutdown();
    task.abort();
}

#[tokio::test]
async fn rejects_refused_credentials_but_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.sock");
    let (seen, task) = recording_enclave(&path).await;
    let relay = start_relay(relay_config(&path, 1), store_with_keyring().await).0;
    wait_ready(&relay).await;
    let refused = relay
        .set_credentials(AwsCredentials::new("REFUSE1".into(), "s".into(), None))
        .await;
    assert!(
        matches!(&refused, Err(Error::Enclave(WireError::Kms { code, .. })) if code == "UnrecognizedClientException"),
        "{refused:?}"
    );
    // The connection is still up and serving.
    assert!(relay.call(attest()).await.is_ok());
    // A reconnection to a Ready enclave that refuses the refresh still serves.
    relay.shutdown();
    let relay = start_relay(relay_config(&path, 1), store_with_keyring().await).0;
    relay
        .set_credentials(AwsCredentials::new("REFUSE2".into(), "s".into(), None))
        .await
        .unwrap(); // no connection yet: sent when one is made
    wait_ready(&relay).await;
    assert!(relay.call(attest()).await.is_ok());
    assert_eq!(lock(&seen).last().map(String::as_str), Some("REFUSE2"));
    relay.shutdown();
    task.abort();
}
