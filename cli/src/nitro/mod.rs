//! `ekms nitro …`: tools for a real AWS Nitro Enclaves deployment (docs/DEPLOY.md):
//! the KMS key policy and IAM policy rendered from the image's measurements
//! ([`key_policy`]) and a setup doctor ([`doctor`]).

pub mod doctor;
pub mod key_policy;
pub mod measurements;

use clap::Subcommand;
use serde_json::Value;

use crate::Error;

/// `ekms nitro …`
#[derive(Debug, Subcommand)]
pub enum NitroCommand {
    /// Render the KMS key policy and the instance role's IAM policy for an enclave
    /// image, from the measurements nitro-cli prints.
    Policy(key_policy::PolicyArgs),
    /// Check a Nitro host's setup, in order, with a fix for each failure.
    Doctor(doctor::DoctorArgs),
}

/// Runs one `ekms nitro` command; its JSON output.
///
/// # Errors
/// The command's [`Error`].
pub async fn run(command: NitroCommand, socket: &std::path::Path) -> Result<Value, Error> {
    match command {
        NitroCommand::Policy(args) => key_policy::run(&args),
        NitroCommand::Doctor(args) => doctor::run(&args, socket).await,
    }
}
