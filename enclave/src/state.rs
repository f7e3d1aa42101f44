//! The enclave's boot state machine (STYLE rule 5, DESIGN §2):
//!
//! ```text
//! Booting ──Configure: KMS client built──▶ Configured ──attested GenerateDataKey ok──▶ Ready
//!                                            │   ▲                                   │  ▲
//!                                            └───┘ Configure again (after a KMS error)└──┘
//!                                                     Configure, same KMS target: new credentials
//! ```
//!
//! Each state names the requests it accepts ([`accepts`]): `Booting` and `Configured`
//! accept `Status`, `Attestation`, `Configure` and `Metrics` (counters, no secret);
//! `Ready` accepts everything.
//! Everything else is [`WireError::NotReady`].
//!
//! A `Configure` in `Ready` only refreshes credentials (the instance role's expire
//! after hours; the parent re-sends `Configure` on each connection): with the same
//! region, endpoint and KMS key id, the KMS client's credentials are replaced
//! ([`Kms::replace_credentials`]) and the data-key cache, policy floors and keyrings
//! stay; the `dek_cache` of the first `Configure` stays in force. A `Configure` naming
//! another region, endpoint or key is [`WireError::AlreadyConfigured`]: the parent
//! cannot re-point a running enclave. The handlers of key requests take the [`Services`]
//! that only exist in `Ready`, so signing before `Ready` is unreachable by type, not only
//! by this table.
//!
//! A restarted parent reconnects, asks `Status` and sends `Configure` again: a `Ready`
//! enclave takes it as a credentials refresh (a no-op for the same credentials).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use attestation::NsmProvider;
use ekms_shared::{DekCachePolicy, EnclaveState, KmsConfig, KmsTarget, Mode, Request, WireError};
use serde_bytes::ByteBuf;

use crate::audit::AuditLog;
use crate::durable::Durable;
use crate::floor::PolicyFloors;
use crate::identity::Identity;
use crate::keyring::Keyrings;
use crate::kms::{CredentialsUpdate, Kms, KmsPin, KmsTrust};
use crate::limits::Limits;
use crate::metrics::Counters;
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
    /// [`Request::CertifyKey`].
    CertifyKey,
    /// [`Request::Sign`].
    Sign,
    /// [`Request::DisableKey`].
    DisableKey,
    /// [`Request::EnableKey`].
    EnableKey,
    /// [`Request::StopAll`].
    StopAll,
    /// [`Request::ResumeAll`].
    ResumeAll,
    /// [`Request::Restore`].
    Restore,
    /// [`Request::Commit`].
    Commit,
    /// [`Request::Metrics`].
    Metrics,
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
            Request::CertifyKey { .. } => Self::CertifyKey,
            Request::Sign { .. } => Self::Sign,
            Request::DisableKey { .. } => Self::DisableKey,
            Request::EnableKey { .. } => Self::EnableKey,
            Request::StopAll => Self::StopAll,
            Request::ResumeAll => Self::ResumeAll,
            Request::Restore { .. } => Self::Restore,
            Request::Commit { .. } => Self::Commit,
            Request::Metrics => Self::Metrics,
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
            Self::CertifyKey => "certify_key",
            Self::Sign => "sign",
            Self::DisableKey => "disable_key",
            Self::EnableKey => "enable_key",
            Self::StopAll => "stop_all",
            Self::ResumeAll => "resume_all",
            Self::Restore => "restore",
            Self::Commit => "commit",
            Self::Metrics => "metrics",
        }
    }
}

/// Whether `state` accepts requests of `kind` (the table in the module docs). A
/// `Configure` in `Ready` is accepted here; [`Enclave::configure`] takes only new
/// credentials from it.
pub fn accepts(state: EnclaveState, kind: RequestKind) -> bool {
    use RequestKind as K;
    match state {
        EnclaveState::Booting | EnclaveState::Configured => {
            matches!(kind, K::Status | K::Attestation | K::Configure | K::Metrics)
        }
        EnclaveState::Ready => true,
    }
}

