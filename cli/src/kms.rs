//! The KMS key of the simulation: created on first start through the real
//! `aws-sdk-kms` client against kms-sim, with the key policy AWS documents for Nitro
//! Enclaves, and re-pinned to a new PCR0 when the enclave binary was rebuilt.
//!
//! Policy shape: the production key policy of `ekms nitro policy`
//! ([`crate::nitro::key_policy`], after "How AWS Nitro Enclaves uses AWS KMS" /
//! "Condition keys for AWS Nitro Enclaves", AWS KMS Developer Guide): an `Allow` of
//! `kms:Decrypt` and `kms:GenerateDataKey` (the enclave's readiness check is a
//! `GenerateDataKey` on this key, issue 9; it no longer calls `GenerateRandom`)
//! conditioned on `StringEqualsIgnoreCase` `kms:RecipientAttestation:ImageSha384` =
//! PCR0 (hex), an explicit deny of data keys without that attestation, and an
//! unconditioned `Allow` of the administrative actions (never key use).

use std::path::Path;

use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_kms::Client;
use serde_json::{json, Value};

use crate::Error;

/// Account id kms-sim puts into ARNs (its default).
pub const SIM_ACCOUNT_ID: &str = "111122223333";
/// Region of the simulation (kms-sim's default).
pub const SIM_REGION: &str = "us-east-1";
/// Access key id handed to the simulation's processes (kms-sim checks no credentials).
pub const SIM_ACCESS_KEY_ID: &str = "AKIDEKMSSIMULATION";
/// Secret access key handed to the simulation's processes (not a secret: simulation).
pub const SIM_SECRET_ACCESS_KEY: &str = "ekms-simulation-not-a-secret";
/// `Sid` of the statement that gates data keys on the enclave's PCR0.
pub const ENCLAVE_SID: &str = crate::nitro::key_policy::SID_ENCLAVE;
/// Condition key KMS fills from a verified attestation document's PCR0.
pub const IMAGE_SHA384_KEY: &str = "kms:RecipientAttestation:ImageSha384";

/// What [`ensure_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySetup {
    /// A new key was created.
    Created {
        /// Its ARN.
        arn: String,
    },
    /// The remembered key already requires the current PCR0.
    Unchanged {
        /// Its ARN.
        arn: String,
    },
    /// The remembered key's policy named another PCR0 and was replaced.
    PolicyUpdated {
        /// Its ARN.
        arn: String,
        /// The PCR0 the old policy required, if it named one.
        old_pcr0: Option<String>,
    },
}

impl KeySetup {
    /// The key's ARN.
    pub fn arn(&self) -> &str {
        match self {
            KeySetup::Created { arn }
            | KeySetup::Unchanged { arn }
            | KeySetup::PolicyUpdated { arn, .. } => arn,
        }
    }
}

/// The key policy text for an enclave whose PCR0 is `pcr0_hex` (96 hex digits), with
/// principals in account `account_id`: the production policy that `ekms nitro policy`
/// renders ([`crate::nitro::key_policy`]: attested data keys to the instance role, an
/// explicit deny of everything else, an admin role), so the simulation runs the same
/// statements as a Nitro deployment. (kms-sim does not evaluate principals.) A PCR0
/// that is not 96 hex digits, or all zeros, gives a policy that names no image.
pub fn key_policy(pcr0_hex: &str, account_id: &str) -> String {
    let inputs = crate::nitro::measurements::Measurements::from_pcr0(pcr0_hex).and_then(|m| {
        crate::nitro::key_policy::PolicyInputs::new(
            vec![m],
            account_id,
            &format!("arn:aws:iam::{account_id}:role/ekms-parent-instance-role"),
            &format!("arn:aws:iam::{account_id}:role/ekms-sim-kms-admin"),
            false,
            None,
        )
    });
    match inputs {
        Ok(inputs) => crate::nitro::key_policy::render_key_policy(&inputs).to_string(),
        Err(_) => admin_only_key_policy(account_id),
    }
}

/// The PCR0 that the statement [`ENCLAVE_SID`] of `policy_text` requires, lowercased;
/// `None` if the policy is not JSON or has no such single-valued condition.
pub fn policy_pcr0(policy_text: &str) -> Option<String> {
    let policy: Value = serde_json::from_str(policy_text).ok()?;
    let statements = match policy.get("Statement")? {
        Value::Array(items) => items.clone(),
        one => vec![one.clone()],
    };
    statements
        .iter()
        .find(|s| s.get("Sid").and_then(Value::as_str) == Some(ENCLAVE_SID))?
        .get("Condition")?
        .get("StringEqualsIgnoreCase")?
        .get(IMAGE_SHA384_KEY)
        .and_then(|v| match v {
            Value::Array(items) if items.len() == 1 => items[0].as_str(),
            other => other.as_str(),
        })
        .map(str::to_ascii_lowercase)
}

