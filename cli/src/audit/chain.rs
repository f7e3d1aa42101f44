//! The audit chain's checks, with no I/O (`ekms_shared::audit` says what the chain
//! promises): a [`ChainVerifier`] takes the rows in the order the parent served them
//! and the audit keys whose attestation documents have been verified, and stops at the
//! first record that breaks a rule, naming it.
//!
//! The rules, in the order they are checked for each row:
//! 1. the row's audit key is bound by a verified attestation document;
//! 2. the record is canonical and its signature verifies under that key;
//! 3. the row's `seq` is the signed record's `seq`;
//! 4. `seq` is one more than the previous record's (the first is 1);
//! 5. `prev_hash` is the SHA-256 of the previous record's JSON (the first's is zeros);
//! 6. a record under an audit key other than the previous record's is a `boot`
//!    record (each enclave boot draws a new audit key and starts with `boot`), and so
//!    is the first;
//! 7. every receipt for this `seq` names exactly this record (SHA-256 and signature).
//!
//! At the end every receipt must have been matched. What this cannot see: records cut
//! off the end of the chain that no receipt names.

use std::collections::BTreeMap;

use ekms_shared::audit::{AuditAction, Receipt, SignedAuditRecord, GENESIS_HASH};
use serde::Serialize;

/// One row of `GET /v1/audit`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// The `seq` the parent says the row has.
    pub seq: u64,
    /// The record, its signature and its audit key.
    pub signed: SignedAuditRecord,
}

/// What a verified attestation document says about the audit key it binds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoundKey {
    /// The document's timestamp, ms since the Unix epoch.
    pub document_timestamp_ms: u64,
    /// The document's PCR0, lowercase hex.
    pub pcr0: Option<String>,
    /// The document's `module_id`.
    pub module_id: String,
}

/// Audit key → its binding, or why its document was rejected (a key absent from the
/// map has no document at all).
pub type KeyBindings = BTreeMap<[u8; 32], Result<BoundKey, String>>;

/// A receipt, decoded: what a client kept of one signing answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptCheck {
    /// The record's `seq`.
    pub seq: u64,
    /// SHA-256 of the record's JSON.
    pub record_sha256: [u8; 32],
    /// The record's ed25519 signature.
    pub signature: [u8; 64],
}

impl ReceiptCheck {
    /// Decodes a receipt (`record_sha256`: 64 hex digits, `signature`: `0x` + 128).
    ///
    /// # Errors
    /// A description of the malformed field.
    pub fn from_receipt(receipt: &Receipt) -> Result<Self, String> {
        let mut record_sha256 = [0u8; 32];
        hex::decode_to_slice(&receipt.record_sha256, &mut record_sha256).map_err(|_| {
            format!(
                "receipt for record {}: record_sha256 is not 64 hex digits",
                receipt.seq
            )
        })?;
        let mut signature = [0u8; 64];
        receipt
            .signature
            .strip_prefix("0x")
            .and_then(|digits| hex::decode_to_slice(digits, &mut signature).ok())
            .ok_or_else(|| {
                format!(
                    "receipt for record {}: signature is not 0x and 128 hex digits",
                    receipt.seq
                )
            })?;
        Ok(Self {
            seq: receipt.seq,
            record_sha256,
            signature,
        })
    }
}

/// The first broken rule: which record, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", seq.map(|s| format!("record {s}: ")).unwrap_or_default())]
pub struct ChainError {
    /// The record at fault (`None` for a fault of the chain as a whole).
    pub seq: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

impl ChainError {
    fn at(seq: u64, reason: impl Into<String>) -> Self {
        Self {
            seq: Some(seq),
            reason: reason.into(),
        }
    }
}

/// One audit key's share of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeySummary {
    /// The ed25519 public key, `0x` hex.
    pub audit_key: String,
    /// First record it signed.
    pub first_seq: u64,
    /// Last record it signed.
    pub last_seq: u64,
    /// Records it signed.
    pub records: u64,
    /// Its attestation document.
    pub document: BoundKey,
}

/// What a verified chain holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainSummary {
    /// Records verified.
    pub records: u64,
    /// `seq` of the last record (0 for an empty chain).
    pub last_seq: u64,
    /// SHA-256 of the last record's JSON, hex (zeros for an empty chain).
    pub last_record_sha256: String,
    /// `boot` records (enclave starts).
    pub boots: u64,
    /// The audit keys, in chain order.
    pub audit_keys: Vec<KeySummary>,
    /// Receipts matched to their records.
    pub receipts_checked: u64,
}

/// Checks rows one at a time (so a long chain is verified page by page in bounded
/// memory); see the module docs for the rules.
#[derive(Debug)]
pub struct ChainVerifier {
    last_seq: u64,
    last_hash: [u8; 32],
    boots: u64,
    keys: Vec<KeySummary>,
    current_key: Option<[u8; 32]>,
    receipts: BTreeMap<u64, Vec<ReceiptCheck>>,
    receipts_checked: u64,
}

