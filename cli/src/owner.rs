//! Key owners on the command line: `ekms owner sign` and `ekms owner show` (an owner's
//! local signing key), and the `--owner…` flags of `ekms keys create`.
//!
//! The owner's secret key never leaves this process: it is read from a file into a
//! zeroizing buffer, parsed into a [`OwnerKey`] (whose `Debug` is redacted and whose
//! keys zeroize on drop), used for one signature and dropped. Errors about a key file
//! never quote its contents (a hex decoder's "invalid character 'x' at 7" would).
//!
//! Key files:
//! - `eip191`: a 32-byte secp256k1 private key as hex (`0x` optional, surrounding
//!   whitespace ignored);
//! - `ed25519`: a Solana CLI keypair (a JSON array of 64 numbers: seed ‖ public key,
//!   the public half checked against the seed), or a 32-byte seed as hex.
//!
//! Signatures (what the enclave checks, `ekms_shared::owner`): `eip191` is EIP-191
//! `personal_sign` over the exact message bytes (RFC 6979, low `s` per EIP-2, `v` =
//! 27 + recovery id), printed as `0x` + 130 hex digits; `ed25519` is RFC 8032 over the
//! same bytes, printed as base58.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use ekms_shared::owner::{eip191_hash, Owner, OwnerJson};
use sha3::{Digest as _, Keccak256};
use zeroize::Zeroizing;

use crate::Error;

/// Largest key file read, in bytes (a Solana keypair file is under 300).
pub const MAX_KEY_FILE_LEN: usize = 4096;
/// Largest message `ekms owner sign` signs, in bytes (an authorization is under 300).
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// `ekms owner …`
#[derive(Debug, Subcommand)]
pub enum OwnerCommand {
    /// Sign a message (an owner authorization) with the owner's local key; prints the
    /// signature only: `0x` + 130 hex digits (eip191) or base58 (ed25519).
    Sign(SignArgs),
    /// Print the owner JSON of a local key, to pass to `ekms keys create --owner`.
    Show(KeyFileArgs),
}

/// The key file formats, for `--help`.
pub const KEY_FILE_HELP: &str = "Key files: eip191 — a 32-byte secp256k1 private key as hex \
    (0x optional); ed25519 — a Solana CLI keypair JSON file (64 numbers) or a 32-byte seed as \
    hex. Signatures: eip191 is EIP-191 personal_sign, printed as 0x + 130 hex digits (v = 27 \
    or 28); ed25519 is RFC 8032 over the exact message bytes, printed as base58.";

/// Which owner key file and how to read it.
#[derive(Debug, Clone, Args)]
#[command(after_help = KEY_FILE_HELP)]
pub struct KeyFileArgs {
    /// The owner's secret key file (formats below).
    #[arg(long)]
    pub key_file: PathBuf,
    /// The owner type [default: ed25519 for a Solana keypair JSON file; required for a
    /// hex key file].
    #[arg(long = "type", value_enum)]
    pub kind: Option<OwnerType>,
}

/// Flags of `ekms owner sign`.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["message", "message_file"])))]
pub struct SignArgs {
    /// The key.
    #[command(flatten)]
    pub key: KeyFileArgs,
    /// The message: its exact bytes as given, or `-` to read standard input exactly.
    #[arg(long)]
    pub message: Option<String>,
    /// A file holding the message, signed byte for byte (no newline added or removed).
    #[arg(long)]
    pub message_file: Option<PathBuf>,
}

/// Owner types (the `type` of the owner JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OwnerType {
    /// An Ethereum account: EIP-191 `personal_sign` with secp256k1.
    Eip191,
    /// An ed25519 key (e.g. a Solana wallet).
    Ed25519,
}

/// The `--owner…` flags of `ekms keys create` (at most one).
#[derive(Debug, Clone, Default, Args)]
#[command(group(clap::ArgGroup::new("owner_flags").multiple(false)))]
pub struct OwnerFlags {
    /// The key's owner as JSON: `{"type":"eip191","address":"0x…"}` or
    /// `{"type":"ed25519","public_key":"<base58>"}` (inline, a file, or `-`).
    #[arg(long, group = "owner_flags")]
    pub owner: Option<String>,
    /// The key's owner: an Ethereum address (EIP-191 signatures).
    #[arg(long, group = "owner_flags", value_name = "ADDRESS")]
    pub owner_eip191: Option<String>,
    /// The key's owner: a base58 ed25519 public key.
    #[arg(long, group = "owner_flags", value_name = "BASE58")]
    pub owner_ed25519: Option<String>,
}

