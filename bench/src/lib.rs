//! `ekms-bench` (`make bench`): how many signatures per second the whole system gives
//! an application, set against what the bare signing primitives give on the same
//! machine in the same run.
//!
//! One run:
//!
//! 1. starts `ekms sim` (kms-sim, the enclave with its simulated NSM, the parent) in a
//!    temporary directory, from `--bin-dir`, under a guard that stops it on every exit
//!    path ([`sim::SimGuard`]);
//! 2. creates a secp256k1 and an ed25519 key whose policies allow exactly the
//!    benchmark's payloads ([`payloads`]), and checks one real signature of each;
//! 3. measures, on one thread, the in-process rates of `k256` recoverable signing of a
//!    32-byte prehash and of `ed25519-dalek` signing of the Solana message, bare and
//!    through `ekms_signer::{sign_evm, sign_solana}`;
//! 4. measures end-to-end signatures per second through the app socket (HTTP/1.1 +
//!    JSON → parent → enclave) at each `--in-flight` level, EVM and Solana: warm-up,
//!    then rounds; median, min and max over rounds, p50/p99 latency, errors, and the CPU
//!    time each process spent per signature;
//! 5. prints the Markdown report ([`report`]) and with `--out` writes it to a file.
//!
//! Medians over rounds and ratios within one run are the point: absolute numbers move
//! with the machine and its load; the ratio of end-to-end to bare signing moves less.

pub mod measure;
pub mod payloads;
pub mod report;
pub mod sim;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::measure::{end_to_end, percentile, raw_rates, EndToEnd, Rates, Scenario};
use crate::report::{CpuRow, Machine, Report, Row};
use crate::sim::{cpu_time, SimGuard};
use ekms_client::{BearerToken, ClientError, Conn};
use ekms_shared::api::{CreateKeyRequest, CreatedKey};
use ekms_shared::Algorithm;

/// Every error of the benchmark. None carries key material (the benchmark never
/// sees a key of the system under test).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Starting, reaching or stopping `ekms sim` failed.
    #[error("simulation: {0}")]
    Sim(String),
    /// Transport or HTTP framing error on the app socket.
    #[error("HTTP: {0}")]
    Http(String),
    /// The API answered a setup request (health, key creation) with an error.
    #[error("API: {0}")]
    Api(String),
    /// A sign answer is not a valid signature by the expected key.
    #[error("bad answer: {0}")]
    BadAnswer(String),
    /// A benchmark payload could not be built.
    #[error("payload: {0}")]
    Payload(String),
    /// Local I/O (the temporary directory, `--out`).
    #[error("{0}")]
    Io(String),
    /// The arguments make no sense (zero rounds, no in-flight level, …).
    #[error("usage: {0}")]
    Usage(String),
}

impl From<ClientError> for Error {
    fn from(e: ClientError) -> Self {
        Error::Http(e.to_string())
    }
}

/// A keep-alive connection to the app socket at `socket` ([`ekms_client::Conn`]),
/// carrying the admin token the parent keeps beside its socket (`admin.token`, as
/// `ekms sim` lays it out) when that file exists.
///
/// # Errors
/// [`Error::Http`] if the token file cannot be read or the socket does not accept.
pub async fn connect(socket: &Path) -> Result<Conn, Error> {
    Ok(Conn::connect(socket, BearerToken::beside_socket(socket)?).await?)
}

