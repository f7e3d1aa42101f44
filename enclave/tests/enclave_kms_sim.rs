//! Integration test of the enclave server with real framing over a temporary Unix
//! socket, a real simulated NSM, and the KMS emulator (`kms-sim`) running in-process
//! on 127.0.0.1:0 with a key policy gated on the simulated enclave's PCR0.
//!
//! Covers: Sign before Configure (NotReady), Configure (attested GenerateDataKey on the
//! pinned key → Ready; never Ready while the key policy pins another PCR0),
//! a second identical Configure (a no-op), credentials refreshed by a Ready-state
//! Configure (signing goes on with a cold data-key cache, policy floors kept) and a
//! Ready-state Configure naming another key (AlreadyConfigured), CreateKeyring, GenerateKey for both
//! algorithms with policies, an EIP-1559 signature (recovered to the sealed public key),
//! a Solana transfer signature (verified with ed25519), policy denials, tampered
//! records and policies (SealedStateInvalid), SetPolicy, and `max_uses = 0`.
//!
//! Every enclave here is started as the binary starts it: pinned to the KMS key the
//! test created and to kms-sim's `https://` endpoint, trusting only the kms-sim TLS CA.
//! The fake-KMS tests (`rejects_a_fake_kms_…`) race the honest Configure with a KMS of
//! the attacker's (another kms-sim, with a key whose policy lets the attacker decrypt
//! and its own TLS CA): refused by the pin, or by the TLS handshake on kms-sim's own
//! port after kms-sim stopped; no keyring or key is made until the honest Configure.
//!
//! The PCRs come from a fixed digest rather than from measuring the test binary: the
//! debug binary is ~200 MB and hashing it would dominate the test's run time.

// The whole file is test code; clippy's `allow-unwrap-in-tests` does not cover the
// fixture helpers outside `#[test]` functions.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use attestation::{SimulatedCa, SimulatedNsm};
use aws_sdk_kms::Client;
use ekms_enclave::kms::KmsPin;
use ekms_enclave::{io::Listener, Enclave, Limits};
use ekms_shared::{
    decode_response, encode_request, frame_len, Address, Algorithm, Credentials, DekCachePolicy,
    EnclaveState, KeyringRef, KmsConfig, Mode, PayloadKind, Request, RequestFrame, ResponseBody,
    ResponseFrame, SealedKeyRecord, SealedPolicy, SignOutput, SignPayload, WireError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::oneshot;

const ACCOUNT: &str = "111122223333";
const DEST: [u8; 20] = [0x11; 20];
const SYSTEM_PROGRAM: [u8; 32] = [0; 32];
/// Digest the simulated enclave's PCRs are derived from.
const PCR_DIGEST: &[u8] = b"ekms-enclave integration test";

/// kms-sim and the enclave server, both stopped on drop.
struct World {
    dir: tempfile::TempDir,
    kms_port: u16,
    kms_key_arn: String,
    /// The kms-sim TLS CA certificate (PEM).
    tls_root_pem: String,
    socket: PathBuf,
    /// Stops kms-sim (taken by [`World::stop_kms`]).
    kms_stop: Option<oneshot::Sender<()>>,
    kms_task: Option<tokio::task::JoinHandle<()>>,
    enclave_stop: Option<oneshot::Sender<()>>,
    enclave_task: Option<tokio::task::JoinHandle<()>>,
    /// The simulated Nitro CA (a restarted enclave gets a new NSM under it).
    ca: SimulatedCa,
}

/// A kms-sim served in-process on `tcp` with its TLS CA in `tls_ca_dir`; returns its
/// stop sender, its task, and its TLS root (PEM).
async fn start_kms_sim(
    tcp: tokio::net::TcpListener,
    state_dir: PathBuf,
    attestation_root: PathBuf,
    tls_ca_dir: PathBuf,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>, String) {
    let tls_root_pem = kms_sim::tls::TlsCa::load_or_create(&tls_ca_dir)
        .unwrap()
        .root_pem()
        .to_owned();
    let config = kms_sim::Config::new(state_dir, Some(attestation_root), tls_ca_dir);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        kms_sim::run(tcp, config, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (stop, task, tls_root_pem)
}

impl World {
    async fn start() -> Self {
        Self::start_pinned(PCR_DIGEST).await
    }

    /// Like [`World::start`], with the KMS key policy pinned to the PCR0 of
    /// `pinned_digest` (the enclave's own PCRs always come from [`PCR_DIGEST`]).
    async fn start_pinned(pinned_digest: &[u8]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = SimulatedCa::generate().unwrap();
        let root = dir.path().join("root.pem");
        std::fs::write(&root, ca.root_pem()).unwrap();
        let pcrs = attestation::pcrs_from_digest(PCR_DIGEST);
        let pcr0_hex = hex::encode(&attestation::pcrs_from_digest(pinned_digest)[&0]);
        let nsm = SimulatedNsm::new(&ca, pcrs).unwrap();

        // kms-sim in-process.
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let kms_port = tcp.local_addr().unwrap().port();
        let (kms_stop, kms_task, tls_root_pem) = start_kms_sim(
            tcp,
            dir.path().join("kms-state"),
            root,
            dir.path().join("ca"),
        )
        .await;
        let kms_key_arn =
            create_enclave_key(&admin_client(kms_port, &tls_root_pem), &pcr0_hex).await;

        // The enclave server, pinned as `ekms sim` pins the binary.
        let socket = dir.path().join("enclave.sock");
        let listener = Listener::bind(&Address::Unix(socket.clone()))
            .await
            .unwrap();
        let pin = KmsPin::from_flags(
            Some(&kms_key_arn),
            Some(&format!("https://127.0.0.1:{kms_port}")),
            Mode::Simulation,
        )
        .unwrap();
        let enclave = Enclave::new(Arc::new(nsm), Mode::Simulation)
            .unwrap()
            .with_kms_pin(pin)
            .danger_trust_simulation_kms_ca(tls_root_pem.clone())
            .unwrap();
        let (enclave_stop, enclave_task) = serve(listener, enclave);
        Self {
            ca,
            dir,
            kms_port,
            kms_key_arn,
            tls_root_pem,
            socket,
            kms_stop: Some(kms_stop),
            kms_task: Some(kms_task),
            enclave_stop: Some(enclave_stop),
            enclave_task: Some(enclave_task),
        }
    }

    /// Stops the enclave and starts a new one (new identity and audit keys, no
    /// memory) on the same socket, pinned the same way: an enclave restart.
    async fn restart_enclave(&mut self) {
        if let Some(s) = self.enclave_stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.enclave_task.take() {
            t.await.unwrap();
        }
        let nsm = SimulatedNsm::new(&self.ca, attestation::pcrs_from_digest(PCR_DIGEST)).unwrap();
        let pin = KmsPin::from_flags(
            Some(&self.kms_key_arn),
            Some(&self.kms_endpoint()),
            Mode::Simulation,
        )
        .unwrap();
        let enclave = Enclave::new(Arc::new(nsm), Mode::Simulation)
            .unwrap()
            .with_kms_pin(pin)
            .danger_trust_simulation_kms_ca(self.tls_root_pem.clone())
            .unwrap();
        let listener = Listener::bind(&Address::Unix(self.socket.clone()))
            .await
            .unwrap();
        let (stop, task) = serve(listener, enclave);
        self.enclave_stop = Some(stop);
        self.enclave_task = Some(task);
    }

    fn kms_endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.kms_port)
    }

    fn kms_config(&self) -> KmsConfig {
        KmsConfig {
            region: "us-east-1".into(),
            endpoint_url: Some(self.kms_endpoint()),
            kms_key_id: self.kms_key_arn.clone(),
            credentials: Credentials {
                access_key_id: "AKIDSIMULATION".into(),
                secret_access_key: "secret".into(),
                session_token: Some("token".into()),
            },
        }
    }

    fn admin(&self) -> Client {
        admin_client(self.kms_port, &self.tls_root_pem)
    }

    /// Stops kms-sim and waits until its port is closed.
    async fn stop_kms(&mut self) {
        if let Some(s) = self.kms_stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.kms_task.take() {
            t.await.unwrap();
        }
    }

    async fn connect(&self) -> Parent {
        Parent {
            stream: UnixStream::connect(&self.socket).await.unwrap(),
            next_id: 1,
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.enclave_stop.take() {
            let _ = s.send(());
        }
        self.stop_kms().await;
        if let Some(t) = self.enclave_task.take() {
            t.await.unwrap();
        }
        assert!(!self.socket.exists(), "socket file removed on shutdown");
    }
}

/// Serves `enclave` on `listener` until the returned sender fires.
fn serve(
    listener: Listener,
    enclave: Enclave,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(ekms_enclave::run(
        listener,
        Arc::new(enclave),
        Limits::default(),
        async {
            let _ = stopped.await;
        },
    ));
    (stop, task)
}

/// An administrator's KMS client for the kms-sim on `port`, trusting `tls_root_pem`.
fn admin_client(port: u16, tls_root_pem: &str) -> Client {
    use aws_smithy_http_client::tls;
    let context = tls::TlsContext::builder()
        .with_trust_store(
            tls::TrustStore::empty()
                .with_native_roots(false)
                .with_pem_certificate(tls_root_pem.as_bytes()),
        )
        .build()
        .unwrap();
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .tls_context(context)
        .build_https();
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .endpoint_url(format!("https://127.0.0.1:{port}"))
        .region(aws_sdk_kms::config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "AKIDADMIN",
            "secret",
            None,
            None,
            "static",
        ))
        .http_client(http)
        .build();
    Client::from_conf(config)
}

