//! `ekms nitro doctor --simulation` against a running `ekms sim` (the real binaries):
//! the checks that mean something in simulation (the key policy's PCR0 read from
//! kms-sim, `/v1/health`, a fresh attestation document against the simulation root)
//! pass, the Nitro-only ones are reported `nitro_only`; and `ekms nitro policy` renders
//! from nitro-cli's JSON through the command line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{require_siblings, SimGuard, EKMS};
use serde_json::Value;

#[test]
fn doctor_in_simulation_reports_nitro_only_checks() {
    require_siblings();
    let tmp = tempfile::tempdir().unwrap();
    let state_dir = tmp.path().join("state");
    let mut sim = SimGuard::start(&state_dir);
    sim.wait_healthy(Duration::from_secs(120));
    let out = Command::new(EKMS)
        .args(["nitro", "doctor", "--simulation", "--state-dir"])
        .arg(&state_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        sim.diagnostics()
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["mode"], "simulation");
    assert_eq!(report["ok"], true);
    let status = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {report}"))["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for name in [
        "nitro_cli_and_allocator",
        "vsock_proxy",
        "instance_role",
        "enclave",
    ] {
        assert_eq!(status(name), "nitro_only", "{name}");
    }
    for name in ["key_policy_pcr0", "health", "attestation"] {
        assert_eq!(status(name), "pass", "{name}: {report}");
    }
    sim.terminate(Duration::from_secs(45));
}

#[test]
fn doctor_on_a_host_without_nitro_fails_with_fixes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(EKMS)
        .args(["--socket"])
        .arg(tmp.path().join("none.sock"))
        .args(["nitro", "doctor", "--nitro-cli"])
        .arg(tmp.path().join("no-nitro-cli"))
        .args([
            "--measurements",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/nitro/testdata/build-enclave.json"
            ),
        ])
        .args(["--imds-endpoint", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let first = &report["checks"][0];
    assert_eq!(first["name"], "nitro_cli_and_allocator");
    assert_eq!(first["status"], "fail");
    assert!(first["fix"]
        .as_str()
        .unwrap()
        .contains("aws-nitro-enclaves-cli"));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("ekms: doctor: failed: "));
}

#[test]
fn policy_command_renders_from_nitro_cli_json() {
    let tmp = tempfile::tempdir().unwrap();
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/src/nitro/testdata");
    let out = Command::new(EKMS)
        .args(["nitro", "policy", "--measurements"])
        .arg(format!("{data}/build-enclave.json"))
        .arg("--previous-measurements")
        .arg(format!("{data}/build-enclave-previous.json"))
        .args(["--account", "111122223333"])
        .args([
            "--instance-role",
            "arn:aws:iam::111122223333:role/ekms-parent-instance",
        ])
        .args([
            "--admin-role",
            "arn:aws:iam::111122223333:role/ekms-kms-admin",
        ])
        .arg("--out-dir")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["pcr0"].as_array().unwrap().len(), 2);
    for f in ["key-policy.json", "instance-role-policy.json"] {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(tmp.path().join(f)).unwrap()).unwrap();
        assert_eq!(v["Version"], "2012-10-17", "{f}");
    }
    // Without a role ARN: a usage error (exit 2).
    let bad = Command::new(EKMS)
        .args(["nitro", "policy", "--measurements"])
        .arg(format!("{data}/build-enclave.json"))
        .args([
            "--account",
            "111122223333",
            "--instance-role",
            "x",
            "--admin-role",
            "y",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
