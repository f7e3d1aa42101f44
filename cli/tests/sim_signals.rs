//! `ekms sim` honours SIGTERM at every moment, in particular while it is still starting:
//! it exits promptly with status 0 and leaves no child (nor grandchild) behind. Uses the
//! real `ekms`, `kms-sim` and `ekms-enclave` binaries on a temporary state directory,
//! and, for a start that is reliably still in progress, a stand-in parent (a shell
//! script that never announces its address and has a child of its own).
//!
//! The sibling binaries are built by `cargo build --workspace` (the Makefile's `test`
//! target builds every target first); the tests fail with that hint if they are missing.

// The whole file is test code: clippy's `allow-unwrap-in-tests` covers only `#[test]`
// functions, not the helpers beside them, where a panic is just as much a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const EKMS: &str = env!("CARGO_BIN_EXE_ekms");
/// How long `ekms sim` may take to exit after SIGTERM. Its children exit on SIGTERM at
/// once, so this is far more than needed, and less than the 10 s + 10 s it would take
/// if any SIGTERM were ignored and had to be escalated.
const EXIT_WITHIN: Duration = Duration::from_secs(15);

fn require_siblings() {
    let dir = Path::new(EKMS).parent().unwrap();
    let missing: Vec<String> = ["kms-sim", "ekms-enclave", "ekms-parent"]
        .iter()
        .map(|name| dir.join(name))
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "missing sibling binaries {missing:?}: run `cargo build --workspace` (or `make test`) \
         before this test"
    );
}

