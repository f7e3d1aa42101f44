//! The HTTP face of the emulator: the AWS KMS JSON 1.1 protocol on `POST /`
//! (`X-Amz-Target: TrentService.<Operation>`, `Content-Type:
//! application/x-amz-json-1.1`, blobs as base64, timestamps as epoch seconds) and the
//! SIMULATION-ONLY admin endpoint `GET`/`POST /_sim/faults`.
//!
//! One handler per operation, dispatched by a single `match` on [`Operation`]. SigV4
//! headers and `Content-Type` are accepted and not checked: the emulator has one caller, and key
//! policies' `Principal` is not evaluated (see [`crate::policy`]).
//!
//! Bodies are bounded ([`MAX_BODY_BYTES`]) and read under a deadline before any JSON
//! parsing; in-flight requests are capped ([`MAX_IN_FLIGHT`], beyond which the answer
//! is `ThrottlingException`, as KMS does under load).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tracing::Instrument;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::blob::{self, EncryptionContext, MAX_BLOB_LEN, MAX_PLAINTEXT_LEN};
use crate::error::{ApiError, ErrorKind};
use crate::faults::{FaultSettings, Faults};
use crate::policy::{default_policy, Decision, Policy, RequestContext};
use crate::recipient::{AttestedRecipient, RecipientVerifier};
use crate::store::{KeyStore, StoredKey};

/// Content type of KMS requests and answers.
pub const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// Largest request body read, in bytes (the largest real input, a 32 KiB policy or a
/// 6 KiB blob plus an attestation document, fits).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most requests handled at once; more answer `ThrottlingException`.
pub const MAX_IN_FLIGHT: usize = 256;
/// Deadline for reading one request body.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);
/// Largest `Description`, in characters (KMS CreateKey).
const MAX_DESCRIPTION_CHARS: usize = 8192;
/// Largest `NumberOfBytes` of GenerateDataKey and GenerateRandom.
const MAX_NUMBER_OF_BYTES: i64 = 1024;

/// Everything the handlers share.
#[derive(Debug)]
pub struct AppState {
    /// AWS region named in key ARNs.
    pub region: String,
    /// AWS account id named in key ARNs.
    pub account_id: String,
    /// The persistent keys.
    pub store: KeyStore,
    /// Verifier of `Recipient` attestation documents.
    pub recipients: RecipientVerifier,
    /// Injected faults.
    pub faults: Faults,
    in_flight: Semaphore,
}

impl AppState {
    /// Shared state for the handlers.
    pub fn new(
        region: String,
        account_id: String,
        store: KeyStore,
        recipients: RecipientVerifier,
        faults: Faults,
    ) -> Self {
        Self {
            region,
            account_id,
            store,
            recipients,
            faults,
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
        }
    }

    fn arn(&self, id: &Uuid) -> String {
        format!("arn:aws:kms:{}:{}:key/{id}", self.region, self.account_id)
    }
}

/// The router: `POST /` for KMS, `GET`/`POST /_sim/faults` for fault injection.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", post(kms_endpoint))
        .route("/_sim/faults", get(get_faults).post(post_faults))
        .with_state(state)
}

/// The KMS operations the emulator implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    CreateKey,
    DescribeKey,
    GetKeyPolicy,
    PutKeyPolicy,
    Encrypt,
    Decrypt,
    GenerateDataKey,
    GenerateRandom,
}

impl Operation {
    fn from_target(target: &str) -> Option<Self> {
        Some(match target.strip_prefix("TrentService.")? {
            "CreateKey" => Self::CreateKey,
            "DescribeKey" => Self::DescribeKey,
            "GetKeyPolicy" => Self::GetKeyPolicy,
            "PutKeyPolicy" => Self::PutKeyPolicy,
            "Encrypt" => Self::Encrypt,
            "Decrypt" => Self::Decrypt,
            "GenerateDataKey" => Self::GenerateDataKey,
            "GenerateRandom" => Self::GenerateRandom,
            _ => return None,
        })
    }
}

