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
use ekms_shared::audit::{AuditAction, AuditDecision, SignedAuditRecord, AUDIT_USER_DATA_PREFIX};
use ekms_shared::owner::{policy_sha256, Authorization, Owner, OwnerAction, MAX_EXPIRES_AT};
use ekms_shared::statement::{
    KeyStatement, SignedKeyStatement, IDENTITY_USER_DATA_PREFIX, STATEMENT_VERSION,
};
use ekms_shared::{
    Algorithm, DekCachePolicy, KeyringRef, KmsConfig, OwnerApproval, PayloadKind, Request,
    ResponseBody, SealedCheckpoint, SealedKeyRecord, SealedPolicy, SignOutput, SignPayload,
    StatusInfo, WireError,
};
use ekms_signer::{
    eip55, evm_address, sign_evm, sign_evm_hash, sign_solana, sign_solana_offchain, solana_address,
    Approval, Decoded, Denial, Ed25519Secret, LimitId, Policy, Secp256k1Secret, SignerError,
    SignerIdentity,
};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::audit::{AuditHead, AuditLog, Entry};
use crate::durable::{self, pack_floors, Change, CheckpointBody};
use crate::floor::RecordId;
use crate::keyring::check_keyring_name;
use crate::limits::{self, Limits};
use crate::sealing::{self, DataKey, SECRET_LEN};
use crate::state::{Enclave, RequestKind, Services};
use crate::workers;

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
        Request::Status => Ok(status(enclave, services.as_deref())),
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
            approval,
        } => {
            let change = PolicyChange::Set {
                policy_json,
                approval,
            };
            change_policy(ready_arc()?, enclave, record, keyring, current, change).await
        }
        Request::DisableKey {
            record,
            keyring,
            current,
        } => {
            let change = PolicyChange::Disable;
            change_policy(ready_arc()?, enclave, record, keyring, current, change).await
        }
        Request::EnableKey {
            record,
            keyring,
            current,
            approval,
        } => {
            let change = PolicyChange::Enable { approval };
            change_policy(ready_arc()?, enclave, record, keyring, current, change).await
        }
        Request::StopAll => set_stop(ready_arc()?, enclave, true).await,
        Request::ResumeAll => set_stop(ready_arc()?, enclave, false).await,
        Request::Restore {
            keyring,
            checkpoint,
            last_audit,
        } => restore(ready_arc()?, enclave, keyring, checkpoint, last_audit).await,
        Request::Commit { seq } => commit(ready()?, enclave, seq).await,
        Request::Metrics => Ok(ResponseBody::Metrics(Box::new(
            enclave.metrics().snapshot(),
        ))),
        Request::Sign {
            record,
            keyring,
            policy,
            payload,
        } => sign(ready_arc()?, enclave, record, keyring, policy, payload).await,
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