/// A KMS client for the kms-sim at `endpoint_url` (`https://127.0.0.1:PORT`) whose TLS
/// trusts only `tls_root_pem` (the kms-sim TLS CA certificate), with the simulation's
/// static credentials and no retries (kms-sim is local; a failure is real).
///
/// # Errors
/// [`Error::Kms`] if `tls_root_pem` holds no usable certificate.
pub fn sim_client(endpoint_url: &str, tls_root_pem: &str) -> Result<Client, Error> {
    use aws_smithy_http_client::tls;
    // One TLS stack (rustls + ring, DESIGN §8).
    let context = tls::TlsContext::builder()
        .with_trust_store(
            tls::TrustStore::empty()
                .with_native_roots(false)
                .with_pem_certificate(tls_root_pem.as_bytes()),
        )
        .build()
        .map_err(|e| Error::Kms(format!("kms-sim TLS root: {e}")))?;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .tls_context(context)
        .build_https();
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .endpoint_url(endpoint_url)
        .region(aws_sdk_kms::config::Region::new(SIM_REGION))
        .credentials_provider(aws_credential_types::Credentials::new(
            SIM_ACCESS_KEY_ID,
            SIM_SECRET_ACCESS_KEY,
            None,
            None,
            "ekms-sim",
        ))
        .retry_config(aws_sdk_kms::config::retry::RetryConfig::disabled())
        .http_client(http)
        .build();
    Ok(Client::from_conf(config))
}

fn kms_err<E>(what: &str, e: aws_sdk_kms::error::SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = match e.code() {
        Some(code) => format!("{code}: {}", e.message().unwrap_or("")),
        None => DisplayErrorContext(&e).to_string(),
    };
    Error::Kms(format!("{what}: {detail}"))
}

/// The key policy of a key created before the enclave's PCR0 is known: the
/// administrative statement only, so no one gets data keys until [`ensure_key`] adds
/// the PCR0 condition.
pub fn admin_only_key_policy(account_id: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Id": "ekms-nitro-key-policy",
        "Statement": [{
            "Sid": crate::nitro::key_policy::SID_ADMIN,
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{account_id}:role/ekms-sim-kms-admin")},
            "Action": crate::nitro::key_policy::ADMIN_ACTIONS,
            "Resource": "*"
        }]
    })
    .to_string()
}

/// The ARN remembered in `arn_file`, or a new key's (with [`admin_only_key_policy`],
/// remembered there atomically); `true` when it was created now. Does not check that
/// a remembered key exists ([`ensure_key`] does).
///
/// # Errors
/// [`Error::Kms`] if `CreateKey` fails; [`Error::Io`] if `arn_file` cannot be read or
/// written.
pub async fn ensure_key_exists(client: &Client, arn_file: &Path) -> Result<(String, bool), Error> {
    match std::fs::read_to_string(arn_file) {
        Ok(text) if !text.trim().is_empty() => return Ok((text.trim().to_owned(), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("reading {}", arn_file.display()), e)),
    }
    let arn = create_key(client, admin_only_key_policy(SIM_ACCOUNT_ID)).await?;
    crate::sim::write_atomically(arn_file, format!("{arn}\n").as_bytes())?;
    Ok((arn, true))
}

async fn create_key(client: &Client, policy: String) -> Result<String, Error> {
    let created = client
        .create_key()
        .description("enclave-kms simulation: data keys released only to the measured enclave")
        .policy(policy)
        .send()
        .await
        .map_err(|e| kms_err("CreateKey", e))?;
    Ok(created
        .key_metadata()
        .and_then(|m| m.arn())
        .ok_or_else(|| Error::Kms("CreateKey answered without an ARN".into()))?
        .to_owned())
}

