//! The attestation document payload: [`AttestationDoc`], its CBOR encoding exactly as the
//! NSM emits it, and the strict decoder that applies every field rule of AWS's
//! specification (`aws-nitro-enclaves-nsm-api` `docs/attestation_process.md` §2.2 for
//! the fields, and §3.2.2.1 "Syntactical validation" for their rules and the 512-byte
//! limits).
//!
//! The payload is a CBOR map with text keys, in this order:
//!
//! | key | type | rule |
//! |---|---|---|
//! | `module_id` | text | non-empty |
//! | `digest` | text | `"SHA384"` |
//! | `timestamp` | uint | ms since the Unix epoch, > 0 |
//! | `pcrs` | map uint → bytes | 1..=32 entries, index < 32, value 32, 48 or 64 bytes |
//! | `certificate` | bytes | DER, 1..=1024 bytes |
//! | `cabundle` | array of bytes | ≥ 1 entry, each DER 1..=1024 bytes; `[0]` is the root |
//! | `public_key` | bytes or null | 1..=1024 bytes |
//! | `user_data` | bytes or null | 0..=512 bytes |
//! | `nonce` | bytes or null | 0..=512 bytes |
//!
//! Unknown keys, duplicate keys, non-text keys and trailing bytes are rejected.
//!
//! `null` for an absent optional field is accepted although §3.2.2.1 says "no field
//! content can be null": the NSM itself encodes an absent `public_key`, `user_data` or
//! `nonce` as `null` (see both real documents in `tests/vectors/`), so refusing it would
//! refuse genuine documents. Mandatory fields are never accepted as `null`.

use std::collections::BTreeMap;

use ciborium::value::Value;

use crate::nsm::{MAX_NONCE_LEN, MAX_PUBLIC_KEY_LEN, MAX_USER_DATA_LEN};
use crate::verify::VerifyError;

/// Largest number of PCRs a document may carry.
pub const MAX_PCRS: usize = 32;
/// Largest DER certificate (leaf or cabundle entry) a document may carry, in bytes.
pub const MAX_CERT_LEN: usize = 1024;
/// The only digest a Nitro attestation document uses.
pub const DIGEST_SHA384: &str = "SHA384";

/// A decoded Nitro attestation document (the COSE_Sign1 payload).
///
/// Returned by [`crate::Verifier::verify`] only after every check passed; a value built
/// by hand carries no such guarantee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationDoc {
    /// Issuing NSM's identifier, e.g. `i-0de38b2b6853cc9e8-enc0193685e7fee7d85`.
    pub module_id: String,
    /// Digest of the PCR bank: always `"SHA384"`.
    pub digest: String,
    /// Time the document was produced, in milliseconds since the Unix epoch (UTC).
    pub timestamp: u64,
    /// PCR index → value (48 bytes each for SHA-384). Real enclaves report PCR0..=15.
    pub pcrs: BTreeMap<u16, Vec<u8>>,
    /// DER leaf certificate whose key signed the document.
    pub certificate: Vec<u8>,
    /// DER CA certificates: `[0]` the root, then the intermediates in order towards the leaf.
    pub cabundle: Vec<Vec<u8>>,
    /// Public key the enclave asked to include, if any.
    pub public_key: Option<Vec<u8>>,
    /// User data the enclave asked to include, if any.
    pub user_data: Option<Vec<u8>>,
    /// Nonce the enclave asked to include, if any.
    pub nonce: Option<Vec<u8>>,
}

impl AttestationDoc {
    /// Encodes the document as the NSM does: a definite-length CBOR map with the nine
    /// keys in the order of the table above, absent optional fields as `null`.
    ///
    /// # Errors
    /// Only if the CBOR writer fails, which writing to a `Vec` does not.
    pub fn to_cbor(&self) -> Result<Vec<u8>, ciborium::ser::Error<std::io::Error>> {
        let opt = |v: &Option<Vec<u8>>| v.as_ref().map_or(Value::Null, |b| Value::Bytes(b.clone()));
        let pcrs = self
            .pcrs
            .iter()
            .map(|(k, v)| (Value::Integer((*k).into()), Value::Bytes(v.clone())))
            .collect();
        let map = Value::Map(vec![
            (text("module_id"), Value::Text(self.module_id.clone())),
            (text("digest"), Value::Text(self.digest.clone())),
            (text("timestamp"), Value::Integer(self.timestamp.into())),
            (text("pcrs"), Value::Map(pcrs)),
            (text("certificate"), Value::Bytes(self.certificate.clone())),
            (
                text("cabundle"),
                Value::Array(self.cabundle.iter().cloned().map(Value::Bytes).collect()),
            ),
            (text("public_key"), opt(&self.public_key)),
            (text("user_data"), opt(&self.user_data)),
            (text("nonce"), opt(&self.nonce)),
        ]);
        let mut out = Vec::with_capacity(4096);
        ciborium::ser::into_writer(&map, &mut out)?;
        Ok(out)
    }

