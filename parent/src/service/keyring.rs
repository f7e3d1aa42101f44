//! The keyring bootstrap and `Restore`: what every fresh enclave connection needs from
//! the store before it serves ([`Bootstrap`], the relay's [`SessionInit`]).
//!
//! On each (re)connection, after `Status` and `Configure`:
//! 1. make sure the keyring exists: load it from the store, or `CreateKeyring` and store
//!    its data-key ciphertext durably, once for all connections (an async mutex);
//! 2. if the enclave is not restored, hand it its durable state (`Restore` with the
//!    newest stored checkpoint and audit record), store the checkpoint it answers and
//!    commit it ([`super::journal`]); one `Restore` at a time from this parent.
//!
//! Until a connection passed both steps it is not published, so keys are refused until
//! the restore is committed.

use std::sync::Arc;

use ekms_shared::{KeyringRef, Request, ResponseBody, StatusInfo, WireError};

use super::journal::Journal;
use crate::error::Error;
use crate::relay::{BoxFuture, Relay, Session, SessionInit};
use crate::store::SharedStore;

/// Epoch of a keyring created by the parent (rotation to later epochs is a next step).
pub const FIRST_EPOCH: u32 = 1;

/// The keyring new keys are created in, and the initialisation of enclave connections
/// (module docs).
#[derive(Debug)]
pub struct Bootstrap {
    store: SharedStore,
    name: String,
    /// The current keyring; the async mutex makes creation happen once.
    current: tokio::sync::Mutex<Option<KeyringRef>>,
    /// One `Restore` at a time from this parent (each connection initialises itself).
    restoring: tokio::sync::Mutex<()>,
}

impl Bootstrap {
    /// The bootstrap of keyring `name` kept in `store`.
    pub fn new(store: SharedStore, name: impl Into<String>) -> Arc<Self> {
        Arc::new(Bootstrap {
            store,
            name: name.into(),
            current: tokio::sync::Mutex::new(None),
            restoring: tokio::sync::Mutex::new(()),
        })
    }

    /// The keyring new keys go to, once a connection was initialised.
    ///
    /// # Errors
    /// [`Error::EnclaveConfiguredByAnother`] once `relay`'s alarm is raised;
    /// [`Error::EnclaveUnavailable`] before the first connection is initialised.
    pub async fn current(&self, relay: &Relay) -> Result<KeyringRef, Error> {
        if let Some(reason) = relay.alarm() {
            return Err(Error::EnclaveConfiguredByAnother(reason));
        }
        self.current
            .lock()
            .await
            .clone()
            .ok_or_else(|| Error::EnclaveUnavailable("the relay is not ready".into()))
    }

    /// Step 1 of the module doc.
    async fn ensure_keyring(&self, session: &Session<'_>) -> Result<(), Error> {
        let mut current = self.current.lock().await;
        if current.is_some() {
            return Ok(());
        }
        let name = self.name.clone();
        if let Some(k) = self.store.latest_keyring(name.clone()).await? {
            *current = Some(k);
            return Ok(());
        }
        let request = Request::CreateKeyring {
            keyring: name.clone(),
            epoch: FIRST_EPOCH,
        };
        let created = match session.call(request).await? {
            ResponseBody::KeyringCreated {
                keyring,
                epoch,
                dek_ciphertext,
            } if keyring == name && epoch == FIRST_EPOCH && !dek_ciphertext.is_empty() => {
                KeyringRef {
                    keyring,
                    epoch,
                    dek_ciphertext,
                }
            }
            _ => return Err(Error::UnexpectedResponse("CreateKeyring")),
        };
        self.store
            .insert_keyring(created.clone(), crate::now_ms())
            .await?;
        tracing::info!(keyring = %name, epoch = FIRST_EPOCH, "keyring created");
        *current = Some(created);
        Ok(())
    }

    /// Step 2 of the module doc. An enclave restored meanwhile (through another
    /// connection) answers `BadRequest`, which is fine. A refusal (a checkpoint that
    /// does not verify, records the checkpoint contradicts) leaves the enclave unable to
    /// serve keys: it is logged at error level, and the connection retried.
    async fn restore(&self, session: &Session<'_>) -> Result<(), Error> {
        let _one_at_a_time = self.restoring.lock().await;
        // Another connection may have restored it while this one waited.
        if let ResponseBody::Status(s) = session.call(Request::Status).await? {
            if s.restored {
                return Ok(());
            }
        }
        let journal = Journal::new(self.store.clone());
        let keyring = self
            .current
            .lock()
            .await
            .clone()
            .ok_or(Error::UnexpectedResponse("Restore"))?;
        let checkpoint = self.store.latest_checkpoint().await?;
        let last_audit = self.store.latest_audit_record().await?.map(|r| r.signed);
        let request = Request::Restore {
            keyring,
            checkpoint,
            last_audit,
        };
        let (checkpoint, policy) = match session.call(request).await {
            Ok(ResponseBody::CheckpointPending { checkpoint, policy }) => (checkpoint, policy),
            Ok(_) => return Err(Error::UnexpectedResponse("Restore")),
            Err(Error::Enclave(WireError::BadRequest { message }))
                if message.contains("already restored") =>
            {
                return Ok(())
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "the enclave refused the stored checkpoint or audit chain: keys stay unusable"
                );
                return Err(e);
            }
        };
        if policy.is_some() {
            return Err(Error::UnexpectedResponse("Restore"));
        }
        let seq = checkpoint.seq;
        self.store.store_checkpoint(checkpoint, None).await?;
        let committed = session.call(Request::Commit { seq }).await?;
        journal.committed(committed).await?;
        tracing::info!(checkpoint = seq, "durable state restored");
        Ok(())
    }
}

impl SessionInit for Bootstrap {
    fn prepare<'a>(
        &'a self,
        session: Session<'a>,
        status: &'a StatusInfo,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.ensure_keyring(&session).await?;
            if !status.restored {
                self.restore(&session).await?;
            }
            Ok(())
        })
    }
}
