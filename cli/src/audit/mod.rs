//! `ekms audit verify`: pages through the parent's copy of the audit chain
//! (`GET /v1/audit`), verifies the attestation document of every audit key that signed
//! a record, and checks the chain with [`chain::ChainVerifier`] (and, with
//! `--receipts`, that the chain holds every receipt a client kept).
//!
//! The parent is untrusted: nothing it serves counts but documents that verify to the
//! chosen root and records those documents' keys signed. A failed check ends the
//! command with [`crate::Error::Verification`] (exit status 3) naming the record.

pub mod chain;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use attestation::{Verifier, VerifyOptions};
use base64::Engine as _;
use clap::{Args, Subcommand};
use ekms_shared::api::{AuditEntry, AuditPage};
use ekms_shared::audit::{audit_user_data, Receipt, SignedAuditRecord};
use hyper::Method;
use serde_json::{json, Value};

use self::chain::{AuditRow, BoundKey, ChainError, ChainVerifier, KeyBindings, ReceiptCheck};
use crate::args::{parse_pcr, RootArgs};
use crate::client::ApiClient;
use crate::verify::{require_pcr0_with_aws, verifier, SIMULATION_WARNING};
use crate::Error;

/// Records asked for per page (the API's maximum).
pub const PAGE_LIMIT: u32 = 1000;
/// Largest receipts file read, in bytes.
pub const MAX_RECEIPTS_FILE: u64 = 64 * 1024 * 1024;

/// `ekms audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the whole audit chain the parent holds (exit status 3 if it is broken).
    Verify(AuditVerifyArgs),
}

/// Flags of `ekms audit verify`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Exit status: 0 the chain verifies; 3 it does not (the first \
    broken record is named on stderr); 2 usage error; 1 any other error."
)]
pub struct AuditVerifyArgs {
    /// Which root the audit keys' attestation documents must chain to.
    #[command(flatten)]
    pub trust: RootArgs,
    /// Required PCR0 of every enclave that signed records, hex (48 bytes); mandatory
    /// with `--root aws`.
    #[arg(long)]
    pub pcr0: Option<String>,
    /// Receipts kept from signing answers, each of which the chain must hold: JSON
    /// values one after another or in an array, each a receipt or a saved signing
    /// answer holding one (`ekms sign … >> FILE` builds such a file).
    #[arg(long)]
    pub receipts: Option<PathBuf>,
}

/// Runs `ekms audit verify`; returns the summary to print.
///
/// # Errors
/// Usage errors for bad flags or a bad receipts file; the client's errors;
/// [`Error::BadResponse`] for a page that is not the API's shape;
/// [`Error::Verification`] for a broken chain.
pub async fn run(client: &ApiClient, args: &AuditVerifyArgs) -> Result<Value, Error> {
    let expected_pcr0 = args.pcr0.as_deref().map(parse_pcr).transpose()?;
    let verifier = verifier(&args.trust, client.socket())?;
    require_pcr0_with_aws(&verifier, expected_pcr0.as_deref(), "a record")?;
    let receipts = match &args.receipts {
        Some(path) => load_receipts(path)?,
        None => Vec::new(),
    };
    let now = SystemTime::now();
    let mut chain = ChainVerifier::new(receipts);
    let mut keys = KeyBindings::new();
    loop {
        let after = chain.last_seq();
        let answer = client
            .request(
                Method::GET,
                &format!("/v1/audit?after={after}&limit={PAGE_LIMIT}"),
                None,
            )
            .await?
            .into_result()?;
        let page: AuditPage = serde_json::from_value(answer)
            .map_err(|e| Error::BadResponse(format!("GET /v1/audit: {e}")))?;
        if page.records.is_empty() {
            break;
        }
        bind_page_keys(&page, &mut keys, &verifier, expected_pcr0.as_deref(), now);
        for row in &page.records {
            let row = decode_row(row).map_err(Error::Verification)?;
            chain.push(&row, &keys).map_err(verification)?;
        }
    }
    let summary = chain.finish().map_err(verification)?;
    let mut out = json!({ "verified": true });
    if let (Some(map), Ok(Value::Object(fields))) =
        (out.as_object_mut(), serde_json::to_value(&summary))
    {
        map.extend(fields);
    }
    out["root"] = json!(if verifier.trusts_simulation_root() {
        "simulation"
    } else {
        "aws-nitro-enclaves-root-g1"
    });
    if verifier.trusts_simulation_root() {
        out["warning"] = Value::String(SIMULATION_WARNING.into());
    }
    Ok(out)
}

fn verification(e: ChainError) -> Error {
    Error::Verification(e.to_string())
}

