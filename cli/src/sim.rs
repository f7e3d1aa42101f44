//! `ekms sim`: the whole simulation in the foreground — kms-sim, the enclave (simulated
//! NSM) and the parent — with every piece of state under one directory, and a small
//! supervisor that restarts the enclave when it dies and stops everything cleanly.
//!
//! Layout of the state directory (created 0700):
//!
//! | path | what |
//! |---|---|
//! | `ca/` | the simulated Nitro CA (`root.pem` is its trust root) |
//! | `kms/` | kms-sim's keys and policies |
//! | `kms-key-arn` | ARN of the KMS key that seals the data keys |
//! | `keys.db` | the parent's key store |
//! | `admin.token` | the admin API token the parent writes at its first start (0600); `ekms` sends it by default |
//! | `enclave.sock`, `ekms.sock` | the enclave's socket and the application API socket |
//! | `logs/{kms-sim,enclave,parent}.log` | the children's stdout and stderr (appended) |
//! | `sim.json` | pids and paths of the running simulation (removed on a clean stop) |
//!
//! Children run in their own process groups, so a Ctrl-C in the terminal reaches only
//! this supervisor, which then stops them in order: parent, enclave, kms-sim (SIGTERM to
//! the child's process group, up to [`STOP_GRACE`], then SIGKILL); a second SIGINT or
//! SIGTERM while stopping kills what is left at once. Restarting on the same directory
//! finds the same CA, KMS key and key store. Two `ekms sim` racing on one fresh
//! directory are not detected (there is no lock file); a second start on a served
//! directory is refused.
//!
//! Signals are honoured at every moment: the SIGINT/SIGTERM handlers are installed
//! before anything else, and the whole start (measuring the enclave executable, waiting
//! for each child's `listening on` line, creating the KMS key, waiting for health) is
//! raced against them. Each child is stored as soon as it is spawned, so a signal during
//! start stops exactly the children started so far, the same way as above. A stop that
//! was asked for (a signal) exits with status 0, after printing `ekms sim: stopped`; a
//! failed start or a child that dies for good exits with status 1. A signal that arrives
//! before the handlers exist (while the command line is parsed) kills `ekms` the
//! default way, before any child exists.
//!
//! Limitation: if `ekms sim` itself is killed with SIGKILL (or crashes), its children
//! keep running, because their own process groups shield them from the terminal's
//! signals and nothing else ties their life to ours (`PR_SET_PDEATHSIG` needs `unsafe`
//! in a `pre_exec` hook, which this workspace forbids; the children do not watch their
//! stdin). They stay findable: every child's command line names the state directory
//! (`pgrep -f STATE_DIR`), `sim.json` lists their pids once the start completed (it is
//! left behind on such a death), each leads its own process group, and a new `ekms sim`
//! on the same directory refuses to start while they serve its sockets. Stop each with
//! `kill -TERM -- -PID`.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::args::SimArgs;
use crate::client::ApiClient;
use crate::kms::{self, KeySetup};
use crate::Error;

/// Grace period between SIGTERM and SIGKILL for each child.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Most enclave restarts within [`RESTART_WINDOW`]; one more exit gives up.
pub const MAX_RESTARTS: usize = 5;
/// Window over which [`MAX_RESTARTS`] is counted.
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// How long a child may take to print its `listening on …` line (a debug build of the
/// enclave hashes its own executable first, which takes tens of seconds).
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(180);

/// Executable names expected next to `ekms`.
pub const KMS_SIM_BIN: &str = "kms-sim";
/// The enclave executable's name.
pub const ENCLAVE_BIN: &str = "ekms-enclave";
/// The parent executable's name.
pub const PARENT_BIN: &str = "ekms-parent";

/// Every path of a state directory (module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimPaths {
    /// The state directory itself.
    pub state_dir: PathBuf,
    /// Simulated CA directory.
    pub ca_dir: PathBuf,
    /// Simulated CA root certificate (PEM).
    pub root_pem: PathBuf,
    /// kms-sim state.
    pub kms_dir: PathBuf,
    /// File holding the KMS key ARN.
    pub arn_file: PathBuf,
    /// Parent key store.
    pub db: PathBuf,
    /// Enclave socket.
    pub enclave_socket: PathBuf,
    /// Application API socket.
    pub app_socket: PathBuf,
    /// Log directory.
    pub logs_dir: PathBuf,
    /// Status file of a running simulation.
    pub sim_json: PathBuf,
}

