//! Memory tests of the real enclave binary under `ekms sim` (issue 6 items 5 and 6):
//!
//! - [`memory_scan_finds_no_key_material_after_signing`]: the enclave's memory, read
//!   through `/proc/PID/maps` + `/proc/PID/mem` after signatures with both algorithms,
//!   holds no copy of a key's secp256k1 scalar, its ed25519 seed (or the nonce prefix
//!   of its expanded key), their wrap keys and policy-MAC keys, or the keyring's data
//!   key;
//! - [`attestation_flood_stays_bounded_and_signing_goes_on`]: 3,000 pipelined
//!   `Attestation` requests on the enclave socket keep the enclave's RSS below
//!   [`RSS_BOUND_BYTES`], its locked memory from growing, its thread count bounded, and signing
//!   requests through the parent keep succeeding during and after the flood.
//!
//! The secrets are recovered by a test-only path that adds no export capability to the
//! enclave: the test reads kms-sim's persisted key material from the sim state dir with
//! kms-sim's own store code, decrypts the keyring's data-key blob (from the parent's
//! SQLite store) with kms-sim's blob code, and opens the sealed record with the enclave
//! crate's `sealing::open`. Everything the test reads is on the host's disk in
//! simulation; in Nitro the KMS key material never is.
//!
//! Reading `/proc/PID/mem` of the enclave (which sets `PR_SET_DUMPABLE=0`) needs root
//! (CAP_SYS_PTRACE); as another user these tests print why and pass without scanning.
//! The sibling binaries come from `cargo build --workspace` (as in `sim_e2e.rs`).

// The whole file is test code: clippy's `allow-unwrap-in-tests` covers only `#[test]`
// functions, not the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use common::{ekms, ok_json, require_siblings, SimGuard};
use ekms_enclave::sealing::{self, DataKey};
use ekms_shared::{
    decode_response, encode_request, frame_len, Algorithm, KeyringRef, PayloadKind, Request,
    RequestFrame, ResponseBody, SealedKeyRecord, SealedPolicy, SignPayload, WireError,
};

/// RSS the enclave must stay below during an attestation flood.
const RSS_BOUND_BYTES: u64 = 256 * 1024 * 1024;
/// Pipelined `Attestation` requests of the flood.
const FLOOD_REQUESTS: u64 = 3000;
/// Signatures per algorithm before the scan.
const SIGNATURES: usize = 20;

/// The two tests measure one enclave process each; running them one at a time keeps
/// the 2-core CI machine's numbers meaningful.
static SERIAL: Mutex<()> = Mutex::new(());

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Starts `ekms sim` on `state_dir` and waits until it is healthy;
/// `dek_cache_max_uses` goes to the parent (`EKMS_DEK_CACHE_MAX_USES`; `0` = a KMS
/// `Decrypt` per request, no cached data key in the enclave).
fn start_sim(state_dir: &Path, dek_cache_max_uses: u64) -> SimGuard {
    let uses = dek_cache_max_uses.to_string();
    let mut sim = SimGuard::start_with_env(state_dir, &[("EKMS_DEK_CACHE_MAX_USES", &uses)]);
    sim.wait_healthy(Duration::from_secs(180));
    sim
}

// ---- keys, payloads --------------------------------------------------------------

const DEST: &str = "1111111111111111111111111111111111111111";

fn evm_policy() -> String {
    format!(
        r#"{{"enabled":true,"evm":{{"chain_ids":[1],"allowed_destinations":["0x{DEST}"],"max_value_wei":"0","max_fee_wei":"1000000"}}}}"#
    )
}

fn solana_policy() -> String {
    r#"{"enabled":true,"solana":{"allowed_programs":["11111111111111111111111111111111"],"max_lamports_per_transfer":1000,"max_lamports_per_transaction":1000,"max_fee_lamports":10000}}"#
        .to_owned()
}