fn status(enclave: &Enclave, services: Option<&Services>) -> ResponseBody {
    ResponseBody::Status(StatusInfo {
        state: enclave.state(),
        mode: enclave.mode(),
        pcrs: enclave.pcrs().clone(),
        kms_target: enclave.kms_target(),
        restored: services.is_some_and(|s| s.durable.is_restored()),
        stopped: services.is_some_and(|s| s.durable.is_stopped()),
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
    // Likewise for the audit key's binding: a document of this enclave binding a key of
    // the host's as an audit key would let the host write audit records.
    if user_data.as_deref().is_some_and(|u| {
        u.starts_with(IDENTITY_USER_DATA_PREFIX) || u.starts_with(AUDIT_USER_DATA_PREFIX)
    }) {
        return Err(bad_request(
            "user_data must not begin with the identity-key or audit-key prefix (reserved \
             for the enclave's own documents)"
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
    services.restored()?;
    let nsm = Arc::clone(enclave.nsm());
    if let Some(owner) = &new.owner {
        // Only an owner that can sign an authorization is sealed: `eip191:0x…` or
        // `ed25519:<base58>` in canonical form (ekms_shared::owner).
        Owner::from_record_text(owner).map_err(|e| bad_request(e.to_string()))?;
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
    services.limits.fresh_key(RecordId::of(&record));
    let now = now_ms();
    let (statement, identity_document) = state_key(enclave, &record, Some(now), now).await?;
    let audit = enclave.audit().append(
        AuditAction::CreateKey,
        AuditDecision::Allowed,
        Entry {
            key_id: Some(record.key_id.clone()),
            policy_version: Some(INITIAL_POLICY_VERSION),
            // The initial policy is the host's choice (no owner signs it): the chain
            // names it, so an owner can check what the key started with.
            policy_sha256: Some(policy_sha256(&policy.policy_json)),
            ..Entry::default()
        },
    )?;
    Ok(ResponseBody::KeyGenerated {
        record,
        policy,
        statement,
        identity_document,
        audit,
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

/// The enclave clock, in seconds since the Unix epoch. Expiry of owner authorizations
/// and rolling windows are judged by it, never by a time the parent sends.
pub(crate) fn now_secs() -> u64 {
    now_ms() / 1000
}

/// The enclave clock, in milliseconds since the Unix epoch (0 if it reads before 1970).
pub(crate) fn now_ms() -> u64 {
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

/// A change of one key's policy.
enum PolicyChange {
    /// `SetPolicy`: a new document.
    Set {
        policy_json: String,
        approval: Option<OwnerApproval>,
    },
    /// `DisableKey`: the same rules, `enabled: false`.
    Disable,
    /// `EnableKey`: the same rules, `enabled: true`.
    Enable { approval: Option<OwnerApproval> },
}

/// What the signing thread hands back for a policy change: either the staged change
/// (new sealed policy and checkpoint) or a refusal decided after the record opened
/// (audited).
enum Staged {
    Change {
        policy: SealedPolicy,
        checkpoint: Box<SealedCheckpoint>,
        change: Change,
    },
    Refused {
        error: WireError,
        action: AuditAction,
        policy_version: u64,
    },
}

/// Phase 1 of `SetPolicy`, `DisableKey`, `EnableKey` ([`crate::durable`]): open the
/// record, verify the current policy, build and (for an owned key) authorize the next
/// version, seal it and the checkpoint of the state after the change.
async fn change_policy(
    services: Arc<Services>,
    enclave: &Enclave,
    record: SealedKeyRecord,
    keyring: KeyringRef,
    current: SealedPolicy,
    change: PolicyChange,
) -> Result<ResponseBody, WireError> {
    services.restored()?;
    check_record_keyring(&record, &keyring)?;
    let dek = services.keyrings.data_key(&keyring).await?;
    let guard = services.durable.lock().await?;
    let checkpoint_keyring = guard.keyring.clone().ok_or(WireError::NotReady)?;
    let checkpoint_dek = services.keyrings.data_key(&checkpoint_keyring).await?;
    let seq = guard.seq.checked_add(1).ok_or(WireError::Internal)?;
    let head = enclave.audit().head().ok_or(WireError::NotReady)?;
    let audit_key = enclave.audit().public_key();
    let key_id = record.key_id.clone();
    let svc = Arc::clone(&services);
    // Opening the record and the MAC keys run on a scrubbed signing thread.
    let staged = workers::signing()?
        .run(move || {
            let (secret, id) = open_and_verify(&svc, &dek, &record, &current)?;
            drop(secret);
            let (policy_json, version, action) = match next_policy(&record, &current, change) {
                Ok(next) => next,
                Err((error, action)) => {
                    return Ok(Staged::Refused {
                        error,
                        action,
                        policy_version: current.version.saturating_add(1),
                    })
                }
            };
            let digest = policy_sha256(&policy_json);
            let policy = sealing::mac_policy(&dek, &record, version, policy_json);
            drop(dek);
            // The version is issued now (the sealed policy leaves the enclave in this
            // answer, committed or not): raise the floor at once, so that no later
            // change can issue a second policy of the same version. Otherwise a host
            // that keeps this answer and never commits it could have the key disabled
            // from `current` (the same version, disabled) and still sign with it.
            svc.policy_floors.raise(id, version);
            let mut floors = svc.policy_floors.above(1);
            floors.retain(|(r, _)| *r != id);
            floors.push((id, version));
            let body = CheckpointBody {
                written_at: now_ms(),
                stopped: svc.durable.is_stopped(),
                audit_key,
                audit_seq: head.seq,
                audit_hash: head.hash,
                floors: pack_floors(floors)?,
                limits: svc.limits.snapshot(now_secs()),
            };
            let checkpoint = seal_checkpoint(&checkpoint_dek, seq, &checkpoint_keyring, &body);
            Ok::<_, WireError>(Staged::Change {
                policy,
                checkpoint: Box::new(checkpoint),
                change: Change::KeyPolicy {
                    record: id,
                    key_id: record.key_id.clone(),
                    policy_sha256: digest,
                    version,
                    action,
                },
            })
        })
        .await??;
    match staged {
        Staged::Change {
            policy,
            checkpoint,
            change,
        } => {
            services.durable.park(guard, seq, change);
            Ok(ResponseBody::CheckpointPending {
                checkpoint: *checkpoint,
                policy: Some(policy),
            })
        }
        Staged::Refused {
            error,
            action,
            policy_version,
        } => {
            drop(guard);
            let audit = enclave.audit().append(
                action,
                AuditDecision::Refused,
                Entry {
                    key_id: Some(key_id),
                    policy_version: Some(policy_version),
                    rule: Some(error.code().to_owned()),
                    ..Entry::default()
                },
            )?;
            Ok(ResponseBody::Refused { error, audit })
        }
    }
}

/// The next policy (canonical JSON), its version and the audit action, for an
/// authentic `record` and `current`; the owner's authorization is checked here for
/// `Set` and `Enable`. A refusal names the action it refused.
fn next_policy(
    record: &SealedKeyRecord,
    current: &SealedPolicy,
    change: PolicyChange,
) -> Result<(String, u64, AuditAction), (WireError, AuditAction)> {
    let action = match &change {
        PolicyChange::Set { .. } => AuditAction::SetPolicy,
        PolicyChange::Disable => AuditAction::Disable,
        PolicyChange::Enable { .. } => AuditAction::Enable,
    };
    let fail = |e: WireError| (e, action);
    let version = current
        .version
        .checked_add(1)
        .ok_or(WireError::SealedStateInvalid)
        .map_err(fail)?;
    // A stored policy is read leniently (its meaning is kept); a new document must
    // state its fee caps.
    let stored = || Policy::parse(&current.policy_json).map_err(|_| WireError::SealedStateInvalid);
    match change {
        PolicyChange::Set {
            policy_json,
            approval,
        } => {
            let json = Policy::parse_new(&policy_json)
                .map_err(policy_error)
                .map_err(fail)?
                .canonical_json();
            check_owner(
                record,
                approval.as_ref(),
                OwnerAction::SetPolicy,
                version,
                &json,
            )
            .map_err(fail)?;
            Ok((json, version, action))
        }
        PolicyChange::Disable => Ok((
            stored().map_err(fail)?.with_enabled(false).canonical_json(),
            version,
            action,
        )),
        PolicyChange::Enable { approval } => {
            let policy = stored().map_err(fail)?;
            if policy.enabled() {
                return Err(fail(bad_request("the key is not disabled".into())));
            }
            let json = policy.with_enabled(true).canonical_json();
            check_owner(
                record,
                approval.as_ref(),
                OwnerAction::Enable,
                version,
                &json,
            )
            .map_err(fail)?;
            Ok((json, version, action))
        }
    }
}

/// For a key with an owner: `approval` must be the owner's signature over the
/// [`Authorization`] of exactly this change (action, key id, `version`, SHA-256 of
/// `policy_json`), not expired by the enclave's clock. A key without an owner takes
/// the change as it is (the host is trusted for it; docs/SECURITY.md).
///
/// # Errors
/// [`WireError::OwnerAuthorizationInvalid`] naming what is wrong.
fn check_owner(
    record: &SealedKeyRecord,
    approval: Option<&OwnerApproval>,
    action: OwnerAction,
    version: u64,
    policy_json: &str,
) -> Result<(), WireError> {
    let Some(owner) = &record.owner else {
        return Ok(());
    };
    let invalid = |message: &str| WireError::OwnerAuthorizationInvalid {
        message: message.to_owned(),
    };
    // A record sealed before owners had a format holds free text: nobody can sign for
    // it, so its policy stays as it is (fail closed).
    let owner =
        Owner::from_record_text(owner).map_err(|_| invalid("the key's owner cannot sign"))?;
    let approval =
        approval.ok_or_else(|| invalid("this key has an owner: the change needs its signature"))?;
    if approval.version != version {
        return Err(WireError::OwnerAuthorizationInvalid {
            message: format!(
                "the authorization is for version {}, the change makes version {version}",
                approval.version
            ),
        });
    }
    if approval.expires_at > MAX_EXPIRES_AT || approval.expires_at < now_ms() / 1000 {
        return Err(invalid("the authorization has expired"));
    }
    let message = Authorization {
        action,
        key_id: record.key_id.clone(),
        version,
        policy_sha256: policy_sha256(policy_json),
        expires_at: approval.expires_at,
    }
    .message();
    if !owner.verifies(message.as_bytes(), &approval.signature) {
        return Err(invalid(
            "the signature is not the owner's over this change (key, action, version, \
             policy hash, expiry)",
        ));
    }
    Ok(())
}

/// Phase 1 of `StopAll` / `ResumeAll`.
async fn set_stop(
    services: Arc<Services>,
    enclave: &Enclave,
    stopped: bool,
) -> Result<ResponseBody, WireError> {
    services.restored()?;
    let guard = services.durable.lock().await?;
    let keyring = guard.keyring.clone().ok_or(WireError::NotReady)?;
    let dek = services.keyrings.data_key(&keyring).await?;
    let seq = guard.seq.checked_add(1).ok_or(WireError::Internal)?;
    let head = enclave.audit().head().ok_or(WireError::NotReady)?;
    let body = CheckpointBody {
        written_at: now_ms(),
        stopped,
        audit_key: enclave.audit().public_key(),
        audit_seq: head.seq,
        audit_hash: head.hash,
        floors: pack_floors(services.policy_floors.above(1))?,
        limits: services.limits.snapshot(now_secs()),
    };
    let checkpoint = workers::signing()?
        .run(move || seal_checkpoint(&dek, seq, &keyring, &body))
        .await?;
    services.durable.park(guard, seq, Change::Stop(stopped));
    Ok(ResponseBody::CheckpointPending {
        checkpoint,
        policy: None,
    })
}

/// Phase 1 of `Restore`: verify the parent's newest checkpoint (if any) and find the
/// audit head to continue from, then checkpoint the restored state under this boot's
/// audit key.
async fn restore(
    services: Arc<Services>,
    enclave: &Enclave,
    keyring: KeyringRef,
    checkpoint: Option<SealedCheckpoint>,
    last_audit: Option<SignedAuditRecord>,
) -> Result<ResponseBody, WireError> {
    let already = || bad_request("the durable state is already restored".into());
    if services.durable.is_restored() {
        return Err(already());
    }
    let guard = services.durable.lock().await?;
    if services.durable.is_restored() {
        return Err(already());
    }
    let dek = services.keyrings.data_key(&keyring).await?;
    // Made now, so that the commit cannot fail on it; reused for the boot's life.
    enclave.audit().document(enclave.nsm()).await?;
    let audit_key = enclave.audit().public_key();
    let (checkpoint, change) = workers::signing()?
        .run(move || {
            let now = now_secs();
            let limits = Box::new(Limits::default());
            let (base, floors, stopped, head) = match checkpoint {
                // Audit records but no checkpoint: the first boot writes a checkpoint
                // before any record, so the parent withholds it or lost it.
                None if last_audit.is_some() => return Err(WireError::SealedStateInvalid),
                None => {
                    // A first boot, or a checkpoint withheld: every key made before
                    // now owes a blind interval from the epoch (crate::limits).
                    limits
                        .restore(&[], 0, now)
                        .map_err(|_| WireError::Internal)?;
                    (0, Vec::new(), false, AuditHead::GENESIS)
                }
                Some(cp) => {
                    if cp.keyring != keyring.keyring || cp.epoch != keyring.epoch {
                        return Err(WireError::SealedStateInvalid);
                    }
                    sealing::verify_checkpoint(&dek, &cp)
                        .map_err(|_| WireError::SealedStateInvalid)?;
                    let body = CheckpointBody::decode(&cp.body)?;
                    let head = restored_head(&body, last_audit.as_ref())?;
                    limits
                        .restore(&body.limits, body.written_at / 1000, now)
                        .map_err(|_| WireError::SealedStateInvalid)?;
                    (cp.seq, body.floor_entries()?, body.stopped, head)
                }
            };
            let seq = base.checked_add(1).ok_or(WireError::SealedStateInvalid)?;
            let body = CheckpointBody {
                written_at: now_ms(),
                stopped,
                audit_key,
                audit_seq: head.seq,
                audit_hash: head.hash,
                floors: pack_floors(floors.clone())?,
                limits: limits.snapshot(now),
            };
            let sealed = seal_checkpoint(&dek, seq, &keyring, &body);
            Ok((
                sealed,
                Change::Restore {
                    floors,
                    limits,
                    stopped,
                    head,
                    keyring,
                },
            ))
        })
        .await??;
    services.durable.park(guard, checkpoint.seq, change);
    Ok(ResponseBody::CheckpointPending {
        checkpoint,
        policy: None,
    })
}

/// Where the audit chain continues after a restart: the checkpoint's head, or the
/// parent's newest record when it is that head or a later record of the boot that
/// wrote the checkpoint (checked by its signature). Anything else is a record the
/// checkpoint contradicts: [`WireError::SealedStateInvalid`].
fn restored_head(
    body: &CheckpointBody,
    last: Option<&SignedAuditRecord>,
) -> Result<AuditHead, WireError> {
    let at_checkpoint = AuditHead {
        seq: body.audit_seq,
        hash: body.audit_hash,
    };
    let Some(last) = last else {
        return Ok(at_checkpoint);
    };
    let record = last.verify().map_err(|_| WireError::SealedStateInvalid)?;
    let hash = last.record_sha256();
    if record.seq == body.audit_seq && hash == body.audit_hash {
        return Ok(at_checkpoint);
    }
    if record.seq > body.audit_seq && last.audit_key == body.audit_key {
        return Ok(AuditHead {
            seq: record.seq,
            hash,
        });
    }
    Err(WireError::SealedStateInvalid)
}

/// A checkpoint of `body` as number `seq`, MAC'd with `dek` (a signing thread's job).
fn seal_checkpoint(
    dek: &DataKey,
    seq: u64,
    keyring: &KeyringRef,
    body: &CheckpointBody,
) -> SealedCheckpoint {
    let mut checkpoint = durable::unsealed(seq, keyring, body);
    sealing::mac_checkpoint(dek, &mut checkpoint);
    checkpoint
}

/// Phase 2 of every state change: apply it and record it.
async fn commit(
    services: &Services,
    enclave: &Enclave,
    seq: u64,
) -> Result<ResponseBody, WireError> {
    let (change, guard) = services.durable.take(seq, &services.policy_floors)?;
    let audit = enclave.audit();
    let (record, document) = match change {
        Change::Restore { head, limits, .. } => {
            services.limits.replace_with(*limits);
            audit.start(head);
            let record = audit.append(AuditAction::Boot, AuditDecision::Allowed, Entry::default());
            services.durable.mark_restored();
            (record, Some(audit.document(enclave.nsm()).await?))
        }
        Change::KeyPolicy {
            key_id,
            version,
            action,
            policy_sha256,
            ..
        } => {
            let entry = Entry {
                key_id: Some(key_id),
                policy_version: Some(version),
                policy_sha256: Some(policy_sha256),
                ..Entry::default()
            };
            (audit.append(action, AuditDecision::Allowed, entry), None)
        }
        Change::Stop(stopped) => {
            let action = if stopped {
                AuditAction::Stop
            } else {
                AuditAction::Resume
            };
            (
                audit.append(action, AuditDecision::Allowed, Entry::default()),
                None,
            )
        }
    };
    drop(guard);
    Ok(ResponseBody::Committed {
        audit: record?,
        audit_document: document,
    })
}

async fn sign(
    services: Arc<Services>,
    enclave: &Enclave,
    record: SealedKeyRecord,
    keyring: KeyringRef,
    policy: SealedPolicy,
    payload: SignPayload,
) -> Result<ResponseBody, WireError> {
    services.restored()?;
    check_record_keyring(&record, &keyring)?;
    if payload.kind.algorithm() != record.algorithm {
        return Err(bad_request(format!(
            "payload kind {:?} cannot be signed by a {:?} key",
            payload.kind, record.algorithm
        )));
    }
    let dek = services.keyrings.data_key(&keyring).await?;
    let audit = Arc::clone(enclave.audit());
    let kind = payload.kind;
    // Everything that touches the secret, the wrap key or the MAC key runs on a signing
    // thread whose stack is scrubbed afterwards (crate::workers).
    let answer = workers::signing()?
        .run(move || sign_on_worker(&services, &audit, dek, &record, &policy, &payload))
        .await?;
    // Counted as decided (signed, or refused and audited); failures to open or verify
    // are no decision on the key and are not counted.
    match &answer {
        Ok(ResponseBody::Signed { .. }) => enclave.metrics().signed(kind),
        Ok(ResponseBody::Refused { error, .. }) => {
            let reason = match error {
                WireError::PolicyDenied { rule, .. } => rule.as_str(),
                other => other.code(),
            };
            enclave.metrics().refused(kind, reason);
        }
        _ => {}
    }
    answer
}

/// The synchronous part of `Sign`: open and verify (a failure is not a decision on the
/// key: not audited), then decide, sign, and record the decision either way.
fn sign_on_worker(
    services: &Services,
    audit: &AuditLog,
    dek: Arc<DataKey>,
    record: &SealedKeyRecord,
    policy: &SealedPolicy,
    payload: &SignPayload,
) -> Result<ResponseBody, WireError> {
    let (secret, id) = open_and_verify(services, &dek, record, policy)?;
    drop(dek);
    // Hashed once each per signature: the payload (record and repeat key) and the
    // policy (record; cached with its parse).
    let payload_sha256: [u8; 32] = Sha256::digest(&payload.bytes).into();
    let parsed = parsed_policy(policy);
    let policy_digest = match &parsed {
        Ok((_, digest)) => *digest,
        Err(_) => policy_sha256(&policy.policy_json),
    };
    let entry = Entry {
        key_id: Some(record.key_id.clone()),
        payload_kind: Some(payload.kind.as_str()),
        payload_sha256: Some(payload_sha256),
        policy_version: Some(policy.version),
        policy_sha256: Some(policy_digest),
        rule: None,
    };
    let signed = decide_and_sign(
        services,
        secret,
        record,
        id,
        parsed.map(|(p, _)| p),
        payload,
        payload_sha256,
    );
    match signed {
        Ok(output) => {
            let audit = audit.append(AuditAction::Sign, AuditDecision::Allowed, entry)?;
            Ok(ResponseBody::Signed { output, audit })
        }
        Err(error) => {
            let rule = match &error {
                WireError::PolicyDenied { rule, .. } => rule.clone(),
                other => other.code().to_owned(),
            };
            let entry = Entry {
                rule: Some(rule),
                ..entry
            };
            let audit = audit.append(AuditAction::Sign, AuditDecision::Refused, entry)?;
            Ok(ResponseBody::Refused { error, audit })
        }
    }
}

/// Store-wide stop, disabled key, decode, evaluate, reserve the rolling limits, sign,
/// commit (or release) the reservation.
fn decide_and_sign(
    services: &Services,
    secret: Zeroizing<Vec<u8>>,
    record: &SealedKeyRecord,
    id: RecordId,
    policy: Result<Arc<Policy>, WireError>,
    payload: &SignPayload,
    payload_sha256: [u8; 32],
) -> Result<SignOutput, WireError> {
    if services.durable.is_stopped() {
        return Err(WireError::StoreStopped);
    }
    let policy = policy?;
    if !policy.enabled() {
        return Err(WireError::KeyDisabled);
    }
    let decoded =
        ekms_signer::decode(signer_kind(payload.kind), &payload.bytes).map_err(signer_error)?;
    let identity = match record.algorithm {
        Algorithm::Secp256k1 => SignerIdentity::Evm(evm_address_of(&record.public_key)?),
        Algorithm::Ed25519 => SignerIdentity::Solana(ed25519_public_key(record)?),
    };
    let now = now_secs();
    let approval = policy.evaluate(&decoded, &identity, now).map_err(denied)?;
    // Rolling limits: held before signing, so that concurrent requests cannot together
    // pass a cap; the same payload signed again within its windows counts once.
    let repeat = repeat_key(payload.kind, &payload_sha256);
    let (charges, rate) = window_charges(&approval);
    let longest = charges.iter().map(|c| c.window_secs).max().unwrap_or(0);
    let reservation = if charges.is_empty() || services.limits.already_signed(id, repeat, now) {
        None
    } else {
        Some(
            services
                .limits
                .reserve(id, &charges, rate, now)
                .map_err(window_full)?,
        )
    };
    match sign_decoded(&decoded, secret, record) {
        Ok(output) => {
            if let Some(r) = reservation {
                services
                    .limits
                    .commit_signed(r, id, repeat, longest, now_secs());
            }
            Ok(output)
        }
        Err(e) => {
            if let Some(r) = reservation {
                services.limits.release(r);
            }
            Err(e)
        }
    }
}

/// Parsed policies by MAC, so that a policy signed with again is not parsed again
/// (issue 10). Only policies whose MAC verified reach it (`decide_and_sign` runs after
/// `open_and_verify`), and a hit also needs the very same document bytes: a MAC that
/// two documents share (across keys it would take an HMAC collision) still cannot swap
/// one parse for another. Bounded: beyond [`MAX_PARSED_POLICIES`] an entry goes.
static PARSED_POLICIES: std::sync::LazyLock<std::sync::Mutex<ParsedPolicies>> =
    std::sync::LazyLock::new(Default::default);

/// MAC → (the document's bytes, its parse, its SHA-256 for the audit record).
type ParsedPolicies = std::collections::HashMap<[u8; 32], (String, Arc<Policy>, [u8; 32])>;

/// Most parsed policies kept (a few hundred bytes to a few KiB each).
const MAX_PARSED_POLICIES: usize = 4096;

/// `policy` parsed, and the SHA-256 of its document, from [`PARSED_POLICIES`] when
/// there (its MAC already verified).
fn parsed_policy(policy: &SealedPolicy) -> Result<(Arc<Policy>, [u8; 32]), WireError> {
    let lock = || {
        PARSED_POLICIES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if let Some((json, parsed, digest)) = lock().get(&policy.mac) {
        if *json == policy.policy_json {
            return Ok((Arc::clone(parsed), *digest));
        }
    }
    let parsed = Arc::new(Policy::parse(&policy.policy_json).map_err(policy_error)?);
    let digest = policy_sha256(&policy.policy_json);
    insert_bounded(
        &mut lock(),
        policy.mac,
        (policy.policy_json.clone(), Arc::clone(&parsed), digest),
    );
    Ok((parsed, digest))
}

/// Inserts into one of this module's caches: beyond [`MAX_PARSED_POLICIES`] entries an
/// arbitrary one goes first.
fn insert_bounded<K: Copy + Eq + std::hash::Hash, V>(
    map: &mut std::collections::HashMap<K, V>,
    key: K,
    value: V,
) {
    if map.len() >= MAX_PARSED_POLICIES && !map.contains_key(&key) {
        if let Some(k) = map.keys().next().copied() {
            map.remove(&k);
        }
    }
    map.insert(key, value);
}

/// EVM addresses by compressed public key: deriving one decompresses the point (a field
/// square root) and hashes it, ~10 µs per signature otherwise. Only keys of records
/// that opened reach it (`decide_and_sign` runs after `open_and_verify`); the address
/// is a function of the key bytes alone, so an entry is never wrong. Bounded like
/// [`PARSED_POLICIES`] ([`insert_bounded`]).
static EVM_ADDRESSES: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<[u8; 33], [u8; 20]>>,
> = std::sync::LazyLock::new(Default::default);

/// The EVM address of a 33-byte compressed secp256k1 public key, from
/// [`EVM_ADDRESSES`] when there.
fn evm_address_of(public_key: &[u8]) -> Result<[u8; 20], WireError> {
    let key: [u8; 33] = public_key
        .try_into()
        .map_err(|_| WireError::SealedStateInvalid)?;
    let lock = || {
        EVM_ADDRESSES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if let Some(address) = lock().get(&key) {
        return Ok(*address);
    }
    let address = SignerIdentity::from_secp256k1_public_key(&key)
        .ok()
        .and_then(|id| id.evm_address())
        .ok_or(WireError::SealedStateInvalid)?;
    insert_bounded(&mut lock(), key, address);
    Ok(address)
}

/// What "the same payload signed again counts once" remembers: SHA-256 over the kind
/// and the bytes. The kind is part of it because one byte string can be two different
/// payloads (EVM transaction bytes are also a valid `evm_message`, whose signature is a
/// different one): keyed on the bytes alone, a transaction signed first as a message
/// (charged one signature) was then taken for a repeat and charged nothing.
fn repeat_key(kind: PayloadKind, payload_sha256: &[u8; 32]) -> [u8; 32] {
    let kind = kind.as_str().as_bytes();
    let mut h = Sha256::new();
    h.update((kind.len() as u64).to_be_bytes());
    h.update(kind);
    h.update(payload_sha256);
    h.finalize().into()
}

/// Signs what `decoded` is with the unwrapped secret (dropped as soon as the key type
/// holds it).
fn sign_decoded(
    decoded: &Decoded,
    secret: Zeroizing<Vec<u8>>,
    record: &SealedKeyRecord,
) -> Result<SignOutput, WireError> {
    match record.algorithm {
        Algorithm::Secp256k1 => {
            let key = Secp256k1Secret::from_bytes(secret.as_slice())
                .map_err(|_| WireError::SealedStateInvalid)?;
            drop(secret);
            if let Decoded::EvmTransaction(tx) = decoded {
                let sig = sign_evm(tx, &key).map_err(signer_error)?;
                return Ok(SignOutput::Evm {
                    r: sig.r,
                    s: sig.s,
                    y_parity: sig.y_parity,
                    v: sig.v,
                    signed_transaction: sig.signed_transaction,
                    transaction_hash: sig.transaction_hash,
                });
            }
            let hash = decoded.evm_signing_hash().ok_or(WireError::Internal)?;
            let sig = sign_evm_hash(&hash, &key).map_err(signer_error)?;
            Ok(SignOutput::EvmDigest {
                digest: sig.hash,
                r: sig.r,
                s: sig.s,
                y_parity: sig.v.saturating_sub(27),
            })
        }
        Algorithm::Ed25519 => {
            let public_key = ed25519_public_key(record)?;
            let key = Ed25519Secret::from_bytes(secret.as_slice())
                .map_err(|_| WireError::SealedStateInvalid)?;
            drop(secret);
            match decoded {
                Decoded::SolanaTransaction(message) => {
                    let sig = sign_solana(message, &key, &public_key).map_err(signer_error)?;
                    Ok(SignOutput::Solana {
                        signature: sig.signature,
                        signed_transaction: sig.signed_transaction,
                    })
                }
                Decoded::SolanaOffchainMessage(message) => {
                    let signature =
                        sign_solana_offchain(message, &key, &public_key).map_err(signer_error)?;
                    Ok(SignOutput::SolanaMessage { signature })
                }
                _ => Err(WireError::Internal),
            }
        }
    }
}

fn ed25519_public_key(record: &SealedKeyRecord) -> Result<[u8; 32], WireError> {
    record
        .public_key
        .as_slice()
        .try_into()
        .map_err(|_| WireError::SealedStateInvalid)
}

/// The wire's payload kind as the signer names it.
fn signer_kind(kind: PayloadKind) -> ekms_signer::PayloadKind {
    use ekms_signer::PayloadKind as S;
    match kind {
        PayloadKind::EvmTransaction => S::EvmTransaction,
        PayloadKind::SolanaTransaction => S::SolanaTransaction,
        PayloadKind::EvmMessage => S::EvmMessage,
        PayloadKind::EvmTypedData => S::EvmTypedData,
        PayloadKind::EvmDigest => S::EvmDigest,
        PayloadKind::SolanaOffchainMessage => S::SolanaOffchainMessage,
    }
}

/// The approval's windowed charges as the enclave's limits hold them, and the policy's
/// rate limit (its signature-count charge), for the blind-interval bound.
fn window_charges(approval: &Approval) -> (Vec<limits::Charge>, Option<limits::Rate>) {
    let rate = approval
        .charges
        .iter()
        .find(|c| c.limit == LimitId::Signatures)
        .map(|c| limits::Rate {
            max_signatures: u64::try_from(c.cap).unwrap_or(u64::MAX),
            window_secs: c.window_secs,
        });
    let charges = approval
        .charges
        .iter()
        .map(|c| limits::Charge {
            limit: c.limit.to_string(),
            amount: c.amount,
            cap: c.cap,
            window_secs: c.window_secs,
            per_request: None,
        })
        .collect();
    (charges, rate)
}

/// A full window, as the policy rule that owns it (`rate_limit`, `…per_window`).
fn window_full(e: limits::Exceeded) -> WireError {
    let rule = e
        .limit
        .parse::<LimitId>()
        .map_or("rate_limit", |l| l.rule().as_str());
    WireError::PolicyDenied {
        rule: rule.to_owned(),
        message: format!(
            "the rolling window {} is full: {} spent or held, this request {}, cap {}",
            e.limit, e.used, e.amount, e.cap
        ),
    }
}

/// Opens `record` (returning its secret and its [`RecordId`]), verifies `policy`'s MAC and that its version is not below the key's
/// floor (a rolled-back row); all three failures are the same error.
fn open_and_verify(
    services: &Services,
    dek: &DataKey,
    record: &SealedKeyRecord,
    policy: &SealedPolicy,
) -> Result<(Zeroizing<Vec<u8>>, RecordId), WireError> {
    let secret = sealing::open(dek, record).map_err(|_| WireError::SealedStateInvalid)?;
    sealing::verify_policy(dek, record, policy).map_err(|_| WireError::SealedStateInvalid)?;
    let id = RecordId::of(record);
    services
        .policy_floors
        .check_and_raise(id, policy.version)
        .map_err(|_| WireError::SealedStateInvalid)?;
    Ok((secret, id))
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

    #[test]
    fn parsed_policies_are_reused_only_for_the_same_mac_and_bytes() {
        let sealed = |json: &str, mac: u8| SealedPolicy {
            key_id: "k".into(),
            version: 1,
            policy_json: json.into(),
            mac: [mac; 32],
        };
        let a = sealed(r#"{"enabled":true}"#, 0xa1);
        let (first, digest) = parsed_policy(&a).unwrap();
        assert_eq!(digest, policy_sha256(&a.policy_json));
        assert!(Arc::ptr_eq(&first, &parsed_policy(&a).unwrap().0));
        // The same MAC with other bytes is parsed on its own, never served A's parse.
        let b = sealed(r#"{"enabled":false}"#, 0xa1);
        let (other, other_digest) = parsed_policy(&b).unwrap();
        assert_eq!(other_digest, policy_sha256(&b.policy_json));
        assert!(first.enabled() && !other.enabled());
        assert!(matches!(
            parsed_policy(&sealed("{", 0xa1)),
            Err(WireError::InvalidPolicy { .. })
        ));
    }

    #[test]
    fn a_repeat_is_the_same_kind_and_bytes() {
        let tx: [u8; 32] = Sha256::digest([0x02, 0xc0]).into();
        let other: [u8; 32] = Sha256::digest([0x02, 0xc1]).into();
        assert_eq!(
            repeat_key(PayloadKind::EvmTransaction, &tx),
            repeat_key(PayloadKind::EvmTransaction, &tx)
        );
        assert_ne!(
            repeat_key(PayloadKind::EvmTransaction, &tx),
            repeat_key(PayloadKind::EvmMessage, &tx)
        );
        assert_ne!(
            repeat_key(PayloadKind::EvmTransaction, &tx),
            repeat_key(PayloadKind::EvmTransaction, &other)
        );
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
    async fn metrics_are_answered_while_booting() {
        let e = enclave();
        e.metrics().signed(PayloadKind::SolanaTransaction);
        let Ok(ResponseBody::Metrics(m)) = handle(&e, Request::Metrics).await else {
            panic!("no metrics while booting")
        };
        assert_eq!(m.signatures.len(), 1);
        assert_eq!(m.signatures[0].count, 1);
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
