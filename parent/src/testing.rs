//! Test support (compiled only for tests): a FAKE enclave speaking the real
//! `ekms-shared` framing on a Unix socket, and helpers that build the parent around it.
//!
//! The fake is not a model of the enclave's security; it is enough to drive every path
//! of the parent. Its "MAC" is keccak256 of [`SealedPolicy::mac_input`] and its
//! "ciphertext" is keccak256 of [`SealedKeyRecord::aad`], so a row changed in the
//! database is refused with `SealedStateInvalid` as the real enclave would.
//!
//! Payload bytes steer the `Sign` answer: `deny` → `PolicyDenied{rule:"evm.chain_ids"}`,
//! `0xff…` → `UnsupportedPayload`, `0x00` → `InvalidPayload`, `kms` → `Kms`, `drop` →
//! the fake closes the connection without answering (an enclave restart), `hang` →
//! it answers nothing for 60 s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ekms_shared::audit::{AuditAction, AuditDecision};
use ekms_shared::{
    decode_request, encode_response, frame_len, Algorithm, DekCachePolicy, EnclaveState, Mode,
    Request, ResponseBody, ResponseFrame, SealedKeyRecord, SealedPolicy, SignOutput, StatusInfo,
    WireError, FRAME_PREFIX_LEN,
};
use sha3::{Digest as _, Keccak256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::config::{AwsCredentials, KmsSettings};
use crate::relay::{Relay, RelayConfig};
use crate::service::{Bootstrap, Service};
use crate::store::SqliteStore as Store;

/// Compressed secp256k1 generator (public key of private key 1).
pub const G_COMPRESSED: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
/// Its EIP-55 address.
pub const G_ADDRESS: &str = "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf";

/// Counters the tests read.
#[derive(Debug, Default)]
pub struct FakeState {
    pub configured: AtomicBool,
    /// The `kms_key_id` of the Configure that configured it: a later Configure with the
    /// same key is a credentials refresh, another key is `AlreadyConfigured` (as the
    /// real enclave answers once Ready).
    pub target: std::sync::Mutex<Option<String>>,
    pub configures: AtomicUsize,
    pub keyrings_created: AtomicUsize,
    pub connections: AtomicUsize,
    /// `Restore` committed.
    pub restored: AtomicBool,
    /// The store-wide stop.
    pub stopped: AtomicBool,
    /// Checkpoint numbers issued.
    pub checkpoint_seq: std::sync::atomic::AtomicU64,
    /// The fake's audit chain: next `seq` and the head's hash.
    pub audit: std::sync::Mutex<(u64, [u8; 32])>,
    /// The pending state change: its checkpoint `seq`, the policy version it makes
    /// (for the audit record), whether it is a restore, a stop change.
    pub pending: std::sync::Mutex<Option<FakePending>>,
    /// While set, `Configure` answers this error and leaves the fake unconfigured (a
    /// KMS that refuses the attested round trip).
    pub configure_error: std::sync::Mutex<Option<WireError>>,
    /// The policy (version, document) of the last `Sign` that passed the integrity
    /// check: what the parent sent, so a test sees which policy a signature used.
    pub last_sign_policy: std::sync::Mutex<Option<(u64, String)>>,
}

/// A fake pending change: checkpoint `seq`, (key id, version), restore?, stop change.
type FakePending = (u64, Option<(String, u64)>, bool, Option<bool>);

impl FakeState {
    /// Appends a record to the fake's chain (signed by a fixed key; the fake is not a
    /// model of the enclave's security).
    fn audit(
        &self,
        action: ekms_shared::audit::AuditAction,
        decision: ekms_shared::audit::AuditDecision,
        key_id: Option<String>,
        rule: Option<String>,
    ) -> ekms_shared::audit::SignedAuditRecord {
        let mut head = self.audit.lock().unwrap();
        let record = ekms_shared::audit::AuditRecord {
            seq: head.0 + 1,
            time: 1,
            key_id,
            action,
            payload_kind: None,
            payload_sha256: None,
            policy_version: None,
            policy_sha256: None,
            decision,
            rule,
            prev_hash: hex::encode(head.1),
        };
        let signed = ekms_shared::audit::SignedAuditRecord::sign(&fake_identity().key, &record);
        *head = (record.seq, signed.record_sha256());
        signed
    }

    /// Phase 1 of a fake state change.
    fn pend(
        &self,
        policy: Option<SealedPolicy>,
        restore: bool,
        stop: Option<bool>,
    ) -> Result<ResponseBody, WireError> {
        let mut pending = self.pending.lock().unwrap();
        let seq = self.checkpoint_seq.load(Ordering::SeqCst) + 1;
        *pending = Some((
            seq,
            policy.as_ref().map(|p| (p.key_id.clone(), p.version)),
            restore,
            stop,
        ));
        Ok(ResponseBody::CheckpointPending {
            checkpoint: ekms_shared::SealedCheckpoint {
                seq,
                keyring: "default".into(),
                epoch: 1,
                body: vec![0xa0],
                mac: [0; 32],
            },
            policy,
        })
    }
}

/// A running fake enclave; stops (closing every connection) on drop.
pub struct FakeEnclave {
    pub path: PathBuf,
    pub state: Arc<FakeState>,
    task: JoinHandle<()>,
}

impl Drop for FakeEnclave {
    fn drop(&mut self) {
        // The socket file stays (the temp dir removes it): a restarted fake may already
        // be bound on the same path.
        self.task.abort();
    }
}

impl FakeEnclave {
    /// Starts a fresh (booting) fake on `path`.
    pub fn start(path: &Path) -> FakeEnclave {
        Self::start_with(path, Arc::new(FakeState::default()))
    }

    /// Starts a fake on `path` with existing state (a restart that kept nothing but
    /// the counters: `configured` is reset, as a restarted enclave boots again).
    pub fn start_with(path: &Path, state: Arc<FakeState>) -> FakeEnclave {
        Self::start_configured_by(path, state, None)
    }

    /// Like [`FakeEnclave::start_with`], but already Ready for `kms_key_id` when given:
    /// a restarted enclave that someone else configured before the parent reconnected.
    pub fn start_configured_by(
        path: &Path,
        state: Arc<FakeState>,
        kms_key_id: Option<&str>,
    ) -> FakeEnclave {
        state
            .configured
            .store(kms_key_id.is_some(), Ordering::SeqCst);
        *state.target.lock().unwrap() = kms_key_id.map(str::to_owned);
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                st.connections.fetch_add(1, Ordering::SeqCst);
                conns.spawn(serve_conn(stream, Arc::clone(&st)));
            }
        });
        FakeEnclave {
            path: path.to_owned(),
            state,
            task,
        }
    }
}