/// Command line of `ekms-bench`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "ekms-bench",
    about = "End-to-end signatures/s of `ekms sim` (EVM, Solana) beside raw in-process k256 / ed25519 signing rates"
)]
pub struct Args {
    /// Directory holding `ekms`, `ekms-parent`, `ekms-enclave` and `kms-sim`
    /// [default: the directory of this executable].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Measured rounds per scenario (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Seconds per end-to-end round.
    #[arg(long, default_value_t = 3.0)]
    pub round_secs: f64,
    /// Seconds of warm-up before each end-to-end scenario.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,
    /// Seconds per in-process round.
    #[arg(long, default_value_t = 0.5)]
    pub raw_round_secs: f64,
    /// Requests in flight, comma-separated; one connection each.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64,256")]
    pub in_flight: Vec<usize>,
    /// In-flight levels of the extra EVM curve with the DEK cache off (a second
    /// simulation with EKMS_DEK_CACHE_MAX_USES=0: an attested KMS Decrypt with a
    /// Recipient for every signature); `--dek-off-in-flight 0` skips it.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub dek_off_in_flight: Vec<usize>,
    /// Python interpreter with `eth-account` and `solders` for the in-process Python
    /// comparison rows (bench/python/sign_in_process.py); without it the rows are left
    /// out.
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The Python script [default: bench/python/sign_in_process.py beside the crate].
    #[arg(long)]
    pub python_script: Option<PathBuf>,
    /// DEK cache time to live given to the parent (EKMS_DEK_CACHE_TTL_SECS).
    #[arg(long, default_value_t = 300)]
    pub dek_cache_ttl_secs: u64,
    /// DEK cache uses before a KMS Decrypt (EKMS_DEK_CACHE_MAX_USES; 0 = every time).
    #[arg(long, default_value_t = 1000)]
    pub dek_cache_max_uses: u64,
    /// Seconds to wait for the simulation to become healthy.
    #[arg(long, default_value_t = 120)]
    pub health_timeout_secs: u64,
    /// Also write the Markdown report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn secs(x: f64, what: &str) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(x)
        .ok()
        .filter(|d| !d.is_zero() || what == "warm-up")
        .ok_or_else(|| Error::Usage(format!("{what}: {x} is not a positive number of seconds")))
}

