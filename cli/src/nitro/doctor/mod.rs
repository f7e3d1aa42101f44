//! `ekms nitro doctor`: checks a Nitro host's setup in the order it is built
//! (docs/DEPLOY.md), each check one function in [`checks`] with a fix for its failure
//! (issue 9 item 7):
//!
//! 1. `nitro_cli_and_allocator`: nitro-cli runs; the allocator
//!    (`/etc/nitro_enclaves/allocator.yaml`) reserves at least the run flags' CPUs and
//!    memory.
//! 2. `vsock_proxy`: a `vsock-proxy` process forwards port 8000 to
//!    `kms.<region>.amazonaws.com:443`, the region of the pinned key ARN.
//! 3. `instance_role`: IMDSv2 gives the instance a role (the expected one, if named).
//! 4. `key_policy_pcr0`: the key policy (a file an administrator fetched with `aws kms
//!    get-key-policy`) releases data keys to the EIF's PCR0, and denies the rest.
//! 5. `enclave`: `nitro-cli describe-enclaves` shows the named enclave `RUNNING`, with
//!    flags `NONE` (never `DEBUG_MODE`), the expected CID and the EIF's PCR0.
//! 6. `health`: `/v1/health` answers 200 in `nitro` mode with the EIF's PCR0.
//! 7. `attestation`: a fresh attestation document verifies against the AWS root with
//!    the EIF's PCR0, 1, 2 (and 8).
//!
//! With `--simulation` it runs against `ekms sim` (its `sim.json`): checks 4, 6 and 7
//! run for real (the key policy is read from kms-sim, the root is the simulation CA's),
//! and 1, 2, 3 and 5 are reported `nitro_only`.
//!
//! Output: a JSON report on stdout; exit status 1 when a check fails.

pub mod checks;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::client::ApiClient;
use crate::nitro::measurements::Measurements;
use crate::Error;

/// Flags of `ekms nitro doctor`. The defaults are those of deploy/ (units and
/// enclave.env) and docs/DEPLOY.md.
#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// Check a running `ekms sim` instead of a Nitro host.
    #[arg(long)]
    pub simulation: bool,
    /// State directory of `ekms sim` (with --simulation).
    #[arg(long, default_value = crate::args::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// The EIF's measurements (`make eif` saves ekms-enclave.measurements.json).
    #[arg(long, value_name = "FILE")]
    pub measurements: Option<PathBuf>,
    /// The key policy as `aws kms get-key-policy --policy-name default --output text
    /// --query Policy` prints it (the instance role may not read it itself).
    #[arg(long, value_name = "FILE")]
    pub key_policy: Option<PathBuf>,
    /// The pinned KMS key ARN (its region names the KMS endpoint vsock-proxy must
    /// forward to).
    #[arg(long, env = "EKMS_KMS_KEY_ID", value_name = "ARN")]
    pub kms_key_arn: Option<String>,
    /// The instance role expected from IMDS (a role ARN or name).
    #[arg(long, value_name = "ROLE")]
    pub instance_role: Option<String>,
    /// The nitro-cli executable.
    #[arg(long, default_value = "nitro-cli")]
    pub nitro_cli: PathBuf,
    /// The allocator's configuration.
    #[arg(long, default_value = "/etc/nitro_enclaves/allocator.yaml")]
    pub allocator_config: PathBuf,
    /// The enclave's `--cpu-count` (deploy/enclave.env).
    #[arg(long, default_value_t = 2)]
    pub cpu_count: u32,
    /// The enclave's `--memory`, MiB (deploy/enclave.env).
    #[arg(long, default_value_t = 2048)]
    pub memory_mib: u64,
    /// The enclave's `--enclave-name`.
    #[arg(long, default_value = "ekms")]
    pub enclave_name: String,
    /// The enclave's `--enclave-cid`.
    #[arg(long, default_value_t = 16)]
    pub enclave_cid: u64,
    /// The IMDS base URL (tests point it at a stand-in).
    #[arg(long, default_value = "http://169.254.169.254", hide = true)]
    pub imds_endpoint: String,
    /// Where processes are listed (tests point it at a stand-in).
    #[arg(long, default_value = "/proc", hide = true)]
    pub proc_root: PathBuf,
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// As it should be.
    Pass,
    /// Not as it should be: see the fix.
    Fail,
    /// Could not be checked with the given flags (the detail says which is missing).
    Skipped,
    /// Only meaningful on a Nitro host (simulation mode).
    NitroOnly,
}

impl Status {
    /// The status as the report shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skipped => "skipped",
            Status::NitroOnly => "nitro_only",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The check's name (module docs).
    pub name: &'static str,
    /// Its status.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about a failure.
    pub fix: Option<String>,
}

impl Check {
    pub(crate) fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    pub(crate) fn fail(
        name: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub(crate) fn skipped(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Skipped,
            detail: detail.into(),
            fix: None,
        }
    }

    fn nitro_only(name: &'static str) -> Self {
        Self {
            name,
            status: Status::NitroOnly,
            detail: "checked on a Nitro host only".into(),
            fix: None,
        }
    }

    fn to_json(&self) -> Value {
        let mut v =
            json!({"name": self.name, "status": self.status.as_str(), "detail": self.detail});
        if let Some(fix) = &self.fix {
            v["fix"] = Value::String(fix.clone());
        }
        v
    }
}