async fn serve_conn(mut stream: UnixStream, state: Arc<FakeState>) {
    loop {
        let mut prefix = [0u8; FRAME_PREFIX_LEN];
        if stream.read_exact(&mut prefix).await.is_err() {
            return;
        }
        let Ok(len) = frame_len(prefix) else { return };
        let mut body = vec![0; len];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let Ok(frame) = decode_request(&body) else {
            return;
        };
        if let Request::Sign { payload, .. } = &frame.body {
            if payload.bytes == b"drop" {
                return; // close without answering
            }
            if payload.bytes == b"hang" {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
        let answer = match handle(frame.body, &state) {
            Ok(b) => ResponseFrame::ok(frame.request_id, b),
            Err(e) => ResponseFrame::err(frame.request_id, e),
        };
        let bytes = encode_response(&answer).unwrap();
        if stream.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Keccak256::digest(bytes).into()
}

fn seal(mut policy: SealedPolicy) -> SealedPolicy {
    policy.mac = digest(&policy.mac_input());
    policy
}

fn check(record: &SealedKeyRecord, policy: &SealedPolicy) -> Result<(), WireError> {
    if record.ciphertext != digest(&record.aad())
        || policy.mac != digest(&policy.mac_input())
        || policy.key_id != record.key_id
    {
        return Err(WireError::SealedStateInvalid);
    }
    Ok(())
}

fn handle(request: Request, state: &FakeState) -> Result<ResponseBody, WireError> {
    let configured = state.configured.load(Ordering::SeqCst);
    match request {
        Request::Status => Ok(ResponseBody::Status(StatusInfo {
            state: if configured {
                EnclaveState::Ready
            } else {
                EnclaveState::Booting
            },
            mode: Mode::Simulation,
            pcrs: BTreeMap::from([(0, serde_bytes::ByteBuf::from(fake_pcr0()))]),
            // The fake reports only its key (region and endpoint as the parent's tests
            // configure them).
            kms_target: state
                .target
                .lock()
                .unwrap()
                .clone()
                .filter(|_| configured)
                .map(|kms_key_id| ekms_shared::KmsTarget {
                    region: "us-east-1".into(),
                    endpoint_url: Some("http://127.0.0.1:4566".into()),
                    kms_key_id,
                }),
            restored: state.restored.load(Ordering::SeqCst),
            stopped: state.stopped.load(Ordering::SeqCst),
        })),
        Request::Configure { kms, .. } => {
            if let Some(e) = state.configure_error.lock().unwrap().clone() {
                return Err(e);
            }
            let mut target = state.target.lock().unwrap();
            if state.configured.swap(true, Ordering::SeqCst) {
                return if target.as_deref() == Some(kms.kms_key_id.as_str()) {
                    Ok(ResponseBody::Configured)
                } else {
                    Err(WireError::AlreadyConfigured)
                };
            }
            *target = Some(kms.kms_key_id);
            state.configures.fetch_add(1, Ordering::SeqCst);
            Ok(ResponseBody::Configured)
        }
        _ if !configured => Err(WireError::NotReady),
        Request::CreateKeyring { keyring, epoch } => {
            state.keyrings_created.fetch_add(1, Ordering::SeqCst);
            Ok(ResponseBody::KeyringCreated {
                keyring,
                epoch,
                dek_ciphertext: b"dek-ciphertext".to_vec(),
            })
        }
        Request::Attestation { nonce, .. } => {
            let mut document = b"doc:".to_vec();
            document.extend(nonce.unwrap_or_default());
            Ok(ResponseBody::Attestation { document })
        }
        Request::GenerateKey {
            algorithm,
            owner,
            policy_json,
            keyring,
            ..
        } => {
            let key_id = uuid::Uuid::new_v4().to_string();
            if policy_json.contains("kms_fail") {
                return Err(WireError::Kms {
                    code: "AccessDeniedException".into(),
                    message: "the key policy denies this image".into(),
                });
            }
            if policy_json.contains("bad_rule") {
                return Err(WireError::InvalidPolicy {
                    message: "unknown rule bad_rule".into(),
                });
            }
            let public_key = match algorithm {
                Algorithm::Secp256k1 => hex::decode(G_COMPRESSED).unwrap(),
                Algorithm::Ed25519 => vec![0x11; 32],
            };
            let mut record = SealedKeyRecord {
                version: 1,
                key_id: key_id.clone(),
                owner,
                algorithm,
                public_key,
                keyring: keyring.keyring,
                epoch: keyring.epoch,
                salt: [7; 32],
                nonce: [9; 12],
                ciphertext: Vec::new(),
            };
            record.ciphertext = digest(&record.aad()).to_vec();
            let policy = seal(SealedPolicy {
                key_id,
                version: 1,
                policy_json,
                mac: [0; 32],
            });
            let (statement, identity_document) = fake_statement(&record, Some(1));
            let audit = state.audit(
                AuditAction::CreateKey,
                AuditDecision::Allowed,
                Some(record.key_id.clone()),
                None,
            );
            Ok(ResponseBody::KeyGenerated {
                record,
                policy,
                statement,
                identity_document,
                audit,
            })
        }
        Request::CertifyKey { record, .. } => {
            if record.ciphertext != digest(&record.aad()) {
                return Err(WireError::SealedStateInvalid);
            }
            let (statement, identity_document) = fake_statement(&record, None);
            Ok(ResponseBody::KeyCertified {
                statement,
                identity_document,
            })
        }
        Request::SetPolicy {
            record,
            current,
            policy_json,
            ..
        } => {
            check(&record, &current)?;
            if policy_json.contains("bad_rule") {
                return Err(WireError::InvalidPolicy {
                    message: "unknown rule bad_rule".into(),
                });
            }
            let policy = seal(SealedPolicy {
                key_id: record.key_id,
                version: current.version + 1,
                policy_json,
                mac: [0; 32],
            });
            state.pend(Some(policy), false, None)
        }
        Request::DisableKey {
            record, current, ..
        }
        | Request::EnableKey {
            record, current, ..
        } => {
            check(&record, &current)?;
            let policy = seal(SealedPolicy {
                key_id: record.key_id,
                version: current.version + 1,
                policy_json: current.policy_json,
                mac: [0; 32],
            });
            state.pend(Some(policy), false, None)
        }
        Request::Metrics => Ok(ResponseBody::Metrics(Box::default())),
        Request::StopAll => state.pend(None, false, Some(true)),
        Request::ResumeAll => state.pend(None, false, Some(false)),
        Request::Restore { .. } => {
            if state.restored.load(Ordering::SeqCst) {
                return Err(WireError::BadRequest {
                    message: "the durable state is already restored".into(),
                });
            }
            state.pend(None, true, None)
        }
        Request::Commit { seq } => {
            let Some((pending_seq, key, restore, stop)) = state.pending.lock().unwrap().take()
            else {
                return Err(WireError::BadRequest {
                    message: "nothing pending".into(),
                });
            };
            if pending_seq != seq {
                return Err(WireError::BadRequest {
                    message: "another checkpoint is pending".into(),
                });
            }
            state.checkpoint_seq.store(seq, Ordering::SeqCst);
            let (action, document) = if restore {
                state.restored.store(true, Ordering::SeqCst);
                (AuditAction::Boot, Some(b"audit-doc".to_vec()))
            } else if let Some(stop) = stop {
                state.stopped.store(stop, Ordering::SeqCst);
                let action = if stop {
                    AuditAction::Stop
                } else {
                    AuditAction::Resume
                };
                (action, None)
            } else {
                (AuditAction::SetPolicy, None)
            };
            let audit = state.audit(action, AuditDecision::Allowed, key.map(|k| k.0), None);
            Ok(ResponseBody::Committed {
                audit,
                audit_document: document,
            })
        }
        Request::Sign {
            record,
            policy,
            payload,
            ..
        } => {
            check(&record, &policy)?;
            *state.last_sign_policy.lock().unwrap() =
                Some((policy.version, policy.policy_json.clone()));
            let b = payload.bytes;
            let refuse = |error: WireError, rule: &str| {
                let audit = state.audit(
                    AuditAction::Sign,
                    AuditDecision::Refused,
                    Some(record.key_id.clone()),
                    Some(rule.into()),
                );
                Ok(ResponseBody::Refused { error, audit })
            };
            if state.stopped.load(Ordering::SeqCst) {
                return refuse(WireError::StoreStopped, "store_stopped");
            }
            match b.as_slice() {
                b"deny" => refuse(
                    WireError::PolicyDenied {
                        rule: "evm.chain_ids".into(),
                        message: "chain id 5 is not allowed".into(),
                    },
                    "evm.chain_ids",
                ),
                [0xff, ..] => Err(WireError::UnsupportedPayload {
                    message: "legacy transactions are not supported".into(),
                }),
                [0x00] => Err(WireError::InvalidPayload {
                    message: "not RLP".into(),
                }),
                b"kms" => Err(WireError::Kms {
                    code: "ThrottlingException".into(),
                    message: "rate exceeded".into(),
                }),
                _ => Ok(ResponseBody::Signed {
                    audit: state.audit(
                        AuditAction::Sign,
                        AuditDecision::Allowed,
                        Some(record.key_id.clone()),
                        None,
                    ),
                    output: match record.algorithm {
                        Algorithm::Secp256k1 => SignOutput::Evm {
                            r: [1; 32],
                            s: [2; 32],
                            y_parity: 1,
                            v: 38,
                            signed_transaction: [b.as_slice(), &[0xee]].concat(),
                            transaction_hash: [3; 32],
                        },
                        Algorithm::Ed25519 => SignOutput::Solana {
                            signature: [4; 64],
                            signed_transaction: [&[0xee], b.as_slice()].concat(),
                        },
                    },
                }),
            }
        }
    }
}

/// The fake's identity: a simulated CA (the same for every test of the process), an
/// NSM under it, an ed25519 identity key and the document binding it.
struct FakeIdentity {
    ca: attestation::SimulatedCa,
    root_pem: String,
    key: ed25519_dalek::SigningKey,
    document: Vec<u8>,
}

fn fake_identity() -> &'static FakeIdentity {
    static IDENTITY: std::sync::OnceLock<FakeIdentity> = std::sync::OnceLock::new();
    IDENTITY.get_or_init(|| {
        let ca = attestation::SimulatedCa::generate().unwrap();
        let nsm =
            attestation::SimulatedNsm::new(&ca, attestation::pcrs_from_digest(FAKE_IMAGE)).unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[0x5a; 32]);
        let document = identity_document(&nsm, &key);
        FakeIdentity {
            root_pem: ca.root_pem(),
            ca,
            key,
            document,
        }
    })
}

/// What the real enclave states about `record` (`ekms_shared::statement`), signed by
/// the fake's identity key, and the document binding that key.
pub fn fake_statement(
    record: &SealedKeyRecord,
    created_at: Option<u64>,
) -> (Box<ekms_shared::statement::SignedKeyStatement>, Vec<u8>) {
    use ekms_shared::statement::{KeyStatement, SignedKeyStatement, STATEMENT_VERSION};
    let id = fake_identity();
    let statement = KeyStatement {
        statement_version: STATEMENT_VERSION,
        key_id: record.key_id.clone(),
        algorithm: crate::store::algorithm_text(record.algorithm).into(),
        public_key: crate::format::public_key_text(record.algorithm, &record.public_key),
        address: crate::format::address(record.algorithm, &record.public_key).unwrap(),
        owner: record.owner.clone(),
        created_at,
        issued_at: 1,
    };
    let signed = SignedKeyStatement::sign(&id.key, &statement);
    (Box::new(signed), id.document.clone())
}

/// What the fake enclave's PCRs measure.
const FAKE_IMAGE: &[u8] = b"fake";

/// PCR0 of the fake enclave (in its `Status` and its identity document).
pub fn fake_pcr0() -> Vec<u8> {
    attestation::pcrs_from_digest(FAKE_IMAGE)
        .remove(&0)
        .expect("pcrs_from_digest measures PCR0")
}

/// A statement of `(key_id, algorithm, public_key, address)` signed by an identity key
/// bound by a document under the fake's root but of **another enclave image** (another
/// PCR0): what an attacker who runs an enclave of their own can make (under the AWS
/// root, anyone with an AWS account).
pub fn foreign_image_statement(
    key_id: &str,
    algorithm: &str,
    public_key: &str,
    address: &str,
) -> (ekms_shared::statement::SignedKeyStatement, Vec<u8>) {
    use ekms_shared::statement::{KeyStatement, SignedKeyStatement, STATEMENT_VERSION};
    let nsm = attestation::SimulatedNsm::new(
        &fake_identity().ca,
        attestation::pcrs_from_digest(b"the attacker's own image"),
    )
    .unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[0x66; 32]);
    let document = identity_document(&nsm, &key);
    let statement = KeyStatement {
        statement_version: STATEMENT_VERSION,
        key_id: key_id.into(),
        algorithm: algorithm.into(),
        public_key: public_key.into(),
        address: address.into(),
        owner: None,
        created_at: Some(1),
        issued_at: 1,
    };
    (SignedKeyStatement::sign(&key, &statement), document)
}