/// Runs the whole benchmark (see the crate docs) and returns its report.
///
/// # Errors
/// Any [`Error`] of setup: the simulation does not start or become healthy, key
/// creation fails, a first signature is not valid. Failed requests during the
/// measurement are counted in the report, not returned as errors.
pub async fn run(args: Args) -> Result<Report, Error> {
    let round = secs(args.round_secs, "round")?;
    let warmup = secs(args.warmup_secs, "warm-up")?;
    let raw_round = secs(args.raw_round_secs, "raw round")?;
    if args.rounds == 0 || args.in_flight.is_empty() || args.in_flight.contains(&0) {
        return Err(Error::Usage(
            "need at least one round and in-flight levels ≥ 1".into(),
        ));
    }
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .ok_or_else(|| Error::Io("cannot locate this executable".into()))?,
    };
    let mut machine = Machine::probe();

    // Declared before the guard so that it is removed after the guard stopped the sim.
    let dir = tempfile::Builder::new()
        .prefix("ekms-bench-")
        .tempdir()
        .map_err(|e| Error::Io(format!("temporary directory: {e}")))?;
    let started = Instant::now();
    let mut guard = SimGuard::start(
        &bin_dir.join("ekms"),
        &dir.path().join("state"),
        &dir.path().join("sim.out"),
        Duration::from_secs(args.health_timeout_secs),
        &[
            (
                "EKMS_DEK_CACHE_TTL_SECS",
                args.dek_cache_ttl_secs.to_string(),
            ),
            (
                "EKMS_DEK_CACHE_MAX_USES",
                args.dek_cache_max_uses.to_string(),
            ),
        ],
    )?;
    let socket = guard.socket();
    wait_healthy(&mut guard, Duration::from_secs(args.health_timeout_secs)).await?;
    eprintln!(
        "ekms-bench: simulation healthy after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Keys and payloads, and one checked signature each.
    let mut conn = connect(&socket).await?;
    let evm_key = create_key(&mut conn, Algorithm::Secp256k1, payloads::evm_policy()).await?;
    let sol_key = create_key(&mut conn, Algorithm::Ed25519, payloads::solana_policy()).await?;
    let evm_tx = payloads::evm_unsigned_tx();
    let sol_tx = payloads::solana_unsigned_tx(payloads::decode_solana_key(&sol_key.public_key)?)?;
    let evm_body = Bytes::from(payloads::evm_sign_body(&evm_tx));
    let sol_body = Bytes::from(payloads::solana_sign_body(&sol_tx));
    let evm_uri = format!("/v1/keys/{}/sign", evm_key.id);
    let sol_uri = format!("/v1/keys/{}/sign", sol_key.id);
    let answer = sign_once(&mut conn, &evm_uri, evm_body.clone()).await?;
    payloads::check_evm_answer(&answer, &evm_tx, &evm_key.address)?;
    let answer = sign_once(&mut conn, &sol_uri, sol_body.clone()).await?;
    payloads::check_solana_answer(&answer, &sol_tx, &sol_key.public_key)?;
    drop(conn);
    eprintln!("ekms-bench: keys created, first signatures verified");

    // In-process rates, one thread, while the simulation is idle.
    let raw = {
        let (evm_tx, sol_tx) = (evm_tx.clone(), sol_tx.clone());
        let rounds = args.rounds;
        tokio::task::spawn_blocking(move || raw_signing(&evm_tx, &sol_tx, raw_round, rounds))
            .await
            .map_err(|e| Error::Io(format!("in-process measurement: {e}")))??
    };
    eprintln!("ekms-bench: in-process rates measured");

    let mut report = Report {
        machine: Machine::default(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        ..Report::default()
    };
    let curves = [
        (
            "EVM end-to-end (EIP-1559 transfer)",
            "EVM",
            &evm_uri,
            &evm_body,
            &raw.k256,
            &raw.sign_evm,
        ),
        (
            "Solana end-to-end (System transfer)",
            "Solana",
            &sol_uri,
            &sol_body,
            &raw.ed25519,
            &raw.sign_solana,
        ),
    ];
    for (label, short, uri, body, primitive, signer) in curves {
        for &in_flight in &args.in_flight {
            let scenario = Scenario {
                uri: uri.clone(),
                body: body.clone(),
                expect: b"\"signed_transaction\"",
                in_flight,
                warmup,
                rounds: args.rounds,
                round,
            };
            measure_scenario(
                &guard,
                &scenario,
                label,
                short,
                primitive,
                signer,
                &mut report,
            )
            .await?;
        }
    }
    guard.stop();
    // The strictest setting: no plaintext data key kept between signatures.
    let dek_off: Vec<usize> = args
        .dek_off_in_flight
        .iter()
        .copied()
        .filter(|&n| n > 0)
        .collect();
    let rsa = if dek_off.is_empty() {
        None
    } else {
        let dir_off = dir.path().join("dek-off");
        std::fs::create_dir_all(&dir_off)
            .map_err(|e| Error::Io(format!("{}: {e}", dir_off.display())))?;
        let mut off = SimGuard::start(
            &bin_dir.join("ekms"),
            &dir_off.join("state"),
            &dir_off.join("sim.out"),
            Duration::from_secs(args.health_timeout_secs),
            &[
                (
                    "EKMS_DEK_CACHE_TTL_SECS",
                    args.dek_cache_ttl_secs.to_string(),
                ),
                ("EKMS_DEK_CACHE_MAX_USES", "0".into()),
            ],
        )?;
        wait_healthy(&mut off, Duration::from_secs(args.health_timeout_secs)).await?;
        let mut conn = connect(&off.socket()).await?;
        let key = create_key(&mut conn, Algorithm::Secp256k1, payloads::evm_policy()).await?;
        let uri = format!("/v1/keys/{}/sign", key.id);
        let answer = sign_once(&mut conn, &uri, evm_body.clone()).await?;
        payloads::check_evm_answer(&answer, &evm_tx, &key.address)?;
        drop(conn);
        for &in_flight in &dek_off {
            let scenario = Scenario {
                uri: uri.clone(),
                body: evm_body.clone(),
                expect: b"\"signed_transaction\"",
                in_flight,
                warmup,
                rounds: args.rounds,
                round,
            };
            measure_scenario(
                &off,
                &scenario,
                "EVM end-to-end, DEK cache off (KMS Decrypt + Recipient per signature)",
                "EVM DEK off",
                &raw.k256,
                &raw.sign_evm,
                &mut report,
            )
            .await?;
        }
        off.stop();
        let rounds = args.rounds;
        Some(
            tokio::task::spawn_blocking(move || rsa_oaep_rates(raw_round, rounds))
                .await
                .map_err(|e| Error::Io(format!("RSA-OAEP measurement: {e}")))??,
        )
    };
    let python = match &args.python {
        Some(py) => {
            let script = args.python_script.clone().unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/sign_in_process.py")
            });
            Some(python_rates(py, &script, args.rounds, raw_round).await?)
        }
        None => None,
    };
    report.rows.extend([
        raw_row(
            "in-process k256 `sign_prehash_recoverable` (bare)",
            &raw.k256,
            &raw.k256,
            &raw.sign_evm,
        ),
        raw_row(
            "in-process `ekms_signer::sign_evm` (sign + encode + keccak)",
            &raw.sign_evm,
            &raw.k256,
            &raw.sign_evm,
        ),
        raw_row(
            "in-process ed25519-dalek `SigningKey::sign` (bare)",
            &raw.ed25519,
            &raw.ed25519,
            &raw.sign_solana,
        ),
        raw_row(
            "in-process `ekms_signer::sign_solana` (sign + place in tx)",
            &raw.sign_solana,
            &raw.ed25519,
            &raw.sign_solana,
        ),
    ]);
    if let Some(rsa) = &rsa {
        report.rows.push(raw_row(
            "in-process RSA-2048 OAEP-SHA-256 decrypt, aws-lc-rs (the enclave's unwrap of CiphertextForRecipient)",
            rsa,
            &raw.k256,
            &raw.sign_evm,
        ));
    }
    if let Some((eth, sol)) = &python {
        report.rows.push(raw_row(
            "in-process Python `eth-account` `Account.sign_transaction` (EIP-1559)",
            eth,
            &raw.k256,
            &raw.sign_evm,
        ));
        report.rows.push(raw_row(
            "in-process Python `solders` (sign + place in a `Transaction`)",
            sol,
            &raw.ed25519,
            &raw.sign_solana,
        ));
    }
    machine.finish();
    report.machine = machine;
    report.settings = vec![
        ("rounds".into(), format!("{} × {:.1} s per end-to-end scenario after {:.1} s warm-up; {} × {:.2} s per in-process rate after one warm-up round", args.rounds, round.as_secs_f64(), warmup.as_secs_f64(), args.rounds, raw_round.as_secs_f64())),
        ("client".into(), "this process, tokio multi-thread runtime on the same machine, one keep-alive HTTP/1.1 connection per request in flight over the Unix socket; every answer checked for status 200 and a `signed_transaction` field; one answer per key fully verified (signature recovers / verifies) before timing".into()),
        ("payloads".into(), format!("EVM: unsigned EIP-1559 ether transfer, {} bytes; Solana: unsigned legacy transaction with one System Program transfer, {} bytes", evm_tx.len(), sol_tx.len())),
        ("DEK cache".into(), format!("ttl {} s, {} uses per KMS Decrypt (EKMS_DEK_CACHE_TTL_SECS / EKMS_DEK_CACHE_MAX_USES)", args.dek_cache_ttl_secs, args.dek_cache_max_uses)),
    ];
    Ok(report)
}

