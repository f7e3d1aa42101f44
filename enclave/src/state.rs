//! The enclave's boot state machine (STYLE rule 5, DESIGN §2):
//!
//! ```text
//! Booting ──Configure: KMS client built──▶ Configured ──attested GenerateRandom ok──▶ Ready
//!                                            │   ▲
//!                                            └───┘ Configure again (after a KMS error)
//! ```
//!
//! Each state names the requests it accepts ([`accepts`]): `Booting` and `Configured`
//! accept `Status`, `Attestation` and `Configure`; `Ready` accepts everything, and a
//! second `Configure` there is answered [`WireError::AlreadyConfigured`]. Everything
//! else is [`WireError::NotReady`]. The handlers of key requests take the [`Services`]
//! that only exist in `Ready`, so signing before `Ready` is unreachable by type, not only
//! by this table.
//!
//! A restarted parent reconnects and asks `Status`: a `Ready` enclave tells it so and the
//! parent skips `Configure`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use attestation::NsmProvider;
use ekms_shared::{DekCachePolicy, EnclaveState, KmsConfig, Mode, Request, WireError};
use serde_bytes::ByteBuf;

use crate::floor::PolicyFloors;
use crate::keyring::Keyrings;
use crate::kms::Kms;
use crate::EnclaveError;

/// PCRs reported by `Status`: 0 (image), 1 (kernel and boot ramfs), 2 (application).
pub const STATUS_PCRS: [u16; 3] = [0, 1, 2];

/// Longest data-key cache TTL `Configure` may ask for, in seconds (one day).
pub const MAX_DEK_TTL_SECS: u64 = 24 * 60 * 60;

/// The kinds of request, as the state table sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// [`Request::Configure`].
    Configure,
    /// [`Request::Status`].
    Status,
    /// [`Request::Attestation`].
    Attestation,
    /// [`Request::CreateKeyring`].
    CreateKeyring,
    /// [`Request::GenerateKey`].
    GenerateKey,
    /// [`Request::SetPolicy`].
    SetPolicy,
    /// [`Request::Sign`].
    Sign,
}

impl RequestKind {
    /// The kind of `request`.
    pub fn of(request: &Request) -> Self {
        match request {
            Request::Configure { .. } => Self::Configure,
            Request::Status => Self::Status,
            Request::Attestation { .. } => Self::Attestation,
            Request::CreateKeyring { .. } => Self::CreateKeyring,
            Request::GenerateKey { .. } => Self::GenerateKey,
            Request::SetPolicy { .. } => Self::SetPolicy,
            Request::Sign { .. } => Self::Sign,
        }
    }

    /// Stable lower-case name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Configure => "configure",
            Self::Status => "status",
            Self::Attestation => "attestation",
            Self::CreateKeyring => "create_keyring",
            Self::GenerateKey => "generate_key",
            Self::SetPolicy => "set_policy",
            Self::Sign => "sign",
        }
    }
}

/// Whether `state` accepts requests of `kind` (the table in the module docs). A
/// `Configure` in `Ready` is accepted here and answered `AlreadyConfigured` by
/// [`Enclave::configure`].
pub fn accepts(state: EnclaveState, kind: RequestKind) -> bool {
    use RequestKind as K;
    match state {
        EnclaveState::Booting | EnclaveState::Configured => {
            matches!(kind, K::Status | K::Attestation | K::Configure)
        }
        EnclaveState::Ready => true,
    }
}

/// What only a `Ready` enclave has: the attested KMS client and the keyrings.
#[derive(Debug)]
pub struct Services {
    /// The KMS client that passed the attested round trip.
    pub kms: Arc<Kms>,
    /// Keyrings and the data-key cache.
    pub keyrings: Keyrings,
    /// Per-key policy version floors (rollback defence while the enclave runs).
    pub policy_floors: PolicyFloors,
}

#[derive(Debug)]
enum Phase {
    Booting,
    Configured,
    Ready(Arc<Services>),
}

impl Phase {
    fn state(&self) -> EnclaveState {
        match self {
            Phase::Booting => EnclaveState::Booting,
            Phase::Configured => EnclaveState::Configured,
            Phase::Ready(_) => EnclaveState::Ready,
        }
    }
}

/// The enclave: its NSM, its mode, and where its state machine is.
pub struct Enclave {
    nsm: Arc<dyn NsmProvider>,
    mode: Mode,
    pcrs: BTreeMap<u16, ByteBuf>,
    phase: RwLock<Phase>,
    /// Serialises `Configure` handling (each holds it across its KMS round trip).
    configuring: tokio::sync::Mutex<()>,
    /// The only KMS key `Configure` may name, when the image pins one.
    pinned_kms_key: Option<String>,
}

