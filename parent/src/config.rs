//! Configuration of the parent: command-line flags (clap, each with an environment
//! fallback), the application listen address syntax, and where the AWS credentials
//! handed to the enclave come from.
//!
//! Credentials never come from flags (flags show in `ps`): `--aws-credentials env` (the
//! default) reads the standard variables `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
//! and `AWS_SESSION_TOKEN` once at start; `--aws-credentials imds` fetches the instance
//! role's temporary credentials from IMDSv2 and refreshes them before they expire
//! ([`crate::credentials`]). They are not secret from the parent (DESIGN §2) but are
//! still kept out of logs and zeroized on drop.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use ekms_shared::{Address, DekCachePolicy, KmsConfig};

pub use crate::credentials::AwsCredentials;
use crate::credentials::{CredentialsSource, ImdsClient, RefreshPolicy, DEFAULT_IMDS_ENDPOINT};
use crate::error::Error;
pub use crate::identity::AttestationRoot;

/// Where the application API listens.
///
/// Text forms: `unix:/path` (the default, a Unix stream socket) or `tcp://IP:PORT`
/// (loopback only: the API is plain HTTP, so its bearer tokens must not cross a
/// network).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A Unix socket path.
    Unix(PathBuf),
    /// A loopback TCP address.
    Tcp(SocketAddr),
}

impl FromStr for ListenAddr {
    type Err = Error;

    /// Parses `unix:/path` or `tcp://IP:PORT`.
    ///
    /// # Errors
    /// [`Error::Config`] for another scheme, an empty path, an unparsable socket address
    /// or a non-loopback IP.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() || path.contains('\0') {
                return Err(Error::Config(format!("invalid Unix socket path in {s:?}")));
            }
            Ok(ListenAddr::Unix(PathBuf::from(path)))
        } else if let Some(addr) = s.strip_prefix("tcp://") {
            let addr: SocketAddr = addr
                .parse()
                .map_err(|_| Error::Config(format!("invalid TCP address in {s:?}")))?;
            if !addr.ip().is_loopback() {
                return Err(Error::Config(format!(
                    "{s:?}: the API is plain HTTP (its tokens would cross the network in clear), so TCP is loopback only"
                )));
            }
            Ok(ListenAddr::Tcp(addr))
        } else {
            Err(Error::Config(format!(
                "listen address {s:?}: expected unix:/path or tcp://127.0.0.1:PORT"
            )))
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddr::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// KMS settings passed to the enclave in `Configure`.
#[derive(Debug)]
pub struct KmsSettings {
    /// AWS region, e.g. `us-east-1`.
    pub region: String,
    /// Endpoint override (simulation: the kms-sim URL); `None` for the regional
    /// endpoint through vsock-proxy.
    pub endpoint_url: Option<String>,
    /// KMS key id or ARN whose key policy requires the enclave's attestation.
    pub kms_key_id: String,
    /// Credentials for the KMS calls.
    pub credentials: AwsCredentials,
}

impl KmsSettings {
    /// The wire form for `Configure`.
    pub(crate) fn to_wire(&self) -> KmsConfig {
        KmsConfig {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
            kms_key_id: self.kms_key_id.clone(),
            credentials: self.credentials.to_wire(),
        }
    }
}

/// Where the enclave's KMS client points: [`KmsSettings`] without the credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsTarget {
    /// AWS region, e.g. `us-east-1`.
    pub region: String,
    /// Endpoint override (simulation: the kms-sim URL); `None` for the regional
    /// endpoint through vsock-proxy.
    pub endpoint_url: Option<String>,
    /// KMS key id or ARN whose key policy requires the enclave's attestation.
    pub kms_key_id: String,
}

impl KmsTarget {
    /// The settings `Configure` sends, with `credentials`.
    pub fn with_credentials(self, credentials: AwsCredentials) -> KmsSettings {
        KmsSettings {
            region: self.region,
            endpoint_url: self.endpoint_url,
            kms_key_id: self.kms_key_id,
            credentials,
        }
    }
}

/// Where the enclave's AWS credentials come from (`--aws-credentials`), resolved.
#[derive(Debug)]
pub enum CredentialsConfig {
    /// Read from the environment at start; never refreshed.
    Env(AwsCredentials),
    /// Fetched from IMDSv2 when the parent starts serving, then refreshed before they
    /// expire and pushed to the enclave.
    Imds {
        /// The IMDS client.
        client: ImdsClient,
        /// When to refresh.
        refresh: RefreshPolicy,
    },
}

