//! The `ekms` command line (clap derive): global options, subcommands and the checks
//! on their arguments that need no server (key id shape, EVM hex, Solana base64,
//! nonce hex). A failed check is a usage error (exit status 2), like clap's own.

use std::path::PathBuf;

use base64::Engine as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use ekms_shared::api::KeyAlgorithm;

use crate::Error;

/// Default application socket: the one `ekms sim` serves with its default state dir.
pub const DEFAULT_SOCKET: &str = "./.sim/ekms.sock";
/// Default state directory of `ekms sim`.
pub const DEFAULT_STATE_DIR: &str = "./.sim";
/// Longest key id the CLI puts into a URL path, in bytes.
pub const MAX_KEY_ID_LEN: usize = 128;
/// Longest attestation nonce the parent accepts, in bytes (`GET /v1/attestation`).
pub const MAX_NONCE_LEN: usize = 512;

/// enclave-kms command line: run the simulation, manage keys, sign, verify attestation.
#[derive(Debug, Parser)]
#[command(name = "ekms", version)]
pub struct Cli {
    /// Application API socket of the parent.
    #[arg(long, global = true, env = "EKMS_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// File holding the API token to send (`Authorization: Bearer`). Without it, the
    /// token in the environment variable EKMS_TOKEN, else `admin.token` beside the
    /// socket when that file exists (what `ekms sim` writes).
    #[arg(long, global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run kms-sim, the enclave (simulated NSM) and the parent in the foreground.
    Sim(SimArgs),
    /// Create, list and show keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Replace a key's policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Sign a transaction with a key.
    #[command(subcommand)]
    Sign(SignCommand),
    /// Ask the parent whether the enclave is configured and ready.
    Health,
    /// Fetch and verify attestation documents.
    #[command(subcommand)]
    Attestation(AttestationCommand),
    /// Create, list and revoke API tokens (needs an admin token).
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Verify the enclave's signed, hash-chained audit log.
    #[command(subcommand)]
    Audit(crate::audit::AuditCommand),
    /// Key owners: sign authorizations with an owner's local key.
    #[command(subcommand)]
    Owner(crate::owner::OwnerCommand),
    /// Store-wide emergency stop and resume.
    #[command(subcommand)]
    Admin(crate::policy::AdminCommand),
    /// AWS Nitro Enclaves deployment: generated KMS/IAM policies, setup doctor.
    #[command(subcommand)]
    Nitro(crate::nitro::NitroCommand),
}

/// `ekms tokens …`
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token (`POST /v1/tokens`); prints it once.
    Create {
        /// Name of the token (1 to 64 bytes).
        #[arg(long)]
        name: String,
        /// A scope: sign, keys:create, keys:read, policy:write or admin (repeatable).
        #[arg(long = "scope", required = true, value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Limit the sign scope to this key (repeatable).
        #[arg(long = "key-id", value_name = "ID")]
        key_ids: Vec<String>,
        /// Expiry, RFC 3339 (e.g. 2030-01-01T00:00:00Z).
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
    },
    /// List tokens (`GET /v1/tokens`); never shows a token.
    List,
    /// Revoke a token (`DELETE /v1/tokens/{id}`).
    Revoke {
        /// Token id.
        id: String,
    },
}

/// Flags of `ekms sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Directory for all state: CA, KMS keys, key store, sockets, logs.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// The kms-sim executable [default: next to this executable].
    #[arg(long)]
    pub kms_sim_bin: Option<PathBuf>,
    /// The ekms-enclave executable [default: next to this executable].
    #[arg(long)]
    pub enclave_bin: Option<PathBuf>,
    /// The ekms-parent executable [default: next to this executable].
    #[arg(long)]
    pub parent_bin: Option<PathBuf>,
    /// Seconds to wait for `GET /v1/health` to answer 200.
    #[arg(long, default_value_t = 60)]
    pub health_timeout_secs: u64,
    /// Have the parent serve Prometheus metrics (`GET /metrics`) here:
    /// unix:/path or tcp://127.0.0.1:PORT (port 0: a free port, shown in the summary and
    /// in sim.json as `metrics_listen`) [default: off].
    #[arg(long)]
    pub metrics_listen: Option<String>,
}

