//! Issue 9, "readiness that proves the key policy", end to end with the real binaries
//! (`ekms sim`: kms-sim, the enclave, the parent).
//!
//! The enclave becomes ready only after an attested `GenerateDataKey` on its pinned
//! KMS key. Here the key policy is switched to another image's PCR0 and the enclave is
//! killed: the restarted enclave never becomes ready, `/v1/health` answers 503
//! `kms_access_denied` with KMS's error text, and the parent's log says why. With the
//! right PCR0 back in the policy it becomes ready again by itself (the parent retries).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{ekms, require_siblings, SimGuard};
use ekms_cli::kms::{key_policy, sim_client, SIM_ACCOUNT_ID};
use serde_json::Value;

/// Polls `ekms health` until `done(exit_ok, stdout, stderr)` holds.
fn wait_health(sim: &SimGuard, timeout: Duration, done: impl Fn(bool, &str, &str) -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let out = ekms(&sim.socket(), &["health"]);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        if done(out.status.success(), &stdout, &stderr) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "health not as expected within {timeout:?}: {stdout}{stderr}\n{}",
            sim.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn never_ready_while_the_key_policy_pins_another_pcr0_and_says_why() {
    require_siblings();
    let tmp = tempfile::tempdir().unwrap();
    let state_dir = tmp.path().join("state");
    let mut sim = SimGuard::start(&state_dir);
    sim.wait_healthy(Duration::from_secs(120));
    let status = sim.status();
    let pcr0 = status["pcr0"].as_str().unwrap().to_owned();
    let arn = status["kms_key_arn"].as_str().unwrap().to_owned();
    let endpoint = status["kms_endpoint"].as_str().unwrap().to_owned();
    let tls_root = std::fs::read_to_string(status["kms_tls_root_pem"].as_str().unwrap()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _in_runtime = rt.enter();
    let admin = sim_client(&endpoint, &tls_root).unwrap();
    let put_policy = |pcr0_hex: &str| {
        rt.block_on(
            admin
                .put_key_policy()
                .key_id(&arn)
                .policy(key_policy(pcr0_hex, SIM_ACCOUNT_ID))
                .send(),
        )
        .unwrap();
    };

    // The key policy now pins another image; the enclave restarts (as after a crash or
    // an upgrade) and its readiness round trip is refused.
    let other_pcr0 = "ab".repeat(48);
    put_policy(&other_pcr0);
    let enclave = sim.pid("enclave");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(enclave),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_health(&sim, Duration::from_secs(60), |ok, _, stderr| {
        !ok && stderr.contains("kms_access_denied")
    });
    let out = ekms(&sim.socket(), &["health"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("AccessDeniedException") && stderr.contains("kms:GenerateDataKey"),
        "{stderr}"
    );
    let parent_log = std::fs::read_to_string(state_dir.join("logs/parent.log")).unwrap();
    assert!(
        parent_log.contains("does not release data keys to this enclave image")
            && parent_log.contains("AccessDeniedException"),
        "{}",
        sim.diagnostics()
    );
    // It stays that way: the parent retries, KMS keeps refusing.
    std::thread::sleep(Duration::from_secs(3));
    let again = ekms(&sim.socket(), &["health"]);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("kms_access_denied"),
        "{}",
        sim.diagnostics()
    );
    let refused = ekms(&sim.socket(), &["keys", "create", "--algorithm", "ed25519"]);
    assert_eq!(refused.status.code(), Some(1));

    // The right PCR0 back in the policy: ready again without a restart.
    put_policy(&pcr0);
    wait_health(&sim, Duration::from_secs(60), |ok, stdout, _| {
        ok && serde_json::from_str::<Value>(stdout).is_ok_and(|v| v["pcrs"]["0"] == pcr0.as_str())
    });
    let created = ekms(&sim.socket(), &["keys", "create", "--algorithm", "ed25519"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    sim.terminate(Duration::from_secs(45));
}
