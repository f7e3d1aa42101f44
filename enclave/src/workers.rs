//! Fixed pools of dedicated threads for the enclave's synchronous work (issue 6 items 5
//! and 6).
//!
//! - The **signing pool** runs every step that holds plaintext secrets on the stack:
//!   deriving the wrap and policy-MAC keys (HKDF), the AES-GCM key schedule, opening or
//!   sealing a record, and the signature itself (k256's hazmat signer takes the scalar
//!   by value; ed25519's expanded key is built on the stack). After each job the worker
//!   wipes [`SCRUB_BYTES`] of its stack below the job's frame ([`scrub_stack`]), so dead
//!   frames of a finished signature hold no copy of the scalar, the seed or a derived
//!   key. Tokio's worker threads never see those bytes.
//! - The **blocking pool** runs NSM calls (attestation documents), so a flood of
//!   `Attestation` requests uses a fixed number of threads and memory.
//!
//! Each pool has a bounded queue: a job that finds it full is refused at once with
//! [`WireError::Busy`] (`enclave_busy` at the parent), never queued without bound.
//! A panicking job is caught; its caller gets [`WireError::Internal`] and the worker
//! goes on.
//!
//! The threads are started once per process, by the first of [`init`] (the binary calls
//! it before hardening, so mlockall locks their stacks), [`signing`] or [`blocking`];
//! the latter two start them with [`PoolSizes::default`]. Later `init` calls change
//! nothing.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

use ekms_shared::WireError;

/// Bytes of stack wiped below a signing job's frame after each job. Measured by
/// `tests::scrub_covers_the_deepest_signing_job` (unoptimised test build): a Solana
/// signature reaches ~32 KiB below the worker loop's frame, an EVM signature and
/// sealing/opening ~20 KiB; the test fails if any job needs more than half of this.
pub const SCRUB_BYTES: usize = 128 * 1024;

/// Stack size of each pool thread: room for the job and for the scrub below it.
pub const WORKER_STACK_BYTES: usize = 1024 * 1024;

/// Threads and queue bounds of the two pools (`--signing-threads`, `--signing-queue`,
/// `--nsm-threads`, `--nsm-queue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSizes {
    /// Threads of the signing pool.
    pub signing_threads: usize,
    /// Threads of the blocking (NSM) pool.
    pub blocking_threads: usize,
    /// Signing jobs waiting before further ones are refused with `Busy`. By default
    /// above the server's in-flight cap, so signing is refused only by that cap.
    pub signing_queue: usize,
    /// NSM jobs waiting before further ones are refused with `Busy`: small, since each
    /// attestation document takes milliseconds and a client only needs a few.
    pub blocking_queue: usize,
}

impl Default for PoolSizes {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Self {
            signing_threads: cores.clamp(1, 16),
            blocking_threads: 2,
            signing_queue: 1024,
            blocking_queue: 64,
        }
    }
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed pool of named threads with a bounded job queue.
pub struct Pool {
    name: &'static str,
    jobs: SyncSender<Job>,
    scrub: bool,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name)
            .field("scrub", &self.scrub)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Starts `threads` threads (at least 1) named `name`, each with a stack of
    /// [`WORKER_STACK_BYTES`], sharing a queue of `queue` jobs (at least 1). With
    /// `scrub`, each thread wipes its stack after every job ([`scrub_stack`]).
    ///
    /// # Errors
    /// The operating system's error if a thread cannot be started.
    pub fn start(
        name: &'static str,
        threads: usize,
        queue: usize,
        scrub: bool,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Job>(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .stack_size(WORKER_STACK_BYTES)
                .spawn(move || worker(&rx, scrub))?;
        }
        Ok(Self {
            name,
            jobs: tx,
            scrub,
        })
    }

    /// Runs `job` on a pool thread and returns its result.
    ///
    /// # Errors
    /// [`WireError::Busy`] when the queue is full (the job does not run);
    /// [`WireError::Internal`] if the job panicked or the pool is gone.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, WireError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let boxed: Job = Box::new(move || {
            let _ = tx.send(job());
        });
        match self.jobs.try_send(boxed) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::warn!(pool = self.name, "worker queue full: busy");
                return Err(WireError::Busy);
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::error!(pool = self.name, "worker pool is gone");
                return Err(WireError::Internal);
            }
        }
        rx.await.map_err(|_| {
            tracing::error!(pool = self.name, "worker job failed");
            WireError::Internal
        })
    }
}

