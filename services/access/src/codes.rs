//! Access codes (引換番号): what a patient reads out at a pharmacy to claim an open prescription.
//!
//! The code is a bearer credential for the prescription, so it never travels on the bus or rests
//! in a read model in the clear: events carry a keyed digest (HMAC-SHA256 under a secret the
//! clinic gateway and the pharmacy service share), and the pharmacy looks a presented code up by
//! its digest. A plain SHA-256 would not do: there are only 31⁸ ≈ 8.5 × 10¹¹ codes, which a GPU
//! hashes through in minutes, so anyone reading the topic could recover every code. Without the
//! key, the digest tells nothing.
//!
//! Rotation: prescriptions expire four days after issue, so a new key can become current while
//! the old one stays in `previous` for a week; claims try every key.

use hmac::{Hmac, Mac};
use rand::seq::IndexedRandom;
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;

/// No 0/O or 1/I/L: a patient reads the code out loud or types it from paper.
pub const ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// 31⁸ ≈ 8.5 × 10¹¹ codes.
pub const CODE_LENGTH: usize = 8;
/// Shortest key accepted: HMAC-SHA256 keys shorter than the hash weaken it.
const MIN_KEY_BYTES: usize = 32;

/// A fresh code: every character drawn uniformly from [`ALPHABET`] by the OS-seeded CSPRNG.
pub fn new_code() -> String {
    let mut rng = rand::rng();
    (0..CODE_LENGTH)
        .map(|_| char::from(*ALPHABET.choose(&mut rng).unwrap_or(&b'2')))
        .collect()
}

/// The code as the patient may have typed it: case, spaces and dashes ignored.
pub fn normalize(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// One digest key, with the id that prefixes its digests.
#[derive(Clone)]
struct Key {
    id: String,
    secret: SecretSlice<u8>,
}

/// The keys codes are digested with: one current, older ones still accepted.
#[derive(Clone)]
pub struct CodeKeys {
    current: Key,
    previous: Vec<Key>,
}

impl std::fmt::Debug for CodeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let previous: Vec<&str> = self.previous.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("CodeKeys")
            .field("current", &self.current.id)
            .field("previous", &previous)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error(
        "an access-code key is ID:HEX (the id names it in digests, HEX is at least {MIN_KEY_BYTES} random bytes), got something else"
    )]
    Malformed,
    #[error("access-code key {0:?} is shorter than {MIN_KEY_BYTES} bytes")]
    TooShort(String),
}

impl CodeKeys {
    /// Parses `ID:HEX` keys: the first is current, the rest are accepted for claims only.
    pub fn parse<'a>(
        current: &str,
        previous: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, KeyError> {
        Ok(Self {
            current: parse_key(current)?,
            previous: previous
                .into_iter()
                .filter(|k| !k.trim().is_empty())
                .map(parse_key)
                .collect::<Result<_, _>>()?,
        })
    }

    /// A random key, for the in-memory dev stack and tests: codes issued under it are only
    /// claimable while the process lives.
    pub fn ephemeral() -> Self {
        let secret: [u8; 32] = rand::random();
        Self {
            current: Key {
                id: "dev".to_owned(),
                secret: SecretSlice::from(secret.to_vec()),
            },
            previous: Vec::new(),
        }
    }

    /// A new key in the `ID:HEX` form [`CodeKeys::parse`] reads (for `hixbus orgs`).
    pub fn generate_text(id: &str) -> String {
        let secret: [u8; 32] = rand::random();
        format!("{id}:{}", hex::encode(secret))
    }

    /// The digest an event carries for `code`, under the current key.
    pub fn digest(&self, code: &str) -> String {
        digest_with(&self.current, code)
    }

    /// Every digest `code` may have been issued under (current key first).
    pub fn candidates(&self, code: &str) -> Vec<String> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(|key| digest_with(key, code))
            .collect()
    }
}

fn parse_key(text: &str) -> Result<Key, KeyError> {
    let (id, secret) = text.trim().split_once(':').ok_or(KeyError::Malformed)?;
    let valid_id = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid_id {
        return Err(KeyError::Malformed);
    }
    let secret = hex::decode(secret).map_err(|_| KeyError::Malformed)?;
    if secret.len() < MIN_KEY_BYTES {
        return Err(KeyError::TooShort(id.to_owned()));
    }
    Ok(Key {
        id: id.to_owned(),
        secret: SecretSlice::from(secret),
    })
}

fn digest_with(key: &Key, code: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.secret.expose_secret())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(normalize(code).as_bytes());
    format!("{}:{}", key.id, hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "k1:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const KEY_B: &str = "k2:1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

    #[test]
    fn codes_use_only_the_readable_alphabet_and_every_position_varies() {
        let codes: Vec<String> = (0..2000).map(|_| new_code()).collect();
        for code in &codes {
            assert_eq!(code.len(), CODE_LENGTH);
            assert!(code.bytes().all(|b| ALPHABET.contains(&b)), "{code}");
        }
        // Each position takes (nearly) every letter: no position is fixed, as a UUID's version
        // nibble once fixed the seventh.
        for position in 0..CODE_LENGTH {
            let seen: std::collections::BTreeSet<u8> =
                codes.iter().map(|c| c.as_bytes()[position]).collect();
            assert!(seen.len() >= 28, "position {position}: {}", seen.len());
        }
    }

    #[test]
    fn a_digest_depends_on_the_key_and_ignores_how_the_code_was_typed() {
        let a = CodeKeys::parse(KEY_A, []).unwrap();
        let b = CodeKeys::parse(KEY_B, []).unwrap();
        assert_eq!(a.digest("N3Z3D2KU"), a.digest("n3z3-d2ku "));
        assert!(a.digest("N3Z3D2KU").starts_with("k1:"));
        assert_ne!(a.digest("N3Z3D2KU"), b.digest("N3Z3D2KU"));
        assert_ne!(a.digest("N3Z3D2KU"), a.digest("N3Z3D2KV"));
        assert!(!format!("{a:?}").contains("0001020304"));
    }

    #[test]
    fn after_a_rotation_codes_issued_under_the_old_key_still_match() {
        let old = CodeKeys::parse(KEY_A, []).unwrap();
        let rotated = CodeKeys::parse(KEY_B, [KEY_A]).unwrap();
        let issued = old.digest("N3Z3D2KU");
        assert!(rotated.candidates("N3Z3D2KU").contains(&issued));
        assert_eq!(
            rotated.candidates("N3Z3D2KU")[0],
            rotated.digest("N3Z3D2KU")
        );
    }

    #[test]
    fn weak_or_malformed_keys_are_refused() {
        assert_eq!(
            CodeKeys::parse("k1:00ff", []).unwrap_err(),
            KeyError::TooShort("k1".to_owned())
        );
        assert_eq!(
            CodeKeys::parse("no-colon", []).unwrap_err(),
            KeyError::Malformed
        );
        assert_eq!(
            CodeKeys::parse("k1:zz", []).unwrap_err(),
            KeyError::Malformed
        );
        let generated = CodeKeys::generate_text("k9");
        assert!(CodeKeys::parse(&generated, []).is_ok());
    }
}