/// Runs one end-to-end scenario against `guard`'s simulation and adds its row and its
/// CPU row to `report`.
async fn measure_scenario(
    guard: &SimGuard,
    scenario: &Scenario,
    label: &str,
    short: &str,
    primitive: &Rates,
    signer: &Rates,
    report: &mut Report,
) -> Result<(), Error> {
    let in_flight = scenario.in_flight;
    let mut procs = guard.children();
    // `ekms sim` writes sim.json once its processes run; give a new simulation a moment.
    for _ in 0..20 {
        if procs.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        procs = guard.children();
    }
    procs.push(("ekms-bench".into(), std::process::id()));
    let before: Vec<_> = procs.iter().map(|(_, pid)| cpu_time(*pid)).collect();
    let result = end_to_end(&guard.socket(), scenario).await?;
    let after: Vec<_> = procs.iter().map(|(_, pid)| cpu_time(*pid)).collect();
    eprintln!(
        "ekms-bench: {short} × {in_flight}: median {:.0} sig/s, {} errors{}",
        result.rates.median(),
        result.errors,
        result
            .first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    // CPU of the warm-up is in the window too; scale by the requests counted over the
    // same window (measured ok + warm-up estimated at the same rate).
    let window = scenario.warmup + result.wall;
    let signatures = result.ok as f64 * window.as_secs_f64() / result.wall.as_secs_f64();
    let mut per_signature = Vec::new();
    let mut busy = Duration::ZERO;
    for ((name, _), (b, a)) in procs.iter().zip(before.iter().zip(after.iter())) {
        if let (Some(b), Some(a)) = (b, a) {
            let used = a.saturating_sub(*b);
            busy += used;
            per_signature.push((name.clone(), used.div_f64(signatures.max(1.0))));
        }
    }
    report.cpu.push(CpuRow {
        scenario: format!("{short}, {in_flight} in flight"),
        per_signature,
        cores_busy: busy.as_secs_f64() / window.as_secs_f64(),
    });
    report
        .rows
        .push(e2e_row(label, in_flight, &result, primitive, signer));
    Ok(())
}

/// One thread: RSA-2048 OAEP (SHA-256, MGF1-SHA-256) decryptions of a 32-byte key per
/// second with aws-lc-rs, what the enclave does once per KMS answer.
fn rsa_oaep_rates(round: Duration, rounds: usize) -> Result<Rates, Error> {
    use aws_lc_rs::rsa::{
        KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA256_MGF1SHA256,
    };
    let err = |e: aws_lc_rs::error::Unspecified| Error::Payload(format!("RSA: {e}"));
    let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).map_err(err)?;
    let public = private.public_key();
    let encrypting = aws_lc_rs::rsa::OaepPublicEncryptingKey::new(public).map_err(err)?;
    let decrypting = OaepPrivateDecryptingKey::new(private).map_err(err)?;
    let mut ciphertext = vec![0u8; encrypting.ciphertext_size()];
    let sealed = encrypting
        .encrypt(&OAEP_SHA256_MGF1SHA256, &[7u8; 32], &mut ciphertext, None)
        .map_err(err)?
        .to_vec();
    let mut out = vec![0u8; decrypting.min_output_size()];
    let mut once = || {
        decrypting
            .decrypt(&OAEP_SHA256_MGF1SHA256, &sealed, &mut out, None)
            .map(|p| p.len())
    };
    once().map_err(err)?;
    let mut rates = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < round {
            std::hint::black_box(once().map_err(err)?);
            n += 1;
        }
        rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
    Ok(Rates(rates))
}

