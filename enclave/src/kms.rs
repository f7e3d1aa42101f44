//! The enclave's own AWS KMS client (DESIGN §2): `aws-sdk-kms` over rustls (ring), with
//! static credentials handed over by `Configure`, and the attested `Recipient` flow.
//!
//! The instance role's credentials expire (hours): a later `Configure` with the same
//! region, endpoint and key replaces them ([`Kms::replace_credentials`]). The new SDK
//! client must pass the attested round trip before it is swapped in, so a bad refresh
//! leaves the working client in place; everything else (the recipient session, and the
//! data-key cache and policy floors that hold this `Kms`) is kept.
//!
//! Every KMS call that returns key material carries a `Recipient` (an attestation
//! document whose `public_key` is an ephemeral RSA-2048 key), and every answer goes
//! through [`crate::recipient::open_kms_answer`], which fails closed on a `Plaintext`.
//! The RSA key and its document form a [`RecipientSession`], reused for
//! [`RECIPIENT_LIFETIME`] (RSA keygen costs ~94 ms, DESIGN §9) and then replaced.
//!
//! Data keys are bound to an `EncryptionContext` of `{"ekms:keyring": name,
//! "ekms:epoch": "<n>"}` (never anything secret: it shows in CloudTrail, DESIGN §3).
//!
//! Rule for maintainers: KMS errors reach the parent as [`WireError::Kms`] with the AWS
//! error code and message only; nothing from a request (credentials, blobs) goes into
//! an error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use attestation::{AttestationRequest, NsmProvider};
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::{BehaviorVersion, Region};
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyEncryptionMechanism, RecipientInfo};
use ekms_shared::metrics::KmsOperation;
use ekms_shared::{Credentials, KmsConfig, KmsTarget, Mode, WireError};
use tokio::sync::Mutex;

use crate::metrics::Counters;
use crate::recipient::{open_kms_answer, RecipientError, RecipientKey};
use crate::sealing::DataKey;

/// How long one recipient RSA key and its attestation document are reused (DESIGN §9).
/// Well under the five minutes KMS accepts a document for.
pub const RECIPIENT_LIFETIME: Duration = Duration::from_secs(60);

/// Attempts per KMS call (standard retry mode: the first try and two retries).
pub const KMS_MAX_ATTEMPTS: u32 = 3;

/// Deadline of one KMS call, all attempts included.
pub const KMS_OPERATION_TIMEOUT: Duration = Duration::from_secs(20);

/// `EncryptionContext` of the readiness data key ([`Kms::check_attested_round_trip`]):
/// `{"ekms:purpose": "readiness"}`. No keyring context, so its `CiphertextBlob` (which
/// is discarded anyway) can never be taken for a keyring's.
pub const CONTEXT_PURPOSE: &str = "ekms:purpose";
/// Value of [`CONTEXT_PURPOSE`] in the readiness round trip.
pub const READINESS_PURPOSE: &str = "readiness";

/// Length of an AES-256 data key, in bytes.
const DATA_KEY_LEN: usize = 32;

/// Longest error message passed on from KMS, in characters.
const MAX_MESSAGE_CHARS: usize = 512;

/// `EncryptionContext` key naming the keyring.
pub const CONTEXT_KEYRING: &str = "ekms:keyring";
/// `EncryptionContext` key naming the epoch (decimal).
pub const CONTEXT_EPOCH: &str = "ekms:epoch";

/// Why a KMS call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KmsError {
    /// `Configure` gave settings the enclave refuses (the text says which).
    #[error("invalid KMS configuration: {0}")]
    Config(String),
    /// KMS answered with an error (`code` is the AWS error code, e.g.
    /// `AccessDeniedException`, `ThrottlingException`).
    #[error("KMS error {code}: {message}")]
    Service {
        /// AWS error code.
        code: String,
        /// AWS error message.
        message: String,
    },
    /// The call failed without a KMS answer (connection, timeout, dispatch).
    #[error("KMS request failed: {0}")]
    Transport(String),
    /// The answer's `CiphertextForRecipient` was refused (or a `Plaintext` was present).
    #[error("KMS answer refused: {0}")]
    Recipient(#[from] RecipientError),
    /// The answer lacks a field or has one of the wrong size.
    #[error("KMS answer malformed: {0}")]
    Answer(&'static str),
    /// The attestation document for the `Recipient` could not be made.
    #[error("attestation for the KMS Recipient failed: {0}")]
    Attestation(String),
}

impl KmsError {
    /// The error as it crosses the wire: KMS and answer failures as
    /// [`WireError::Kms`] (code `RequestFailed`, `InvalidCiphertextForRecipient` or
    /// `InvalidAnswer` for failures that have no AWS code), attestation failures as
    /// [`WireError::Attestation`], configuration errors as [`WireError::BadRequest`].
    pub fn to_wire(&self) -> WireError {
        let kms = |code: &str, message: String| WireError::Kms {
            code: code.to_owned(),
            message,
        };
        match self {
            KmsError::Config(m) => WireError::BadRequest {
                message: format!("invalid KMS configuration: {m}"),
            },
            KmsError::Service { code, message } => kms(code, message.clone()),
            KmsError::Transport(m) => kms("RequestFailed", m.clone()),
            KmsError::Recipient(e) => kms("InvalidCiphertextForRecipient", e.to_string()),
            KmsError::Answer(m) => kms("InvalidAnswer", (*m).to_owned()),
            KmsError::Attestation(m) => WireError::Attestation { message: m.clone() },
        }
    }
}

/// Maps an SDK error to [`KmsError`], keeping only the AWS code and message.
fn sdk_error<E, R>(e: SdkError<E, R>) -> KmsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let clip = |s: &str| s.chars().take(MAX_MESSAGE_CHARS).collect::<String>();
    match e.code() {
        Some(code) => KmsError::Service {
            code: clip(code),
            message: clip(e.message().unwrap_or_default()),
        },
        None => KmsError::Transport(clip(&DisplayErrorContext(&e).to_string())),
    }
}

