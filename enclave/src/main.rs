//! `ekms-enclave`: the enclave binary. Parses flags, hardens the process, sets up
//! tracing (stderr), opens the NSM, pins the KMS target (`--kms-key-arn`, required;
//! `--kms-endpoint`, required in simulation), binds the listener, prints `listening on ADDR` on
//! stdout and serves until SIGTERM/SIGINT (then drains and removes a Unix socket).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use ekms_enclave::kms::KmsPin;
use ekms_enclave::{io, open_nsm, Enclave, Limits, NsmKind};
use ekms_shared::{Address, Mode, KMS_PROXY_PORT, PARENT_CID};

/// The enclave side of enclave-kms.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Where to serve the parent: `vsock://4294967295:5000` on Nitro, `unix:/path` in
    /// simulation.
    #[arg(long, env = "EKMS_ENCLAVE_LISTEN", default_value = ekms_shared::SIM_ENCLAVE_ADDRESS)]
    listen: Address,
    /// Also forward every log event, one JSON line each, to the reader that connects
    /// here (the parent's `--enclave-log`): `vsock://4294967295:5001` on Nitro, whose
    /// enclave console nobody reads; `unix:/path` in simulation.
    #[arg(long, env = "EKMS_ENCLAVE_LOG_LISTEN")]
    log_listen: Option<Address>,
    /// Which NSM: `nitro` (/dev/nsm) or `simulation` (needs the `simulation` feature).
    #[arg(long, value_enum, default_value_t = NsmArg::Nitro)]
    nsm: NsmArg,
    /// Directory of the simulation CA (created if missing); simulation only.
    #[arg(long, default_value = "/tmp/ekms-sim-ca")]
    sim_ca_dir: PathBuf,
    /// Connections served at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    max_connections: u32,
    /// Requests executing at once (more are answered `Busy`).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=65536))]
    max_in_flight: u32,
    /// Nitro only: listen on this TCP address inside the enclave and forward each
    /// connection to vsock-proxy on the parent (CID 3, port 8000), for the KMS client's
    /// TLS. See `io::forward_tcp_to_vsock` for the full setup.
    #[arg(long)]
    kms_forward: Option<SocketAddr>,
    /// Required: the only KMS key `Configure` may name (a full key ARN; its region is
    /// the only region `Configure` may name). Set it in the enclave image, where it is
    /// measured: unpinned, a compromised parent can configure a key of its own whose
    /// policy lets it decrypt new keyrings' data keys. The enclave refuses to start
    /// without it.
    #[arg(long, env = "EKMS_KMS_KEY_ARN")]
    kms_key_arn: Option<String>,
    /// The only KMS endpoint `Configure` may name, exactly. Nitro: optional, and if
    /// given the regional endpoint of the key's region; without it `Configure` must name
    /// no endpoint (the SDK's regional one). Simulation: required, kms-sim's `https://`
    /// URL.
    #[arg(long, env = "EKMS_KMS_ENDPOINT")]
    kms_endpoint: Option<String>,
    /// SIMULATION ONLY (not in a `--no-default-features` build): PEM file of the
    /// kms-sim TLS CA, the only root the KMS client then trusts. Required with
    /// `--nsm simulation`, refused with `--nsm nitro`.
    #[cfg(feature = "simulation")]
    #[arg(long)]
    danger_sim_kms_ca: Option<PathBuf>,

    // ---- bounded resources (issue 6 item 6; see ekms_enclave::workers) ----
    /// Threads that open records and sign (their stacks are scrubbed after each job).
    /// Default: the number of cores, at most 16.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    signing_threads: Option<u32>,
    /// Threads that make NSM calls (attestation documents).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    nsm_threads: u32,
    /// Signing jobs waiting for a signing thread; more are answered `Busy`.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65536))]
    signing_queue: u32,
    /// NSM jobs (attestation documents) waiting; more are answered `Busy`.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    nsm_queue: u32,
    /// Sum of the frame sizes of the requests executing at once, in MiB (more are
    /// answered `Busy`).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    max_in_flight_mib: u32,
    /// Most threads of the async runtime's blocking pool (RSA key generation, DNS).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=512))]
    max_blocking_threads: u32,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum NsmArg {
    Nitro,
    Simulation,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // A bounded blocking pool: tokio's default (512 threads) is what let an attestation
    // flood grow the enclave to hundreds of threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(args.max_blocking_threads as usize)
        .build();
    match runtime {
        Ok(rt) => rt.block_on(async_main(args)),
        Err(e) => {
            eprintln!("ekms-enclave: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn async_main(args: Args) -> ExitCode {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // The console (stderr), and, with --log-listen, the same events forwarded to the
    // parent (a production enclave's console is dark): ekms_enclave::logs.
    let (forward, queue) = ekms_enclave::logs::channel();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .finish();
    let queue = if args.log_listen.is_some() {
        subscriber.with(forward).init();
        Some(queue)
    } else {
        subscriber.init();
        None
    };
    if let (Some(addr), Some(queue)) = (&args.log_listen, queue) {
        match io::Listener::bind(addr).await {
            Ok(listener) => {
                tracing::info!(address = %listener.local_address(), "forwarding logs");
                tokio::spawn(ekms_enclave::logs::serve(listener, queue));
            }
            Err(e) => {
                eprintln!("ekms-enclave: cannot listen for log readers on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match start(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("ekms-enclave: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn start(args: Args) -> Result<(), String> {
    // The KMS pin first: an enclave without one must not even open its NSM.
    let (kind, mode) = match args.nsm {
        NsmArg::Nitro => (NsmKind::Nitro, Mode::Nitro),
        NsmArg::Simulation => (NsmKind::Simulation, Mode::Simulation),
    };
    let pin = KmsPin::from_flags(
        args.kms_key_arn.as_deref(),
        args.kms_endpoint.as_deref(),
        mode,
    )
    .map_err(|e| e.to_string())?;
    #[cfg(feature = "simulation")]
    let sim_kms_ca = match (mode, &args.danger_sim_kms_ca) {
        (Mode::Simulation, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        ),
        (Mode::Simulation, None) => {
            return Err("--danger-sim-kms-ca is required with --nsm simulation".into())
        }
        (Mode::Nitro, Some(_)) => {
            return Err("--danger-sim-kms-ca is refused with --nsm nitro".into())
        }
        (Mode::Nitro, None) => None,
    };

    // The worker pools start before hardening, so that mlockall(MCL_CURRENT) locks
    // their stacks too (the stacks where records are opened and keys used).
    let mut pools = ekms_enclave::workers::PoolSizes::default();
    if let Some(n) = args.signing_threads {
        pools.signing_threads = n as usize;
    }
    pools.blocking_threads = args.nsm_threads as usize;
    pools.signing_queue = args.signing_queue as usize;
    pools.blocking_queue = args.nsm_queue as usize;
    ekms_enclave::workers::init(pools)?;
    let hardened =
        ekms_enclave::hardening::apply().map_err(|e| format!("cannot harden the process: {e}"))?;
    tracing::info!(memory_locked = hardened.memory_locked, "process hardened");

    let (nsm, opened) = open_nsm(kind, &args.sim_ca_dir).map_err(|e| e.to_string())?;
    if opened != mode {
        return Err(format!("the NSM opened in {opened:?} mode, not {mode:?}"));
    }
    tracing::info!(
        kms_key = pin.key_arn(),
        region = pin.region(),
        endpoint = pin.endpoint_url().unwrap_or("(regional)"),
        "KMS target pinned"
    );
    let enclave = Enclave::new(nsm, mode)
        .map_err(|e| e.to_string())?
        .with_kms_pin(pin);
    #[cfg(feature = "simulation")]
    let enclave = match sim_kms_ca {
        Some(pem) => {
            tracing::warn!("SIMULATION: the KMS client trusts the kms-sim TLS CA only");
            enclave
                .danger_trust_simulation_kms_ca(pem)
                .map_err(|e| e.to_string())?
        }
        None => enclave,
    };
    let enclave = Arc::new(enclave);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = args.kms_forward {
        let listener = io::bind_tcp(addr)
            .await
            .map_err(|e| format!("cannot bind the KMS forwarder on {addr}: {e}"))?;
        let mut stop = stop_rx.clone();
        tokio::spawn(io::forward_tcp_to_vsock(
            listener,
            PARENT_CID,
            KMS_PROXY_PORT,
            async move {
                let _ = stop.changed().await;
            },
        ));
        tracing::info!(%addr, "forwarding KMS TLS to vsock://{PARENT_CID}:{KMS_PROXY_PORT}");
    }

    let listener = io::Listener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let bound = listener.local_address();
    tracing::info!(address = %bound, ?mode, "listening");
    println!("listening on {bound}");

    let limits = Limits {
        max_connections: args.max_connections as usize,
        max_in_flight: args.max_in_flight as usize,
        max_in_flight_bytes: args.max_in_flight_mib as usize * 1024 * 1024,
        pools,
    };
    let shutdown = shutdown_signal().await?;
    ekms_enclave::run(listener, enclave, limits, shutdown).await;
    let _ = stop_tx.send(true);
    tracing::info!("stopped");
    Ok(())
}

/// A future that resolves on SIGTERM or SIGINT (handlers installed before serving).
async fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    })
}
