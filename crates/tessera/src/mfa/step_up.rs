//! Step-up (RFC 9470): Tessera's own sensitive actions need a sign-in that is recent enough and
//! strong enough, and say which when it is not: 401 `insufficient_user_authentication` with
//! `WWW-Authenticate: Bearer error="insufficient_user_authentication", acr_values=…, max_age=…`
//! (RFC 9470 §3), which a client satisfies through the authorization endpoint (`acr_values`,
//! `max_age`, RFC 9470 §4) or, for Tessera's own login, by signing in again.
//!
//! "Strong enough" is per account: more than one factor (`urn:tessera:acr:mfa`) once the account
//! has a second factor, else the password. What needs it, and how recent:
//! - changing the second factors (add, remove, replace the recovery codes): five minutes;
//! - creating an API key: five minutes;
//! - changing the password: the current password is asked for, and the session must be strong
//!   enough (any age);
//! - every change through the admin API (not reading): one hour.

use super::acr::Acr;
use crate::authz::UserPrincipal;
use crate::core::Core;
use crate::error::{Error, Result};

/// How recent (seconds) the sign-in must be to change second factors or create an API key.
pub const ACCOUNT_SECS: i64 = super::RECENT_AUTH_SECS;
/// How recent (seconds) the sign-in must be for a change through the admin API.
pub const ADMIN_SECS: i64 = 3600;

/// What an action asked of the caller's sign-in and did not get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needed {
    pub acr: Acr,
    /// `None`: any age.
    pub max_age: Option<i64>,
}

impl Needed {
    /// RFC 9470 §3: the `WWW-Authenticate` challenge.
    pub fn challenge(&self) -> String {
        let mut value = format!(
            r#"Bearer realm="tessera", error="insufficient_user_authentication", error_description="a more recent or stronger authentication is required", acr_values="{}""#,
            self.acr.as_str()
        );
        if let Some(max_age) = self.max_age {
            value.push_str(&format!(r#", max_age="{max_age}""#));
        }
        value
    }
}

/// The class a sensitive action needs of `user_id`: more than one factor once they have one.
pub async fn strong_enough(state: &Core, user_id: &str) -> Result<Acr> {
    let factors = crate::store::mfa::count_confirmed(state.store.pool(), user_id).await?;
    Ok(if factors > 0 { Acr::Mfa } else { Acr::Pwd })
}

/// How the caller's session signed in: when, and its class.
async fn signed_in(state: &Core, caller: &UserPrincipal) -> Result<Option<(i64, Acr)>> {
    let found =
        crate::store::sessions::authentication_of(state.store.pool(), &caller.session_id).await?;
    Ok(found.map(|(at, amr)| (at, Acr::of_amr(amr.as_deref().unwrap_or_default()))))
}

/// Whether the caller's sign-in is at least `acr`, and whether it is within `max_age`.
pub async fn check(
    state: &Core,
    caller: &UserPrincipal,
    acr: Acr,
    max_age: Option<i64>,
    now: i64,
) -> Result<(bool, bool)> {
    Ok(match signed_in(state, caller).await? {
        Some((at, class)) => (class.satisfies(acr), max_age.is_none_or(|m| now - at <= m)),
        None => (false, false),
    })
}

/// Refuses (RFC 9470) unless the caller's sign-in is strong enough for their account and no
/// older than `max_age`.
pub async fn require(
    state: &Core,
    caller: &UserPrincipal,
    max_age: Option<i64>,
    now: i64,
) -> Result<()> {
    let acr = strong_enough(state, &caller.user_id).await?;
    match check(state, caller, acr, max_age, now).await? {
        (true, true) => Ok(()),
        _ => Err(Error::StepUp(Needed { acr, max_age })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_names_the_class_and_the_age() {
        let needed = Needed {
            acr: Acr::Mfa,
            max_age: Some(300),
        };
        let value = needed.challenge();
        assert!(
            value
                .starts_with(r#"Bearer realm="tessera", error="insufficient_user_authentication""#)
        );
        assert!(
            value.ends_with(r#"acr_values="urn:tessera:acr:mfa", max_age="300""#),
            "{value}"
        );
        let any_age = Needed {
            acr: Acr::Pwd,
            max_age: None,
        };
        assert!(!any_age.challenge().contains("max_age"));
    }
}