/// Everything [`crate::run`] needs.
#[derive(Debug)]
pub struct Config {
    /// Application API address.
    pub listen: ListenAddr,
    /// Where `GET /metrics` is served, if anywhere (never the app socket).
    pub metrics_listen: Option<ListenAddr>,
    /// Enclave address (`vsock://CID:PORT` or `unix:/path`).
    pub enclave: Address,
    /// Where to read the enclave's forwarded logs, if anywhere
    /// ([`crate::enclave_logs`]).
    pub enclave_log: Option<Address>,
    /// SQLite database path.
    pub db: PathBuf,
    /// Where the admin token is kept (`<state-dir>/admin.token`, see
    /// [`crate::auth::ensure_admin_token`]).
    pub admin_token: PathBuf,
    /// KMS region, endpoint and key for the enclave.
    pub kms: KmsTarget,
    /// Where the enclave's AWS credentials come from.
    pub aws_credentials: CredentialsConfig,
    /// Data-key cache policy for the enclave.
    pub dek_cache: DekCachePolicy,
    /// Keyring new keys are created in.
    pub keyring: String,
    /// Number of multiplexed connections to the enclave (≥ 1).
    pub enclave_connections: usize,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Most API requests handled at once; more get 503 `overloaded`.
    pub max_in_flight: usize,
    /// Most open API connections; further ones wait in the accept backlog.
    pub max_connections: usize,
    /// Deadline for one enclave request.
    pub enclave_timeout: Duration,
    /// Deadline for reading a request's headers, and separately its body.
    pub read_timeout: Duration,
    /// Root that the enclave's identity documents must chain to.
    pub attestation_root: AttestationRoot,
}

/// Largest accepted timeout flag, in seconds (one hour). Bounded because hyper adds the
/// header deadline to `Instant::now()` without overflow checking: a value near
/// `u64::MAX` would panic every connection task.
pub const MAX_TIMEOUT_SECS: u64 = 3600;

