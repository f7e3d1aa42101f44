//! `ekms nitro policy`: the KMS key policy and the instance role's IAM policy for an
//! enclave image, rendered from nitro-cli's measurements (issue 9 item 3).
//!
//! The key policy ([`render_key_policy`]), statement by statement:
//!
//! 1. `AdminRoleAdministersNeverUses`: the named admin role may describe, tag, enable,
//!    disable, schedule deletion and `PutKeyPolicy`; never `Decrypt`, `Encrypt`,
//!    `GenerateDataKey*` or `CreateGrant`. The account root is not named anywhere: a
//!    key policy that allows `arn:aws:iam::<account>:root` lets every IAM principal of
//!    the account whose IAM policy allows it use the key (AWS KMS Developer Guide,
//!    "Default key policy"), the instance role included, and `kms:Create*` includes
//!    `kms:CreateGrant`. The price: if the admin role is deleted, the key can only be
//!    recovered through AWS Support. Keep it.
//! 2. `InstanceRoleDataKeysOnlyForMeasuredImage`: the instance role may `Decrypt` and
//!    `GenerateDataKey` only with `kms:RecipientAttestation:ImageSha384` equal to one of
//!    the listed PCR0s (and, with `--pcr8`, `kms:RecipientAttestation:PCR8` equal to
//!    one of the listed PCR8s): KMS then answers only in `CiphertextForRecipient`
//!    (AWS KMS Developer Guide, "Condition keys for AWS Nitro Enclaves").
//! 3. `DenyDataKeysWithoutMatchingAttestation`: everyone is denied `Decrypt` and
//!    `GenerateDataKey*` unless the request's attestation has one of the listed PCR0s:
//!    `StringNotEqualsIgnoreCase` is true when the key is absent (IAM, "Condition
//!    operators"), so a request without a `Recipient` is denied too, whatever any
//!    other statement or grant allows. With `--pcr8`, a second deny does the same for
//!    PCR8.
//! 4. `DenyPlantingAndDelegation`: everyone is denied `Encrypt`, `ReEncrypt*`,
//!    `CreateGrant`, `GenerateDataKeyWithoutPlaintext` and `GenerateDataKeyPair*`: with
//!    `Encrypt` a principal could wrap a data key *it knows* and plant the ciphertext
//!    as a keyring in the parent's store; a grant would bypass this policy.
//!
//! The instance role's IAM policy ([`render_instance_role_policy`]) repeats the
//! allow of statement 2 (same actions, same conditions) on the key ARN: the key policy
//! alone already grants it (it names the role), so this is defence in depth and the
//! place to look when auditing the role. It allows nothing else: the enclave no longer
//! calls `GenerateRandom`.
//!
//! Every condition emitted here is one kms-sim's evaluator supports
//! (`kms-sim/src/policy.rs`), so tests load the rendered policy into kms-sim.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::nitro::measurements::Measurements;
use crate::Error;

/// Condition key KMS fills from the attestation document's PCR0.
pub const IMAGE_SHA384: &str = "kms:RecipientAttestation:ImageSha384";
/// Condition key KMS fills from the attestation document's PCR8.
pub const PCR8: &str = "kms:RecipientAttestation:PCR8";

/// `Sid`s of the key policy's statements (module docs).
pub const SID_ADMIN: &str = "AdminRoleAdministersNeverUses";
/// See [`SID_ADMIN`].
pub const SID_ENCLAVE: &str = "InstanceRoleDataKeysOnlyForMeasuredImage";
/// See [`SID_ADMIN`].
pub const SID_DENY_PCR0: &str = "DenyDataKeysWithoutMatchingAttestation";
/// See [`SID_ADMIN`].
pub const SID_DENY_PCR8: &str = "DenyDataKeysWithoutMatchingSigner";
/// See [`SID_ADMIN`].
pub const SID_DENY_PLANTING: &str = "DenyPlantingAndDelegation";

/// Administrative actions of the admin role: no key use, no grants.
pub const ADMIN_ACTIONS: [&str; 13] = [
    "kms:DescribeKey",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:EnableKey",
    "kms:DisableKey",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
];

/// What the enclave needs: `GenerateDataKey` (keyrings, and the readiness check) and
/// `Decrypt` (keyrings' data keys).
pub const ENCLAVE_ACTIONS: [&str; 2] = ["kms:Decrypt", "kms:GenerateDataKey"];