/// `ekms keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key (`POST /v1/keys`).
    Create {
        /// Signature algorithm of the key.
        #[arg(long, value_enum)]
        algorithm: Algorithm,
        /// Free-text label.
        #[arg(long)]
        label: Option<String>,
        /// Policy: inline JSON object, a file holding one, or `-` for stdin.
        #[arg(long)]
        policy: Option<String>,
        /// The key's owner, whose signature policy changes and re-enables need.
        #[command(flatten)]
        owner: crate::owner::OwnerFlags,
    },
    /// List keys, newest first (`GET /v1/keys`).
    List {
        /// Most keys to list (1..=1000).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: Option<u32>,
    },
    /// Show one key and its policy (`GET /v1/keys/{id}`).
    Show {
        /// Key id.
        id: String,
    },
    /// Verify a key's identity end to end, trusting nothing the parent says: the
    /// enclave's signed key statement, the attestation document binding the identity
    /// key that signed it (chain to the root, PCR0), and that the statement names the
    /// key id, public key and address the parent reports.
    Verify(KeyVerifyArgs),
    /// Emergency stop of one key: it signs nothing until re-enabled
    /// (`POST /v1/keys/{id}/disable`).
    Disable {
        /// Key id.
        id: String,
    },
    /// Re-enable a disabled key; a key with an owner needs the owner's signature
    /// (`POST /v1/keys/{id}/enable`).
    Enable(crate::policy::EnableArgs),
}

/// Flags of `ekms keys verify`.
#[derive(Debug, Clone, Args)]
pub struct KeyVerifyArgs {
    /// Key id.
    pub id: String,
    /// Which root to trust.
    #[command(flatten)]
    pub trust: RootArgs,
    /// Required PCR0 of the enclave that signed the statement, hex (48 bytes); mandatory
    /// with `--root aws` (any Nitro enclave's document chains to the AWS root).
    #[arg(long)]
    pub pcr0: Option<String>,
}

/// `ekms policy …`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Ask for the owner authorization a policy change needs
    /// (`POST /v1/keys/{id}/policy/proposal`); prints the message to sign.
    Propose(crate::policy::ProposeArgs),
    /// Replace the policy of a key (`PUT /v1/keys/{id}/policy`).
    Set(crate::policy::SetArgs),
}

/// `ekms sign …`
#[derive(Debug, Subcommand)]
pub enum SignCommand {
    /// Sign an unsigned EVM transaction (EIP-2718 typed or legacy RLP, `0x` hex).
    Evm {
        /// Key id (secp256k1).
        id: String,
        /// The unsigned transaction, `0x`-prefixed hex.
        payload: String,
    },
    /// Sign a Solana transaction message (standard base64).
    Solana {
        /// Key id (ed25519).
        id: String,
        /// The transaction, standard base64.
        payload: String,
    },
}

/// `ekms attestation …`
#[derive(Debug, Subcommand)]
pub enum AttestationCommand {
    /// Fetch a fresh attestation document and verify it locally.
    Verify(VerifyArgs),
}

/// Flags of `ekms attestation verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Nonce to put into the document, hex [default: 32 random bytes].
    #[arg(long)]
    pub nonce: Option<String>,
    /// Which root to trust.
    #[command(flatten)]
    pub trust: RootArgs,
    /// Largest accepted document age, in seconds.
    #[arg(long, default_value_t = 300)]
    pub max_age: u64,
    /// Required PCR0, hex (48 bytes).
    #[arg(long)]
    pub pcr0: Option<String>,
    /// The image's measurements as nitro-cli prints them (`make eif` saves
    /// ekms-enclave.measurements.json): PCR0, 1, 2 (and 8 when present) must all match.
    #[arg(long, value_name = "FILE", conflicts_with = "pcr0")]
    pub measurements: Option<PathBuf>,
}

/// The trust-root flags of `ekms attestation verify` and `ekms keys verify`.
#[derive(Debug, Clone, Args)]
pub struct RootArgs {
    /// Trust root: the pinned AWS Nitro root, or the simulation CA's root.
    #[arg(long, value_enum, default_value_t = Root::Aws)]
    pub root: Root,
    /// PEM of the simulation root [default: STATE_DIR/ca/root.pem with --state-dir,
    /// else ca/root.pem beside the socket].
    #[arg(long)]
    pub sim_root: Option<PathBuf>,
    /// State directory of `ekms sim` (for the default --sim-root).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

/// Key algorithms of `POST /v1/keys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Algorithm {
    /// secp256k1 ECDSA (EVM).
    Secp256k1,
    /// Ed25519 (Solana).
    Ed25519,
}

impl Algorithm {
    /// The API's name for the algorithm.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Secp256k1 => "secp256k1",
            Algorithm::Ed25519 => "ed25519",
        }
    }
}

impl From<Algorithm> for KeyAlgorithm {
    fn from(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Secp256k1 => KeyAlgorithm::Secp256k1,
            Algorithm::Ed25519 => KeyAlgorithm::Ed25519,
        }
    }
}