impl ChainVerifier {
    /// A verifier of a chain from its first record, that must find every receipt.
    pub fn new(receipts: impl IntoIterator<Item = ReceiptCheck>) -> Self {
        let mut by_seq: BTreeMap<u64, Vec<ReceiptCheck>> = BTreeMap::new();
        for r in receipts {
            by_seq.entry(r.seq).or_default().push(r);
        }
        Self {
            last_seq: 0,
            last_hash: GENESIS_HASH,
            boots: 0,
            keys: Vec::new(),
            current_key: None,
            receipts: by_seq,
            receipts_checked: 0,
        }
    }

    /// `seq` of the last record accepted (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Checks the next row against `keys`.
    ///
    /// # Errors
    /// The first broken rule, as a [`ChainError`] naming the row's `seq`.
    pub fn push(&mut self, row: &AuditRow, keys: &KeyBindings) -> Result<(), ChainError> {
        let key = row.signed.audit_key;
        let key_hex = format!("0x{}", hex::encode(key));
        let bound = match keys.get(&key) {
            None => {
                return Err(ChainError::at(
                    row.seq,
                    format!("audit key {key_hex} has no attestation document"),
                ))
            }
            Some(Err(why)) => {
                return Err(ChainError::at(
                    row.seq,
                    format!("audit key {key_hex} is not bound by its attestation document: {why}"),
                ))
            }
            Some(Ok(bound)) => bound,
        };
        let record = row
            .signed
            .verify()
            .map_err(|e| ChainError::at(row.seq, e.to_string()))?;
        if record.seq != row.seq {
            return Err(ChainError::at(
                row.seq,
                format!(
                    "served as record {}, but signed as record {}",
                    row.seq, record.seq
                ),
            ));
        }
        let expected = self
            .last_seq
            .checked_add(1)
            .ok_or_else(|| ChainError::at(row.seq, "the chain is longer than a u64 counts"))?;
        if record.seq != expected {
            let why = if record.seq < expected {
                "duplicated or reordered"
            } else {
                "records missing or reordered"
            };
            return Err(ChainError::at(
                record.seq,
                format!("out of sequence: expected record {expected} here ({why})"),
            ));
        }
        if record.prev_hash != hex::encode(self.last_hash) {
            let what = if self.last_seq == 0 {
                "the first record's prev_hash is not all zeros".to_owned()
            } else {
                format!("prev_hash does not match record {}", self.last_seq)
            };
            return Err(ChainError::at(record.seq, what));
        }
        let is_boot = record.action == AuditAction::Boot;
        if self.current_key != Some(key) && !is_boot {
            let what = if self.current_key.is_none() {
                "the chain does not start with a boot record".to_owned()
            } else {
                format!("audit key changes to {key_hex} without a boot record")
            };
            return Err(ChainError::at(record.seq, what));
        }
        let hash = row.signed.record_sha256();
        if let Some(receipts) = self.receipts.remove(&record.seq) {
            for r in &receipts {
                if r.record_sha256 != hash {
                    return Err(ChainError::at(
                        record.seq,
                        "does not match its receipt (record_sha256 differs)",
                    ));
                }
                if r.signature != row.signed.signature {
                    return Err(ChainError::at(
                        record.seq,
                        "does not match its receipt (signature differs)",
                    ));
                }
            }
            self.receipts_checked += u64::try_from(receipts.len()).unwrap_or(u64::MAX);
        }

        if is_boot {
            self.boots += 1;
        }
        match self.keys.last_mut() {
            Some(k) if self.current_key == Some(key) => {
                k.last_seq = record.seq;
                k.records += 1;
            }
            _ => self.keys.push(KeySummary {
                audit_key: key_hex,
                first_seq: record.seq,
                last_seq: record.seq,
                records: 1,
                document: bound.clone(),
            }),
        }
        self.current_key = Some(key);
        self.last_seq = record.seq;
        self.last_hash = hash;
        Ok(())
    }

    /// Ends the chain: every receipt must have been matched.
    ///
    /// # Errors
    /// A [`ChainError`] naming the first receipt whose record is not in the chain.
    pub fn finish(self) -> Result<ChainSummary, ChainError> {
        if let Some(seq) = self.receipts.keys().next() {
            return Err(ChainError::at(
                *seq,
                format!(
                    "a receipt names this record, but the chain ends at record {}",
                    self.last_seq
                ),
            ));
        }
        Ok(ChainSummary {
            records: self.last_seq,
            last_seq: self.last_seq,
            last_record_sha256: hex::encode(self.last_hash),
            boots: self.boots,
            audit_keys: self.keys,
            receipts_checked: self.receipts_checked,
        })
    }
}

/// Verifies a whole chain held in memory: [`ChainVerifier`] over `rows`, then
/// [`ChainVerifier::finish`].
///
/// # Errors
/// The first broken rule.
pub fn verify_chain(
    rows: &[AuditRow],
    keys: &KeyBindings,
    receipts: impl IntoIterator<Item = ReceiptCheck>,
) -> Result<ChainSummary, ChainError> {
    let mut verifier = ChainVerifier::new(receipts);
    for row in rows {
        verifier.push(row, keys)?;
    }
    verifier.finish()
}

#[cfg(test)]
mod tests;