impl SimPaths {
    /// The enclave's log socket (`--log-listen`; the parent reads it with
    /// `--enclave-log`), beside the enclave socket.
    pub fn enclave_log_socket(&self) -> PathBuf {
        self.state_dir.join("enclave-log.sock")
    }

    /// The layout under `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        let at = |p: &str| state_dir.join(p);
        Self {
            state_dir: state_dir.to_path_buf(),
            ca_dir: at("ca"),
            root_pem: at("ca").join(attestation::SIM_ROOT_PEM_FILE),
            kms_dir: at("kms"),
            arn_file: at("kms-key-arn"),
            db: at("keys.db"),
            enclave_socket: at("enclave.sock"),
            app_socket: at("ekms.sock"),
            logs_dir: at("logs"),
            sim_json: at("sim.json"),
        }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.logs_dir.join(format!("{name}.log"))
    }

    /// The kms-sim TLS CA certificate, which kms-sim writes into the CA directory
    /// (`kms_sim::tls::TLS_ROOT_FILE`).
    pub fn kms_tls_root(&self) -> PathBuf {
        self.ca_dir.join(KMS_TLS_ROOT_FILE)
    }
}

/// Name of the kms-sim TLS CA certificate in the CA directory (kms-sim's
/// `tls::TLS_ROOT_FILE`).
pub const KMS_TLS_ROOT_FILE: &str = "kms-tls-root.pem";

/// The three executables the simulation runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// kms-sim.
    pub kms_sim: PathBuf,
    /// ekms-enclave.
    pub enclave: PathBuf,
    /// ekms-parent.
    pub parent: PathBuf,
}

impl Binaries {
    /// The flags' paths, or else the executables of the same names in `dir` (the
    /// directory of the running `ekms`). Each must exist.
    ///
    /// # Errors
    /// [`Error::Sim`] naming the first missing executable and how to build it.
    pub fn resolve(args: &SimArgs, dir: &Path) -> Result<Self, Error> {
        let pick = |flag: &Option<PathBuf>, name: &str, package: &str| {
            let path = flag.clone().unwrap_or_else(|| dir.join(name));
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::Sim(format!(
                    "{} not found: build it with `cargo build -p {package}` (or `cargo build \
                     --workspace`), or pass its path with --{}",
                    path.display(),
                    match name {
                        KMS_SIM_BIN => "kms-sim-bin",
                        ENCLAVE_BIN => "enclave-bin",
                        _ => "parent-bin",
                    }
                )))
            }
        };
        Ok(Self {
            kms_sim: pick(&args.kms_sim_bin, KMS_SIM_BIN, "kms-sim")?,
            enclave: pick(&args.enclave_bin, ENCLAVE_BIN, "ekms-enclave")?,
            parent: pick(&args.parent_bin, PARENT_BIN, "ekms-parent")?,
        })
    }
}

/// Refuses a socket path that a live process serves, removes a stale socket file, and
/// accepts a missing one.
///
/// # Errors
/// [`Error::Sim`] if something accepts connections on `path` or `path` is not a socket;
/// [`Error::Io`] if it cannot be inspected or removed.
pub fn claim_socket_path(path: &Path) -> Result<(), Error> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("inspecting {}", path.display()), e)),
    };
    if !meta.file_type().is_socket() {
        return Err(Error::Sim(format!(
            "{} exists and is not a socket: refusing to replace it",
            path.display()
        )));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(Error::Sim(format!(
            "{} is served by a live process: is another `ekms sim` running on this directory?",
            path.display()
        ))),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => std::fs::remove_file(path)
            .map_err(|e| Error::io(format!("removing stale socket {}", path.display()), e)),
        Err(e) => Err(Error::io(format!("probing {}", path.display()), e)),
    }
}

/// Creates the state directory (mode 0700) or, if it exists, tightens it to 0700, and
/// returns its canonical path. `DirBuilder::mode` applies only to directories it
/// creates: an existing `--state-dir` left group- or world-accessible would expose the
/// simulated CA's private key and the sockets. Changing the mode of a directory owned
/// by another user fails, so such a directory is refused.
///
/// # Errors
/// [`Error::Io`] if the directory cannot be created, resolved or restricted;
/// [`Error::Sim`] if the path is not a directory.
pub fn prepare_state_dir(dir: &Path) -> Result<PathBuf, Error> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let dir = std::fs::canonicalize(dir)
        .map_err(|e| Error::io(format!("resolving {}", dir.display()), e))?;
    if !dir.is_dir() {
        return Err(Error::Sim(format!("{} is not a directory", dir.display())));
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("restricting {} to mode 0700", dir.display()), e))?;
    Ok(dir)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers see the
