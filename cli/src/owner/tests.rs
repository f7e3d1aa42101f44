//! Tests of owner keys and signatures: round trips through `Owner::verifies`, a
//! known EIP-191 vector, key-file parsing and the `--owner…` flags.

use super::*;
use clap::Parser as _;

const ETH_SECRET: &str = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";

fn key_file(dir: &tempfile::TempDir, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn solana_json(seed: [u8; 32]) -> String {
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let numbers: Vec<String> = seed
        .iter()
        .chain(key.verifying_key().as_bytes())
        .map(u8::to_string)
        .collect();
    format!("[{}]\n", numbers.join(","))
}

#[test]
fn eip191_signature_verifies_as_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = key_file(&dir, "k.hex", format!("  0x{ETH_SECRET}\n").as_bytes());
    let key = OwnerKey::load(&path, Some(OwnerType::Eip191)).unwrap();
    // The address of this well-known test key (web3.js docs).
    assert_eq!(
        key.owner().to_json(),
        OwnerJson::Eip191 {
            address: "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23".into()
        }
    );
    let message = b"enclave-kms owner authorization\naction: enable";
    let signature = key.sign(message);
    assert_eq!(signature.len(), 65);
    assert!(matches!(signature[64], 27 | 28));
    assert!(key.owner().verifies(message, &signature));
    assert!(!key.owner().verifies(b"other", &signature));
    let text = key.sign_text(message);
    assert_eq!(text.len(), 132);
    assert_eq!(hex::decode(&text[2..]).unwrap(), signature);
}

#[test]
fn eip191_signature_matches_a_known_personal_sign_vector() {
    // web3.js `eth.accounts.sign('Some data', key)` with the key above.
    let key = OwnerKey::parse(ETH_SECRET.as_bytes(), Some(OwnerType::Eip191)).unwrap();
    assert_eq!(
        key.sign_text(b"Some data"),
        "0xb91467e570a6466aa9e9876cbcd013baba02900b8979d43fe208a4a4f339f5fd\
         6007e74cd82e037b800186422fc2da167c747ef045e5d18a5f5d4300f8e1a029\
         1c"
    );
}

#[test]
fn ed25519_signatures_verify_from_keypair_and_seed_files() {
    let dir = tempfile::tempdir().unwrap();
    let pair = key_file(&dir, "id.json", solana_json([9; 32]).as_bytes());
    let seed = key_file(&dir, "seed.hex", hex::encode([9u8; 32]).as_bytes());
    let a = OwnerKey::load(&pair, None).unwrap();
    let b = OwnerKey::load(&seed, Some(OwnerType::Ed25519)).unwrap();
    assert_eq!(a.kind(), OwnerType::Ed25519);
    assert_eq!(a.owner(), b.owner());
    let message = b"exact bytes\n";
    let text = a.sign_text(message);
    let signature = bs58::decode(&text).into_vec().unwrap();
    assert!(a.owner().verifies(message, &signature));
    assert!(!a.owner().verifies(b"exact bytes", &signature));
    let OwnerJson::Ed25519 { public_key } = a.owner().to_json() else {
        panic!("not ed25519");
    };
    assert_eq!(
        bs58::decode(public_key).into_vec().unwrap(),
        ed25519_dalek::SigningKey::from_bytes(&[9; 32])
            .verifying_key()
            .to_bytes()
    );
}

#[test]
fn rejects_bad_key_files_without_quoting_them() {
    let mut mismatched = solana_json([9; 32]);
    mismatched = mismatched.replacen("[9,", "[8,", 1);
    let secret_like = format!("{}zz", &ETH_SECRET[..62]);
    let cases: Vec<(Vec<u8>, Option<OwnerType>)> = vec![
        (secret_like.clone().into_bytes(), Some(OwnerType::Eip191)),
        (
            ETH_SECRET.as_bytes()[..62].to_vec(),
            Some(OwnerType::Eip191),
        ),
        (ETH_SECRET.as_bytes().to_vec(), None),
        (vec![b'0'; 64], Some(OwnerType::Eip191)), // the zero scalar
        (b"f".repeat(64), Some(OwnerType::Eip191)), // above the group order
        (mismatched.into_bytes(), None),
        (solana_json([9; 32]).into_bytes(), Some(OwnerType::Eip191)),
        (b"[1,2,3]".to_vec(), None),
        (format!("[{}]", ["256"; 64].join(",")).into_bytes(), None),
        (format!("[{}]", ["1"; 65].join(",")).into_bytes(), None),
        (format!("[{}]", ["-1"; 64].join(",")).into_bytes(), None),
        (b"".to_vec(), Some(OwnerType::Ed25519)),
    ];
    for (bytes, kind) in cases {
        let err = OwnerKey::parse(&bytes, kind).unwrap_err();
        assert!(!err.contains(&ETH_SECRET[..8]), "{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = key_file(&dir, "bad.hex", secret_like.as_bytes());
    let err = OwnerKey::load(&path, Some(OwnerType::Eip191)).unwrap_err();
    assert!(matches!(err, Error::Usage(_)));
    assert!(!err.to_string().contains(&ETH_SECRET[..8]), "{err}");
    let big = key_file(&dir, "big", &vec![b' '; MAX_KEY_FILE_LEN + 1]);
    assert!(OwnerKey::load(&big, Some(OwnerType::Eip191)).is_err());
    assert!(OwnerKey::load(&dir.path().join("none"), None).is_err());
}

#[test]
fn debug_shows_the_owner_not_the_secret() {
    let key = OwnerKey::parse(ETH_SECRET.as_bytes(), Some(OwnerType::Eip191)).unwrap();
    let shown = format!("{key:?}");
    assert!(shown.contains("eip191:0x2c7536e3"), "{shown}");
    assert!(!shown.contains(&ETH_SECRET[..8]), "{shown}");
}

#[test]
fn reads_message_files_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = key_file(&dir, "m.txt", b"line one\r\nline two\n\n");
    let args = SignArgs {
        key: KeyFileArgs {
            key_file: path.clone(),
            kind: None,
        },
        message: None,
        message_file: Some(path),
    };
    assert_eq!(read_message(&args).unwrap(), b"line one\r\nline two\n\n");
    let inline = SignArgs {
        message: Some("a b\n".into()),
        message_file: None,
        ..args.clone()
    };
    assert_eq!(read_message(&inline).unwrap(), b"a b\n");
    let big = key_file(&dir, "big", &vec![b'a'; MAX_MESSAGE_LEN + 1]);
    let too_big = SignArgs {
        message_file: Some(big),
        ..args
    };
    assert!(matches!(read_message(&too_big), Err(Error::Usage(_))));
}

#[test]
fn owner_sign_command_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(&dir, "id.json", solana_json([4; 32]).as_bytes());
    let msg = key_file(&dir, "m", b"hello");
    let cli = crate::args::Cli::try_parse_from([
        "ekms",
        "owner",
        "sign",
        "--key-file",
        key.to_str().unwrap(),
        "--message-file",
        msg.to_str().unwrap(),
    ])
    .unwrap();
    let crate::args::Command::Owner(command) = cli.command else {
        panic!("not owner");
    };
    let signature = bs58::decode(run(&command).unwrap()).into_vec().unwrap();
    let owner = OwnerKey::load(&key, None).unwrap().owner();
    assert!(owner.verifies(b"hello", &signature));
    // `show` prints the owner JSON that `keys create --owner` takes.
    let show = OwnerCommand::Show(KeyFileArgs {
        key_file: key,
        kind: None,
    });
    let json: OwnerJson = serde_json::from_str(&run(&show).unwrap()).unwrap();
    assert_eq!(Owner::from_json(&json).unwrap(), owner);
}

