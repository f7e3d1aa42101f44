//! End-to-end test of the attested KMS flow: the real `kms-sim` binary on a temporary
//! port, the real `aws-sdk-kms` client, documents from the simulated NSM (a fresh
//! simulation CA per test), and the enclave's `RecipientKey` opening
//! `CiphertextForRecipient`.

// Test helpers outside `#[test]` functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use attestation::{AttestationRequest, NsmProvider, SimulatedCa, SimulatedNsm};
use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyEncryptionMechanism, RecipientInfo};
use aws_sdk_kms::Client;
use ekms_enclave::recipient::RecipientKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ACCOUNT: &str = "111122223333";

/// A running `kms-sim` process, killed on drop.
struct SimGuard {
    child: Child,
    port: u16,
    /// The kms-sim TLS CA certificate (PEM), the only root the clients trust.
    tls_root_pem: String,
    // Kept open so the child's stdout never hits a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl SimGuard {
    fn start(state_dir: &Path, root_pem: &Path, extra: &[&str]) -> Self {
        let tls_dir = root_pem.parent().unwrap().join("tls");
        let mut child = Command::new(env!("CARGO_BIN_EXE_kms-sim"))
            .args(["--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state_dir)
            .arg("--attestation-root")
            .arg(root_pem)
            .arg("--tls-ca-dir")
            .arg(&tls_dir)
            .args(["--max-document-age", "300"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn kms-sim");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read first line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        let tls_root_pem =
            std::fs::read_to_string(tls_dir.join(kms_sim::tls::TLS_ROOT_FILE)).unwrap();
        Self {
            child,
            port,
            tls_root_pem,
            _stdout: stdout,
        }
    }

    fn client(&self) -> Client {
        self.client_trusting(&self.tls_root_pem)
    }

    /// A client for this kms-sim whose TLS trusts only `root_pem`.
    fn client_trusting(&self, root_pem: &str) -> Client {
        use aws_smithy_http_client::tls;
        let context = tls::TlsContext::builder()
            .with_trust_store(
                tls::TrustStore::empty()
                    .with_native_roots(false)
                    .with_pem_certificate(root_pem.as_bytes()),
            )
            .build()
            .unwrap();
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .tls_context(context)
            .build_https();
        let config = aws_sdk_kms::Config::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .endpoint_url(format!("https://127.0.0.1:{}", self.port))
            .region(aws_sdk_kms::config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                "AKIDSIMULATION",
                "secret",
                None,
                None,
                "static",
            ))
            .retry_config(aws_sdk_kms::config::retry::RetryConfig::disabled())
            .http_client(http)
            .build();
        Client::from_conf(config)
    }

    /// `POST /_sim/faults` with `body` over a raw HTTP/1.1 connection in TLS; the status
    /// line.
    async fn set_faults(&self, body: &str) -> String {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        let der = pem::parse(&self.tls_root_pem).unwrap().into_contents();
        roots.add(der.into()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        let request = format!(
            "POST /_sim/faults HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response.lines().next().unwrap_or_default().to_owned()
    }

    fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SimGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh simulation CA (root.pem in a temp dir), the simulated enclave measured from
/// this test executable, and a state directory.
struct Fixture {
    dir: tempfile::TempDir,
    ca: SimulatedCa,
    nsm: SimulatedNsm,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = SimulatedCa::generate().unwrap();
        std::fs::write(dir.path().join("root.pem"), ca.root_pem()).unwrap();
        let nsm = SimulatedNsm::new(&ca, enclave_pcrs().clone()).unwrap();
        Self { dir, ca, nsm }
    }

    fn root_pem(&self) -> PathBuf {
        self.dir.path().join("root.pem")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn start(&self, extra: &[&str]) -> SimGuard {
        SimGuard::start(&self.state_dir(), &self.root_pem(), extra)
    }

    fn pcr0_hex(&self) -> String {
        hex_encode(self.nsm.pcrs().get(&0).expect("PCR0"))
    }
}

/// PCRs of the stand-in enclave executable (this test binary), measured once: the
/// binary is large and hashing it is the slow part of each test.
fn enclave_pcrs() -> &'static BTreeMap<u16, Vec<u8>> {
    static PCRS: OnceLock<BTreeMap<u16, Vec<u8>>> = OnceLock::new();
    PCRS.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        attestation::measure_executable(&exe).unwrap()
    })
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn enclave_policy(pcr0_hex: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "admin", "Effect": "Allow",
             "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")},
             "Action": ["kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy"],
             "Resource": "*"},
            {"Sid": "enclave", "Effect": "Allow",
             "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:role/enclave")},
             "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
             "Resource": "*",
             "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": pcr0_hex}}}
        ]
    })
    .to_string()
}