/// Makes sure the key remembered in `arn_file` exists and requires `pcr0_hex`, or
/// creates one and remembers its ARN there (written atomically).
///
/// # Errors
/// [`Error::Kms`] if a KMS call fails or the remembered key is unknown to kms-sim;
/// [`Error::Io`] if `arn_file` cannot be read or written.
pub async fn ensure_key(
    client: &Client,
    arn_file: &Path,
    pcr0_hex: &str,
) -> Result<KeySetup, Error> {
    let policy = key_policy(pcr0_hex, SIM_ACCOUNT_ID);
    let remembered = match std::fs::read_to_string(arn_file) {
        Ok(text) => Some(text.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(format!("reading {}", arn_file.display()), e)),
    };
    let Some(arn) = remembered.filter(|a| !a.is_empty()) else {
        let arn = create_key(client, policy).await?;
        crate::sim::write_atomically(arn_file, format!("{arn}\n").as_bytes())?;
        return Ok(KeySetup::Created { arn });
    };
    client
        .describe_key()
        .key_id(&arn)
        .send()
        .await
        .map_err(|e| {
            kms_err(
                &format!(
                    "DescribeKey {arn} (remembered in {}; if the kms state was deleted, remove \
                     that file to create a new key: keys sealed under the old one are lost)",
                    arn_file.display()
                ),
                e,
            )
        })?;
    let current = client
        .get_key_policy()
        .key_id(&arn)
        .send()
        .await
        .map_err(|e| kms_err("GetKeyPolicy", e))?;
    let old_pcr0 = current.policy().and_then(policy_pcr0);
    if old_pcr0.as_deref() == Some(pcr0_hex.to_ascii_lowercase().as_str()) {
        return Ok(KeySetup::Unchanged { arn });
    }
    // The enclave binary was rebuilt, so its measurement changed. In simulation we follow
    // it automatically. In production this is the operator's deliberate step: pinning a
    // new PCR0 hands the data keys to a new image, so it belongs in a reviewed change
    // after the new image's measurement has been reproduced, never in a start script.
    client
        .put_key_policy()
        .key_id(&arn)
        .policy(policy)
        .send()
        .await
        .map_err(|e| kms_err("PutKeyPolicy", e))?;
    Ok(KeySetup::PolicyUpdated { arn, old_pcr0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PCR0: &str =
        "9f6b6c7e5d4c3b2a19f6b6c7e5d4c3b2a19f6b6c7e5d4c3b2a19f6b6c7e5d4c3b2a19f6b6c7e5d4c3b2a1aa9f6b6c7e5";

    #[test]
    fn policy_has_the_documented_nitro_shape() {
        let text = key_policy(PCR0, SIM_ACCOUNT_ID);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["Version"], "2012-10-17");
        let statements = v["Statement"].as_array().unwrap();
        let enclave = statements.iter().find(|s| s["Sid"] == ENCLAVE_SID).unwrap();
        assert_eq!(
            enclave["Action"],
            json!(["kms:Decrypt", "kms:GenerateDataKey"])
        );
        assert_eq!(
            enclave["Condition"]["StringEqualsIgnoreCase"][IMAGE_SHA384_KEY],
            json!([PCR0])
        );
        let admin = statements.iter().find(|s| s["Sid"] != ENCLAVE_SID).unwrap();
        assert!(admin.get("Condition").is_none());
        assert!(admin["Action"]
            .as_array()
            .unwrap()
            .contains(&json!("kms:PutKeyPolicy")));
        assert_eq!(policy_pcr0(&text).as_deref(), Some(PCR0));
    }

    #[test]
    fn admin_only_policy_releases_no_data_keys() {
        let text = admin_only_key_policy(SIM_ACCOUNT_ID);
        let v: Value = serde_json::from_str(&text).unwrap();
        let statements = v["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 1);
        assert!(!text.contains("kms:GenerateDataKey"));
        assert_eq!(policy_pcr0(&text), None);
    }

    #[test]
    fn reads_pcr0_case_insensitively() {
        let text = key_policy(&PCR0.to_ascii_uppercase(), SIM_ACCOUNT_ID);
        assert_eq!(policy_pcr0(&text).as_deref(), Some(PCR0));
    }

    #[test]
    fn rejects_policies_without_the_enclave_condition() {
        assert_eq!(policy_pcr0("not json"), None);
        assert_eq!(policy_pcr0(r#"{"Statement": []}"#), None);
        let other_sid = key_policy(PCR0, SIM_ACCOUNT_ID).replace(ENCLAVE_SID, "Other");
        assert_eq!(policy_pcr0(&other_sid), None);
        let list = key_policy(PCR0, SIM_ACCOUNT_ID)
            .replace(&format!("\"{PCR0}\""), &format!("[\"{PCR0}\"]"));
        assert_eq!(policy_pcr0(&list), None);
    }
}
