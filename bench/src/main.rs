//! The `ekms-bench` binary: parses the command line, runs the benchmark (see the
//! crate docs of `ekms_bench`) on a tokio runtime until it ends or Ctrl-C / SIGTERM
//! arrives (the simulation guard stops `ekms sim` either way), prints the Markdown
//! report on stdout and writes it to `--out`. Exit status: 0 on success, 1 if setup
//! failed or any request failed, 2 on a usage error (clap).

use std::process::ExitCode;

use clap::Parser as _;
use ekms_bench::{run, Args, Error};

fn main() -> ExitCode {
    let args = Args::parse();
    let out = args.out.clone();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ekms-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            r = run(args) => r,
            s = shutdown_signal() => Err(s),
        }
    });
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            eprintln!("ekms-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = report.markdown();
    println!("{text}");
    if let Some(path) = out {
        if let Err(e) = std::fs::write(&path, &text) {
            eprintln!("ekms-bench: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if report.errors() > 0 {
        eprintln!("ekms-bench: {} requests failed", report.errors());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Resolves on Ctrl-C or SIGTERM, as the error that ends the run.
async fn shutdown_signal() -> Error {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => s.recv().await,
            // No SIGTERM handler: rely on Ctrl-C alone.
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Error::Io("interrupted (Ctrl-C)".into()),
        _ = term => Error::Io("terminated (SIGTERM)".into()),
    }
}