fn recipient(document: Vec<u8>) -> RecipientInfo {
    RecipientInfo::builder()
        .key_encryption_algorithm(KeyEncryptionMechanism::RsaesOaepSha256)
        .attestation_document(Blob::new(document))
        .build()
}

fn document_for(nsm: &SimulatedNsm, key: &RecipientKey) -> Vec<u8> {
    nsm.attestation_document(&AttestationRequest {
        user_data: None,
        nonce: None,
        public_key: Some(key.public_key_der()),
    })
    .unwrap()
}

fn context() -> [(&'static str, &'static str); 2] {
    [("keyring", "main"), ("epoch", "1")]
}

async fn create_enclave_key(client: &Client, pcr0_hex: &str) -> String {
    let created = client
        .create_key()
        .policy(enclave_policy(pcr0_hex))
        .description("enclave data keys")
        .send()
        .await
        .expect("CreateKey");
    let metadata = created.key_metadata().expect("KeyMetadata");
    assert_eq!(metadata.key_state().map(|s| s.as_str()), Some("Enabled"));
    metadata.arn().expect("Arn").to_owned()
}

/// GenerateDataKey with a Recipient; returns (CiphertextBlob, opened data key).
async fn attested_data_key(
    client: &Client,
    key_arn: &str,
    nsm: &SimulatedNsm,
) -> (Vec<u8>, Vec<u8>) {
    let rsa = RecipientKey::generate().unwrap();
    let mut request = client
        .generate_data_key()
        .key_id(key_arn)
        .key_spec(DataKeySpec::Aes256)
        .recipient(recipient(document_for(nsm, &rsa)));
    for (k, v) in context() {
        request = request.encryption_context(k, v);
    }
    let out = request.send().await.expect("GenerateDataKey");
    assert!(
        out.plaintext().is_none(),
        "Plaintext must be absent with a Recipient"
    );
    assert_eq!(out.key_id(), Some(key_arn));
    let cfr = out
        .ciphertext_for_recipient()
        .expect("CiphertextForRecipient");
    let data_key = rsa.open(cfr.as_ref()).expect("open CiphertextForRecipient");
    assert_eq!(data_key.len(), 32);
    (
        out.ciphertext_blob().unwrap().as_ref().to_vec(),
        data_key.to_vec(),
    )
}

async fn attested_decrypt(
    client: &Client,
    blob: &[u8],
    nsm: &SimulatedNsm,
    ctx: &[(&str, &str)],
) -> Result<Vec<u8>, String> {
    let rsa = RecipientKey::generate().unwrap();
    let mut request = client
        .decrypt()
        .ciphertext_blob(Blob::new(blob.to_vec()))
        .recipient(recipient(document_for(nsm, &rsa)));
    for (k, v) in ctx {
        request = request.encryption_context(*k, *v);
    }
    match request.send().await {
        Ok(out) => {
            assert!(
                out.plaintext().is_none(),
                "Plaintext must be absent with a Recipient"
            );
            let cfr = out
                .ciphertext_for_recipient()
                .expect("CiphertextForRecipient");
            Ok(rsa.open(cfr.as_ref()).expect("open").to_vec())
        }
        Err(e) => Err(e.code().unwrap_or("<no code>").to_owned()),
    }
}

/// GenerateDataKey with the given recipient (or none); the KMS error code.
async fn gdk_error(client: &Client, key_arn: &str, recipient: Option<RecipientInfo>) -> String {
    gdk_refusal(client, key_arn, recipient).await.0
}