/// Pids of live processes whose command line mentions `needle` (our children all name
/// the state directory in their arguments).
fn processes_mentioning(needle: &Path) -> Vec<(i32, String)> {
    let needle = needle.to_str().unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().map_while(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) && alive(pid) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// True if `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn sigkill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// A running `ekms sim` on `<tmp>/state`; on drop, it and everything mentioning the
/// temporary directory are killed, so a failing test leaves nothing behind.
struct Sim {
    child: Option<Child>,
    tmp: tempfile::TempDir,
    stderr_path: PathBuf,
    extra_pids: Vec<i32>,
}

impl Sim {
    fn start(tmp: tempfile::TempDir, extra_args: &[&Path]) -> Self {
        let stderr_path = tmp.path().join("ekms-sim.stderr");
        let child = Command::new(EKMS)
            .arg("sim")
            .arg("--state-dir")
            .arg(tmp.path().join("state"))
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("spawn ekms sim");
        Self {
            child: Some(child),
            tmp,
            stderr_path,
            extra_pids: Vec::new(),
        }
    }

    fn diagnostics(&self) -> String {
        let mut text = format!(
            "--- ekms sim stderr:\n{}\n",
            std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
        );
        for log in ["kms-sim", "enclave", "parent"] {
            let path = self.tmp.path().join(format!("state/logs/{log}.log"));
            let content = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = content.lines().rev().take(20).collect();
            text.push_str(&format!(
                "--- {log}.log (newest first):\n{}\n",
                tail.join("\n")
            ));
        }
        text
    }

    /// SIGTERM, then the exit status and how long the exit took.
    fn terminate(&mut self) -> (ExitStatus, Duration) {
        let child = self.child.as_mut().unwrap();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let sent = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return (status, sent.elapsed());
            }
            if sent.elapsed() > EXIT_WITHIN {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                panic!(
                    "ekms sim did not exit within {EXIT_WITHIN:?} of SIGTERM\n{}",
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asserts a prompt, successful exit and that no process of ours survived.
    fn assert_stopped_cleanly(&mut self, status: ExitStatus, took: Duration) {
        assert!(
            status.success(),
            "a requested stop exits 0, got {status} after {took:?}\n{}",
            self.diagnostics()
        );
        // Stopped children are reaped before `ekms sim` exits; give the kernel a moment
        // for grandchildren that were signalled along with their group.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let left = processes_mentioning(self.tmp.path());
            let extra: Vec<i32> = self
                .extra_pids
                .iter()
                .copied()
                .filter(|p| alive(*p))
                .collect();
            if left.is_empty() && extra.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "left behind after SIGTERM: {left:?}, grandchildren {extra:?}\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for (pid, _) in processes_mentioning(self.tmp.path()) {
            sigkill(pid);
        }
        for pid in &self.extra_pids {
            if alive(*pid) {
                sigkill(*pid);
            }
        }
    }
}

/// A stand-in child that never prints `listening on`, so `ekms sim` stays in its start
/// sequence: a shell whose own child (`sleep`) is reachable only through the process
/// group, and which records that child's pid in `<script>.grandchild`. `padding` zero
/// bytes follow the script (a sparse file: no disk used); the shell never reads them,
/// but measuring the file hashes them. Returns the script and the pid file.
fn write_silent_child(dir: &Path, name: &str, padding: u64) -> (PathBuf, PathBuf) {
    let script = dir.join(name);
    // No `exec`: the shell keeps its command line, which names the state directory.
    std::fs::write(
        &script,
        "#!/bin/sh\nsleep 300 &\necho $! > \"$0.grandchild.tmp\"\n\
         mv \"$0.grandchild.tmp\" \"$0.grandchild\"\nwait\n",
    )
    .unwrap();
    if padding > 0 {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&script)
            .unwrap();
        file.set_len(padding).unwrap();
    }
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pid_file = dir.join(format!("{name}.grandchild"));
    (script, pid_file)
}

impl Sim {
    /// Waits until the silent child wrote its pid file, and returns its child's pid.
    fn wait_for_grandchild(&mut self, pid_file: &Path) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(120);
        let grandchild = loop {
            if let Ok(text) = std::fs::read_to_string(pid_file) {
                break text.trim().parse::<i32>().unwrap();
            }
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none(),
                "ekms sim exited early ({exited:?})\n{}",
                self.diagnostics()
            );
            assert!(
                Instant::now() < deadline,
                "the stand-in child was never started\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        self.extra_pids.push(grandchild);
        grandchild
    }
}

#[test]
fn sigterm_while_waiting_for_a_child_stops_every_child_and_grandchild() {
    require_siblings();
    let tmp = tempfile::tempdir().unwrap();
    let (script, pid_file) = write_silent_child(tmp.path(), "silent-parent.sh", 0);
    let mut sim = Sim::start(tmp, &[Path::new("--parent-bin"), &script]);

    // kms-sim and the enclave have announced themselves, the KMS key exists and the
    // parent was spawned: `ekms sim` now waits for the parent's announcement.
    let grandchild = sim.wait_for_grandchild(&pid_file);
    std::thread::sleep(Duration::from_millis(300));

    // The checks below can fail: right now there is something to find.
    let running = processes_mentioning(sim.tmp.path());
    assert!(
        running.len() >= 3,
        "kms-sim, enclave and the stand-in parent should be running: {running:?}\n{}",
        sim.diagnostics()
    );
    assert!(alive(grandchild), "the stand-in parent's child is running");
    assert!(
        !sim.tmp.path().join("state/sim.json").exists(),
        "still starting: no sim.json yet"
    );

    let (status, took) = sim.terminate();
    sim.assert_stopped_cleanly(status, took);
    let stderr = std::fs::read_to_string(&sim.stderr_path).unwrap();
    assert!(stderr.contains("SIGTERM during start"), "{stderr}");
}

#[test]
fn sigterm_soon_after_launch_leaves_no_child() {
    require_siblings();
    // Early (the CA, kms-sim, measuring the enclave) and about one second in (the
    // enclave, the KMS key, the parent or health, depending on the machine's speed).
    for delay in [Duration::from_millis(300), Duration::from_secs(1)] {
        let tmp = tempfile::tempdir().unwrap();
        let mut sim = Sim::start(tmp, &[]);
        std::thread::sleep(delay);
        let (status, took) = sim.terminate();
        sim.assert_stopped_cleanly(status, took);
    }
}

#[test]
fn sigterm_while_measuring_the_enclave_exits_without_waiting_for_the_hash() {
    require_siblings();
    let tmp = tempfile::tempdir().unwrap();
    // 8 GiB: hashing takes far longer than EXIT_WITHIN, even optimised.
    let (enclave, pid_file) = write_silent_child(tmp.path(), "slow-enclave.sh", 8 << 30);
    let mut sim = Sim::start(tmp, &[Path::new("--enclave-bin"), &enclave]);
    // The stand-in enclave runs: the measurement, started before it, is under way.
    let grandchild = sim.wait_for_grandchild(&pid_file);
    assert!(alive(grandchild));
    assert!(!processes_mentioning(sim.tmp.path()).is_empty());
    std::thread::sleep(Duration::from_millis(500));
    let (status, took) = sim.terminate();
    sim.assert_stopped_cleanly(status, took);
}
