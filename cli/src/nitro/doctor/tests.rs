//! Each check passes and fails against stand-ins: a fake `nitro-cli` (a shell script),
//! a fake allocator file, a fake `/proc`, a fake IMDS on loopback, and policies rendered
//! by `ekms nitro policy`. The `health` and `attestation` checks run for real against
//! `ekms sim` in `tests/nitro_doctor.rs`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use super::checks;
use super::Status;
use crate::nitro::key_policy::{render_key_policy, PolicyInputs};
use crate::nitro::measurements::Measurements;

const MEASUREMENTS: &str = include_str!("../testdata/build-enclave.json");
const PREVIOUS: &str = include_str!("../testdata/build-enclave-previous.json");

fn pcr0() -> String {
    Measurements::parse(MEASUREMENTS).unwrap().pcr0().to_owned()
}

/// A fake nitro-cli in `dir`: `--version` prints a version, `describe-enclaves` prints
/// `enclaves` (JSON).
fn fake_nitro_cli(dir: &Path, enclaves: &str) -> PathBuf {
    std::fs::write(dir.join("enclaves.json"), enclaves).unwrap();
    let path = dir.join("nitro-cli");
    std::fs::write(
        &path,
        "#!/bin/sh\ncase \"$1\" in\n  --version) echo 'Nitro CLI 1.4.2' ;;\n  \
         describe-enclaves) cat \"$(dirname \"$0\")/enclaves.json\" ;;\n  *) exit 64 ;;\nesac\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn enclave_json(flags: &str, cid: u64, pcr0: &str) -> String {
    serde_json::json!([{
        "EnclaveName": "ekms", "EnclaveID": "i-0abc-enc0123", "ProcessID": 4242,
        "EnclaveCID": cid, "NumberOfCPUs": 2, "CPUIDs": [1, 3], "MemoryMiB": 2048,
        "State": "RUNNING", "Flags": flags,
        "Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": pcr0, "PCR1": "11", "PCR2": "22"}
    }])
    .to_string()
}

#[test]
fn nitro_cli_and_allocator_pass_and_fail() {
    let dir = tempfile::tempdir().unwrap();
    let cli = fake_nitro_cli(dir.path(), "[]");
    let alloc = dir.path().join("allocator.yaml");
    std::fs::write(&alloc, "---\n# comment\nmemory_mib: 4096\ncpu_count: 2\n").unwrap();
    let c = checks::nitro_cli_and_allocator(&cli, &alloc, 2, 2048);
    assert_eq!(c.status, Status::Pass, "{c:?}");
    assert!(c.detail.contains("Nitro CLI 1.4.2"));
    std::fs::write(&alloc, "memory_mib: 512\ncpu_pool: 2,3\n").unwrap();
    let c = checks::nitro_cli_and_allocator(&cli, &alloc, 2, 2048);
    assert_eq!(c.status, Status::Fail, "{c:?}");
    assert!(c.fix.unwrap().contains("memory_mib: 2048"));
    let c = checks::nitro_cli_and_allocator(&dir.path().join("none"), &alloc, 2, 2048);
    assert_eq!(c.status, Status::Fail);
    let c = checks::nitro_cli_and_allocator(&cli, &dir.path().join("none.yaml"), 2, 2048);
    assert_eq!(c.status, Status::Fail);
}

fn fake_proc(dir: &Path, procs: &[(u32, &[&str])]) -> PathBuf {
    let root = dir.join("proc");
    for (pid, argv) in procs {
        let p = root.join(pid.to_string());
        std::fs::create_dir_all(&p).unwrap();
        let mut raw = argv.join("\0");
        raw.push('\0');
        std::fs::write(p.join("cmdline"), raw).unwrap();
    }
    std::fs::create_dir_all(root.join("self")).unwrap();
    root
}

#[test]
fn vsock_proxy_pass_and_fail() {
    let dir = tempfile::tempdir().unwrap();
    let proc_root = fake_proc(
        dir.path(),
        &[
            (1, &["/usr/lib/systemd/systemd"]),
            (
                77,
                &[
                    "/usr/bin/vsock-proxy",
                    "8000",
                    "kms.eu-west-1.amazonaws.com",
                    "443",
                    "--config",
                    "/etc/nitro_enclaves/vsock-proxy.yaml",
                ],
            ),
        ],
    );
    let c = checks::vsock_proxy(&proc_root, Some("eu-west-1"));
    assert_eq!(c.status, Status::Pass, "{c:?}");
    let c = checks::vsock_proxy(&proc_root, Some("us-east-1"));
    assert_eq!(c.status, Status::Fail, "{c:?}");
    assert!(c.detail.contains("kms.eu-west-1"), "{c:?}");
    assert!(c.fix.unwrap().contains("kms.us-east-1.amazonaws.com:443"));
    let empty = fake_proc(&dir.path().join("empty"), &[(1, &["/sbin/init"])]);
    assert_eq!(
        checks::vsock_proxy(&empty, Some("eu-west-1")).status,
        Status::Fail
    );
    assert_eq!(
        checks::vsock_proxy(&proc_root, None).status,
        Status::Skipped
    );
}

