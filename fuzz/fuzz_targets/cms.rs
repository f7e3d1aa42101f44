//! Fuzz target `cms`: KMS `CiphertextForRecipient` envelopes (CMS `EnvelopedData`,
//! RFC 5652, BER or DER) as the enclave opens them (`ekms_enclave::recipient`).
//!
//! One RSA-2048 recipient key is generated per process (key generation takes ~100 ms,
//! far too slow per input). The fuzzer cannot forge an RSAES-OAEP ciphertext for that
//! key, so what this exercises is everything before the RSA step: the BER/DER parser,
//! the `EnvelopedData` profile checks (version, one `KeyTransRecipientInfo`, OAEP
//! SHA-256 parameters, AES-256-CBC with a 16-byte IV, content size) and the RSA
//! decryption's refusal of a wrong-length or wrong-key block. Property: no panic, and
//! nothing ever opens (a success would mean a forged envelope was accepted).
#![no_main]

use std::sync::OnceLock;

use ekms_enclave::recipient::{open_kms_answer, RecipientKey};
use libfuzzer_sys::fuzz_target;

fn key() -> &'static RecipientKey {
    static KEY: OnceLock<RecipientKey> = OnceLock::new();
    KEY.get_or_init(|| RecipientKey::generate().expect("RSA-2048 key generation"))
}

fuzz_target!(|data: &[u8]| {
    let opened = key().open(data);
    assert!(opened.is_err(), "an envelope not sealed to this key opened");
    // The same bytes through the KMS-answer wrapper (refuses a clear `Plaintext`).
    assert!(open_kms_answer(key(), Some(data), None).is_err());
    assert!(open_kms_answer(key(), Some(data), Some(b"")).is_err());
});
