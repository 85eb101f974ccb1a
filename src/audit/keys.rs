//! Checkpoint keys: an Ed25519 key pair in two one-line text files, `audit.key` (the secret
//! seed, mode 0600) and `audit.pub` (the public key), and the key's fingerprint.
//!
//! Formats (version 1), each one line ending in a newline:
//! - secret: `plugbox-audit-secret-key-v1 <64 hex digits: the 32-byte Ed25519 seed>`
//! - public: `plugbox-audit-public-key-v1 <64 hex digits: the 32-byte Ed25519 public key>`
//!
//! The fingerprint is the first 32 hex digits of the sha256 of the 32 public-key bytes. It
//! names a key in records; signatures are always checked against the whole public key. Files
//! are read through [`crate::untrusted_file`] (no symlink, no FIFO, at most 256 bytes), and a
//! secret key file that group or others may read is refused.

use super::chain::hex;
use crate::untrusted_file::{UntrustedFile, UntrustedFileError};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// First word of a secret key file.
pub const SECRET_TAG: &str = "plugbox-audit-secret-key-v1";
/// First word of a public key file.
pub const PUBLIC_TAG: &str = "plugbox-audit-public-key-v1";
/// Longest key file read, bytes.
const MAX_KEY_FILE_BYTES: u64 = 256;
/// Hex digits of a fingerprint.
const FINGERPRINT_HEX: usize = 32;

/// Why a key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be read (missing, a symlink, not a regular file, too large).
    #[error("audit key: {0}")]
    File(#[from] UntrustedFileError),
    /// The file is not a key of the expected kind.
    #[error("audit key: {path}: {why}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A secret key file that group or others may read.
    #[error(
        "audit key: {path}: mode {mode:04o} lets group or others read the secret key; \
         refused (chmod 600 it, and consider the key exposed)"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Creating or writing a key file failed (it exists already, say).
    #[error("audit key: cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The system's random source failed.
    #[error("audit key: no randomness: {0}")]
    Random(String),
}

/// The secret half: signs checkpoints.
pub struct AuditKey {
    key: SigningKey,
    fingerprint: String,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditKey({})", self.fingerprint)
    }
}

/// The public half: checks checkpoints.
#[derive(Debug, Clone)]
pub struct PublicKey {
    key: VerifyingKey,
    fingerprint: String,
}

/// The fingerprint of a public key: 32 hex digits of the sha256 of its bytes.
pub fn fingerprint(public: &[u8; 32]) -> String {
    let mut fp = hex(&Sha256::digest(public));
    fp.truncate(FINGERPRINT_HEX);
    fp
}

impl AuditKey {
    /// A new key from the system's random source (`getrandom`).
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self::from_seed(&seed))
    }

    fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let fingerprint = fingerprint(&key.verifying_key().to_bytes());
        Self { key, fingerprint }
    }

    /// Reads a secret key file; refuses one that group or others may read.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let file = UntrustedFile::open(path)?;
        let mode = file
            .metadata()
            .map_err(|source| UntrustedFileError::Read {
                path: path.to_owned(),
                source,
            })?
            .permissions()
            .mode()
            & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
        let seed = parse_line(path, &file.read_capped(MAX_KEY_FILE_BYTES)?, SECRET_TAG)?;
        Ok(Self::from_seed(&seed))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        let key = self.key.verifying_key();
        PublicKey {
            key,
            fingerprint: self.fingerprint.clone(),
        }
    }

    /// The key's fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Signs `message`; returns the 64-byte signature.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// Writes `dir/audit.key` (mode 0600) and `dir/audit.pub` (0644), creating `dir` (0700)
    /// if missing; an existing key file is never overwritten. Returns the two paths.
    pub fn write_pair(&self, dir: &Path) -> Result<(PathBuf, PathBuf), KeyError> {
        let secret = dir.join("audit.key");
        let public = dir.join("audit.pub");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| KeyError::Write {
                path: dir.to_owned(),
                source,
            })?;
        let seed = self.key.to_bytes();
        write_new(&secret, 0o600, &format!("{SECRET_TAG} {}\n", hex(&seed)))?;
        let line = format!(
            "{PUBLIC_TAG} {}\n",
            hex(&self.key.verifying_key().to_bytes())
        );
        write_new(&public, 0o644, &line)?;
        Ok((secret, public))
    }
}