fn worker(jobs: &Mutex<Receiver<Job>>, scrub: bool) {
    loop {
        // The lock is held only while waiting for the next job.
        let job = {
            let rx = jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            rx.recv()
        };
        let Ok(job) = job else { return };
        run_job(job);
        if scrub {
            scrub_stack();
        }
    }
}

/// Runs one job in its own (never inlined) frame, so that [`scrub_stack`], called
/// next from the same caller, covers exactly the stack the job used.
#[inline(never)]
fn run_job(job: Job) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
        tracing::error!("worker job panicked");
    }
}

/// Overwrites [`SCRUB_BYTES`] of this thread's stack, starting just below the caller's
/// frame, with zeros.
///
/// The buffer is a zero-initialised local array handed to [`std::hint::black_box`],
/// which the optimizer must assume reads every byte, so the zeroing cannot be elided or
/// shortened: it compiles to one `memset` of the whole array (checked in the release
/// assembly; ~2-4 µs for 128 KiB, against ~12 µs for a `zeroize` loop of volatile
/// stores). `tests::scrub_clears_a_marker_left_in_a_dead_frame` and the memory-scan
/// test of the real binary (cli/tests/enclave_memory.rs) check that it works.
#[inline(never)]
pub fn scrub_stack() {
    let mut area = [0u64; SCRUB_BYTES / 8];
    std::hint::black_box(&mut area);
}

struct Pools {
    signing: Pool,
    blocking: Pool,
}

static POOLS: OnceLock<Result<Pools, String>> = OnceLock::new();

/// The pools, started with `sizes()` by the first caller. `sizes` is called only then:
/// [`PoolSizes::default`] asks the OS for the available parallelism, which reads the
/// cgroup files under `/proc` (it was ~11% of the enclave's CPU per signature when it
/// ran on every request).
fn pools(sizes: impl FnOnce() -> PoolSizes) -> Result<&'static Pools, WireError> {
    let pools = POOLS.get_or_init(|| {
        let sizes = sizes();
        let start = || -> std::io::Result<Pools> {
            Ok(Pools {
                signing: Pool::start(
                    "ekms-sign",
                    sizes.signing_threads,
                    sizes.signing_queue,
                    true,
                )?,
                blocking: Pool::start(
                    "ekms-nsm",
                    sizes.blocking_threads,
                    sizes.blocking_queue,
                    false,
                )?,
            })
        };
        start().map_err(|e| e.to_string())
    });
    pools.as_ref().map_err(|e| {
        tracing::error!(error = %e, "cannot start worker threads");
        WireError::Internal
    })
}

/// Starts the pools with `sizes` (only the first call has an effect).
///
/// # Errors
/// A message if the threads cannot be started.
pub fn init(sizes: PoolSizes) -> Result<(), String> {
    pools(|| sizes)
        .map(|_| ())
        .map_err(|_| "cannot start worker threads".to_owned())
}

/// The signing pool (secrets on the stack; scrubbed after each job).
///
/// # Errors
/// [`WireError::Internal`] if its threads could not be started.
pub fn signing() -> Result<&'static Pool, WireError> {
    pools(PoolSizes::default).map(|p| &p.signing)
}