async fn kms_endpoint(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request_id = Uuid::new_v4();
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let span = tracing::info_span!("kms", %request_id, target = %target);
    let result = handle(&state, &target, body).instrument(span.clone()).await;
    let mut response = match result {
        Ok(answer) => {
            let mut response = (StatusCode::OK, answer.to_string()).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(JSON_CONTENT_TYPE),
            );
            response
        }
        Err(error) => {
            span.in_scope(|| tracing::info!(error = error.kind.type_name(), message = %error.message, "refused"));
            error.into_response()
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id.to_string()) {
        response.headers_mut().insert("x-amzn-RequestId", value);
    }
    response
}

async fn handle(state: &Arc<AppState>, target: &str, body: Body) -> Result<Value, ApiError> {
    let _permit = state
        .in_flight
        .try_acquire()
        .map_err(|_| ApiError::new(ErrorKind::Throttling, "Rate exceeded"))?;
    let operation = Operation::from_target(target).ok_or_else(|| {
        ApiError::new(
            ErrorKind::UnknownOperation,
            "The requested operation is unknown",
        )
    })?;
    state.faults.before_request().await?;
    let bytes = tokio::time::timeout(BODY_DEADLINE, to_bytes(body, MAX_BODY_BYTES))
        .await
        .map_err(|_| ApiError::validation("timed out reading the request body"))?
        .map_err(|_| {
            ApiError::validation(format!(
                "the request body is unreadable or larger than {MAX_BODY_BYTES} bytes"
            ))
        })?;
    let input: Value = if bytes.is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                ErrorKind::Serialization,
                format!(
                    "the body is not valid JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            )
        })?
    };
    if !input.is_object() {
        return Err(ApiError::new(
            ErrorKind::Serialization,
            "the body must be a JSON object",
        ));
    }
    tracing::debug!(?operation, "request");
    match operation {
        Operation::CreateKey => create_key(state, parse(input)?).await,
        Operation::DescribeKey => describe_key(state, parse(input)?),
        Operation::GetKeyPolicy => get_key_policy(state, parse(input)?),
        Operation::PutKeyPolicy => put_key_policy(state, parse(input)?).await,
        Operation::Encrypt => encrypt(state, parse(input)?),
        Operation::Decrypt => decrypt(state, parse(input)?),
        Operation::GenerateDataKey => generate_data_key(state, parse(input)?),
        Operation::GenerateRandom => generate_random(state, parse(input)?),
    }
}

/// Deserialises an operation's input. The message never echoes the input (it may
/// hold plaintext).
fn parse<T: DeserializeOwned>(input: Value) -> Result<T, ApiError> {
    serde_json::from_value(input).map_err(|_| {
        ApiError::new(
            ErrorKind::Serialization,
            "a member of the request has the wrong JSON type",
        )
    })
}

fn required<T>(value: Option<T>, member: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| {
        ApiError::validation(format!(
            "1 validation error detected: Value null at '{member}' failed to satisfy \
             constraint: Member must not be null"
        ))
    })
}

fn decode_blob(text: &str, member: &str) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    B64.decode(text).map(Zeroizing::new).map_err(|_| {
        ApiError::new(
            ErrorKind::Serialization,
            format!("'{member}' is not valid base64"),
        )
    })
}

fn check_algorithm(algorithm: Option<&str>) -> Result<(), ApiError> {
    match algorithm {
        None | Some("SYMMETRIC_DEFAULT") => Ok(()),
        Some("RSAES_OAEP_SHA_1" | "RSAES_OAEP_SHA_256" | "SM2PKE") => Err(ApiError::new(
            ErrorKind::InvalidKeyUsage,
            "This key supports only the SYMMETRIC_DEFAULT encryption algorithm",
        )),
        Some(_) => Err(ApiError::validation(
            "1 validation error detected: Value at 'encryptionAlgorithm' failed to satisfy \
             constraint: Member must satisfy enum value set",
        )),
    }
}