/// GenerateDataKey with the given recipient (or none); the KMS error code and message.
async fn gdk_refusal(
    client: &Client,
    key_arn: &str,
    recipient: Option<RecipientInfo>,
) -> (String, String) {
    let out = client
        .generate_data_key()
        .key_id(key_arn)
        .key_spec(DataKeySpec::Aes256)
        .set_recipient(recipient)
        .encryption_context("keyring", "main")
        .send()
        .await;
    match out {
        Ok(_) => ("<success>".into(), String::new()),
        Err(e) => (
            e.code().unwrap_or("<no code>").to_owned(),
            e.message().unwrap_or_default().to_owned(),
        ),
    }
}

/// The refusal an unverifiable document gets (same for every cause: no oracle).
const BAD_DOCUMENT: (&str, &str) = (
    "AccessDeniedException",
    "The attestation document in the Recipient parameter is not valid",
);

#[tokio::test]
async fn attested_generate_and_decrypt_round_trip() {
    let fx = Fixture::new();
    let sim = fx.start(&[]);
    let client = sim.client();
    let key_arn = create_enclave_key(&client, &fx.pcr0_hex()).await;
    assert!(key_arn.starts_with(&format!("arn:aws:kms:us-east-1:{ACCOUNT}:key/")));

    let described = client.describe_key().key_id(&key_arn).send().await.unwrap();
    let metadata = described.key_metadata().unwrap();
    assert_eq!(metadata.arn(), Some(key_arn.as_str()));
    assert_eq!(metadata.description(), Some("enclave data keys"));
    let policy = client
        .get_key_policy()
        .key_id(metadata.key_id())
        .send()
        .await
        .unwrap();
    assert_eq!(
        policy.policy(),
        Some(enclave_policy(&fx.pcr0_hex()).as_str())
    );

    let (blob, data_key) = attested_data_key(&client, &key_arn, &fx.nsm).await;
    // Decrypt under a fresh RSA key and a fresh document opens to the same data key.
    let again = attested_decrypt(&client, &blob, &fx.nsm, &context())
        .await
        .unwrap();
    assert_eq!(again, data_key);

    // A different encryption context fails.
    let wrong = attested_decrypt(
        &client,
        &blob,
        &fx.nsm,
        &[("keyring", "main"), ("epoch", "2")],
    )
    .await;
    assert_eq!(wrong.unwrap_err(), "InvalidCiphertextException");
    let none = attested_decrypt(&client, &blob, &fx.nsm, &[]).await;
    assert_eq!(none.unwrap_err(), "InvalidCiphertextException");

    // GenerateRandom with a Recipient answers CiphertextForRecipient only.
    let rsa = RecipientKey::generate().unwrap();
    let random = client
        .generate_random()
        .number_of_bytes(48)
        .recipient(recipient(document_for(&fx.nsm, &rsa)))
        .send()
        .await
        .unwrap();
    assert!(random.plaintext().is_none());
    let opened = rsa
        .open(random.ciphertext_for_recipient().unwrap().as_ref())
        .unwrap();
    assert_eq!(opened.len(), 48);
}

