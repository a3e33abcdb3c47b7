//! Secrets: random tokens, their digests, constant-time comparison, and the AEAD that keeps
//! private material encrypted at rest under the master key. Every bearer secret Tessera hands out
//! is generated here from the OS RNG and stored only as its SHA-256 digest.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{digest, rand};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretBox};
use subtle::ConstantTimeEq;

/// Prefix of refresh tokens: recognisable in logs and by secret scanners.
pub const REFRESH_TOKEN_PREFIX: &str = "tsr_";

/// `n` random bytes from the OS RNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    rand::fill(&mut buf).expect("the OS random number generator failed");
    buf
}

/// A new opaque bearer token: `prefix` + 256 random bits, base64url.
pub fn new_token(prefix: &str) -> String {
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
}

/// Whether `token` has the shape [`new_token`] gives with `prefix` (checked before any lookup).
pub fn is_token_of(prefix: &str, token: &str) -> bool {
    token.len() == prefix.len() + 43
        && token.starts_with(prefix)
        && token[prefix.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A new long-lived secret that can be recognised offline: `prefix`, 192 random bits
/// (base64url, 32 characters), then a 6-character checksum, base64url of the first 4 bytes of
/// SHA-256(`prefix` + random part). A secret scanner (or Tessera, before any look-up) checks
/// the checksum to tell a real key from a look-alike.
pub fn new_checked_token(prefix: &str) -> String {
    let body = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random_bytes::<24>()));
    let sum = checksum(&body);
    format!("{body}{sum}")
}

fn checksum(body: &str) -> String {
    let d = digest::digest(&digest::SHA256, body.as_bytes());
    URL_SAFE_NO_PAD.encode(&d.as_ref()[..4])
}

/// Whether `token` has the shape and checksum of [`new_checked_token`]`(prefix)`.
pub fn checked_token_ok(prefix: &str, token: &str) -> bool {
    let len = prefix.len() + 32 + 6;
    if token.len() != len
        || !token.starts_with(prefix)
        || !token[prefix.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return false;
    }
    let (body, sum) = token.split_at(len - 6);
    ct_eq(checksum(body).as_bytes(), sum.as_bytes())
}

/// The digest under which a bearer token is stored: base64url(SHA-256(token)).
pub fn token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, token.as_bytes()))
}

/// Constant-time equality for secrets.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The 32-byte master key that encrypts private keys and other secrets at rest (AES-256-GCM).
/// During a master-key change-over it also holds the previous key, which still opens (never
/// seals) what was sealed before.
pub struct MasterKey(SecretBox<[u8; 32]>, Option<Box<MasterKey>>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("must be the base64 encoding of exactly 32 bytes")]
    Malformed,
}

#[derive(Debug, thiserror::Error)]
#[error("decryption failed: the master key does not match the one this secret was sealed with")]
pub struct DecryptError;

impl MasterKey {
    pub fn generate() -> Self {
        Self(SecretBox::new(Box::new(random_bytes::<32>())), None)
    }

    /// Parses the base64 (standard or URL-safe) of 32 bytes.
    pub fn from_base64(s: &str) -> Result<Self, MasterKeyError> {
        let s = s.trim();
        let bytes = STANDARD
            .decode(s)
            .or_else(|_| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')))
            .map_err(|_| MasterKeyError::Malformed)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| MasterKeyError::Malformed)?;
        Ok(Self(SecretBox::new(Box::new(key)), None))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.expose_secret())
    }

    fn aead(&self) -> LessSafeKey {
        let key = UnboundKey::new(&AES_256_GCM, self.0.expose_secret()).expect("32-byte AES key");
        LessSafeKey::new(key)
    }

    /// Encrypts `plaintext`; `context` (for example a key id) is bound as associated data so a
    /// sealed value cannot be moved to another row. Output: nonce || ciphertext || tag.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let mut buf = plaintext.to_vec();
        self.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .expect("AES-GCM sealing cannot fail for in-memory buffers");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        out
    }

    /// Adds the previous master key, to open secrets sealed before a change-over.
    pub fn with_previous(mut self, previous: MasterKey) -> Self {
        self.1 = Some(Box::new(previous));
        self
    }

    /// Opens with this key, or with the previous one during a change-over.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, DecryptError> {
        match self.open_own(context, sealed) {
            Ok(plain) => Ok(plain),
            Err(e) => match &self.1 {
                Some(previous) => previous.open(context, sealed),
                None => Err(e),
            },
        }
    }

    fn open_own(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, DecryptError> {
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(DecryptError);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| DecryptError)?;
        let mut buf = ct.to_vec();
        let plain = self
            .aead()
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| DecryptError)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_tokens_carry_a_checksum() {
        let t = new_checked_token("tsk_");
        assert_eq!(t.len(), 4 + 32 + 6);
        assert!(checked_token_ok("tsk_", &t));
        assert!(!checked_token_ok("tsx_", &t));
        // One character changed in the random part breaks the checksum.
        let mut bytes = t.clone().into_bytes();
        bytes[10] = if bytes[10] == b'A' { b'B' } else { b'A' };
        assert!(!checked_token_ok(
            "tsk_",
            &String::from_utf8(bytes).unwrap()
        ));
        assert!(!checked_token_ok("tsk_", &t[..t.len() - 1]));
        assert!(!checked_token_ok(
            "tsk_",
            &format!("{}é", &t[..t.len() - 2])
        ));
    }

    #[test]
    fn sealed_secret_opens_only_with_same_key_and_context() {
        let key = MasterKey::generate();
        let sealed = key.seal("kid-1", b"private");
        assert_eq!(key.open("kid-1", &sealed).unwrap(), b"private");
        assert!(key.open("kid-2", &sealed).is_err());
        assert!(MasterKey::generate().open("kid-1", &sealed).is_err());
        assert!(key.open("kid-1", &sealed[..5]).is_err());
    }

    #[test]
    fn previous_key_opens_during_a_change_over() {
        let old = MasterKey::from_base64(&MasterKey::generate().to_base64()).unwrap();
        let sealed = old.seal("ctx", b"secret");
        let old_copy = MasterKey::from_base64(&old.to_base64()).unwrap();
        let new = MasterKey::generate();
        assert!(new.open("ctx", &sealed).is_err());
        let new = new.with_previous(old_copy);
        assert_eq!(new.open("ctx", &sealed).unwrap(), b"secret");
        let resealed = new.seal("ctx", b"secret");
        assert!(
            old.open("ctx", &resealed).is_err(),
            "new seals use the new key"
        );
    }

    #[test]
    fn master_key_must_be_32_bytes() {
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
        let k = MasterKey::generate();
        assert!(MasterKey::from_base64(&k.to_base64()).is_ok());
    }

    #[test]
    fn tokens_are_prefixed_unique_and_hashed_stably() {
        let a = new_token(REFRESH_TOKEN_PREFIX);
        let b = new_token(REFRESH_TOKEN_PREFIX);
        assert!(a.starts_with("tsr_") && a.len() == 4 + 43);
        assert_ne!(a, b);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), token_hash(&b));
    }
}
