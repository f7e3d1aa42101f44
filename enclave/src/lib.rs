//! The enclave side of enclave-kms: attested KMS recipient, key custody, policy and
//! signing (DESIGN.md §1–§4).
//!
//! Modules:
//! - [`recipient`]: the ephemeral RSA key whose public half goes into the attestation
//!   document, and the opening of KMS's `CiphertextForRecipient` (CMS EnvelopedData).

pub mod recipient;
pub mod sealing;
