//! API token management (all `admin`): create, list, revoke. Only a token's SHA-256 is
//! stored ([`crate::auth`]); the token itself is returned once, at creation.

use super::{Service, ServiceError};
use crate::auth::{self, Caller, Scope, Token};
use crate::store::TokenRow;

/// Most tokens stored at once (the bootstrap admin token is not refused by it).
pub const MAX_TOKENS: usize = 1000;

/// A checked token to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// Operator's name for it.
    pub name: String,
    /// Its scopes (no repeats).
    pub scopes: Vec<Scope>,
    /// Keys its `sign` scope is limited to; `None`: every key.
    pub key_ids: Option<Vec<String>>,
    /// Expiry, milliseconds since the Unix epoch; `None`: never.
    pub expires_at_ms: Option<i64>,
}

impl Service {
    /// Creates a token; its stored row and the token (shown only now).
    ///
    /// # Errors
    /// [`ServiceError::Forbidden`] without `admin`; `too_many_tokens`
    /// ([`crate::Error::TooManyTokens`]) beyond [`MAX_TOKENS`]; the store's errors.
    pub async fn create_token(
        &self,
        caller: &Caller,
        new: NewToken,
    ) -> Result<(TokenRow, Token), ServiceError> {
        caller.require(Scope::Admin, None)?;
        let (token, token_hash) = auth::generate_token()?;
        let row = TokenRow {
            token_id: auth::new_token_id()?,
            name: new.name,
            token_hash,
            scopes: new
                .scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            key_ids: new.key_ids,
            created_at_ms: crate::now_ms(),
            expires_at_ms: new.expires_at_ms,
        };
        self.store
            .insert_token(row.clone(), Some(MAX_TOKENS))
            .await?;
        tracing::info!(token_id = %row.token_id, by = %caller.token_id(), "token created");
        Ok((row, token))
    }

    /// Every stored token, oldest first.
    ///
    /// # Errors
    /// [`ServiceError::Forbidden`] without `admin`; the store's errors.
    pub async fn list_tokens(&self, caller: &Caller) -> Result<Vec<TokenRow>, ServiceError> {
        caller.require(Scope::Admin, None)?;
        Ok(self.store.list_tokens().await?)
    }

    /// Revokes token `token_id`: refused from the next request on.
    ///
    /// # Errors
    /// [`ServiceError::Forbidden`] without `admin`; [`ServiceError::TokenNotFound`];
    /// the store's errors.
    pub async fn revoke_token(&self, caller: &Caller, token_id: &str) -> Result<(), ServiceError> {
        caller.require(Scope::Admin, None)?;
        if !auth::is_token_id(token_id) || !self.store.delete_token(token_id.to_owned()).await? {
            return Err(ServiceError::TokenNotFound);
        }
        tracing::info!(token_id, by = %caller.token_id(), "token revoked");
        Ok(())
    }
}