#[tokio::test]
async fn rejects_bad_recipients() {
    let fx = Fixture::new();
    let sim = fx.start(&[]);
    let client = sim.client();
    let key_arn = create_enclave_key(&client, &fx.pcr0_hex()).await;
    let rsa = RecipientKey::generate().unwrap();
    let request = AttestationRequest {
        user_data: None,
        nonce: None,
        public_key: Some(rsa.public_key_der()),
    };

    // A document whose PCR0 differs: valid signature, policy condition unmet.
    let mut other_pcrs: BTreeMap<u16, Vec<u8>> = fx.nsm.pcrs().clone();
    other_pcrs.insert(0, vec![0x42; 48]);
    let other_image = SimulatedNsm::new(&fx.ca, other_pcrs).unwrap();
    let doc = other_image.attestation_document(&request).unwrap();
    let (code, message) = gdk_refusal(&client, &key_arn, Some(recipient(doc))).await;
    assert_eq!(code, "AccessDeniedException");
    assert!(
        message.contains("not authorized to perform: kms:GenerateDataKey"),
        "{message}"
    );

    // Signed by another CA (same measurements).
    let other_ca = SimulatedCa::generate().unwrap();
    let foreign = SimulatedNsm::new(&other_ca, enclave_pcrs().clone()).unwrap();
    let doc = foreign.attestation_document(&request).unwrap();
    let (code, message) = gdk_refusal(&client, &key_arn, Some(recipient(doc))).await;
    assert_eq!((code.as_str(), message.as_str()), BAD_DOCUMENT);

    // Older than the allowed 300 s.
    let old = SystemTime::now() - Duration::from_secs(3600);
    let doc = fx.nsm.attestation_document_at(&request, old).unwrap();
    let (code, message) = gdk_refusal(&client, &key_arn, Some(recipient(doc))).await;
    assert_eq!((code.as_str(), message.as_str()), BAD_DOCUMENT);

    // One changed byte (in the signature at the end of the COSE_Sign1).
    let mut doc = fx.nsm.attestation_document(&request).unwrap();
    let last = doc.len() - 1;
    doc[last] ^= 0x01;
    let (code, message) = gdk_refusal(&client, &key_arn, Some(recipient(doc))).await;
    assert_eq!((code.as_str(), message.as_str()), BAD_DOCUMENT);

    // No Recipient at all: the attestation condition key is absent.
    assert_eq!(
        gdk_error(&client, &key_arn, None).await,
        "AccessDeniedException"
    );

    // A document without a public key.
    let doc = fx
        .nsm
        .attestation_document(&AttestationRequest {
            user_data: None,
            nonce: None,
            public_key: None,
        })
        .unwrap();
    assert_eq!(
        gdk_error(&client, &key_arn, Some(recipient(doc))).await,
        "ValidationException"
    );

    // Another key-encryption algorithm.
    let doc = fx.nsm.attestation_document(&request).unwrap();
    let bad_algorithm = RecipientInfo::builder()
        .key_encryption_algorithm(KeyEncryptionMechanism::from("RSAES_OAEP_SHA_1"))
        .attestation_document(Blob::new(doc))
        .build();
    assert_eq!(
        gdk_error(&client, &key_arn, Some(bad_algorithm)).await,
        "ValidationException"
    );

    // The good document still works on the same key (the refusals above were not luck).
    let doc = fx.nsm.attestation_document(&request).unwrap();
    assert_eq!(
        gdk_error(&client, &key_arn, Some(recipient(doc))).await,
        "<success>"
    );

    // Decrypt is gated the same way: no Recipient → AccessDenied.
    let (blob, _) = attested_data_key(&client, &key_arn, &fx.nsm).await;
    let mut plain = client.decrypt().ciphertext_blob(Blob::new(blob));
    for (k, v) in context() {
        plain = plain.encryption_context(k, v);
    }
    let err = plain.send().await.unwrap_err();
    assert_eq!(err.code(), Some("AccessDeniedException"));
}

