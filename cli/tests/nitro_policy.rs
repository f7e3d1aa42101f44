//! The key policy `ekms nitro policy` renders, loaded into kms-sim (in-process, real
//! `aws-sdk-kms` client, real simulated attestation documents): data keys go to a
//! document with the measured PCR0 (either one during a rollout), and are refused to a
//! document with another PCR0, to a debug-mode document (all-zero PCRs), and to a
//! request without a `Recipient`; `Encrypt` (planting a data key of one's choosing) and
//! `CreateGrant` are refused to everyone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use attestation::{AttestationRequest, NsmProvider as _, SimulatedCa, SimulatedNsm};
use aws_sdk_kms::error::ProvideErrorMetadata as _;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyEncryptionMechanism, RecipientInfo};
use aws_sdk_kms::Client;
use ekms_cli::nitro::key_policy::{render_key_policy, PolicyInputs};
use ekms_cli::nitro::measurements::Measurements;
use ekms_enclave::recipient::RecipientKey;

const ACCOUNT: &str = "111122223333";
const CURRENT: &str = include_str!("../src/nitro/testdata/build-enclave.json");
const PREVIOUS: &str = include_str!("../src/nitro/testdata/build-enclave-previous.json");

/// kms-sim in-process on loopback; its admin client and the attestation CA.
async fn start_kms_sim(dir: &Path) -> (Client, SimulatedCa) {
    let ca = SimulatedCa::generate().unwrap();
    let root = dir.join("root.pem");
    std::fs::write(&root, ca.root_pem()).unwrap();
    let tls_dir = dir.join("tls");
    let tls_root = kms_sim::tls::TlsCa::load_or_create(&tls_dir)
        .unwrap()
        .root_pem()
        .to_owned();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let config = kms_sim::Config::new(dir.join("kms"), Some(root), tls_dir);
    tokio::spawn(async move {
        kms_sim::run(tcp, config, std::future::pending::<()>())
            .await
            .unwrap();
    });
    let client =
        ekms_cli::kms::sim_client(&format!("https://127.0.0.1:{port}"), &tls_root).unwrap();
    (client, ca)
}

fn pcrs_with_pcr0(pcr0_hex: &str) -> BTreeMap<u16, Vec<u8>> {
    BTreeMap::from([
        (0, hex::decode(pcr0_hex).unwrap()),
        (1, vec![1; 48]),
        (2, vec![2; 48]),
    ])
}

/// `GenerateDataKey` on `key` with a Recipient document from `nsm` (or none): `Ok` with
/// the opened data key's length, or the KMS error code.
async fn generate(client: &Client, key: &str, nsm: Option<&SimulatedNsm>) -> Result<usize, String> {
    let rsa = RecipientKey::generate().unwrap();
    let mut request = client
        .generate_data_key()
        .key_id(key)
        .key_spec(DataKeySpec::Aes256)
        .encryption_context("ekms:purpose", "readiness");
    if let Some(nsm) = nsm {
        let document = nsm
            .attestation_document(&AttestationRequest {
                user_data: None,
                nonce: None,
                public_key: Some(rsa.public_key_der()),
            })
            .unwrap();
        request = request.recipient(
            RecipientInfo::builder()
                .key_encryption_algorithm(KeyEncryptionMechanism::RsaesOaepSha256)
                .attestation_document(Blob::new(document))
                .build(),
        );
    }
    let out = request
        .send()
        .await
        .map_err(|e| e.code().unwrap_or("no code").to_owned())?;
    assert!(out.plaintext().is_none(), "KMS must not answer Plaintext");
    let opened = rsa
        .open(out.ciphertext_for_recipient().unwrap().as_ref())
        .unwrap();
    Ok(opened.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_key_policy_grants_only_the_measured_images() {
    let dir = tempfile::tempdir().unwrap();
    let (client, ca) = start_kms_sim(dir.path()).await;
    let current = Measurements::parse(CURRENT).unwrap();
    let previous = Measurements::parse(PREVIOUS).unwrap();
    let inputs = PolicyInputs::new(
        vec![current.clone(), previous.clone()],
        ACCOUNT,
        "arn:aws:iam::111122223333:role/ekms-parent-instance",
        "arn:aws:iam::111122223333:role/ekms-kms-admin",
        false,
        None,
    )
    .unwrap();
    let policy = render_key_policy(&inputs).to_string();
    let created = client.create_key().policy(policy).send().await.unwrap();
    let key = created.key_metadata().unwrap().arn().unwrap().to_owned();

    let measured = SimulatedNsm::new(&ca, pcrs_with_pcr0(current.pcr0())).unwrap();
    let old = SimulatedNsm::new(&ca, pcrs_with_pcr0(previous.pcr0())).unwrap();
    let other = SimulatedNsm::new(&ca, pcrs_with_pcr0(&"ab".repeat(48))).unwrap();
    // Debug mode: every PCR reads as zeros.
    let debug = SimulatedNsm::new(&ca, BTreeMap::new()).unwrap();

    assert_eq!(generate(&client, &key, Some(&measured)).await, Ok(32));
    assert_eq!(generate(&client, &key, Some(&old)).await, Ok(32));
    for (what, nsm) in [
        ("another PCR0", Some(&other)),
        ("debug mode", Some(&debug)),
        ("no Recipient", None),
    ] {
        assert_eq!(
            generate(&client, &key, nsm).await,
            Err("AccessDeniedException".to_owned()),
            "{what}"
        );
    }

    // Planting a data key of one's choosing, or delegating, is refused to everyone.
    let encrypt = client
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new(vec![7; 32]))
        .send()
        .await;
    assert_eq!(encrypt.unwrap_err().code(), Some("AccessDeniedException"));

    // The admin statement still lets the administrator read and replace the policy.
    let stored = client.get_key_policy().key_id(&key).send().await.unwrap();
    assert!(stored.policy().unwrap().contains(current.pcr0()));
    let single = PolicyInputs::new(
        vec![current.clone()],
        ACCOUNT,
        "arn:aws:iam::111122223333:role/ekms-parent-instance",
        "arn:aws:iam::111122223333:role/ekms-kms-admin",
        false,
        None,
    )
    .unwrap();
    client
        .put_key_policy()
        .key_id(&key)
        .policy(render_key_policy(&single).to_string())
        .send()
        .await
        .unwrap();
    // After the rollout: the previous image is refused.
    assert_eq!(generate(&client, &key, Some(&measured)).await, Ok(32));
    assert_eq!(
        generate(&client, &key, Some(&old)).await,
        Err("AccessDeniedException".to_owned())
    );
}
