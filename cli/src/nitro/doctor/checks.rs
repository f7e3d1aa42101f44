//! The doctor's checks, one function each (see the module docs of `doctor` for the
//! order). Each returns a [`Check`]; none panics or returns early on a bad answer: a
//! check that cannot tell is a failure with a fix.

use std::path::Path;
use std::time::Duration;

use ekms_shared::api::{Health, HealthMode};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::Check;
use crate::args::{Root, RootArgs, VerifyArgs};
use crate::client::ApiClient;

/// Deadline of one IMDS or nitro-cli interaction.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest IMDS answer read.
const MAX_IMDS_ANSWER: usize = 64 * 1024;
/// The vsock port vsock-proxy listens on for KMS (`ekms_shared::KMS_PROXY_PORT`).
const KMS_PROXY_PORT: u32 = ekms_shared::KMS_PROXY_PORT;

/// 1. nitro-cli runs, and the allocator reserves at least `cpu_count` CPUs and
///    `memory_mib` MiB (the enclave's run flags).
pub fn nitro_cli_and_allocator(
    nitro_cli: &Path,
    allocator: &Path,
    cpu_count: u32,
    memory_mib: u64,
) -> Check {
    const NAME: &str = "nitro_cli_and_allocator";
    let version = match std::process::Command::new(nitro_cli)
        .arg("--version")
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(out) => {
            return Check::fail(
                NAME,
                format!(
                    "{} --version exited with {}",
                    nitro_cli.display(),
                    out.status
                ),
                "install aws-nitro-enclaves-cli (docs/DEPLOY.md, step 2)",
            )
        }
        Err(e) => {
            return Check::fail(
                NAME,
                format!("cannot run {}: {e}", nitro_cli.display()),
                "sudo dnf install -y aws-nitro-enclaves-cli (docs/DEPLOY.md, step 2)",
            )
        }
    };
    let text = match std::fs::read_to_string(allocator) {
        Ok(t) => t,
        Err(e) => {
            return Check::fail(
                NAME,
                format!("cannot read {}: {e}", allocator.display()),
                "configure /etc/nitro_enclaves/allocator.yaml and enable \
                 nitro-enclaves-allocator.service (docs/DEPLOY.md, step 2)",
            )
        }
    };
    let number = |key: &str| {
        text.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .find_map(|l| l.trim().strip_prefix(key)?.trim().parse::<u64>().ok())
    };
    let fix = format!(
        "set memory_mib: {memory_mib} (or more) and cpu_count: {cpu_count} (or more) in {}, \
         then sudo systemctl restart nitro-enclaves-allocator.service",
        allocator.display()
    );
    let Some(memory) = number("memory_mib:") else {
        return Check::fail(
            NAME,
            format!("{} has no memory_mib", allocator.display()),
            fix,
        );
    };
    let cpus = match number("cpu_count:") {
        Some(n) => n,
        None => match text
            .lines()
            .find_map(|l| l.trim().strip_prefix("cpu_pool:"))
        {
            Some(pool) => count_cpu_pool(pool.trim()),
            None => {
                return Check::fail(
                    NAME,
                    format!("{} has no cpu_count or cpu_pool", allocator.display()),
                    fix,
                )
            }
        },
    };
    if memory < memory_mib || cpus < u64::from(cpu_count) {
        return Check::fail(
            NAME,
            format!(
                "the allocator reserves {cpus} CPUs and {memory} MiB; the enclave runs with \
                 --cpu-count {cpu_count} --memory {memory_mib}"
            ),
            fix,
        );
    }
    Check::pass(
        NAME,
        format!("{version}; allocator {cpus} CPUs, {memory} MiB (run flags {cpu_count} CPUs, {memory_mib} MiB)"),
    )
}

/// The number of CPUs in an allocator `cpu_pool` (`2,3,6-9`).
fn count_cpu_pool(pool: &str) -> u64 {
    pool.split(',')
        .map(|part| match part.trim().split_once('-') {
            Some((a, b)) => match (a.parse::<u64>(), b.parse::<u64>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 0,
            },
            None => u64::from(part.trim().parse::<u64>().is_ok()),
        })
        .sum()
}

