//! The `ekms` command: runs the simulation (`ekms sim`, see [`sim`]) and is a client of
//! the parent's application API on its Unix socket (keys, policies, signing, health,
//! attestation verification, API tokens).
//!
//! The API token sent with each request ([`api_token`]): `--token-file PATH`, else the
//! environment variable `EKMS_TOKEN`, else `admin.token` beside the socket when that
//! file exists (the admin token the parent writes into its state directory, so `ekms
//! sim` users need nothing). The token is never printed, except by `ekms tokens
//! create`, which shows the new token once.
//!
//! Output contract: the server's JSON answer, pretty-printed, on stdout; errors on
//! stderr as `ekms: <code>: <message>`, with exit status 2 for a usage error, 3 for an
//! audit chain that `ekms audit verify` rejects, and 1 for everything else (a refused
//! request, an unreachable socket, a failed attestation verification). `ekms owner sign`
//! prints the bare signature.
//! `main` only parses flags and calls [`run`].

pub mod args;
pub mod audit;
pub mod input;
pub mod kms;
pub mod nitro;
pub mod owner;
pub mod policy;
pub mod sim;
#[cfg(test)]
mod testutil;
pub mod verify;

use ekms_shared::api::{CreateKeyRequest, SignRequest};
use hyper::Method;
use serde_json::{json, Value};

use crate::args::{
    check_evm_payload, check_key_id, check_solana_payload, AttestationCommand, Cli, Command,
    KeysCommand, PolicyCommand, SignCommand, TokensCommand,
};
pub use ekms_client as client;

use crate::client::{ApiClient, BearerToken, ClientError};

/// The environment variable holding an API token.
pub const TOKEN_ENV: &str = "EKMS_TOKEN";
/// The admin token file the parent writes into its state directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Everything that can make `ekms` fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad arguments or input files (exit status 2).
    #[error("usage: {0}")]
    Usage(String),
    /// The API socket could not be reached, the exchange failed, or the server refused
    /// the request (its `error.code`, `message` and `rule`).
    #[error("{0}{hint}", hint = connect_hint(.0))]
    Client(ClientError),
    /// The server's answer was not what the API promises.
    #[error("bad response: {0}")]
    BadResponse(String),
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
    /// `ekms nitro doctor` found a check failing (its report is on stdout).
    #[error("doctor: {0}")]
    Doctor(String),
}

/// What `ekms` adds to a connection failure.
fn connect_hint(e: &ClientError) -> &'static str {
    if matches!(e, ClientError::Connect { .. }) {
        " (is `ekms sim` running? see --socket)"
    } else {
        ""
    }
}

