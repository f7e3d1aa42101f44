//! The `ekms` binary: parses the command line (clap exits with status 2 on a usage
//! error), runs it on a tokio runtime, and maps an error to stderr and an exit status
//! (see the crate docs of `ekms_cli`).

use std::process::ExitCode;

use clap::Parser as _;
use ekms_cli::args::Cli;

/// How long blocking tasks (file I/O, hashing) may still run once the command is done.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ekms: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(ekms_cli::run(cli));
    // Dropping a runtime waits for every `spawn_blocking` task, and `ekms sim` may have
    // one still hashing the enclave executable (tens of seconds for a debug build) when
    // a signal stops it during start: give blocking work a moment, then exit anyway.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ekms: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
