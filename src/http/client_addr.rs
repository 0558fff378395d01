//! The client's address as logs should show it: the TCP peer, or, when the
//! peer is a trusted reverse proxy, the address that proxy was talking to,
//! read from `X-Forwarded-For` right to left past every trusted hop.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::HeaderMap,
    middleware::Next,
    response::Response,
};
use ipnet::IpNet;

/// The resolved client address, as a request extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(std::sync::Arc<[IpNet]>);

impl TrustedProxies {
    pub fn new(nets: &[IpNet]) -> Self {
        Self(nets.into())
    }

    fn trusts(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.0.iter().any(|net| net.contains(&addr))
    }

    /// The client behind `peer`, given the request's headers.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        if !self.trusts(client) {
            return client;
        }
        // Every X-Forwarded-For header, in order, as one list; the last
        // entry was added by the nearest proxy.
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.iter().rev() {
            let Some(addr) = parse_hop(hop) else {
                // An unreadable entry: nothing left of it can be believed.
                break;
            };
            client = addr;
            if !self.trusts(addr) {
                break;
            }
        }
        client
    }
}

/// `::ffff:a.b.c.d` is the IPv4 address it carries.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

/// One entry: a bare address, `[v6]`, or either with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(addr) = hop.parse::<IpAddr>() {
        return Some(canonical(addr));
    }
    if let Ok(sock) = hop.parse::<SocketAddr>() {
        return Some(canonical(sock.ip()));
    }
    hop.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<IpAddr>().ok())
        .map(canonical)
}

/// Middleware: puts [`ClientAddr`] on every request that has a peer.
pub async fn resolve_client(
    State(trusted): State<TrustedProxies>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        let client = trusted.resolve(peer.ip(), request.headers());
        request.extensions_mut().insert(ClientAddr(client));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append("x-forwarded-for", v.parse().unwrap());
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let trusted = TrustedProxies::new(&["127.0.0.1/32".parse().unwrap()]);
        let xff = headers(&["203.0.113.7"]);
        assert_eq!(trusted.resolve(ip("127.0.0.1"), &xff), ip("203.0.113.7"));
        assert_eq!(
            trusted.resolve(ip("198.51.100.1"), &xff),
            ip("198.51.100.1")
        );
        assert_eq!(
            TrustedProxies::default().resolve(ip("127.0.0.1"), &xff),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        let trusted = TrustedProxies::new(&[
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ]);
        // A client-supplied spoof on the left is never reached.
        let xff = headers(&["1.2.3.4, 203.0.113.7", "10.1.1.1"]);
        assert_eq!(trusted.resolve(ip("127.0.0.1"), &xff), ip("203.0.113.7"));
        // Garbage stops the walk at the last good hop.
        let xff = headers(&["203.0.113.7, not-an-ip, 10.1.1.1"]);
        assert_eq!(trusted.resolve(ip("127.0.0.1"), &xff), ip("10.1.1.1"));
        // Ports and brackets are accepted; mapped IPv4 is IPv4.
        let xff = headers(&["[2001:db8::1]:443"]);
        assert_eq!(
            trusted.resolve(ip("::ffff:127.0.0.1"), &xff),
            ip("2001:db8::1")
        );
        let xff = headers(&["198.51.100.9:5000"]);
        assert_eq!(trusted.resolve(ip("127.0.0.1"), &xff), ip("198.51.100.9"));
        // No header: the proxy itself.
        assert_eq!(
            trusted.resolve(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
    }
}