    /// Decodes a payload and applies every syntactic field rule (the table above).
    /// Does **not** check any signature or certificate: use [`crate::Verifier::verify`].
    ///
    /// # Errors
    /// [`VerifyError::Malformed`] for bytes that are not one CBOR map;
    /// [`VerifyError::Field`] naming the first field that breaks a rule.
    pub fn from_cbor(payload: &[u8]) -> Result<Self, VerifyError> {
        let mut reader = payload;
        let value: Value = ciborium::de::from_reader(&mut reader)
            .map_err(|_| VerifyError::Malformed("payload is not CBOR"))?;
        if !reader.is_empty() {
            return Err(VerifyError::Malformed("trailing bytes after the payload"));
        }
        let Value::Map(entries) = value else {
            return Err(VerifyError::Malformed("payload is not a CBOR map"));
        };

        let mut fields = Fields::default();
        for (key, value) in entries {
            let Value::Text(key) = key else {
                return Err(VerifyError::Malformed("payload map has a non-text key"));
            };
            let slot = match key.as_str() {
                "module_id" => &mut fields.module_id,
                "digest" => &mut fields.digest,
                "timestamp" => &mut fields.timestamp,
                "pcrs" => &mut fields.pcrs,
                "certificate" => &mut fields.certificate,
                "cabundle" => &mut fields.cabundle,
                "public_key" => &mut fields.public_key,
                "user_data" => &mut fields.user_data,
                "nonce" => &mut fields.nonce,
                _ => return Err(VerifyError::Malformed("payload has an unknown key")),
            };
            if slot.replace(value).is_some() {
                return Err(VerifyError::Malformed("payload has a duplicate key"));
            }
        }

        let module_id = required_text(fields.module_id, "module_id")?;
        if module_id.is_empty() {
            return Err(field("module_id", "must not be empty"));
        }
        let digest = required_text(fields.digest, "digest")?;
        if digest != DIGEST_SHA384 {
            return Err(field("digest", "must be \"SHA384\""));
        }
        let timestamp = match fields.timestamp {
            Some(Value::Integer(i)) => u64::try_from(i)
                .map_err(|_| field("timestamp", "must be an unsigned 64-bit integer"))?,
            Some(_) => return Err(field("timestamp", "must be an unsigned integer")),
            None => return Err(field("timestamp", "is missing")),
        };
        if timestamp == 0 {
            return Err(field("timestamp", "must be greater than zero"));
        }
        let pcrs = decode_pcrs(fields.pcrs)?;
        let certificate = required_bytes(fields.certificate, "certificate")?;
        check_len(&certificate, 1, MAX_CERT_LEN, "certificate")?;
        let cabundle = match fields.cabundle {
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::Bytes(b) => check_len(&b, 1, MAX_CERT_LEN, "cabundle").map(|()| b),
                    _ => Err(field("cabundle", "entries must be byte strings")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(field("cabundle", "must be an array")),
            None => return Err(field("cabundle", "is missing")),
        };
        if cabundle.is_empty() {
            return Err(field("cabundle", "must not be empty"));
        }
        let public_key = optional_bytes(fields.public_key, "public_key")?;
        if let Some(pk) = &public_key {
            check_len(pk, 1, MAX_PUBLIC_KEY_LEN, "public_key")?;
        }
        let user_data = optional_bytes(fields.user_data, "user_data")?;
        if let Some(ud) = &user_data {
            check_len(ud, 0, MAX_USER_DATA_LEN, "user_data")?;
        }
        let nonce = optional_bytes(fields.nonce, "nonce")?;
        if let Some(n) = &nonce {
            check_len(n, 0, MAX_NONCE_LEN, "nonce")?;
        }

        Ok(Self {
            module_id,
            digest,
            timestamp,
            pcrs,
            certificate,
            cabundle,
            public_key,
            user_data,
            nonce,
        })
    }

    /// True when PCR0, PCR1 and PCR2 are each absent or all zeros: the enclave runs in
    /// debug mode (`nitro-cli run-enclave --debug-mode`), where the parent can read its
    /// console and memory, so its measurements attest nothing.
    pub fn is_debug_mode(&self) -> bool {
        (0..3u16).all(|i| self.pcrs.get(&i).is_none_or(|v| v.iter().all(|b| *b == 0)))
    }
}

#[derive(Default)]
struct Fields {
    module_id: Option<Value>,
    digest: Option<Value>,
    timestamp: Option<Value>,
    pcrs: Option<Value>,
    certificate: Option<Value>,
    cabundle: Option<Value>,
    public_key: Option<Value>,
    user_data: Option<Value>,
    nonce: Option<Value>,
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn field(field: &'static str, rule: &'static str) -> VerifyError {
    VerifyError::Field { field, rule }
}

fn required_text(v: Option<Value>, name: &'static str) -> Result<String, VerifyError> {
    match v {
        Some(Value::Text(s)) => Ok(s),
        Some(_) => Err(field(name, "must be a text string")),
        None => Err(field(name, "is missing")),
    }
}

fn required_bytes(v: Option<Value>, name: &'static str) -> Result<Vec<u8>, VerifyError> {
    match v {
        Some(Value::Bytes(b)) => Ok(b),
        Some(_) => Err(field(name, "must be a byte string")),
        None => Err(field(name, "is missing")),
    }
}

fn optional_bytes(v: Option<Value>, name: &'static str) -> Result<Option<Vec<u8>>, VerifyError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bytes(b)) => Ok(Some(b)),
        Some(_) => Err(field(name, "must be a byte string or null")),
    }
}

fn check_len(b: &[u8], min: usize, max: usize, name: &'static str) -> Result<(), VerifyError> {
    if b.len() < min {
        Err(field(name, "is too short"))
    } else if b.len() > max {
        Err(field(name, "is too long"))
    } else {
        Ok(())
    }
}

fn decode_pcrs(v: Option<Value>) -> Result<BTreeMap<u16, Vec<u8>>, VerifyError> {
    let entries = match v {
        Some(Value::Map(entries)) => entries,
        Some(_) => return Err(field("pcrs", "must be a map")),
        None => return Err(field("pcrs", "is missing")),
    };
    if entries.is_empty() || entries.len() > MAX_PCRS {
        return Err(field("pcrs", "must have 1 to 32 entries"));
    }
    let mut pcrs = BTreeMap::new();
    for (k, v) in entries {
        let index = match k {
            Value::Integer(i) => u16::try_from(i).ok().filter(|i| usize::from(*i) < MAX_PCRS),
            _ => None,
        }
        .ok_or_else(|| field("pcrs", "index must be an integer below 32"))?;
        let Value::Bytes(value) = v else {
            return Err(field("pcrs", "values must be byte strings"));
        };
        if ![32, 48, 64].contains(&value.len()) {
            return Err(field("pcrs", "values must be 32, 48 or 64 bytes"));
        }
        if pcrs.insert(index, value).is_some() {
            return Err(field("pcrs", "has a duplicate index"));
        }
    }
    Ok(pcrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AttestationDoc {
        AttestationDoc {
            module_id: "i-0123456789abcdef0-enc0123456789abcdef".into(),
            digest: "SHA384".into(),
            timestamp: 1_732_983_768_387,
            pcrs: (0..16u16).map(|i| (i, vec![i as u8; 48])).collect(),
            certificate: vec![0x30; 600],
            cabundle: vec![vec![0x30; 500], vec![0x30; 700]],
            public_key: Some(vec![4; 65]),
            user_data: None,
            nonce: Some(vec![]),
        }
    }

    fn encode_value(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(v, &mut out).unwrap();
        out
    }

    /// The sample, as a CBOR map we can break one field at a time.
    fn sample_map() -> Vec<(Value, Value)> {
        let bytes = sample().to_cbor().unwrap();
        match ciborium::de::from_reader::<Value, _>(&bytes[..]).unwrap() {
            Value::Map(m) => m,
            _ => unreachable!(),
        }
    }

    fn with_field(name: &str, value: Option<Value>) -> Vec<u8> {
        let mut map: Vec<_> = sample_map()
            .into_iter()
            .filter(|(k, _)| k.as_text() != Some(name))
            .collect();
        if let Some(v) = value {
            map.push((text(name), v));
        }
        encode_value(&Value::Map(map))
    }

    #[test]
    fn encodes_like_the_nsm_and_round_trips() {
        let doc = sample();
        let bytes = doc.to_cbor().unwrap();
        // Definite map of 9 entries, first key "module_id" (as in every real document).
        assert_eq!(&bytes[..11], b"\xa9\x69module_id");
        assert_eq!(AttestationDoc::from_cbor(&bytes).unwrap(), doc);
        let keys: Vec<_> = sample_map()
            .into_iter()
            .map(|(k, _)| k.into_text().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "module_id",
                "digest",
                "timestamp",
                "pcrs",
                "certificate",
                "cabundle",
                "public_key",
                "user_data",
                "nonce"
            ]
        );
    }

    #[test]
    fn accepts_absent_optional_fields() {
        let bytes = with_field("public_key", None);
        assert_eq!(AttestationDoc::from_cbor(&bytes).unwrap().public_key, None);
    }

    #[test]
    fn rejects_each_broken_field_rule() {
        let b = |n| Value::Bytes(vec![1; n]);
        let pcrs = |entries: Vec<(Value, Value)>| Some(Value::Map(entries));
        let int = |i: u64| Value::Integer(i.into());
        let cases: Vec<(&str, Option<Value>, &str)> = vec![
            ("module_id", None, "module_id"),
            ("module_id", Some(text("")), "module_id"),
            ("module_id", Some(b(3)), "module_id"),
            ("digest", Some(text("SHA256")), "digest"),
            ("digest", None, "digest"),
            ("timestamp", Some(int(0)), "timestamp"),
            ("timestamp", Some(text("1")), "timestamp"),
            (
                "timestamp",
                Some(Value::Integer((-1i64).into())),
                "timestamp",
            ),
            ("pcrs", pcrs(vec![]), "pcrs"),
            ("pcrs", pcrs(vec![(int(32), b(48))]), "pcrs"),
            ("pcrs", pcrs(vec![(int(0), b(47))]), "pcrs"),
            ("pcrs", pcrs(vec![(text("0"), b(48))]), "pcrs"),
            (
                "pcrs",
                pcrs((0..33).map(|i| (int(i), b(48))).collect()),
                "pcrs",
            ),
            ("pcrs", pcrs(vec![(int(1), b(48)), (int(1), b(48))]), "pcrs"),
            ("certificate", Some(b(0)), "certificate"),
            ("certificate", Some(b(1025)), "certificate"),
            ("certificate", None, "certificate"),
            ("cabundle", Some(Value::Array(vec![])), "cabundle"),
            ("cabundle", Some(Value::Array(vec![b(1025)])), "cabundle"),
            ("cabundle", Some(Value::Array(vec![b(0)])), "cabundle"),
            ("cabundle", Some(Value::Array(vec![text("x")])), "cabundle"),
            ("public_key", Some(b(0)), "public_key"),
            ("public_key", Some(b(1025)), "public_key"),
            ("user_data", Some(b(513)), "user_data"),
            ("user_data", Some(text("x")), "user_data"),
            ("nonce", Some(b(513)), "nonce"),
        ];
        for (name, value, expected) in cases {
            let bytes = with_field(name, value.clone());
            match AttestationDoc::from_cbor(&bytes) {
                Err(VerifyError::Field { field, .. }) => {
                    assert_eq!(field, expected, "{name} = {value:?}")
                }
                other => panic!("{name} = {value:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn accepts_field_values_at_their_limits() {
        let b = |n| Value::Bytes(vec![1; n]);
        for (name, value) in [
            ("certificate", b(1024)),
            ("cabundle", Value::Array(vec![b(1024)])),
            ("public_key", b(1024)),
            ("user_data", b(512)),
            ("nonce", b(512)),
            (
                "pcrs",
                Value::Map(
                    (0..32u64)
                        .map(|i| (Value::Integer(i.into()), b(32)))
                        .collect(),
                ),
            ),
        ] {
            let bytes = with_field(name, Some(value));
            assert!(AttestationDoc::from_cbor(&bytes).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_unknown_duplicate_and_malformed_structure() {
        let mut map = sample_map();
        map.push((text("extra"), Value::Null));
        assert!(matches!(
            AttestationDoc::from_cbor(&encode_value(&Value::Map(map))),
            Err(VerifyError::Malformed(_))
        ));
        let mut map = sample_map();
        map.push((text("nonce"), Value::Null));
        assert!(matches!(
            AttestationDoc::from_cbor(&encode_value(&Value::Map(map))),
            Err(VerifyError::Malformed(_))
        ));
        let mut map = sample_map();
        map.push((Value::Integer(1.into()), Value::Null));
        assert!(matches!(
            AttestationDoc::from_cbor(&encode_value(&Value::Map(map))),
            Err(VerifyError::Malformed(_))
        ));
        let mut bytes = sample().to_cbor().unwrap();
        bytes.push(0);
        assert!(matches!(
            AttestationDoc::from_cbor(&bytes),
            Err(VerifyError::Malformed(_))
        ));
        assert!(AttestationDoc::from_cbor(&encode_value(&Value::Array(vec![]))).is_err());
        assert!(AttestationDoc::from_cbor(&[0xff, 0x00]).is_err());
        assert!(AttestationDoc::from_cbor(&[]).is_err());
    }

    #[test]
    fn detects_debug_mode() {
        let mut doc = sample();
        assert!(!doc.is_debug_mode());
        for i in 0..3u16 {
            doc.pcrs.insert(i, vec![0; 48]);
        }
        assert!(doc.is_debug_mode());
        doc.pcrs.remove(&1);
        assert!(doc.is_debug_mode());
    }

    #[test]
    fn rejects_debug_mode_when_any_image_pcr_is_set() {
        let mut doc = sample();
        for i in 0..3u16 {
            doc.pcrs.insert(i, vec![0; 48]);
        }
        doc.pcrs.insert(2, vec![1; 48]);
        assert!(!doc.is_debug_mode());
    }
}