async fn create_enclave_key(client: &Client, pcr0_hex: &str) -> String {
    let policy = enclave_key_policy(pcr0_hex);
    let created = client
        .create_key()
        .policy(policy.to_string())
        .send()
        .await
        .unwrap();
    created.key_metadata().unwrap().arn().unwrap().to_owned()
}

/// A key policy releasing data keys only to an enclave whose PCR0 is `pcr0_hex`.
fn enclave_key_policy(pcr0_hex: &str) -> serde_json::Value {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "admin", "Effect": "Allow",
             "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")},
             "Action": ["kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy"],
             "Resource": "*"},
            {"Sid": "enclave", "Effect": "Allow",
             "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:role/enclave")},
             "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
             "Resource": "*",
             "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": pcr0_hex}}}
        ]
    })
}

/// The parent's side of one connection: real frames over the Unix socket.
struct Parent {
    stream: UnixStream,
    next_id: u64,
}

impl Parent {
    async fn call(&mut self, body: Request) -> Result<ResponseBody, WireError> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = encode_request(&RequestFrame::new(id, body)).unwrap();
        self.stream.write_all(&frame).await.unwrap();
        let response = self.read().await;
        assert_eq!(response.request_id, id);
        response.body
    }

    async fn read(&mut self) -> ResponseFrame {
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix).await.unwrap();
        let mut body = vec![0; frame_len(prefix).unwrap()];
        self.stream.read_exact(&mut body).await.unwrap();
        decode_response(&body).unwrap()
    }

    async fn state(&mut self) -> EnclaveState {
        match self.call(Request::Status).await {
            Ok(ResponseBody::Status(info)) => info.state,
            other => panic!("{other:?}"),
        }
    }

    /// Creates keyring `name` at `epoch` and returns its reference.
    async fn create_keyring(&mut self, name: &str, epoch: u32) -> KeyringRef {
        match self
            .call(Request::CreateKeyring {
                keyring: name.into(),
                epoch,
            })
            .await
        {
            Ok(ResponseBody::KeyringCreated {
                keyring,
                epoch,
                dek_ciphertext,
            }) => {
                let created = KeyringRef {
                    keyring,
                    epoch,
                    dek_ciphertext,
                };
                self.restore(&created).await;
                created
            }
            other => panic!("CreateKeyring: {other:?}"),
        }
    }

    async fn generate_raw(
        &mut self,
        algorithm: Algorithm,
        policy_json: &str,
        keyring: &KeyringRef,
    ) -> Result<ResponseBody, WireError> {
        self.call(Request::GenerateKey {
            algorithm,
            owner: None,
            label: Some("test".into()),
            policy_json: policy_json.into(),
            keyring: keyring.clone(),
        })
        .await
    }

    async fn generate(
        &mut self,
        algorithm: Algorithm,
        policy_json: &str,
        keyring: &KeyringRef,
    ) -> (SealedKeyRecord, SealedPolicy) {
        match self.generate_raw(algorithm, policy_json, keyring).await {
            Ok(ResponseBody::KeyGenerated { record, policy, .. }) => (record, policy),
            other => panic!("{other:?}"),
        }
    }

    /// Signs an EIP-1559 transfer of `value` wei to `DEST` on chain 1.
    async fn sign_transfer(
        &mut self,
        record: &SealedKeyRecord,
        policy: &SealedPolicy,
        keyring: &KeyringRef,
        value: u128,
    ) -> Result<SignOutput, WireError> {
        let tx = eip1559(1, DEST, value);
        self.sign(record, policy, keyring, PayloadKind::EvmTransaction, tx)
            .await
    }

    async fn sign(
        &mut self,
        record: &SealedKeyRecord,
        policy: &SealedPolicy,
        keyring: &KeyringRef,
        kind: PayloadKind,
        bytes: Vec<u8>,
    ) -> Result<SignOutput, WireError> {
        self.call(Request::Sign {
            record: record.clone(),
            keyring: keyring.clone(),
            policy: policy.clone(),
            payload: SignPayload { kind, bytes },
        })
        .await
        .map(|body| match body {
            ResponseBody::Signed { output, .. } => Ok(output),
            ResponseBody::Refused { error, .. } => Err(error),
            other => panic!("{other:?}"),
        })
        .and_then(|r| r)
    }

    /// Both phases of a policy change: the pending checkpoint, then `Commit`; the new
    /// sealed policy.
    async fn set_policy(&mut self, request: Request) -> Result<SealedPolicy, WireError> {
        match self.call(request).await? {
            ResponseBody::CheckpointPending {
                checkpoint,
                policy: Some(policy),
            } => match self
                .call(Request::Commit {
                    seq: checkpoint.seq,
                })
                .await?
            {
                ResponseBody::Committed { .. } => Ok(policy),
                other => panic!("{other:?}"),
            },
            ResponseBody::Refused { error, .. } => Err(error),
            other => panic!("{other:?}"),
        }
    }

    /// `Restore` with no checkpoint (a first boot) and its `Commit`, once per enclave.
    async fn restore(&mut self, keyring: &KeyringRef) {
        let answer = self
            .call(Request::Restore {
                keyring: keyring.clone(),
                checkpoint: None,
                last_audit: None,
            })
            .await;
        match answer {
            Ok(ResponseBody::CheckpointPending { checkpoint, .. }) => {
                let done = self
                    .call(Request::Commit {
                        seq: checkpoint.seq,
                    })
                    .await;
                assert!(
                    matches!(done, Ok(ResponseBody::Committed { .. })),
                    "{done:?}"
                );
            }
            Err(WireError::BadRequest { message }) if message.contains("already restored") => {}
            other => panic!("Restore: {other:?}"),
        }
    }
}

// ---- payloads ----------------------------------------------------------------------

fn rlp_bytes(b: &[u8]) -> Vec<u8> {
    match b.len() {
        1 if b[0] < 0x80 => b.to_vec(),
        n if n < 56 => [&[0x80 + n as u8][..], b].concat(),
        n => {
            let len = (n as u64).to_be_bytes();
            let len = &len[len.iter().position(|&x| x != 0).unwrap_or(7)..];
            [&[0xb7 + len.len() as u8][..], len, b].concat()
        }
    }
}

fn rlp_uint(v: u128) -> Vec<u8> {
    let be = v.to_be_bytes();
    let first = be.iter().position(|&x| x != 0).unwrap_or(be.len());
    rlp_bytes(&be[first..])
}

fn rlp_list(items: &[Vec<u8>]) -> Vec<u8> {
    let payload = items.concat();
    assert!(payload.len() < 56, "short lists only");
    [&[0xc0 + payload.len() as u8][..], &payload].concat()
}

/// An unsigned EIP-1559 transaction: `0x02 || rlp([chain_id, nonce, max_priority_fee,
/// max_fee, gas, to, value, data, access_list])`.
fn eip1559(chain_id: u64, to: [u8; 20], value: u128) -> Vec<u8> {
    let fields = [
        rlp_uint(chain_id.into()),
        rlp_uint(7),
        rlp_uint(1_000_000_000),
        rlp_uint(30_000_000_000),
        rlp_uint(21_000),
        rlp_bytes(&to),
        rlp_uint(value),
        rlp_bytes(&[]),
        rlp_list(&[]),
    ];
    [&[0x02][..], &rlp_list(&fields)].concat()
}