/// An EIP-1559 transfer of 0 wei on chain 1 to 0x11…11 with nonce `nonce` (< 128),
/// max fee 1 wei per gas, gas 21000 (hand-encoded RLP).
fn evm_tx(nonce: u8) -> String {
    let nonce = if nonce == 0 {
        "80".to_owned()
    } else {
        format!("{nonce:02x}")
    };
    format!("0x02df01{nonce}010182520894{DEST}8080c0")
}

/// A legacy Solana message: `payer` transfers `lamports` to 0x22…22 (System program).
fn solana_message(payer: &[u8; 32], lamports: u64) -> String {
    let mut m = vec![1u8, 0, 1, 3];
    m.extend_from_slice(payer);
    m.extend_from_slice(&[0x22; 32]);
    m.extend_from_slice(&[0; 32]);
    m.extend_from_slice(&[0x33; 32]); // recent blockhash
    m.extend_from_slice(&[1, 2, 2, 0, 1, 12]);
    m.extend_from_slice(&2u32.to_le_bytes());
    m.extend_from_slice(&lamports.to_le_bytes());
    base64::engine::general_purpose::STANDARD.encode(m)
}

/// A key created through the API, with its sealed record from the parent's store.
struct Key {
    id: String,
    record: SealedKeyRecord,
    policy: SealedPolicy,
    dek_ciphertext: Vec<u8>,
}

fn create_key(sim: &SimGuard, algorithm: &str, policy: &str) -> Key {
    let created = ok_json(
        &sim.socket(),
        &[
            "keys",
            "create",
            "--algorithm",
            algorithm,
            "--policy",
            policy,
        ],
    );
    let id = created["key_id"].as_str().unwrap().to_owned();
    let db = rusqlite::Connection::open_with_flags(
        sim.state_dir.join("keys.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let (blob, dek_ciphertext): (Vec<u8>, Vec<u8>) = db
        .query_row(
            "SELECT k.sealed_record, r.dek_ciphertext FROM keys k
             JOIN keyrings r ON r.name = k.keyring AND r.epoch = k.epoch
             WHERE k.key_id = ?1",
            [&id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    let record: SealedKeyRecord = ciborium::from_reader(blob.as_slice()).unwrap();
    let policy = db
        .query_row(
            "SELECT version, policy_json, mac FROM policies WHERE key_id = ?1",
            [&id],
            |row| {
                Ok(SealedPolicy {
                    key_id: id.clone(),
                    version: row.get::<_, i64>(0)?.try_into().unwrap(),
                    policy_json: row.get(1)?,
                    mac: row.get::<_, Vec<u8>>(2)?.try_into().unwrap(),
                })
            },
        )
        .unwrap();
    Key {
        id,
        record,
        policy,
        dek_ciphertext,
    }
}

// ---- the test-only recovery path ---------------------------------------------------

/// Secrets of one key, recovered from the host's disk (module docs).
struct Recovered {
    data_key: [u8; 32],
    secret: [u8; 32],
    wrap_key: [u8; 32],
    policy_mac_key: [u8; 32],
}

fn recover(state_dir: &Path, key: &Key) -> Recovered {
    let store = kms_sim::store::KeyStore::open(&state_dir.join("kms")).unwrap();
    let kms_key_id = kms_sim::blob::key_id(&key.dek_ciphertext).unwrap();
    let material = store
        .get(&kms_key_id)
        .expect("the KMS key is in kms-sim's store");
    let context: kms_sim::blob::EncryptionContext = BTreeMap::from([
        (
            ekms_enclave::kms::CONTEXT_KEYRING.to_owned(),
            key.record.keyring.clone(),
        ),
        (
            ekms_enclave::kms::CONTEXT_EPOCH.to_owned(),
            key.record.epoch.to_string(),
        ),
    ]);
    let plain = kms_sim::blob::open(&material.material, &context, &key.dek_ciphertext).unwrap();
    let data_key: [u8; 32] = plain.as_slice().try_into().unwrap();
    let dek = DataKey::from_slice(&data_key).unwrap();
    let secret: [u8; 32] = sealing::open(&dek, &key.record)
        .unwrap()
        .as_slice()
        .try_into()
        .unwrap();
    // DESIGN §3 / sealing.rs: HKDF-SHA256(DEK, salt, "ekms/v1/<purpose>/<key_id>").
    let derive = |purpose: &str| {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(&key.record.salt), &data_key);
        let mut out = [0u8; 32];
        hk.expand(
            format!("ekms/v1/{purpose}/{}", key.record.key_id).as_bytes(),
            &mut out,
        )
        .unwrap();
        out
    };
    Recovered {
        data_key,
        secret,
        wrap_key: derive("wrap"),
        policy_mac_key: derive("policy-mac"),
    }
}

/// The second half of SHA-512(seed): the nonce prefix of RFC 8032 §5.1.6, held verbatim
/// in ed25519-dalek's `ExpandedSecretKey` while a signature is made (as secret as the
/// seed: with it and one signature the scalar follows).
fn ed25519_hash_prefix(seed: &[u8; 32]) -> [u8; 32] {
    use sha2::Digest as _;
    let h = sha2::Sha512::digest(seed);
    let mut out = [0u8; 32];
    out.copy_from_slice(&h[32..]);
    out
}

// ---- the scan ----------------------------------------------------------------------

/// The byte strings searched for one 32-byte secret: every 8-byte limb in both byte
/// orders (k256 keeps a scalar as 4 little-endian u64 limbs; a big-endian limb is a
/// substring of the big-endian encoding), which also catches every copy of the whole
/// 32 bytes in either order and any 16-byte half (AES round keys 0 and 1).
fn needles(secret: &[u8; 32]) -> Vec<[u8; 8]> {
    let mut out = Vec::new();
    for chunk in secret.chunks(8) {
        let mut be = [0u8; 8];
        be.copy_from_slice(chunk);
        let mut le = be;
        le.reverse();
        out.push(be);
        out.push(le);
    }
    out
}

/// Readable regions of `pid` as `(start, end, description)`.
fn regions(pid: i32) -> Vec<(u64, u64, String)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let range = parts.next()?;
            let perms = parts.next()?;
            let name = line
                .split_whitespace()
                .nth(5)
                .unwrap_or("[anon]")
                .to_owned();
            if !perms.starts_with('r') || name == "[vvar]" || name == "[vsyscall]" {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
                name,
            ))
        })
        .collect()
}

