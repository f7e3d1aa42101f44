//! One handler per request kind, dispatched by the single `match` in [`handle`]
//! (STYLE rule 4). Handlers of key requests take the `Ready` state's [`Services`], so
//! they cannot run before the enclave is ready (see [`crate::state`]).
//!
//! Rules for maintainers:
//! - every failure to open a sealed record or to verify a policy MAC is
//!   [`WireError::SealedStateInvalid`], whatever the cause (no oracle);
//! - the policy is evaluated on the payload as *decoded here*, never on what the caller
//!   says it is;
//! - secrets are drawn from the NSM, held in zeroizing types, and dropped as soon as the
//!   signature or the sealed record exists.
//! - every step that holds a secret on the stack (drawing it, sealing, opening, deriving
//!   the wrap or policy-MAC key, signing) runs inside one job on the signing pool
//!   ([`crate::workers::signing`]), whose thread scrubs its stack after the job; never on
//!   a runtime thread;
//! - policy floors are keyed by the record ([`RecordId`]), never by the key id.

use std::sync::Arc;

use attestation::{AttestationRequest, NsmProvider};
use ekms_shared::statement::{
    KeyStatement, SignedKeyStatement, IDENTITY_USER_DATA_PREFIX, STATEMENT_VERSION,
};
use ekms_shared::{
    Algorithm, DekCachePolicy, KeyringRef, KmsConfig, PayloadKind, Request, ResponseBody,
    SealedKeyRecord, SealedPolicy, SignOutput, SignPayload, StatusInfo, WireError,
};
use ekms_signer::{
    decode_solana, decode_unsigned, eip55, evm_address, sign_evm, sign_solana, solana_address,
    Denial, Ed25519Secret, Policy, Secp256k1Secret, SignerError,
};
use zeroize::Zeroizing;

use crate::floor::RecordId;
use crate::keyring::check_keyring_name;
use crate::sealing::{self, DataKey, SECRET_LEN};
use crate::state::{Enclave, RequestKind, Services};
use crate::workers;

/// Longest owner accepted, in bytes.
pub const MAX_OWNER_LEN: usize = 256;
/// Policy version of a newly generated key.
pub const INITIAL_POLICY_VERSION: u64 = 1;
/// Draws of 32 random bytes before giving up on a secp256k1 scalar (an honest source
/// fails one draw with probability below 2^-127).
const MAX_SCALAR_DRAWS: usize = 4;

/// Handles one request in the enclave's current state.
///
/// # Errors
/// [`WireError::NotReady`] for a request the current state does not accept; otherwise
/// the handler's error.
pub async fn handle(enclave: &Enclave, request: Request) -> Result<ResponseBody, WireError> {
    let services = enclave.admit(RequestKind::of(&request))?;
    let ready = || services.as_deref().ok_or(WireError::NotReady);
    let ready_arc = || services.clone().ok_or(WireError::NotReady);
    match request {
        Request::Configure { kms, dek_cache } => configure(enclave, kms, dek_cache).await,
        Request::Status => Ok(status(enclave)),
        Request::Attestation { nonce, user_data } => attestation(enclave, nonce, user_data).await,
        Request::CreateKeyring { keyring, epoch } => create_keyring(ready()?, keyring, epoch).await,
        Request::GenerateKey {
            algorithm,
            owner,
            label: _,
            policy_json,
            keyring,
        } => {
            let new = NewKey {
                algorithm,
                owner,
                policy_json,
                keyring,
            };
            generate_key(ready()?, enclave, new).await
        }
        Request::CertifyKey { record, keyring } => {
            certify_key(ready()?, enclave, record, keyring).await
        }
        Request::SetPolicy {
            record,
            keyring,
            current,
            policy_json,
        } => set_policy(ready_arc()?, record, keyring, current, policy_json).await,
        Request::Sign {
            record,
            keyring,
            policy,
            payload,
        } => sign(ready_arc()?, record, keyring, policy, payload).await,
    }
}

async fn configure(
    enclave: &Enclave,
    kms: KmsConfig,
    dek_cache: DekCachePolicy,
) -> Result<ResponseBody, WireError> {
    enclave.configure(kms, dek_cache).await?;
    Ok(ResponseBody::Configured)
}