/// Which root an attestation document must chain to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Root {
    /// `AWS_NitroEnclaves_Root-G1`, pinned in the attestation crate.
    Aws,
    /// The simulation CA's root (proves nothing about AWS hardware).
    Simulation,
}

/// Checks that `id` can go into a URL path as it is: 1 to [`MAX_KEY_ID_LEN`] ASCII
/// letters, digits, `-` or `_` (the parent's ids are UUIDs).
///
/// # Errors
/// [`Error::Usage`] otherwise.
pub fn check_key_id(id: &str) -> Result<&str, Error> {
    let ok = !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(id)
    } else {
        Err(Error::Usage(format!(
            "invalid key id {id:?}: expected letters, digits, '-' or '_'"
        )))
    }
}

/// Checks an EVM payload: `0x` followed by a non-empty, even number of hex digits.
///
/// # Errors
/// [`Error::Usage`] otherwise.
pub fn check_evm_payload(payload: &str) -> Result<&str, Error> {
    let digits = payload
        .strip_prefix("0x")
        .ok_or_else(|| Error::Usage("the EVM payload must start with 0x".into()))?;
    if digits.is_empty() {
        return Err(Error::Usage("the EVM payload is empty".into()));
    }
    hex::decode(digits).map_err(|e| Error::Usage(format!("the EVM payload is not hex: {e}")))?;
    Ok(payload)
}

/// Checks a Solana payload: non-empty standard base64 (with padding).
///
/// # Errors
/// [`Error::Usage`] otherwise.
pub fn check_solana_payload(payload: &str) -> Result<&str, Error> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .map_err(|e| Error::Usage(format!("the Solana payload is not standard base64: {e}")))?;
    if bytes.is_empty() {
        return Err(Error::Usage("the Solana payload is empty".into()));
    }
    Ok(payload)
}

