//! Process hardening applied once at start, before any secret exists: no core dumps,
//! no ptrace/`/proc/<pid>/mem` access by other processes of the same user, and (best
//! effort) the memory mapped at start locked so it is never swapped.
//!
//! Only `MCL_CURRENT`: with `MCL_FUTURE` every later mapping (each thread stack, every
//! heap arena) is locked and resident in full, which let 3,000 pipelined attestation
//! requests lock 2 GB (issue 6). The binary starts its signing and NSM pools before
//! calling [`apply`], so their stacks are locked; memory mapped later is not. Inside a Nitro
//! Enclave there is no swap, and in simulation secrets live in zeroizing buffers and
//! scrubbed worker stacks (crate::workers) for the time of one operation.
//!
//! Uses nix's safe wrappers only; no `unsafe` here. Inside a Nitro Enclave there is no
//! swap and no other tenant, so these matter most in simulation and as defence in depth.

use nix::sys::mman::{mlockall, MlockAllFlags};
use nix::sys::prctl;
use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

/// What [`apply`] achieved. Dumpability and the core limit are mandatory; memory locking
/// is best effort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hardening {
    /// `mlockall(MCL_CURRENT)` succeeded.
    pub memory_locked: bool,
}

/// Applies the hardening: `prctl(PR_SET_DUMPABLE, 0)`, `RLIMIT_CORE = 0` (soft and hard),
/// then `mlockall(MCL_CURRENT)` (never `MCL_FUTURE`, see the module docs).
///
/// Memory locking is attempted only as root (CAP_IPC_LOCK) or when `RLIMIT_MEMLOCK` is
/// unlimited; a skipped or failed lock logs a warning; this is expected in simulation
/// as an ordinary user.
///
/// # Errors
/// The `prctl` or `setrlimit` error: a process that cannot turn off core dumps must not
/// hold keys.
pub fn apply() -> Result<Hardening, nix::Error> {
    prctl::set_dumpable(false)?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
    let memory_locked = lock_memory();
    Ok(Hardening { memory_locked })
}

fn lock_memory() -> bool {
    let privileged = nix::unistd::geteuid().is_root();
    let unlimited =
        matches!(getrlimit(Resource::RLIMIT_MEMLOCK), Ok((soft, _)) if soft == RLIM_INFINITY);
    if !privileged && !unlimited {
        tracing::warn!("not locking memory: no CAP_IPC_LOCK and RLIMIT_MEMLOCK is limited (secrets may be swapped)");
        return false;
    }
    match mlockall(MlockAllFlags::MCL_CURRENT) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "mlockall failed (secrets may be swapped)");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `apply` itself runs in the binary (and the end-to-end tests); running it here
    // would lock the whole test process's memory. These tests check its pieces.

    #[test]
    fn core_limit_can_be_zeroed_and_read_back() {
        // Lowering a limit is always allowed; the test process does not need core dumps.
        setrlimit(Resource::RLIMIT_CORE, 0, 0).unwrap();
        assert_eq!(getrlimit(Resource::RLIMIT_CORE).unwrap(), (0, 0));
    }

    #[test]
    fn dumpable_flag_round_trips() {
        prctl::set_dumpable(true).unwrap();
        assert!(prctl::get_dumpable().unwrap());
        prctl::set_dumpable(false).unwrap();
        assert!(!prctl::get_dumpable().unwrap());
    }
}