/// One ephemeral recipient key and the attestation document that carries its public
/// half. Shared by concurrent requests until it expires.
#[derive(Debug)]
pub struct RecipientSession {
    key: RecipientKey,
    document: Vec<u8>,
    created: Instant,
}

impl RecipientSession {
    /// Generates an RSA-2048 key and asks the NSM for a document with its SPKI DER in
    /// `public_key`. CPU-heavy (~100 ms): call it from a blocking thread.
    ///
    /// # Errors
    /// [`KmsError::Attestation`] if either step fails.
    pub fn create(nsm: &dyn NsmProvider) -> Result<Self, KmsError> {
        let key = RecipientKey::generate().map_err(|e| KmsError::Attestation(e.to_string()))?;
        let document = nsm
            .attestation_document(&AttestationRequest {
                user_data: None,
                nonce: None,
                public_key: Some(key.public_key_der()),
            })
            .map_err(|e| KmsError::Attestation(e.to_string()))?;
        Ok(Self {
            key,
            document,
            created: Instant::now(),
        })
    }

    fn is_fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.created) < RECIPIENT_LIFETIME
    }

    fn recipient_info(&self) -> RecipientInfo {
        RecipientInfo::builder()
            .key_encryption_algorithm(KeyEncryptionMechanism::RsaesOaepSha256)
            .attestation_document(Blob::new(self.document.clone()))
            .build()
    }
}

/// The enclave's KMS client for one `Configure`d key. Region, endpoint and key are
/// fixed for its lifetime; the credentials can be replaced
/// ([`Kms::replace_credentials`]).
pub struct Kms {
    /// The SDK client and the credentials it signs with, swapped together.
    current: std::sync::RwLock<Current>,
    region: String,
    endpoint_url: Option<String>,
    key_id: String,
    /// The roots the TLS connection to KMS is checked against.
    trust: KmsTrust,
    nsm: Arc<dyn NsmProvider>,
    session: Mutex<Option<Arc<RecipientSession>>>,
    /// Where calls, errors and latency are counted ([`crate::metrics`]).
    metrics: Arc<Counters>,
}

/// An SDK client and the `Configure` credentials it was built with.
struct Current {
    client: aws_sdk_kms::Client,
    credentials: Credentials,
}

/// What [`Kms::replace_credentials`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialsUpdate {
    /// The credentials were those already in use: nothing changed, no KMS call.
    Unchanged,
    /// A new client with the new credentials passed the attested round trip and is in
    /// use.
    Replaced,
}