fn status(enclave: &Enclave) -> ResponseBody {
    ResponseBody::Status(StatusInfo {
        state: enclave.state(),
        mode: enclave.mode(),
        pcrs: enclave.pcrs().clone(),
        kms_target: enclave.kms_target(),
    })
}

async fn attestation(
    enclave: &Enclave,
    nonce: Option<Vec<u8>>,
    user_data: Option<Vec<u8>>,
) -> Result<ResponseBody, WireError> {
    // The parent chooses `user_data`. Were the identity binding allowed here, a host
    // attacker would hold this enclave's own document (its PCR0, its root) binding an
    // ed25519 key of theirs as an "identity key", and could sign any key statement
    // with it: the prefix is the enclave's own (`crate::identity`), never the parent's.
    if user_data
        .as_deref()
        .is_some_and(|u| u.starts_with(IDENTITY_USER_DATA_PREFIX))
    {
        return Err(bad_request(
            "user_data must not begin with the identity-key prefix (reserved for the \
             enclave's identity document)"
                .into(),
        ));
    }
    // On the fixed NSM pool: a flood of these is answered `Busy`, not given threads.
    let nsm = Arc::clone(enclave.nsm());
    let document = workers::blocking()?
        .run(move || {
            nsm.attestation_document(&AttestationRequest {
                user_data: user_data.as_deref(),
                nonce: nonce.as_deref(),
                public_key: None,
            })
        })
        .await?
        .map_err(|e| WireError::Attestation {
            message: e.to_string(),
        })?;
    Ok(ResponseBody::Attestation { document })
}

async fn create_keyring(
    services: &Services,
    keyring: String,
    epoch: u32,
) -> Result<ResponseBody, WireError> {
    let dek_ciphertext = services.keyrings.create(&keyring, epoch).await?;
    Ok(ResponseBody::KeyringCreated {
        keyring,
        epoch,
        dek_ciphertext,
    })
}

/// The fields of `GenerateKey` that matter here (the label is the parent's business).
struct NewKey {
    algorithm: Algorithm,
    owner: Option<String>,
    policy_json: String,
    keyring: KeyringRef,
}

async fn generate_key(
    services: &Services,
    enclave: &Enclave,
    new: NewKey,
) -> Result<ResponseBody, WireError> {
    let nsm = Arc::clone(enclave.nsm());
    if new
        .owner
        .as_ref()
        .is_some_and(|o| o.is_empty() || o.len() > MAX_OWNER_LEN)
    {
        return Err(bad_request(format!(
            "owner must be 1-{MAX_OWNER_LEN} bytes"
        )));
    }
    check_keyring_name(&new.keyring.keyring)?;
    let policy = Policy::parse_new(&new.policy_json).map_err(policy_error)?;
    let dek = services.keyrings.data_key(&new.keyring).await?;

    let policy_json = policy.canonical_json();
    let key_id = new_key_id(nsm.as_ref())?;
    // The secret, the wrap key and the policy-MAC key exist only on a signing thread,
    // whose stack is scrubbed after the job (crate::workers).
    let (record, policy) = workers::signing()?
        .run(move || {
            let nsm = nsm.as_ref();
            let (secret, public_key) = new_secret(nsm, new.algorithm)?;
            let mut salt = [0u8; 32];
            let mut nonce = [0u8; 12];
            nsm_random(nsm, &mut salt)?;
            nsm_random(nsm, &mut nonce)?;
            let record = sealing::seal(
                &dek,
                &key_id,
                new.owner.as_deref(),
                new.algorithm,
                &public_key,
                &new.keyring.keyring,
                new.keyring.epoch,
                salt,
                nonce,
                secret.as_slice(),
            )
            .map_err(|_| WireError::Internal)?;
            drop(secret);
            let policy = sealing::mac_policy(&dek, &record, INITIAL_POLICY_VERSION, policy_json);
            Ok::<_, WireError>((record, policy))
        })
        .await??;
    let now = now_ms();
    let (statement, identity_document) = state_key(enclave, &record, Some(now), now).await?;
    Ok(ResponseBody::KeyGenerated {
        record,
        policy,
        statement,
        identity_document,
    })
}