/// Finds a key by key id or key ARN. Aliases are not supported (NotFoundException).
fn resolve_key(state: &AppState, key_id: &str) -> Result<Arc<StoredKey>, ApiError> {
    let not_found = || ApiError::new(ErrorKind::NotFound, format!("Invalid keyId {key_id}"));
    let id_text = if key_id.starts_with("arn:") {
        let prefix = format!("arn:aws:kms:{}:{}:key/", state.region, state.account_id);
        key_id.strip_prefix(&prefix).ok_or_else(not_found)?
    } else {
        key_id
    };
    if id_text.len() != 36 {
        return Err(not_found());
    }
    let id = Uuid::try_parse(id_text).map_err(|_| not_found())?;
    state.store.get(&id).ok_or_else(|| {
        ApiError::new(
            ErrorKind::NotFound,
            format!("Key '{}' does not exist", state.arn(&id)),
        )
    })
}

/// Evaluates the key's policy for `request`; anything but Allow is AccessDenied.
fn authorize(
    state: &AppState,
    key: &StoredKey,
    request: &RequestContext,
    action: &str,
) -> Result<(), ApiError> {
    match key.policy.evaluate(request) {
        Decision::Allow => Ok(()),
        Decision::ExplicitDeny(sid) => {
            tracing::info!(?sid, action, key = %key.id, "explicit deny");
            Err(ApiError::access_denied(format!(
                "User: arn:aws:iam::{}:root is not authorized to perform: {action} on resource: {} with an explicit deny in a resource-based policy",
                state.account_id,
                state.arn(&key.id)
            )))
        }
        Decision::ImplicitDeny => Err(ApiError::access_denied(format!(
            "User: arn:aws:iam::{}:root is not authorized to perform: {action} on resource: {} because no resource-based policy allows the {action} action",
            state.account_id,
            state.arn(&key.id)
        ))),
    }
}

fn dry_run_check(dry_run: Option<bool>) -> Result<(), ApiError> {
    if dry_run == Some(true) {
        return Err(ApiError::new(
            ErrorKind::DryRunOperation,
            "The request would have succeeded, but the DryRun option is set.",
        ));
    }
    Ok(())
}

/// A request context for `action` with the encryption-context condition keys.
fn request_context(action: &str, context: &EncryptionContext) -> RequestContext {
    let mut request = RequestContext::new(action);
    for (key, value) in context {
        request.insert(&format!("kms:EncryptionContext:{key}"), value.clone());
    }
    request
}

fn key_metadata(state: &AppState, key: &StoredKey) -> Value {
    json!({
        "AWSAccountId": state.account_id,
        "KeyId": key.id.to_string(),
        "Arn": state.arn(&key.id),
        "CreationDate": key.creation_date,
        "Enabled": true,
        "Description": key.description,
        "KeyUsage": "ENCRYPT_DECRYPT",
        "KeyState": "Enabled",
        "Origin": "AWS_KMS",
        "KeyManager": "CUSTOMER",
        "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
        "KeySpec": "SYMMETRIC_DEFAULT",
        "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
        "MultiRegion": false,
    })
}

/// `Recipient` as sent: both members optional in the wire shape, checked in
/// [`RecipientVerifier::verify`].
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RecipientParam {
    attestation_document: Option<String>,
    key_encryption_algorithm: Option<String>,
}

fn verify_recipient(
    state: &AppState,
    recipient: Option<RecipientParam>,
) -> Result<Option<AttestedRecipient>, ApiError> {
    let Some(recipient) = recipient else {
        return Ok(None);
    };
    let document = match recipient.attestation_document.as_deref() {
        Some(text) => decode_blob(text, "Recipient.AttestationDocument")?,
        None => Zeroizing::new(Vec::new()),
    };
    let attested = state.recipients.verify(
        recipient.key_encryption_algorithm.as_deref(),
        &document,
        SystemTime::now(),
    )?;
    tracing::info!(image_sha384 = %attested.image_sha384(), "attested recipient");
    Ok(Some(attested))
}