impl std::fmt::Debug for Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kms")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Kms {
    /// Builds the client from `Configure`'s settings. Makes no network call.
    ///
    /// In [`Mode::Nitro`] the endpoint must be the regional KMS endpoint over HTTPS
    /// (`None`, or `https://kms.<region>.amazonaws.com[:port]`; FIPS is refused): an endpoint the
    /// parent picks could otherwise answer `GenerateDataKey` with a data key of its own
    /// choosing (DESIGN §2). In simulation any `https` URL is accepted (plain HTTP is
    /// refused). TLS is checked against `trust`'s roots only.
    ///
    /// Which endpoint and key a `Configure` may name at all is the enclave's
    /// [`KmsPin`], checked before this.
    ///
    /// # Errors
    /// [`KmsError::Config`] for an empty or malformed region, key id or endpoint, or an
    /// unusable trust store.
    pub fn new(
        config: &KmsConfig,
        mode: Mode,
        nsm: Arc<dyn NsmProvider>,
        trust: &KmsTrust,
    ) -> Result<Self, KmsError> {
        check_config(config, mode)?;
        let client = sdk_client(
            &config.region,
            config.endpoint_url.as_deref(),
            &config.credentials,
            trust,
        )?;
        Ok(Self {
            current: std::sync::RwLock::new(Current {
                client,
                credentials: config.credentials.clone(),
            }),
            region: config.region.clone(),
            endpoint_url: config.endpoint_url.clone(),
            key_id: config.kms_key_id.clone(),
            trust: trust.clone(),
            nsm,
            session: Mutex::new(None),
            metrics: Arc::default(),
        })
    }

    /// This client, counting its calls in `metrics` (the enclave's counters) instead of
    /// counters of its own.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Counters>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The counters this client's calls go to.
    pub fn metrics(&self) -> &Counters {
        &self.metrics
    }

    /// Runs one KMS call of `op` and counts it (latency, and the error kind on failure).
    async fn counted<T>(
        &self,
        op: KmsOperation,
        call: impl std::future::Future<Output = Result<T, KmsError>>,
    ) -> Result<T, KmsError> {
        let started = Instant::now();
        let result = call.await;
        self.metrics.kms_call(op, started.elapsed(), &result);
        result
    }

    /// Whether `config` names this client's region, endpoint and key id (its
    /// credentials are not compared).
    pub fn has_target(&self, config: &KmsConfig) -> bool {
        config.region == self.region
            && config.endpoint_url == self.endpoint_url
            && config.kms_key_id == self.key_id
    }

    /// The region, endpoint and key this client is for (no credentials).
    pub fn target(&self) -> KmsTarget {
        KmsTarget {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
            kms_key_id: self.key_id.clone(),
        }
    }

    /// The access key id of the credentials in use (not secret; for logs and tests).
    pub fn access_key_id(&self) -> String {
        self.read_current().credentials.access_key_id.clone()
    }

    fn read_current(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        // Writers replace the whole value in one assignment: a poisoned lock holds a
        // consistent client.
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The SDK client in use (a cheap handle; a call in flight keeps the client it
    /// started with).
    fn client(&self) -> aws_sdk_kms::Client {
        self.read_current().client.clone()
    }

    /// Replaces the credentials (the instance role's rotate every few hours): builds a
    /// client with `credentials`, proves it with the attested round trip
    /// ([`Kms::check_attested_round_trip`]), then swaps it in. Identical credentials
    /// are a no-op without a KMS call. The recipient session is kept. Callers
    /// serialise calls (the enclave holds its `Configure` lock).
    ///
    /// # Errors
    /// [`KmsError::Config`] for empty credentials; any [`KmsError`] of the round trip.
    /// On error the previous client stays in use.
    pub async fn replace_credentials(
        &self,
        credentials: &Credentials,
    ) -> Result<CredentialsUpdate, KmsError> {
        check_credentials(credentials)?;
        if self.read_current().credentials == *credentials {
            return Ok(CredentialsUpdate::Unchanged);
        }
        let client = sdk_client(
            &self.region,
            self.endpoint_url.as_deref(),
            credentials,
            &self.trust,
        )?;
        self.counted(KmsOperation::GenerateDataKey, self.round_trip(&client))
            .await?;
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = Current {
            client,
            credentials: credentials.clone(),
        };
        Ok(CredentialsUpdate::Replaced)
    }

    /// The current recipient session, creating one (on a blocking thread) when there is
    /// none or it is older than [`RECIPIENT_LIFETIME`]. Concurrent callers wait for one
    /// creation instead of each generating a key.
    ///
    /// # Errors
    /// [`KmsError::Attestation`] if the key or document cannot be made.
    pub async fn recipient_session(&self) -> Result<Arc<RecipientSession>, KmsError> {
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref().filter(|s| s.is_fresh(Instant::now())) {
            return Ok(Arc::clone(s));
        }
        let nsm = Arc::clone(&self.nsm);
        let session = tokio::task::spawn_blocking(move || RecipientSession::create(&*nsm))
            .await
            .map_err(|e| KmsError::Attestation(format!("recipient key task failed: {e}")))??;
        let session = Arc::new(session);
        *slot = Some(Arc::clone(&session));
        Ok(session)
    }

    /// The readiness round trip: a `GenerateDataKey` (AES_256) on the pinned key with
    /// a `Recipient`, opened with [`open_kms_answer`] and discarded (zeroized on drop).
    /// It proves what signing will need: the credentials, the endpoint and its TLS
    /// roots, the recipient flow, and above all that the key policy releases data keys
    /// to this image (its PCR0, and PCR8 where the policy asks for it). A wrong PCR0 or
    /// key policy shows here, at start, as KMS's `AccessDeniedException`, not at the
    /// first key creation. (`GenerateRandom`, the check before issue 9, touches no key:
    /// no key policy governs it, it needs an IAM permission of its own, and it proved
    /// nothing about the key.)
    ///
    /// # Errors
    /// Any [`KmsError`]; [`KmsError::Answer`] for a data key that is not 32 bytes.
    pub async fn check_attested_round_trip(&self) -> Result<(), KmsError> {
        self.counted(
            KmsOperation::GenerateDataKey,
            self.round_trip(&self.client()),
        )
        .await
    }

    /// [`Kms::check_attested_round_trip`] with `client`.
    async fn round_trip(&self, client: &aws_sdk_kms::Client) -> Result<(), KmsError> {
        let session = self.recipient_session().await?;
        let out = client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(CONTEXT_PURPOSE, READINESS_PURPOSE)
            .recipient(session.recipient_info())
            .send()
            .await
            .map_err(sdk_error)?;
        let plaintext = open_kms_answer(
            &session.key,
            out.ciphertext_for_recipient().map(Blob::as_ref),
            out.plaintext().map(Blob::as_ref),
        )?;
        // Checked like a keyring's data key, then dropped (DataKey zeroizes).
        let _discarded = data_key(&plaintext)?;
        Ok(())
    }

    /// `GenerateDataKey` (AES_256, the keyring's context, a `Recipient`): the plaintext
    /// data key (opened from `CiphertextForRecipient`) and the `CiphertextBlob` the
    /// parent stores.
    ///
    /// # Errors
    /// Any [`KmsError`]; [`KmsError::Answer`] without a `CiphertextBlob` or for a data
    /// key that is not 32 bytes.
    pub async fn generate_data_key(
        &self,
        keyring: &str,
        epoch: u32,
    ) -> Result<(DataKey, Vec<u8>), KmsError> {
        self.counted(
            KmsOperation::GenerateDataKey,
            self.generate_data_key_uncounted(keyring, epoch),
        )
        .await
    }

    async fn generate_data_key_uncounted(
        &self,
        keyring: &str,
        epoch: u32,
    ) -> Result<(DataKey, Vec<u8>), KmsError> {
        let session = self.recipient_session().await?;
        let out = self
            .client()
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(CONTEXT_KEYRING, keyring)
            .encryption_context(CONTEXT_EPOCH, epoch.to_string())
            .recipient(session.recipient_info())
            .send()
            .await
            .map_err(sdk_error)?;
        let blob = out
            .ciphertext_blob()
            .ok_or(KmsError::Answer(
                "GenerateDataKey returned no CiphertextBlob",
            ))?
            .as_ref()
            .to_vec();
        let plaintext = open_kms_answer(
            &session.key,
            out.ciphertext_for_recipient().map(Blob::as_ref),
            out.plaintext().map(Blob::as_ref),
        )?;
        Ok((data_key(&plaintext)?, blob))
    }

    /// `Decrypt` of a keyring's `CiphertextBlob` (this key id, the keyring's context, a
    /// `Recipient`): the plaintext data key.
    ///
    /// # Errors
    /// Any [`KmsError`] (a blob of another keyring or epoch fails in KMS with
    /// `InvalidCiphertextException`); [`KmsError::Answer`] for a data key that is not
    /// 32 bytes.
    pub async fn decrypt_data_key(
        &self,
        keyring: &str,
        epoch: u32,
        ciphertext_blob: &[u8],
    ) -> Result<DataKey, KmsError> {
        self.counted(
            KmsOperation::Decrypt,
            self.decrypt_data_key_uncounted(keyring, epoch, ciphertext_blob),
        )
        .await
    }

    async fn decrypt_data_key_uncounted(
        &self,
        keyring: &str,
        epoch: u32,
        ciphertext_blob: &[u8],
    ) -> Result<DataKey, KmsError> {
        let session = self.recipient_session().await?;
        let out = self
            .client()
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(ciphertext_blob.to_vec()))
            .encryption_context(CONTEXT_KEYRING, keyring)
            .encryption_context(CONTEXT_EPOCH, epoch.to_string())
            .recipient(session.recipient_info())
            .send()
            .await
            .map_err(sdk_error)?;
        let plaintext = open_kms_answer(
            &session.key,
            out.ciphertext_for_recipient().map(Blob::as_ref),
            out.plaintext().map(Blob::as_ref),
        )?;
        data_key(&plaintext)
    }
}