/// Issues a statement for an existing key: opens the sealed record (so only a record
/// this enclave's keyring sealed, with every field authentic, gets one) and states
/// what it holds. `created_at` is unknown here and left `None`.
async fn certify_key(
    services: &Services,
    enclave: &Enclave,
    record: SealedKeyRecord,
    keyring: KeyringRef,
) -> Result<ResponseBody, WireError> {
    check_record_keyring(&record, &keyring)?;
    let dek = services.keyrings.data_key(&keyring).await?;
    // Opening the record yields the secret: on a signing thread, like every use of it.
    let record = workers::signing()?
        .run(move || {
            drop(sealing::open(&dek, &record).map_err(|_| WireError::SealedStateInvalid)?);
            drop(dek);
            Ok::<_, WireError>(record)
        })
        .await??;
    let (statement, identity_document) = state_key(enclave, &record, None, now_ms()).await?;
    Ok(ResponseBody::KeyCertified {
        statement,
        identity_document,
    })
}

/// The signed statement of an authentic `record` ([`ekms_shared::statement`]) and the
/// document that binds the identity key. The address is derived here from the sealed
/// public key, never taken from the parent.
async fn state_key(
    enclave: &Enclave,
    record: &SealedKeyRecord,
    created_at: Option<u64>,
    issued_at: u64,
) -> Result<(Box<SignedKeyStatement>, Vec<u8>), WireError> {
    let (algorithm, public_key, address) = match record.algorithm {
        Algorithm::Secp256k1 => {
            let address = evm_address(&record.public_key).map_err(|_| WireError::Internal)?;
            (
                "secp256k1",
                format!("0x{}", hex::encode(&record.public_key)),
                eip55(&address),
            )
        }
        Algorithm::Ed25519 => {
            let key: [u8; 32] = record
                .public_key
                .as_slice()
                .try_into()
                .map_err(|_| WireError::Internal)?;
            let address = solana_address(&key);
            ("ed25519", address.clone(), address)
        }
    };
    let statement = KeyStatement {
        statement_version: STATEMENT_VERSION,
        key_id: record.key_id.clone(),
        algorithm: algorithm.to_owned(),
        public_key,
        address,
        owner: record.owner.clone(),
        created_at,
        issued_at,
    };
    let identity = enclave.identity();
    let document = identity.document(enclave.nsm()).await?;
    Ok((Box::new(identity.sign_statement(&statement)), document))
}

/// The enclave clock, in milliseconds since the Unix epoch (0 if it reads before 1970).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A fresh 32-byte secret from the NSM and its public key. For secp256k1 a draw that is
/// not a scalar in `[1, n)` is discarded and redrawn.
fn new_secret(
    nsm: &dyn NsmProvider,
    algorithm: Algorithm,
) -> Result<(Zeroizing<[u8; SECRET_LEN]>, Vec<u8>), WireError> {
    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    match algorithm {
        Algorithm::Secp256k1 => {
            for _ in 0..MAX_SCALAR_DRAWS {
                nsm_random(nsm, secret.as_mut_slice())?;
                if let Ok(key) = Secp256k1Secret::from_bytes(secret.as_slice()) {
                    return Ok((secret, key.public_key()));
                }
            }
            tracing::error!("NSM randomness never produced a valid secp256k1 scalar");
            Err(WireError::Internal)
        }
        Algorithm::Ed25519 => {
            nsm_random(nsm, secret.as_mut_slice())?;
            if *secret == [0u8; SECRET_LEN] {
                tracing::error!("NSM returned all-zero randomness");
                return Err(WireError::Internal);
            }
            let key =
                Ed25519Secret::from_bytes(secret.as_slice()).map_err(|_| WireError::Internal)?;
            Ok((secret, key.public_key()))
        }
    }
}

fn nsm_random(nsm: &dyn NsmProvider, out: &mut [u8]) -> Result<(), WireError> {
    nsm.random(out).map_err(|e| {
        tracing::error!(error = %e, "NSM random failed");
        WireError::Internal
    })
}