/// 2. A `vsock-proxy` process forwards vsock port 8000 to the KMS endpoint of
///    `region` (`kms.<region>.amazonaws.com 443`), found in `proc_root`'s cmdlines.
pub fn vsock_proxy(proc_root: &Path, region: Option<&str>) -> Check {
    const NAME: &str = "vsock_proxy";
    let Some(region) = region else {
        return Check::skipped(
            NAME,
            "needs --kms-key-arn (its region names the KMS endpoint)",
        );
    };
    let host = format!("kms.{region}.amazonaws.com");
    let port = KMS_PROXY_PORT.to_string();
    let mut others = Vec::new();
    let entries = match std::fs::read_dir(proc_root) {
        Ok(e) => e,
        Err(e) => {
            return Check::fail(
                NAME,
                format!("cannot list {}: {e}", proc_root.display()),
                "run on the parent host",
            )
        }
    };
    for entry in entries.flatten() {
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_proxy = argv
            .first()
            .is_some_and(|a| Path::new(a).file_name().is_some_and(|n| n == "vsock-proxy"));
        if !is_proxy {
            continue;
        }
        let args: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
        if args.first() == Some(&port.as_str())
            && args.get(1) == Some(&host.as_str())
            && args.get(2) == Some(&"443")
        {
            return Check::pass(
                NAME,
                format!(
                    "vsock-proxy {port} {host} 443 (pid {})",
                    entry.file_name().to_string_lossy()
                ),
            );
        }
        others.push(args.join(" "));
    }
    let found = if others.is_empty() {
        "no vsock-proxy process".to_owned()
    } else {
        format!("vsock-proxy runs for {others:?}")
    };
    Check::fail(
        NAME,
        format!("{found}; the enclave needs vsock-proxy {port} {host} 443"),
        format!(
            "allow {host}:443 in /etc/nitro_enclaves/vsock-proxy.yaml, then \
             sudo systemctl enable --now ekms-vsock-proxy.service (docs/DEPLOY.md)"
        ),
    )
}

/// 3. IMDSv2 (`PUT /latest/api/token`, then `GET
///    /latest/meta-data/iam/security-credentials/`) names the instance's role, and it
///    is `expected` (an ARN or a name) when given.
pub async fn instance_role(imds: &str, expected: Option<&str>) -> Check {
    const NAME: &str = "instance_role";
    let fix = "attach an instance profile with the instance role (aws ec2 \
               associate-iam-instance-profile), with IMDSv2 and a hop limit of at least 1 \
               (docs/DEPLOY.md, step 3)";
    let Some(authority) = imds
        .strip_prefix("http://")
        .map(|a| a.trim_end_matches('/'))
    else {
        return Check::fail(
            NAME,
            format!("IMDS endpoint {imds} is not http://HOST[:PORT]"),
            fix,
        );
    };
    let token = match http_call(
        authority,
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
    )
    .await
    {
        Ok((200, body)) => body,
        Ok((status, _)) => {
            return Check::fail(NAME, format!("IMDSv2 token request answered {status}"), fix)
        }
        Err(e) => return Check::fail(NAME, format!("IMDS at {imds} unreachable: {e}"), fix),
    };
    let token = token.trim().to_owned();
    let role = match http_call(
        authority,
        "GET",
        "/latest/meta-data/iam/security-credentials/",
        &[("X-aws-ec2-metadata-token", &token)],
    )
    .await
    {
        Ok((200, body)) => body.lines().next().unwrap_or_default().trim().to_owned(),
        Ok((404, _)) => return Check::fail(NAME, "the instance has no role (IMDS 404)", fix),
        Ok((status, _)) => {
            return Check::fail(NAME, format!("IMDS answered {status} for the role"), fix)
        }
        Err(e) => return Check::fail(NAME, format!("IMDS: {e}"), fix),
    };
    if role.is_empty() {
        return Check::fail(NAME, "IMDS names no role", fix);
    }
    if let Some(want) = expected {
        let want_name = want.rsplit('/').next().unwrap_or(want);
        if want_name != role {
            return Check::fail(
                NAME,
                format!("the instance role is {role}, not {want_name}"),
                "attach the instance profile of the role the key policy names",
            );
        }
    }
    Check::pass(NAME, format!("instance role {role} (IMDSv2)"))
}

/// A one-shot HTTP/1.1 request to `authority` (`host[:port]`, port 80 by default);
/// its status and body. Enough for IMDS (small answers with `Content-Length`).
async fn http_call(
    authority: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let addr = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let call = async {
        let mut stream = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: 0\r\n");
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        (&mut stream)
            .take(MAX_IMDS_ANSWER as u64)
            .read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or("no HTTP status")?;
        Ok::<_, String>((status, body.to_owned()))
    };
    tokio::time::timeout(STEP_TIMEOUT, call)
        .await
        .map_err(|_| format!("no answer within {STEP_TIMEOUT:?}"))?
}