/// Flags of `ekms nitro policy`.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    /// The image's measurements: the JSON `nitro-cli build-enclave` or `nitro-cli
    /// describe-eif` prints (`make eif` saves it as ekms-enclave.measurements.json).
    #[arg(long, value_name = "FILE")]
    pub measurements: PathBuf,
    /// The measurements of the image being replaced, during a rollout: the policy then
    /// accepts both PCR0s (render again without it once every host runs the new one).
    #[arg(long, value_name = "FILE")]
    pub previous_measurements: Option<PathBuf>,
    /// The AWS account id (12 digits) of the key and both roles.
    #[arg(long, value_name = "ID")]
    pub account: String,
    /// The EC2 instance role of the parent host (`arn:aws:iam::<account>:role/<name>`).
    #[arg(long, value_name = "ARN")]
    pub instance_role: String,
    /// The role that administers the key (and may rewrite this policy).
    #[arg(long, value_name = "ARN")]
    pub admin_role: String,
    /// Also require PCR8 (the signing certificate of a signed image) to be one of the
    /// listed images' PCR8s.
    #[arg(long)]
    pub pcr8: bool,
    /// The key's ARN, for the IAM policy's `Resource` [default: every key of the
    /// account in any region, `arn:aws:kms:*:<account>:key/*`].
    #[arg(long, value_name = "ARN")]
    pub key_arn: Option<String>,
    /// Write key-policy.json and instance-role-policy.json into DIR instead of
    /// printing both as one JSON object.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Checked inputs of the renderers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInputs {
    /// Current image first, then the previous one (if any, and if different).
    pub images: Vec<Measurements>,
    /// 12-digit account id.
    pub account: String,
    /// Instance role ARN.
    pub instance_role: String,
    /// Admin role ARN.
    pub admin_role: String,
    /// Require PCR8 too.
    pub pcr8: bool,
    /// The key ARN for the IAM policy's `Resource`, if known.
    pub key_arn: Option<String>,
}

impl PolicyInputs {
    /// Checks the flags' values against each other.
    ///
    /// # Errors
    /// [`Error::Usage`] for a malformed account or role ARN, a role of another account,
    /// the same role as instance and admin role, `--pcr8` with an image that has no
    /// PCR8, or a key ARN of another account.
    pub fn new(
        images: Vec<Measurements>,
        account: &str,
        instance_role: &str,
        admin_role: &str,
        pcr8: bool,
        key_arn: Option<&str>,
    ) -> Result<Self, Error> {
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::Usage(
                "--account must be a 12-digit AWS account id".into(),
            ));
        }
        check_role_arn("--instance-role", instance_role, account)?;
        check_role_arn("--admin-role", admin_role, account)?;
        if instance_role == admin_role {
            return Err(Error::Usage(
                "--instance-role and --admin-role must differ: the host must not be able to \
                 rewrite the key policy"
                    .into(),
            ));
        }
        if let Some(arn) = key_arn {
            let ok = arn.split(':').nth(4) == Some(account)
                && arn.starts_with("arn:")
                && arn.split(':').nth(2) == Some("kms")
                && arn.split(':').nth(5).is_some_and(|k| k.starts_with("key/"));
            if !ok {
                return Err(Error::Usage(format!(
                    "--key-arn must be a KMS key ARN of account {account}"
                )));
            }
        }
        let mut unique: Vec<Measurements> = Vec::new();
        for m in images {
            if !unique.iter().any(|u| u.pcr0() == m.pcr0()) {
                unique.push(m);
            }
        }
        if unique.is_empty() {
            return Err(Error::Usage("no measurements".into()));
        }
        if pcr8 && unique.iter().any(|m| m.pcr(8).is_none()) {
            return Err(Error::Usage(
                "--pcr8 needs PCR8 in every measurements file (a signed image: nitro-cli \
                 build-enclave --signing-certificate ... --private-key ...)"
                    .into(),
            ));
        }
        Ok(Self {
            images: unique,
            account: account.to_owned(),
            instance_role: instance_role.to_owned(),
            admin_role: admin_role.to_owned(),
            pcr8,
            key_arn: key_arn.map(str::to_owned),
        })
    }

    /// Every listed PCR0, current first.
    pub fn pcr0s(&self) -> Vec<String> {
        self.images.iter().map(|m| m.pcr0().to_owned()).collect()
    }

    /// Every listed PCR8 (deduplicated), current first; empty without `--pcr8`.
    pub fn pcr8s(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if self.pcr8 {
            for p in self.images.iter().filter_map(|m| m.pcr(8)) {
                if !out.iter().any(|o| o == p) {
                    out.push(p.to_owned());
                }
            }
        }
        out
    }

    /// The conditions under which the enclave may use the key.
    fn allow_condition(&self) -> Value {
        let mut equals = serde_json::Map::new();
        equals.insert(IMAGE_SHA384.into(), json!(self.pcr0s()));
        if self.pcr8 {
            equals.insert(PCR8.into(), json!(self.pcr8s()));
        }
        json!({"StringEqualsIgnoreCase": equals})
    }
}

