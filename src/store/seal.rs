//! Sealing outbox payloads: queued events are encrypted at rest (XChaCha20-Poly1305) and deleted
//! once delivered, so message text never sits in the database in clear.
//!
//! Nonces: XChaCha20's 192-bit nonce must never repeat under one key. Each sealer draws 128 random
//! bits from the operating system once and counts the other 64 up, so nonces are unique within a
//! process and, with overwhelming probability, across processes, without a system call per
//! payload.

use chacha20poly1305::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use passerelle_sdk::Secret;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const NONCE_LEN: usize = 24;

/// Why a key could not be loaded or a payload opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key is not 64 hex digits.
    #[error("{0}: the outbox key must be 64 hex digits (32 bytes)")]
    BadKey(String),
    /// The key file could not be read or created.
    #[error("{path}: {error}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// A payload failed authentication: another key, or a damaged row.
    #[error("a queued payload could not be opened (wrong key or damaged row)")]
    Open,
}

const TAG_LEN: usize = 16;

/// Encrypts and decrypts outbox payloads with one key.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    /// The random first 16 bytes of every nonce this sealer makes.
    nonce_prefix: [u8; 16],
    /// The last 8 bytes: a count.
    nonce_count: AtomicU64,
}

impl Sealer {
    /// A sealer over a 32-byte key.
    pub fn new(key: [u8; 32]) -> Self {
        let random = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut nonce_prefix = [0u8; 16];
        nonce_prefix.copy_from_slice(&random[..16]);
        Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
            nonce_prefix,
            nonce_count: AtomicU64::new(0),
        }
    }

    /// Loads the key from `store.outbox_key`, else `store.outbox_key_file`, else `generated`
    /// (created with a fresh random key, readable by the owner only, when it does not exist).
    pub fn load(
        key: Option<&Secret>,
        key_file: Option<&Path>,
        generated: &Path,
    ) -> Result<Self, SealError> {
        if let Some(key) = key {
            return parse_hex(key.expose())
                .map(Self::new)
                .ok_or_else(|| SealError::BadKey("store.outbox_key".into()));
        }
        if let Some(path) = key_file {
            let secret = passerelle_sdk::secret::read_secret_file(path).map_err(|error| {
                SealError::KeyFile {
                    path: path.to_path_buf(),
                    error,
                }
            })?;
            return parse_hex(secret.expose().trim())
                .map(Self::new)
                .ok_or_else(|| SealError::BadKey("store.outbox_key_file".into()));
        }
        match passerelle_sdk::secret::read_secret_file(generated) {
            Ok(secret) => parse_hex(secret.expose().trim())
                .map(Self::new)
                .ok_or_else(|| SealError::BadKey(generated.display().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = XChaCha20Poly1305::generate_key(&mut OsRng).into();
                write_private(generated, &to_hex(&key)).map_err(|error| SealError::KeyFile {
                    path: generated.to_path_buf(),
                    error,
                })?;
                Ok(Self::new(key))
            }
            Err(error) => Err(SealError::KeyFile {
                path: generated.to_path_buf(),
                error,
            }),
        }
    }

    /// Encrypts `plain`: nonce, ciphertext, tag (one allocation).
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let count = self.nonce_count.fetch_add(1, Ordering::Relaxed);
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&self.nonce_prefix);
        out.extend_from_slice(&count.to_be_bytes());
        out.extend_from_slice(plain);
        let (nonce, body) = out.split_at_mut(NONCE_LEN);
        // Encryption in memory with a valid key cannot fail (the length is far below its limit).
        match self
            .cipher
            .encrypt_in_place_detached(XNonce::from_slice(nonce), b"", body)
        {
            Ok(tag) => out.extend_from_slice(&tag),
            Err(_) => out.clear(),
        }
        out
    }

    /// Decrypts what [`Sealer::seal`] produced.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(SealError::Open);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut plain = body.to_vec();
        self.cipher
            .decrypt_in_place_detached(XNonce::from_slice(nonce), b"", &mut plain, tag.into())
            .map_err(|_| SealError::Open)?;
        Ok(plain)
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_payloads_hide_their_text_and_open_only_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.key");
        let sealer = Sealer::load(None, None, &path).unwrap();
        let sealed = sealer.seal(b"canary-at-rest");
        assert!(!sealed.windows(6).any(|w| w == b"canary"));
        assert_eq!(sealer.open(&sealed).unwrap(), b"canary-at-rest");
        // The generated key is reused on the next start.
        let again = Sealer::load(None, None, &path).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), b"canary-at-rest");
        let other = Sealer::new([7; 32]);
        assert!(other.open(&sealed).is_err());
        assert!(other.open(b"short").is_err());
        assert!(Sealer::load(Some(&Secret::new("zz")), None, &path).is_err());
        // A damaged row does not open.
        let mut damaged = sealer.seal(b"canary-at-rest");
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(sealer.open(&damaged).is_err());
    }

    #[test]
    fn nonces_never_repeat_within_a_sealer_or_across_sealers() {
        let a = Sealer::new([3; 32]);
        let b = Sealer::new([3; 32]);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            for sealer in [&a, &b] {
                let sealed = sealer.seal(b"x");
                assert!(
                    seen.insert(sealed[..NONCE_LEN].to_vec()),
                    "a nonce repeated"
                );
            }
        }
        // The same text sealed twice differs.
        assert_ne!(a.seal(b"same"), a.seal(b"same"));
    }
}