async fn set_policy(
    services: Arc<Services>,
    record: SealedKeyRecord,
    keyring: KeyringRef,
    current: SealedPolicy,
    policy_json: String,
) -> Result<ResponseBody, WireError> {
    // Authorisation by the owner's signature is the next issue's: today any caller that
    // holds the current sealed policy can replace it. Rollback of the stored row is
    // refused while this enclave runs (crate::floor); a persistent anchor is future work.
    check_record_keyring(&record, &keyring)?;
    let dek = services.keyrings.data_key(&keyring).await?;
    // Opening the record and the MAC keys run on a scrubbed signing thread.
    let policy = workers::signing()?
        .run(move || {
            drop(open_and_verify(&services, &dek, &record, &current)?);
            let policy = Policy::parse_new(&policy_json).map_err(policy_error)?;
            let version = current
                .version
                .checked_add(1)
                .ok_or(WireError::SealedStateInvalid)?;
            let policy = sealing::mac_policy(&dek, &record, version, policy.canonical_json());
            services.policy_floors.raise(RecordId::of(&record), version);
            Ok::<_, WireError>(policy)
        })
        .await??;
    Ok(ResponseBody::PolicySet { policy })
}

async fn sign(
    services: Arc<Services>,
    record: SealedKeyRecord,
    keyring: KeyringRef,
    policy: SealedPolicy,
    payload: SignPayload,
) -> Result<ResponseBody, WireError> {
    check_record_keyring(&record, &keyring)?;
    let algorithm_matches = matches!(
        (payload.kind, record.algorithm),
        (PayloadKind::EvmTransaction, Algorithm::Secp256k1)
            | (PayloadKind::SolanaTransaction, Algorithm::Ed25519)
    );
    if !algorithm_matches {
        return Err(bad_request(format!(
            "payload kind {:?} cannot be signed by a {:?} key",
            payload.kind, record.algorithm
        )));
    }
    let dek = services.keyrings.data_key(&keyring).await?;
    // Everything that touches the secret, the wrap key or the MAC key runs on a signing
    // thread whose stack is scrubbed afterwards (crate::workers).
    let output = workers::signing()?
        .run(move || sign_on_worker(&services, dek, &record, &policy, &payload))
        .await??;
    Ok(ResponseBody::Signed(output))
}

/// The synchronous part of `Sign`: open, verify, evaluate, sign. Runs on a signing
/// thread.
fn sign_on_worker(
    services: &Services,
    dek: Arc<DataKey>,
    record: &SealedKeyRecord,
    policy: &SealedPolicy,
    payload: &SignPayload,
) -> Result<SignOutput, WireError> {
    let secret = open_and_verify(services, &dek, record, policy)?;
    drop(dek);
    let policy = Policy::parse(&policy.policy_json).map_err(policy_error)?;
    let output = match record.algorithm {
        Algorithm::Secp256k1 => {
            let tx = decode_unsigned(&payload.bytes).map_err(signer_error)?;
            policy.evaluate_evm(&tx).map_err(denied)?;
            let key = Secp256k1Secret::from_bytes(secret.as_slice())
                .map_err(|_| WireError::SealedStateInvalid)?;
            drop(secret);
            let sig = sign_evm(&tx, &key).map_err(signer_error)?;
            SignOutput::Evm {
                r: sig.r,
                s: sig.s,
                y_parity: sig.y_parity,
                v: sig.v,
                signed_transaction: sig.signed_transaction,
                transaction_hash: sig.transaction_hash,
            }
        }
        Algorithm::Ed25519 => {
            let public_key: [u8; 32] = record
                .public_key
                .as_slice()
                .try_into()
                .map_err(|_| WireError::SealedStateInvalid)?;
            let message = decode_solana(&payload.bytes).map_err(signer_error)?;
            policy
                .evaluate_solana(&message, &public_key)
                .map_err(denied)?;
            let key = Ed25519Secret::from_bytes(secret.as_slice())
                .map_err(|_| WireError::SealedStateInvalid)?;
            drop(secret);
            let sig = sign_solana(&message, &key, &public_key).map_err(signer_error)?;
            SignOutput::Solana {
                signature: sig.signature,
                signed_transaction: sig.signed_transaction,
            }
        }
    };
    Ok(output)
}

/// Opens `record`, verifies `policy`'s MAC and that its version is not below the key's
/// floor (a rolled-back row); all three failures are the same error.
fn open_and_verify(
    services: &Services,
    dek: &DataKey,
    record: &SealedKeyRecord,
    policy: &SealedPolicy,
) -> Result<Zeroizing<Vec<u8>>, WireError> {
    let secret = sealing::open(dek, record).map_err(|_| WireError::SealedStateInvalid)?;
    sealing::verify_policy(dek, record, policy).map_err(|_| WireError::SealedStateInvalid)?;
    services
        .policy_floors
        .check_and_raise(RecordId::of(record), policy.version)
        .map_err(|_| WireError::SealedStateInvalid)?;
    Ok(secret)
}