/// Decodes a nonce given as hex: 1 to [`MAX_NONCE_LEN`] bytes, optional `0x`.
///
/// # Errors
/// [`Error::Usage`] for non-hex text, an empty or a too long nonce.
pub fn parse_nonce(text: &str) -> Result<Vec<u8>, Error> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    let bytes =
        hex::decode(digits).map_err(|e| Error::Usage(format!("--nonce is not hex: {e}")))?;
    if bytes.is_empty() || bytes.len() > MAX_NONCE_LEN {
        return Err(Error::Usage(format!(
            "--nonce must be 1 to {MAX_NONCE_LEN} bytes, not {}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// Decodes an expected PCR value given as hex: exactly 48 bytes (SHA-384), optional `0x`.
///
/// # Errors
/// [`Error::Usage`] otherwise.
pub fn parse_pcr(text: &str) -> Result<Vec<u8>, Error> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    match hex::decode(digits) {
        Ok(bytes) if bytes.len() == 48 => Ok(bytes),
        _ => Err(Error::Usage(
            "--pcr0 must be 48 bytes of hex (96 digits)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ekms").chain(args.iter().copied()))
    }

    #[test]
    fn parses_keys_create_with_all_flags() {
        let cli = parse(&[
            "--socket",
            "/tmp/x.sock",
            "keys",
            "create",
            "--algorithm",
            "ed25519",
            "--label",
            "bot",
            "--policy",
            "{}",
        ])
        .unwrap();
        assert_eq!(cli.socket, PathBuf::from("/tmp/x.sock"));
        match cli.command {
            Command::Keys(KeysCommand::Create {
                algorithm,
                label,
                policy,
                ..
            }) => {
                assert_eq!(algorithm, Algorithm::Ed25519);
                assert_eq!(algorithm.as_str(), "ed25519");
                assert_eq!(label.as_deref(), Some("bot"));
                assert_eq!(policy.as_deref(), Some("{}"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rejects_unknown_algorithm_and_missing_algorithm() {
        for args in [
            &["keys", "create", "--algorithm", "rsa"][..],
            &["keys", "create"][..],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn socket_flag_is_global_and_defaults() {
        // The global flag may follow the subcommand.
        let cli = parse(&["health", "--socket", "/run/e.sock"]).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/run/e.sock"));
        assert!(matches!(cli.command, Command::Health));
        if std::env::var_os("EKMS_SOCKET").is_none() {
            let cli = parse(&["keys", "list"]).unwrap();
            assert_eq!(cli.socket, PathBuf::from(DEFAULT_SOCKET));
        }
    }

    #[test]
    fn rejects_unknown_subcommand_and_extra_arguments() {
        assert!(parse(&["keys", "delete", "x"]).is_err());
        assert!(parse(&["health", "extra"]).is_err());
        assert!(parse(&["sign", "evm", "only-id"]).is_err());
        assert!(parse(&["keys", "list", "--limit", "0"]).is_err());
    }

    #[test]
    fn parses_sim_and_verify_flags() {
        let cli = parse(&["sim", "--state-dir", "/tmp/s", "--enclave-bin", "/bin/e"]).unwrap();
        match cli.command {
            Command::Sim(sim) => {
                assert_eq!(sim.state_dir, PathBuf::from("/tmp/s"));
                assert_eq!(sim.enclave_bin, Some(PathBuf::from("/bin/e")));
                assert_eq!(sim.kms_sim_bin, None);
                assert_eq!(sim.health_timeout_secs, 60);
            }
            other => panic!("unexpected {other:?}"),
        }
        let cli = parse(&[
            "attestation",
            "verify",
            "--root",
            "simulation",
            "--nonce",
            "ab",
        ])
        .unwrap();
        match cli.command {
            Command::Attestation(AttestationCommand::Verify(v)) => {
                assert_eq!(v.trust.root, Root::Simulation);
                assert_eq!(v.nonce.as_deref(), Some("ab"));
                assert_eq!(v.max_age, 300);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn parses_token_flags_and_commands() {
        let cli = parse(&[
            "tokens",
            "create",
            "--name",
            "bot",
            "--scope",
            "sign",
            "--scope",
            "keys:read",
            "--key-id",
            "k1",
            "--token-file",
            "/tmp/t",
        ])
        .unwrap();
        assert_eq!(cli.token_file, Some(PathBuf::from("/tmp/t")));
        match cli.command {
            Command::Tokens(TokensCommand::Create {
                name,
                scopes,
                key_ids,
                expires_at,
            }) => {
                assert_eq!(name, "bot");
                assert_eq!(scopes, ["sign", "keys:read"]);
                assert_eq!(key_ids, ["k1"]);
                assert_eq!(expires_at, None);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse(&["tokens", "revoke", "abc"]).unwrap().command,
            Command::Tokens(TokensCommand::Revoke { .. })
        ));
    }

    #[test]
    fn rejects_token_commands_without_their_arguments() {
        assert!(parse(&["tokens", "create", "--name", "x"]).is_err());
        assert!(parse(&["tokens", "revoke"]).is_err());
        assert!(
            parse(&["--token", "x", "health"]).is_err(),
            "no token in argv"
        );
    }

    #[test]
    fn rejects_unknown_root() {
        assert!(parse(&["attestation", "verify", "--root", "none"]).is_err());
    }

    #[test]
    fn accepts_uuid_key_ids() {
        let id = "0b9e3c4e-6f0a-4d2b-9a53-4a0d1b2c3d4e";
        assert_eq!(check_key_id(id).unwrap(), id);
        assert!(check_key_id("key_1").is_ok());
    }

    #[test]
    fn rejects_key_ids_that_would_change_the_path() {
        let long = "a".repeat(MAX_KEY_ID_LEN + 1);
        for id in ["", "..", "a/b", "a?b=1", "a b", "é", "%2e", long.as_str()] {
            assert!(matches!(check_key_id(id), Err(Error::Usage(_))), "{id:?}");
        }
    }

    #[test]
    fn accepts_evm_and_solana_payloads() {
        assert!(check_evm_payload("0x02f8").is_ok());
        assert!(check_solana_payload("AQID").is_ok());
    }

    #[test]
    fn rejects_malformed_payloads() {
        for p in ["02f8", "0x", "0x0", "0xzz", ""] {
            assert!(check_evm_payload(p).is_err(), "{p:?}");
        }
        for p in ["", "AQI", "not base64!", "AQID\n"] {
            assert!(check_solana_payload(p).is_err(), "{p:?}");
        }
    }

    #[test]
    fn parses_nonce_and_pcr_hex() {
        assert_eq!(parse_nonce("0x0aff").unwrap(), vec![0x0a, 0xff]);
        assert_eq!(parse_nonce("00").unwrap(), vec![0]);
        assert_eq!(parse_pcr(&"ab".repeat(48)).unwrap(), vec![0xab; 48]);
    }

    #[test]
    fn rejects_bad_nonce_and_pcr() {
        let too_long = "00".repeat(MAX_NONCE_LEN + 1);
        for n in ["", "0x", "abc", "xy", too_long.as_str()] {
            assert!(matches!(parse_nonce(n), Err(Error::Usage(_))), "{n:?}");
        }
        for p in [
            "",
            "ab",
            &"ab".repeat(47),
            &"ab".repeat(49),
            &"zz".repeat(48),
        ] {
            assert!(parse_pcr(p).is_err(), "{p:?}");
        }
    }
}