#[test]
fn rejects_owner_sign_without_exactly_one_message_source() {
    let parse = |args: &[&str]| {
        crate::args::Cli::try_parse_from(
            ["ekms", "owner", "sign", "--key-file", "k"]
                .iter()
                .chain(args),
        )
    };
    assert!(parse(&[]).is_err());
    assert!(parse(&["--message", "-", "--message-file", "f"]).is_err());
    assert!(parse(&["--message", "-"]).is_ok());
    assert!(parse(&["--message", "-", "--type", "rsa"]).is_err());
}

#[test]
fn owner_flags_give_a_checked_owner() {
    let flags = OwnerFlags {
        owner_eip191: Some("0x2c7536e3605d9c16a7a3d7b1898e529396a65c23".into()),
        ..OwnerFlags::default()
    };
    let owner = flags.owner().unwrap().unwrap();
    assert_eq!(
        owner.to_json(),
        OwnerJson::Eip191 {
            address: "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23".into()
        }
    );
    let pk = bs58::encode(
        ed25519_dalek::SigningKey::from_bytes(&[4; 32])
            .verifying_key()
            .to_bytes(),
    )
    .into_string();
    let flags = OwnerFlags {
        owner: Some(format!(r#"{{"type":"ed25519","public_key":"{pk}"}}"#)),
        ..OwnerFlags::default()
    };
    assert!(matches!(
        flags.owner().unwrap(),
        Some(Owner::Ed25519 { .. })
    ));
    assert_eq!(OwnerFlags::default().owner().unwrap(), None);
}

#[tokio::test]
async fn keys_create_sends_the_checked_owner() {
    let api = crate::testutil::FakeApi::start(|_| (201, serde_json::json!({"key_id": "k"})));
    let socket = api.socket().to_str().unwrap().to_owned();
    let cli = crate::args::Cli::try_parse_from([
        "ekms",
        "--socket",
        &socket,
        "keys",
        "create",
        "--algorithm",
        "secp256k1",
        "--owner-eip191",
        "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23",
    ])
    .unwrap();
    // This fake answers without the owner: the creation check refuses that answer.
    let r = crate::run(cli).await;
    assert!(matches!(r, Err(crate::Error::Verification(_))), "{r:?}");
    let seen = api.seen();
    assert_eq!(seen[0].path, "/v1/keys");
    assert_eq!(
        seen[0].body,
        serde_json::json!({
            "algorithm": "secp256k1",
            "owner": {"type": "eip191", "address": "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"},
        })
    );
    // A bad owner is refused before any request.
    let cli = crate::args::Cli::try_parse_from([
        "ekms",
        "--socket",
        &socket,
        "keys",
        "create",
        "--algorithm",
        "ed25519",
        "--owner",
        r#"{"type":"ed25519","public_key":"1111"}"#,
    ])
    .unwrap();
    assert!(matches!(crate::run(cli).await, Err(Error::Usage(_))));
    assert_eq!(api.seen().len(), 1);
}

#[test]
fn rejects_invalid_owner_flags() {
    for flags in [
        OwnerFlags {
            owner_eip191: Some("0x2C7536e3605d9c16a7a3d7b1898e529396a65c23".into()),
            ..OwnerFlags::default()
        },
        OwnerFlags {
            owner_ed25519: Some("not-base58-0OIl".into()),
            ..OwnerFlags::default()
        },
        OwnerFlags {
            owner: Some(r#"{"type":"rsa","n":"1"}"#.into()),
            ..OwnerFlags::default()
        },
        OwnerFlags {
            owner: Some(r#"{"type":"eip191","address":"0x00","extra":1}"#.into()),
            ..OwnerFlags::default()
        },
    ] {
        assert!(matches!(flags.owner(), Err(Error::Usage(_))), "{flags:?}");
    }
}
