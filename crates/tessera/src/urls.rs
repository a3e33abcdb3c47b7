//! URLs from operators and clients (redirect URIs, webhook URLs, link templates, the issuer),
//! parsed with the `url` crate (WHATWG URL Standard) rather than by string tests.
//!
//! A value must already be in the parser's canonical form: `https:///x` (which the standard
//! quietly reads as host `x`), a backslash, an upper-case host or a tab are refused instead of
//! being stored in one form and compared in another.

use url::{Host, Url};

/// Parses `s` as an absolute URL in canonical form.
pub fn canonical(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("is not a valid URL ({e})"))?;
    if url.cannot_be_a_base() && !matches!(url.scheme(), "http" | "https") {
        // Private-use schemes such as `com.example.app:/cb` (RFC 8252 §7.1) have no authority.
        return same(s, url);
    }
    let rest = &s[url.scheme().len() + 1..];
    if matches!(url.scheme(), "http" | "https")
        && (!rest.starts_with("//") || rest[2..].starts_with('/'))
    {
        return Err("must have a host after the scheme (scheme://host/...)".into());
    }
    same(s, url)
}

fn same(s: &str, url: Url) -> Result<Url, String> {
    let serialised = url.as_str();
    if serialised == s || serialised.strip_suffix('/') == Some(s) && url.path() == "/" {
        Ok(url)
    } else {
        Err(format!(
            "is not in canonical form; write it as {serialised:?}"
        ))
    }
}

/// An absolute `http` or `https` URL with a host, in canonical form.
pub fn http_url(s: &str) -> Result<Url, String> {
    let url = canonical(s)?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("must be an absolute http(s) URL".into());
    }
    Ok(url)
}

/// Whether the URL's host is this machine: `localhost`, 127.0.0.0/8 or `[::1]`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d == "localhost",
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// An `https` URL, or `http` to a loopback host (local development).
pub fn https_or_loopback(s: &str) -> Result<Url, String> {
    let url = http_url(s)?;
    if url.scheme() == "http" && !is_loopback(&url) {
        return Err("must use https (http only for loopback hosts)".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_required_and_forms_canonical() {
        assert!(http_url("https://app.example.com/cb").is_ok());
        assert!(http_url("https://app.example.com").is_ok());
        assert!(http_url("http://127.0.0.1:8080/cb?x=1").is_ok());
        for bad in [
            "https:///x",
            "https:/x",
            "https:x",
            "https://App.example.com/cb",
            "https://app.example.com\\@evil.example/",
            "https://app.example.com/a b",
            "ftp://app.example.com/",
            "/relative",
            "",
        ] {
            assert!(http_url(bad).is_err(), "{bad}");
        }
        assert!(canonical("com.example.app:/oauth2redirect").is_ok());
    }

    #[test]
    fn webhooks_need_https_except_on_loopback() {
        assert!(https_or_loopback("https://hooks.example.com/in").is_ok());
        assert!(https_or_loopback("http://127.0.0.1:9000/in").is_ok());
        assert!(https_or_loopback("http://localhost/in").is_ok());
        assert!(https_or_loopback("http://[::1]:9/in").is_ok());
        assert!(https_or_loopback("http://hooks.example.com/in").is_err());
        assert!(https_or_loopback("http://localhost.evil.example/in").is_err());
    }
}
