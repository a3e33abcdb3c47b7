//! The client's IP address: the socket peer, or, only when the peer is a configured trusted
//! proxy, the right-most address in `X-Forwarded-For` that is not itself a trusted proxy.
//!
//! Walking the hops right to left, the first one that does not parse (after stripping a port
//! and IPv6 brackets) ends the walk at the last trusted hop: an attacker-supplied value further
//! left is never reached through it. IPv4-mapped IPv6 addresses count as their IPv4 address.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Parses `10.0.0.1` or `10.0.0.0/8` (IPv6 likewise).
pub fn parse_net(s: &str) -> Option<IpNet> {
    match s.parse::<IpNet>() {
        Ok(net) => Some(net),
        Err(_) => s.parse::<IpAddr>().ok().map(IpNet::from),
    }
}

/// `::ffff:192.0.2.1` is `192.0.2.1`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// One `X-Forwarded-For` hop: `203.0.113.7`, `203.0.113.7:4711`, `[2001:db8::1]:443` or
/// `2001:db8::1`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        return port_ok
            .then(|| inner.parse::<IpAddr>().ok().map(canonical))
            .flatten();
    }
    let (addr, port) = hop.rsplit_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The configured trusted proxies.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn parse(list: &str) -> Self {
        Self(
            list.split(',')
                .map(str::trim)
                .filter_map(parse_net)
                .collect(),
        )
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client IP for a request from `peer` with `headers`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        let values: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().unwrap_or(""))
            .collect();
        for hop in values.iter().rev().flat_map(|v| v.rsplit(',')) {
            let Some(ip) = parse_hop(hop) else {
                return client;
            };
            client = ip;
            if !self.trusts(ip) {
                return ip;
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, ::1");
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "6.6.6.6, 203.0.113.7, 10.1.2.3".parse().unwrap(),
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            proxies.client_ip(ip("10.0.0.5"), &h),
            ip("203.0.113.7"),
            "right-most untrusted hop"
        );
        assert_eq!(
            proxies.client_ip(ip("198.51.100.1"), &h),
            ip("198.51.100.1"),
            "untrusted peer: header ignored"
        );
        assert_eq!(
            proxies.client_ip(ip("10.0.0.5"), &HeaderMap::new()),
            ip("10.0.0.5")
        );
        assert!(parse_net("10.0.0.0/33").is_none() && parse_net("nope").is_none());
        assert!(parse_net("2001:db8::/32").is_some());
    }

    #[test]
    fn forwarded_for_stops_at_the_first_hop_that_does_not_parse() {
        let proxies = TrustedProxies::parse("10.0.0.0/8");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut h = HeaderMap::new();
        // The attacker's own value (left) must not be reached through the garbage hop.
        h.insert(
            "x-forwarded-for",
            "6.6.6.6, not-an-ip, 10.1.2.3".parse().unwrap(),
        );
        assert_eq!(proxies.client_ip(ip("10.0.0.5"), &h), ip("10.1.2.3"));
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "6.6.6.6, 203.0.113.7:4711".parse().unwrap(),
        );
        assert_eq!(proxies.client_ip(ip("10.0.0.5"), &h), ip("203.0.113.7"));
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "[2001:db8::7]:443, 10.9.9.9".parse().unwrap(),
        );
        assert_eq!(proxies.client_ip(ip("10.0.0.5"), &h), ip("2001:db8::7"));
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "::ffff:203.0.113.9".parse().unwrap());
        assert_eq!(
            proxies.client_ip(ip("::ffff:10.0.0.5"), &h),
            ip("203.0.113.9")
        );
        assert_eq!(
            proxies.client_ip(ip("::ffff:198.51.100.1"), &HeaderMap::new()),
            ip("198.51.100.1"),
            "IPv4-mapped peers are canonicalised"
        );
    }
}