impl OwnerFlags {
    /// The owner to send with `POST /v1/keys`, checked and in its normal form (EIP-55
    /// address, base58 key), or `None` without a flag.
    ///
    /// # Errors
    /// [`Error::Usage`] for malformed JSON or an invalid address or public key.
    pub fn owner(&self) -> Result<Option<Owner>, Error> {
        let json = if let Some(text) = &self.owner {
            let value = crate::input::load_json_object(text)?;
            serde_json::from_value::<OwnerJson>(value)
                .map_err(|e| Error::Usage(format!("--owner: {e}")))?
        } else if let Some(address) = &self.owner_eip191 {
            OwnerJson::Eip191 {
                address: address.clone(),
            }
        } else if let Some(public_key) = &self.owner_ed25519 {
            OwnerJson::Ed25519 {
                public_key: public_key.clone(),
            }
        } else {
            return Ok(None);
        };
        Owner::from_json(&json)
            .map(Some)
            .map_err(|e| Error::Usage(format!("the key's owner: {e}")))
    }
}

/// An owner's secret key. Both variants zeroize their secret on drop; `Debug` shows the
/// owner only.
pub enum OwnerKey {
    /// secp256k1, signing EIP-191 `personal_sign`.
    Eip191(k256::ecdsa::SigningKey),
    /// ed25519.
    Ed25519(ed25519_dalek::SigningKey),
}

impl std::fmt::Debug for OwnerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerKey")
            .field("owner", &self.owner().record_text())
            .finish_non_exhaustive()
    }
}

impl OwnerKey {
    /// Reads a key file (module docs) as `kind`, or as the type its format implies.
    ///
    /// # Errors
    /// [`Error::Usage`] for an unreadable or oversized file, a format that is not
    /// `kind`'s, a hex file without `kind`, or bytes that are not a valid key. The
    /// message never contains the file's contents.
    pub fn load(path: &Path, kind: Option<OwnerType>) -> Result<Self, Error> {
        let bad = |what: &str| Error::Usage(format!("{}: {what}", path.display()));
        let file = std::fs::File::open(path)
            .map_err(|e| Error::Usage(format!("cannot open {}: {e}", path.display())))?;
        // Sized once, so the secret is never copied by a reallocation.
        let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_LEN + 1));
        file.take(u64::try_from(MAX_KEY_FILE_LEN + 1).unwrap_or(u64::MAX))
            .read_to_end(&mut bytes)
            .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
        if bytes.len() > MAX_KEY_FILE_LEN {
            return Err(bad("larger than a key file"));
        }
        Self::parse(&bytes, kind).map_err(bad)
    }

    /// Parses a key file's bytes (module docs). Errors are fixed texts, never the input.
    fn parse(bytes: &[u8], kind: Option<OwnerType>) -> Result<Self, &'static str> {
        let text = bytes.trim_ascii();
        if text.starts_with(b"[") {
            if kind == Some(OwnerType::Eip191) {
                return Err("a JSON keypair file is an ed25519 (Solana) key, not eip191");
            }
            let pair = solana_keypair(text)?;
            let mut seed = Zeroizing::new([0u8; 32]);
            seed.copy_from_slice(&pair[..32]);
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            if key.verifying_key().as_bytes()[..] != pair[32..] {
                return Err("the keypair's public half does not match its secret half");
            }
            return Ok(OwnerKey::Ed25519(key));
        }
        let Some(kind) = kind else {
            return Err("a hex key file needs --type (eip191 or ed25519)");
        };
        let secret = hex32(text).ok_or("expected 32 bytes as hex (64 digits, 0x optional)")?;
        match kind {
            OwnerType::Eip191 => k256::ecdsa::SigningKey::from_slice(&secret[..])
                .map(OwnerKey::Eip191)
                .map_err(|_| "not a valid secp256k1 private key"),
            OwnerType::Ed25519 => Ok(OwnerKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(
                &secret,
            ))),
        }
    }

    /// The owner this key signs for.
    pub fn owner(&self) -> Owner {
        match self {
            OwnerKey::Eip191(key) => {
                let point = key.verifying_key().to_sec1_point(false);
                let hash = Keccak256::digest(&point.as_bytes()[1..]);
                let mut address = [0u8; 20];
                address.copy_from_slice(&hash[12..]);
                Owner::Eip191 { address }
            }
            OwnerKey::Ed25519(key) => Owner::Ed25519 {
                public_key: key.verifying_key().to_bytes(),
            },
        }
    }

    /// The owner type.
    pub fn kind(&self) -> OwnerType {
        match self {
            OwnerKey::Eip191(_) => OwnerType::Eip191,
            OwnerKey::Ed25519(_) => OwnerType::Ed25519,
        }
    }

    /// Signs `message` (its exact bytes) as the module docs say; returns the signature
    /// bytes: 65 (`r ‖ s ‖ v`, low `s`, `v` ∈ {27, 28}) or 64 (ed25519).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            OwnerKey::Eip191(key) => {
                let (signature, recid) = key.sign_prehash_recoverable(&eip191_hash(message));
                // RFC 6979 signing in k256 already gives a low s; normalise anyway, since
                // the enclave refuses a high one (EIP-2): negating s flips the y parity.
                let low = signature.normalize_s();
                let parity = recid.to_byte() ^ u8::from(low != signature);
                let mut out = Vec::with_capacity(65);
                out.extend_from_slice(&low.to_bytes());
                out.push(27 + parity);
                out
            }
            OwnerKey::Ed25519(key) => {
                use ed25519_dalek::Signer as _;
                key.sign(message).to_bytes().to_vec()
            }
        }
    }

    /// [`OwnerKey::sign`] in the text form the API takes: `0x` + hex for eip191,
    /// base58 for ed25519.
    pub fn sign_text(&self, message: &[u8]) -> String {
        let signature = self.sign(message);
        match self {
            OwnerKey::Eip191(_) => format!("0x{}", hex::encode(signature)),
            OwnerKey::Ed25519(_) => bs58::encode(signature).into_string(),
        }
    }
}