/// An SDK client for `region` (and `endpoint_url`, when set) signing with
/// `credentials`: rustls with ring trusting only `trust`'s roots (never the platform's
/// store), standard retries, an operation deadline.
///
/// # Errors
/// [`KmsError::Config`] if the trust store cannot be built (a PEM without a usable
/// certificate).
fn sdk_client(
    region: &str,
    endpoint_url: Option<&str>,
    credentials: &Credentials,
    trust: &KmsTrust,
) -> Result<aws_sdk_kms::Client, KmsError> {
    use aws_smithy_http_client::tls;
    let tls_context = tls::TlsContext::builder()
        .with_trust_store(trust.trust_store())
        .build()
        .map_err(|e| KmsError::Config(format!("KMS TLS trust store: {e}")))?;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .tls_context(tls_context)
        .build_https();
    let credentials = aws_credential_types::Credentials::new(
        credentials.access_key_id.clone(),
        credentials.secret_access_key.clone(),
        credentials.session_token.clone(),
        None,
        "ekms-configure",
    );
    let mut builder = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        // Explicitly the plain regional endpoint: the image maps and proxies only
        // kms.<region>.amazonaws.com (FIPS is refused, see `check_endpoint`).
        .use_fips(false)
        .use_dual_stack(false)
        .credentials_provider(credentials)
        .retry_config(RetryConfig::standard().with_max_attempts(KMS_MAX_ATTEMPTS))
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(KMS_OPERATION_TIMEOUT)
                .build(),
        )
        .http_client(http);
    if let Some(url) = endpoint_url {
        builder = builder.endpoint_url(url.to_owned());
    }
    Ok(aws_sdk_kms::Client::from_conf(builder.build()))
}

fn data_key(plaintext: &[u8]) -> Result<DataKey, KmsError> {
    if plaintext.len() != DATA_KEY_LEN {
        return Err(KmsError::Answer("data key is not 32 bytes"));
    }
    DataKey::from_slice(plaintext).map_err(|_| KmsError::Answer("data key is not 32 bytes"))
}

/// Checks a KMS key ARN given to pin the enclave's key ([`KmsPin`]):
/// `arn:<partition>:kms:<region>:<account>:key/<id>` with a 12-digit account, and
/// returns its region. An alias is refused: whoever administers the account can point
/// an alias at another key.
///
/// # Errors
/// [`KmsError::Config`] for anything else.
pub fn check_pinned_key_arn(arn: &str) -> Result<&str, KmsError> {
    let bad = || KmsError::Config("the pinned KMS key must be a full key ARN".into());
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("kms"), Some(region), Some(account), Some(key)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad());
    };
    let id = key.strip_prefix("key/").ok_or_else(bad)?;
    let ok = !partition.is_empty()
        && region_ok(region)
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(region)
    } else {
        Err(bad())
    }
}