/// old or the new content, never a torn one.
///
/// # Errors
/// [`Error::Io`] if writing or renaming fails.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("renaming to {}", path.display()), e))
}

/// Delay before the `n`-th restart within the window (0-based): 0.5 s doubling, at
/// most 8 s.
pub fn restart_backoff(n: usize) -> Duration {
    let exp = u32::try_from(n.min(4)).unwrap_or(4);
    Duration::from_millis(500u64 << exp)
}

/// A running child: its process, pid, log and the address it announced.
#[derive(Debug)]
struct Proc {
    name: &'static str,
    child: Child,
    pid: u32,
    log: PathBuf,
    bin: PathBuf,
    /// Empty until the child printed `listening on ADDR`.
    listening: String,
}

impl Proc {
    /// Spawns `cmd` (stdin closed, stdout and stderr appended to `log`, own process
    /// group), stores it in `slot` at once, so that whoever owns the slot stops it even
    /// if this future is dropped halfway, then waits (up to [`LISTEN_TIMEOUT`]) for its
    /// first stdout line `listening on ADDR`.
    async fn launch<'a>(
        slot: &'a mut Option<Proc>,
        name: &'static str,
        bin: &Path,
        mut cmd: Command,
        log: PathBuf,
    ) -> Result<&'a mut Proc, Error> {
        let open_log = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|e| Error::io(format!("opening {}", log.display()), e))
        };
        let stderr = open_log()?;
        let sink = open_log()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", bin.display()), e))?;
        let pid = child
            .id()
            .ok_or_else(|| Error::Sim(format!("{name} exited at once")))?;
        let stdout = child.stdout.take();
        let proc = slot.insert(Self {
            name,
            child,
            pid,
            log,
            bin: bin.to_path_buf(),
            listening: String::new(),
        });
        let stdout =
            stdout.ok_or_else(|| Error::Sim(format!("{name}: stdout was not captured")))?;
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let read = tokio::time::timeout(LISTEN_TIMEOUT, reader.read_line(&mut line)).await;
        let listening = match read {
            Ok(Ok(n)) if n > 0 => line.trim().strip_prefix("listening on ").map(str::to_owned),
            _ => None,
        };
        let Some(listening) = listening else {
            // The caller stops the child (it is in the slot); say what went wrong.
            let status = match proc.child.try_wait() {
                Ok(Some(s)) => s.to_string(),
                _ => format!("no announcement within {} s", LISTEN_TIMEOUT.as_secs()),
            };
            return Err(Error::Sim(format!(
                "{name} did not announce its address (first line {:?}; {status}); see {}",
                line.trim(),
                proc.log.display()
            )));
        };
        // The rest of stdout goes to the log, after the announcement itself.
        let mut sink = tokio::fs::File::from_std(sink);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            let _ = sink.write_all(line.as_bytes()).await;
            let _ = tokio::io::copy_buf(&mut reader, &mut sink).await;
        });
        proc.listening = listening;
        Ok(proc)
    }

    /// Sends `signal` to the child's process group (the child leads it, so grandchildren
    /// get it too). Returns false, sending nothing, if the child already exited and was
    /// reaped: its pid, and so its group id, may belong to someone else now. While the
    /// child is unreaped its pid cannot be reused, so the group is still ours.
    fn signal_group(&mut self, signal: nix::sys::signal::Signal) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return false;
        }
        let Some(pid) = self.child.id() else {
            return false;
        };
        let Ok(raw) = i32::try_from(pid) else {
            return false;
        };
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(raw), signal);
        true
    }

    /// SIGTERM to the group, up to [`STOP_GRACE`] for the exit, then [`Proc::kill`].
    async fn stop(&mut self) {
        if !self.signal_group(nix::sys::signal::Signal::SIGTERM) {
            return;
        }
        if tokio::time::timeout(STOP_GRACE, self.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "ekms sim: {} (pid {}) ignored SIGTERM for {} s: killing it",
                self.name,
                self.pid,
                STOP_GRACE.as_secs()
            );
            self.kill().await;
        }
    }

    /// SIGKILL to the group, then reap the child.
    async fn kill(&mut self) {
        if self.signal_group(nix::sys::signal::Signal::SIGKILL) {
            let _ = self.child.kill().await;
        }
    }
}

