//! Scopes (RFC 6749 §3.3): space-delimited, case-sensitive tokens of `%x21 / %x23-5B / %x5D-7E`.

/// The scopes that need a user: OpenID Connect's, and [`TENANT`].
pub const OIDC_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access", TENANT];

/// Asks the authorization endpoint to let a user in several tenants pick the token's tenant on
/// a hosted page when the request names none (see `docs/tenants.md`).
pub const TENANT: &str = "tenant";

/// Splits a scope string, checking each token's characters. `None` if malformed.
pub fn parse(scope: &str) -> Option<Vec<&str>> {
    let tokens: Vec<&str> = scope.split(' ').filter(|t| !t.is_empty()).collect();
    let valid = tokens.iter().all(|t| {
        t.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
    });
    (valid && !tokens.is_empty() && tokens.len() <= 64).then_some(tokens)
}

/// Sorted, de-duplicated, space-joined.
pub fn normalize(tokens: &[&str]) -> String {
    let mut v: Vec<&str> = tokens.to_vec();
    v.sort_unstable();
    v.dedup();
    v.join(" ")
}

/// Whether every scope in `asked` is in `granted`.
pub fn is_subset(asked: &str, granted: &str) -> bool {
    let granted: Vec<&str> = granted.split(' ').collect();
    parse(asked).is_some_and(|a| a.iter().all(|s| granted.contains(s)))
}

pub fn contains(scope: &str, token: &str) -> bool {
    scope.split(' ').any(|s| s == token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_rules() {
        assert_eq!(parse("openid  email"), Some(vec!["openid", "email"]));
        assert_eq!(parse("bad\"quote"), None);
        assert_eq!(parse("back\\slash"), None);
        assert_eq!(parse(""), None);
        assert_eq!(normalize(&["b", "a", "b"]), "a b");
        assert!(is_subset("email openid", "openid profile email"));
        assert!(!is_subset("email admin", "openid profile email"));
        assert!(contains("openid offline_access", "offline_access"));
        assert!(!contains("openid offline", "offline_access"));
    }
}