/// Whether `region` looks like an AWS region: 1-32 lowercase letters, digits and '-'.
fn region_ok(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Refuses credentials without an access key id or secret, or with a byte that is not
/// visible ASCII. AWS credentials never have one; a CR, LF or NUL (from anyone who can
/// send `Configure`) reaches the SDK's signing step, which panics on a header value it
/// cannot encode, and the `Configure` is never answered.
fn check_credentials(credentials: &Credentials) -> Result<(), KmsError> {
    if credentials.access_key_id.is_empty() || credentials.secret_access_key.is_empty() {
        return Err(KmsError::Config("credentials are empty".into()));
    }
    let visible = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
    let token_ok = credentials.session_token.as_deref().is_none_or(visible);
    if !visible(&credentials.access_key_id) || !visible(&credentials.secret_access_key) || !token_ok
    {
        return Err(KmsError::Config(
            "credentials must be visible ASCII characters".into(),
        ));
    }
    Ok(())
}

/// Validates `Configure`'s KMS settings (see [`Kms::new`]).
fn check_config(config: &KmsConfig, mode: Mode) -> Result<(), KmsError> {
    if !region_ok(&config.region) {
        return Err(KmsError::Config(
            "region must be 1-32 lowercase letters, digits and '-'".into(),
        ));
    }
    if config.kms_key_id.is_empty() || config.kms_key_id.len() > 2048 {
        return Err(KmsError::Config("kms_key_id must be 1-2048 bytes".into()));
    }
    check_credentials(&config.credentials)?;
    let Some(url) = &config.endpoint_url else {
        return Ok(());
    };
    check_endpoint(url, &config.region, mode)
}

/// Checks an endpoint URL for `region`: on [`Mode::Nitro`] the regional KMS endpoint
/// (`https://kms.<region>.amazonaws.com[:port][/]`; FIPS endpoints are refused), in simulation any `https://`
/// URL (kms-sim serves TLS with a certificate of the simulation CA; plain HTTP would let
/// anything on the host answer).
///
/// # Errors
/// [`KmsError::Config`] naming what is wrong.
fn check_endpoint(url: &str, region: &str, mode: Mode) -> Result<(), KmsError> {
    let host_port = url
        .strip_prefix("https://")
        .map(|r| r.strip_suffix('/').unwrap_or(r))
        .ok_or_else(|| KmsError::Config("endpoint_url must be https://".into()))?;
    if mode == Mode::Simulation {
        return if host_port.is_empty() {
            Err(KmsError::Config("endpoint_url has no host".into()))
        } else {
            Ok(())
        };
    }
    let host = match host_port.split_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        Some(_) => return Err(KmsError::Config("endpoint_url has a bad port".into())),
        None => host_port,
    };
    if host == format!("kms-fips.{region}.amazonaws.com") {
        // No half-working option (issue 9): the image maps only kms.<region> to its
        // forwarder (deploy/enclave-init.sh) and the parent's vsock-proxy allows only
        // that host, so a FIPS endpoint would pass here and fail at the first call.
        return Err(KmsError::Config(format!(
            "FIPS endpoints are not supported: the enclave image maps and proxies only \
             kms.{region}.amazonaws.com (docs/DEPLOY.md, \"FIPS\")"
        )));
    }
    if host == format!("kms.{region}.amazonaws.com") {
        Ok(())
    } else {
        Err(KmsError::Config(
            "on Nitro, endpoint_url must be the regional KMS endpoint".into(),
        ))
    }
}

/// The Amazon Trust Services roots (Amazon Root CA 1-4, PEM) that AWS service
/// endpoints, KMS included, chain to. The only roots a Nitro build trusts for KMS.
const AMAZON_ROOT_CAS_PEM: &str = include_str!("amazon-root-cas.pem");

/// Which roots the enclave's TLS connection to KMS is checked against.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum KmsTrust {
    /// The Amazon Trust Services roots only ([`AMAZON_ROOT_CAS_PEM`]), checked by
    /// rustls-webpki; never the platform's certificate store. The only choice of a
    /// Nitro (`--no-default-features`) build.
    #[default]
    AmazonRoots,
    /// SIMULATION ONLY (feature `simulation`): the kms-sim TLS CA certificate (PEM)
    /// from the simulation CA directory, and nothing else. Whoever holds that CA's key
    /// (anyone who can read the simulation CA directory) can impersonate KMS.
    #[cfg(feature = "simulation")]
    DangerSimulationCa(String),
}

impl std::fmt::Debug for KmsTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KmsTrust::AmazonRoots => f.write_str("AmazonRoots"),
            #[cfg(feature = "simulation")]
            KmsTrust::DangerSimulationCa(_) => f.write_str("DangerSimulationCa"),
        }
    }
}

