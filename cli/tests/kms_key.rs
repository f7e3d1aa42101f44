//! `ekms sim`'s KMS key management against the real `kms-sim` binary and the real
//! `aws-sdk-kms` client: the key is created once with the Nitro-style policy, kept when
//! the enclave's PCR0 is unchanged, re-pinned when it changed, and a remembered ARN that
//! kms-sim does not know is an error rather than a silent new key.

// The whole file is test code: clippy's `allow-unwrap-in-tests` covers only `#[test]`
// functions, not the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use ekms_cli::kms::{ensure_key, ensure_key_exists, policy_pcr0, sim_client, KeySetup};

/// A running kms-sim, killed on drop.
struct KmsSim {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
    _stdout: BufReader<ChildStdout>,
}

impl KmsSim {
    fn start(dir: &Path) -> Self {
        let bin = Path::new(env!("CARGO_BIN_EXE_ekms")).with_file_name("kms-sim");
        assert!(
            bin.is_file(),
            "{} is missing: run `cargo build --workspace` (or `make test`) first",
            bin.display()
        );
        let ca = attestation::SimulatedCa::load_or_create(&dir.join("ca")).unwrap();
        drop(ca);
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--state-dir"])
            .arg(dir.join("kms"))
            .arg("--attestation-root")
            .arg(dir.join("ca/root.pem"))
            .arg("--tls-ca-dir")
            .arg(dir.join("ca"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Self {
            child,
            port,
            dir: dir.to_path_buf(),
            _stdout: stdout,
        }
    }

    /// A client trusting only kms-sim's TLS CA.
    fn client(&self) -> aws_sdk_kms::Client {
        let root = self.dir.join("ca").join(ekms_cli::sim::KMS_TLS_ROOT_FILE);
        let pem = std::fs::read_to_string(root).unwrap();
        sim_client(&format!("https://127.0.0.1:{}", self.port), &pem).unwrap()
    }
}

impl Drop for KmsSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn creates_keeps_and_repins_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let sim = KmsSim::start(dir.path());
    let client = sim.client();
    let arn_file = dir.path().join("kms-key-arn");
    let pcr_a = "aa".repeat(48);
    let pcr_b = "bb".repeat(48);

    let created = ensure_key(&client, &arn_file, &pcr_a).await.unwrap();
    let KeySetup::Created { arn } = created.clone() else {
        panic!("expected a new key, got {created:?}");
    };
    assert_eq!(std::fs::read_to_string(&arn_file).unwrap().trim(), arn);
    let stored = client.get_key_policy().key_id(&arn).send().await.unwrap();
    assert_eq!(
        policy_pcr0(stored.policy().unwrap()).as_deref(),
        Some(pcr_a.as_str())
    );

    // Same measurement (in upper case: the condition is case-insensitive): unchanged.
    let again = ensure_key(&client, &arn_file, &pcr_a.to_uppercase())
        .await
        .unwrap();
    assert_eq!(again, KeySetup::Unchanged { arn: arn.clone() });

    // A rebuilt enclave: the policy is re-pinned, the key stays the same.
    let repinned = ensure_key(&client, &arn_file, &pcr_b).await.unwrap();
    assert_eq!(
        repinned,
        KeySetup::PolicyUpdated {
            arn: arn.clone(),
            old_pcr0: Some(pcr_a.clone())
        }
    );
    let stored = client.get_key_policy().key_id(&arn).send().await.unwrap();
    assert_eq!(
        policy_pcr0(stored.policy().unwrap()).as_deref(),
        Some(pcr_b.as_str())
    );
}

#[tokio::test]
async fn creates_the_key_before_the_enclave_starts_and_pins_pcr0_later() {
    let dir = tempfile::tempdir().unwrap();
    let sim = KmsSim::start(dir.path());
    let client = sim.client();
    let arn_file = dir.path().join("kms-key-arn");
    let (arn, created) = ensure_key_exists(&client, &arn_file).await.unwrap();
    assert!(created);
    let stored = client.get_key_policy().key_id(&arn).send().await.unwrap();
    assert_eq!(policy_pcr0(stored.policy().unwrap()), None);
    assert_eq!(
        ensure_key_exists(&client, &arn_file).await.unwrap(),
        (arn.clone(), false)
    );
    let pcr0 = "ab".repeat(48);
    let setup = ensure_key(&client, &arn_file, &pcr0).await.unwrap();
    assert!(matches!(
        setup,
        KeySetup::PolicyUpdated { old_pcr0: None, .. }
    ));
    let stored = client.get_key_policy().key_id(&arn).send().await.unwrap();
    assert_eq!(policy_pcr0(stored.policy().unwrap()), Some(pcr0));
}

#[tokio::test]
async fn rejects_plain_http_to_kms_sim() {
    let dir = tempfile::tempdir().unwrap();
    let sim = KmsSim::start(dir.path());
    let root = dir.path().join("ca").join(ekms_cli::sim::KMS_TLS_ROOT_FILE);
    let pem = std::fs::read_to_string(root).unwrap();
    let plain = sim_client(&format!("http://127.0.0.1:{}", sim.port), &pem).unwrap();
    assert!(plain
        .generate_random()
        .number_of_bytes(8)
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn rejects_a_remembered_key_that_kms_does_not_know() {
    let dir = tempfile::tempdir().unwrap();
    let sim = KmsSim::start(dir.path());
    let client = sim.client();
    let arn_file = dir.path().join("kms-key-arn");
    let ghost = "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-4000-8000-000000000000";
    std::fs::write(&arn_file, format!("{ghost}\n")).unwrap();
    let err = ensure_key(&client, &arn_file, &"aa".repeat(48))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("DescribeKey") && text.contains("NotFoundException"),
        "{text}"
    );
    // The file is left as it was: no silent replacement of the sealing key.
    assert_eq!(std::fs::read_to_string(&arn_file).unwrap().trim(), ghost);
}