impl std::fmt::Debug for Enclave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enclave")
            .field("mode", &self.mode)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Enclave {
    /// A `Booting` enclave on `nsm`. Reads PCR0..2 once (they do not change while the
    /// enclave runs).
    ///
    /// # Errors
    /// [`EnclaveError::Nsm`] if the NSM cannot describe those PCRs: an enclave that
    /// cannot measure itself must not serve.
    pub fn new(nsm: Arc<dyn NsmProvider>, mode: Mode) -> Result<Self, EnclaveError> {
        let mut pcrs = BTreeMap::new();
        for index in STATUS_PCRS {
            let value = nsm.describe_pcr(index).map_err(EnclaveError::Nsm)?;
            pcrs.insert(index, ByteBuf::from(value));
        }
        Ok(Self {
            nsm,
            mode,
            pcrs,
            phase: RwLock::new(Phase::Booting),
            configuring: tokio::sync::Mutex::new(()),
            pinned_kms_key: None,
        })
    }

    /// Pins the KMS key: `Configure` is then refused unless its `kms_key_id` is exactly
    /// `key_arn` (a full key ARN, `arn:aws:kms:<region>:<account>:key/<id>`; see
    /// [`crate::kms::check_pinned_key_arn`]).
    ///
    /// Why: the parent chooses the key and the credentials. Unpinned, a compromised
    /// parent can configure a key in its own account whose policy lets it `Decrypt`
    /// without a `Recipient`, and so read the data key of every keyring created
    /// afterwards, and every execution key sealed under it. The pin must come from the
    /// measured image (the enclave's command line or environment in the EIF), never
    /// from the parent.
    pub fn with_pinned_kms_key(mut self, key_arn: String) -> Self {
        self.pinned_kms_key = Some(key_arn);
        self
    }

    /// The pinned KMS key ARN, if any.
    pub fn pinned_kms_key(&self) -> Option<&str> {
        self.pinned_kms_key.as_deref()
    }

    /// The NSM.
    pub fn nsm(&self) -> &Arc<dyn NsmProvider> {
        &self.nsm
    }

    /// Nitro or simulation.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// PCR0..2 as read at start (48 bytes each).
    pub fn pcrs(&self) -> &BTreeMap<u16, ByteBuf> {
        &self.pcrs
    }

    fn read_phase(&self) -> std::sync::RwLockReadGuard<'_, Phase> {
        // Writers replace the whole value in one assignment: a poisoned lock holds a
        // consistent phase.
        self.phase
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_phase(&self, phase: Phase) {
        let mut guard = self
            .phase
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tracing::info!(from = ?guard.state(), to = ?phase.state(), "enclave state");
        *guard = phase;
    }

    /// Where the state machine is.
    pub fn state(&self) -> EnclaveState {
        self.read_phase().state()
    }

    /// Admits a request of `kind` in the current state: `Ok(Some(services))` in
    /// `Ready`, `Ok(None)` for a request the earlier states accept.
    ///
    /// # Errors
    /// [`WireError::NotReady`] when the current state does not accept `kind`.
    pub fn admit(&self, kind: RequestKind) -> Result<Option<Arc<Services>>, WireError> {
        let phase = self.read_phase();
        if !accepts(phase.state(), kind) {
            return Err(WireError::NotReady);
        }
        Ok(match &*phase {
            Phase::Ready(s) => Some(Arc::clone(s)),
            Phase::Booting | Phase::Configured => None,
        })
    }

    /// Handles `Configure`: builds the KMS client (→ `Configured`), then makes the
    /// attested round trip (→ `Ready`). Answers only once `Ready`, or with the KMS error
    /// (the state stays `Configured` and `Configure` may be retried, e.g. with fresh
    /// credentials).
    ///
    /// # Errors
    /// [`WireError::AlreadyConfigured`] when `Ready`; [`WireError::BadRequest`] for
    /// invalid settings, including a `kms_key_id` other than the pinned one (state
    /// unchanged); [`WireError::Kms`] /
    /// [`WireError::Attestation`] when the round trip fails.
    pub async fn configure(
        &self,
        kms: KmsConfig,
        dek_cache: DekCachePolicy,
    ) -> Result<(), WireError> {
        let _one_at_a_time = self.configuring.lock().await;
        if self.state() == EnclaveState::Ready {
            return Err(WireError::AlreadyConfigured);
        }
        if dek_cache.ttl_secs > MAX_DEK_TTL_SECS {
            return Err(WireError::BadRequest {
                message: format!("dek_cache.ttl_secs must be at most {MAX_DEK_TTL_SECS}"),
            });
        }
        if let Some(pinned) = &self.pinned_kms_key {
            if kms.kms_key_id != *pinned {
                return Err(WireError::BadRequest {
                    message: "kms_key_id is not the KMS key this enclave image is pinned to".into(),
                });
            }
        }
        let client = Kms::new(&kms, self.mode, Arc::clone(&self.nsm)).map_err(|e| e.to_wire())?;
        let client = Arc::new(client);
        self.set_phase(Phase::Configured);
        if let Err(e) = client.check_attested_round_trip().await {
            tracing::warn!(error = %e, "attested KMS round trip failed; staying Configured");
            return Err(e.to_wire());
        }
        let keyrings = Keyrings::new(Arc::clone(&client), dek_cache);
        self.set_phase(Phase::Ready(Arc::new(Services {
            kms: client,
            keyrings,
            policy_floors: PolicyFloors::default(),
        })));
        Ok(())
    }
}