impl KmsTrust {
    /// A trust store with exactly these roots (no native roots).
    fn trust_store(&self) -> aws_smithy_http_client::tls::TrustStore {
        let pem = match self {
            KmsTrust::AmazonRoots => AMAZON_ROOT_CAS_PEM.as_bytes().to_vec(),
            #[cfg(feature = "simulation")]
            KmsTrust::DangerSimulationCa(pem) => pem.as_bytes().to_vec(),
        };
        aws_smithy_http_client::tls::TrustStore::empty()
            .with_native_roots(false)
            .with_pem_certificate(pem)
    }
}

/// The KMS target an enclave image is pinned to, from its own (measured) command line:
/// the key ARN, the region it names, and the endpoint. `Configure` must name exactly
/// these ([`KmsPin::check`]); the parent supplies only credentials and cache bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsPin {
    key_arn: String,
    region: String,
    endpoint_url: Option<String>,
}

impl KmsPin {
    /// The pin from the enclave's flags (`--kms-key-arn`, `--kms-endpoint`).
    ///
    /// - Both modes: the key ARN is mandatory and must be a full key ARN
    ///   ([`check_pinned_key_arn`]); the region is the ARN's.
    /// - [`Mode::Nitro`]: the endpoint is optional (`None`: the SDK's regional
    ///   endpoint) and, when given, must be the ARN region's KMS endpoint.
    /// - [`Mode::Simulation`]: the endpoint (kms-sim's `https://` URL) is mandatory: an
    ///   unpinned simulation endpoint is what let a host process configure its own KMS.
    ///
    /// # Errors
    /// [`KmsError::Config`] for a missing or malformed ARN or endpoint.
    pub fn from_flags(
        key_arn: Option<&str>,
        endpoint_url: Option<&str>,
        mode: Mode,
    ) -> Result<Self, KmsError> {
        let key_arn = key_arn.ok_or_else(|| {
            KmsError::Config(
                "--kms-key-arn is required: the enclave talks only to the KMS key its image \
                 names"
                    .into(),
            )
        })?;
        let region = check_pinned_key_arn(key_arn)?.to_owned();
        match (endpoint_url, mode) {
            (Some(url), _) => check_endpoint(url, &region, mode)?,
            (None, Mode::Nitro) => {}
            (None, Mode::Simulation) => {
                return Err(KmsError::Config(
                    "--kms-endpoint is required in simulation (kms-sim's https:// URL)".into(),
                ))
            }
        }
        Ok(Self {
            key_arn: key_arn.to_owned(),
            region,
            endpoint_url: endpoint_url.map(str::to_owned),
        })
    }

    /// The pinned key ARN.
    pub fn key_arn(&self) -> &str {
        &self.key_arn
    }

    /// The region of the pinned key ARN.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The pinned endpoint, if any.
    pub fn endpoint_url(&self) -> Option<&str> {
        self.endpoint_url.as_deref()
    }