impl PublicKey {
    /// Reads a public key file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let bytes = UntrustedFile::open(path)?.read_capped(MAX_KEY_FILE_BYTES)?;
        let raw = parse_line(path, &bytes, PUBLIC_TAG)?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|e| KeyError::Format {
            path: path.to_owned(),
            why: format!("not an Ed25519 public key: {e}"),
        })?;
        Ok(Self {
            key,
            fingerprint: fingerprint(&raw),
        })
    }

    /// The key's fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whether `signature` is this key's signature of `message` (strict Ed25519 checks).
    pub fn verifies(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.key
            .verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }
}

/// A public key from its 32 bytes (`None` if they are not a valid Ed25519 point).
pub fn public_from_bytes(raw: &[u8; 32]) -> Option<PublicKey> {
    let key = VerifyingKey::from_bytes(raw).ok()?;
    Some(PublicKey {
        key,
        fingerprint: fingerprint(raw),
    })
}

/// The 32 bytes of a one-line key file whose first word is `tag`.
fn parse_line(path: &Path, bytes: &[u8], tag: &str) -> Result<[u8; 32], KeyError> {
    let format = |why: &str| KeyError::Format {
        path: path.to_owned(),
        why: why.to_owned(),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| format("not UTF-8 text"))?;
    let line = text.strip_suffix('\n').unwrap_or(text);
    let (word, value) = line
        .split_once(' ')
        .ok_or_else(|| format("not a plugbox key file"))?;
    if word != tag {
        let what = match word {
            SECRET_TAG => "a secret key where a public key (audit.pub) is expected",
            PUBLIC_TAG => "a public key where the secret key (audit.key) is expected",
            _ => "not a plugbox key file (or a version this plugbox does not know)",
        };
        return Err(format(what));
    }
    let raw = unhex(value).ok_or_else(|| format("the key is not 64 lowercase hex digits"))?;
    Ok(raw)
}

/// Decodes exactly `N` bytes of lowercase hex.
pub fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// Creates `path` (never an existing file, never through a symlink) with `mode` and `text`.
fn write_new(path: &Path, mode: u32, text: &str) -> Result<(), KeyError> {
    let err = |source| KeyError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(err)?;
    // The umask may have cleared bits of `mode`; set exactly it.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(err)?;
    file.write_all(text.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_pair_round_trips_and_signs() {
        let dir = tempfile::tempdir().unwrap();
        let key = AuditKey::generate().unwrap();
        let (secret, public) = key.write_pair(dir.path()).unwrap();
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = AuditKey::load(&secret).unwrap();
        let public = PublicKey::load(&public).unwrap();
        assert_eq!(again.fingerprint(), public.fingerprint());
        assert_eq!(public.fingerprint().len(), 32);
        let sig = again.sign(b"head");
        assert!(public.verifies(b"head", &sig));
        assert!(!public.verifies(b"Head", &sig));
        assert!(key.write_pair(dir.path()).is_err(), "never overwritten");
    }

    #[test]
    fn exposed_or_swapped_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public) = AuditKey::generate()
            .unwrap()
            .write_pair(dir.path())
            .unwrap();
        assert!(matches!(
            PublicKey::load(&secret),
            Err(KeyError::Format { .. })
        ));
        std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            AuditKey::load(&public),
            Err(KeyError::Format { .. })
        ));
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = AuditKey::load(&secret).unwrap_err();
        assert!(err.to_string().contains("0640"), "{err}");
        assert_eq!(unhex::<1>("0A"), None);
        assert_eq!(unhex::<1>("0a"), Some([10]));
    }
}