/// Decodes 64 hex digits (optional `0x`) into a zeroizing 32-byte buffer.
fn hex32(text: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
    let digits = text.strip_prefix(b"0x").unwrap_or(text);
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(digits, &mut out[..]).ok()?;
    Some(out)
}

/// Parses a Solana CLI keypair file: `[n, n, …]`, exactly 64 numbers 0..=255. Done by
/// hand into a zeroizing buffer so that no parser keeps a copy of the secret.
fn solana_keypair(text: &[u8]) -> Result<Zeroizing<[u8; 64]>, &'static str> {
    const BAD: &str = "expected a JSON array of 64 numbers from 0 to 255 (a Solana keypair)";
    let inner = text
        .strip_prefix(b"[")
        .and_then(|t| t.strip_suffix(b"]"))
        .ok_or(BAD)?;
    let mut out = Zeroizing::new([0u8; 64]);
    let mut count = 0usize;
    for item in inner.split(|&b| b == b',') {
        let digits = item.trim_ascii();
        if digits.is_empty() || digits.len() > 3 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(BAD);
        }
        let value = digits
            .iter()
            .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
        let slot = out.get_mut(count).ok_or(BAD)?;
        *slot = u8::try_from(value).map_err(|_| BAD)?;
        count += 1;
    }
    if count != 64 {
        return Err(BAD);
    }
    Ok(out)
}

/// Reads the message to sign: `--message-file` byte for byte, `--message -` from stdin
/// byte for byte, or `--message TEXT` as the argument's bytes.
///
/// # Errors
/// [`Error::Usage`] for an unreadable input or one over [`MAX_MESSAGE_LEN`].
pub fn read_message(args: &SignArgs) -> Result<Vec<u8>, Error> {
    let limit = u64::try_from(MAX_MESSAGE_LEN + 1).unwrap_or(u64::MAX);
    let mut bytes = Vec::new();
    let source = match (&args.message_file, args.message.as_deref()) {
        (Some(path), _) => {
            let file = std::fs::File::open(path)
                .map_err(|e| Error::Usage(format!("cannot open {}: {e}", path.display())))?;
            file.take(limit)
                .read_to_end(&mut bytes)
                .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
            path.display().to_string()
        }
        (None, Some("-")) => {
            std::io::stdin()
                .lock()
                .take(limit)
                .read_to_end(&mut bytes)
                .map_err(|e| Error::Usage(format!("cannot read stdin: {e}")))?;
            "stdin".to_owned()
        }
        (None, Some(text)) => {
            bytes.extend_from_slice(text.as_bytes());
            "--message".to_owned()
        }
        (None, None) => return Err(Error::Usage("give --message or --message-file".into())),
    };
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(Error::Usage(format!(
            "{source}: more than {MAX_MESSAGE_LEN} bytes"
        )));
    }
    Ok(bytes)
}

/// Runs `ekms owner …`; returns the text to print (a bare signature, or owner JSON).
///
/// # Errors
/// [`Error::Usage`] for bad key files or messages.
pub fn run(command: &OwnerCommand) -> Result<String, Error> {
    match command {
        OwnerCommand::Sign(args) => {
            let message = read_message(args)?;
            let key = OwnerKey::load(&args.key.key_file, args.key.kind)?;
            Ok(key.sign_text(&message))
        }
        OwnerCommand::Show(args) => {
            let key = OwnerKey::load(&args.key_file, args.kind)?;
            let json = serde_json::to_value(key.owner().to_json())
                .map_err(|e| Error::BadResponse(format!("cannot print the owner: {e}")))?;
            serde_json::to_string_pretty(&json)
                .map_err(|e| Error::BadResponse(format!("cannot print the owner: {e}")))
        }
    }
}

#[cfg(test)]
mod tests;