/// Command-line flags of `ekms-parent`.
#[derive(Debug, Parser)]
#[command(
    name = "ekms-parent",
    version,
    about = "enclave-kms parent: API, key store and enclave relay"
)]
pub struct Args {
    /// Directory for the default socket and database, and for `admin.token`, the admin
    /// API token written at the first start (created 0700 if missing).
    #[arg(long, env = "EKMS_STATE_DIR", default_value = "/var/lib/ekms")]
    pub state_dir: PathBuf,
    /// Application API address: unix:/path or tcp://127.0.0.1:PORT
    /// [default: unix:<state-dir>/ekms.sock].
    #[arg(long, env = "EKMS_LISTEN")]
    pub listen: Option<String>,
    /// Serve Prometheus metrics (`GET /metrics`, OpenMetrics text) on a listener of
    /// their own: unix:/path or tcp://127.0.0.1:PORT (e.g. 9464) [default: off]. Not
    /// the app socket; no app token is needed or accepted there.
    #[arg(long, env = "EKMS_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Enclave address: vsock://CID:5000 (Nitro) or unix:/path (simulation).
    #[arg(long, env = "EKMS_ENCLAVE", default_value = ekms_shared::SIM_ENCLAVE_ADDRESS)]
    pub enclave: String,
    /// Read the enclave's forwarded logs from here and write them to this process's
    /// log: vsock://CID:5001 (Nitro) or unix:/path (simulation) [default: none].
    #[arg(long, env = "EKMS_ENCLAVE_LOG")]
    pub enclave_log: Option<String>,
    /// SQLite key store [default: <state-dir>/ekms.db].
    #[arg(long, env = "EKMS_DB")]
    pub db: Option<PathBuf>,
    /// AWS region of the KMS key. Optional when `--kms-key-id` is a key ARN (the
    /// enclave image pins one, and takes the region from it): then it is the ARN's
    /// region, and a different one is refused at start.
    #[arg(long, env = "EKMS_KMS_REGION")]
    pub kms_region: Option<String>,
    /// KMS endpoint URL override (simulation: the kms-sim address).
    #[arg(long, env = "EKMS_KMS_ENDPOINT_URL")]
    pub kms_endpoint_url: Option<String>,
    /// KMS key id or ARN.
    #[arg(long, env = "EKMS_KMS_KEY_ID")]
    pub kms_key_id: String,
    /// Where the enclave's AWS credentials come from: env (AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, read at start) or imds (the instance
    /// role's, from IMDSv2, refreshed before they expire).
    #[arg(long, env = "EKMS_AWS_CREDENTIALS", value_enum, default_value_t = CredentialsSource::Env)]
    pub aws_credentials: CredentialsSource,
    /// IMDS base URL, http://HOST[:PORT] (tests point it at a local fake).
    #[arg(long, env = "EKMS_IMDS_ENDPOINT", default_value = DEFAULT_IMDS_ENDPOINT, hide = true)]
    pub imds_endpoint: String,
    /// Seconds the enclave may keep a plaintext data key (0: KMS call per use).
    #[arg(long, env = "EKMS_DEK_CACHE_TTL_SECS", default_value_t = 300)]
    pub dek_cache_ttl_secs: u64,
    /// Uses of a cached data key before it is dropped (0: KMS call per use). From 10
    /// uses up, the request that finds a key in its last tenth (of uses or of the TTL)
    /// fetches the next one while the others go on.
    #[arg(long, env = "EKMS_DEK_CACHE_MAX_USES", default_value_t = 1000)]
    pub dek_cache_max_uses: u64,
    /// Keyring for new keys.
    #[arg(long, env = "EKMS_KEYRING", default_value = "default")]
    pub keyring: String,
    /// Multiplexed connections to the enclave.
    #[arg(long, env = "EKMS_ENCLAVE_CONNECTIONS", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub enclave_connections: u16,
    /// Largest request body in bytes.
    #[arg(long, env = "EKMS_MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,
    /// Most requests in flight.
    #[arg(long, env = "EKMS_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Most open API connections.
    #[arg(long, env = "EKMS_MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,
    /// Deadline for one enclave request, in seconds (1 to 3600).
    #[arg(long, env = "EKMS_ENCLAVE_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
    pub enclave_timeout_secs: u64,
    /// Deadline for reading a request's headers (and, separately, its body), in seconds
    /// (1 to 3600).
    #[arg(long, env = "EKMS_READ_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
    pub read_timeout_secs: u64,
    /// Root the enclave's attestation documents must chain to, for the check of key
    /// addresses against the enclave's signed statements: aws (AWS_NitroEnclaves_Root-G1)
    /// or simulation (the PEM given by --sim-root; `ekms sim` passes both).
    #[arg(long, env = "EKMS_ATTESTATION_ROOT", value_enum, default_value_t = RootArg::Aws)]
    pub attestation_root: RootArg,
    /// The simulation CA's root certificate (PEM), with --attestation-root simulation.
    #[arg(long, env = "EKMS_SIM_ROOT")]
    pub sim_root: Option<PathBuf>,
}

/// `--attestation-root`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RootArg {
    /// AWS_NitroEnclaves_Root-G1.
    Aws,
    /// The simulation CA (needs --sim-root).
    Simulation,
}

