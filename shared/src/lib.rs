//! `ekms-shared`: the wire protocol between the parent (EC2 host) and the enclave.
//!
//! This crate owns the message types ([`Request`], [`ResponseBody`], [`WireError`]), the
//! frame codec ([`encode_request`], [`decode_request`], [`frame_len`], ...), the vsock
//! ports and CIDs, and the transport [`Address`] syntax. It does no I/O: no sockets, no
//! tokio, no files (STYLE rule 3). Everything the parent sends is hostile to the enclave
//! and vice versa, so every decoder bounds sizes and nesting before allocating.
//!
//! Rule for maintainers: a change to any type that crosses the wire, or to the byte layout
//! of [`SealedKeyRecord::aad`] or [`SealedPolicy::mac_input`], needs a new
//! [`PROTOCOL_VERSION`] (and, for the AAD/MAC layouts, a new record version: sealed
//! blobs outlive binaries).

mod address;
pub mod api;
pub mod audit;
mod codec;
mod error;
mod messages;
pub mod metrics;
pub mod owner;
pub mod statement;

pub use address::Address;
pub use codec::{
    decode_request, decode_response, encode_request, encode_response, frame_len, fuzz_decode,
    FRAME_PREFIX_LEN, MAX_CBOR_DEPTH, MAX_FRAME_LEN, PROTOCOL_VERSION,
};
pub use error::{ProtocolError, WireError};
pub use messages::{
    Algorithm, Credentials, DekCachePolicy, EnclaveState, KeyringRef, KmsConfig, KmsTarget, Mode,
    OwnerApproval, PayloadKind, Request, RequestFrame, Response, ResponseBody, ResponseFrame,
    SealedCheckpoint, SealedKeyRecord, SealedPolicy, SignOutput, SignPayload, StatusInfo,
    MAX_ATTESTATION_NONCE_LEN, MAX_ATTESTATION_USER_DATA_LEN, MAX_OWNER_SIGNATURE_LEN,
    PENDING_CHECKPOINT_SECS,
};
pub use metrics::EnclaveMetrics;

/// vsock CID of the parent instance as seen from inside an enclave: 3, nitro-cli's
/// `VMADDR_CID_PARENT` (aws-nitro-enclaves-cli). Not `VMADDR_CID_HOST`, which is 2 in
/// `<linux/vm_sockets.h>` (the hypervisor's host, unused by Nitro Enclaves).
pub const PARENT_CID: u32 = 3;

/// vsock CID we pass to `nitro-cli run-enclave --enclave-cid` by default. The real CID is
/// whatever `nitro-cli` reports (`EnclaveCID` in its JSON output); the parent takes it
/// from its configuration, never assumes this value.
pub const DEFAULT_ENCLAVE_CID: u32 = 16;

/// `VMADDR_CID_ANY` (`-1U` in `<linux/vm_sockets.h>`): listen on every CID. The enclave
/// binds `vsock://4294967295:5000`.
pub const VMADDR_CID_ANY: u32 = u32::MAX;

/// vsock port on which the enclave serves this protocol.
pub const ENCLAVE_PORT: u32 = 5000;

/// vsock port on which the enclave serves its log lines (`ekms-enclave --log-listen`,
/// read by `ekms-parent --enclave-log`).
pub const ENCLAVE_LOG_PORT: u32 = 5001;

/// vsock port on the parent (CID [`PARENT_CID`]) where `vsock-proxy` relays TLS bytes to
/// `kms.<region>.amazonaws.com:443` for the enclave's KMS client (DESIGN §2).
pub const KMS_PROXY_PORT: u32 = 8000;

/// Default Unix socket on which a simulated enclave serves this protocol (simulation
/// mode, DESIGN §6; this build machine has no vsock loopback).
pub const SIM_ENCLAVE_SOCKET: &str = "/tmp/ekms-enclave.sock";

/// Default address of the enclave in simulation: `unix:` + [`SIM_ENCLAVE_SOCKET`].
pub const SIM_ENCLAVE_ADDRESS: &str = "unix:/tmp/ekms-enclave.sock";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_address_matches_socket_constant() {
        let addr: Address = SIM_ENCLAVE_ADDRESS.parse().unwrap();
        assert_eq!(addr, Address::Unix(SIM_ENCLAVE_SOCKET.into()));
        assert_eq!(addr.to_string(), SIM_ENCLAVE_ADDRESS);
    }

    #[test]
    fn rejects_sim_address_as_vsock() {
        assert!(SIM_ENCLAVE_ADDRESS
            .replacen("unix:", "vsock://", 1)
            .parse::<Address>()
            .is_err());
    }
}
