//! The `ekms` command: runs the simulation (`ekms sim`, see [`sim`]) and is a client of
//! the parent's application API on its Unix socket (keys, policies, signing, health,
//! attestation verification).
//!
//! Output contract: the server's JSON answer, pretty-printed, on stdout; errors on
//! stderr as `ekms: <code>: <message>`, with exit status 2 for a usage error, 3 for an
//! audit chain that `ekms audit verify` rejects, and 1 for everything else (a refused
//! request, an unreachable socket, a failed attestation verification). `ekms owner sign`
//! prints the bare signature.
//! `main` only parses flags and calls [`run`].

pub mod args;
pub mod audit;
pub mod client;
pub mod input;
pub mod kms;
pub mod owner;
pub mod policy;
pub mod sim;
#[cfg(test)]
mod testutil;
pub mod verify;

use hyper::Method;
use serde_json::{json, Value};

use crate::args::{
    check_evm_payload, check_key_id, check_solana_payload, AttestationCommand, Cli, Command,
    KeysCommand, PolicyCommand, SignCommand,
};
use crate::client::ApiClient;

/// Everything that can make `ekms` fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad arguments or input files (exit status 2).
    #[error("usage: {0}")]
    Usage(String),
    /// The API socket could not be reached.
    #[error("cannot connect to {path}: {source} (is `ekms sim` running? see --socket)")]
    Connect {
        /// Socket path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// HTTP transport failure or deadline.
    #[error("http: {0}")]
    Http(String),
    /// The server's answer was not what the API promises.
    #[error("bad response: {0}")]
    BadResponse(String),
    /// The server refused the request (non-2xx), with its error object.
    #[error("{code}: {message}{}", rule.as_ref().map(|r| format!(" (rule: {r})")).unwrap_or_default())]
    Api {
        /// HTTP status.
        status: u16,
        /// The server's `error.code`.
        code: String,
        /// The server's `error.message`.
        message: String,
        /// The policy rule that refused, when the server names one.
        rule: Option<String>,
    },
    /// A local file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A KMS call of `ekms sim` failed.
    #[error("kms: {0}")]
    Kms(String),
    /// The simulation could not start or stopped unexpectedly.
    #[error("sim: {0}")]
    Sim(String),
    /// An attestation document failed verification.
    #[error("attestation document rejected: {0}")]
    Attestation(String),
    /// `ekms audit verify` found the chain broken (exit status 3), naming the record.
    #[error("audit chain rejected: {0}")]
    Verification(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// The process exit status for this error: 2 for usage errors, 3 for a broken
    /// audit chain, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::Verification(_) => 3,
            _ => 1,
        }
    }
}