/// The blocking pool (NSM calls).
///
/// # Errors
/// [`WireError::Internal`] if its threads could not be started.
pub fn blocking() -> Result<&'static Pool, WireError> {
    pools(PoolSizes::default).map(|p| &p.blocking)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_returns_results() {
        let pool = Pool::start("t-run", 2, 4, true).unwrap();
        assert_eq!(pool.run(|| 2 + 2).await, Ok(4));
        // A panicking job is an internal error; the pool keeps working.
        let r: Result<(), _> = pool.run(|| panic!("boom")).await;
        assert_eq!(r, Err(WireError::Internal));
        assert_eq!(pool.run(|| "still here").await, Ok("still here"));
    }

    #[tokio::test]
    async fn rejects_jobs_beyond_the_queue_bound_with_busy() {
        let pool = Arc::new(Pool::start("t-busy", 1, 2, false).unwrap());
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        // One job runs (blocked), two wait in the queue.
        let mut waiting = Vec::new();
        for _ in 0..3 {
            let pool = Arc::clone(&pool);
            let rx = Arc::clone(&release_rx);
            waiting.push(tokio::spawn(async move {
                pool.run(move || {
                    let _ = rx.lock().unwrap().recv();
                })
                .await
            }));
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(pool.run(|| ()).await, Err(WireError::Busy));
        for _ in 0..3 {
            release_tx.send(()).unwrap();
        }
        for w in waiting {
            assert_eq!(w.await.unwrap(), Ok(()));
        }
        assert_eq!(pool.run(|| 1).await, Ok(1));
    }

    /// The scrub really clears dead frames: a function leaves a marker in its frame and
    /// returns; reading this thread's stack mapping through `/proc/self/mem` finds the
    /// marker (the control: the check can fail), and after [`scrub_stack`] it does not.
    #[test]
    fn scrub_clears_a_marker_left_in_a_dead_frame() {
        const MARK: [u8; 16] = *b"EKMS-SCRUB-MARK!";
        #[inline(never)]
        fn leave_marker() {
            let mut buf = [0u8; 4096];
            for chunk in buf.chunks_mut(16) {
                chunk.copy_from_slice(&MARK);
            }
            std::hint::black_box(&buf);
        }
        fn stack_has_marker() -> bool {
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            let here = &maps as *const String as usize;
            let Some(line) = maps.lines().find(|l| {
                let range = l.split_whitespace().next().unwrap();
                let (a, b) = range.split_once('-').unwrap();
                let (a, b) = (
                    usize::from_str_radix(a, 16).unwrap(),
                    usize::from_str_radix(b, 16).unwrap(),
                );
                a <= here && here < b
            }) else {
                panic!("no mapping holds this stack");
            };
            let range = line.split_whitespace().next().unwrap();
            let (a, b) = range.split_once('-').unwrap();
            let (a, b) = (
                u64::from_str_radix(a, 16).unwrap(),
                u64::from_str_radix(b, 16).unwrap(),
            );
            use std::io::{Read, Seek, SeekFrom};
            let mut mem = std::fs::File::open("/proc/self/mem").unwrap();
            mem.seek(SeekFrom::Start(a)).unwrap();
            let mut bytes = vec![0u8; usize::try_from(b - a).unwrap()];
            mem.read_exact(&mut bytes).unwrap();
            bytes.windows(MARK.len()).any(|w| w == MARK)
        }
        let found = std::thread::Builder::new()
            .stack_size(WORKER_STACK_BYTES)
            .spawn(|| {
                leave_marker();
                let before = stack_has_marker();
                leave_marker();
                scrub_stack();
                let after = stack_has_marker();
                (before, after)
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(found, (true, false), "(before scrub, after scrub)");
    }
    /// Reads `len` bytes of this process's memory at `addr` (test helper).
    fn read_self(addr: usize, len: usize) -> Vec<u8> {
        use std::io::{Read, Seek, SeekFrom};
        let mut mem = std::fs::File::open("/proc/self/mem").unwrap();
        mem.seek(SeekFrom::Start(addr as u64)).unwrap();
        let mut bytes = vec![0u8; len];
        mem.read_exact(&mut bytes).unwrap();
        bytes
    }

    const PAINT: u64 = 0xa5a5_5a5a_a5a5_5a5a;
    const PAINT_BYTES: usize = 512 * 1024;

    /// Fills `PAINT_BYTES` of stack below the caller's frame with [`PAINT`] and returns
    /// the painted range `(low, high)`.
    #[inline(never)]
    fn paint_stack() -> (usize, usize) {
        let mut area = [PAINT; PAINT_BYTES / 8];
        std::hint::black_box(&mut area);
        let low = area.as_ptr() as usize;
        (low, low + PAINT_BYTES)
    }

    /// How far below the painted range's top `job`'s frames reached, in bytes.
    fn stack_depth_of(job: Job) -> usize {
        std::thread::Builder::new()
            .stack_size(WORKER_STACK_BYTES)
            .spawn(move || {
                let (low, high) = paint_stack();
                run_job(job);
                let bytes = read_self(low, high - low);
                let untouched = bytes
                    .chunks_exact(8)
                    .take_while(|w| *w == PAINT.to_ne_bytes())
                    .count()
                    * 8;
                (high - low) - untouched
            })
            .unwrap()
            .join()
            .unwrap()
    }

    /// [`SCRUB_BYTES`] covers the deepest job the signing pool runs: an EVM and a Solana
    /// signature, and sealing and opening a record, each measured by painting the
    /// stack, running the job exactly as a worker does, and finding the deepest word
    /// it overwrote.
    #[test]
    fn scrub_covers_the_deepest_signing_job() {
        use ekms_shared::Algorithm;
        let evm: Job = Box::new(|| {
            let tx = ekms_signer::decode_unsigned(
                &hex::decode(
                    "02df0180010182520894111111111111111111111111111111111111111180\
                     80c0",
                )
                .unwrap(),
            )
            .unwrap();
            let key = ekms_signer::Secp256k1Secret::from_bytes(&[0x46; 32]).unwrap();
            std::hint::black_box(ekms_signer::sign_evm(&tx, &key).unwrap());
        });
        let solana: Job = Box::new(|| {
            let key = ekms_signer::Ed25519Secret::from_bytes(&[7; 32]).unwrap();
            let public: [u8; 32] = key.public_key().try_into().unwrap();
            let mut m = vec![1u8, 0, 1, 2];
            m.extend_from_slice(&public);
            m.extend_from_slice(&[0; 32]);
            m.extend_from_slice(&[0x33; 32]);
            m.extend_from_slice(&[1, 1, 2, 0, 0, 12, 2, 0, 0, 0]);
            m.extend_from_slice(&5u64.to_le_bytes());
            let p = ekms_signer::decode_solana(&m).unwrap();
            std::hint::black_box(ekms_signer::sign_solana(&p, &key, &public).unwrap());
        });
        let sealing: Job = Box::new(|| {
            let dek = crate::sealing::DataKey::from_slice(&[1; 32]).unwrap();
            let r = crate::sealing::seal(
                &dek,
                "k",
                None,
                Algorithm::Secp256k1,
                &[2; 33],
                "main",
                1,
                [3; 32],
                [4; 12],
                &[0x11; 32],
            )
            .unwrap();
            std::hint::black_box(crate::sealing::open(&dek, &r).unwrap());
            let p = crate::sealing::mac_policy(&dek, &r, 1, "{}".into());
            crate::sealing::verify_policy(&dek, &r, &p).unwrap();
        });
        for (name, job) in [("evm", evm), ("solana", solana), ("sealing", sealing)] {
            let depth = stack_depth_of(job);
            eprintln!("{name}: {depth} bytes of stack");
            assert!(depth > 0, "{name}: the measurement saw no stack use");
            assert!(
                depth < SCRUB_BYTES / 2,
                "{name} used {depth} bytes of stack; SCRUB_BYTES = {SCRUB_BYTES}"
            );
        }
    }
}
