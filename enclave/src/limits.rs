//! Rolling limits (issue 8 item 2): what a key has spent, per windowed limit of its
//! policy (signatures per window, native value, a token, a mint), kept in the enclave,
//! reserved before signing and committed or released after, so that concurrent
//! requests can never together pass a cap.
//!
//! A window of `window_secs` is kept as buckets of `window_secs / 64` seconds (at least
//! one). A bucket counts in full while any part of it lies in the window, so the sum
//! the enclave checks is never below what was really spent in the last `window_secs`:
//! a cap is never exceeded, and an amount leaves the window at most one bucket late.
//!
//! The state survives restarts in the enclave's checkpoints ([`crate::durable`]), but
//! a host can hand back an older checkpoint, or none. What the enclave cannot see —
//! the *blind interval* `B = [t_c, t_r]` from when the restored checkpoint was written
//! to the restore — is counted as spent at the most the policy allows in it, at `t_r`,
//! the first time each window is used after the restore ([`Limits::restore`]):
//!
//! ```text
//! worst(B) = min(cap, per_request × max_signatures × (⌈|B| / rate_window⌉ + 1))   with a rate limit
//! worst(B) = cap                                                                  without one
//! ```
//!
//! (`per_request` is the policy's per-request cap of the same asset, or the cap when the
//! charge does not carry one — today always, so `worst(B) = cap`.) So
//! in any interval of `window_secs` the spend stays ≤ cap across restarts and replays;
//! a replayed older checkpoint only makes `B` longer, which costs availability, never
//! value. docs/POLICY.md states the same bound.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use alloy_primitives::U256;
use serde::{Deserialize, Serialize};

use crate::floor::RecordId;

/// Buckets per window.
pub const BUCKETS_PER_WINDOW: u64 = 64;
/// Most windows tracked at once (entries beyond are refused: `limits_full`).
pub const MAX_WINDOWS: usize = 100_000;

/// One windowed charge of a request, as the policy computed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The limit's stable id within the key's policy (e.g. `rate`, `evm:1:native`).
    pub limit: String,
    /// What this request spends against it (1 for a signature count).
    pub amount: U256,
    /// The cap per window.
    pub cap: U256,
    /// The window, in seconds (≥ 1).
    pub window_secs: u64,
    /// The policy's per-request cap of the same asset (the worst one request can
    /// spend), if it has one.
    pub per_request: Option<U256>,
}

/// The policy's rate limit, for the blind-interval bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Signatures per window.
    pub max_signatures: u64,
    /// The window, seconds.
    pub window_secs: u64,
}

/// A charge over its cap: nothing was reserved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    /// The limit.
    pub limit: String,
    /// Already spent or reserved in the window.
    pub used: U256,
    /// This request's amount.
    pub amount: U256,
    /// The cap.
    pub cap: U256,
}

/// A limits snapshot that does not decode (or is over [`MAX_WINDOWS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("limits snapshot is invalid")]
pub struct BadSnapshot;

/// Held amounts of one request, until [`Limits::commit`] or [`Limits::release`].
#[derive(Debug)]
#[must_use = "a reservation is committed or released"]
pub struct Reservation {
    id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
struct WindowKey {
    #[serde(with = "serde_bytes")]
    record: [u8; 32],
    limit: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Window {
    window_secs: u64,
    /// The cap, per-request cap and rate limit last seen for it (for the eager
    /// blind-interval charge at a restore).
    cap: U256,
    per_request: Option<U256>,
    rate: Option<(u64, u64)>,
    /// Bucket start (Unix seconds) → amount, in the window or not yet pruned.
    buckets: BTreeMap<u64, U256>,
    /// Held by reservations not yet committed.
    #[serde(skip)]
    reserved: U256,
}

impl Window {
    fn width(&self) -> u64 {
        (self.window_secs / BUCKETS_PER_WINDOW).max(1)
    }

    /// Drops buckets wholly before the window ending at `now`.
    fn prune(&mut self, now: u64) {
        let width = self.width();
        let start = now.saturating_sub(self.window_secs);
        self.buckets.retain(|b, _| b.saturating_add(width) > start);
    }

    fn spent(&self) -> U256 {
        self.buckets
            .values()
            .fold(U256::ZERO, |a, b| a.saturating_add(*b))
    }