/// Puts `plaintext` in the answer: as `CiphertextForRecipient` for an attested
/// recipient (and then never as `Plaintext`), else as `Plaintext`.
fn deliver(
    answer: &mut serde_json::Map<String, Value>,
    recipient: Option<&AttestedRecipient>,
    plaintext: &[u8],
) -> Result<(), ApiError> {
    match recipient {
        Some(recipient) => {
            let sealed = recipient.seal(plaintext)?;
            answer.insert("CiphertextForRecipient".into(), B64.encode(sealed).into());
        }
        None => {
            answer.insert("Plaintext".into(), B64.encode(plaintext).into());
        }
    }
    Ok(())
}

fn random_bytes(len: usize) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let mut bytes = Zeroizing::new(vec![0u8; len]);
    getrandom::fill(&mut bytes).map_err(|_| ApiError::internal("no randomness available"))?;
    Ok(bytes)
}

// ---- CreateKey -------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateKeyInput {
    policy: Option<String>,
    description: Option<String>,
    key_usage: Option<String>,
    key_spec: Option<String>,
    customer_master_key_spec: Option<String>,
    origin: Option<String>,
    multi_region: Option<bool>,
}

async fn create_key(state: &Arc<AppState>, input: CreateKeyInput) -> Result<Value, ApiError> {
    let description = input.description.unwrap_or_default();
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ApiError::validation(
            "Description must be at most 8192 characters",
        ));
    }
    if let Some(usage) = input.key_usage.as_deref() {
        if usage != "ENCRYPT_DECRYPT" {
            return Err(ApiError::new(
                ErrorKind::UnsupportedOperation,
                format!("KeyUsage {usage} is not supported by kms-sim (only ENCRYPT_DECRYPT)"),
            ));
        }
    }
    for spec in [
        input.key_spec.as_deref(),
        input.customer_master_key_spec.as_deref(),
    ]
    .into_iter()
    .flatten()
    {
        if spec != "SYMMETRIC_DEFAULT" {
            return Err(ApiError::new(
                ErrorKind::UnsupportedOperation,
                format!("KeySpec {spec} is not supported by kms-sim (only SYMMETRIC_DEFAULT)"),
            ));
        }
    }
    if input.origin.as_deref().is_some_and(|o| o != "AWS_KMS") {
        return Err(ApiError::new(
            ErrorKind::UnsupportedOperation,
            "only Origin AWS_KMS is supported by kms-sim",
        ));
    }
    if input.multi_region == Some(true) {
        return Err(ApiError::new(
            ErrorKind::UnsupportedOperation,
            "multi-Region keys are not supported by kms-sim",
        ));
    }
    let policy_text = input
        .policy
        .unwrap_or_else(|| default_policy(&state.account_id));
    let policy = parse_policy(&policy_text)?;
    let writer = state.clone();
    let key =
        tokio::task::spawn_blocking(move || writer.store.create(description, policy_text, policy))
            .await
            .map_err(|_| ApiError::internal("key creation task failed"))?
            .map_err(|e| {
                tracing::error!(error = %e, "persisting a new key failed");
                ApiError::internal("could not persist the new key")
            })?;
    tracing::info!(key = %key.id, attested = key.policy.mentions_attestation(), "key created");
    Ok(json!({ "KeyMetadata": key_metadata(state, &key) }))
}

fn parse_policy(text: &str) -> Result<Policy, ApiError> {
    Policy::parse(text).map_err(|e| match e {
        crate::policy::PolicyError::TooLarge(_) => ApiError::validation(e.to_string()),
        _ => ApiError::new(ErrorKind::MalformedPolicyDocument, e.to_string()),
    })
}

// ---- DescribeKey, GetKeyPolicy, PutKeyPolicy -------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeKeyInput {
    key_id: Option<String>,
}

