//! Test support shared by the `ekms` integration tests (STYLE rule 16: one owner of the
//! guard that starts and kills child processes): the sibling-binary check, `ekms` client
//! calls, and [`SimGuard`], a running `ekms sim` that is killed on drop together with
//! the children it reported in `sim.json`.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const EKMS: &str = env!("CARGO_BIN_EXE_ekms");

pub fn bin_dir() -> PathBuf {
    Path::new(EKMS).parent().unwrap().to_path_buf()
}

pub fn require_siblings() {
    let missing: Vec<String> = ["kms-sim", "ekms-enclave", "ekms-parent"]
        .iter()
        .map(|name| bin_dir().join(name))
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "missing sibling binaries {missing:?}: run `cargo build --workspace` (or `make test`) \
         before this test"
    );
}

/// A running `ekms sim`, killed on drop together with the children it reported.
pub struct SimGuard {
    child: Option<Child>,
    /// The sim's state directory.
    pub state_dir: PathBuf,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr_path: PathBuf,
}

impl SimGuard {
    pub fn start(state_dir: &Path) -> Self {
        Self::start_with_env(state_dir, &[])
    }

    /// Starts `ekms sim` on `state_dir` with extra environment variables (e.g. the
    /// parent's `EKMS_DEK_CACHE_MAX_USES`).
    pub fn start_with_env(state_dir: &Path, env: &[(&str, &str)]) -> Self {
        let stderr_path = state_dir.with_extension(format!("stderr.{}", now_ms()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut child = Command::new(EKMS)
            .arg("sim")
            .arg("--state-dir")
            .arg(state_dir)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn ekms sim");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            child: Some(child),
            state_dir: state_dir.to_path_buf(),
            stdout: lines,
            stderr_path,
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("ekms.sock")
    }

    pub fn diagnostics(&self) -> String {
        let mut text = format!(
            "--- ekms sim stdout:\n{}\n--- stderr:\n{}\n",
            self.stdout.lock().unwrap().join("\n"),
            std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
        );
        for log in ["kms-sim", "enclave", "parent"] {
            let path = self.state_dir.join("logs").join(format!("{log}.log"));
            let content = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = content.lines().rev().take(30).collect();
            text.push_str(&format!(
                "--- {log}.log (last lines, newest first):\n{}\n",
                tail.join("\n")
            ));
        }
        text
    }

    /// Polls `ekms health` until it succeeds and `sim.json` exists.
    pub fn wait_healthy(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ekms sim exited early ({status})\n{}", self.diagnostics());
            }
            let out = ekms(&self.socket(), &["health"]);
            // sim.json is written just after health first answers 200.
            if out.status.success() && self.state_dir.join("sim.json").exists() {
                let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(v["status"], "ok");
                assert_eq!(v["mode"], "simulation");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not healthy within {timeout:?}: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    pub fn status(&self) -> Value {
        let text = std::fs::read_to_string(self.state_dir.join("sim.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    pub fn child_pids(&self) -> Vec<i32> {
        let Ok(text) = std::fs::read_to_string(self.state_dir.join("sim.json")) else {
            return Vec::new();
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            return Vec::new();
        };
        ["kms-sim", "enclave", "parent"]
            .iter()
            .filter_map(|n| v["processes"][n]["pid"].as_i64())
            .map(|p| i32::try_from(p).unwrap())
            .collect()
    }

    /// The pid `sim.json` reports for `name` (`kms-sim`, `enclave`, `parent`).
    pub fn pid(&self, name: &str) -> i32 {
        i32::try_from(self.status()["processes"][name]["pid"].as_i64().unwrap()).unwrap()
    }

    /// SIGTERM, then wait up to a minute for `ekms sim` to exit (its children stop with
    /// it), killing it after that; unlike [`SimGuard::terminate`] it asserts nothing.
    pub fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(60);
            while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self, timeout: Duration) {
        let mut child = self.child.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "ekms sim exited with {status}\n{}",
                    self.diagnostics()
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "ekms sim did not stop within {timeout:?}\n{}",
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for SimGuard {
    fn drop(&mut self) {
        let pids = self.child_pids();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in pids {
            if alive(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

pub fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// True if `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

pub fn ekms(socket: &Path, args: &[&str]) -> Output {
    Command::new(EKMS)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ekms")
}

pub fn ok_json(socket: &Path, args: &[&str]) -> Value {
    let out = ekms(socket, args);
    assert!(
        out.status.success(),
        "ekms {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}