    fn add(&mut self, now: u64, amount: U256) {
        let width = self.width();
        let bucket = now - now % width;
        let slot = self.buckets.entry(bucket).or_insert(U256::ZERO);
        *slot = slot.saturating_add(amount);
    }
}

#[derive(Debug, Default)]
struct State {
    windows: HashMap<WindowKey, Window>,
    held: HashMap<u64, Vec<(WindowKey, U256)>>,
    next: u64,
    /// The blind interval of the last restore, and the windows not yet charged for it.
    blind: Option<(u64, u64)>,
    charged_blind: std::collections::HashSet<WindowKey>,
    /// Keys generated since the restore: nothing of theirs can be in a blind interval.
    fresh: std::collections::HashSet<[u8; 32]>,
    /// Payloads signed (key, SHA-256 of the payload's kind and bytes) → until when they
    /// count as one.
    signed: HashMap<([u8; 32], [u8; 32]), u64>,
}

/// Most payloads remembered for "the same transaction signed twice counts once".
pub const MAX_REMEMBERED: usize = 100_000;

/// Every key's windows (see the module docs).
#[derive(Debug, Default)]
pub struct Limits {
    state: Mutex<State>,
}

/// The checkpointed form: windows with their buckets, and the start of a blind
/// interval still owed by every window not listed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    windows: Vec<(WindowKey, Window)>,
    blind_from: Option<u64>,
}

impl Limits {
    /// Reserves every charge of a request of key `record` at `now` (Unix seconds), all
    /// or none; `rate` is the policy's rate limit, for the blind-interval bound.
    ///
    /// # Errors
    /// [`Exceeded`] for the first charge that does not fit (nothing is held).
    pub fn reserve(
        &self,
        record: RecordId,
        charges: &[Charge],
        rate: Option<Rate>,
        now: u64,
    ) -> Result<Reservation, Exceeded> {
        let mut st = self.lock();
        let st = &mut *st;
        let mut plan = Vec::with_capacity(charges.len());
        for c in charges {
            let key = WindowKey {
                record: *record.as_bytes(),
                limit: c.limit.clone(),
            };
            if !st.windows.contains_key(&key) && st.windows.len() >= MAX_WINDOWS {
                return Err(Exceeded {
                    limit: c.limit.clone(),
                    used: U256::ZERO,
                    amount: c.amount,
                    cap: U256::ZERO,
                });
            }
            let window = st.windows.entry(key.clone()).or_default();
            // A policy change may change the window: the buckets keep their amounts.
            window.window_secs = c.window_secs.max(1);
            window.cap = c.cap;
            window.per_request = c.per_request;
            window.rate = rate.map(|r| (r.max_signatures, r.window_secs));
            if let Some((from, to)) = st.blind {
                if !st.fresh.contains(record.as_bytes()) && st.charged_blind.insert(key.clone()) {
                    window.add(to, blind_worst(c, rate, to.saturating_sub(from)));
                }
            }
            window.prune(now);
            let used = window.spent().saturating_add(window.reserved);
            if used.saturating_add(c.amount) > c.cap {
                return Err(Exceeded {
                    limit: c.limit.clone(),
                    used,
                    amount: c.amount,
                    cap: c.cap,
                });
            }
            plan.push((key, c.amount));
        }
        for (key, amount) in &plan {
            if let Some(w) = st.windows.get_mut(key) {
                w.reserved = w.reserved.saturating_add(*amount);
            }
        }
        let id = st.next;
        st.next = st.next.wrapping_add(1);
        st.held.insert(id, plan);
        Ok(Reservation { id })
    }

    /// Marks `record` as generated after the restore (no blind interval for it).
    pub fn fresh_key(&self, record: RecordId) {
        self.lock().fresh.insert(*record.as_bytes());
    }

    /// Whether key `record` already signed the payload whose SHA-256 is `payload`
    /// within its windows: the same transaction signed twice counts once.
    pub fn already_signed(&self, record: RecordId, payload: [u8; 32], now: u64) -> bool {
        self.lock()
            .signed
            .get(&(*record.as_bytes(), payload))
            .is_some_and(|until| *until > now)
    }

    /// The request signed: its amounts are spent at `now`, and the payload counts as
    /// signed for the longest of its windows.
    pub fn commit_signed(
        &self,
        reservation: Reservation,
        record: RecordId,
        payload: [u8; 32],
        longest_window: u64,
        now: u64,
    ) {
        self.commit(reservation, now);
        if longest_window == 0 {
            return;
        }
        let mut st = self.lock();
        if st.signed.len() >= MAX_REMEMBERED {
            st.signed.retain(|_, until| *until > now);
        }
        if st.signed.len() < MAX_REMEMBERED {
            st.signed.insert(
                (*record.as_bytes(), payload),
                now.saturating_add(longest_window),
            );
        }
    }

