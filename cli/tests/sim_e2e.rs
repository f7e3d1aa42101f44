//! End-to-end test of `ekms sim` and the API subcommands: the real `ekms`, `kms-sim`,
//! `ekms-enclave` and `ekms-parent` binaries on a temporary state directory. Covers
//! start, health, key creation (both algorithms), attestation verification against the
//! simulation root, enclave restart after a kill, refusal of a second start, a clean
//! stop on SIGTERM (all three children gone), and a restart that finds the keys again.
//!
//! The sibling binaries are built by `cargo build --workspace` (the Makefile's `test`
//! target builds every target first); the test fails with that hint if they are missing.

// The whole file is test code: clippy's `allow-unwrap-in-tests` covers only `#[test]`
// functions, not the helpers beside them, where a panic is just as much a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{alive, ekms, ok_json, require_siblings, SimGuard, EKMS};
use serde_json::Value;

#[test]
fn sim_runs_serves_restarts_the_enclave_stops_and_keeps_keys() {
    require_siblings();
    let tmp = tempfile::tempdir().unwrap();
    let state_dir = tmp.path().join("state");

    // --- first start ---------------------------------------------------------------
    let mut sim = SimGuard::start(&state_dir);
    sim.wait_healthy(Duration::from_secs(120));
    let socket = sim.socket();
    let status = sim.status();
    let pcr0 = status["pcr0"].as_str().unwrap().to_owned();
    assert_eq!(pcr0.len(), 96);
    assert!(status["kms_key_arn"]
        .as_str()
        .unwrap()
        .starts_with("arn:aws:kms:us-east-1:"));
    let arn_before = std::fs::read_to_string(state_dir.join("kms-key-arn")).unwrap();
    let root_before = std::fs::read_to_string(state_dir.join("ca/root.pem")).unwrap();

    // Health reports the PCRs of the enclave binary that ekms sim measured.
    let health = ok_json(&socket, &["health"]);
    assert_eq!(health["pcrs"]["0"], pcr0.as_str());

    // The enclave's own log events reach the parent's log through the log socket
    // (--log-listen / --enclave-log), as on Nitro where the enclave console is dark.
    let parent_log = state_dir.join("logs/parent.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = strip_ansi(&std::fs::read_to_string(&parent_log).unwrap_or_default());
        if text
            .lines()
            .any(|l| l.contains(" enclave:") && l.contains("enclave_target=\"ekms_enclave"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no forwarded enclave line in the parent's log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Keys of both algorithms.
    let evm = ok_json(
        &socket,
        &[
            "keys",
            "create",
            "--algorithm",
            "secp256k1",
            "--label",
            "evm-bot",
        ],
    );
    assert_eq!(evm["algorithm"], "secp256k1");
    assert!(evm["address"].as_str().unwrap().starts_with("0x"), "{evm}");
    let sol = ok_json(
        &socket,
        &[
            "keys",
            "create",
            "--algorithm",
            "ed25519",
            "--policy",
            r#"{"enabled":true}"#,
        ],
    );
    assert_eq!(sol["algorithm"], "ed25519");
    let evm_id = evm["key_id"].as_str().unwrap().to_owned();
    let sol_id = sol["key_id"].as_str().unwrap().to_owned();
    assert_ne!(evm_id, sol_id);
    let shown = ok_json(&socket, &["keys", "show", &evm_id]);
    assert_eq!(shown["public_key"], evm["public_key"]);

    // Policy and signing: an EIP-1559 transfer of 0 wei on chain 1 to 0x11…11
    // (hand-encoded RLP: 0x02 || [1, 0, 1, 1, 21000, to, 0, "", []]).
    let to = "11".repeat(20);
    let tx_on = |chain: &str| format!("0x02df{chain}80010182520894{to}8080c0");
    let policy = format!(
        r#"{{"version":1,"enabled":true,"evm":{{"chain_ids":[1],"allowed_destinations":["0x{to}"],"max_value_wei":"0","max_fee_wei":"21000"}}}}"#
    );
    let before_sign = ekms(&socket, &["sign", "evm", &evm_id, &tx_on("01")]);
    assert_eq!(
        before_sign.status.code(),
        Some(1),
        "default policy must refuse"
    );
    let set = ok_json(&socket, &["policy", "set", &evm_id, &policy]);
    assert!(set["policy_version"].as_u64().unwrap() >= 1, "{set}");
    let signed = ok_json(&socket, &["sign", "evm", &evm_id, &tx_on("01")]);
    assert!(
        signed["signed_transaction"]
            .as_str()
            .unwrap()
            .starts_with("0x02"),
        "{signed}"
    );
    assert!(signed["signature"]["r"].is_string(), "{signed}");
    let refused = ekms(&socket, &["sign", "evm", &evm_id, &tx_on("05")]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).starts_with("ekms: "));
    let bad_sol = ekms(&socket, &["sign", "solana", &sol_id, "AQID"]);
    assert_eq!(bad_sol.status.code(), Some(1));
    let bad_hex = ekms(&socket, &["sign", "evm", &evm_id, "02df"]);
    assert_eq!(bad_hex.status.code(), Some(2));

    // Refusals: usage errors exit 2, server refusals exit 1 with the server's code.
    let bad = ekms(&socket, &["keys", "create", "--algorithm", "rsa"]);
    assert_eq!(bad.status.code(), Some(2));
    let unknown = ekms(
        &socket,
        &["keys", "show", "00000000-0000-4000-8000-000000000000"],
    );
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).starts_with("ekms: "));

    // Attestation: verified against the simulation root, refused against AWS's.
    let state = state_dir.to_str().unwrap();
    let out = ekms(
        &socket,
        &[
            "attestation",
            "verify",
            "--root",
            "simulation",
            "--state-dir",
            state,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARNING: simulation root"));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verified"], true);
    assert_eq!(report["root"], "simulation");
    assert_eq!(report["pcrs"]["0"], pcr0.as_str());
    assert_eq!(report["nonce"].as_str().unwrap().len(), 64);
    let aws = ekms(&socket, &["attestation", "verify", "--root", "aws"]);
    assert_eq!(
        aws.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&aws.stdout)
    );
    let wrong_pcr = "00".repeat(48);
    let out = ekms(
        &socket,
        &[
            "attestation",
            "verify",
            "--root",
            "simulation",
            "--state-dir",
            state,
            "--pcr0",
            &wrong_pcr,
        ],
    );
    assert_eq!(out.status.code(), Some(1));

    // A second start on the served directory is refused.
    let second = Command::new(EKMS)
        .args(["sim", "--state-dir", state])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("live process"));

    // Killing the enclave: the supervisor restarts it and the parent reconnects.
    let old_enclave = status["processes"]["enclave"]["pid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(old_enclave).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = sim.status();
        let pid = now["processes"]["enclave"]["pid"].as_i64().unwrap();
        if pid != old_enclave {
            assert_eq!(now["enclave_restarts"], 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "enclave not restarted\n{}",
            sim.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Key creation goes through the enclave: it works again once the parent reconnected.
    let deadline = Instant::now() + Duration::from_secs(30);
    let after_restart = loop {
        let out = ekms(&socket, &["keys", "create", "--algorithm", "ed25519"]);
        if out.status.success() {
            break serde_json::from_slice::<Value>(&out.stdout).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no key creation after the enclave restart: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            sim.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let restart_id = after_restart["key_id"].as_str().unwrap().to_owned();

    // --- clean stop ------------------------------------------------------------------
    let pids = sim.child_pids();
    assert_eq!(pids.len(), 3);
    sim.terminate(Duration::from_secs(45));
    for pid in &pids {
        assert!(!alive(*pid), "child {pid} survived SIGTERM of ekms sim");
    }
    assert!(!state_dir.join("sim.json").exists());
    drop(sim);

    // --- second start: same CA, same KMS key, same key store ---------------------------
    let mut sim = SimGuard::start(&state_dir);
    sim.wait_healthy(Duration::from_secs(120));
    assert_eq!(
        std::fs::read_to_string(state_dir.join("kms-key-arn")).unwrap(),
        arn_before
    );
    assert_eq!(
        std::fs::read_to_string(state_dir.join("ca/root.pem")).unwrap(),
        root_before
    );
    let list = ok_json(&socket, &["keys", "list"]);
    let ids: Vec<&str> = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["key_id"].as_str())
        .collect();
    for id in [&evm_id, &sol_id, &restart_id] {
        assert!(ids.contains(&id.as_str()), "{id} missing from {list}");
    }
    sim.terminate(Duration::from_secs(45));
}

#[test]
fn rejects_a_start_without_the_enclave_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(EKMS)
        .arg("sim")
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .arg("--enclave-bin")
        .arg(tmp.path().join("no-such-enclave"))
        // Existing files for the other two, so only the enclave is missing.
        .args(["--kms-sim-bin", EKMS, "--parent-bin", EKMS])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no-such-enclave") && stderr.contains("--enclave-bin"),
        "{stderr}"
    );
}

/// `text` without ANSI SGR escapes (`ESC [ … m`), as the logs may colour fields.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