/// The children, as far as they were started.
#[derive(Debug, Default)]
struct Procs {
    kms: Option<Proc>,
    enclave: Option<Proc>,
    parent: Option<Proc>,
}

impl Procs {
    /// Stops parent, enclave and kms-sim, in that order ([`Proc::stop`]). A further
    /// SIGINT/SIGTERM meanwhile (an impatient second Ctrl-C) kills whatever is left at
    /// once.
    async fn stop_all(&mut self, signals: &mut Signals) {
        let graceful = async {
            for p in [&mut self.parent, &mut self.enclave, &mut self.kms]
                .into_iter()
                .flatten()
            {
                p.stop().await;
            }
        };
        tokio::select! {
            () = graceful => return,
            sig = signals.recv() => {
                eprintln!("ekms sim: {sig} again: killing the remaining children");
            }
        }
        for p in [&mut self.parent, &mut self.enclave, &mut self.kms]
            .into_iter()
            .flatten()
        {
            p.kill().await;
        }
    }
}

/// Waits for the child in `slot` to exit; never completes for an empty slot.
async fn exited(slot: &mut Option<Proc>) -> std::io::Result<ExitStatus> {
    match slot {
        Some(p) => p.child.wait().await,
        None => std::future::pending().await,
    }
}

/// SIGINT and SIGTERM, installed before any child is started.
struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    fn install() -> Result<Self, Error> {
        let install = |kind| signal(kind).map_err(|e| Error::io("installing a signal handler", e));
        Ok(Self {
            int: install(SignalKind::interrupt())?,
            term: install(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

/// What the startup learned, for the summary and `sim.json`.
#[derive(Debug)]
struct Started {
    /// What every (re)start of the enclave is pinned to.
    pin: EnclavePin,
    kms_endpoint: String,
    key: KeySetup,
    pcr0_hex: String,
    /// The parent's `--metrics-listen`, if any (a TCP port 0 resolved to a free one).
    metrics_listen: Option<String>,
}

/// Runs `ekms sim` until SIGINT/SIGTERM (then `Ok`, also when the signal comes during
/// start) or until a child fails for good. Every child started is stopped before this
/// returns (module docs).
///
/// # Errors
/// [`Error::Sim`], [`Error::Io`], [`Error::Kms`] for a failed start (everything started
/// so far is stopped), or when kms-sim or the parent exits, or the enclave exits more
/// than [`MAX_RESTARTS`] times within [`RESTART_WINDOW`].
pub async fn run(args: SimArgs) -> Result<(), Error> {
    let mut signals = Signals::install()?;
    let state_dir = prepare_state_dir(&args.state_dir)?;
    let paths = SimPaths::new(&state_dir);
    let exe = std::env::current_exe().map_err(|e| Error::io("locating the ekms executable", e))?;
    let exe_dir = exe
        .parent()
        .ok_or_else(|| Error::Sim("the ekms executable has no directory".into()))?;
    let bins = Binaries::resolve(&args, exe_dir)?;
    claim_socket_path(&paths.app_socket)?;
    claim_socket_path(&paths.enclave_socket)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&paths.logs_dir)
        .map_err(|e| Error::io(format!("creating {}", paths.logs_dir.display()), e))?;

    let mut procs = Procs::default();
    let health_timeout = Duration::from_secs(args.health_timeout_secs);
    let metrics_listen = args
        .metrics_listen
        .as_deref()
        .map(resolve_metrics_listen)
        .transpose()?;
    let started = tokio::select! {
        r = start(&paths, &bins, health_timeout, metrics_listen, &mut procs) => r.map(Some),
        sig = signals.recv() => {
            eprintln!("ekms sim: {sig} during start: stopping");
            Ok(None)
        }
    };
    let started = match started {
        Ok(Some(s)) => s,
        Ok(None) => {
            procs.stop_all(&mut signals).await;
            println!("ekms sim: stopped");
            return Ok(());
        }
        Err(e) => {
            procs.stop_all(&mut signals).await;
            return Err(e);
        }
    };
    write_status(&paths, &bins, &procs, &started, 0)?;
    print_summary(&paths, &procs, &started);

    let outcome = supervise(&paths, &bins, &mut procs, &started, &mut signals).await;
    procs.stop_all(&mut signals).await;
    let _ = std::fs::remove_file(&paths.sim_json);
    if outcome.is_ok() {
        println!("ekms sim: stopped");
    }
    outcome
}

/// CA, kms-sim, KMS key, enclave, parent, health.
async fn start(
    paths: &SimPaths,
    bins: &Binaries,
    health_timeout: Duration,
    metrics_listen: Option<String>,
    procs: &mut Procs,
) -> Result<Started, Error> {
    attestation::SimulatedCa::load_or_create(&paths.ca_dir)
        .map_err(|e| Error::Sim(format!("simulated CA in {}: {e}", paths.ca_dir.display())))?;
    // Hashing the enclave executable takes seconds (tens of seconds for an unoptimised
    // debug build), and the enclave measures itself the same way at start: do ours in the
    // background while kms-sim and the enclave start. The enclave needs no KMS key until
    // the parent configures it, and the parent starts only once the key policy is right.
    let enclave_bin = bins.enclave.clone();
    let measurement =
        tokio::task::spawn_blocking(move || attestation::measure_executable(&enclave_bin));

    let mut cmd = Command::new(&bins.kms_sim);
    cmd.args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(&paths.kms_dir)
        .arg("--attestation-root")
        .arg(&paths.root_pem)
        .arg("--tls-ca-dir")
        .arg(&paths.ca_dir)
        .args([
            "--region",
            kms::SIM_REGION,
            "--account-id",
            kms::SIM_ACCOUNT_ID,
        ]);
    let kms_proc = Proc::launch(
        &mut procs.kms,
        "kms-sim",
        &bins.kms_sim,
        cmd,
        paths.log("kms-sim"),
    )
    .await?;
    // kms-sim serves HTTPS only, with a certificate from its TLS CA (written before it
    // prints its address): the enclave and our client trust that CA and nothing else.
    let kms_endpoint = format!("https://{}", kms_proc.listening);
    let tls_root = paths.kms_tls_root();
    let tls_root_pem = std::fs::read_to_string(&tls_root)
        .map_err(|e| Error::io(format!("reading {}", tls_root.display()), e))?;
    let client = kms::sim_client(&kms_endpoint, &tls_root_pem)?;
    // The enclave is started pinned to the key and endpoint: the key must exist first.
    // Its policy names the enclave's PCR0 once our measurement is done (below); until
    // then no one gets data keys from it.
    let (arn, created) = kms::ensure_key_exists(&client, &paths.arn_file).await?;
    let pin = EnclavePin {
        kms_key_arn: arn,
        kms_endpoint: kms_endpoint.clone(),
    };
    launch_enclave(&mut procs.enclave, paths, bins, &pin).await?;

    let pcrs = measurement
        .await
        .map_err(|e| Error::Sim(format!("measuring the enclave: {e}")))?
        .map_err(|e| Error::io(format!("measuring {}", bins.enclave.display()), e))?;
    let pcr0_hex = pcrs
        .get(&0)
        .map(hex::encode)
        .ok_or_else(|| Error::Sim("the measurement has no PCR0".into()))?;
    let key = match kms::ensure_key(&client, &paths.arn_file, &pcr0_hex).await? {
        KeySetup::PolicyUpdated { arn, .. } if created => KeySetup::Created { arn },
        other => other,
    };
    match &key {
        KeySetup::Created { arn } => println!("ekms sim: created KMS key {arn}"),
        KeySetup::Unchanged { .. } => {}
        KeySetup::PolicyUpdated { arn, old_pcr0 } => println!(
            "ekms sim: the enclave binary changed: key policy of {arn} now requires PCR0 \
             {pcr0_hex} (was {})",
            old_pcr0.as_deref().unwrap_or("none")
        ),
    }

    let mut cmd = Command::new(&bins.parent);
    cmd.arg("--state-dir")
        .arg(&paths.state_dir)
        .arg("--listen")
        .arg(unix_addr(&paths.app_socket))
        .arg("--enclave")
        .arg(unix_addr(&paths.enclave_socket))
        .arg("--enclave-log")
        .arg(unix_addr(&paths.enclave_log_socket()))
        .arg("--db")
        .arg(&paths.db)
        .args(["--kms-region", kms::SIM_REGION, "--kms-endpoint-url"])
        .arg(&kms_endpoint)
        .arg("--kms-key-id")
        .arg(key.arn())
        .args(["--attestation-root", "simulation", "--sim-root"])
        .arg(&paths.root_pem)
        .env("AWS_ACCESS_KEY_ID", kms::SIM_ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", kms::SIM_SECRET_ACCESS_KEY)
        .env_remove("AWS_SESSION_TOKEN");
    if let Some(addr) = &metrics_listen {
        cmd.arg("--metrics-listen").arg(addr);
    }
    Proc::launch(
        &mut procs.parent,
        "parent",
        &bins.parent,
        cmd,
        paths.log("parent"),
    )
    .await?;

    wait_healthy(paths, procs, health_timeout).await?;
    Ok(Started {
        kms_endpoint,
        key,
        pcr0_hex,
        pin,
        metrics_listen,
    })
}

fn unix_addr(path: &Path) -> String {
    format!("unix:{}", path.display())
}

/// `--metrics-listen` as the parent gets it: a `tcp://IP:0` becomes a free port of
/// `IP` (asked of the OS here, so that the summary and sim.json can name it; another
/// process could take it in between, then the parent fails to start and says so).
///
/// # Errors
/// [`Error::Sim`] for a TCP address that does not parse or cannot be bound.
fn resolve_metrics_listen(addr: &str) -> Result<String, Error> {
    let Some(tcp) = addr.strip_prefix("tcp://") else {
        return Ok(addr.to_owned());
    };
    let parsed: std::net::SocketAddr = tcp
        .parse()
        .map_err(|_| Error::Sim(format!("--metrics-listen {addr:?}: not IP:PORT")))?;
    if parsed.port() != 0 {
        return Ok(addr.to_owned());
    }
    let free = std::net::TcpListener::bind(parsed)
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::io(format!("finding a free port for {addr}"), e))?;
    Ok(format!("tcp://{free}"))
}

/// The KMS target the enclave is started pinned to (its `--kms-key-arn` and
/// `--kms-endpoint`): it refuses a `Configure` naming anything else.
#[derive(Debug, Clone)]
struct EnclavePin {
    kms_key_arn: String,
    kms_endpoint: String,
}

/// Starts the enclave into `slot` (replacing an exited one) and waits for its address.
/// It is pinned to `pin` and trusts only the kms-sim TLS CA for KMS.
async fn launch_enclave<'a>(
    slot: &'a mut Option<Proc>,
    paths: &SimPaths,
    bins: &Binaries,
    pin: &EnclavePin,
) -> Result<&'a mut Proc, Error> {
    claim_socket_path(&paths.enclave_socket)?;
    claim_socket_path(&paths.enclave_log_socket())?;
    let mut cmd = Command::new(&bins.enclave);
    cmd.arg("--listen")
        .arg(unix_addr(&paths.enclave_socket))
        .arg("--log-listen")
        .arg(unix_addr(&paths.enclave_log_socket()))
        .args(["--nsm", "simulation", "--sim-ca-dir"])
        .arg(&paths.ca_dir)
        .arg("--kms-key-arn")
        .arg(&pin.kms_key_arn)
        .arg("--kms-endpoint")
        .arg(&pin.kms_endpoint)
        .arg("--danger-sim-kms-ca")
        .arg(paths.kms_tls_root());
    Proc::launch(slot, "enclave", &bins.enclave, cmd, paths.log("enclave")).await
}

/// Polls `GET /v1/health` until 200, failing early if a child exits.
async fn wait_healthy(paths: &SimPaths, procs: &mut Procs, timeout: Duration) -> Result<(), Error> {
    let client = ApiClient::new(&paths.app_socket).with_timeout(Duration::from_secs(2));
    let deadline = Instant::now() + timeout;
    loop {
        for p in [&mut procs.kms, &mut procs.enclave, &mut procs.parent]
            .into_iter()
            .flatten()
        {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(Error::Sim(format!(
                    "{} exited during start ({status}); see {}",
                    p.name,
                    p.log.display()
                )));
            }
        }
        let last = match client.request(Method::GET, "/v1/health", None).await {
            Ok(r) if r.status == StatusCode::OK => return Ok(()),
            Ok(r) => format!("HTTP {}: {}", r.status, r.body),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(Error::Sim(format!(
                "the parent was not healthy within {} s (last: {last}); see the logs in {}",
                timeout.as_secs(),
                paths.logs_dir.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for a signal (`Ok`) or a child's exit; restarts the enclave within limits.
async fn supervise(
    paths: &SimPaths,
    bins: &Binaries,
    procs: &mut Procs,
    started: &Started,
    signals: &mut Signals,
) -> Result<(), Error> {
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    let mut total_restarts = 0u64;
    loop {
        tokio::select! {
            sig = signals.recv() => {
                println!("ekms sim: {sig}: stopping parent, enclave and kms-sim");
                return Ok(());
            }
            status = exited(&mut procs.parent) => {
                return Err(died("parent", status, &paths.log("parent")));
            }
            status = exited(&mut procs.kms) => {
                return Err(died("kms-sim", status, &paths.log("kms-sim")));
            }
            status = exited(&mut procs.enclave) => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                let now = Instant::now();
                while restarts.front().is_some_and(|t| now.duration_since(*t) >= RESTART_WINDOW) {
                    restarts.pop_front();
                }
                if restarts.len() >= MAX_RESTARTS {
                    return Err(Error::Sim(format!(
                        "the enclave exited ({status}) after {MAX_RESTARTS} restarts within {} s: \
                         giving up; see {}",
                        RESTART_WINDOW.as_secs(),
                        paths.log("enclave").display()
                    )));
                }
                let delay = restart_backoff(restarts.len());
                eprintln!(
                    "ekms sim: the enclave exited unexpectedly ({status}); restarting in {} ms",
                    delay.as_millis()
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    sig = signals.recv() => {
                        println!("ekms sim: {sig}: stopping parent and kms-sim");
                        return Ok(());
                    }
                }
                restarts.push_back(Instant::now());
                total_restarts += 1;
                // A signal while the new enclave boots leaves it in its slot, and the
                // caller stops it with the others.
                let pid = tokio::select! {
                    r = launch_enclave(&mut procs.enclave, paths, bins, &started.pin) => r?.pid,
                    sig = signals.recv() => {
                        println!("ekms sim: {sig}: stopping parent, enclave and kms-sim");
                        return Ok(());
                    }
                };
                println!("ekms sim: enclave restarted (pid {pid}); the parent reconnects by itself");
                write_status(paths, bins, procs, started, total_restarts)?;
            }
        }
    }
}

fn died(name: &str, status: std::io::Result<ExitStatus>, log: &Path) -> Error {
    let status = status
        .map(|s| s.to_string())
        .unwrap_or_else(|e| e.to_string());
    Error::Sim(format!(
        "{name} exited unexpectedly ({status}); stopping the simulation; see {}",
        log.display()
    ))
}

/// `sim.json`: pids and paths, for scripts and tests.
fn write_status(
    paths: &SimPaths,
    bins: &Binaries,
    procs: &Procs,
    started: &Started,
    enclave_restarts: u64,
) -> Result<(), Error> {
    let proc_json = |p: &Option<Proc>, bin: &Path| {
        p.as_ref()
            .map(|p| json!({"pid": p.pid, "bin": bin, "log": p.log, "listening": p.listening}))
    };
    let status = json!({
        "pid": std::process::id(),
        "state_dir": paths.state_dir,
        "app_socket": paths.app_socket,
        "enclave_socket": paths.enclave_socket,
        "db": paths.db,
        "ca_root_pem": paths.root_pem,
        "kms_endpoint": started.kms_endpoint,
        "kms_tls_root_pem": paths.kms_tls_root(),
        "kms_key_arn": started.key.arn(),
        "pcr0": started.pcr0_hex,
        "enclave_restarts": enclave_restarts,
        "metrics_listen": started.metrics_listen,
        "processes": {
            "kms-sim": proc_json(&procs.kms, &bins.kms_sim),
            "enclave": proc_json(&procs.enclave, &bins.enclave),
            "parent": proc_json(&procs.parent, &bins.parent),
        },
    });
    let text = serde_json::to_vec_pretty(&status).map_err(|e| Error::Sim(e.to_string()))?;
    write_atomically(&paths.sim_json, &text)
}

fn print_summary(paths: &SimPaths, procs: &Procs, started: &Started) {
    println!("ekms sim: running, state in {}", paths.state_dir.display());
    for p in [&procs.kms, &procs.enclave, &procs.parent]
        .into_iter()
        .flatten()
    {
        println!(
            "  {:<8} pid {:<7} {}  ({}; log {})",
            p.name,
            p.pid,
            if p.name == "kms-sim" {
                started.kms_endpoint.clone()
            } else {
                format!("unix:{}", p.listening.trim_start_matches("unix:"))
            },
            p.bin.display(),
            p.log.display()
        );
    }
    println!("  KMS key  {}", started.key.arn());
    println!("  PCR0     {}", started.pcr0_hex);
    println!("  CA root  {}", paths.root_pem.display());
    println!("  socket   {}", paths.app_socket.display());
    if let Some(addr) = &started.metrics_listen {
        println!("  metrics  {addr} (GET /metrics)");
    }
    println!(
        "ready: export EKMS_SOCKET={} and try `ekms keys create --algorithm ed25519`; Ctrl-C stops",
        paths.app_socket.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim_args(dir: &Path) -> SimArgs {
        SimArgs {
            state_dir: dir.to_path_buf(),
            kms_sim_bin: None,
            enclave_bin: None,
            parent_bin: None,
            health_timeout_secs: 60,
            metrics_listen: None,
        }
    }

    #[test]
    fn resolves_a_metrics_port_0_to_a_free_port() {
        let addr = resolve_metrics_listen("tcp://127.0.0.1:0").unwrap();
        let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
        assert_ne!(port, 0);
        assert_eq!(
            resolve_metrics_listen("unix:/tmp/m.sock").unwrap(),
            "unix:/tmp/m.sock"
        );
        assert_eq!(
            resolve_metrics_listen("tcp://127.0.0.1:9464").unwrap(),
            "tcp://127.0.0.1:9464"
        );
    }

    #[test]
    fn rejects_a_malformed_metrics_tcp_address() {
        assert!(resolve_metrics_listen("tcp://localhost:x").is_err());
    }

    #[test]
    fn layout_is_under_the_state_dir() {
        let p = SimPaths::new(Path::new("/s"));
        assert_eq!(p.app_socket, Path::new("/s/ekms.sock"));
        assert_eq!(p.root_pem, Path::new("/s/ca/root.pem"));
        assert_eq!(p.log("enclave"), Path::new("/s/logs/enclave.log"));
        assert_eq!(p.arn_file, Path::new("/s/kms-key-arn"));
    }

    #[test]
    fn resolves_binaries_next_to_ekms_or_from_flags() {
        let dir = tempfile::tempdir().unwrap();
        for name in [KMS_SIM_BIN, ENCLAVE_BIN, PARENT_BIN] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let other = dir.path().join("custom-enclave");
        std::fs::write(&other, b"").unwrap();
        let mut args = sim_args(dir.path());
        args.enclave_bin = Some(other.clone());
        let bins = Binaries::resolve(&args, dir.path()).unwrap();
        assert_eq!(bins.kms_sim, dir.path().join(KMS_SIM_BIN));
        assert_eq!(bins.enclave, other);
        assert_eq!(bins.parent, dir.path().join(PARENT_BIN));
    }

    #[test]
    fn rejects_missing_binaries_with_a_build_hint() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KMS_SIM_BIN), b"").unwrap();
        let err = Binaries::resolve(&sim_args(dir.path()), dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("ekms-enclave") && text.contains("cargo build"),
            "{text}"
        );
    }

    #[test]
    fn claims_missing_and_stale_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        claim_socket_path(&path).unwrap();
        // A bound-then-dropped listener leaves a stale socket file behind.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        claim_socket_path(&path).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn rejects_a_live_socket_and_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let _live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = claim_socket_path(&path).unwrap_err();
        assert!(err.to_string().contains("live process"), "{err}");
        assert!(path.exists());
        let file = dir.path().join("f.sock");
        std::fs::write(&file, b"x").unwrap();
        assert!(claim_socket_path(&file).is_err());
        assert!(file.exists());
    }

    #[test]
    fn prepares_a_new_state_dir_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let dir = prepare_state_dir(&tmp.path().join("a/b")).unwrap();
        assert!(dir.is_absolute());
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn rejects_leaving_an_existing_state_dir_open() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let dir = prepare_state_dir(&open).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "an existing directory is tightened");
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(prepare_state_dir(&file).is_err());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(restart_backoff(0), Duration::from_millis(500));
        assert_eq!(restart_backoff(1), Duration::from_secs(1));
        assert_eq!(restart_backoff(4), Duration::from_secs(8));
        assert_eq!(restart_backoff(100), Duration::from_secs(8));
    }

    #[test]
    fn writes_atomically_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!dir.path().join("f.tmp").exists());
    }

    #[test]
    fn rejects_writing_into_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_atomically(&dir.path().join("no/such/f"), b"x").is_err());
    }
}
