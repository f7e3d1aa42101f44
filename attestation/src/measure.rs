//! Simulated PCR0/1/2 measurement of an enclave executable.
//!
//! A real Nitro Enclave's PCR0 is the SHA-384 of the enclave image file (EIF), PCR1 of its
//! kernel and boot ramdisk, PCR2 of its user application. The simulation has no EIF, so
//! it derives all three from the one executable, domain-separated by index:
//!
//! ```text
//! m      = SHA-384(executable bytes)
//! PCR[i] = SHA-384("enclave-kms/sim-pcr/v1" || i || m)     for i in {0, 1, 2}
//! ```
//!
//! where `"enclave-kms/sim-pcr/v1"` is the 22 ASCII bytes without terminator and `i` is
//! a single byte. Each value is 48 bytes. A different binary gives different PCRs, so a
//! KMS policy on PCR0 behaves in simulation as it does on Nitro.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha384};

/// Domain-separation prefix of the simulated PCR formula (module docs).
pub const SIM_PCR_DOMAIN: &[u8] = b"enclave-kms/sim-pcr/v1";

/// Measures `path` as the simulated NSM does: PCR0, PCR1 and PCR2, 48 bytes each, by the
/// formula of the module docs. Reads the file in 64 KiB chunks.
///
/// # Errors
/// Any I/O error opening or reading the file.
pub fn measure_executable(path: &Path) -> std::io::Result<BTreeMap<u16, Vec<u8>>> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha384::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(pcrs_from_digest(&hasher.finalize()))
}

/// PCR0..2 from the SHA-384 `m` of an executable (module docs).
pub fn pcrs_from_digest(m: &[u8]) -> BTreeMap<u16, Vec<u8>> {
    (0u8..3)
        .map(|i| {
            let mut h = Sha384::new();
            h.update(SIM_PCR_DOMAIN);
            h.update([i]);
            h.update(m);
            (u16::from(i), h.finalize().to_vec())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn measures_by_the_documented_formula() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let content = vec![0x5au8; 200_000]; // several read chunks
        f.write_all(&content).unwrap();
        let pcrs = measure_executable(f.path()).unwrap();
        assert_eq!(pcrs.len(), 3);
        let m = Sha384::digest(&content);
        for i in 0u8..3 {
            let mut pre = SIM_PCR_DOMAIN.to_vec();
            pre.push(i);
            pre.extend_from_slice(&m);
            assert_eq!(pcrs[&u16::from(i)], Sha384::digest(&pre).to_vec());
            assert_eq!(pcrs[&u16::from(i)].len(), 48);
        }
        assert_ne!(pcrs[&0], pcrs[&1]);
        assert_ne!(pcrs[&1], pcrs[&2]);
    }

    #[test]
    fn rejects_missing_files_and_distinguishes_binaries() {
        assert!(measure_executable(Path::new("/nonexistent/enclave")).is_err());
        let mut a = tempfile::NamedTempFile::new().unwrap();
        a.write_all(b"binary a").unwrap();
        let mut b = tempfile::NamedTempFile::new().unwrap();
        b.write_all(b"binary b").unwrap();
        assert_ne!(
            measure_executable(a.path()).unwrap()[&0],
            measure_executable(b.path()).unwrap()[&0]
        );
    }
}