/// What only a `Ready` enclave has: the attested KMS client, the keyrings, and the
/// durable state. Key requests other than `CreateKeyring` further need the durable
/// state restored ([`Services::restored`]).
#[derive(Debug)]
pub struct Services {
    /// The KMS client that passed the attested round trip.
    pub kms: Arc<Kms>,
    /// Keyrings and the data-key cache.
    pub keyrings: Keyrings,
    /// Per-key policy version floors (rollback defence; checkpointed).
    pub policy_floors: PolicyFloors,
    /// Checkpoints, the store-wide stop, two-phase state changes.
    pub durable: Durable,
    /// Rolling limits: reservations and windows per key (checkpointed).
    pub limits: Limits,
}

impl Services {
    /// `Ok` once `Restore` is committed.
    ///
    /// # Errors
    /// [`WireError::NotReady`] before: a key request served before the state is back
    /// would forget every floor and a store-wide stop.
    pub fn restored(&self) -> Result<(), WireError> {
        if self.durable.is_restored() {
            Ok(())
        } else {
            Err(WireError::NotReady)
        }
    }
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
    /// The only KMS key, region and endpoint `Configure` may name (the binary always
    /// sets one; unit tests may leave it out).
    pin: Option<KmsPin>,
    /// The roots the KMS client's TLS is checked against.
    kms_trust: KmsTrust,
    /// The identity key that signs key statements (drawn at boot).
    identity: Identity,
    /// This boot's audit key and the audit chain head.
    audit: Arc<AuditLog>,
    /// Counters since boot ([`crate::metrics`]), shared with the KMS client.
    metrics: Arc<Counters>,
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
        let identity = Identity::generate(nsm.as_ref()).map_err(EnclaveError::Identity)?;
        let audit = Arc::new(AuditLog::generate(nsm.as_ref()).map_err(EnclaveError::Identity)?);
        Ok(Self {
            identity,
            audit,
            nsm,
            mode,
            pcrs,
            phase: RwLock::new(Phase::Booting),
            configuring: tokio::sync::Mutex::new(()),
            pin: None,
            kms_trust: KmsTrust::default(),
            metrics: Arc::default(),
        })
    }

    /// The counters `Request::Metrics` reports ([`crate::metrics`]).
    pub fn metrics(&self) -> &Arc<Counters> {
        &self.metrics
    }

    /// The identity key that signs key statements ([`crate::identity`]).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// This boot's audit key and the chain head ([`crate::audit`]).
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// Pins the KMS target: `Configure` is then refused unless it names exactly the
    /// pinned key ARN, its region and the pinned endpoint ([`KmsPin::check`]).
    ///
    /// Why: the parent chooses the key, the endpoint and the credentials. Unpinned, a
    /// compromised parent (or any host process that configures a freshly started
    /// enclave first) can configure a key in its own account whose policy lets it
    /// `Decrypt` without a `Recipient`, or an endpoint of its own that answers
    /// `GenerateDataKey` with a data key it chose, and so read every execution key
    /// sealed afterwards. The pin must come from the measured image (the enclave's
    /// command line in the EIF), never from the parent.
    pub fn with_kms_pin(mut self, pin: KmsPin) -> Self {
        self.pin = Some(pin);
        self
    }

    /// The pinned KMS target, if any.
    pub fn kms_pin(&self) -> Option<&KmsPin> {
        self.pin.as_ref()
    }

    /// SIMULATION ONLY: trust the kms-sim TLS CA certificate `pem` (and nothing else)
    /// for the KMS client's TLS, instead of the Amazon roots. Not compiled into a Nitro
    /// (`--no-default-features`) build; refused on [`Mode::Nitro`].
    ///
    /// # Errors
    /// [`EnclaveError::Simulation`] when the enclave runs on Nitro.
    #[cfg(feature = "simulation")]
    pub fn danger_trust_simulation_kms_ca(mut self, pem: String) -> Result<Self, EnclaveError> {
        if self.mode == Mode::Nitro {
            return Err(EnclaveError::Simulation(
                "a simulation KMS CA is never trusted on Nitro".into(),
            ));
        }
        self.kms_trust = KmsTrust::DangerSimulationCa(pem);
        Ok(self)
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

    /// The KMS target once `Ready` (reported by `Status`), else `None`.
    pub fn kms_target(&self) -> Option<KmsTarget> {
        match &*self.read_phase() {
            Phase::Ready(services) => Some(services.kms.target()),
            Phase::Booting | Phase::Configured => None,
        }
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
    /// When already `Ready`: the same region, endpoint and key id with other
    /// credentials replaces the KMS client's credentials once the new ones pass the
    /// attested round trip (cache, floors and keyrings kept; `dek_cache` ignored); the
    /// same credentials are a no-op.
    ///
    /// # Errors
    /// [`WireError::AlreadyConfigured`] when `Ready` and `kms` names another region,
    /// endpoint or key id (so only when the enclave was configured by someone else's
    /// settings); [`WireError::BadRequest`] for invalid settings, including a key,
    /// region or endpoint other than the pinned ones ([`KmsPin::check`], state
    /// unchanged); [`WireError::Kms`] /
    /// [`WireError::Attestation`] when the round trip fails (when `Ready`, the previous
    /// credentials stay in use).
    pub async fn configure(
        &self,
        kms: KmsConfig,
        dek_cache: DekCachePolicy,
    ) -> Result<(), WireError> {
        let _one_at_a_time = self.configuring.lock().await;
        if dek_cache.ttl_secs > MAX_DEK_TTL_SECS {
            return Err(WireError::BadRequest {
                message: format!("dek_cache.ttl_secs must be at most {MAX_DEK_TTL_SECS}"),
            });
        }
        let ready = match &*self.read_phase() {
            Phase::Ready(services) => Some(Arc::clone(services)),
            Phase::Booting | Phase::Configured => None,
        };
        if let Some(services) = ready {
            // Before the pin: a Ready enclave answers a Configure for another target
            // with AlreadyConfigured, which the parent takes as "configured by another".
            return refresh_credentials(&services.kms, &kms).await;
        }
        if let Some(pin) = &self.pin {
            if let Err(e) = pin.check(&kms) {
                tracing::warn!(error = %e, "Configure refused: not the pinned KMS target");
                return Err(e.to_wire());
            }
        }
        let client = Kms::new(&kms, self.mode, Arc::clone(&self.nsm), &self.kms_trust)
            .map_err(|e| e.to_wire())?
            .with_metrics(Arc::clone(&self.metrics));
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
            durable: Durable::default(),
            limits: Limits::default(),
        })));
        Ok(())
    }
}