    /// The request signed: its amounts are spent at `now`.
    pub fn commit(&self, reservation: Reservation, now: u64) {
        let mut st = self.lock();
        for (key, amount) in st.held.remove(&reservation.id).unwrap_or_default() {
            if let Some(w) = st.windows.get_mut(&key) {
                w.reserved = w.reserved.saturating_sub(amount);
                w.add(now, amount);
            }
        }
    }

    /// The request did not sign: its amounts are free again.
    pub fn release(&self, reservation: Reservation) {
        let mut st = self.lock();
        for (key, amount) in st.held.remove(&reservation.id).unwrap_or_default() {
            if let Some(w) = st.windows.get_mut(&key) {
                w.reserved = w.reserved.saturating_sub(amount);
            }
        }
    }

    /// The committed state, pruned at `now`, as CBOR for a checkpoint. Reservations are
    /// not included: a request in flight at a crash is counted by the blind interval.
    pub fn snapshot(&self, now: u64) -> Vec<u8> {
        let mut st = self.lock();
        let mut windows: Vec<(WindowKey, Window)> = Vec::with_capacity(st.windows.len());
        for (k, w) in st.windows.iter_mut() {
            w.prune(now);
            if !w.buckets.is_empty() {
                let mut w = w.clone();
                w.reserved = U256::ZERO;
                windows.push((k.clone(), w));
            }
        }
        windows.sort_by(|a, b| a.0.cmp(&b.0));
        let mut snap = Snapshot {
            windows,
            blind_from: st.blind.map(|(from, _)| from),
        };
        drop(st);
        let out = encode_snapshot(&snap);
        if out.len() <= MAX_SNAPSHOT_BYTES {
            return out;
        }
        // Over budget (a checkpoint must fit one frame, or no state change — an
        // emergency disable included — could be made): first merge each window's
        // buckets into its newest one (the amounts then leave the window later, never
        // earlier), then leave windows out. A window left out counts as full after a
        // restore (`blind_from` = the epoch), so both cost availability, never a cap.
        for (_, w) in &mut snap.windows {
            if let Some(newest) = w.buckets.keys().next_back().copied() {
                let total = w.spent();
                w.buckets.clear();
                w.buckets.insert(newest, total);
            }
        }
        let mut out = encode_snapshot(&snap);
        while out.len() > MAX_SNAPSHOT_BYTES && !snap.windows.is_empty() {
            let per_window = out.len() / snap.windows.len() + 1;
            let excess = (out.len() - MAX_SNAPSHOT_BYTES) / per_window + 1;
            let keep = snap.windows.len().saturating_sub(excess);
            snap.windows.truncate(keep);
            snap.blind_from = Some(0);
            out = encode_snapshot(&snap);
        }
        tracing::warn!(
            windows = snap.windows.len(),
            "rolling-limit snapshot over its budget: buckets merged, windows left out count as full after a restore"
        );
        out
    }

    /// Restores a snapshot taken at `written_at` (from a checkpoint whose MAC verified)
    /// at `now`: everything `[written_at, now]` could have spent is charged to each
    /// window of a key made before the restore when first used (module docs). With no
    /// checkpoint at all (a first boot, or one withheld) call it with `bytes` empty and
    /// `written_at` 0: every earlier key's windows count as full.
    ///
    /// # Errors
    /// [`BadSnapshot`] if the snapshot does not decode or holds more than
    /// [`MAX_WINDOWS`].
    pub fn restore(&self, bytes: &[u8], written_at: u64, now: u64) -> Result<(), BadSnapshot> {
        let snap = if bytes.is_empty() {
            Snapshot {
                windows: Vec::new(),
                blind_from: None,
            }
        } else {
            ciborium::de::from_reader(bytes).map_err(|_| BadSnapshot)?
        };
        if snap.windows.len() > MAX_WINDOWS {
            return Err(BadSnapshot);
        }
        let written_at = written_at.min(now);
        let mut st = self.lock();
        st.held.clear();
        st.fresh.clear();
        st.charged_blind.clear();
        st.windows.clear();
        // Listed windows are charged now for [written_at, now]; the others when first
        // used, for the blind interval they still owe.
        for (key, mut window) in snap.windows {
            let charge = Charge {
                limit: key.limit.clone(),
                amount: U256::ZERO,
                cap: window.cap,
                window_secs: window.window_secs,
                per_request: window.per_request,
            };
            let rate = window.rate.map(|(max_signatures, window_secs)| Rate {
                max_signatures,
                window_secs,
            });
            window.add(now, blind_worst(&charge, rate, now - written_at));
            st.charged_blind.insert(key.clone());
            st.windows.insert(key, window);
        }
        let from = snap.blind_from.map_or(written_at, |f| f.min(written_at));
        st.blind = Some((from, now));
        Ok(())
    }