/// Runs the Python comparison script; its per-round rates of eth-account and solders.
async fn python_rates(
    python: &Path,
    script: &Path,
    rounds: usize,
    round: Duration,
) -> Result<(Rates, Rates), Error> {
    // eth-account is ~100x slower than k256: longer rounds keep its count meaningful.
    let secs = round.as_secs_f64().max(1.0);
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(rounds.to_string())
        .arg(format!("{secs}"))
        .output()
        .await
        .map_err(|e| Error::Io(format!("running {}: {e}", python.display())))?;
    if !out.status.success() {
        return Err(Error::Io(format!(
            "{} {}: {}",
            python.display(),
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::Io(format!("Python comparison output: {e}")))?;
    let rates = |k: &str| {
        v[k].as_array()
            .map(|a| Rates(a.iter().filter_map(Value::as_f64).collect()))
            .filter(|r| !r.0.is_empty())
            .ok_or_else(|| Error::Io(format!("Python comparison output has no {k:?}")))
    };
    Ok((rates("eth_account")?, rates("solders")?))
}

/// Polls `GET /v1/health` until it answers 200, the sim exits, or `timeout` passes.
async fn wait_healthy(guard: &mut SimGuard, timeout: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    let socket = guard.socket();
    loop {
        if let Some(status) = guard.exited() {
            return Err(Error::Sim(format!(
                "`ekms sim` exited ({status}) before it was healthy; its output ends with:\n{}",
                guard.log_tail(20)
            )));
        }
        if let Ok(mut conn) = connect(&socket).await {
            if let Ok((StatusCode::OK, _)) =
                conn.request(Method::GET, "/v1/health", Bytes::new()).await
            {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::Sim(format!(
                "not healthy after {} s; `ekms sim` output ends with:\n{}",
                timeout.as_secs(),
                guard.log_tail(20)
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A key created for the benchmark.
struct Key {
    id: String,
    address: String,
    public_key: String,
}

async fn create_key(conn: &mut Conn, algorithm: Algorithm, policy: Value) -> Result<Key, Error> {
    let body = CreateKeyRequest {
        algorithm: algorithm.into(),
        label: Some("ekms-bench".into()),
        policy: Some(policy),
        owner: None,
    };
    let body = serde_json::to_vec(&body).map_err(|e| Error::Api(e.to_string()))?;
    let (status, bytes) = conn
        .request(Method::POST, "/v1/keys", Bytes::from(body))
        .await?;
    if status != StatusCode::CREATED {
        return Err(Error::Api(format!(
            "POST /v1/keys ({}): {status} {}",
            algorithm.as_str(),
            String::from_utf8_lossy(&bytes)
        )));
    }
    let created: CreatedKey = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Api(format!("POST /v1/keys answer: {e}")))?;
    Ok(Key {
        id: created.key.key_id,
        address: created.key.address,
        public_key: created.key.public_key,
    })
}

async fn sign_once(conn: &mut Conn, uri: &str, body: Bytes) -> Result<Value, Error> {
    let (status, bytes) = conn.request(Method::POST, uri, body).await?;
    if status != StatusCode::OK {
        return Err(Error::Api(format!(
            "POST {uri}: {status} {}",
            String::from_utf8_lossy(&bytes)
        )));
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::Api(format!("sign answer not JSON: {e}")))
}

/// In-process signing rates.
struct RawRates {
    k256: Rates,
    sign_evm: Rates,
    ed25519: Rates,
    sign_solana: Rates,
}

/// Fixed test keys for the in-process rates: their values do not change the cost.
const RAW_SECP256K1: [u8; 32] = [0x42; 32];
const RAW_ED25519: [u8; 32] = [0x43; 32];

fn raw_signing(
    evm_tx: &[u8],
    sol_tx_for_api: &[u8],
    round: Duration,
    rounds: usize,
) -> Result<RawRates, Error> {
    use ed25519_dalek::Signer as _;
    use std::hint::black_box;
    let payload_err = |e: ekms_signer::SignerError| Error::Payload(e.to_string());

    let tx = ekms_signer::decode_unsigned(evm_tx).map_err(payload_err)?;
    let prehash = tx.sighash();
    let evm_secret =
        ekms_signer::Secp256k1Secret::from_bytes(&RAW_SECP256K1).map_err(payload_err)?;
    let k256_key = k256::ecdsa::SigningKey::from_slice(&RAW_SECP256K1)
        .map_err(|e| Error::Payload(format!("k256 key: {e}")))?;

    // The same transaction shape as the API's, with our local key as the fee payer.
    let ed_secret = ekms_signer::Ed25519Secret::from_bytes(&RAW_ED25519).map_err(payload_err)?;
    let ed_public: [u8; 32] = ed_secret
        .public_key()
        .try_into()
        .map_err(|_| Error::Payload("ed25519 public key length".into()))?;
    let sol_tx = payloads::solana_unsigned_tx(ed_public)?;
    if sol_tx.len() != sol_tx_for_api.len() {
        return Err(Error::Payload(
            "local and API Solana payloads differ in size".into(),
        ));
    }
    let sol = ekms_signer::decode_solana(&sol_tx).map_err(payload_err)?;
    let ed_key = ed25519_dalek::SigningKey::from_bytes(&RAW_ED25519);
    // Fail before timing if a path errors (the loops below discard results).
    ekms_signer::sign_evm(&tx, &evm_secret).map_err(payload_err)?;
    ekms_signer::sign_solana(&sol, &ed_secret, &ed_public).map_err(payload_err)?;

    Ok(RawRates {
        k256: raw_rates(round, rounds, || {
            black_box(k256_key.sign_prehash_recoverable(black_box(&prehash)));
        }),
        sign_evm: raw_rates(round, rounds, || {
            let _ = black_box(ekms_signer::sign_evm(black_box(&tx), &evm_secret));
        }),
        ed25519: raw_rates(round, rounds, || {
            black_box(ed_key.sign(black_box(sol.message_bytes())));
        }),
        sign_solana: raw_rates(round, rounds, || {
            let _ = black_box(ekms_signer::sign_solana(
                black_box(&sol),
                &ed_secret,
                &ed_public,
            ));
        }),
    })
}

fn e2e_row(label: &str, in_flight: usize, r: &EndToEnd, primitive: &Rates, signer: &Rates) -> Row {
    let median = r.rates.median();
    Row {
        path: label.to_string(),
        in_flight: in_flight.to_string(),
        rates: r.rates.clone(),
        p50: percentile(&r.latencies, 50.0),
        p99: percentile(&r.latencies, 99.0),
        p999: percentile(&r.latencies, 99.9),
        ratio_primitive: ratio(median, primitive.median()),
        ratio_signer: ratio(median, signer.median()),
        errors: Some(r.errors),
    }
}

fn raw_row(label: &str, rates: &Rates, primitive: &Rates, signer: &Rates) -> Row {
    let median = rates.median();
    Row {
        path: label.to_string(),
        in_flight: "1 thread".into(),
        rates: rates.clone(),
        p50: (median > 0.0).then(|| Duration::from_secs_f64(1.0 / median)),
        p99: None,
        p999: None,
        ratio_primitive: ratio(median, primitive.median()),
        ratio_signer: ratio(median, signer.median()),
        errors: None,
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn default_arguments() {
        let a = Args::try_parse_from(["ekms-bench"]).unwrap();
        assert_eq!(a.in_flight, vec![1, 8, 64, 256]);
        assert_eq!(a.dek_off_in_flight, vec![1, 64]);
        assert_eq!(a.rounds, 5);
        assert_eq!(secs(a.round_secs, "round").unwrap(), Duration::from_secs(3));
        let a =
            Args::try_parse_from(["ekms-bench", "--in-flight", "1,8,64", "--out", "x.md"]).unwrap();
        assert_eq!(a.in_flight, vec![1, 8, 64]);
    }

    #[test]
    fn rejects_bad_durations_and_levels() {
        assert!(secs(0.0, "round").is_err());
        assert!(secs(-1.0, "round").is_err());
        assert!(secs(f64::NAN, "round").is_err());
        assert!(secs(0.0, "warm-up").is_ok());
        assert!(Args::try_parse_from(["ekms-bench", "--in-flight", "x"]).is_err());
    }

    #[tokio::test]
    async fn rejects_zero_rounds_before_starting_anything() {
        let mut a = Args::try_parse_from(["ekms-bench", "--bin-dir", "/nonexistent"]).unwrap();
        a.rounds = 0;
        assert!(matches!(run(a).await, Err(Error::Usage(_))));
    }

    #[tokio::test]
    async fn rejects_a_bin_dir_without_ekms() {
        let dir = tempfile::tempdir().unwrap();
        let a = Args::try_parse_from(["ekms-bench", "--bin-dir", dir.path().to_str().unwrap()])
            .unwrap();
        assert!(matches!(run(a).await, Err(Error::Sim(_))));
    }

    #[test]
    fn raw_signing_rates_are_positive() {
        let evm = payloads::evm_unsigned_tx();
        let sol = payloads::solana_unsigned_tx([9; 32]).unwrap();
        let r = raw_signing(&evm, &sol, Duration::from_millis(20), 1).unwrap();
        for rates in [&r.k256, &r.sign_evm, &r.ed25519, &r.sign_solana] {
            assert_eq!(rates.0.len(), 1);
            assert!(rates.median() > 0.0);
        }
        assert_eq!(ratio(1.0, 0.0), 0.0);
        assert_eq!(ratio(1.0, 4.0), 0.25);
    }
}
