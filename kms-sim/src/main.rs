//! The `kms-sim` command: parses flags, sets up tracing (stderr), loads or creates the
//! TLS CA (`--tls-ca-dir`), binds the listener, prints `listening on <addr>` (served as
//! `https://<addr>`) as the first line on stdout (so a test starting it on
//! port 0 can read the port), and runs [`kms_sim::run`] until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// A local AWS KMS emulator (JSON 1.1 protocol) with attestation-gated key policies.
/// SIMULATION ONLY: key material is stored in plaintext in the state directory.
#[derive(Debug, Parser)]
#[command(name = "kms-sim", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:4566", env = "KMS_SIM_LISTEN")]
    listen: SocketAddr,
    /// Directory where keys and policies persist (created if missing).
    #[arg(long, env = "KMS_SIM_STATE_DIR")]
    state_dir: PathBuf,
    /// PEM root certificate that attestation documents must chain to. Without it,
    /// the pinned AWS Nitro Enclaves root is trusted.
    #[arg(long, env = "KMS_SIM_ATTESTATION_ROOT")]
    attestation_root: Option<PathBuf>,
    /// Largest age of an attestation document, in seconds.
    #[arg(long, default_value_t = 300)]
    max_document_age: u64,
    /// Region in key ARNs.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Account id in key ARNs.
    #[arg(long, default_value = "111122223333")]
    account_id: String,
    /// Latency added to every KMS request, in milliseconds (fault injection).
    #[arg(long, default_value_t = 0)]
    inject_latency_ms: u64,
    /// Answer the first N KMS requests with ThrottlingException (fault injection).
    #[arg(long, default_value_t = 0)]
    inject_throttle_next: u64,
    /// Answer the first N KMS requests with KMSInternalException, HTTP 500 (fault injection).
    #[arg(long, default_value_t = 0)]
    inject_fail_next: u64,
    /// Directory of the TLS CA (created if missing): kms-sim serves HTTPS only, with a
    /// certificate from this CA; clients trust its `kms-tls-root.pem`.
    #[arg(long, env = "KMS_SIM_TLS_CA_DIR")]
    tls_ca_dir: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let config = kms_sim::Config {
        state_dir: args.state_dir,
        attestation_root: args.attestation_root,
        max_document_age: Duration::from_secs(args.max_document_age),
        region: args.region,
        account_id: args.account_id,
        faults: kms_sim::FaultSettings {
            latency_ms: Some(args.inject_latency_ms),
            throttle_next: Some(args.inject_throttle_next),
            fail_next: Some(args.inject_fail_next),
        },
        tls_ca_dir: args.tls_ca_dir,
    };
    // Before "listening on": whoever waits for that line may read the root file.
    if let Err(e) = kms_sim::tls::TlsCa::load_or_create(&config.tls_ca_dir) {
        eprintln!("kms-sim: {e}");
        return ExitCode::FAILURE;
    }
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("kms-sim: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on {addr}"),
        Err(e) => {
            eprintln!("kms-sim: listener has no address: {e}");
            return ExitCode::FAILURE;
        }
    }
    match kms_sim::run(listener, config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kms-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot install the SIGTERM handler");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested");
}