/// An attestation document from `nsm` that binds `key` as an enclave identity key.
fn identity_document(nsm: &attestation::SimulatedNsm, key: &ed25519_dalek::SigningKey) -> Vec<u8> {
    use attestation::NsmProvider as _;
    let user_data = ekms_shared::statement::identity_user_data(&key.verifying_key().to_bytes());
    nsm.attestation_document(&attestation::AttestationRequest {
        user_data: Some(&user_data),
        nonce: None,
        public_key: None,
    })
    .unwrap()
}

/// Writes the fake's simulation root into `dir` and returns the root setting that
/// trusts it.
pub fn attestation_root(dir: &Path) -> crate::identity::AttestationRoot {
    let path = dir.join("fake-sim-root.pem");
    std::fs::write(&path, &fake_identity().root_pem).unwrap();
    crate::identity::AttestationRoot::Simulation(path)
}

/// An identity check that trusts the fake's root.
pub fn identity_check() -> Arc<crate::identity::IdentityCheck> {
    let verifier =
        attestation::Verifier::danger_trust_simulation_root_pem(&fake_identity().root_pem).unwrap();
    Arc::new(crate::identity::IdentityCheck::with_verifier(verifier))
}

/// Relay settings pointing at `enclave`, with short deadlines for tests.
pub fn relay_config(enclave: &Path, connections: usize) -> RelayConfig {
    RelayConfig {
        enclave: ekms_shared::Address::Unix(enclave.to_owned()),
        connections,
        request_timeout: Duration::from_secs(5),
        kms: KmsSettings {
            region: "us-east-1".into(),
            endpoint_url: Some("http://127.0.0.1:4566".into()),
            kms_key_id: "alias/ekms".into(),
            credentials: AwsCredentials::new("AKIATEST".into(), "secret".into(), None),
        },
        dek_cache: DekCachePolicy {
            ttl_secs: 300,
            max_uses: 1000,
        },
        metrics: Default::default(),
    }
}

