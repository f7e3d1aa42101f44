//! The system under test: `ekms sim --state-dir DIR` started as a child process, and a
//! guard that stops it (SIGTERM, then SIGKILL after a grace period) when dropped, so
//! an error, a panic unwinding or Ctrl-C in the benchmark never leaves a simulation
//! running. Also reads the pids of its processes from `DIR/sim.json` and their CPU
//! time from `/proc`, to show where the time of a signature goes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt as _;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::Error;

/// How long the guard waits for `ekms sim` to stop after SIGTERM before SIGKILL: it
/// stops its three children in turn with up to 10 s each (`ekms_cli::sim::STOP_GRACE`).
const STOP_GRACE: Duration = Duration::from_secs(35);

/// A running `ekms sim`; stopped on drop.
pub struct SimGuard {
    child: Child,
    state_dir: PathBuf,
    log: PathBuf,
    stopped: bool,
}

impl SimGuard {
    /// Starts `ekms sim --state-dir STATE_DIR --health-timeout-secs T` with `env` added
    /// to its environment (inherited by the parent it starts, e.g. the DEK cache
    /// settings). Its stdout and stderr go to `log`.
    ///
    /// # Errors
    /// [`Error::Sim`] if the executable cannot be started.
    pub fn start(
        ekms: &Path,
        state_dir: &Path,
        log: &Path,
        health_timeout: Duration,
        env: &[(&str, String)],
    ) -> Result<Self, Error> {
        let out = File::create(log)
            .map_err(|e| Error::Sim(format!("creating {}: {e}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::Sim(format!("log handle: {e}")))?;
        let mut cmd = Command::new(ekms);
        cmd.arg("sim")
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--health-timeout-secs")
            .arg(health_timeout.as_secs().max(1).to_string())
            // Its own process group, so the fallback in `stop` can kill every process
            // of the simulation even before `sim.json` names them.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(|e| Error::Sim(format!("starting {}: {e}", ekms.display())))?;
        Ok(Self {
            child,
            state_dir: state_dir.to_path_buf(),
            log: log.to_path_buf(),
            stopped: false,
        })
    }

    /// The application socket (`STATE_DIR/ekms.sock`).
    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("ekms.sock")
    }

    /// `Some(status)` once `ekms sim` has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of the output of `ekms sim`, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The processes of the simulation by name (`ekms sim`, `parent`, `enclave`,
    /// `kms-sim`) and pid, from `sim.json`; only `ekms sim` if that is not written yet.
    pub fn processes(&self) -> Vec<(String, u32)> {
        let mut out = vec![("ekms sim".to_string(), self.child.id())];
        out.extend(self.children());
        out
    }

    /// The parent, enclave and kms-sim processes by name and pid, from `sim.json`
    /// (empty until `ekms sim` has written it).
    pub fn children(&self) -> Vec<(String, u32)> {
        let Ok(text) = std::fs::read_to_string(self.state_dir.join("sim.json")) else {
            return Vec::new();
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            return Vec::new();
        };
        ["parent", "enclave", "kms-sim"]
            .iter()
            .filter_map(|name| {
                let pid = v["processes"][name]["pid"].as_u64()?;
                Some((name.to_string(), u32::try_from(pid).ok()?))
            })
            .collect()
    }

    /// Stops the simulation: SIGTERM to `ekms sim` (which stops its children), wait up
    /// to [`STOP_GRACE`], then SIGKILL to its whole process group and SIGTERM to any
    /// child `sim.json` names that left the group. Idempotent.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let children = self.children();
        if self.exited().is_some() {
            return;
        }
        signal(self.child.id(), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("ekms-bench: `ekms sim` ignored SIGTERM: killing it and its children");
        if let Ok(raw) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for (_, pid) in children {
            signal(pid, Signal::SIGTERM);
        }
    }
}

impl Drop for SimGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(pid: u32, sig: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        // ESRCH (already gone) is fine.
        let _ = kill(Pid::from_raw(raw), sig);
    }
}

/// CPU time (user + system, all threads) used so far by process `pid`, from
/// `/proc/PID/stat` (proc(5): fields 14 and 15, in clock ticks). `None` if the
/// process is gone or the file does not parse.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_time_from_stat(&text, clock_ticks())
}

fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// Parses utime + stime out of a `/proc/PID/stat` line. The command name (field 2)
/// is in parentheses and may contain spaces, so fields are counted after the last `)`.
fn cpu_time_from_stat(stat: &str, ticks_per_sec: u64) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = utime.checked_add(stime)?;
    Some(Duration::from_secs_f64(ticks as f64 / ticks_per_sec as f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn stat_line_cpu_time() {
        let line = "1234 (ekms (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(cpu_time_from_stat(line, 100), Some(Duration::from_secs(3)));
        assert!(cpu_time(std::process::id()).is_some());
    }

    #[test]
    fn rejects_truncated_stat_line() {
        assert_eq!(cpu_time_from_stat("1234 (ekms) S 1 2 3", 100), None);
        assert_eq!(cpu_time_from_stat("no parenthesis", 100), None);
    }

    #[test]
    fn guard_stops_the_child_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        // A stand-in for `ekms`: ignores its arguments and waits to be stopped.
        let fake = dir.path().join("ekms");
        std::fs::write(&fake, "#!/bin/sh\necho started\nexec sleep 60\n").unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let log = dir.path().join("sim.out");
        let guard = SimGuard::start(
            &fake,
            &dir.path().join("state"),
            &log,
            Duration::from_secs(5),
            &[],
        )
        .unwrap();
        let pid = guard.child.id();
        assert!(cpu_time(pid).is_some());
        assert_eq!(guard.processes().len(), 1);
        let t = Instant::now();
        drop(guard);
        assert!(t.elapsed() < STOP_GRACE);
        // reaped: no /proc entry any more
        assert!(cpu_time(pid).is_none());
    }

    #[test]
    fn rejects_a_missing_executable() {
        let dir = tempfile::tempdir().unwrap();
        let err = SimGuard::start(
            &dir.path().join("no-such-ekms"),
            &dir.path().join("state"),
            &dir.path().join("sim.out"),
            Duration::from_secs(5),
            &[],
        )
        .err()
        .unwrap();
        assert!(matches!(err, Error::Sim(_)));
    }
}
