//! Decrypting the encrypted files of a git source (issue 21), in memory only: nothing
//! decrypted is written anywhere; the plaintext is wiped when dropped.
//!
//! - Whole-file age (`*.age`, made by `age -r RECIPIENT`, binary or `-a` armored),
//!   with the X25519 identities of an age identity file (`age-keygen`'s output, kept
//!   in a motley Secret).
//! - SOPS YAML whose data key is encrypted to age recipients ([`decrypt_sops_yaml`]).
//!
//! Passphrase-encrypted files (`age -p`) are refused: a cluster has no one to ask.
#![forbid(unsafe_code)]

use std::io::Read;

use zeroize::Zeroizing;

mod sops;
pub use sops::decrypt_sops_yaml;

/// Why a file could not be decrypted.
#[derive(Debug, thiserror::Error)]
pub enum DecryptError {
    /// The identity text holds no usable identity.
    #[error("the age identity: {0}")]
    Identity(String),
    /// The file is not one this code decrypts, or not with these identities.
    #[error("{file}: {why}")]
    File {
        /// Its name (a path in the repository).
        file: String,
        /// Why.
        why: String,
    },
}

/// The identities files are decrypted with.
pub struct Identities(Vec<Box<dyn age::Identity>>);

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identities({} keys)", self.0.len())
    }
}

impl Identities {
    /// Reads an age identity file's text (`AGE-SECRET-KEY-1…` lines; `#` comments and
    /// blank lines allowed).
    pub fn parse(text: &str) -> Result<Identities, DecryptError> {
        let file = age::IdentityFile::from_buffer(text.as_bytes())
            .map_err(|e| DecryptError::Identity(e.to_string()))?;
        let ids = file
            .into_identities()
            .map_err(|e| DecryptError::Identity(e.to_string()))?;
        if ids.is_empty() {
            return Err(DecryptError::Identity(
                "no AGE-SECRET-KEY-1 line in it".into(),
            ));
        }
        Ok(Identities(ids))
    }
}

/// Decrypts the age file `data` named `file` with `ids`, refusing plaintext longer
/// than `limit` bytes (read no further than that).
pub fn decrypt_age(
    ids: &Identities,
    file: &str,
    data: &[u8],
    limit: usize,
) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
    let err = |why: String| DecryptError::File {
        file: file.to_string(),
        why,
    };
    let decryptor = age::Decryptor::new_buffered(age::armor::ArmoredReader::new(data))
        .map_err(|e| err(format!("not an age file: {e}")))?;
    if decryptor.is_scrypt() {
        return Err(err(
            "encrypted with a passphrase (age -p); encrypt to the cluster's recipient (age -r)"
                .into(),
        ));
    }
    let reader = decryptor
        .decrypt(ids.0.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| err(e.to_string()))?;
    let mut out = Zeroizing::new(Vec::new());
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| err(format!("damaged: {e}")))?;
    if out.len() > limit {
        return Err(err(format!("decrypts to more than {limit} bytes")));
    }
    Ok(out)
}