/// Where one needle was found (`address` and `region` are read by the failure
/// message's `Debug`).
#[derive(Debug)]
#[allow(dead_code)]
struct Hit {
    secret: &'static str,
    address: u64,
    region: String,
}

/// Reads every readable region of `pid` through `/proc/PID/mem` and returns every
/// place one of `secrets`' needles occurs, plus the number of bytes scanned.
fn scan(pid: i32, secrets: &[(&'static str, [u8; 32])]) -> (Vec<Hit>, u64) {
    let mut all: Vec<([u8; 8], &'static str)> = Vec::new();
    for (name, s) in secrets {
        for n in needles(s) {
            all.push((n, name));
        }
    }
    // Prefilter on the first two bytes: one table lookup per position.
    let mut first = vec![false; 1 << 16];
    for (n, _) in &all {
        first[usize::from(u16::from_le_bytes([n[0], n[1]]))] = true;
    }
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut hits = Vec::new();
    let mut scanned = 0u64;
    const CHUNK: u64 = 1 << 20;
    for (start, end, name) in regions(pid) {
        let mut at = start;
        while at < end {
            let len = usize::try_from((end - at).min(CHUNK + 7)).unwrap();
            let mut buf = vec![0u8; len];
            let ok = mem.seek(SeekFrom::Start(at)).is_ok() && mem.read_exact(&mut buf).is_ok();
            if ok {
                scanned += len as u64;
                for i in 0..len.saturating_sub(7) {
                    if !first[usize::from(u16::from_le_bytes([buf[i], buf[i + 1]]))] {
                        continue;
                    }
                    let window = &buf[i..i + 8];
                    for (n, secret) in &all {
                        if window == n {
                            hits.push(Hit {
                                secret,
                                address: at + i as u64,
                                region: format!("{name} {start:x}-{end:x}"),
                            });
                        }
                    }
                }
            }
            at += CHUNK;
        }
    }
    (hits, scanned)
}

fn sign_both(sim: &SimGuard, evm: &Key, sol: &Key, n: usize) {
    let payer: [u8; 32] = sol.record.public_key.as_slice().try_into().unwrap();
    for i in 0..n {
        let nonce = u8::try_from(i % 100).unwrap();
        ok_json(&sim.socket(), &["sign", "evm", &evm.id, &evm_tx(nonce)]);
        let msg = solana_message(&payer, 1 + i as u64);
        ok_json(&sim.socket(), &["sign", "solana", &sol.id, &msg]);
    }
}

/// The memory scan of issue 6 item 5.
///
/// Phase 1 runs the sim with the data-key cache off (`EKMS_DEK_CACHE_MAX_USES=0`: one
/// KMS `Decrypt` per request, so the enclave holds no data key between requests),
/// creates a secp256k1 and an ed25519 key, makes [`SIGNATURES`] signatures with each
/// through the real parent and enclave, and scans the whole enclave process: no 8-byte
/// limb (either byte order) of the scalar, the seed, either key's wrap key or
/// policy-MAC key, or the data key may appear anywhere.
///
/// Phase 2 is the control that shows the scan can fail: the same state directory,
/// restarted with the data-key cache on (the default), one signature, and the scan
/// must find the data key, which the enclave then deliberately keeps in its cache
/// (keyring.rs) — proof that the scanner reads the enclave's heap and would report a
/// secret left there. The execution keys must still not be found.
///
/// Run against the enclave of commit b39fb23 (before issue 6), phase 1 fails: 186 hits,
/// 32 of them limbs of the secp256k1 scalar, 32 of the ed25519 seed, 64 of the wrap
/// keys and 58 of the data key, all in 2 MiB tokio worker stacks. With only the stack
/// scrub turned off it finds about 110 (the scalar, the seed, the expanded key's nonce
/// prefix and the wrap keys, in the signing threads' stacks; counts vary by run).
#[test]
fn memory_scan_finds_no_key_material_after_signing() {
    require_siblings();
    if !is_root() {
        eprintln!(
            "memory_scan: not root; /proc/PID/mem of a non-dumpable process is unreadable: skipped"
        );
        return;
    }
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let tmp = tempfile::tempdir().unwrap();
    let state_dir = tmp.path().join("state");

    // ---- phase 1: cache off, signatures, scan -----------------------------------
    let sim = start_sim(&state_dir, 0);
    let evm = create_key(&sim, "secp256k1", &evm_policy());
    let sol = create_key(&sim, "ed25519", &solana_policy());
    assert_eq!(evm.record.algorithm, Algorithm::Secp256k1);
    assert_eq!(sol.record.algorithm, Algorithm::Ed25519);
    sign_both(&sim, &evm, &sol, SIGNATURES);
    let e = recover(&state_dir, &evm);
    let s = recover(&state_dir, &sol);
    assert_eq!(
        e.data_key, s.data_key,
        "both keys are in the current keyring"
    );
    let secrets = [
        ("secp256k1 scalar", e.secret),
        ("ed25519 seed", s.secret),
        ("data key", e.data_key),
        ("secp256k1 wrap key", e.wrap_key),
        ("ed25519 wrap key", s.wrap_key),
        ("secp256k1 policy-MAC key", e.policy_mac_key),
        ("ed25519 policy-MAC key", s.policy_mac_key),
        (
            "ed25519 expanded-key nonce prefix",
            ed25519_hash_prefix(&s.secret),
        ),
    ];
    let pid = sim.pid("enclave");
    let (hits, scanned) = scan(pid, &secrets);
    eprintln!(
        "memory_scan: cache off: scanned {} MiB of enclave pid {pid}: {} hits",
        scanned >> 20,
        hits.len()
    );
    assert!(scanned > 1 << 20, "scanned only {scanned} bytes");
    assert!(hits.is_empty(), "key material in enclave memory: {hits:#?}");
    sim.stop();

    // ---- phase 2 (control): cache on, the cached data key is found ---------------
    let sim = start_sim(&state_dir, 1000);
    sign_both(&sim, &evm, &sol, 1);
    let pid = sim.pid("enclave");
    let (hits, scanned) = scan(pid, &secrets);
    eprintln!(
        "memory_scan: cache on (control): scanned {} MiB: {} hits",
        scanned >> 20,
        hits.len()
    );
    assert!(
        hits.iter().any(|h| h.secret == "data key"),
        "the control found no cached data key: the scan cannot see the enclave's heap"
    );
    let keys: Vec<&Hit> = hits.iter().filter(|h| h.secret != "data key").collect();
    assert!(keys.is_empty(), "execution-key material found: {keys:#?}");
    sim.stop();
}

// ---- the flood -----------------------------------------------------------------------

/// `(VmRSS, VmLck, Threads)` of `pid` in bytes, bytes, count.
fn memory_of(pid: i32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (
        field("VmRSS:") * 1024,
        field("VmLck:") * 1024,
        field("Threads:"),
    )
}

/// What one flood saw: answers by kind and the enclave's peak memory.
struct Flood {
    ok: u64,
    busy: u64,
    other: u64,
    peak: (u64, u64, u64),
    signed_during: u32,
}

/// Writes `FLOOD_REQUESTS` frames made by `request` back to back on one enclave
/// connection while another thread reads the answers; meanwhile samples the enclave's
/// memory and signs through the parent.
fn flood(sim: &SimGuard, evm: &Key, request: fn(u64, &Key) -> Request) -> Flood {
    let pid = sim.pid("enclave");
    let mut stream = UnixStream::connect(sim.state_dir.join("enclave.sock")).unwrap();
    let mut reader = stream.try_clone().unwrap();
    let answers = std::thread::spawn(move || {
        let (mut ok, mut busy, mut other) = (0u64, 0u64, 0u64);
        for _ in 0..FLOOD_REQUESTS {
            let mut prefix = [0u8; 4];
            reader.read_exact(&mut prefix).unwrap();
            let mut body = vec![0; frame_len(prefix).unwrap()];
            reader.read_exact(&mut body).unwrap();
            match decode_response(&body).unwrap().body {
                Ok(ResponseBody::Attestation { .. })
                | Ok(ResponseBody::Refused {
                    error: WireError::InvalidPayload { .. },
                    ..
                }) => {
                    ok += 1;
                }
                Err(WireError::Busy) => busy += 1,
                _ => other += 1,
            }
        }
        (ok, busy, other)
    });
    let frames: Vec<Vec<u8>> = (1..=FLOOD_REQUESTS)
        .map(|id| encode_request(&RequestFrame::new(id, request(id, evm))).unwrap())
        .collect();
    let writer = std::thread::spawn(move || {
        for frame in frames {
            stream.write_all(&frame).unwrap();
        }
        stream
    });

    // Sample memory and sign while the flood runs.
    let mut peak = (0u64, 0u64, 0u64);
    let mut signed_during = 0u32;
    loop {
        let m = memory_of(pid);
        peak = (peak.0.max(m.0), peak.1.max(m.1), peak.2.max(m.2));
        let out = ekms(&sim.socket(), &["sign", "evm", &evm.id, &evm_tx(1)]);
        // Over the in-flight cap a request may be answered busy; that is allowed.
        if out.status.success() {
            signed_during += 1;
        }
        if answers.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _stream = writer.join().unwrap();
    let (ok, busy, other) = answers.join().unwrap();
    let m = memory_of(pid);
    peak = (peak.0.max(m.0), peak.1.max(m.1), peak.2.max(m.2));
    Flood {
        ok,
        busy,
        other,
        peak,
        signed_during,
    }
}

fn attestation_request(id: u64, _key: &Key) -> Request {
    Request::Attestation {
        nonce: Some(id.to_be_bytes().to_vec()),
        user_data: None,
    }
}

/// A `Sign` frame near the frame limit: a valid record and policy, and a 250 KB payload
/// that the enclave refuses after opening the record (`invalid_payload`).
fn big_sign_request(_id: u64, key: &Key) -> Request {
    Request::Sign {
        record: key.record.clone(),
        keyring: KeyringRef {
            keyring: key.record.keyring.clone(),
            epoch: key.record.epoch,
            dek_ciphertext: key.dek_ciphertext.clone(),
        },
        policy: key.policy.clone(),
        payload: SignPayload {
            kind: PayloadKind::EvmTransaction,
            bytes: vec![0x02; 250_000],
        },
    }
}

/// Issue 6 item 6: 3,000 `Attestation` requests written back to back on one enclave
/// connection (the flood that grew the enclave to 515 threads and 1.1 GB RSS; this test
/// measured 515 threads, 1072 MiB RSS and 2023 MiB locked against the enclave of commit
/// b39fb23, and fails there). Every
/// request is answered, with a document or `Busy` (the NSM pool's queue bound); the
/// enclave's RSS, sampled throughout, stays below [`RSS_BOUND_BYTES`]; its thread count
/// stays small; and EVM signatures through the parent succeed during and after it.
/// Then the same with 3,000 `Sign` frames near the frame limit (250 KB payloads, each
/// opened on the signing pool then refused as `invalid_payload`), the largest requests
/// a host can pipeline: `--max-in-flight` bounds how many are held at once.
#[test]
fn attestation_flood_stays_bounded_and_signing_goes_on() {
    require_siblings();
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let tmp = tempfile::tempdir().unwrap();
    let state_dir = tmp.path().join("state");
    let sim = start_sim(&state_dir, 1000);
    let evm = create_key(&sim, "secp256k1", &evm_policy());
    let (rss_before, locked_before, threads_before) = memory_of(sim.pid("enclave"));

    for (name, request) in [
        (
            "attestation",
            attestation_request as fn(u64, &Key) -> Request,
        ),
        ("250 KB sign", big_sign_request),
    ] {
        let f = flood(&sim, &evm, request);
        let (peak, signed_during) = (f.peak, f.signed_during);
        eprintln!(
            "{name} flood: {} answered, {} busy, {} other; enclave RSS {} MiB before, peak \
             {} MiB; locked {} MiB before, peak {} MiB; threads {threads_before} before, \
             peak {}; {signed_during} signatures during the flood",
            f.ok,
            f.busy,
            f.other,
            rss_before >> 20,
            peak.0 >> 20,
            locked_before >> 20,
            peak.1 >> 20,
            peak.2
        );
        assert_eq!(
            f.ok + f.busy,
            FLOOD_REQUESTS,
            "{name}: {} unexpected answers",
            f.other
        );
        assert!(f.ok > 0, "{name}: nothing but busy");
        assert!(
            peak.0 < RSS_BOUND_BYTES,
            "{name}: enclave RSS peaked at {} MiB",
            peak.0 >> 20
        );
        // VmLck is the size of the locked mappings (the binary and the stacks locked at
        // start, including reserved address space), not resident memory: what matters
        // is that the flood locks nothing more (no `MCL_FUTURE`).
        assert!(
            peak.1 <= locked_before + (16 << 20),
            "{name}: locked memory grew from {} to {} MiB",
            locked_before >> 20,
            peak.1 >> 20
        );
        assert!(peak.2 < 64, "{name}: {} threads", peak.2);
        assert!(
            signed_during > 0,
            "{name}: no signature succeeded during the flood"
        );
    }
    // Signing keeps working after the flood (and did during it, unless the flood was
    // over before the first sample).
    ok_json(&sim.socket(), &["sign", "evm", &evm.id, &evm_tx(2)]);
    sim.stop();
}