/// A legacy Solana message with one System Program transfer from `from` to `to`.
fn solana_transfer(from: [u8; 32], to: [u8; 32], lamports: u64) -> Vec<u8> {
    let mut m = vec![1, 0, 1, 3];
    m.extend_from_slice(&from);
    m.extend_from_slice(&to);
    m.extend_from_slice(&SYSTEM_PROGRAM);
    m.extend_from_slice(&[0x42; 32]); // recent blockhash
    m.extend_from_slice(&[1, 2, 2, 0, 1, 12]); // 1 ix: program 2, accounts [0, 1], 12 data bytes
    m.extend_from_slice(&2u32.to_le_bytes()); // SystemInstruction::Transfer
    m.extend_from_slice(&lamports.to_le_bytes());
    m
}

fn evm_policy() -> String {
    serde_json::json!({
        "enabled": true,
        "evm": {
            "chain_ids": [1],
            "allowed_destinations": [format!("0x{}", hex::encode(DEST))],
            "max_value_wei": "1000000000000000000",
            "max_fee_wei": "10000000000000000"
        }
    })
    .to_string()
}

fn solana_policy(max_lamports: u64) -> String {
    serde_json::json!({
        "enabled": true,
        "solana": {
            "allowed_programs": ["11111111111111111111111111111111"],
            "max_lamports_per_transfer": max_lamports,
            "max_lamports_per_transaction": max_lamports,
            "max_fee_lamports": 10_000
        }
    })
    .to_string()
}

fn keccak(bytes: &[u8]) -> [u8; 32] {
    use sha3::Digest;
    sha3::Keccak256::digest(bytes).into()
}