/// A `Booting` simulated enclave for unit tests. Its PCRs are derived from a fixed
/// digest: measuring the ~200 MB debug test binary would take half a minute.
#[cfg(test)]
pub(crate) fn test_enclave() -> Enclave {
    let ca = attestation::SimulatedCa::generate().expect("simulation CA");
    let pcrs = attestation::pcrs_from_digest(b"ekms-enclave unit tests");
    let nsm = attestation::SimulatedNsm::new(&ca, pcrs).expect("simulated NSM");
    Enclave::new(Arc::new(nsm), Mode::Simulation).expect("enclave")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_enclave_is_booting_with_three_pcrs() {
        let e = test_enclave();
        assert_eq!(e.state(), EnclaveState::Booting);
        assert_eq!(e.pcrs().keys().copied().collect::<Vec<_>>(), STATUS_PCRS);
        assert!(e.admit(RequestKind::Status).unwrap().is_none());
    }

    #[test]
    fn rejects_sign_before_ready() {
        let e = test_enclave();
        assert_eq!(e.admit(RequestKind::Sign).unwrap_err(), WireError::NotReady);
        assert_eq!(
            e.admit(RequestKind::CreateKeyring).unwrap_err(),
            WireError::NotReady
        );
    }

    const ALL: [RequestKind; 7] = [
        RequestKind::Configure,
        RequestKind::Status,
        RequestKind::Attestation,
        RequestKind::CreateKeyring,
        RequestKind::GenerateKey,
        RequestKind::SetPolicy,
        RequestKind::Sign,
    ];

    #[test]
    fn ready_accepts_everything() {
        for kind in ALL {
            assert!(accepts(EnclaveState::Ready, kind), "{kind:?}");
        }
    }

    #[test]
    fn rejects_key_requests_before_ready() {
        for state in [EnclaveState::Booting, EnclaveState::Configured] {
            for kind in ALL {
                let early = matches!(
                    kind,
                    RequestKind::Status | RequestKind::Attestation | RequestKind::Configure
                );
                assert_eq!(accepts(state, kind), early, "{state:?} {kind:?}");
            }
        }
    }

    fn kms_config(key: &str, port: u16) -> KmsConfig {
        KmsConfig {
            region: "us-east-1".into(),
            endpoint_url: Some(format!("http://127.0.0.1:{port}")),
            kms_key_id: key.into(),
            credentials: ekms_shared::Credentials {
                access_key_id: "a".into(),
                secret_access_key: "s".into(),
                session_token: None,
            },
        }
    }

    const PINNED: &str = "arn:aws:kms:us-east-1:111122223333:key/pinned";
    const CACHE: DekCachePolicy = DekCachePolicy {
        ttl_secs: 60,
        max_uses: 10,
    };

    #[tokio::test]
    async fn rejects_configure_with_another_kms_key_than_the_pinned_one() {
        let e = test_enclave().with_pinned_kms_key(PINNED.into());
        assert_eq!(e.pinned_kms_key(), Some(PINNED));
        for other in [
            "arn:aws:kms:us-east-1:444455556666:key/attacker",
            "alias/ekms",
            &PINNED[..PINNED.len() - 1],
        ] {
            let r = e.configure(kms_config(other, 1), CACHE).await;
            assert!(
                matches!(r, Err(WireError::BadRequest { .. })),
                "{other}: {r:?}"
            );
            assert_eq!(e.state(), EnclaveState::Booting, "{other}");
        }
    }

    #[tokio::test]
    async fn pinned_kms_key_passes_on_to_kms() {
        // The pinned key gets past the pin: the enclave builds its client and tries KMS
        // (a port nothing listens on, so the round trip fails and it stays Configured).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = test_enclave().with_pinned_kms_key(PINNED.into());
        let r = e.configure(kms_config(PINNED, port), CACHE).await;
        assert!(matches!(r, Err(WireError::Kms { .. })), "{r:?}");
        assert_eq!(e.state(), EnclaveState::Configured);
    }

    #[test]
    fn kinds_have_distinct_names() {
        let names: std::collections::BTreeSet<_> = ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), ALL.len());
        assert_eq!(RequestKind::of(&Request::Status), RequestKind::Status);
    }
}