    /// Refuses a `Configure` whose key, region or endpoint is not exactly the pinned
    /// one. With no pinned endpoint (Nitro), `config` must name none (the SDK's regional
    /// endpoint): any `Configure` the pin accepts then names the one target the enclave
    /// can be Ready for, so no one can make it Ready for another spelling of it.
    ///
    /// # Errors
    /// [`KmsError::Config`] saying which setting differs (the pinned values are not
    /// secret: they are in the image).
    pub fn check(&self, config: &KmsConfig) -> Result<(), KmsError> {
        if config.kms_key_id != self.key_arn {
            return Err(KmsError::Config(format!(
                "kms_key_id is not the KMS key this enclave is pinned to ({})",
                self.key_arn
            )));
        }
        if config.region != self.region {
            return Err(KmsError::Config(format!(
                "region is not the region of the pinned KMS key ({})",
                self.region
            )));
        }
        // Exactly the pinned endpoint, `None` included: a second spelling of the same
        // endpoint would make the enclave Ready for a target other than the parent's,
        // whose `Configure` would then be `AlreadyConfigured` (a sticky alarm).
        if config.endpoint_url != self.endpoint_url {
            return Err(KmsError::Config(format!(
                "endpoint_url is not the KMS endpoint this enclave is pinned to ({})",
                self.endpoint_url
                    .as_deref()
                    .unwrap_or("none: the SDK's regional endpoint")
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: Option<&str>) -> KmsConfig {
        KmsConfig {
            region: "us-east-1".into(),
            endpoint_url: endpoint.map(str::to_owned),
            kms_key_id: "arn:aws:kms:us-east-1:111122223333:key/x".into(),
            credentials: Credentials {
                access_key_id: "AKID".into(),
                secret_access_key: "SECRET-VALUE".into(),
                session_token: Some("TOKEN".into()),
            },
        }
    }

    #[test]
    fn accepts_regional_and_simulation_endpoints() {
        check_config(&config(None), Mode::Nitro).unwrap();
        check_config(
            &config(Some("https://kms.us-east-1.amazonaws.com")),
            Mode::Nitro,
        )
        .unwrap();
        check_config(
            &config(Some("https://kms.us-east-1.amazonaws.com:8443/")),
            Mode::Nitro,
        )
        .unwrap();
        check_config(&config(Some("https://127.0.0.1:4566")), Mode::Simulation).unwrap();
    }

    /// FIPS is refused with a clear error, in the pin (at start) and in `Configure`:
    /// the image neither maps nor proxies `kms-fips.<region>`.
    #[test]
    fn rejects_fips_endpoints_with_a_clear_error() {
        let r = check_config(
            &config(Some("https://kms-fips.us-east-1.amazonaws.com")),
            Mode::Nitro,
        );
        assert!(
            matches!(&r, Err(KmsError::Config(m)) if m.contains("FIPS endpoints are not supported")),
            "{r:?}"
        );
        let r = KmsPin::from_flags(
            Some(ARN),
            Some("https://kms-fips.eu-west-1.amazonaws.com"),
            Mode::Nitro,
        );
        assert!(
            matches!(&r, Err(KmsError::Config(m)) if m.contains("FIPS")),
            "{r:?}"
        );
    }

    #[test]
    fn rejects_plain_http_in_simulation() {
        for url in ["http://127.0.0.1:4566", "127.0.0.1:4566", "https://"] {
            assert!(
                check_config(&config(Some(url)), Mode::Simulation).is_err(),
                "{url}"
            );
        }
    }

    const ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd";

    #[test]
    fn pin_takes_its_region_from_the_arn() {
        let pin = KmsPin::from_flags(Some(ARN), None, Mode::Nitro).unwrap();
        assert_eq!(pin.region(), "eu-west-1");
        assert_eq!(pin.key_arn(), ARN);
        assert_eq!(pin.endpoint_url(), None);
        let pin = KmsPin::from_flags(
            Some(ARN),
            Some("https://kms.eu-west-1.amazonaws.com"),
            Mode::Nitro,
        )
        .unwrap();
        assert_eq!(
            pin.endpoint_url(),
            Some("https://kms.eu-west-1.amazonaws.com")
        );
        let pin = KmsPin::from_flags(Some(ARN), Some("https://127.0.0.1:4566"), Mode::Simulation)
            .unwrap();
        assert_eq!(pin.region(), "eu-west-1");
    }

    #[test]
    fn rejects_nitro_without_a_key_arn() {
        for mode in [Mode::Nitro, Mode::Simulation] {
            let r = KmsPin::from_flags(None, Some("https://kms.eu-west-1.amazonaws.com"), mode);
            assert!(
                matches!(&r, Err(KmsError::Config(m)) if m.contains("--kms-key-arn")),
                "{r:?}"
            );
        }
        assert!(KmsPin::from_flags(Some("alias/ekms"), None, Mode::Nitro).is_err());
    }

    #[test]
    fn rejects_pins_with_a_foreign_or_missing_endpoint() {
        for url in [
            "https://kms.us-east-1.amazonaws.com",
            "https://127.0.0.1:4566",
            "http://kms.eu-west-1.amazonaws.com",
        ] {
            assert!(
                KmsPin::from_flags(Some(ARN), Some(url), Mode::Nitro).is_err(),
                "{url}"
            );
        }
        assert!(KmsPin::from_flags(Some(ARN), None, Mode::Simulation).is_err());
        assert!(
            KmsPin::from_flags(Some(ARN), Some("http://127.0.0.1:4566"), Mode::Simulation).is_err()
        );
    }

    fn pinned_config(endpoint: Option<&str>) -> KmsConfig {
        let mut c = config(endpoint);
        c.region = "eu-west-1".into();
        c.kms_key_id = ARN.into();
        c
    }

    #[test]
    fn accepts_configure_naming_the_pinned_target() {
        let sim = "https://127.0.0.1:4566";
        let pin = KmsPin::from_flags(Some(ARN), Some(sim), Mode::Simulation).unwrap();
        pin.check(&pinned_config(Some(sim))).unwrap();
        let nitro = KmsPin::from_flags(Some(ARN), None, Mode::Nitro).unwrap();
        nitro.check(&pinned_config(None)).unwrap();
        let regional = "https://kms.eu-west-1.amazonaws.com";
        let pinned = KmsPin::from_flags(Some(ARN), Some(regional), Mode::Nitro).unwrap();
        pinned.check(&pinned_config(Some(regional))).unwrap();
    }

    /// Attack: with no endpoint in the image, a host process (any uid can reach the
    /// enclave's vsock port) configured a fresh enclave first with another spelling of
    /// the regional endpoint and credentials of any AWS account (the round trip is
    /// `GenerateRandom`, which no key policy governs). The enclave went Ready for a
    /// target that is not the parent's: the parent's `Configure` got `AlreadyConfigured`
    /// and its sticky alarm stopped signing until an operator restarted both, at every
    /// boot. A pin names exactly one target, so every `Configure` it accepts names the
    /// target the enclave would be Ready for.
    #[test]
    fn rejects_other_spellings_of_an_unpinned_regional_endpoint() {
        let nitro = KmsPin::from_flags(Some(ARN), None, Mode::Nitro).unwrap();
        for url in [
            "https://kms.eu-west-1.amazonaws.com",
            "https://kms.eu-west-1.amazonaws.com/",
            "https://kms.eu-west-1.amazonaws.com:443",
            "https://kms-fips.eu-west-1.amazonaws.com",
        ] {
            let r = nitro.check(&pinned_config(Some(url)));
            assert!(
                matches!(&r, Err(KmsError::Config(m)) if m.starts_with("endpoint_url")),
                "{url}: {r:?}"
            );
        }
        let regional = "https://kms.eu-west-1.amazonaws.com";
        let pinned = KmsPin::from_flags(Some(ARN), Some(regional), Mode::Nitro).unwrap();
        for other in [None, Some("https://kms.eu-west-1.amazonaws.com/")] {
            assert!(pinned.check(&pinned_config(other)).is_err(), "{other:?}");
        }
    }

    #[test]
    fn rejects_configure_naming_another_key_region_or_endpoint() {
        let sim = "https://127.0.0.1:4566";
        let pin = KmsPin::from_flags(Some(ARN), Some(sim), Mode::Simulation).unwrap();
        let mut other_key = pinned_config(Some(sim));
        other_key.kms_key_id = "arn:aws:kms:eu-west-1:444455556666:key/attacker".into();
        let mut other_region = pinned_config(Some(sim));
        other_region.region = "us-east-1".into();
        let other_port = pinned_config(Some("https://127.0.0.1:4567"));
        let plain = pinned_config(Some("http://127.0.0.1:4566"));
        let none = pinned_config(None);
        for (what, c) in [
            ("kms_key_id", other_key),
            ("region", other_region),
            ("endpoint_url", other_port),
            ("endpoint_url", plain),
            ("endpoint_url", none),
        ] {
            let r = pin.check(&c);
            assert!(
                matches!(&r, Err(KmsError::Config(m)) if m.starts_with(what)),
                "{what}: {r:?}"
            );
            assert!(matches!(
                KmsError::Config(String::new()).to_wire(),
                WireError::BadRequest { .. }
            ));
        }
    }

    #[test]
    fn trust_stores_hold_only_the_chosen_roots() {
        assert_eq!(AMAZON_ROOT_CAS_PEM.matches("BEGIN CERTIFICATE").count(), 4);
        assert_eq!(format!("{:?}", KmsTrust::default()), "AmazonRoots");
    }

    #[test]
    fn rejects_parent_chosen_endpoints_on_nitro() {
        for url in [
            "http://kms.us-east-1.amazonaws.com",
            "https://kms.us-east-1.amazonaws.com.evil.example",
            "https://evil.example/kms.us-east-1.amazonaws.com",
            "https://kms.eu-west-1.amazonaws.com",
            "https://kms.us-east-1.amazonaws.com:x",
            "https://127.0.0.1:4566",
        ] {
            assert!(
                matches!(
                    check_config(&config(Some(url)), Mode::Nitro),
                    Err(KmsError::Config(_))
                ),
                "{url}"
            );
        }
        assert!(check_config(&config(Some("ftp://x")), Mode::Simulation).is_err());
    }

    #[test]
    fn rejects_bad_region_key_and_credentials() {
        let mut c = config(None);
        c.region = "US East".into();
        assert!(check_config(&c, Mode::Simulation).is_err());
        let mut c = config(None);
        c.kms_key_id.clear();
        assert!(check_config(&c, Mode::Simulation).is_err());
        let mut c = config(None);
        c.credentials.secret_access_key.clear();
        assert!(check_config(&c, Mode::Simulation).is_err());
        for bad in ["AKID\r\nX: y", "AK\0ID", "AK ID", "AKID\u{e9}"] {
            let mut c = config(None);
            c.credentials.access_key_id = bad.into();
            assert!(check_config(&c, Mode::Simulation).is_err(), "{bad:?}");
            let mut c = config(None);
            c.credentials.session_token = Some(bad.into());
            assert!(check_config(&c, Mode::Simulation).is_err(), "{bad:?}");
            let mut c = config(None);
            c.credentials.secret_access_key = bad.into();
            assert!(check_config(&c, Mode::Simulation).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn accepts_key_arns_as_pins() {
        check_pinned_key_arn(
            "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        )
        .unwrap();
        check_pinned_key_arn("arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/mrk-1").unwrap();
    }

    #[test]
    fn rejects_aliases_and_malformed_pins() {
        for bad in [
            "",
            "alias/ekms",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:us-east-1:111122223333:alias/ekms",
            "arn:aws:kms:us-east-1:1111:key/x",
            "arn:aws:s3:us-east-1:111122223333:key/x",
            "arn:aws:kms:us-east-1:111122223333:key/",
            "arn:aws:kms:us-east-1:111122223333:key/x:y",
        ] {
            assert!(check_pinned_key_arn(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_map_to_wire_without_secrets() {
        let e = KmsError::Service {
            code: "ThrottlingException".into(),
            message: "slow down".into(),
        };
        assert_eq!(
            e.to_wire(),
            WireError::Kms {
                code: "ThrottlingException".into(),
                message: "slow down".into()
            }
        );
        assert!(matches!(
            KmsError::Recipient(RecipientError::PlaintextInAnswer).to_wire(),
            WireError::Kms { code, .. } if code == "InvalidCiphertextForRecipient"
        ));
        assert!(matches!(
            KmsError::Config("x".into()).to_wire(),
            WireError::BadRequest { .. }
        ));
        let debug = format!("{:?}", config(None));
        assert!(!debug.contains("SECRET-VALUE") && !debug.contains("TOKEN"));
    }

    #[test]
    fn rejects_data_keys_of_wrong_length() {
        assert!(data_key(&[1; 32]).is_ok());
        assert!(matches!(data_key(&[1; 16]), Err(KmsError::Answer(_))));
        assert!(matches!(data_key(&[]), Err(KmsError::Answer(_))));
    }
}
