//! [`ServiceError`]: what the service layer answers when an operation does not happen.
//! Each front end maps it to its own codes (REST: [`crate::api::ApiCode`]; JSON-RPC:
//! EIP-1474 codes).

use ekms_shared::WireError;

use crate::error::Error;

/// The enclave's refusal of a request by policy: the rule that refused and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The policy rule's stable name (e.g. `evm.chain_ids`; see docs/POLICY.md).
    pub rule: String,
    /// The enclave's explanation.
    pub message: String,
}

/// Which part of a request the service found invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalid {
    /// The key label is too long.
    Label,
    /// The policy document is not one the engine accepts.
    Policy,
    /// The payload kind is not one the key's algorithm signs.
    KindMismatch,
    /// An enable proposal for a key that is not disabled.
    KeyNotDisabled,
}

/// Error of a service operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The caller's token lacks the scope, or may not use the key.
    #[error("{0}")]
    Forbidden(String),
    /// No key with this id (or address, among those the caller may use).
    #[error("no key with this id")]
    KeyNotFound,
    /// No token with this id.
    #[error("no token with this id")]
    TokenNotFound,
    /// A request field is invalid.
    #[error("{message}")]
    Invalid {
        /// Which.
        what: Invalid,
        /// Why, for the caller.
        message: String,
    },
    /// The enclave's policy refused (the audit record of the refusal is stored).
    #[error("refused by policy rule {}: {}", .0.rule, .0.message)]
    PolicyDenied(Refusal),
    /// The store, the relay or the enclave failed or refused otherwise.
    #[error(transparent)]
    Parent(Error),
}

impl ServiceError {
    /// [`ServiceError::Invalid`].
    pub(crate) fn invalid(what: Invalid, message: impl Into<String>) -> Self {
        ServiceError::Invalid {
            what,
            message: message.into(),
        }
    }
}

impl From<Error> for ServiceError {
    fn from(e: Error) -> Self {
        match e {
            Error::Enclave(WireError::PolicyDenied { rule, message }) => {
                ServiceError::PolicyDenied(Refusal { rule, message })
            }
            other => ServiceError::Parent(other),
        }
    }
}

impl From<crate::store::StoreError> for ServiceError {
    fn from(e: crate::store::StoreError) -> Self {
        ServiceError::Parent(e.into())
    }
}

impl From<crate::auth::Forbidden> for ServiceError {
    fn from(f: crate::auth::Forbidden) -> Self {
        ServiceError::Forbidden(f.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifts_a_policy_refusal_into_a_typed_refusal() {
        let e: ServiceError = Error::Enclave(WireError::PolicyDenied {
            rule: "evm.chain_ids".into(),
            message: "chain 5".into(),
        })
        .into();
        assert!(
            matches!(&e, ServiceError::PolicyDenied(r) if r.rule == "evm.chain_ids"),
            "{e:?}"
        );
    }

    #[test]
    fn rejects_lifting_other_enclave_errors() {
        let e: ServiceError = Error::Enclave(WireError::KeyDisabled).into();
        assert!(
            matches!(e, ServiceError::Parent(Error::Enclave(_))),
            "{e:?}"
        );
    }
}