/// A record sealed under another keyring or epoch than the one sent with it cannot open;
/// refusing it here saves a KMS call.
fn check_record_keyring(record: &SealedKeyRecord, keyring: &KeyringRef) -> Result<(), WireError> {
    if record.keyring != keyring.keyring || record.epoch != keyring.epoch {
        return Err(WireError::SealedStateInvalid);
    }
    Ok(())
}

/// A fresh key id: a UUID v4 (RFC 9562 §5.4) from 16 bytes of NSM randomness, in its
/// lowercase hyphenated form (36 bytes). Chosen here, never by the caller (see
/// `Request::GenerateKey`).
fn new_key_id(nsm: &dyn NsmProvider) -> Result<String, WireError> {
    let mut bytes = [0u8; 16];
    nsm_random(nsm, &mut bytes)?;
    if bytes == [0u8; 16] {
        tracing::error!("NSM returned all-zero randomness");
        return Err(WireError::Internal);
    }
    Ok(uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string())
}

fn bad_request(message: String) -> WireError {
    WireError::BadRequest { message }
}

fn denied(d: Denial) -> WireError {
    WireError::PolicyDenied {
        rule: d.rule.to_owned(),
        message: d.message,
    }
}

fn policy_error(e: SignerError) -> WireError {
    WireError::InvalidPolicy {
        message: e.to_string(),
    }
}

