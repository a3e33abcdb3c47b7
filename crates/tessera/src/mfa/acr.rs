//! Authentication Context Class References: how strong a sign-in was, as one ordered value
//! (OIDC Core §2 `acr`, §3.1.2.1 `acr_values`; RFC 9470 §3 and §4). Derived from the sign-in's
//! RFC 8176 methods (`amr`), so every token, code and session that carries `amr` has it.
//!
//! The classes, weakest first; a stronger one satisfies a request for a weaker one:
//! - `urn:tessera:acr:pwd`: one factor (the password).
//! - `urn:tessera:acr:mfa`: more than one factor (password and an app or recovery code, or a
//!   passkey with user verification).
//! - `phr`: phishing-resistant (OpenID EAP ACR Values 1.0 §2): a WebAuthn key, bound to this
//!   origin, as the second factor or as a passkey.

use crate::error::wire_codes;

wire_codes! {
/// A class of sign-in, ordered: `Pwd < Mfa < Phr`.
pub enum Acr {
    /// The password alone.
    Pwd => "urn:tessera:acr:pwd",
    /// More than one factor.
    Mfa => "urn:tessera:acr:mfa",
    /// A phishing-resistant factor (WebAuthn).
    Phr => "phr",
}
}

impl Acr {
    /// The class of a sign-in with these RFC 8176 methods (space-separated).
    pub fn of_amr(amr: &str) -> Self {
        let has = |m: &str| amr.split_whitespace().any(|x| x == m);
        if has("hwk") || has("swk") {
            Self::Phr
        } else if has("mfa") {
            Self::Mfa
        } else {
            Self::Pwd
        }
    }

    pub fn rank(self) -> u8 {
        match self {
            Self::Pwd => 0,
            Self::Mfa => 1,
            Self::Phr => 2,
        }
    }

    /// Whether a sign-in of this class satisfies a request for `wanted`.
    pub fn satisfies(self, wanted: Self) -> bool {
        self.rank() >= wanted.rank()
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.as_str() == s)
    }

    /// The weakest class that satisfies an `acr_values` request (space-separated, in order of
    /// preference; OIDC Core §3.1.2.1): unknown values are ignored, as for any voluntary claim.
    /// `None` when no value is known.
    pub fn needed(acr_values: &str) -> Option<Self> {
        acr_values
            .split_whitespace()
            .filter_map(Self::parse)
            .min_by_key(|a| a.rank())
    }
}

/// The `acr` claim of a sign-in with these methods (none without methods: machines, API keys).
pub fn claim(amr: Option<&str>) -> Option<String> {
    amr.map(|a| Acr::of_amr(a).as_str().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_methods_and_are_ordered() {
        assert_eq!(Acr::of_amr("pwd"), Acr::Pwd);
        assert_eq!(Acr::of_amr("pwd otp mfa"), Acr::Mfa);
        assert_eq!(Acr::of_amr("pwd hwk mfa"), Acr::Phr);
        assert_eq!(Acr::of_amr("swk user mfa"), Acr::Phr);
        assert!(Acr::Phr.satisfies(Acr::Mfa) && Acr::Mfa.satisfies(Acr::Pwd));
        assert!(!Acr::Pwd.satisfies(Acr::Mfa) && !Acr::Mfa.satisfies(Acr::Phr));
        assert_eq!(Acr::needed("phr urn:tessera:acr:mfa"), Some(Acr::Mfa));
        assert_eq!(Acr::needed("urn:other:gold phr"), Some(Acr::Phr));
        assert_eq!(Acr::needed("urn:other:gold"), None);
        assert_eq!(claim(None), None);
    }
}