/// The report: every check, in order.
pub fn report(mode: &str, checks: &[Check]) -> Value {
    json!({
        "mode": mode,
        "ok": !checks.iter().any(|c| c.status == Status::Fail),
        "checks": checks.iter().map(Check::to_json).collect::<Vec<_>>(),
    })
}

/// Runs the doctor; the report. A report with a failed check is printed and then
/// returned as [`Error::Doctor`] (exit status 1).
///
/// # Errors
/// [`Error::Doctor`] naming the failed checks; [`Error::Usage`] / [`Error::Io`] for
/// unreadable flags' files.
pub async fn run(args: &DoctorArgs, socket: &std::path::Path) -> Result<Value, Error> {
    let (mode, checks) = if args.simulation {
        ("simulation", run_simulation(args).await?)
    } else {
        ("nitro", run_nitro(args, socket).await?)
    };
    let out = report(mode, &checks);
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.name)
        .collect();
    if failed.is_empty() {
        Ok(out)
    } else {
        let text = serde_json::to_string_pretty(&out).unwrap_or_default();
        println!("{text}");
        Err(Error::Doctor(format!("failed: {}", failed.join(", "))))
    }
}

fn client_for(socket: &std::path::Path) -> Result<ApiClient, Error> {
    let env_token = std::env::var(crate::TOKEN_ENV).ok();
    let token = crate::api_token(socket, None, env_token.as_deref())?;
    Ok(ApiClient::new(socket).with_token(token))
}

async fn run_nitro(args: &DoctorArgs, socket: &std::path::Path) -> Result<Vec<Check>, Error> {
    let measurements = args
        .measurements
        .as_deref()
        .map(Measurements::load)
        .transpose()?;
    let region = args
        .kms_key_arn
        .as_deref()
        .and_then(|arn| arn.split(':').nth(3))
        .map(str::to_owned);
    let mut out = vec![
        checks::nitro_cli_and_allocator(
            &args.nitro_cli,
            &args.allocator_config,
            args.cpu_count,
            args.memory_mib,
        ),
        checks::vsock_proxy(&args.proc_root, region.as_deref()),
        checks::instance_role(&args.imds_endpoint, args.instance_role.as_deref()).await,
    ];
    let Some(m) = measurements else {
        let missing = "needs --measurements (the EIF's, saved by make eif)";
        for name in ["key_policy_pcr0", "enclave", "health", "attestation"] {
            out.push(Check::skipped(name, missing));
        }
        return Ok(out);
    };
    out.push(match &args.key_policy {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            checks::key_policy_pcr0(&text, m.pcr0())
        }
        None => Check::skipped("key_policy_pcr0", "needs --key-policy FILE"),
    });
    out.push(checks::enclave(
        &args.nitro_cli,
        &args.enclave_name,
        args.enclave_cid,
        m.pcr0(),
    ));
    let client = client_for(socket)?;
    out.push(checks::health(&client, ekms_shared::Mode::Nitro, m.pcr0()).await);
    out.push(
        checks::attestation(
            &client,
            crate::args::Root::Aws,
            None,
            None,
            args.measurements.clone(),
        )
        .await,
    );
    Ok(out)
}

async fn run_simulation(args: &DoctorArgs) -> Result<Vec<Check>, Error> {
    let sim_json = args.state_dir.join("sim.json");
    let text = std::fs::read_to_string(&sim_json).map_err(|e| {
        Error::io(
            format!(
                "reading {} (is `ekms sim --state-dir {}` running?)",
                sim_json.display(),
                args.state_dir.display()
            ),
            e,
        )
    })?;
    let status: Value = serde_json::from_str(&text)
        .map_err(|e| Error::Usage(format!("{}: {e}", sim_json.display())))?;
    let field = |name: &str| {
        status[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::Usage(format!("{} has no {name}", sim_json.display())))
    };
    let pcr0 = field("pcr0")?;
    let tls_root = std::fs::read_to_string(field("kms_tls_root_pem")?)
        .map_err(|e| Error::io("reading kms-sim's TLS root", e))?;
    let kms = crate::kms::sim_client(&field("kms_endpoint")?, &tls_root)?;
    let policy = kms
        .get_key_policy()
        .key_id(field("kms_key_arn")?)
        .send()
        .await
        .map_err(|e| Error::Kms(aws_sdk_kms::error::DisplayErrorContext(&e).to_string()))?;
    let socket = args.state_dir.join("ekms.sock");
    let client = client_for(&socket)?;
    let mut out = vec![
        Check::nitro_only("nitro_cli_and_allocator"),
        Check::nitro_only("vsock_proxy"),
        Check::nitro_only("instance_role"),
        checks::key_policy_pcr0(policy.policy().unwrap_or_default(), &pcr0),
        Check::nitro_only("enclave"),
        checks::health(&client, ekms_shared::Mode::Simulation, &pcr0).await,
    ];
    let mut attested = checks::attestation(
        &client,
        crate::args::Root::Simulation,
        Some(args.state_dir.clone()),
        Some(pcr0.clone()),
        None,
    )
    .await;
    // Only PCR0 is known from sim.json: the report says so.
    if attested.status == Status::Pass {
        attested.detail.push_str(" (simulation root, PCR0 only)");
    }
    out.push(attested);
    Ok(out)
}
