//! The supervisor of one connection slot: connect (with backoff), initialise (`Status`,
//! `Configure`, then the relay's [`super::SessionInit`]), publish, and start over when
//! the connection ends; and the alarm of an enclave configured by another.

use std::sync::Arc;

use ekms_shared::{EnclaveState, Request, ResponseBody, StatusInfo, WireError};

use super::conn::{spawn_connection, Conn};
use super::{
    read, write, Health, Inner, NotReady, NotReadyCode, Session, BACKOFF_MAX, BACKOFF_MIN,
};
use crate::error::Error;
use crate::io::connect_enclave;

pub(super) async fn supervise(inner: Arc<Inner>, slot: usize) {
    let addr = inner.config.enclave.clone();
    let mut backoff = BACKOFF_MIN;
    loop {
        let stream = match connect_enclave(&addr).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(slot, %addr, error = %e, "enclave connect failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let (conn, mut writer, mut reader) = spawn_connection(stream);
        match initialise(&inner, &conn).await {
            Ok(status) => {
                tracing::info!(slot, %addr, mode = ?status.mode, "enclave connection ready");
                *write(&inner.not_ready) = None;
                *write(&inner.health) = Some(Health {
                    mode: status.mode,
                    pcrs: status
                        .pcrs
                        .into_iter()
                        .map(|(k, v)| (k, v.into_vec()))
                        .collect(),
                });
                *write(&inner.slots[slot]) = Some(conn.clone());
                backoff = BACKOFF_MIN;
            }
            Err(e @ Error::EnclaveConfiguredByAnother(_)) => {
                // Fatal (module docs, "Alarm"): this slot stops for good.
                tracing::error!(slot, %addr, error = %e, "enclave connection abandoned");
                conn.close();
                return;
            }
            Err(e) => {
                let code = NotReadyCode::of(&e);
                match code {
                    NotReadyCode::ConfigureRefused => tracing::error!(
                        slot, %addr, error = %e, code = code.as_str(),
                        "the enclave refuses this parent's KMS settings (not the KMS key, \
                         region or endpoint its image is pinned to?)"
                    ),
                    NotReadyCode::KmsAccessDenied => tracing::error!(
                        slot, %addr, error = %e, code = code.as_str(),
                        "KMS refused the enclave's attested GenerateDataKey on the pinned key: \
                         the key policy does not release data keys to this enclave image \
                         (compare the policy's kms:RecipientAttestation:ImageSha384 with \
                         the EIF's PCR0; a debug-mode enclave has PCR0 all zeros) or the \
                         instance role may not use the key; the enclave stays not ready"
                    ),
                    _ => tracing::warn!(slot, %addr, error = %e, code = code.as_str(),
                        "enclave initialisation failed"),
                }
                *write(&inner.not_ready) = Some(NotReady {
                    code,
                    reason: e.to_string(),
                });
                conn.close();
                drop((writer, reader));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        }
        // Runs until either half of the connection ends.
        tokio::select! {
            _ = &mut writer.0 => {}
            _ = &mut reader.0 => {}
        }
        *write(&inner.slots[slot]) = None;
        conn.close();
        drop((writer, reader));
        tracing::warn!(slot, %addr, "enclave connection lost; reconnecting");
        tokio::time::sleep(backoff).await;
    }
}

/// `Configure` with the KMS settings and the current credentials.
pub(super) fn configure_request(inner: &Inner) -> Request {
    let mut kms = inner.config.kms.to_wire();
    if let Some(fresh) = read(&inner.refreshed).as_ref() {
        kms.credentials = fresh.to_wire();
    }
    Request::Configure {
        kms,
        dek_cache: inner.config.dek_cache,
    }
}

/// Step 2 of the relay's module doc: status, configure, then the [`super::SessionInit`].
async fn initialise(inner: &Inner, conn: &Conn) -> Result<StatusInfo, Error> {
    let status = match conn.call(inner, Request::Status).await? {
        ResponseBody::Status(s) => s,
        _ => return Err(Error::UnexpectedResponse("Status")),
    };
    // A Ready enclave reports its target: compare before sending our credentials.
    if let Some(theirs) = &status.kms_target {
        if *theirs != inner.config.kms.to_wire().target() {
            return Err(raise_alarm(inner, Some(theirs)));
        }
    }
    match conn.call(inner, configure_request(inner)).await {
        Ok(ResponseBody::Configured) => {}
        Ok(_) => return Err(Error::UnexpectedResponse("Configure")),
        Err(Error::Enclave(WireError::AlreadyConfigured)) => {
            return Err(raise_alarm(inner, status.kms_target.as_ref()))
        }
        // A Ready enclave serves on with its previous credentials.
        Err(e) if status.state == EnclaveState::Ready => {
            tracing::warn!(error = %e, "credentials refresh refused by the enclave");
        }
        Err(e) => return Err(e),
    }
    inner.init.prepare(Session { inner, conn }, &status).await?;
    Ok(status)
}

/// Raises the alarm (module docs): the enclave reported a KMS target (`theirs`, when
/// known) other than ours, or answered `AlreadyConfigured`, so it is Ready for another
/// KMS target. Logs at error level once, unpublishes every connection, and returns the
/// error callers pass on.
pub(super) fn raise_alarm(inner: &Inner, theirs: Option<&ekms_shared::KmsTarget>) -> Error {
    let describe = |t: &ekms_shared::KmsTarget| {
        format!(
            "region {}, endpoint {}, key {}",
            t.region,
            t.endpoint_url.as_deref().unwrap_or("(regional)"),
            t.kms_key_id
        )
    };
    let ours = describe(&inner.config.kms.to_wire().target());
    let theirs = theirs.map_or_else(|| "another".to_owned(), |t| format!("({})", describe(t)));
    let reason = format!(
        "the enclave is serving a KMS target {theirs} other than this parent's ({ours}): \
         someone else configured it first, possibly with a KMS that knows its data keys. \
         Signing is stopped; restart the enclave, then the parent"
    );
    {
        let mut alarm = write(&inner.alarm);
        if alarm.is_none() {
            tracing::error!(alarm = %reason, "ALARM: enclave configured by another");
            *alarm = Some(reason.clone());
        }
    }
    for slot in &inner.slots {
        if let Some(conn) = write(slot).take() {
            conn.close();
        }
    }
    Error::EnclaveConfiguredByAnother(reason)
}