impl Args {
    /// Resolves defaults, parses addresses and, with `--aws-credentials env`, reads
    /// credentials from the environment (IMDS is asked later, by [`crate::Server::run`]).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid address or IMDS endpoint, a zero limit, an empty
    /// keyring name or missing credentials.
    pub fn into_config(self) -> Result<Config, Error> {
        let listen = match &self.listen {
            Some(s) => s.parse()?,
            None => ListenAddr::Unix(self.state_dir.join("ekms.sock")),
        };
        let metrics_listen: Option<ListenAddr> = match &self.metrics_listen {
            Some(s) => Some(
                s.parse()
                    .map_err(|e| Error::Config(format!("--metrics-listen: {e}")))?,
            ),
            None => None,
        };
        if metrics_listen.as_ref() == Some(&listen) {
            return Err(Error::Config(
                "--metrics-listen must not be the app API's address (--listen)".into(),
            ));
        }
        let enclave: Address = self
            .enclave
            .parse()
            .map_err(|e| Error::Config(format!("--enclave: {e}")))?;
        let enclave_log: Option<Address> = self
            .enclave_log
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e| Error::Config(format!("--enclave-log: {e}")))?;
        if self.keyring.is_empty() || self.keyring.len() > 64 {
            return Err(Error::Config("--keyring must be 1 to 64 bytes".into()));
        }
        for (name, v) in [
            ("--max-body-bytes", self.max_body_bytes),
            ("--max-in-flight", self.max_in_flight),
            ("--max-connections", self.max_connections),
        ] {
            if v == 0 {
                return Err(Error::Config(format!("{name} must be at least 1")));
            }
        }
        // Also enforced by clap; repeated for `Args` built in code.
        for t in [self.enclave_timeout_secs, self.read_timeout_secs] {
            if !(1..=MAX_TIMEOUT_SECS).contains(&t) {
                return Err(Error::Config(format!(
                    "timeouts must be 1 to {MAX_TIMEOUT_SECS} s"
                )));
            }
        }
        let aws_credentials = match self.aws_credentials {
            CredentialsSource::Env => CredentialsConfig::Env(AwsCredentials::from_env()?),
            CredentialsSource::Imds => CredentialsConfig::Imds {
                client: ImdsClient::new(&self.imds_endpoint)
                    .map_err(|e| Error::Config(format!("--imds-endpoint: {e}")))?,
                refresh: RefreshPolicy::default(),
            },
        };
        let kms_region = kms_region(self.kms_region.as_deref(), &self.kms_key_id)?;
        let attestation_root = match (self.attestation_root, self.sim_root) {
            (RootArg::Aws, None) => AttestationRoot::Aws,
            (RootArg::Simulation, Some(path)) => AttestationRoot::Simulation(path),
            (RootArg::Aws, Some(_)) => {
                return Err(Error::Config(
                    "--sim-root needs --attestation-root simulation".into(),
                ))
            }
            (RootArg::Simulation, None) => {
                return Err(Error::Config(
                    "--attestation-root simulation needs --sim-root".into(),
                ))
            }
        };
        Ok(Config {
            attestation_root,
            listen,
            metrics_listen,
            enclave,
            enclave_log,
            db: self.db.unwrap_or_else(|| self.state_dir.join("ekms.db")),
            admin_token: self.state_dir.join(crate::auth::ADMIN_TOKEN_FILE),
            kms: KmsTarget {
                region: kms_region,
                endpoint_url: self.kms_endpoint_url,
                kms_key_id: self.kms_key_id,
            },
            aws_credentials,
            dek_cache: DekCachePolicy {
                ttl_secs: self.dek_cache_ttl_secs,
                max_uses: self.dek_cache_max_uses,
            },
            keyring: self.keyring,
            enclave_connections: usize::from(self.enclave_connections),
            max_body_bytes: self.max_body_bytes,
            max_in_flight: self.max_in_flight,
            max_connections: self.max_connections,
            enclave_timeout: Duration::from_secs(self.enclave_timeout_secs),
            read_timeout: Duration::from_secs(self.read_timeout_secs),
        })
    }
}

