//! The `ekms` binary: parses the command line (clap exits with status 2 on a usage
//! error), runs it on a tokio runtime, and maps an error to stderr and an exit status
//! (see the crate docs of `ekms_cli`).

use std::process::ExitCode;

use clap::Parser as _;
use ekms_cli::args::Cli;

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
    match runtime.block_on(ekms_cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ekms: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