/// `arn:<partition>:iam::<account>:role/<path/name>` of `account`.
fn check_role_arn(flag: &str, arn: &str, account: &str) -> Result<(), Error> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && !parts[1].is_empty()
        && parts[2] == "iam"
        && parts[3].is_empty()
        && parts[4] == account
        && parts[5].strip_prefix("role/").is_some_and(|n| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{flag} must be an IAM role ARN of account {account} \
             (arn:aws:iam::{account}:role/NAME), not {arn:?}"
        )))
    }
}

/// The KMS key policy (module docs).
pub fn render_key_policy(inputs: &PolicyInputs) -> Value {
    let mut statements = vec![
        json!({
            "Sid": SID_ADMIN,
            "Effect": "Allow",
            "Principal": {"AWS": inputs.admin_role},
            "Action": ADMIN_ACTIONS,
            "Resource": "*"
        }),
        json!({
            "Sid": SID_ENCLAVE,
            "Effect": "Allow",
            "Principal": {"AWS": inputs.instance_role},
            "Action": ENCLAVE_ACTIONS,
            "Resource": "*",
            "Condition": inputs.allow_condition()
        }),
        json!({
            "Sid": SID_DENY_PCR0,
            "Effect": "Deny",
            "Principal": "*",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
            "Resource": "*",
            "Condition": {"StringNotEqualsIgnoreCase": {IMAGE_SHA384: inputs.pcr0s()}}
        }),
    ];
    if inputs.pcr8 {
        statements.push(json!({
            "Sid": SID_DENY_PCR8,
            "Effect": "Deny",
            "Principal": "*",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
            "Resource": "*",
            "Condition": {"StringNotEqualsIgnoreCase": {PCR8: inputs.pcr8s()}}
        }));
    }
    statements.push(json!({
        "Sid": SID_DENY_PLANTING,
        "Effect": "Deny",
        "Principal": "*",
        "Action": [
            "kms:Encrypt",
            "kms:ReEncrypt*",
            "kms:CreateGrant",
            "kms:GenerateDataKeyWithoutPlaintext",
            "kms:GenerateDataKeyPair*"
        ],
        "Resource": "*"
    }));
    json!({
        "Version": "2012-10-17",
        "Id": "ekms-nitro-key-policy",
        "Statement": statements
    })
}

/// The instance role's IAM policy (module docs).
pub fn render_instance_role_policy(inputs: &PolicyInputs) -> Value {
    let resource = inputs
        .key_arn
        .clone()
        .unwrap_or_else(|| format!("arn:aws:kms:*:{}:key/*", inputs.account));
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "EnclaveDataKeysOnlyForMeasuredImage",
            "Effect": "Allow",
            "Action": ENCLAVE_ACTIONS,
            "Resource": resource,
            "Condition": inputs.allow_condition()
        }]
    })
}

/// Runs `ekms nitro policy`: the rendered policies as one JSON object
/// `{"key_policy": …, "instance_role_policy": …, "pcr0": [...]}`, or (with
/// `--out-dir`) the two files and a summary naming them.
///
/// # Errors
/// [`Error::Usage`] for bad inputs (see [`PolicyInputs::new`], [`Measurements::parse`]),
/// [`Error::Io`] when a file cannot be read or written.
pub fn run(args: &PolicyArgs) -> Result<Value, Error> {
    let mut images = vec![Measurements::load(&args.measurements)?];
    if let Some(previous) = &args.previous_measurements {
        images.push(Measurements::load(previous)?);
    }
    let inputs = PolicyInputs::new(
        images,
        &args.account,
        &args.instance_role,
        &args.admin_role,
        args.pcr8,
        args.key_arn.as_deref(),
    )?;
    let key_policy = render_key_policy(&inputs);
    let role_policy = render_instance_role_policy(&inputs);
    let Some(dir) = &args.out_dir else {
        return Ok(json!({
            "pcr0": inputs.pcr0s(),
            "key_policy": key_policy,
            "instance_role_policy": role_policy,
        }));
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let mut written = Vec::new();
    for (name, value) in [
        ("key-policy.json", &key_policy),
        ("instance-role-policy.json", &role_policy),
    ] {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| Error::Usage(format!("rendering {name}: {e}")))?;
        std::fs::write(&path, text + "\n")
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        written.push(path.display().to_string());
    }
    Ok(json!({"pcr0": inputs.pcr0s(), "written": written}))
}

#[cfg(test)]
#[path = "key_policy_tests.rs"]
mod tests;