/// The shared client's errors, as `ekms` reports them (a token that is not one is a
/// usage error).
impl From<ClientError> for Error {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::InvalidToken(m) => Error::Usage(m),
            ClientError::Io { what, source } => Error::Io { what, source },
            ClientError::BadResponse(m) => Error::BadResponse(m),
            other => Error::Client(other),
        }
    }
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
    if let Command::Sim(args) = cli.command {
        return sim::run(args).await;
    }
    if let Command::Nitro(command) = cli.command {
        return print_json(&nitro::run(command, &cli.socket).await?);
    }
    let env_token = std::env::var(TOKEN_ENV).ok();
    let token = api_token(&cli.socket, cli.token_file.as_deref(), env_token.as_deref())?;
    let client = ApiClient::new(&cli.socket).with_token(token);
    let output = match cli.command {
        Command::Sim(_) | Command::Nitro(_) => unreachable!("handled above"),
        Command::Health => get(&client, "/v1/health").await?,
        Command::Keys(KeysCommand::Create {
            algorithm,
            label,
            policy,
            owner,
        }) => {
            let request = CreateKeyRequest {
                algorithm: algorithm.into(),
                label,
                policy: policy.map(|p| input::load_json_object(&p)).transpose()?,
                owner: owner.owner()?.map(|o| o.to_json()),
            };
            let body = serde_json::to_value(&request)
                .map_err(|e| Error::Usage(format!("the key request: {e}")))?;
            let created = send(&client, Method::POST, "/v1/keys", &body).await?;
            policy::check_creation(&client, &body, created).await?
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
            let body = sign_body("evm_transaction", check_evm_payload(&payload)?)?;
            send(&client, Method::POST, &path, &body).await?
        }
        Command::Sign(SignCommand::Solana { id, payload }) => {
            let path = format!("/v1/keys/{}/sign", check_key_id(&id)?);
            let body = sign_body("solana_transaction", check_solana_payload(&payload)?)?;
            send(&client, Method::POST, &path, &body).await?
        }
        Command::Tokens(TokensCommand::Create {
            name,
            scopes,
            key_ids,
            expires_at,
        }) => {
            let mut body = json!({"name": name, "scopes": scopes});
            if !key_ids.is_empty() {
                for id in &key_ids {
                    check_key_id(id)?;
                }
                body["key_ids"] = json!(key_ids);
            }
            if let Some(t) = expires_at {
                body["expires_at"] = Value::String(t);
            }
            send(&client, Method::POST, "/v1/tokens", &body).await?
        }
        Command::Tokens(TokensCommand::List) => get(&client, "/v1/tokens").await?,
        Command::Tokens(TokensCommand::Revoke { id }) => {
            let path = format!("/v1/tokens/{}", check_key_id(&id)?);
            client
                .request(Method::DELETE, &path, None)
                .await?
                .into_result()?
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

/// The API token to send: from `token_file`, else `env_token` (the value of
/// [`TOKEN_ENV`]), else [`ADMIN_TOKEN_FILE`] in the socket's directory if it exists;
/// `None` when there is none (routes other than health then answer 401).
///
/// # Errors
/// [`Error::Io`] or [`Error::Usage`] for a token file that cannot be read or holds no
/// token, [`Error::Usage`] for an `EKMS_TOKEN` that is not one.
pub fn api_token(
    socket: &std::path::Path,
    token_file: Option<&std::path::Path>,
    env_token: Option<&str>,
) -> Result<Option<BearerToken>, Error> {
    if let Some(path) = token_file {
        return Ok(Some(BearerToken::from_file(path)?));
    }
    if let Some(text) = env_token {
        return Ok(Some(BearerToken::parse(text, TOKEN_ENV)?));
    }
    let default = socket
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join(ADMIN_TOKEN_FILE);
    match std::fs::metadata(&default) {
        Ok(_) => Ok(Some(BearerToken::from_file(&default)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(
            format!("reading the token file {}", default.display()),
            e,
        )),
    }
}

/// The body of `POST /v1/keys/{id}/sign` ([`SignRequest`]).
fn sign_body(kind: &str, payload: impl Into<Value>) -> Result<Value, Error> {
    serde_json::to_value(SignRequest {
        kind: kind.to_owned(),
        payload: payload.into(),
    })
    .map_err(|e| Error::Usage(format!("the sign request: {e}")))
}

async fn get(client: &ApiClient, path: &str) -> Result<Value, Error> {
    Ok(client
        .request(Method::GET, path, None)
        .await?
        .into_result()?)
}

async fn send(
    client: &ApiClient,
    method: Method,
    path: &str,
    body: &Value,
) -> Result<Value, Error> {
    Ok(client
        .request(method, path, Some(body))
        .await?
        .into_result()?)
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
        let api = Error::Client(ClientError::Api {
            status: 403,
            code: "policy_denied".into(),
            message: "chain 5 is not allowed".into(),
            rule: Some("chain_ids".into()),
        });
        assert_eq!(api.exit_code(), 1);
        assert_eq!(
            api.to_string(),
            "policy_denied: chain 5 is not allowed (rule: chain_ids)"
        );
    }

    #[test]
    fn picks_the_token_file_then_the_environment_then_admin_token() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ekms.sock");
        let pick = |file: Option<&std::path::Path>, env: Option<&str>| {
            api_token(&socket, file, env)
                .unwrap()
                .map(|t| t.expose_for_tests().to_owned())
        };
        assert_eq!(pick(None, None), None);
        std::fs::write(dir.path().join(ADMIN_TOKEN_FILE), "ekms_admin\n").unwrap();
        let file = dir.path().join("bot.token");
        std::fs::write(&file, "ekms_bot").unwrap();
        assert_eq!(
            pick(Some(&file), Some("ekms_env")).as_deref(),
            Some("ekms_bot")
        );
        assert_eq!(pick(None, Some("ekms_env")).as_deref(), Some("ekms_env"));
        assert_eq!(pick(None, None).as_deref(), Some("ekms_admin"));
    }

    #[test]
    fn rejects_a_missing_token_file_or_a_bad_environment_token() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ekms.sock");
        let missing = dir.path().join("none.token");
        assert!(matches!(
            api_token(&socket, Some(&missing), None),
            Err(Error::Io { .. })
        ));
        let err = api_token(&socket, None, Some("not a token")).unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{err}");
        assert!(!err.to_string().contains("not a token"), "{err}");
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
        assert!(
            matches!(err, Error::Client(ClientError::Connect { .. })),
            "{err}"
        );
        assert_eq!(err.exit_code(), 1);
    }
}