// ---- the test ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configure_create_generate_sign_and_refuse() {
    let world = World::start().await;
    let mut parent = world.connect().await;
    let cache = DekCachePolicy {
        ttl_secs: 300,
        max_uses: 1000,
    };

    // Before Configure: Status says Booting, key requests are NotReady.
    assert_eq!(parent.state().await, EnclaveState::Booting);
    let early = parent
        .call(Request::CreateKeyring {
            keyring: "main".into(),
            epoch: 1,
        })
        .await;
    assert_eq!(early, Err(WireError::NotReady));

    // Configure: answers only once the attested round trip made the enclave Ready.
    let configured = parent
        .call(Request::Configure {
            kms: world.kms_config(),
            dek_cache: cache,
        })
        .await;
    assert_eq!(configured, Ok(ResponseBody::Configured));
    assert_eq!(parent.state().await, EnclaveState::Ready);
    let again = parent
        .call(Request::Configure {
            kms: world.kms_config(),
            dek_cache: cache,
        })
        .await;
    assert_eq!(
        again,
        Ok(ResponseBody::Configured),
        "same credentials: no-op"
    );

    // A restarted parent reconnects and sees Ready (it skips Configure).
    let mut restarted = world.connect().await;
    assert_eq!(restarted.state().await, EnclaveState::Ready);
    drop(restarted);

    // CreateKeyring → the KMS CiphertextBlob.
    let created = parent
        .call(Request::CreateKeyring {
            keyring: "main".into(),
            epoch: 1,
        })
        .await;
    let Ok(ResponseBody::KeyringCreated {
        keyring,
        epoch,
        dek_ciphertext,
    }) = created
    else {
        panic!("{created:?}");
    };
    assert_eq!((keyring.as_str(), epoch), ("main", 1));
    let main = KeyringRef {
        keyring,
        epoch,
        dek_ciphertext,
    };
    // Key requests wait for the durable state: Restore (a first boot: no checkpoint).
    let early = parent
        .generate_raw(Algorithm::Secp256k1, &evm_policy(), &main)
        .await;
    assert_eq!(early, Err(WireError::NotReady));
    parent.restore(&main).await;

    // GenerateKey, both algorithms.
    let (evm_record, evm_policy_v1) = parent
        .generate(Algorithm::Secp256k1, &evm_policy(), &main)
        .await;
    assert_eq!(evm_record.public_key.len(), 33);
    assert_eq!(evm_record.owner, None);
    assert_eq!(evm_policy_v1.version, 1);
    let (sol_record, sol_policy) = parent
        .generate(Algorithm::Ed25519, &solana_policy(5_000_000), &main)
        .await;
    assert_eq!(sol_record.public_key.len(), 32);
    let sol_pub: [u8; 32] = sol_record.public_key.clone().try_into().unwrap();

    // EIP-1559 signature, recovered to the sealed public key.
    let tx = eip1559(1, DEST, 1_000);
    let out = parent
        .sign(
            &evm_record,
            &evm_policy_v1,
            &main,
            PayloadKind::EvmTransaction,
            tx.clone(),
        )
        .await
        .unwrap();
    let SignOutput::Evm {
        r,
        s,
        y_parity,
        signed_transaction,
        transaction_hash,
        ..
    } = out
    else {
        panic!("{out:?}");
    };
    let sig = k256::ecdsa::Signature::from_scalars(r, s).unwrap();
    let recovered = k256::ecdsa::VerifyingKey::recover_from_prehash(
        &keccak(&tx),
        &sig,
        k256::ecdsa::RecoveryId::from_byte(y_parity).unwrap(),
    )
    .unwrap();
    assert_eq!(
        recovered,
        k256::ecdsa::VerifyingKey::from_sec1_bytes(&evm_record.public_key).unwrap()
    );
    assert_eq!(transaction_hash, keccak(&signed_transaction));

    // Solana transfer signature, verified with ed25519.
    let msg = solana_transfer(sol_pub, [0x22; 32], 1_000_000);
    let out = parent
        .sign(
            &sol_record,
            &sol_policy,
            &main,
            PayloadKind::SolanaTransaction,
            msg.clone(),
        )
        .await
        .unwrap();
    let SignOutput::Solana { signature, .. } = out else {
        panic!("{out:?}");
    };
    ed25519_dalek::VerifyingKey::from_bytes(&sol_pub)
        .unwrap()
        .verify_strict(&msg, &ed25519_dalek::Signature::from_bytes(&signature))
        .unwrap();

    // Denials, evaluated on the decoded payload.
    let denied = |r: Result<SignOutput, WireError>| match r {
        Err(WireError::PolicyDenied { rule, .. }) => rule,
        other => panic!("{other:?}"),
    };
    let too_much = eip1559(1, DEST, 2_000_000_000_000_000_000);
    let rule = denied(
        parent
            .sign(
                &evm_record,
                &evm_policy_v1,
                &main,
                PayloadKind::EvmTransaction,
                too_much,
            )
            .await,
    );
    assert_eq!(rule, "evm.max_value_wei");
    let other_chain = eip1559(8453, DEST, 1);
    let rule = denied(
        parent
            .sign(
                &evm_record,
                &evm_policy_v1,
                &main,
                PayloadKind::EvmTransaction,
                other_chain,
            )
            .await,
    );
    assert_eq!(rule, "evm.chain_ids");
    let big_transfer = solana_transfer(sol_pub, [0x22; 32], 6_000_000);
    let rule = denied(
        parent
            .sign(
                &sol_record,
                &sol_policy,
                &main,
                PayloadKind::SolanaTransaction,
                big_transfer,
            )
            .await,
    );
    assert_eq!(rule, "solana.max_lamports_per_transfer");

    // Kind that does not match the key: BadRequest. Garbage payload: InvalidPayload.
    let wrong_kind = parent
        .sign(
            &evm_record,
            &evm_policy_v1,
            &main,
            PayloadKind::SolanaTransaction,
            msg.clone(),
        )
        .await;
    assert!(
        matches!(wrong_kind, Err(WireError::BadRequest { .. })),
        "{wrong_kind:?}"
    );
    let garbage = parent
        .sign(
            &evm_record,
            &evm_policy_v1,
            &main,
            PayloadKind::EvmTransaction,
            vec![0x02, 0xff],
        )
        .await;
    assert!(
        matches!(garbage, Err(WireError::InvalidPayload { .. })),
        "{garbage:?}"
    );

    // Tampered record, tampered policy, policy of another key: SealedStateInvalid.
    let mut tampered = evm_record.clone();
    tampered.ciphertext[0] ^= 1;
    let mut moved = evm_record.clone();
    moved.owner = Some("mallory".into());
    let mut loosened = evm_policy_v1.clone();
    loosened.policy_json = loosened.policy_json.replace("[1]", "[1,8453]");
    for (record, policy) in [
        (&tampered, &evm_policy_v1),
        (&moved, &evm_policy_v1),
        (&evm_record, &loosened),
        (&evm_record, &sol_policy),
    ] {
        let r = parent
            .sign(
                record,
                policy,
                &main,
                PayloadKind::EvmTransaction,
                tx.clone(),
            )
            .await;
        assert_eq!(r, Err(WireError::SealedStateInvalid));
    }

    // SetPolicy: version 2, MAC'd; the new policy allows chain 8453.
    let new_policy = evm_policy().replace("[1]", "[1,8453]");
    let set = parent
        .set_policy(Request::SetPolicy {
            record: evm_record.clone(),
            keyring: main.clone(),
            current: evm_policy_v1.clone(),
            policy_json: new_policy,
            approval: None,
        })
        .await;
    let Ok(evm_policy_v2) = set else {
        panic!("{set:?}");
    };
    assert_eq!(evm_policy_v2.version, 2);
    parent
        .sign(
            &evm_record,
            &evm_policy_v2,
            &main,
            PayloadKind::EvmTransaction,
            eip1559(8453, DEST, 1),
        )
        .await
        .unwrap();
    // The parent puts version 1 (validly MAC'd, but older) back: refused, for signing
    // and as the base of another update.
    let rolled_back = parent
        .sign(
            &evm_record,
            &evm_policy_v1,
            &main,
            PayloadKind::EvmTransaction,
            tx.clone(),
        )
        .await;
    assert_eq!(rolled_back, Err(WireError::SealedStateInvalid));
    let rolled_back = parent
        .set_policy(Request::SetPolicy {
            record: evm_record.clone(),
            keyring: main.clone(),
            current: evm_policy_v1.clone(),
            policy_json: evm_policy(),
            approval: None,
        })
        .await;
    assert_eq!(rolled_back, Err(WireError::SealedStateInvalid));
    let refused = parent
        .set_policy(Request::SetPolicy {
            record: evm_record.clone(),
            keyring: main.clone(),
            current: loosened,
            policy_json: evm_policy(),
            approval: None,
        })
        .await;
    assert_eq!(refused, Err(WireError::SealedStateInvalid));

    // A data-key blob that KMS does not know: the KMS error code comes through.
    let mut bad_ring = main.clone();
    bad_ring.dek_ciphertext[10] ^= 0xff;
    let r = parent
        .sign(
            &evm_record,
            &evm_policy_v2,
            &bad_ring,
            PayloadKind::EvmTransaction,
            tx.clone(),
        )
        .await;
    assert!(
        matches!(&r, Err(WireError::Kms { code, .. }) if code == "InvalidCiphertextException"),
        "{r:?}"
    );

    drop(parent);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signs_with_dek_cache_off_and_runs_requests_concurrently() {
    let world = World::start().await;
    let mut parent = world.connect().await;
    let configured = parent
        .call(Request::Configure {
            kms: world.kms_config(),
            dek_cache: DekCachePolicy {
                ttl_secs: 300,
                max_uses: 0,
            },
        })
        .await;
    assert_eq!(configured, Ok(ResponseBody::Configured));
    let ring = parent.create_keyring("nocache", 3).await;
    let (record, policy) = parent
        .generate(Algorithm::Secp256k1, &evm_policy(), &ring)
        .await;

    // Pipeline 8 signatures on one connection; each needs its own KMS Decrypt.
    let mut batch = Vec::new();
    for id in 100..108u64 {
        let req = Request::Sign {
            record: record.clone(),
            keyring: ring.clone(),
            policy: policy.clone(),
            payload: SignPayload {
                kind: PayloadKind::EvmTransaction,
                bytes: eip1559(1, DEST, u128::from(id)),
            },
        };
        batch.extend(encode_request(&RequestFrame::new(id, req)).unwrap());
    }
    parent.stream.write_all(&batch).await.unwrap();
    let mut answered = BTreeMap::new();
    for _ in 0..8 {
        let r = parent.read().await;
        assert!(
            matches!(
                r.body,
                Ok(ResponseBody::Signed {
                    output: SignOutput::Evm { .. },
                    ..
                })
            ),
            "{r:?}"
        );
        answered.insert(r.request_id, ());
    }
    assert_eq!(answered.len(), 8);

    // The record sealed under this keyring does not open with another keyring's ref.
    let mut other = ring.clone();
    other.epoch = 4;
    let r = parent
        .sign(
            &record,
            &policy,
            &other,
            PayloadKind::EvmTransaction,
            eip1559(1, DEST, 1),
        )
        .await;
    assert_eq!(r, Err(WireError::SealedStateInvalid));

    drop(parent);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_gets_ready_for_a_key_policy_of_another_image_until_it_is_fixed() {
    // Issue 9: the KMS key policy pins another image's PCR0. The readiness round trip is
    // a GenerateDataKey on the pinned key, so Configure fails at once with KMS's
    // AccessDeniedException (not at the first CreateKeyring), and nothing key-related
    // is served.
    let world = World::start_pinned(b"another enclave image").await;
    let mut parent = world.connect().await;
    for _ in 0..2 {
        let configured = parent
            .call(Request::Configure {
                kms: world.kms_config(),
                dek_cache: CACHE,
            })
            .await;
        match &configured {
            Err(WireError::Kms { code, message }) => {
                assert_eq!(code, "AccessDeniedException", "{message}");
                assert!(message.contains("kms:GenerateDataKey"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parent.state().await, EnclaveState::Configured);
        assert_nothing_can_be_sealed(&mut parent).await;
    }

    // The administrator puts the right PCR0 into the policy: the next Configure (the
    // parent retries with backoff) gets the enclave Ready.
    let pcr0_hex = hex::encode(&attestation::pcrs_from_digest(PCR_DIGEST)[&0]);
    world
        .admin()
        .put_key_policy()
        .key_id(&world.kms_key_arn)
        .policy(enclave_key_policy(&pcr0_hex).to_string())
        .send()
        .await
        .unwrap();
    let configured = parent
        .call(Request::Configure {
            kms: world.kms_config(),
            dek_cache: CACHE,
        })
        .await;
    assert_eq!(configured, Ok(ResponseBody::Configured));
    assert_eq!(parent.state().await, EnclaveState::Ready);
    drop(parent);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_credentials_while_ready_and_refuses_another_key() {
    let world = World::start().await;
    let mut parent = world.connect().await;
    // No data-key caching: every signature is a KMS Decrypt with the current client.
    let cache = DekCachePolicy {
        ttl_secs: 300,
        max_uses: 0,
    };
    let configured = parent
        .call(Request::Configure {
            kms: world.kms_config(),
            dek_cache: cache,
        })
        .await;
    assert_eq!(configured, Ok(ResponseBody::Configured));
    let ring = parent.create_keyring("rotating", 1).await;
    let (record, policy_v1) = parent
        .generate(Algorithm::Secp256k1, &evm_policy(), &ring)
        .await;
    let set = parent
        .set_policy(Request::SetPolicy {
            record: record.clone(),
            keyring: ring.clone(),
            current: policy_v1.clone(),
            policy_json: evm_policy().replace("[1]", "[1,8453]"),
            approval: None,
        })
        .await;
    let Ok(policy_v2) = set else {
        panic!("{set:?}");
    };

    // The instance role's credentials rotated: the parent re-sends Configure, on a new
    // connection, with the same region, endpoint and key.
    let mut reconnected = world.connect().await;
    let mut fresh = world.kms_config();
    fresh.credentials = Credentials {
        access_key_id: "AKIDROTATED".into(),
        secret_access_key: "secret-2".into(),
        session_token: Some("token-2".into()),
    };
    let refreshed = reconnected
        .call(Request::Configure {
            kms: fresh.clone(),
            dek_cache: cache,
        })
        .await;
    assert_eq!(refreshed, Ok(ResponseBody::Configured));
    assert_eq!(reconnected.state().await, EnclaveState::Ready);
    let signed = reconnected
        .sign(
            &record,
            &policy_v2,
            &ring,
            PayloadKind::EvmTransaction,
            eip1559(8453, DEST, 5),
        )
        .await;
    assert!(matches!(signed, Ok(SignOutput::Evm { .. })), "{signed:?}");
    // The policy floor survived the refresh: version 1 is still a rollback.
    let rolled_back = reconnected
        .sign(
            &record,
            &policy_v1,
            &ring,
            PayloadKind::EvmTransaction,
            eip1559(1, DEST, 5),
        )
        .await;
    assert_eq!(rolled_back, Err(WireError::SealedStateInvalid));

    // The parent may not re-point the running enclave, not even with new credentials.
    let other_key = create_enclave_key(
        &world.admin(),
        &hex::encode(&attestation::pcrs_from_digest(PCR_DIGEST)[&0]),
    )
    .await;
    let mut retarget = fresh.clone();
    retarget.kms_key_id = other_key;
    retarget.credentials.access_key_id = "AKIDTHIRD".into();
    let refused = reconnected
        .call(Request::Configure {
            kms: retarget,
            dek_cache: cache,
        })
        .await;
    assert_eq!(refused, Err(WireError::AlreadyConfigured));
    // Still serving the original key, on the first connection too.
    let signed = parent
        .sign(
            &record,
            &policy_v2,
            &ring,
            PayloadKind::EvmTransaction,
            eip1559(1, DEST, 6),
        )
        .await;
    assert!(matches!(signed, Ok(SignOutput::Evm { .. })), "{signed:?}");

    drop(parent);
    drop(reconnected);
    world.stop().await;
}

/// The attacker's KMS: another kms-sim, with its own TLS CA and state, that accepts the
/// simulation's attestation documents and holds a key of the attacker's. Were the
/// enclave to use it, the attacker would choose (and know) every data key.
struct FakeKms {
    port: u16,
    key_arn: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeKms {
    async fn start(world: &World, tcp: tokio::net::TcpListener, name: &str) -> Self {
        let port = tcp.local_addr().unwrap().port();
        let dir = world.dir.path().join(name);
        let (stop, task, root) = start_kms_sim(
            tcp,
            dir.join("state"),
            world.dir.path().join("root.pem"),
            dir.join("ca"),
        )
        .await;
        assert_ne!(root, world.tls_root_pem, "the fake has a CA of its own");
        let pcr0 = hex::encode(&attestation::pcrs_from_digest(PCR_DIGEST)[&0]);
        let key_arn = create_enclave_key(&admin_client(port, &root), &pcr0).await;
        Self {
            port,
            key_arn,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

/// Binds 127.0.0.1:`port` again once its previous listener is gone.
async fn rebind(port: u16) -> tokio::net::TcpListener {
    for _ in 0..200 {
        if let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            return l;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("port {port} stayed busy");
}

const CACHE: DekCachePolicy = DekCachePolicy {
    ttl_secs: 60,
    max_uses: 10,
};

/// No keyring and no key can be made: nothing can be sealed.
async fn assert_nothing_can_be_sealed(parent: &mut Parent) {
    let r = parent
        .call(Request::CreateKeyring {
            keyring: "main".into(),
            epoch: 1,
        })
        .await;
    assert_eq!(r, Err(WireError::NotReady));
    assert_ne!(parent.state().await, EnclaveState::Ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_a_fake_kms_that_configures_a_fresh_enclave_first() {
    let world = World::start().await;
    let fake_tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = FakeKms::start(&world, fake_tcp, "fake").await;
    let fake_endpoint = format!("https://127.0.0.1:{}", fake.port);

    // The attacker connects to the freshly started enclave before the parent.
    let mut attacker = world.connect().await;
    let mut everything_fake = world.kms_config();
    everything_fake.kms_key_id = fake.key_arn.clone();
    everything_fake.endpoint_url = Some(fake_endpoint.clone());
    everything_fake.credentials.access_key_id = "AKIDATTACKER".into();
    let mut fake_endpoint_only = world.kms_config();
    fake_endpoint_only.endpoint_url = Some(fake_endpoint.clone());
    let mut plain_http = world.kms_config();
    plain_http.endpoint_url = Some(format!("http://127.0.0.1:{}", world.kms_port));
    let mut fake_key_only = world.kms_config();
    fake_key_only.kms_key_id = fake.key_arn.clone();
    let mut other_region = world.kms_config();
    other_region.region = "eu-west-1".into();
    for (what, kms) in [
        ("kms_key_id", everything_fake),
        ("endpoint_url", fake_endpoint_only),
        ("endpoint_url", plain_http),
        ("kms_key_id", fake_key_only),
        ("region", other_region),
    ] {
        let r = attacker
            .call(Request::Configure {
                kms,
                dek_cache: CACHE,
            })
            .await;
        assert!(
            matches!(&r, Err(WireError::BadRequest { message }) if message.contains(what)),
            "{what}: {r:?}"
        );
        assert_eq!(attacker.state().await, EnclaveState::Booting, "{what}");
        assert_nothing_can_be_sealed(&mut attacker).await;
    }

    // The honest parent configures it: keys are sealed under kms-sim's data keys.
    let mut parent = world.connect().await;
    let configured = parent
        .call(Request::Configure {
            kms: world.kms_config(),
            dek_cache: CACHE,
        })
        .await;
    assert_eq!(configured, Ok(ResponseBody::Configured));
    // Status reports the target (no credentials), for the parent to compare.
    let Ok(ResponseBody::Status(status)) = parent.call(Request::Status).await else {
        panic!("Status");
    };
    assert_eq!(status.kms_target, Some(world.kms_config().target()));
    let created = parent
        .call(Request::CreateKeyring {
            keyring: "main".into(),
            epoch: 1,
        })
        .await;
    assert!(
        matches!(created, Ok(ResponseBody::KeyringCreated { .. })),
        "{created:?}"
    );
    drop((attacker, parent));
    fake.stop().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_a_fake_kms_on_kms_sims_port_after_it_stopped() {
    let mut world = World::start().await;
    // kms-sim stops; the attacker's KMS takes over its port, the pinned endpoint.
    world.stop_kms().await;
    let port = world.kms_port;
    let fake = FakeKms::start(&world, rebind(port).await, "fake").await;
    assert_eq!(fake.port, port);

    // It races the parent with exactly the pinned settings: the pin passes, the TLS
    // handshake does not (its certificate is not from the kms-sim CA).
    let mut attacker = world.connect().await;
    let mut kms = world.kms_config();
    kms.credentials.access_key_id = "AKIDATTACKER".into();
    let r = attacker
        .call(Request::Configure {
            kms,
            dek_cache: CACHE,
        })
        .await;
    match &r {
        Err(WireError::Kms { code, message }) => {
            assert_eq!(code, "RequestFailed", "{message}");
            assert!(
                message.contains("certificate") || message.contains("UnknownIssuer"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(attacker.state().await, EnclaveState::Configured);
    assert_nothing_can_be_sealed(&mut attacker).await;

    // The real kms-sim comes back on its port: the honest Configure gets the enclave
    // Ready, and it works.
    fake.stop().await;
    let (stop, task, root) = start_kms_sim(
        rebind(port).await,
        world.dir.path().join("kms-state"),
        world.dir.path().join("root.pem"),
        world.dir.path().join("ca"),
    )
    .await;
    assert_eq!(root, world.tls_root_pem);
    world.kms_stop = Some(stop);
    world.kms_task = Some(task);
    let mut parent = world.connect().await;
    let configured = parent
        .call(Request::Configure {
            kms: world.kms_config(),
            dek_cache: CACHE,
        })
        .await;
    assert_eq!(configured, Ok(ResponseBody::Configured));
    let created = parent
        .call(Request::CreateKeyring {
            keyring: "main".into(),
            epoch: 1,
        })
        .await;
    assert!(
        matches!(created, Ok(ResponseBody::KeyringCreated { .. })),
        "{created:?}"
    );
    drop((attacker, parent));
    world.stop().await;
}

/// Runs the enclave binary with `args`; its exit status and stderr.
fn run_enclave_binary(args: &[&str]) -> (std::process::ExitStatus, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ekms-enclave"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn rejects_starting_on_nitro_without_a_key_arn() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("unix:{}", dir.path().join("e.sock").display());
    let (status, stderr) = run_enclave_binary(&["--nsm", "nitro", "--listen", &listen]);
    assert!(!status.success());
    assert!(stderr.contains("--kms-key-arn is required"), "{stderr}");
    // An alias or a foreign endpoint is no pin either.
    let (status, stderr) = run_enclave_binary(&[
        "--nsm",
        "nitro",
        "--listen",
        &listen,
        "--kms-key-arn",
        "alias/ekms",
    ]);
    assert!(!status.success());
    assert!(stderr.contains("full key ARN"), "{stderr}");
    let (status, stderr) = run_enclave_binary(&[
        "--nsm",
        "nitro",
        "--listen",
        &listen,
        "--kms-key-arn",
        "arn:aws:kms:us-east-1:111122223333:key/k",
        "--kms-endpoint",
        "https://127.0.0.1:4566",
    ]);
    assert!(!status.success());
    assert!(stderr.contains("regional KMS endpoint"), "{stderr}");
    assert!(!dir.path().join("e.sock").exists());
}

#[test]
fn rejects_starting_a_simulation_without_the_pin_or_the_kms_ca() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("unix:{}", dir.path().join("e.sock").display());
    let ca_dir = dir.path().join("ca");
    let ca = ca_dir.to_str().unwrap();
    let arn = "arn:aws:kms:us-east-1:111122223333:key/k";
    let base = [
        "--nsm",
        "simulation",
        "--listen",
        &listen,
        "--sim-ca-dir",
        ca,
    ];
    let (status, stderr) = run_enclave_binary(&base);
    assert!(!status.success());
    assert!(stderr.contains("--kms-key-arn is required"), "{stderr}");
    let mut no_endpoint = base.to_vec();
    no_endpoint.extend(["--kms-key-arn", arn]);
    let (status, stderr) = run_enclave_binary(&no_endpoint);
    assert!(!status.success());
    assert!(stderr.contains("--kms-endpoint is required"), "{stderr}");
    let mut no_ca = no_endpoint.clone();
    no_ca.extend(["--kms-endpoint", "https://127.0.0.1:4566"]);
    let (status, stderr) = run_enclave_binary(&no_ca);
    assert!(!status.success());
    assert!(
        stderr.contains("--danger-sim-kms-ca is required"),
        "{stderr}"
    );
    let mut plain = no_endpoint.clone();
    plain.extend(["--kms-endpoint", "http://127.0.0.1:4566"]);
    let (status, stderr) = run_enclave_binary(&plain);
    assert!(!status.success());
    assert!(stderr.contains("https://"), "{stderr}");
    // Nothing was started: no socket, no CA made.
    assert!(!dir.path().join("e.sock").exists());
    assert!(!ca_dir.exists());
}

/// Issue 6 item 7: policy floors are keyed by the sealed record, not by a key id. (The
/// attack run's version, `GenerateKey` naming the victim's key id, is no longer possible
/// at all: the enclave chooses key ids.) A second key, whose policy is then set three
/// times (floor 4 for that record), leaves the victim's version-1 policy usable; the
/// attacker's own record still refuses its rolled-back version 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_nothing_of_a_victim_whose_key_id_another_key_reuses() {
    let world = World::start().await;
    let mut parent = world.connect().await;
    let configured = parent
        .call(Request::Configure {
            kms: world.kms_config(),
            dek_cache: DekCachePolicy {
                ttl_secs: 300,
                max_uses: 1000,
            },
        })
        .await;
    assert_eq!(configured, Ok(ResponseBody::Configured));
    let ring = parent.create_keyring("floors", 1).await;
    let (victim, victim_v1) = parent
        .generate(Algorithm::Secp256k1, &evm_policy(), &ring)
        .await;
    parent
        .sign(
            &victim,
            &victim_v1,
            &ring,
            PayloadKind::EvmTransaction,
            eip1559(1, DEST, 1),
        )
        .await
        .unwrap();

    // The attacker: another key (the enclave chooses key ids, so it cannot even share
    // the victim's), then SetPolicy ×3 on its own record.
    let (evil, evil_v1) = parent
        .generate(Algorithm::Secp256k1, &evm_policy(), &ring)
        .await;
    assert_ne!(evil.key_id, victim.key_id, "key ids are the enclave's");
    let mut current = evil_v1.clone();
    for _ in 0..3 {
        let set = parent
            .set_policy(Request::SetPolicy {
                record: evil.clone(),
                keyring: ring.clone(),
                current: current.clone(),
                policy_json: evm_policy(),
                approval: None,
            })
            .await;
        let Ok(policy) = set else {
            panic!("{set:?}");
        };
        current = policy;
    }
    assert_eq!(current.version, 4);

    // The victim's floor is untouched: its version 1 still signs.
    parent
        .sign(
            &victim,
            &victim_v1,
            &ring,
            PayloadKind::EvmTransaction,
            eip1559(1, DEST, 2),
        )
        .await
        .unwrap();
    // The attacker's record has its own floor: its version 1 is a rollback.
    let rolled_back = parent
        .sign(
            &evil,
            &evil_v1,
            &ring,
            PayloadKind::EvmTransaction,
            eip1559(1, DEST, 3),
        )
        .await;
    assert_eq!(rolled_back, Err(WireError::SealedStateInvalid));

    drop(parent);
    world.stop().await;
}

/// Attack: a host process configures a booting enclave first with credentials crafted
/// to break the KMS client (CR/LF, NUL, non-ASCII in what becomes header values).
/// Before the fix the SDK's signer panicked (`HeaderValue::from_str(..).unwrap()`) in
/// the request task and the `Configure` was never answered. Each is now refused with an
/// error, the enclave stays unready, and the parent's honest `Configure` makes it Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_malformed_credentials_in_configure() {
    let world = World::start().await;
    let mut attacker = world.connect().await;
    let dek_cache = DekCachePolicy {
        ttl_secs: 60,
        max_uses: 10,
    };
    let bad = [
        ("AKID\r\nX-Amz-Target: TrentService.Decrypt", "s", None),
        ("AKID", "s\r\n\r\nGET / HTTP/1.1", Some("t\r\nHost: evil")),
        ("AK\0ID", "s\0", Some("\0")),
        ("AKID", "s", Some("t\u{85}")),
    ];
    for (akid, secret, token) in bad {
        let mut kms = world.kms_config();
        kms.credentials = Credentials {
            access_key_id: akid.into(),
            secret_access_key: secret.into(),
            session_token: token.map(str::to_owned),
        };
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            attacker.call(Request::Configure { kms, dek_cache }),
        )
        .await
        .unwrap_or_else(|_| panic!("no answer to Configure with {akid:?}"));
        assert!(r.is_err(), "{akid:?}: {r:?}");
        assert_ne!(attacker.state().await, EnclaveState::Ready);
    }
    let mut parent = world.connect().await;
    parent
        .call(Request::Configure {
            kms: world.kms_config(),
            dek_cache,
        })
        .await
        .unwrap();
    assert_eq!(parent.state().await, EnclaveState::Ready);
    world.stop().await;
}

// ---- owners, checkpoints, the audit chain (issue 7) -------------------------------

/// An EIP-191 owner's key and its record text.
fn eip191_owner(byte: u8) -> (k256::ecdsa::SigningKey, String) {
    use sha3::Digest as _;
    let key = k256::ecdsa::SigningKey::from_slice(&[byte; 32]).unwrap();
    let point = key.verifying_key().to_sec1_point(false);
    let address = &sha3::Keccak256::digest(&point.as_bytes()[1..])[12..];
    (key, format!("eip191:0x{}", hex::encode(address)))
}

/// The owner's approval of `action` on `key_id` making `version` with `policy_json`
/// (canonical), signed with EIP-191 `personal_sign`.
fn approve(
    owner: &k256::ecdsa::SigningKey,
    action: ekms_shared::owner::OwnerAction,
    key_id: &str,
    version: u64,
    policy_json: &str,
) -> ekms_shared::OwnerApproval {
    use ekms_shared::owner::{eip191_hash, policy_sha256, Authorization};
    let expires_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let message = Authorization {
        action,
        key_id: key_id.into(),
        version,
        policy_sha256: policy_sha256(policy_json),
        expires_at,
    }
    .message();
    let (sig, recid) = owner.sign_prehash_recoverable(&eip191_hash(message.as_bytes()));
    let mut signature = sig.to_bytes().to_vec();
    signature.push(27 + recid.to_byte());
    ekms_shared::OwnerApproval {
        version,
        expires_at,
        signature,
    }
}

/// The canonical form of `json` (what the enclave MACs and the owner hashes).
fn canonical(json: &str) -> String {
    ekms_signer::Policy::parse(json).unwrap().canonical_json()
}

/// Everything a restarted enclave needs from its parent.
struct Kept {
    checkpoint: ekms_shared::SealedCheckpoint,
    last_audit: ekms_shared::audit::SignedAuditRecord,
}

impl Parent {
    /// Phase 1 and 2 of a change; the checkpoint and the audit record of the commit.
    async fn two_phase(
        &mut self,
        request: Request,
    ) -> Result<(Option<SealedPolicy>, Kept), WireError> {
        let (checkpoint, policy) = match self.call(request).await? {
            ResponseBody::CheckpointPending { checkpoint, policy } => (checkpoint, policy),
            ResponseBody::Refused { error, .. } => return Err(error),
            other => panic!("{other:?}"),
        };
        match self
            .call(Request::Commit {
                seq: checkpoint.seq,
            })
            .await?
        {
            ResponseBody::Committed { audit, .. } => Ok((
                policy,
                Kept {
                    checkpoint,
                    last_audit: audit,
                },
            )),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn restores_state_and_refuses_forged_checkpoints() {
    use ekms_shared::owner::OwnerAction;
    let mut world = World::start().await;
    let mut parent = world.connect().await;
    let cache = DekCachePolicy {
        ttl_secs: 300,
        max_uses: 1000,
    };
    let configured = parent
        .call(Request::Configure {
            kms: world.kms_config(),
            dek_cache: cache,
        })
        .await;
    assert_eq!(configured, Ok(ResponseBody::Configured));
    let ring = parent
        .call(Request::CreateKeyring {
            keyring: "owners".into(),
            epoch: 1,
        })
        .await;
    let Ok(ResponseBody::KeyringCreated { dek_ciphertext, .. }) = ring else {
        panic!("{ring:?}");
    };
    let ring = KeyringRef {
        keyring: "owners".into(),
        epoch: 1,
        dek_ciphertext,
    };
    let (_, mut kept) = parent
        .two_phase(Request::Restore {
            keyring: ring.clone(),
            checkpoint: None,
            last_audit: None,
        })
        .await
        .unwrap();
    let boot = kept.last_audit.verify().unwrap();
    assert_eq!((boot.seq, boot.prev_hash.clone()), (1, "00".repeat(32)));

    // An owned key: a change without the owner, or signed by another key, is refused
    // (and recorded); with the owner's signature it applies.
    let (owner, owner_text) = eip191_owner(0x31);
    let (other, _) = eip191_owner(0x32);
    let generated = parent
        .call(Request::GenerateKey {
            algorithm: Algorithm::Secp256k1,
            owner: Some(owner_text.clone()),
            label: None,
            policy_json: evm_policy(),
            keyring: ring.clone(),
        })
        .await;
    let Ok(ResponseBody::KeyGenerated {
        record, policy: v1, ..
    }) = generated
    else {
        panic!("{generated:?}");
    };
    assert_eq!(record.owner.as_deref(), Some(owner_text.as_str()));
    let loose = canonical(&evm_policy().replace("[1]", "[1,8453]"));
    let set = |approval| Request::SetPolicy {
        record: record.clone(),
        keyring: ring.clone(),
        current: v1.clone(),
        policy_json: loose.clone(),
        approval,
    };
    for approval in [
        None,
        Some(approve(
            &other,
            OwnerAction::SetPolicy,
            &record.key_id,
            2,
            &loose,
        )),
        Some(approve(
            &owner,
            OwnerAction::SetPolicy,
            &record.key_id,
            3,
            &loose,
        )),
        Some(approve(
            &owner,
            OwnerAction::Enable,
            &record.key_id,
            2,
            &loose,
        )),
        Some(approve(
            &owner,
            OwnerAction::SetPolicy,
            &record.key_id,
            2,
            &evm_policy(),
        )),
    ] {
        let r = parent.call(set(approval)).await;
        assert!(
            matches!(
                &r,
                Ok(ResponseBody::Refused {
                    error: WireError::OwnerAuthorizationInvalid { .. },
                    ..
                })
            ),
            "{r:?}"
        );
    }
    let good = approve(&owner, OwnerAction::SetPolicy, &record.key_id, 2, &loose);
    let (v2, _) = parent.two_phase(set(Some(good))).await.unwrap();
    let v2 = v2.unwrap();
    assert_eq!(v2.version, 2);
    // Emergency stop: no owner needed.
    let (v3, k) = parent
        .two_phase(Request::DisableKey {
            record: record.clone(),
            keyring: ring.clone(),
            current: v2.clone(),
        })
        .await
        .unwrap();
    let v3 = v3.unwrap();
    kept = k;
    let tx = eip1559(8453, DEST, 1);
    let disabled = parent
        .sign(&record, &v3, &ring, PayloadKind::EvmTransaction, tx.clone())
        .await;
    assert_eq!(disabled, Err(WireError::KeyDisabled));

    // The enclave restarts: it remembers nothing but what the parent hands back.
    drop(parent);
    world.restart_enclave().await;
    let mut parent = world.connect().await;
    let configured = parent
        .call(Request::Configure {
            kms: world.kms_config(),
            dek_cache: cache,
        })
        .await;
    assert_eq!(configured, Ok(ResponseBody::Configured));
    // Key requests wait for Restore.
    let early = parent
        .sign(&record, &v3, &ring, PayloadKind::EvmTransaction, tx.clone())
        .await;
    assert_eq!(early, Err(WireError::NotReady));
    // A forged checkpoint (one byte of its body, or its keyring), an audit record the
    // checkpoint contradicts, or records without a checkpoint: refused.
    let mut forged = kept.checkpoint.clone();
    let last = forged.body.len() - 1;
    forged.body[last] ^= 1;
    let mut other_ring = kept.checkpoint.clone();
    other_ring.epoch = 2;
    let mut foreign = kept.last_audit.clone();
    foreign.audit_key = [9; 32];
    let restores = [
        (Some(forged), Some(kept.last_audit.clone())),
        (Some(other_ring), Some(kept.last_audit.clone())),
        (Some(kept.checkpoint.clone()), Some(foreign)),
        (None, Some(kept.last_audit.clone())),
    ];
    for (checkpoint, last_audit) in restores {
        let r = parent
            .call(Request::Restore {
                keyring: ring.clone(),
                checkpoint,
                last_audit,
            })
            .await;
        assert_eq!(r, Err(WireError::SealedStateInvalid));
    }
    let (_, after) = parent
        .two_phase(Request::Restore {
            keyring: ring.clone(),
            checkpoint: Some(kept.checkpoint.clone()),
            last_audit: Some(kept.last_audit.clone()),
        })
        .await
        .unwrap();
    // The chain goes on from the last record, under the new boot's key.
    let boot = after.last_audit.verify().unwrap();
    let before = kept.last_audit.verify().unwrap();
    assert_eq!(boot.seq, before.seq + 1);
    assert_eq!(boot.prev_hash, hex::encode(kept.last_audit.record_sha256()));
    assert_ne!(after.last_audit.audit_key, kept.last_audit.audit_key);
    // The disable survived; the pre-disable row (valid MAC) is a rollback.
    let disabled = parent
        .sign(&record, &v3, &ring, PayloadKind::EvmTransaction, tx.clone())
        .await;
    assert_eq!(disabled, Err(WireError::KeyDisabled));
    let rolled_back = parent
        .sign(&record, &v2, &ring, PayloadKind::EvmTransaction, tx.clone())
        .await;
    assert_eq!(rolled_back, Err(WireError::SealedStateInvalid));
    // Re-enable: only with the owner's `enable` authorization.
    let enabled_json = canonical(
        &v3.policy_json
            .replace("\"enabled\":false", "\"enabled\":true"),
    );
    let enable = |approval| Request::EnableKey {
        record: record.clone(),
        keyring: ring.clone(),
        current: v3.clone(),
        approval,
    };
    let refused = parent.call(enable(None)).await;
    assert!(
        matches!(
            refused,
            Ok(ResponseBody::Refused {
                error: WireError::OwnerAuthorizationInvalid { .. },
                ..
            })
        ),
        "{refused:?}"
    );
    let approval = approve(
        &owner,
        OwnerAction::Enable,
        &record.key_id,
        4,
        &enabled_json,
    );
    let (v4, _) = parent.two_phase(enable(Some(approval))).await.unwrap();
    let v4 = v4.unwrap();
    assert_eq!(v4.policy_json, enabled_json);
    parent
        .sign(&record, &v4, &ring, PayloadKind::EvmTransaction, tx)
        .await
        .unwrap();
    drop(parent);
    world.stop().await;
}

// ---- attack run on issue 7 (wt-attack) ---------------------------------------------

/// Configures a fresh enclave, creates keyring `name` and restores from nothing.
async fn ready_with_ring(world: &World, name: &str) -> (Parent, KeyringRef) {
    let mut parent = world.connect().await;
    let configured = parent
        .call(Request::Configure {
            kms: world.kms_config(),
            dek_cache: DekCachePolicy {
                ttl_secs: 300,
                max_uses: 1000,
            },
        })
        .await;
    assert_eq!(configured, Ok(ResponseBody::Configured));
    let ring = parent.create_keyring(name, 1).await;
    (parent, ring)
}

/// A host attacker keeps the first phase of an owner-authorized change (a sealed policy
/// at version N+1, valid MAC) and never commits it; once the enclave drops the pending
/// change, it has the key disabled from version N (the operator's emergency stop,
/// committed and recorded: version N+1, disabled). The stashed owner policy is also
/// version N+1, so it passed the floor and signed: a committed disable undone without
/// a restart or a replayed checkpoint, while the chain shows the disable in force. Now
/// the first phase uses the version up (raises the floor): the disable from version N
/// is refused, and one from the stashed version makes N+2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_disable_holds_against_an_uncommitted_policy_of_the_same_version() {
    use ekms_shared::owner::OwnerAction;
    let world = World::start().await;
    let (mut parent, ring) = ready_with_ring(&world, "stash").await;
    let (owner, owner_text) = eip191_owner(0x41);
    let generated = parent
        .call(Request::GenerateKey {
            algorithm: Algorithm::Secp256k1,
            owner: Some(owner_text),
            label: None,
            policy_json: evm_policy(),
            keyring: ring.clone(),
        })
        .await;
    let Ok(ResponseBody::KeyGenerated {
        record, policy: v1, ..
    }) = generated
    else {
        panic!("{generated:?}");
    };
    // The owner authorizes a change (here to a looser policy; any enabled one works).
    let loose = canonical(&evm_policy().replace("[1]", "[1,8453]"));
    let approval = approve(&owner, OwnerAction::SetPolicy, &record.key_id, 2, &loose);
    let pending = parent
        .call(Request::SetPolicy {
            record: record.clone(),
            keyring: ring.clone(),
            current: v1.clone(),
            policy_json: loose.clone(),
            approval: Some(approval),
        })
        .await;
    let Ok(ResponseBody::CheckpointPending {
        policy: Some(stashed),
        ..
    }) = pending
    else {
        panic!("{pending:?}");
    };
    assert_eq!(stashed.version, 2);
    // No Commit: the enclave drops the change after PENDING_CHECKPOINT_SECS.
    tokio::time::sleep(std::time::Duration::from_secs(
        ekms_shared::PENDING_CHECKPOINT_SECS + 2,
    ))
    .await;
    // The emergency stop, from the row the host still shows as current (version 1).
    // Refused once version 2 is used up; then it can only be made from version 2.
    let from_v1 = parent
        .two_phase(Request::DisableKey {
            record: record.clone(),
            keyring: ring.clone(),
            current: v1.clone(),
        })
        .await;
    let disabled = match from_v1 {
        Ok((disabled, _)) => disabled.unwrap(),
        Err(WireError::SealedStateInvalid) => {
            let (disabled, _) = parent
                .two_phase(Request::DisableKey {
                    record: record.clone(),
                    keyring: ring.clone(),
                    current: stashed.clone(),
                })
                .await
                .unwrap();
            let disabled = disabled.unwrap();
            assert_eq!(disabled.version, 3);
            disabled
        }
        Err(other) => panic!("{other:?}"),
    };
    let tx = eip1559(1, DEST, 1);
    let r = parent
        .sign(
            &record,
            &disabled,
            &ring,
            PayloadKind::EvmTransaction,
            tx.clone(),
        )
        .await;
    assert_eq!(r, Err(WireError::KeyDisabled));
    // The disabled key must not sign under the stashed, never-committed version 2.
    let r = parent
        .sign(&record, &stashed, &ring, PayloadKind::EvmTransaction, tx)
        .await;
    assert!(
        matches!(r, Err(WireError::SealedStateInvalid)),
        "a committed disable was bypassed by a stashed policy of the same version: {r:?}"
    );
    drop(parent);
    world.stop().await;
}

/// The initial policy of an owned key is chosen by whoever sends `GenerateKey` (the
/// parent), is never signed by the owner, and nothing the enclave signs at creation
/// names it: the statement (`ekms keys verify`) and the `create_key` audit record name
/// only its version. A host that swaps the requested policy for a looser one at
/// creation cannot be caught by the client. The statement must commit to the policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_statement_names_the_initial_policy() {
    let world = World::start().await;
    let (mut parent, ring) = ready_with_ring(&world, "initial").await;
    let (_, owner_text) = eip191_owner(0x42);
    let generated = parent
        .call(Request::GenerateKey {
            algorithm: Algorithm::Secp256k1,
            owner: Some(owner_text),
            label: None,
            policy_json: evm_policy(),
            keyring: ring.clone(),
        })
        .await;
    let Ok(ResponseBody::KeyGenerated {
        statement,
        policy,
        audit,
        ..
    }) = generated
    else {
        panic!("{generated:?}");
    };
    let hash = hex::encode(ekms_shared::owner::policy_sha256(&policy.policy_json));
    let record = audit.verify().unwrap();
    assert!(
        statement.statement.contains(&hash)
            || serde_json::to_string(&record).unwrap().contains(&hash),
        "nothing the enclave signed at creation names the initial policy: {} / {record:?}",
        statement.statement
    );
    drop(parent);
    world.stop().await;
}

async fn metrics(parent: &mut Parent) -> ekms_shared::EnclaveMetrics {
    match parent.call(Request::Metrics).await {
        Ok(ResponseBody::Metrics(m)) => *m,
        other => panic!("{other:?}"),
    }
}

/// Issue 11 item 5: `Metrics` is answered before `Configure`, and a signature, a
/// refusal, a DEK cache hit or miss and every KMS call move exactly their counters;
/// no label names a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_signatures_refusals_cache_and_kms_calls() {
    use ekms_shared::metrics::{KmsOperation, RefusalCount, SignatureCount};
    let world = World::start().await;
    let mut booting = world.connect().await;
    let first = metrics(&mut booting).await;
    assert!(first.signatures.is_empty() && first.refusals.is_empty() && first.kms.is_empty());
    assert_eq!((first.dek_cache_hits, first.dek_cache_misses), (0, 0));

    // Configure (readiness GenerateDataKey) and CreateKeyring (GenerateDataKey).
    let (mut parent, ring) = ready_with_ring(&world, "metrics").await;
    parent.restore(&ring).await;
    let (record, policy) = parent
        .generate(Algorithm::Secp256k1, &evm_policy(), &ring)
        .await;
    let before = metrics(&mut parent).await;
    let gdk = before
        .kms
        .iter()
        .find(|k| k.operation == KmsOperation::GenerateDataKey)
        .unwrap();
    assert_eq!(gdk.requests, 2, "{before:?}");
    assert_eq!(gdk.duration_buckets.iter().sum::<u64>(), 2);
    assert!(before.kms_errors.is_empty());

    let signed = parent.sign_transfer(&record, &policy, &ring, 1_000).await;
    assert!(signed.is_ok(), "{signed:?}");
    let refused = parent
        .sign_transfer(&record, &policy, &ring, 2_000_000_000_000_000_000)
        .await;
    let Err(WireError::PolicyDenied { rule, .. }) = refused else {
        panic!("{refused:?}")
    };
    let after = metrics(&mut parent).await;
    assert_eq!(
        after.signatures,
        [SignatureCount {
            kind: PayloadKind::EvmTransaction,
            count: 1
        }]
    );
    assert_eq!(
        after.refusals,
        [RefusalCount {
            kind: PayloadKind::EvmTransaction,
            rule,
            count: 1
        }]
    );
    // Two signing requests: one data key fetch at most, the rest from the cache.
    let looked_up = |m: &ekms_shared::EnclaveMetrics| m.dek_cache_hits + m.dek_cache_misses;
    assert_eq!(looked_up(&after) - looked_up(&before), 2);
    let decrypts = |m: &ekms_shared::EnclaveMetrics| {
        m.kms
            .iter()
            .find(|k| k.operation == KmsOperation::Decrypt)
            .map_or(0, |k| k.requests)
    };
    assert_eq!(
        decrypts(&after) - decrypts(&before),
        after.dek_cache_misses - before.dek_cache_misses + after.dek_cache_refreshes
            - before.dek_cache_refreshes
    );
    let text = format!("{after:?}");
    assert!(
        !text.contains(&record.key_id) && !text.contains("metrics\""),
        "{text}"
    );

    // Through the cache's last tenth (1,000 uses): one request fetches the next data key
    // ahead of the entry's end (a refresh), so no request finds the cache empty.
    for _ in 0..1000 {
        let signed = parent.sign_transfer(&record, &policy, &ring, 1_000).await;
        assert!(signed.is_ok(), "{signed:?}");
    }
    let last = metrics(&mut parent).await;
    assert_eq!(last.dek_cache_misses, after.dek_cache_misses, "{last:?}");
    assert_eq!(last.dek_cache_refreshes - after.dek_cache_refreshes, 1);
    assert_eq!(
        decrypts(&last) - decrypts(&after),
        1,
        "the refresh is the only Decrypt"
    );

    drop((booting, parent));
    world.stop().await;
}