/// A `Configure` received in `Ready`: new credentials for the same KMS target.
async fn refresh_credentials(kms: &Kms, config: &KmsConfig) -> Result<(), WireError> {
    if !kms.has_target(config) {
        return Err(WireError::AlreadyConfigured);
    }
    match kms.replace_credentials(&config.credentials).await {
        Ok(CredentialsUpdate::Unchanged) => Ok(()),
        Ok(CredentialsUpdate::Replaced) => {
            tracing::info!(
                access_key_id = %config.credentials.access_key_id,
                "KMS credentials replaced"
            );
            Ok(())
        }
        Err(e) => {
            tracing::warn!(error = %e, "new KMS credentials refused; keeping the previous ones");
            Err(e.to_wire())
        }
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
        assert_eq!(e.kms_target(), None);
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

    const ALL: [RequestKind; 9] = [
        RequestKind::Configure,
        RequestKind::Status,
        RequestKind::Attestation,
        RequestKind::CreateKeyring,
        RequestKind::GenerateKey,
        RequestKind::SetPolicy,
        RequestKind::CertifyKey,
        RequestKind::Sign,
        RequestKind::Metrics,
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
                    RequestKind::Status
                        | RequestKind::Attestation
                        | RequestKind::Configure
                        | RequestKind::Metrics
                );
                assert_eq!(accepts(state, kind), early, "{state:?} {kind:?}");
            }
        }
    }

    fn kms_config(key: &str, port: u16) -> KmsConfig {
        KmsConfig {
            region: "us-east-1".into(),
            endpoint_url: Some(format!("https://127.0.0.1:{port}")),
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

    fn pin(port: u16) -> KmsPin {
        let url = format!("https://127.0.0.1:{port}");
        KmsPin::from_flags(Some(PINNED), Some(&url), Mode::Simulation).unwrap()
    }

    #[tokio::test]
    async fn rejects_configure_with_another_kms_key_than_the_pinned_one() {
        let e = test_enclave().with_kms_pin(pin(1));
        assert_eq!(e.kms_pin().map(KmsPin::key_arn), Some(PINNED));
        for other in [
            "arn:aws:kms:us-east-1:444455556666:key/attacker",
            "alias/ekms",
            &PINNED[..PINNED.len() - 1],
        ] {
            let r = e.configure(kms_config(other, 1), CACHE).await;
            assert!(
                matches!(&r, Err(WireError::BadRequest { message }) if message.contains("kms_key_id")),
                "{other}: {r:?}"
            );
            assert_eq!(e.state(), EnclaveState::Booting, "{other}");
        }
    }

    #[tokio::test]
    async fn rejects_configure_with_another_endpoint_or_region_than_the_pinned_ones() {
        let e = test_enclave().with_kms_pin(pin(1));
        let mut other_region = kms_config(PINNED, 1);
        other_region.region = "eu-west-1".into();
        let other_port = kms_config(PINNED, 2);
        let mut plain = kms_config(PINNED, 1);
        plain.endpoint_url = Some("http://127.0.0.1:1".into());
        let mut none = kms_config(PINNED, 1);
        none.endpoint_url = None;
        for (what, c) in [
            ("region", other_region),
            ("endpoint_url", other_port),
            ("endpoint_url", plain),
            ("endpoint_url", none),
        ] {
            let r = e.configure(c, CACHE).await;
            assert!(
                matches!(&r, Err(WireError::BadRequest { message }) if message.contains(what)),
                "{what}: {r:?}"
            );
            assert_eq!(e.state(), EnclaveState::Booting, "{what}");
        }
    }

    #[cfg(feature = "simulation")]
    #[test]
    fn rejects_a_simulation_kms_ca_on_nitro() {
        let ca = attestation::SimulatedCa::generate().unwrap();
        let pcrs = attestation::pcrs_from_digest(b"nitro");
        let nsm = attestation::SimulatedNsm::new(&ca, pcrs).unwrap();
        let e = Enclave::new(Arc::new(nsm), Mode::Nitro).unwrap();
        assert!(e.danger_trust_simulation_kms_ca("pem".into()).is_err());
        let e = test_enclave().danger_trust_simulation_kms_ca("pem".into());
        assert!(e.is_ok());
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
        let e = test_enclave().with_kms_pin(pin(port));
        let r = e.configure(kms_config(PINNED, port), CACHE).await;
        assert!(matches!(r, Err(WireError::Kms { .. })), "{r:?}");
        assert_eq!(e.state(), EnclaveState::Configured);
    }

    fn dead_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// An enclave put straight into `Ready` with a client for `config` (no KMS call:
    /// the endpoint is a port nothing listens on).
    fn ready_enclave(config: &KmsConfig) -> (Enclave, Arc<Services>) {
        let e = test_enclave();
        let kms = Arc::new(
            Kms::new(
                config,
                Mode::Simulation,
                Arc::clone(e.nsm()),
                &KmsTrust::default(),
            )
            .unwrap(),
        );
        let services = Arc::new(Services {
            keyrings: Keyrings::new(Arc::clone(&kms), CACHE),
            kms,
            policy_floors: PolicyFloors::default(),
            durable: Durable::default(),
            limits: Limits::default(),
        });
        e.set_phase(Phase::Ready(Arc::clone(&services)));
        (e, services)
    }

    fn same_services(e: &Enclave, services: &Arc<Services>) -> bool {
        let now = e.admit(RequestKind::Sign).unwrap().unwrap();
        Arc::ptr_eq(&now, services)
    }

    #[tokio::test]
    async fn ready_configure_with_the_same_credentials_is_a_no_op() {
        let config = kms_config("k", dead_port());
        let (e, services) = ready_enclave(&config);
        // No KMS call is made (the endpoint is dead), and the cache policy is ignored.
        let other_cache = DekCachePolicy {
            ttl_secs: 1,
            max_uses: 0,
        };
        e.configure(config.clone(), other_cache).await.unwrap();
        assert_eq!(e.state(), EnclaveState::Ready);
        assert_eq!(e.kms_target(), Some(config.target()));
        assert!(same_services(&e, &services));
        assert_eq!(services.kms.access_key_id(), "a");
    }

    #[tokio::test]
    async fn rejects_ready_configure_that_retargets_kms() {
        let config = kms_config("k", dead_port());
        let (e, services) = ready_enclave(&config);
        let mut other_key = config.clone();
        other_key.kms_key_id = "another-key".into();
        let mut other_region = config.clone();
        other_region.region = "eu-west-1".into();
        let mut other_endpoint = config.clone();
        other_endpoint.endpoint_url = Some("https://127.0.0.1:1".into());
        let mut no_endpoint = config.clone();
        no_endpoint.endpoint_url = None;
        for mut changed in [other_key, other_region, other_endpoint, no_endpoint] {
            // Even with new credentials: a running enclave is never re-pointed.
            changed.credentials.access_key_id = "new".into();
            let r = e.configure(changed.clone(), CACHE).await;
            assert_eq!(r, Err(WireError::AlreadyConfigured), "{changed:?}");
        }
        assert!(same_services(&e, &services));
        assert_eq!(services.kms.access_key_id(), "a");
    }

    #[tokio::test]
    async fn rejects_ready_credentials_that_fail_the_round_trip_and_keeps_the_old_ones() {
        let config = kms_config("k", dead_port());
        let (e, services) = ready_enclave(&config);
        let mut fresh = config.clone();
        fresh.credentials.access_key_id = "new".into();
        let r = e.configure(fresh, CACHE).await;
        assert!(
            matches!(&r, Err(WireError::Kms { code, .. }) if code == "RequestFailed"),
            "{r:?}"
        );
        let mut empty = config.clone();
        empty.credentials.secret_access_key.clear();
        let r = e.configure(empty, CACHE).await;
        assert!(matches!(r, Err(WireError::BadRequest { .. })), "{r:?}");
        assert_eq!(e.state(), EnclaveState::Ready);
        assert!(same_services(&e, &services));
        assert_eq!(services.kms.access_key_id(), "a");
    }

    #[tokio::test]
    async fn rejects_ready_configure_with_another_key_than_the_pinned_one() {
        let port = dead_port();
        let config = kms_config(PINNED, port);
        let (e, services) = ready_enclave(&config);
        let e = e.with_kms_pin(pin(port));
        let mut other = config.clone();
        other.kms_key_id = "arn:aws:kms:us-east-1:444455556666:key/attacker".into();
        // A Ready enclave answers another target with AlreadyConfigured (the parent's
        // alarm), before the pin is looked at.
        let r = e.configure(other, CACHE).await;
        assert_eq!(r, Err(WireError::AlreadyConfigured));
        e.configure(config, CACHE).await.unwrap();
        assert!(same_services(&e, &services));
    }

    #[test]
    fn kinds_have_distinct_names() {
        let names: std::collections::BTreeSet<_> = ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), ALL.len());
        assert_eq!(RequestKind::of(&Request::Status), RequestKind::Status);
    }
}