/// 4. The key policy (`policy_text`) releases data keys only under a
///    `kms:RecipientAttestation:ImageSha384` condition that lists `eif_pcr0`, and its
///    deny of requests without a matching attestation lists it too.
pub fn key_policy_pcr0(policy_text: &str, eif_pcr0: &str) -> Check {
    const NAME: &str = "key_policy_pcr0";
    let fix = format!(
        "render the policy for this EIF (ekms nitro policy --measurements ...) and put it \
         as the admin role (aws kms put-key-policy); during a rollout keep the previous \
         image with --previous-measurements. EIF PCR0: {eif_pcr0}"
    );
    let Ok(policy) = serde_json::from_str::<Value>(policy_text) else {
        return Check::fail(NAME, "the key policy is not JSON", fix);
    };
    let statements = match &policy["Statement"] {
        Value::Array(items) => items.clone(),
        Value::Null => Vec::new(),
        one => vec![one.clone()],
    };
    let listed = |s: &Value, operators: &[&str]| -> Option<Vec<String>> {
        operators.iter().find_map(|op| {
            let cond = s["Condition"][*op].as_object()?;
            let v = cond
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(crate::nitro::key_policy::IMAGE_SHA384))?
                .1;
            Some(match v {
                Value::Array(items) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_ascii_lowercase)
                    .collect(),
                other => other
                    .as_str()
                    .map(str::to_ascii_lowercase)
                    .into_iter()
                    .collect(),
            })
        })
    };
    let uses_data_keys = |s: &Value| {
        let actions = match &s["Action"] {
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Value::String(a) => vec![a.clone()],
            _ => Vec::new(),
        };
        actions.iter().any(|a| {
            let a = a.to_ascii_lowercase();
            a == "kms:*"
                || a == "*"
                || a.starts_with("kms:decrypt")
                || a.starts_with("kms:generatedatakey")
        })
    };
    let mut allows = Vec::new();
    let mut denies = Vec::new();
    for s in &statements {
        if !uses_data_keys(s) {
            continue;
        }
        match s["Effect"].as_str() {
            Some("Allow") => match listed(s, &["StringEqualsIgnoreCase", "StringEquals"]) {
                Some(list) => allows.push(list),
                None => {
                    return Check::fail(
                        NAME,
                        format!(
                            "statement {} allows data keys without an ImageSha384 condition",
                            s["Sid"]
                        ),
                        fix,
                    )
                }
            },
            Some("Deny") => {
                if let Some(list) = listed(s, &["StringNotEqualsIgnoreCase", "StringNotEquals"]) {
                    denies.push(list);
                }
            }
            _ => {}
        }
    }
    let pcr0 = eif_pcr0.to_ascii_lowercase();
    if allows.is_empty() {
        return Check::fail(
            NAME,
            "no statement allows data keys to an attested image",
            fix,
        );
    }
    if let Some(list) = allows.iter().chain(&denies).find(|l| !l.contains(&pcr0)) {
        return Check::fail(
            NAME,
            format!("the policy lists PCR0 {list:?}, not the EIF's"),
            fix,
        );
    }
    if denies.is_empty() {
        return Check::fail(
            NAME,
            "the EIF's PCR0 is allowed, but no Deny refuses data keys without a matching attestation",
            fix,
        );
    }
    let count = allows.iter().map(Vec::len).max().unwrap_or(0);
    let note = if count > 1 {
        format!(" ({count} PCR0s listed: a rollout in progress? remove the old one when done)")
    } else {
        String::new()
    };
    Check::pass(
        NAME,
        format!("the key policy releases data keys to PCR0 {pcr0} only under attestation{note}"),
    )
}