/// The region of the KMS key (one source, issue 9): the region of `key_id` when it is a
/// key ARN (`arn:<partition>:kms:<region>:...`), which `--kms-region`, if given, must
/// equal; else `--kms-region`, required.
///
/// # Errors
/// [`Error::Config`] for a region that differs from the ARN's, or none at all.
fn kms_region(given: Option<&str>, key_id: &str) -> Result<String, Error> {
    let from_arn = key_id.strip_prefix("arn:").and_then(|rest| {
        let mut parts = rest.splitn(4, ':');
        let (_partition, service, region) = (parts.next()?, parts.next()?, parts.next()?);
        (service == "kms" && !region.is_empty()).then_some(region)
    });
    match (given, from_arn) {
        (Some(g), Some(a)) if g != a => Err(Error::Config(format!(
            "--kms-region {g} is not the region of --kms-key-id ({a}): the enclave takes \
             its region from the pinned key ARN; drop --kms-region (EKMS_KMS_REGION)"
        ))),
        (_, Some(a)) => Ok(a.to_owned()),
        (Some(g), None) => Ok(g.to_owned()),
        (None, None) => Err(Error::Config(
            "--kms-region is required unless --kms-key-id is a key ARN".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_addresses() {
        assert_eq!(
            "unix:/run/ekms.sock".parse::<ListenAddr>().unwrap(),
            ListenAddr::Unix("/run/ekms.sock".into())
        );
        let tcp: ListenAddr = "tcp://127.0.0.1:8080".parse().unwrap();
        assert_eq!(tcp.to_string(), "tcp://127.0.0.1:8080");
        assert!("tcp://[::1]:8080".parse::<ListenAddr>().is_ok());
    }

    #[test]
    fn rejects_bad_or_public_listen_addresses() {
        for s in [
            "unix:",
            "tcp://0.0.0.0:80",
            "tcp://10.0.0.1:80",
            "tcp://x",
            "/tmp/s",
            "http://127.0.0.1:1",
        ] {
            assert!(s.parse::<ListenAddr>().is_err(), "{s}");
        }
    }

    #[test]
    fn args_resolve_defaults_under_state_dir() {
        let args = Args::try_parse_from([
            "ekms-parent",
            "--state-dir",
            "/tmp/ekms-x",
            "--kms-region",
            "us-east-1",
            "--kms-key-id",
            "k",
            "--enclave",
            "vsock://16:5000",
        ])
        .unwrap();
        assert_eq!(args.dek_cache_ttl_secs, 300);
        assert_eq!(args.dek_cache_max_uses, 1000);
        assert_eq!(args.enclave_connections, 2);
        assert_eq!(args.max_body_bytes, 262_144);
        assert_eq!(args.listen, None);
    }

    #[test]
    fn rejects_zero_enclave_connections() {
        assert!(Args::try_parse_from([
            "ekms-parent",
            "--kms-region",
            "r",
            "--kms-key-id",
            "k",
            "--enclave-connections",
            "0",
        ])
        .is_err());
    }

    #[test]
    fn rejects_timeouts_out_of_range() {
        let parse = |flag: &str, v: &str| {
            Args::try_parse_from([
                "ekms-parent",
                "--kms-region",
                "r",
                "--kms-key-id",
                "k",
                flag,
                v,
            ])
        };
        for flag in ["--read-timeout-secs", "--enclave-timeout-secs"] {
            for v in ["0", "3601", "18446744073709551615"] {
                assert!(parse(flag, v).is_err(), "{flag} {v}");
            }
            assert!(parse(flag, "3600").is_ok(), "{flag}");
        }
    }

    fn base_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["ekms-parent", "--kms-region", "r", "--kms-key-id", "k"];
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn selects_imds_credentials_without_reading_the_environment() {
        let args = Args::try_parse_from(base_args(&[])).unwrap();
        assert_eq!(args.aws_credentials, CredentialsSource::Env);
        assert_eq!(args.imds_endpoint, DEFAULT_IMDS_ENDPOINT);
        // No AWS_* variable is needed (none is read) in IMDS mode.
        let args = Args::try_parse_from(base_args(&[
            "--aws-credentials",
            "imds",
            "--imds-endpoint",
            "http://127.0.0.1:9",
        ]))
        .unwrap();
        let config = args.into_config().unwrap();
        assert!(matches!(
            config.aws_credentials,
            CredentialsConfig::Imds { refresh, .. } if refresh == RefreshPolicy::default()
        ));
    }

    #[test]
    fn takes_the_region_from_the_key_arn() {
        let arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd";
        assert_eq!(kms_region(None, arn).unwrap(), "eu-west-1");
        assert_eq!(kms_region(Some("eu-west-1"), arn).unwrap(), "eu-west-1");
        assert_eq!(kms_region(Some("us-east-1"), "k").unwrap(), "us-east-1");
        let args = Args::try_parse_from([
            "ekms-parent",
            "--kms-key-id",
            arn,
            "--aws-credentials",
            "imds",
        ])
        .unwrap();
        assert_eq!(args.into_config().unwrap().kms.region, "eu-west-1");
    }

    #[test]
    fn rejects_a_region_other_than_the_key_arns() {
        let arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd";
        let r = kms_region(Some("us-east-1"), arn);
        assert!(
            matches!(&r, Err(Error::Config(m)) if m.contains("eu-west-1")),
            "{r:?}"
        );
        assert!(kms_region(None, "1234abcd").is_err());
        assert!(kms_region(None, "alias/ekms").is_err());
    }

    #[test]
    fn rejects_unknown_credentials_sources_and_bad_imds_endpoints() {
        assert!(Args::try_parse_from(base_args(&["--aws-credentials", "profile"])).is_err());
        let args = Args::try_parse_from(base_args(&[
            "--aws-credentials",
            "imds",
            "--imds-endpoint",
            "https://169.254.169.254/latest",
        ]))
        .unwrap();
        assert!(matches!(args.into_config(), Err(Error::Config(_))));
    }
}
