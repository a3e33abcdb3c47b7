//! JWT access tokens (RFC 9068 profile: `typ: at+jwt`) and their validation.
//!
//! Validation rejects: `alg: none` and unknown algorithms, a header `alg` that differs from the
//! algorithm of the key named by `kid` (algorithm confusion, e.g. HS256 signed with a public
//! key), unknown `kid`, a wrong `typ`, wrong `iss` or `aud`, tampered payloads or signatures, and
//! tokens that are expired (`exp <= now`) or not yet valid (`nbf > now`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use aws_lc_rs::digest;

use super::{Keys, SigningKey};

/// `typ` header of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// Longest token accepted for validation, bytes.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The claims of a first-party access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    /// The session (token family) this token belongs to; revoking it revokes the token.
    /// Absent for client-credentials tokens, which act for no user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// RFC 9068 §2.2: the client the token was issued to (`tessera` for first-party logins).
    pub client_id: String,
    /// RFC 9068 §2.2.3: granted scopes, space-separated (OAuth clients only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    /// The active tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    /// The user's roles in the active tenant when the token was issued (for resource servers;
    /// Tessera itself decides from the live membership).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenant_roles: Vec<String>,
    /// A tenant API key exchanged for this token (RFC 8693): `sub` is the key's id, `tid` its
    /// tenant; it stands only while the key does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub api_key: bool,
    /// The API key's permissions in `tid` (with `api_key`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<String>,
    /// RFC 9068 §2.2.1 / RFC 8176: how the user proved who they are in the session (`pwd`;
    /// `pwd otp mfa` after a second factor).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// RFC 9068 §2.2.1 / OIDC Core §2: the class of that sign-in (`crate::mfa::acr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
}

/// An access token whose signature was verified, and the key that verified it.
pub(crate) struct Verified {
    kid: String,
    claims: AccessClaims,
}

/// At most this many verified tokens are kept (about 1 KiB each), each at most 10 minutes.
pub(crate) fn verified_cache() -> moka::sync::Cache<[u8; 32], Arc<Verified>> {
    moka::sync::Cache::builder()
        .max_capacity(16_384)
        .time_to_live(std::time::Duration::from_secs(600))
        .build()
}

/// Why a token was refused. Never shown to the client beyond `invalid_token`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported or wrong token type")]
    WrongType,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("algorithm does not match the key")]
    AlgorithmMismatch,
    #[error("invalid signature or claims: {0}")]
    Invalid(String),
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

/// Signs `claims` as a compact JWS with `key`.
pub fn sign<T: Serialize>(key: &SigningKey, typ: &str, claims: &T) -> anyhow::Result<String> {
    let header = serde_json::to_vec(&Header {
        alg: key.alg.as_str(),
        typ,
        kid: &key.kid,
    })?;
    let payload = serde_json::to_vec(claims)?;
    let mut out = String::with_capacity(64 + payload.len() * 4 / 3 + 350);
    URL_SAFE_NO_PAD.encode_string(&header, &mut out);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut out);
    let sig = key.sign(out.as_bytes())?;
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(&sig, &mut out);
    Ok(out)
}

impl Keys {
    /// Signs an access token with the current key.
    pub fn sign_access_token(&self, claims: &AccessClaims) -> anyhow::Result<String> {
        sign(&self.current().current, ACCESS_TOKEN_TYP, claims)
    }

    /// Validates a first-party access token: header, signature, `iss`, `aud` (the configured
    /// audience), `exp` and `nbf` at `now`.
    pub async fn verify_access_token(
        &self,
        token: &str,
        now: i64,
    ) -> Result<AccessClaims, TokenError> {
        let audience = self.config().audience.clone();
        self.verify_access_token_for(token, now, Some(&audience))
            .await
    }

    /// Validates an access token for `audience`, or for any audience with `None`.
    ///
    /// A token's signature is verified once: the claims of a verified token are kept (by the
    /// SHA-256 of the whole token, so only that exact token finds them) with the id of the key
    /// that signed it, and used again only while that key still verifies (a revoked or removed
    /// key ends its tokens here too). Audience, expiry and not-before are checked on every call,
    /// revocation by the caller.
    pub async fn verify_access_token_for(
        &self,
        token: &str,
        now: i64,
        audience: Option<&str>,
    ) -> Result<AccessClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let digest: [u8; 32] = digest::digest(&digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .map_err(|_| TokenError::Malformed)?;
        let cached = self
            .inner
            .verified
            .get(&digest)
            .filter(|v| self.current().verify.contains_key(&v.kid));
        let claims = match cached {
            Some(v) => v.claims.clone(),
            None => {
                let (claims, kid): (AccessClaims, String) = self
                    .verify_signed_with_kid(token, Some(ACCESS_TOKEN_TYP), now)
                    .await?;
                // Only live tokens are worth keeping (an expired one fails below every time).
                if claims.exp > now {
                    self.inner.verified.insert(
                        digest,
                        Arc::new(Verified {
                            kid,
                            claims: claims.clone(),
                        }),
                    );
                }
                claims
            }
        };
        if audience.is_some_and(|a| a != claims.aud) {
            return Err(TokenError::Invalid("wrong audience".into()));
        }
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }

    /// Validates an ID token Tessera issued, ignoring its expiry (OIDC RP-Initiated Logout
    /// §2: an expired `id_token_hint` is still a hint).
    pub async fn verify_id_token_hint(
        &self,
        token: &str,
        now: i64,
    ) -> Result<serde_json::Value, TokenError> {
        self.verify_signed(token, None, now).await
    }

    /// Header, `kid`, algorithm pinned to the key, signature and `iss`.
    async fn verify_signed<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        typ: Option<&str>,
        now: i64,
    ) -> Result<T, TokenError> {
        Ok(self.verify_signed_with_kid(token, typ, now).await?.0)
    }

    /// [`Self::verify_signed`], also returning the id of the key that verified the token.
    async fn verify_signed_with_kid<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        typ: Option<&str>,
        now: i64,
    ) -> Result<(T, String), TokenError> {
        if token.len() > MAX_TOKEN_LEN || token.bytes().filter(|b| *b == b'.').count() != 2 {
            return Err(TokenError::Malformed);
        }
        // Unknown algorithms, including "none", fail to parse here.
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if let Some(typ) = typ
            && header.typ.as_deref() != Some(typ)
        {
            return Err(TokenError::WrongType);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let mut set = self.current();
        if !set.verify.contains_key(&kid) && self.reload_for_unknown_kid(now).await {
            set = self.current();
        }
        let key = set.verify.get(&kid).ok_or(TokenError::UnknownKey)?;
        if header.alg != key.alg.jwt() {
            return Err(TokenError::AlgorithmMismatch);
        }
        let data = jsonwebtoken::decode::<T>(token, &key.key, &key.validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        Ok((data.claims, kid))
    }
}
