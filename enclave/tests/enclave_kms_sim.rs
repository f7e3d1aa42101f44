//! Integration test of the enclave server with real framing over a temporary Unix
//! socket, a real simulated NSM, and the KMS emulator (`kms-sim`) running in-process
//! on 127.0.0.1:0 with a key policy gated on the simulated enclave's PCR0.
//!
//! Covers: Sign before Configure (NotReady), Configure (attested round trip → Ready),
//! a second identical Configure (a no-op), credentials refreshed by a Ready-state
//! Configure (signing goes on with a cold data-key cache, policy floors kept) and a
//! Ready-state Configure naming another key (AlreadyConfigured), CreateKeyring, GenerateKey for both
//! algorithms with policies, an EIP-1559 signature (recovered to the sealed public key),
//! a Solana transfer signature (verified with ed25519), policy denials, tampered
//! records and policies (SealedStateInvalid), SetPolicy, and `max_uses = 0`.
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
    _dir: tempfile::TempDir,
    kms_port: u16,
    kms_key_arn: String,
    socket: PathBuf,
    stops: Vec<oneshot::Sender<()>>,
    enclave_task: Option<tokio::task::JoinHandle<()>>,
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
        let config = kms_sim::Config::new(dir.path().join("kms-state"), Some(root));
        let (kms_stop, kms_stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            kms_sim::run(tcp, config, async {
                let _ = kms_stopped.await;
            })
            .await
            .unwrap();
        });
        let kms_key_arn = create_enclave_key(&admin_client(kms_port), &pcr0_hex).await;

        // The enclave server.
        let socket = dir.path().join("enclave.sock");
        let listener = Listener::bind(&Address::Unix(socket.clone()))
            .await
            .unwrap();
        let enclave = Arc::new(Enclave::new(Arc::new(nsm), Mode::Simulation).unwrap());
        let (enclave_stop, enclave_stopped) = oneshot::channel::<()>();
        let enclave_task = tokio::spawn(ekms_enclave::run(
            listener,
            enclave,
            Limits::default(),
            async {
                let _ = enclave_stopped.await;
            },
        ));
        Self {
            _dir: dir,
            kms_port,
            kms_key_arn,
            socket,
            stops: vec![kms_stop, enclave_stop],
            enclave_task: Some(enclave_task),
        }
    }

    fn kms_config(&self) -> KmsConfig {
        KmsConfig {
            region: "us-east-1".into(),
            endpoint_url: Some(format!("http://127.0.0.1:{}", self.kms_port)),
            kms_key_id: self.kms_key_arn.clone(),
            credentials: Credentials {
                access_key_id: "AKIDSIMULATION".into(),
                secret_access_key: "secret".into(),
                session_token: Some("token".into()),
            },
        }
    }

    async fn connect(&self) -> Parent {
        Parent {
            stream: UnixStream::connect(&self.socket).await.unwrap(),
            next_id: 1,
        }
    }

    async fn stop(mut self) {
        for s in self.stops.drain(..).rev() {
            let _ = s.send(());
        }
        if let Some(t) = self.enclave_task.take() {
            t.await.unwrap();
        }
        assert!(!self.socket.exists(), "socket file removed on shutdown");
    }
}