fn describe_key(state: &AppState, input: DescribeKeyInput) -> Result<Value, ApiError> {
    let key = resolve_key(state, &required(input.key_id, "keyId")?)?;
    authorize(
        state,
        &key,
        &RequestContext::new("kms:DescribeKey"),
        "kms:DescribeKey",
    )?;
    Ok(json!({ "KeyMetadata": key_metadata(state, &key) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetKeyPolicyInput {
    key_id: Option<String>,
    policy_name: Option<String>,
}

fn check_policy_name(name: Option<&str>) -> Result<(), ApiError> {
    match name {
        None | Some("default") => Ok(()),
        Some(_) => Err(ApiError::new(
            ErrorKind::NotFound,
            "The only valid policy name is \"default\"",
        )),
    }
}

fn get_key_policy(state: &AppState, input: GetKeyPolicyInput) -> Result<Value, ApiError> {
    let key = resolve_key(state, &required(input.key_id, "keyId")?)?;
    check_policy_name(input.policy_name.as_deref())?;
    authorize(
        state,
        &key,
        &RequestContext::new("kms:GetKeyPolicy"),
        "kms:GetKeyPolicy",
    )?;
    Ok(json!({ "Policy": key.policy_text, "PolicyName": "default" }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutKeyPolicyInput {
    key_id: Option<String>,
    policy_name: Option<String>,
    policy: Option<String>,
}

async fn put_key_policy(
    state: &Arc<AppState>,
    input: PutKeyPolicyInput,
) -> Result<Value, ApiError> {
    let key = resolve_key(state, &required(input.key_id, "keyId")?)?;
    check_policy_name(input.policy_name.as_deref())?;
    let policy_text = required(input.policy, "policy")?;
    let policy = parse_policy(&policy_text)?;
    authorize(
        state,
        &key,
        &RequestContext::new("kms:PutKeyPolicy"),
        "kms:PutKeyPolicy",
    )?;
    let writer = state.clone();
    let id = key.id;
    tokio::task::spawn_blocking(move || writer.store.put_policy(&id, policy_text, policy))
        .await
        .map_err(|_| ApiError::internal("policy update task failed"))?
        .map_err(|e| {
            tracing::error!(error = %e, "persisting a key policy failed");
            ApiError::internal("could not persist the key policy")
        })?;
    tracing::info!(key = %id, "key policy replaced");
    Ok(json!({}))
}

// ---- Encrypt, Decrypt -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptInput {
    key_id: Option<String>,
    plaintext: Option<String>,
    encryption_context: Option<EncryptionContext>,
    encryption_algorithm: Option<String>,
    dry_run: Option<bool>,
}

fn encrypt(state: &AppState, input: EncryptInput) -> Result<Value, ApiError> {
    let key = resolve_key(state, &required(input.key_id, "keyId")?)?;
    let plaintext = decode_blob(&required(input.plaintext, "plaintext")?, "Plaintext")?;
    if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(ApiError::validation(
            "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: \
             Member must have length between 1 and 4096",
        ));
    }
    check_algorithm(input.encryption_algorithm.as_deref())?;
    let context = input.encryption_context.unwrap_or_default();
    authorize(
        state,
        &key,
        &request_context("kms:Encrypt", &context),
        "kms:Encrypt",
    )?;
    dry_run_check(input.dry_run)?;
    let blob = blob::seal(key.id, &key.material, &context, &plaintext)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(json!({
        "CiphertextBlob": B64.encode(blob),
        "KeyId": state.arn(&key.id),
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DecryptInput {
    ciphertext_blob: Option<String>,
    key_id: Option<String>,
    encryption_context: Option<EncryptionContext>,
    encryption_algorithm: Option<String>,
    recipient: Option<RecipientParam>,
    dry_run: Option<bool>,
}

fn decrypt(state: &AppState, input: DecryptInput) -> Result<Value, ApiError> {
    let blob = decode_blob(
        &required(input.ciphertext_blob, "ciphertextBlob")?,
        "CiphertextBlob",
    )?;
    if blob.is_empty() || blob.len() > MAX_BLOB_LEN {
        return Err(ApiError::validation(
            "1 validation error detected: Value at 'ciphertextBlob' failed to satisfy \
             constraint: Member must have length between 1 and 6144",
        ));
    }
    check_algorithm(input.encryption_algorithm.as_deref())?;
    let invalid = || {
        ApiError::new(
            ErrorKind::InvalidCiphertext,
            "The ciphertext is invalid, names an unknown key, or does not match the encryption context",
        )
    };
    let blob_key_id = blob::key_id(&blob).map_err(|_| invalid())?;
    let key = state.store.get(&blob_key_id).ok_or_else(invalid)?;
    if let Some(given) = input.key_id.as_deref() {
        if resolve_key(state, given)?.id != key.id {
            return Err(ApiError::new(
                ErrorKind::IncorrectKey,
                "The key ID in the request does not identify a KMS key that can perform this operation.",
            ));
        }
    }
    let recipient = verify_recipient(state, input.recipient)?;
    let context = input.encryption_context.unwrap_or_default();
    let mut request = request_context("kms:Decrypt", &context);
    if let Some(recipient) = &recipient {
        recipient.add_condition_keys(&mut request);
    }
    authorize(state, &key, &request, "kms:Decrypt")?;
    dry_run_check(input.dry_run)?;
    let plaintext = blob::open(&key.material, &context, &blob).map_err(|_| invalid())?;
    let mut answer = serde_json::Map::new();
    answer.insert("KeyId".into(), state.arn(&key.id).into());
    answer.insert("EncryptionAlgorithm".into(), "SYMMETRIC_DEFAULT".into());
    deliver(&mut answer, recipient.as_ref(), &plaintext)?;
    Ok(Value::Object(answer))
}

// ---- GenerateDataKey, GenerateRandom ---------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateDataKeyInput {
    key_id: Option<String>,
    key_spec: Option<String>,
    number_of_bytes: Option<i64>,
    encryption_context: Option<EncryptionContext>,
    recipient: Option<RecipientParam>,
    dry_run: Option<bool>,
}

fn number_of_bytes(n: i64) -> Result<usize, ApiError> {
    if (1..=MAX_NUMBER_OF_BYTES).contains(&n) {
        usize::try_from(n).map_err(|_| ApiError::internal("length conversion"))
    } else {
        Err(ApiError::validation(
            "1 validation error detected: Value at 'numberOfBytes' failed to satisfy \
             constraint: Member must have value between 1 and 1024",
        ))
    }
}

fn generate_data_key(state: &AppState, input: GenerateDataKeyInput) -> Result<Value, ApiError> {
    let key = resolve_key(state, &required(input.key_id, "keyId")?)?;
    let len =
        match (input.key_spec.as_deref(), input.number_of_bytes) {
            (Some("AES_256"), None) => 32,
            (Some("AES_128"), None) => 16,
            (Some(_), None) => return Err(ApiError::validation(
                "1 validation error detected: Value at 'keySpec' failed to satisfy constraint: \
                 Member must satisfy enum value set: [AES_256, AES_128]",
            )),
            (None, Some(n)) => number_of_bytes(n)?,
            (None, None) => {
                return Err(ApiError::validation(
                    "Please specify either number of bytes or key spec.",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(ApiError::validation(
                    "Please specify either number of bytes or key spec, not both.",
                ))
            }
        };
    let recipient = verify_recipient(state, input.recipient)?;
    let context = input.encryption_context.unwrap_or_default();
    let mut request = request_context("kms:GenerateDataKey", &context);
    if let Some(recipient) = &recipient {
        recipient.add_condition_keys(&mut request);
    }
    authorize(state, &key, &request, "kms:GenerateDataKey")?;
    dry_run_check(input.dry_run)?;
    let data_key = random_bytes(len)?;
    let blob = blob::seal(key.id, &key.material, &context, &data_key)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut answer = serde_json::Map::new();
    answer.insert("CiphertextBlob".into(), B64.encode(blob).into());
    answer.insert("KeyId".into(), state.arn(&key.id).into());
    deliver(&mut answer, recipient.as_ref(), &data_key)?;
    Ok(Value::Object(answer))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateRandomInput {
    number_of_bytes: Option<i64>,
    custom_key_store_id: Option<String>,
    recipient: Option<RecipientParam>,
}

/// GenerateRandom is not a key operation: key policies do not apply, and the emulator
/// has no IAM policies, so it is always allowed (with a verified `Recipient` if any).
fn generate_random(state: &AppState, input: GenerateRandomInput) -> Result<Value, ApiError> {
    if input.custom_key_store_id.is_some() {
        return Err(ApiError::new(
            ErrorKind::UnsupportedOperation,
            "custom key stores are not supported by kms-sim",
        ));
    }
    let len = number_of_bytes(required(input.number_of_bytes, "numberOfBytes")?)?;
    let recipient = verify_recipient(state, input.recipient)?;
    let bytes = random_bytes(len)?;
    let mut answer = serde_json::Map::new();
    deliver(&mut answer, recipient.as_ref(), &bytes)?;
    Ok(Value::Object(answer))
}

// ---- /_sim/faults -----------------------------------------------------------------

async fn get_faults(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(state.faults.snapshot()).into_response()
}

async fn post_faults(State(state): State<Arc<AppState>>, body: Body) -> Response {
    let Ok(bytes) = to_bytes(body, 4096).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response();
    };
    match serde_json::from_slice::<FaultSettings>(&bytes) {
        Ok(update) => {
            state.faults.apply(update);
            tracing::warn!(faults = ?state.faults.snapshot(), "fault injection changed");
            axum::Json(state.faults.snapshot()).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("expected {{\"latency_ms\":N,\"throttle_next\":N,\"fail_next\":N}}: {e}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_state(dir: &std::path::Path) -> Arc<AppState> {
        let ca = attestation::SimulatedCa::generate().unwrap();
        let root = dir.join("root.pem");
        std::fs::write(&root, ca.root_pem()).unwrap();
        crate::load(&crate::Config::new(
            dir.join("state"),
            Some(root),
            dir.join("tls"),
        ))
        .unwrap()
    }

    async fn call(state: &Arc<AppState>, operation: &str, body: &str) -> Result<Value, ApiError> {
        handle(
            state,
            &format!("TrentService.{operation}"),
            Body::from(body.to_owned()),
        )
        .await
    }

    #[tokio::test]
    async fn plaintext_data_key_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path());
        let created = call(&state, "CreateKey", "{}").await.unwrap();
        let arn = created["KeyMetadata"]["Arn"].as_str().unwrap().to_owned();
        let generated = call(
            &state,
            "GenerateDataKey",
            &json!({"KeyId": arn, "NumberOfBytes": 24, "EncryptionContext": {"a": "b"}})
                .to_string(),
        )
        .await
        .unwrap();
        assert!(generated.get("CiphertextForRecipient").is_none());
        let plaintext = B64
            .decode(generated["Plaintext"].as_str().unwrap())
            .unwrap();
        assert_eq!(plaintext.len(), 24);
        let decrypted = call(
            &state,
            "Decrypt",
            &json!({"CiphertextBlob": generated["CiphertextBlob"], "EncryptionContext": {"a": "b"}})
                .to_string(),
        )
        .await
        .unwrap();
        assert_eq!(decrypted["Plaintext"], generated["Plaintext"]);
        assert_eq!(decrypted["KeyId"], json!(arn));
    }

    #[tokio::test]
    async fn rejects_bad_bodies_and_targets() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path());
        let kind = |r: Result<Value, ApiError>| r.unwrap_err().kind;
        let huge = format!("{{\"NumberOfBytes\":1{}}}", " ".repeat(MAX_BODY_BYTES));
        assert_eq!(
            kind(call(&state, "GenerateRandom", &huge).await),
            ErrorKind::Validation
        );
        assert_eq!(
            kind(call(&state, "GenerateRandom", "{nope").await),
            ErrorKind::Serialization
        );
        assert_eq!(
            kind(call(&state, "GenerateRandom", "[]").await),
            ErrorKind::Serialization
        );
        assert_eq!(
            kind(call(&state, "GenerateRandom", r#"{"NumberOfBytes":"8"}"#).await),
            ErrorKind::Serialization
        );
        assert_eq!(
            kind(call(&state, "GenerateRandom", "{}").await),
            ErrorKind::Validation
        );
        assert_eq!(
            kind(call(&state, "ListKeys", "{}").await),
            ErrorKind::UnknownOperation
        );
        assert_eq!(
            kind(
                call(
                    &state,
                    "Encrypt",
                    r#"{"KeyId":"alias/x","Plaintext":"AA=="}"#
                )
                .await
            ),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind(call(&state, "CreateKey", r#"{"KeySpec":"RSA_2048"}"#).await),
            ErrorKind::UnsupportedOperation
        );
        assert_eq!(
            kind(call(&state, "CreateKey", r#"{"Policy":"{}"}"#).await),
            ErrorKind::MalformedPolicyDocument
        );
        assert_eq!(
            kind(call(&state, "Decrypt", r#"{"CiphertextBlob":"AAAA"}"#).await),
            ErrorKind::InvalidCiphertext
        );
        assert_eq!(
            kind(
                call(
                    &state,
                    "GenerateRandom",
                    r#"{"NumberOfBytes":8,"Recipient":{}}"#
                )
                .await
            ),
            ErrorKind::Validation
        );
    }

    #[tokio::test]
    async fn run_serves_in_process_and_shuts_down() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let ca = attestation::SimulatedCa::generate().unwrap();
        let root = dir.path().join("root.pem");
        std::fs::write(&root, ca.root_pem()).unwrap();
        let config =
            crate::Config::new(dir.path().join("state"), Some(root), dir.path().join("tls"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::run(listener, config, async {
            let _ = stopped.await;
        }));

        let body = r#"{"NumberOfBytes":16}"#;
        // `run` creates the TLS CA before it accepts connections.
        let root_file = dir.path().join("tls").join(crate::tls::TLS_ROOT_FILE);
        for _ in 0..200 {
            if root_file.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let root_pem = std::fs::read_to_string(&root_file).unwrap();
        let mut stream = crate::tls::test_connect(addr, &root_pem).await;
        let request = format!(
            "POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Target: TrentService.GenerateRandom\r\n\
             Content-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains("\"Plaintext\""), "{response}");

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[test]
    fn maps_targets_to_operations() {
        assert_eq!(
            Operation::from_target("TrentService.GenerateDataKey"),
            Some(Operation::GenerateDataKey)
        );
        assert_eq!(
            Operation::from_target("TrentService.Decrypt"),
            Some(Operation::Decrypt)
        );
    }

    #[test]
    fn rejects_unknown_targets() {
        for target in [
            "",
            "TrentService.",
            "TrentService.ScheduleKeyDeletion",
            "Other.Decrypt",
            "Decrypt",
        ] {
            assert_eq!(Operation::from_target(target), None, "{target}");
        }
    }

    #[test]
    fn number_of_bytes_bounds() {
        assert_eq!(number_of_bytes(1).unwrap(), 1);
        assert_eq!(number_of_bytes(1024).unwrap(), 1024);
    }

    #[test]
    fn rejects_number_of_bytes_out_of_range() {
        for n in [0, -1, 1025, i64::MAX] {
            assert_eq!(number_of_bytes(n).unwrap_err().kind, ErrorKind::Validation);
        }
    }

    #[test]
    fn rejects_asymmetric_algorithms() {
        assert!(check_algorithm(Some("SYMMETRIC_DEFAULT")).is_ok());
        assert_eq!(
            check_algorithm(Some("RSAES_OAEP_SHA_256"))
                .unwrap_err()
                .kind,
            ErrorKind::InvalidKeyUsage
        );
        assert_eq!(
            check_algorithm(Some("ROT13")).unwrap_err().kind,
            ErrorKind::Validation
        );
    }

    #[test]
    fn encryption_context_becomes_condition_keys() {
        let context = EncryptionContext::from([("keyring".to_string(), "main".to_string())]);
        let request = request_context("kms:Decrypt", &context);
        let mut expected = RequestContext::new("kms:Decrypt");
        expected.insert("kms:EncryptionContext:keyring", "main");
        assert_eq!(request, expected);
    }

    #[test]
    fn rejects_mismatched_condition_key_case_in_context() {
        let context = EncryptionContext::from([("Keyring".to_string(), "main".to_string())]);
        let mut other = RequestContext::new("kms:Decrypt");
        other.insert("kms:EncryptionContext:keyring", "main");
        assert_ne!(request_context("kms:Decrypt", &context), other);
    }
}