/// Runs one parsed command line; prints the result on stdout.
///
/// # Errors
/// Any [`Error`]; the caller prints it and exits with [`Error::exit_code`].
pub async fn run(cli: Cli) -> Result<(), Error> {
    let client = ApiClient::new(&cli.socket);
    let output = match cli.command {
        Command::Sim(args) => return sim::run(args).await,
        Command::Health => get(&client, "/v1/health").await?,
        Command::Keys(KeysCommand::Create {
            algorithm,
            label,
            policy,
            owner,
        }) => {
            let mut body = json!({"algorithm": algorithm.as_str()});
            if let Some(owner) = owner.owner()? {
                body["owner"] = serde_json::to_value(owner.to_json())
                    .map_err(|e| Error::Usage(format!("the key's owner: {e}")))?;
            }
            if let Some(label) = label {
                body["label"] = Value::String(label);
            }
            if let Some(policy) = policy {
                body["policy"] = input::load_json_object(&policy)?;
            }
            send(&client, Method::POST, "/v1/keys", &body).await?
        }
        Command::Keys(KeysCommand::List { limit }) => {
            let path = match limit {
                Some(n) => format!("/v1/keys?limit={n}"),
                None => "/v1/keys".to_owned(),
            };
            get(&client, &path).await?
        }
        Command::Keys(KeysCommand::Show { id }) => {
            get(&client, &format!("/v1/keys/{}", check_key_id(&id)?)).await?
        }
        Command::Keys(KeysCommand::Verify(mut args)) => {
            args.id = check_key_id(&args.id)?.to_owned();
            let out = verify::run_key(&client, &args).await?;
            if out.get("warning").is_some() {
                eprintln!("{}", verify::SIMULATION_WARNING);
            }
            out
        }
        Command::Keys(KeysCommand::Disable { id }) => policy::disable(&client, &id).await?,
        Command::Keys(KeysCommand::Enable(args)) => policy::enable(&client, &args).await?,
        Command::Policy(PolicyCommand::Propose(args)) => policy::propose(&client, &args).await?,
        Command::Policy(PolicyCommand::Set(args)) => policy::set(&client, &args).await?,
        Command::Admin(command) => policy::admin(&client, command).await?,
        Command::Owner(command) => {
            println!("{}", owner::run(&command)?);
            return Ok(());
        }
        Command::Audit(audit::AuditCommand::Verify(args)) => {
            let out = audit::run(&client, &args).await?;
            if out.get("warning").is_some() {
                eprintln!("{}", verify::SIMULATION_WARNING);
            }
            out
        }
        Command::Sign(SignCommand::Evm { id, payload }) => {
            let path = format!("/v1/keys/{}/sign", check_key_id(&id)?);
            let body = json!({"kind": "evm_transaction", "payload": check_evm_payload(&payload)?});
            send(&client, Method::POST, &path, &body).await?
        }
        Command::Sign(SignCommand::Solana { id, payload }) => {
            let path = format!("/v1/keys/{}/sign", check_key_id(&id)?);
            let body =
                json!({"kind": "solana_transaction", "payload": check_solana_payload(&payload)?});
            send(&client, Method::POST, &path, &body).await?
        }
        Command::Attestation(AttestationCommand::Verify(args)) => {
            let out = verify::run(&client, &args).await?;
            if out.get("warning").is_some() {
                eprintln!("{}", verify::SIMULATION_WARNING);
            }
            out
        }
    };
    print_json(&output)
}

async fn get(client: &ApiClient, path: &str) -> Result<Value, Error> {
    client.request(Method::GET, path, None).await?.into_result()
}

async fn send(
    client: &ApiClient,
    method: Method,
    path: &str,
    body: &Value,
) -> Result<Value, Error> {
    client
        .request(method, path, Some(body))
        .await?
        .into_result()
}

fn print_json(value: &Value) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::BadResponse(format!("cannot print the answer: {e}")))?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_exit_2_and_others_1() {
        assert_eq!(Error::Usage("x".into()).exit_code(), 2);
        let api = Error::Api {
            status: 403,
            code: "policy_denied".into(),
            message: "chain 5 is not allowed".into(),
            rule: Some("chain_ids".into()),
        };
        assert_eq!(api.exit_code(), 1);
        assert_eq!(
            api.to_string(),
            "policy_denied: chain 5 is not allowed (rule: chain_ids)"
        );
    }

    #[test]
    fn rejects_bad_key_id_before_any_connection() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cli = <Cli as clap::Parser>::try_parse_from([
            "ekms",
            "--socket",
            "/nonexistent/ekms.sock",
            "keys",
            "show",
            "../health",
        ])
        .unwrap();
        let err = rt.block_on(run(cli)).unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{err}");
        // A well-formed id gets as far as the (missing) socket.
        let cli = <Cli as clap::Parser>::try_parse_from([
            "ekms",
            "--socket",
            "/nonexistent/ekms.sock",
            "keys",
            "show",
            "abc",
        ])
        .unwrap();
        let err = rt.block_on(run(cli)).unwrap_err();
        assert!(matches!(err, Error::Connect { .. }), "{err}");
        assert_eq!(err.exit_code(), 1);
    }
}