/// Maps the signer's payload errors to the wire (its texts carry no key material).
fn signer_error(e: SignerError) -> WireError {
    match e {
        SignerError::Malformed { .. }
        | SignerError::InvalidPayload { .. }
        | SignerError::Oversize { .. }
        | SignerError::NotASigner => WireError::InvalidPayload {
            message: e.to_string(),
        },
        SignerError::UnsupportedPayload { message } => WireError::UnsupportedPayload { message },
        SignerError::InvalidPolicy { message } => WireError::InvalidPolicy { message },
        SignerError::InvalidKey { .. } => WireError::SealedStateInvalid,
        _ => {
            tracing::error!(error = %e, "signer failed");
            WireError::Internal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ekms_shared::{Credentials, EnclaveState, Mode};

    fn enclave() -> Enclave {
        crate::state::test_enclave()
    }

    fn record() -> SealedKeyRecord {
        SealedKeyRecord {
            version: 1,
            key_id: "k".into(),
            owner: None,
            algorithm: Algorithm::Secp256k1,
            public_key: vec![2; 33],
            keyring: "main".into(),
            epoch: 1,
            salt: [0; 32],
            nonce: [0; 12],
            ciphertext: vec![0; 48],
        }
    }

    fn keyring() -> KeyringRef {
        KeyringRef {
            keyring: "main".into(),
            epoch: 1,
            dek_ciphertext: vec![1; 100],
        }
    }

    fn sign_request() -> Request {
        Request::Sign {
            record: record(),
            keyring: keyring(),
            policy: SealedPolicy {
                key_id: "k".into(),
                version: 1,
                policy_json: "{}".into(),
                mac: [0; 32],
            },
            payload: SignPayload {
                kind: PayloadKind::EvmTransaction,
                bytes: vec![0x02],
            },
        }
    }

    #[tokio::test]
    async fn status_and_attestation_work_while_booting() {
        let e = enclave();
        let ResponseBody::Status(info) = handle(&e, Request::Status).await.unwrap() else {
            panic!("not a status");
        };
        assert_eq!(info.state, EnclaveState::Booting);
        assert_eq!(info.mode, Mode::Simulation);
        assert_eq!(info.pcrs.len(), 3);
        assert!(info.pcrs.values().all(|p| p.len() == 48));
        let answer = handle(
            &e,
            Request::Attestation {
                nonce: Some(vec![7; 16]),
                user_data: None,
            },
        )
        .await
        .unwrap();
        let ResponseBody::Attestation { document } = answer else {
            panic!("not an attestation");
        };
        assert!(document.len() > 1000);
    }

    /// A host attacker asks for a document whose `user_data` binds an ed25519 key of
    /// theirs as the identity key: with it, a statement they sign for any key id and
    /// address would verify end to end, PCR0 and all.
    #[tokio::test]
    async fn rejects_attestation_user_data_that_claims_an_identity_key() {
        use attestation::{SimulatedCa, SimulatedNsm, Verifier, VerifyOptions};
        use ed25519_dalek::Signer as _;
        use ekms_shared::statement::identity_user_data;
        let ca = SimulatedCa::generate().unwrap();
        let nsm = SimulatedNsm::new(&ca, attestation::pcrs_from_digest(b"handlers")).unwrap();
        let e = Enclave::new(Arc::new(nsm), Mode::Simulation).unwrap();
        let attacker = ed25519_dalek::SigningKey::from_bytes(&[0x66; 32]);
        let attacker_key = attacker.verifying_key().to_bytes();
        let claim = identity_user_data(&attacker_key);
        let r = handle(
            &e,
            Request::Attestation {
                nonce: None,
                user_data: Some(claim.clone()),
            },
        )
        .await;
        if let Ok(ResponseBody::Attestation { document }) = &r {
            let verifier = Verifier::danger_trust_simulation_root(ca.root_der()).unwrap();
            let doc = verifier
                .verify(document, &VerifyOptions::at(std::time::SystemTime::now()))
                .unwrap();
            let json = KeyStatement {
                statement_version: STATEMENT_VERSION,
                key_id: "victim".into(),
                algorithm: "secp256k1".into(),
                public_key: "0x02aa".into(),
                address: "0x000000000000000000000000000000000000dEaD".into(),
                owner: None,
                created_at: Some(1),
                issued_at: 1,
            }
            .canonical_json();
            let forged = SignedKeyStatement {
                signature: attacker
                    .sign(&KeyStatement::signing_input(&json))
                    .to_bytes(),
                statement: json,
                identity_key: attacker_key,
            };
            assert!(
                forged.verify(doc.user_data.as_deref()).is_err(),
                "a statement signed by the attacker's key verifies"
            );
        }
        assert!(matches!(r, Err(WireError::BadRequest { .. })), "{r:?}");
        // Anything starting with the prefix is refused; other user_data is served.
        for user_data in [IDENTITY_USER_DATA_PREFIX.to_vec(), claim[..30].to_vec()] {
            let r = handle(
                &e,
                Request::Attestation {
                    nonce: None,
                    user_data: Some(user_data),
                },
            )
            .await;
            assert!(matches!(r, Err(WireError::BadRequest { .. })), "{r:?}");
        }
        let r = handle(
            &e,
            Request::Attestation {
                nonce: None,
                user_data: Some(b"ekms/v1/identity-key".to_vec()),
            },
        )
        .await;
        assert!(matches!(r, Ok(ResponseBody::Attestation { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn rejects_key_requests_before_configure() {
        let e = enclave();
        let requests = [
            sign_request(),
            Request::CreateKeyring {
                keyring: "main".into(),
                epoch: 1,
            },
            Request::GenerateKey {
                algorithm: Algorithm::Ed25519,
                owner: None,
                label: None,
                policy_json: r#"{"enabled":true}"#.into(),
                keyring: keyring(),
            },
        ];
        for request in requests {
            assert_eq!(handle(&e, request).await, Err(WireError::NotReady));
        }
        assert_eq!(e.state(), EnclaveState::Booting);
    }

    #[tokio::test]
    async fn rejects_configure_with_bad_settings_and_stays_booting() {
        let e = enclave();
        let kms = KmsConfig {
            region: "Bad Region".into(),
            endpoint_url: Some("http://127.0.0.1:1".into()),
            kms_key_id: "k".into(),
            credentials: Credentials {
                access_key_id: "a".into(),
                secret_access_key: "s".into(),
                session_token: None,
            },
        };
        let dek_cache = DekCachePolicy {
            ttl_secs: 60,
            max_uses: 10,
        };
        let err = handle(&e, Request::Configure { kms, dek_cache }).await;
        assert!(matches!(err, Err(WireError::BadRequest { .. })), "{err:?}");
        assert_eq!(e.state(), EnclaveState::Booting);
    }

    #[tokio::test]
    async fn rejects_unreachable_kms_and_stays_configured() {
        let e = enclave();
        // A port nothing listens on: connection refused, no retries can succeed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let kms = KmsConfig {
            region: "us-east-1".into(),
            endpoint_url: Some(format!("https://127.0.0.1:{port}")),
            kms_key_id: "k".into(),
            credentials: Credentials {
                access_key_id: "a".into(),
                secret_access_key: "s".into(),
                session_token: None,
            },
        };
        let dek_cache = DekCachePolicy {
            ttl_secs: 60,
            max_uses: 10,
        };
        let err = handle(&e, Request::Configure { kms, dek_cache }).await;
        assert!(
            matches!(&err, Err(WireError::Kms { code, .. }) if code == "RequestFailed"),
            "{err:?}"
        );
        assert_eq!(e.state(), EnclaveState::Configured);
        assert_eq!(handle(&e, sign_request()).await, Err(WireError::NotReady));
    }

    #[test]
    fn maps_signer_errors() {
        assert!(matches!(
            signer_error(SignerError::UnsupportedPayload {
                message: "blob".into()
            }),
            WireError::UnsupportedPayload { message } if message == "blob"
        ));
        assert!(matches!(
            signer_error(SignerError::Malformed {
                message: "rlp".into()
            }),
            WireError::InvalidPayload { .. }
        ));
        assert_eq!(
            signer_error(SignerError::InvalidKey { message: "x" }),
            WireError::SealedStateInvalid
        );
    }

    #[test]
    fn key_ids_are_fresh_uuids_and_mismatched_keyrings_are_refused() {
        let e = enclave();
        let a = new_key_id(e.nsm().as_ref()).unwrap();
        let b = new_key_id(e.nsm().as_ref()).unwrap();
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(a.len(), 36);
        assert_eq!(new_key_id(&BrokenNsm(0)), Err(WireError::Internal));
        check_record_keyring(&record(), &keyring()).unwrap();
        let mut other = keyring();
        other.epoch = 2;
        assert_eq!(
            check_record_keyring(&record(), &other),
            Err(WireError::SealedStateInvalid)
        );
    }

    #[test]
    fn new_secrets_have_valid_public_keys() {
        let e = enclave();
        let (s1, p1) = new_secret(e.nsm().as_ref(), Algorithm::Secp256k1).unwrap();
        assert_eq!(p1.len(), 33);
        assert_eq!(
            Secp256k1Secret::from_bytes(s1.as_slice())
                .unwrap()
                .public_key(),
            p1
        );
        let (s2, p2) = new_secret(e.nsm().as_ref(), Algorithm::Ed25519).unwrap();
        assert_eq!(p2.len(), 32);
        assert_ne!(s1.as_slice(), s2.as_slice());
    }

    /// An NSM that makes no attestation documents and whose "random" bytes are all
    /// `.0`: `BrokenNsm(0)` has a broken entropy source too.
    struct BrokenNsm(u8);

    impl NsmProvider for BrokenNsm {
        fn attestation_document(
            &self,
            _req: &AttestationRequest<'_>,
        ) -> Result<Vec<u8>, attestation::NsmError> {
            Err(attestation::NsmError::NoEntropy)
        }
        fn random(&self, out: &mut [u8]) -> Result<(), attestation::NsmError> {
            out.fill(self.0);
            Ok(())
        }
        fn describe_pcr(&self, _index: u16) -> Result<Vec<u8>, attestation::NsmError> {
            Ok(vec![0; 48])
        }
    }

    #[test]
    fn rejects_secrets_from_a_broken_random_source() {
        for algorithm in [Algorithm::Secp256k1, Algorithm::Ed25519] {
            assert_eq!(
                new_secret(&BrokenNsm(0), algorithm).unwrap_err(),
                WireError::Internal,
                "{algorithm:?}"
            );
        }
    }

    #[test]
    fn rejects_boot_with_a_broken_random_source() {
        assert!(matches!(
            Enclave::new(Arc::new(BrokenNsm(0)), Mode::Nitro),
            Err(crate::EnclaveError::Identity(_))
        ));
    }

    #[tokio::test]
    async fn rejects_attestation_when_the_nsm_fails() {
        let e = Enclave::new(Arc::new(BrokenNsm(0x42)), Mode::Nitro).unwrap();
        let r = handle(
            &e,
            Request::Attestation {
                nonce: None,
                user_data: None,
            },
        )
        .await;
        assert!(matches!(r, Err(WireError::Attestation { .. })), "{r:?}");
    }
}
