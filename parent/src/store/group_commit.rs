//! Group commit of audit records: one thread owns the writing of `audit_records` rows,
//! takes them from a channel, and commits every record that is waiting in **one**
//! transaction (one `fsync` with `synchronous=FULL`), then wakes each waiter.
//!
//! The guarantee of [`crate::service::journal::Journal::record`] is unchanged: a waiter hears
//! `Ok` only after the transaction holding its row committed, so no signature leaves
//! before its audit record is durable. What changes is the price: with 64 signatures in
//! flight, the records that arrive while one commit is syncing share the next one,
//! instead of 64 transactions and 64 `fsync`s queueing on the connection's mutex.
//!
//! The thread locks the store's connection once per batch (so the rest of the store
//! still sees one connection and one writer), and, like every write of the store,
//! keeps the key cache's view of external changes current
//! ([`super::cache::KeyCache::note_commit`]). It ends when the last [`Store`] clone is
//! dropped (the channel closes).
//!
//! [`Store`]: super::Store

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use ekms_shared::audit::SignedAuditRecord;
use rusqlite::{params, Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::cache::KeyCache;
use super::StoreError;

/// Most records committed in one transaction (bounds the time the connection is held).
pub const MAX_BATCH: usize = 512;

/// One record to store and who waits for it.
pub(crate) struct Job {
    /// The record's `seq` (its primary key), parsed by the caller.
    pub seq: i64,
    /// The signed record.
    pub signed: SignedAuditRecord,
    /// Woken with the outcome once the batch committed (or failed).
    pub done: oneshot::Sender<Result<(), StoreError>>,
}

/// Starts the writer thread on `conn`; returns the channel to it.
pub(crate) fn start(
    conn: Arc<Mutex<Connection>>,
    cache: Arc<KeyCache>,
) -> Result<mpsc::Sender<Job>, StoreError> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("ekms-audit-writer".into())
        .spawn(move || run(&conn, &cache, &rx))
        .map_err(|e| StoreError::Internal(format!("starting the audit writer thread: {e}")))?;
    Ok(tx)
}

fn run(conn: &Mutex<Connection>, cache: &KeyCache, rx: &mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    // `recv` fails once every sender (every `Store` clone) is gone.
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcomes = {
            // A poisoned lock means a panic mid-call elsewhere; SQLite rolled back its
            // transaction when the guard dropped, so the connection is still sound.
            let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
            commit_batch(&mut c, cache, &batch)
        };
        // Woken after the commit and after the lock is released.
        match outcomes {
            Ok(results) => {
                for (job, result) in batch.drain(..).zip(results) {
                    let _ = job.done.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, records = batch.len(), "audit records not stored");
                for job in batch.drain(..) {
                    let _ = job.done.send(Err(StoreError::Internal(format!(
                        "storing audit records: {e}"
                    ))));
                }
            }
        }
    }
}

/// One transaction for the whole batch. A record whose `seq` is stored already gets
/// [`StoreError::AlreadyExists`] (never overwritten) and the others are still committed; any
/// other failure fails the batch (nothing is written).
fn commit_batch(
    c: &mut Connection,
    cache: &KeyCache,
    batch: &[Job],
) -> Result<Vec<Result<(), StoreError>>, rusqlite::Error> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Holding the write lock: nobody else can commit until ours is done.
    cache.check_external(&tx);
    // Closed on every path: by the commit below, or when it drops (an error, a panic).
    let window = cache.begin_own_commit(&tx);
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut stmt = tx.prepare_cached(
            "INSERT OR IGNORE INTO audit_records (seq, record, signature, audit_key)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for job in batch {
            let n = stmt.execute(params![
                job.seq,
                job.signed.record,
                job.signed.signature.as_slice(),
                job.signed.audit_key.as_slice()
            ])?;
            results.push(if n == 1 {
                Ok(())
            } else {
                Err(StoreError::AlreadyExists(format!(
                    "audit record {}",
                    job.seq
                )))
            });
        }
    }
    tx.commit()?;
    window.committed(c);
    Ok(results)
}