/// 5. `nitro-cli describe-enclaves` shows the enclave `name` `RUNNING`, flags `NONE`,
///    CID `cid`, and (when reported) PCR0 `eif_pcr0`.
pub fn enclave(nitro_cli: &Path, name: &str, cid: u64, eif_pcr0: &str) -> Check {
    const NAME: &str = "enclave";
    let fix = "sudo systemctl restart ekms-enclave.service; see journalctl -u ekms-enclave (docs/DEPLOY.md)";
    let out = match std::process::Command::new(nitro_cli)
        .arg("describe-enclaves")
        .output()
    {
        Ok(out) if out.status.success() => out.stdout,
        Ok(out) => {
            return Check::fail(
                NAME,
                format!("nitro-cli describe-enclaves exited with {}", out.status),
                fix,
            )
        }
        Err(e) => {
            return Check::fail(
                NAME,
                format!("cannot run {}: {e}", nitro_cli.display()),
                fix,
            )
        }
    };
    let Ok(Value::Array(enclaves)) = serde_json::from_slice::<Value>(&out) else {
        return Check::fail(
            NAME,
            "nitro-cli describe-enclaves printed no JSON array",
            fix,
        );
    };
    let Some(e) = enclaves.iter().find(|e| e["EnclaveName"] == name) else {
        return Check::fail(
            NAME,
            format!("no enclave named {name} ({} running)", enclaves.len()),
            fix,
        );
    };
    if e["Flags"] != "NONE" {
        return Check::fail(
            NAME,
            format!(
                "enclave {name} runs with flags {} (debug mode: all-zero PCRs, console readable)",
                e["Flags"]
            ),
            "never --debug-mode in production: restart it from ekms-enclave.service",
        );
    }
    if e["State"] != "RUNNING" {
        return Check::fail(NAME, format!("enclave {name} is {}", e["State"]), fix);
    }
    if e["EnclaveCID"].as_u64() != Some(cid) {
        return Check::fail(
            NAME,
            format!("enclave {name} has CID {}, the parent expects {cid}", e["EnclaveCID"]),
            "run it with --enclave-cid as in /etc/ekms/enclave.env and EKMS_ENCLAVE=vsock://CID:5000",
        );
    }
    if let Some(pcr0) = e["Measurements"]["PCR0"].as_str() {
        if !pcr0.eq_ignore_ascii_case(eif_pcr0) {
            return Check::fail(
                NAME,
                format!("enclave {name} runs PCR0 {pcr0}, not the EIF's {eif_pcr0}"),
                "install the EIF you measured (make install), then restart ekms-enclave.service",
            );
        }
    }
    Check::pass(
        NAME,
        format!("enclave {name} RUNNING, flags NONE, CID {cid}"),
    )
}

/// 6. `/v1/health` answers 200 in `mode` with PCR0 `pcr0`.
pub async fn health(client: &ApiClient, mode: ekms_shared::Mode, pcr0: &str) -> Check {
    const NAME: &str = "health";
    let want_mode = HealthMode::from(mode);
    let fix = "journalctl -u ekms-parent (a wrong PCR0 or key policy shows as kms_access_denied)";
    let answer = match client.request(hyper::Method::GET, "/v1/health", None).await {
        Ok(a) => a.into_result(),
        Err(e) => return Check::fail(NAME, e.to_string(), fix),
    };
    let health = answer.map_err(|e| e.to_string()).and_then(|v| {
        serde_json::from_value::<Health>(v).map_err(|e| format!("GET /v1/health: {e}"))
    });
    match health {
        Ok(h)
            if h.mode == want_mode
                && h.pcrs
                    .get("0")
                    .is_some_and(|p| p.eq_ignore_ascii_case(pcr0)) =>
        {
            Check::pass(
                NAME,
                format!("ready, mode {}, PCR0 {pcr0}", want_mode.as_str()),
            )
        }
        Ok(h) => Check::fail(
            NAME,
            format!(
                "ready, but mode {:?} PCR0 {}; expected {} {pcr0}",
                h.mode.as_str(),
                h.pcrs.get("0").map_or("null", String::as_str),
                want_mode.as_str()
            ),
            fix,
        ),
        Err(e) => Check::fail(NAME, e, fix),
    }
}

/// 7. A fresh attestation document (fresh nonce) verifies against `root` with the
///    expected PCRs: every PCR of the `measurements` file (nitro-cli's JSON), or `pcr0`.
pub async fn attestation(
    client: &ApiClient,
    root: Root,
    state_dir: Option<std::path::PathBuf>,
    pcr0: Option<String>,
    measurements: Option<std::path::PathBuf>,
) -> Check {
    const NAME: &str = "attestation";
    let what = if measurements.is_some() {
        "the EIF's PCRs"
    } else {
        "PCR0"
    };
    let args = VerifyArgs {
        nonce: None,
        trust: RootArgs {
            root,
            sim_root: None,
            state_dir,
        },
        max_age: 300,
        pcr0,
        measurements,
    };
    match crate::verify::run(client, &args).await {
        Ok(_) => Check::pass(NAME, format!("a fresh document verifies with {what}")),
        Err(e) => Check::fail(
            NAME,
            e.to_string(),
            "the running enclave is not the measured EIF, or is not on Nitro hardware: \
             compare nitro-cli describe-enclaves with the measurements",
        ),
    }
}