fn admin_client(port: u16) -> Client {
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .endpoint_url(format!("http://127.0.0.1:{port}"))
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
    let policy = serde_json::json!({
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
    });
    let created = client
        .create_key()
        .policy(policy.to_string())
        .send()
        .await
        .unwrap();
    created.key_metadata().unwrap().arn().unwrap().to_owned()
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

    async fn generate(
        &mut self,
        key_id: &str,
        algorithm: Algorithm,
        policy_json: &str,
        keyring: &KeyringRef,
    ) -> (SealedKeyRecord, SealedPolicy) {
        let answer = self
            .call(Request::GenerateKey {
                key_id: key_id.into(),
                algorithm,
                owner: Some("alice".into()),
                label: Some("test".into()),
                policy_json: policy_json.into(),
                keyring: keyring.clone(),
            })
            .await;
        match answer {
            Ok(ResponseBody::KeyGenerated { record, policy }) => (record, policy),
            other => panic!("{other:?}"),
        }
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
            ResponseBody::Signed(out) => out,
            other => panic!("{other:?}"),
        })
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

    // GenerateKey, both algorithms.
    let (evm_record, evm_policy_v1) = parent
        .generate("evm-1", Algorithm::Secp256k1, &evm_policy(), &main)
        .await;
    assert_eq!(evm_record.public_key.len(), 33);
    assert_eq!(evm_record.owner.as_deref(), Some("alice"));
    assert_eq!(evm_policy_v1.version, 1);
    let (sol_record, sol_policy) = parent
        .generate(
            "sol-1",
            Algorithm::Ed25519,
            &solana_policy(5_000_000),
            &main,
        )
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
        .call(Request::SetPolicy {
            record: evm_record.clone(),
            keyring: main.clone(),
            current: evm_policy_v1.clone(),
            policy_json: new_policy,
        })
        .await;
    let Ok(ResponseBody::PolicySet {
        policy: evm_policy_v2,
    }) = set
    else {
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
        .call(Request::SetPolicy {
            record: evm_record.clone(),
            keyring: main.clone(),
            current: evm_policy_v1.clone(),
            policy_json: evm_policy(),
        })
        .await;
    assert_eq!(rolled_back, Err(WireError::SealedStateInvalid));
    let refused = parent
        .call(Request::SetPolicy {
            record: evm_record.clone(),
            keyring: main.clone(),
            current: loosened,
            policy_json: evm_policy(),
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
    let Ok(ResponseBody::KeyringCreated {
        keyring,
        epoch,
        dek_ciphertext,
    }) = parent
        .call(Request::CreateKeyring {
            keyring: "nocache".into(),
            epoch: 3,
        })
        .await
    else {
        panic!("CreateKeyring");
    };
    let ring = KeyringRef {
        keyring,
        epoch,
        dek_ciphertext,
    };
    let (record, policy) = parent
        .generate("evm-2", Algorithm::Secp256k1, &evm_policy(), &ring)
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
            matches!(r.body, Ok(ResponseBody::Signed(SignOutput::Evm { .. }))),
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
async fn rejects_data_keys_for_an_enclave_of_another_image() {
    // The KMS key is pinned to another image's PCR0. Configure succeeds (GenerateRandom
    // is not gated by a key policy) but KMS refuses the data key.
    let world = World::start_pinned(b"another enclave image").await;
    let mut parent = world.connect().await;
    let configured = parent
        .call(Request::Configure {
            kms: world.kms_config(),
            dek_cache: DekCachePolicy {
                ttl_secs: 60,
                max_uses: 10,
            },
        })
        .await;
    assert_eq!(configured, Ok(ResponseBody::Configured));
    let r = parent
        .call(Request::CreateKeyring {
            keyring: "main".into(),
            epoch: 1,
        })
        .await;
    assert!(
        matches!(&r, Err(WireError::Kms { code, .. }) if code == "AccessDeniedException"),
        "{r:?}"
    );
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
    let Ok(ResponseBody::KeyringCreated {
        keyring,
        epoch,
        dek_ciphertext,
    }) = parent
        .call(Request::CreateKeyring {
            keyring: "rotating".into(),
            epoch: 1,
        })
        .await
    else {
        panic!("CreateKeyring");
    };
    let ring = KeyringRef {
        keyring,
        epoch,
        dek_ciphertext,
    };
    let (record, policy_v1) = parent
        .generate("evm-rot", Algorithm::Secp256k1, &evm_policy(), &ring)
        .await;
    let set = parent
        .call(Request::SetPolicy {
            record: record.clone(),
            keyring: ring.clone(),
            current: policy_v1.clone(),
            policy_json: evm_policy().replace("[1]", "[1,8453]"),
        })
        .await;
    let Ok(ResponseBody::PolicySet { policy: policy_v2 }) = set else {
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
        &admin_client(world.kms_port),
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
