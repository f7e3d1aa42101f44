//! `ekms-parent` binary: parses flags, sets up tracing, binds, prints
//! `listening on <addr>` to stdout once the application socket is bound, and serves
//! until SIGTERM or Ctrl-C (then drains in-flight requests and removes the socket file).

use std::process::ExitCode;

use clap::Parser as _;
use ekms_parent::config::Args;
use ekms_parent::Server;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "ekms-parent failed");
            eprintln!("ekms-parent: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> Result<(), ekms_parent::Error> {
    let config = args.into_config()?;
    let server = Server::bind(config).await?;
    println!("listening on {}", server.local_addr()?);
    if let Some(addr) = server.metrics_addr()? {
        tracing::info!(%addr, "serving GET /metrics");
    }
    server.run(shutdown_signal()).await
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT). If the handlers cannot be installed the
/// process runs until killed, which is logged.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: draining in-flight requests");
}