/// A fake IMDSv2 on loopback: a token for `PUT /latest/api/token`, then `role` (or
/// 404) for the credentials listing when the token is sent back.
async fn fake_imds(role: Option<&'static str>) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            let (status, body) = if req.starts_with("PUT /latest/api/token ")
                && req.contains("X-aws-ec2-metadata-token-ttl-seconds: ")
            {
                ("200 OK", "TOKEN-1".to_owned())
            } else if req.starts_with("GET /latest/meta-data/iam/security-credentials/ ")
                && req.contains("X-aws-ec2-metadata-token: TOKEN-1")
            {
                match role {
                    Some(r) => ("200 OK", r.to_owned()),
                    None => ("404 Not Found", String::new()),
                }
            } else {
                ("401 Unauthorized", String::new())
            };
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn instance_role_pass_and_fail() {
    let imds = fake_imds(Some("ekms-parent-instance")).await;
    let c = checks::instance_role(
        &imds,
        Some("arn:aws:iam::111122223333:role/ekms-parent-instance"),
    )
    .await;
    assert_eq!(c.status, Status::Pass, "{c:?}");
    let c = checks::instance_role(&imds, None).await;
    assert_eq!(c.status, Status::Pass, "{c:?}");
    let c = checks::instance_role(&imds, Some("other-role")).await;
    assert_eq!(c.status, Status::Fail, "{c:?}");
    let none = fake_imds(None).await;
    let c = checks::instance_role(&none, None).await;
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.contains("no role"), "{c:?}");
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    assert_eq!(
        checks::instance_role(&dead, None).await.status,
        Status::Fail
    );
}

fn rendered(texts: &[&str]) -> String {
    let images = texts
        .iter()
        .map(|t| Measurements::parse(t).unwrap())
        .collect();
    let inputs = PolicyInputs::new(
        images,
        "111122223333",
        "arn:aws:iam::111122223333:role/instance",
        "arn:aws:iam::111122223333:role/admin",
        false,
        None,
    )
    .unwrap();
    render_key_policy(&inputs).to_string()
}

#[test]
fn key_policy_pcr0_pass_and_fail() {
    let c = checks::key_policy_pcr0(&rendered(&[MEASUREMENTS]), &pcr0());
    assert_eq!(c.status, Status::Pass, "{c:?}");
    let c = checks::key_policy_pcr0(&rendered(&[MEASUREMENTS, PREVIOUS]), &pcr0().to_uppercase());
    assert_eq!(c.status, Status::Pass, "{c:?}");
    assert!(c.detail.contains("rollout"), "{c:?}");
    // The policy of the previous image only: the new EIF would never get ready.
    let c = checks::key_policy_pcr0(&rendered(&[PREVIOUS]), &pcr0());
    assert_eq!(c.status, Status::Fail, "{c:?}");
    // An allow without the explicit deny (the policy the old docs/nitro.md showed, minus
    // its deny) is not enough.
    let mut allow_only: serde_json::Value =
        serde_json::from_str(&rendered(&[MEASUREMENTS])).unwrap();
    allow_only["Statement"]
        .as_array_mut()
        .unwrap()
        .retain(|s| s["Effect"] == "Allow");
    let c = checks::key_policy_pcr0(&allow_only.to_string(), &pcr0());
    assert_eq!(c.status, Status::Fail, "{c:?}");
    // The default key policy (root may do everything): data keys without attestation.
    let c = checks::key_policy_pcr0(
        r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#,
        &pcr0(),
    );
    assert_eq!(c.status, Status::Fail, "{c:?}");
    assert_eq!(
        checks::key_policy_pcr0("nope", &pcr0()).status,
        Status::Fail
    );
}

#[test]
fn enclave_pass_and_fail() {
    let dir = tempfile::tempdir().unwrap();
    let pcr0 = pcr0();
    let cli = fake_nitro_cli(dir.path(), &enclave_json("NONE", 16, &pcr0));
    let c = checks::enclave(&cli, "ekms", 16, &pcr0);
    assert_eq!(c.status, Status::Pass, "{c:?}");
    for (json, what) in [
        (enclave_json("DEBUG_MODE", 16, &pcr0), "debug"),
        (enclave_json("NONE", 17, &pcr0), "CID"),
        (enclave_json("NONE", 16, &"ab".repeat(48)), "PCR0"),
        ("[]".to_owned(), "no enclave"),
        ("not json".to_owned(), "JSON"),
    ] {
        let cli = fake_nitro_cli(dir.path(), &json);
        let c = checks::enclave(&cli, "ekms", 16, &pcr0);
        assert_eq!(c.status, Status::Fail, "{what}: {c:?}");
        assert!(c.detail.contains(what), "{what}: {c:?}");
    }
}

#[tokio::test]
async fn health_and_attestation_fail_without_a_parent() {
    let dir = tempfile::tempdir().unwrap();
    let client = crate::client::ApiClient::new(dir.path().join("none.sock"));
    let c = checks::health(&client, ekms_shared::Mode::Nitro, &pcr0()).await;
    assert_eq!(c.status, Status::Fail, "{c:?}");
    let c = checks::attestation(&client, crate::args::Root::Aws, None, Some(pcr0()), None).await;
    assert_eq!(c.status, Status::Fail, "{c:?}");
}

#[test]
fn report_is_not_ok_when_a_check_fails() {
    let pass = super::Check::pass("a", "fine");
    let fail = super::Check::fail("b", "broken", "fix it");
    let r = super::report("nitro", &[pass.clone(), super::Check::nitro_only("c")]);
    assert_eq!(r["ok"], true);
    assert_eq!(r["checks"][1]["status"], "nitro_only");
    let r = super::report("nitro", &[pass, fail]);
    assert_eq!(r["ok"], false);
    assert_eq!(r["checks"][1]["fix"], "fix it");
}