    /// Takes over `other`'s state (a restore computed before its commit).
    pub fn replace_with(&self, other: Limits) {
        let other = other
            .state
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *self.lock() = other;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section leaves the maps consistent before it can panic.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Largest limits snapshot a checkpoint carries, in bytes (with at most
/// [`crate::durable::MAX_CHECKPOINT_FLOORS`] floors the checkpoint stays within a frame).
pub const MAX_SNAPSHOT_BYTES: usize = 64 * 1024;

fn encode_snapshot(snap: &Snapshot) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(snap, &mut out)
        .unwrap_or_else(|_| unreachable!("a snapshot of integers and strings always encodes"));
    out
}

/// The most `charge`'s limit could have been spent during a blind interval of
/// `blind_secs` (module docs).
fn blind_worst(charge: &Charge, rate: Option<Rate>, blind_secs: u64) -> U256 {
    let Some(rate) = rate else {
        return charge.cap;
    };
    let rate_window = rate.window_secs.max(1);
    let windows = blind_secs.div_ceil(rate_window).saturating_add(1);
    let signatures = U256::from(rate.max_signatures).saturating_mul(U256::from(windows));
    let per_request = charge.per_request.unwrap_or(charge.cap);
    per_request.saturating_mul(signatures).min(charge.cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> RecordId {
        RecordId::from([b; 32])
    }

    fn charge(limit: &str, amount: u64, cap: u64, window: u64) -> Charge {
        Charge {
            limit: limit.into(),
            amount: U256::from(amount),
            cap: U256::from(cap),
            window_secs: window,
            per_request: None,
        }
    }

    #[test]
    fn reserves_up_to_the_cap_and_no_more() {
        let l = Limits::default();
        let a = l
            .reserve(id(1), &[charge("usdc", 60, 100, 3600)], None, 1000)
            .unwrap();
        let refused = l.reserve(id(1), &[charge("usdc", 41, 100, 3600)], None, 1000);
        assert_eq!(refused.unwrap_err().used, U256::from(60));
        let b = l
            .reserve(id(1), &[charge("usdc", 40, 100, 3600)], None, 1000)
            .unwrap();
        l.commit(a, 1000);
        l.release(b);
        // Another key, another limit: independent.
        let c = l
            .reserve(id(2), &[charge("usdc", 100, 100, 3600)], None, 1000)
            .unwrap();
        l.commit(c, 1000);
        assert!(l
            .reserve(id(1), &[charge("usdc", 41, 100, 3600)], None, 1001)
            .is_err());
        let d = l
            .reserve(id(1), &[charge("usdc", 40, 100, 3600)], None, 1001)
            .unwrap();
        l.commit(d, 1001);
    }

    #[test]
    fn rejects_all_charges_when_one_does_not_fit() {
        let l = Limits::default();
        let charges = [charge("rate", 1, 10, 60), charge("eth", 5, 4, 60)];
        assert_eq!(
            l.reserve(id(1), &charges, None, 10).unwrap_err().limit,
            "eth"
        );
        // Nothing of the first charge was held.
        let r = l
            .reserve(id(1), &[charge("rate", 10, 10, 60)], None, 10)
            .unwrap();
        l.release(r);
    }

    #[test]
    fn amounts_leave_the_window_after_it_and_never_early() {
        let l = Limits::default();
        let r = l
            .reserve(id(1), &[charge("x", 100, 100, 640)], None, 1000)
            .unwrap();
        l.commit(r, 1000);
        // Bucket width 10 s: still counted at 1000 + 640 + 9, gone at + 10.
        assert!(l
            .reserve(id(1), &[charge("x", 1, 100, 640)], None, 1639)
            .is_err());
        assert!(l
            .reserve(id(1), &[charge("x", 1, 100, 640)], None, 1649)
            .is_err());
        let ok = l
            .reserve(id(1), &[charge("x", 100, 100, 640)], None, 1650)
            .unwrap();
        l.release(ok);
    }

    #[test]
    fn concurrent_reservations_never_pass_the_cap() {
        let l = std::sync::Arc::new(Limits::default());
        let signed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let threads: Vec<_> = (0..64)
            .map(|_| {
                let (l, signed) = (std::sync::Arc::clone(&l), std::sync::Arc::clone(&signed));
                std::thread::spawn(move || {
                    if let Ok(r) = l.reserve(id(7), &[charge("x", 3, 100, 60)], None, 5) {
                        signed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        l.commit(r, 5);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(signed.load(std::sync::atomic::Ordering::SeqCst), 33);
    }

    #[test]
    fn restores_a_snapshot_and_charges_the_blind_interval() {
        let rate = Some(Rate {
            max_signatures: 1,
            window_secs: 3600,
        });
        let capped = |amount: u64| Charge {
            per_request: Some(U256::from(10)),
            ..charge("x", amount, 100, 3600)
        };
        let l = Limits::default();
        let r = l.reserve(id(1), &[capped(10)], rate, 1000).unwrap();
        l.commit(r, 1000);
        let snap = l.snapshot(1000);
        // The window is listed: charged at the restore for the blind 10 s with what it
        // last saw of the policy: 10 per request × 1 signature × (⌈10/3600⌉ + 1) = 20.
        let back = Limits::default();
        back.restore(&snap, 1000, 1010).unwrap();
        let r = back.reserve(id(1), &[capped(70)], rate, 1010).unwrap();
        back.release(r);
        assert!(back.reserve(id(1), &[capped(71)], rate, 1010).is_err());
        // Without a rate limit the blind interval counts as the whole cap; a window not
        // listed (another key) owes it when first used.
        let l = Limits::default();
        let r = l
            .reserve(id(1), &[charge("x", 30, 100, 3600)], None, 1000)
            .unwrap();
        l.commit(r, 1000);
        let back = Limits::default();
        back.restore(&l.snapshot(1000), 1000, 1010).unwrap();
        assert!(back
            .reserve(id(1), &[charge("x", 1, 100, 3600)], None, 1010)
            .is_err());
        assert!(back
            .reserve(id(3), &[charge("y", 1, 100, 3600)], None, 1010)
            .is_err());
        // A pending blind interval survives a checkpoint taken before the window is used.
        let again = Limits::default();
        again.restore(&back.snapshot(1020), 1020, 1030).unwrap();
        assert!(again
            .reserve(id(4), &[charge("z", 1, 100, 3600)], None, 1030)
            .is_err());
        // A replayed older snapshot (a longer blind interval) only costs more.
        let replay = Limits::default();
        replay
            .restore(&Limits::default().snapshot(0), 0, 1010)
            .unwrap();
        assert!(replay
            .reserve(id(1), &[charge("x", 1, 100, 3600)], None, 1010)
            .is_err());
        assert!(Limits::default().restore(&[0xff], 0, 1).is_err());
        // A key generated after the restore has no blind interval.
        let fresh = Limits::default();
        fresh.restore(&[], 0, 1010).unwrap();
        fresh.fresh_key(id(9));
        let r = fresh
            .reserve(id(9), &[charge("x", 100, 100, 3600)], None, 1010)
            .unwrap();
        fresh.release(r);
        assert!(fresh
            .reserve(id(1), &[charge("x", 1, 100, 3600)], None, 1010)
            .is_err());
    }

    #[test]
    fn keeps_the_snapshot_within_its_budget_and_never_loses_a_cap() {
        let l = Limits::default();
        // 5,000 windows of 2 buckets each: far over the budget.
        for i in 0..5000u32 {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.to_be_bytes());
            let r = l
                .reserve(RecordId::from(b), &[charge("x", 1, 2, 6400)], None, 1000)
                .unwrap();
            l.commit(r, 1000);
            let r = l
                .reserve(RecordId::from(b), &[charge("x", 1, 2, 6400)], None, 1200)
                .unwrap();
            l.commit(r, 1200);
        }
        let snap = l.snapshot(1200);
        assert!(snap.len() <= MAX_SNAPSHOT_BYTES, "{}", snap.len());
        let back = Limits::default();
        back.restore(&snap, 1200, 1200).unwrap();
        // Every window, kept or left out, is still full after the restore.
        for i in [0u32, 2500, 4999] {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.to_be_bytes());
            assert!(back
                .reserve(RecordId::from(b), &[charge("x", 1, 2, 6400)], None, 1200)
                .is_err());
        }
    }

    #[test]
    fn remembers_signed_payloads_for_their_window() {
        let l = Limits::default();
        let r = l
            .reserve(id(1), &[charge("x", 1, 1, 60)], None, 100)
            .unwrap();
        l.commit_signed(r, id(1), [7; 32], 60, 100);
        assert!(l.already_signed(id(1), [7; 32], 159));
        assert!(!l.already_signed(id(1), [7; 32], 160));
        assert!(!l.already_signed(id(2), [7; 32], 100));
        assert!(!l.already_signed(id(1), [8; 32], 100));
    }
}