/// Verifies the documents of the page's audit keys not seen before; a row's key whose
/// document is missing or rejected fails at that row ([`chain`] rule 1).
fn bind_page_keys(
    page: &AuditPage,
    keys: &mut KeyBindings,
    verifier: &Verifier,
    pcr0: Option<&[u8]>,
    now: SystemTime,
) {
    for row in &page.records {
        let Some(key) = hex32(&row.audit_key) else {
            continue;
        };
        if keys.contains_key(&key) {
            continue;
        }
        let document = page
            .documents
            .iter()
            .find(|(k, _)| hex32(k) == Some(key))
            .map(|(_, doc)| doc);
        if let Some(document) = document {
            keys.insert(key, bind_key(verifier, &key, document, pcr0, now));
        }
    }
}

/// Verifies that `document` (base64 COSE_Sign1) binds `audit_key`: it verifies to
/// `verifier`'s root as of its own timestamp (not after `now`), with `pcr0` if given,
/// and its `user_data` is `audit_user_data(audit_key)`.
///
/// # Errors
/// Why not, as text for [`chain::ChainError`].
pub fn bind_key(
    verifier: &Verifier,
    audit_key: &[u8; 32],
    document: &str,
    pcr0: Option<&[u8]>,
    now: SystemTime,
) -> Result<BoundKey, String> {
    let document = base64::engine::general_purpose::STANDARD
        .decode(document)
        .map_err(|_| "the attestation document is not base64".to_owned())?;
    let mut opts = VerifyOptions::at(now);
    if let Some(pcr0) = pcr0 {
        opts.expected_pcrs.insert(0, pcr0.to_vec());
    }
    let doc = verifier
        .verify_at_its_time(&document, now, &opts)
        .map_err(|e| format!("attestation document rejected: {e}"))?;
    if doc.user_data.as_deref() != Some(&audit_user_data(audit_key)[..]) {
        return Err("the attestation document's user_data does not bind this key".into());
    }
    Ok(BoundKey {
        document_timestamp_ms: doc.timestamp,
        pcr0: doc.pcrs.get(&0).map(hex::encode),
        module_id: doc.module_id,
    })
}

/// Decodes a row; a malformed one is a broken chain at its `seq`.
fn decode_row(row: &AuditEntry) -> Result<AuditRow, String> {
    let bad = |what: &str| format!("record {}: {what}", row.seq);
    let signature =
        hex64(&row.signature).ok_or_else(|| bad("signature is not 0x and 128 hex digits"))?;
    let audit_key =
        hex32(&row.audit_key).ok_or_else(|| bad("audit_key is not 0x and 64 hex digits"))?;
    Ok(AuditRow {
        seq: row.seq,
        signed: SignedAuditRecord {
            record: row.record.clone(),
            signature,
            audit_key,
        },
    })
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.strip_prefix("0x")?, &mut out).ok()?;
    Some(out)
}

fn hex64(text: &str) -> Option<[u8; 64]> {
    let mut out = [0u8; 64];
    hex::decode_to_slice(text.strip_prefix("0x")?, &mut out).ok()?;
    Some(out)
}

/// Reads a receipts file: JSON values one after another (one per line, or pretty-printed
/// and concatenated, as `ekms sign … >> FILE` leaves them) or a JSON array of them; each
/// value a receipt `{seq, record_sha256, signature}` or an object holding one in
/// `"receipt"` (a saved signing answer).
///
/// # Errors
/// [`Error::Usage`] for an unreadable file or a value that is not a receipt.
pub fn load_receipts(path: &Path) -> Result<Vec<ReceiptCheck>, Error> {
    let shown = path.display().to_string();
    let meta =
        std::fs::metadata(path).map_err(|e| Error::Usage(format!("cannot read {shown}: {e}")))?;
    if meta.len() > MAX_RECEIPTS_FILE {
        return Err(Error::Usage(format!(
            "{shown}: more than {MAX_RECEIPTS_FILE} bytes"
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("cannot read {shown}: {e}")))?;
    parse_receipts(&text).map_err(|e| Error::Usage(format!("{shown}: {e}")))
}

/// [`load_receipts`] on text.
///
/// # Errors
/// Which receipt is malformed.
pub fn parse_receipts(text: &str) -> Result<Vec<ReceiptCheck>, String> {
    let mut values = Vec::new();
    for value in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        match value.map_err(|e| format!("not JSON: {e}"))? {
            Value::Array(items) => values.extend(items),
            other => values.push(other),
        }
    }
    values
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let value = match value {
                Value::Object(mut map) if map.contains_key("receipt") => {
                    map.remove("receipt").unwrap_or(Value::Null)
                }
                other => other,
            };
            let receipt: Receipt = serde_json::from_value(value)
                .map_err(|e| format!("receipt {}: not a receipt: {e}", i + 1))?;
            ReceiptCheck::from_receipt(&receipt)
        })
        .collect()
}

#[cfg(test)]
mod tests;