#[tokio::test]
async fn rejects_unknown_keys_malformed_policies_and_wrong_key_ids() {
    let fx = Fixture::new();
    let sim = fx.start(&[]);
    let client = sim.client();

    let err = client
        .create_key()
        .policy(r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Condition":{"StringLike":{"a":"b"}}}}"#)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("MalformedPolicyDocumentException"));

    let err = client
        .describe_key()
        .key_id("11111111-2222-3333-4444-555555555555")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NotFoundException"));

    // Default policy: plaintext Encrypt/Decrypt work without a Recipient.
    let a = client.create_key().send().await.unwrap();
    let a = a.key_metadata().unwrap().key_id().to_owned();
    let b = client.create_key().send().await.unwrap();
    let b = b.key_metadata().unwrap().key_id().to_owned();
    let enc = client
        .encrypt()
        .key_id(&a)
        .plaintext(Blob::new(b"hello".to_vec()))
        .encryption_context("k", "v")
        .send()
        .await
        .unwrap();
    let blob = enc.ciphertext_blob().unwrap().clone();
    let dec = client
        .decrypt()
        .ciphertext_blob(blob.clone())
        .encryption_context("k", "v")
        .send()
        .await
        .unwrap();
    assert_eq!(dec.plaintext().unwrap().as_ref(), b"hello");
    assert!(dec.key_id().unwrap().ends_with(&a));
    let err = client
        .decrypt()
        .key_id(&b)
        .ciphertext_blob(blob)
        .encryption_context("k", "v")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("IncorrectKeyException"));

    // PutKeyPolicy then takes effect: after attaching the enclave policy, plaintext
    // GenerateDataKey is refused.
    client
        .put_key_policy()
        .key_id(&a)
        .policy_name("default")
        .policy(enclave_policy(&fx.pcr0_hex()))
        .send()
        .await
        .unwrap();
    let arn = format!("arn:aws:kms:us-east-1:{ACCOUNT}:key/{a}");
    assert_eq!(
        gdk_error(&client, &arn, None).await,
        "AccessDeniedException"
    );
}

#[tokio::test]
async fn data_key_survives_restart() {
    let fx = Fixture::new();
    let sim = fx.start(&[]);
    let client = sim.client();
    let key_arn = create_enclave_key(&client, &fx.pcr0_hex()).await;
    let (blob, data_key) = attested_data_key(&client, &key_arn, &fx.nsm).await;
    sim.kill();

    let sim = fx.start(&[]);
    let client = sim.client();
    let again = attested_decrypt(&client, &blob, &fx.nsm, &context())
        .await
        .unwrap();
    assert_eq!(again, data_key);
}

#[tokio::test]
async fn injected_faults_surface_as_kms_errors() {
    let fx = Fixture::new();
    let sim = fx.start(&["--inject-throttle-next", "1"]);
    let client = sim.client();

    let err = client
        .generate_random()
        .number_of_bytes(8)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ThrottlingException"));
    assert_eq!(
        client
            .generate_random()
            .number_of_bytes(8)
            .send()
            .await
            .unwrap()
            .plaintext()
            .unwrap()
            .as_ref()
            .len(),
        8
    );

    assert!(sim
        .set_faults(r#"{"throttle_next":1}"#)
        .await
        .contains("200"));
    let err = client
        .generate_random()
        .number_of_bytes(8)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ThrottlingException"));

    assert!(sim.set_faults(r#"{"fail_next":1}"#).await.contains("200"));
    let err = client
        .generate_random()
        .number_of_bytes(8)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("KMSInternalException"));
    let status = err.raw_response().map(|r| r.status().as_u16());
    assert_eq!(status, Some(500));

    assert!(client
        .generate_random()
        .number_of_bytes(8)
        .send()
        .await
        .is_ok());
    assert!(sim.set_faults(r#"{"bogus":1}"#).await.contains("400"));
}

#[tokio::test]
async fn rejects_clients_without_tls_or_trusting_another_ca() {
    let fx = Fixture::new();
    let sim = fx.start(&[]);
    // The CA persists across restarts: a restarted kms-sim is trusted by the same root.
    let first_root = sim.tls_root_pem.clone();
    sim.kill();
    let sim = fx.start(&[]);
    assert_eq!(sim.tls_root_pem, first_root);
    sim.client()
        .generate_random()
        .number_of_bytes(8)
        .send()
        .await
        .unwrap();

    // A client that trusts another CA cannot complete the handshake.
    let other = kms_sim::tls::TlsCa::generate().unwrap();
    let err = sim
        .client_trusting(other.root_pem())
        .generate_random()
        .number_of_bytes(8)
        .send()
        .await
        .unwrap_err();
    let text = format!("{}", aws_sdk_kms::error::DisplayErrorContext(&err));
    assert!(
        text.contains("certificate") || text.contains("UnknownIssuer"),
        "{text}"
    );

    // Plain HTTP gets no KMS answer.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", sim.port))
        .await
        .unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
}