/// Waits (up to 5 s) until the relay reports ready.
pub async fn wait_ready(relay: &Relay) {
    for _ in 0..500 {
        if relay.health().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("relay not ready after 5 s");
}

/// Stores a token with `scopes` (space-separated), limited to `key_ids` when given,
/// expiring at `expires_at_ms` when given; returns its id and the token.
pub async fn token(
    store: &Store,
    scopes: &str,
    key_ids: Option<&[&str]>,
    expires_at_ms: Option<i64>,
) -> (String, String) {
    let (token, token_hash) = crate::auth::generate_token().unwrap();
    let token_id = crate::auth::new_token_id().unwrap();
    store
        .insert_token(
            crate::store::TokenRow {
                token_id: token_id.clone(),
                name: format!("test {scopes}"),
                token_hash,
                scopes: scopes.into(),
                key_ids: key_ids.map(|ids| ids.iter().map(|s| (*s).to_owned()).collect()),
                created_at_ms: crate::now_ms(),
                expires_at_ms,
            },
            None,
        )
        .await
        .unwrap();
    (token_id, token.expose().to_owned())
}

/// `router` with `Authorization: Bearer <token>` added to every request that has no
/// `Authorization` header: for the tests of handlers that are not about authentication.
pub fn authorized(router: axum::Router, token: String) -> axum::Router {
    router.layer(axum::middleware::from_fn(
        move |mut request: axum::extract::Request, next: axum::middleware::Next| {
            let value = axum::http::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
            async move {
                let headers = request.headers_mut();
                if !headers.contains_key(axum::http::header::AUTHORIZATION) {
                    headers.insert(axum::http::header::AUTHORIZATION, value);
                }
                next.run(request).await
            }
        },
    ))
}

/// A relay started on `store` with keyring `default` (the service's bootstrap); the
/// bootstrap too, for its current keyring.
pub fn start_relay(config: RelayConfig, store: Store) -> (Relay, Arc<Bootstrap>) {
    let bootstrap = Bootstrap::new(Arc::new(store), "default");
    (Relay::start(config, bootstrap.clone()), bootstrap)
}

/// A started service (relay and store) around a fresh fake enclave in a temp dir, with
/// an admin token.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub fake: FakeEnclave,
    pub service: Service,
    pub relay: Relay,
    pub store: Store,
    /// An `admin` token of `store`.
    pub admin_token: String,
}

impl Harness {
    pub async fn start(connections: usize) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeEnclave::start(&dir.path().join("enclave.sock"));
        let store = Store::open(&dir.path().join("ekms.db")).unwrap();
        let service = Service::start(
            relay_config(&fake.path, connections),
            Arc::new(store.clone()),
            "default",
            identity_check(),
        );
        let relay = service.relay().clone();
        wait_ready(&relay).await;
        let (_, admin_token) = token(&store, "admin", None, None).await;
        Harness {
            dir,
            fake,
            service,
            relay,
            store,
            admin_token,
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("ekms.db")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.relay.shutdown();
    }
}
