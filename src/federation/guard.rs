//! The SSRF guard every outbound client goes through: an address is
//! refused when it is loopback, private, link-local, CGNAT, multicast,
//! unspecified, documentation, benchmarking, reserved or a cloud metadata
//! address (IPv4-mapped IPv6 too), unless an allowlist names it. Host names
//! are checked on the addresses they resolve to, which are the ones the
//! client then connects to (so a second lookup cannot rebind them); IP
//! literals are checked on every request and on every redirect.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Which addresses outbound requests may reach.
#[derive(Debug, Clone, Default)]
pub struct AddressGuard {
    allowed: Arc<[IpNet]>,
}

/// Why an address was refused.
#[derive(Debug, thiserror::Error)]
#[error("{addr} is not a public address")]
pub struct Refused {
    pub addr: IpAddr,
}

impl AddressGuard {
    /// `allowed` ranges are reachable even when not public (private
    /// federations, tests).
    pub fn new(allowed: &[IpNet]) -> Self {
        Self {
            allowed: allowed.into(),
        }
    }

    pub fn check(&self, addr: IpAddr) -> Result<(), Refused> {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            IpAddr::V4(_) => addr,
        };
        if self.allowed.iter().any(|net| net.contains(&addr)) || is_public(addr) {
            Ok(())
        } else {
            Err(Refused { addr })
        }
    }

    /// Checks the host of `url` when it is an IP literal (names are checked
    /// when they resolve).
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refused> {
        match url.host() {
            Some(url::Host::Ipv4(v4)) => self.check(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => self.check(IpAddr::V6(v6)),
            _ => Ok(()),
        }
    }
}

fn is_public(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254 (cloud metadata)
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking 198.18.0.0/15
        || a >= 240) // reserved 240.0.0.0/4
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    if let Some(v4) = ip.to_ipv4() {
        // Mapped (::ffff:a.b.c.d) and the deprecated compatible form.
        if ip.to_ipv4_mapped().is_some() || segments[..6] == [0; 6] {
            return !ip.is_loopback() && !ip.is_unspecified() && is_public_v4(v4);
        }
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (segments[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || (segments[0] == 0x0064 && segments[1] == 0xff9b) // NAT64 (maps IPv4)
        || segments[0] == 0x0100 && segments[1..4] == [0; 3] // discard-only 100::/64
        || (segments[0] == 0x2002)) // 6to4 (maps IPv4)
}

/// DNS through the system resolver, keeping only permitted addresses. A
/// name with none left fails to resolve, naming the refused address. A name
/// that server discovery found behind an SRV record resolves as its target.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    guard: AddressGuard,
    srv_targets: Arc<std::sync::RwLock<std::collections::HashMap<String, String>>>,
}

impl GuardedResolver {
    pub fn new(guard: AddressGuard) -> Self {
        Self {
            guard,
            srv_targets: Arc::default(),
        }
    }

    pub fn guard(&self) -> &AddressGuard {
        &self.guard
    }

    /// From now on, connections to `name` go to `target`'s addresses (TLS
    /// still checks the certificate for `name`).
    pub fn set_srv_target(&self, name: &str, target: &str) {
        let mut targets = self
            .srv_targets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        targets.insert(name.to_ascii_lowercase(), target.to_owned());
    }

    fn target_of(&self, name: &str) -> String {
        let targets = self
            .srv_targets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        targets
            .get(&name.to_ascii_lowercase())
            .cloned()
            .unwrap_or_else(|| name.to_owned())
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard.clone();
        let host = self.target_of(name.as_str());
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let permitted: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| match guard.check(addr.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        refused = Some(e);
                        false
                    }
                })
                .collect();
            if permitted.is_empty() {
                return Err(match refused {
                    Some(e) => Box::new(e) as Box<dyn std::error::Error + Send + Sync>,
                    None => format!("{host} has no address").into(),
                });
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(guard: &AddressGuard, s: &str) -> bool {
        guard.check(s.parse().unwrap()).is_err()
    }

    #[test]
    fn private_and_special_addresses_are_refused() {
        let guard = AddressGuard::default();
        for addr in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "198.18.0.1",
            "192.0.0.170",
            "192.0.2.1",
            "::1",
            "::",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::10.0.0.1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "fd00:ec2::254",
        ] {
            assert!(refused(&guard, addr), "{addr} must be refused");
        }
        for addr in [
            "1.1.1.1",
            "93.184.216.34",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(!refused(&guard, addr), "{addr} is public");
        }
    }

    #[test]
    fn the_allowlist_opens_named_ranges_only() {
        let guard = AddressGuard::new(&["127.0.0.0/8".parse().unwrap()]);
        assert!(!refused(&guard, "127.0.0.2"));
        assert!(!refused(&guard, "::ffff:127.0.0.2"));
        assert!(refused(&guard, "10.0.0.1"));
        assert!(refused(&guard, "::1"));
    }

    #[test]
    fn literal_urls_are_checked() {
        let guard = AddressGuard::default();
        for url in [
            "https://127.0.0.1:8448/x",
            "https://[::ffff:10.0.0.1]/x",
            "http://169.254.169.254/latest/meta-data",
        ] {
            assert!(guard.check_url(&url.parse().unwrap()).is_err(), "{url}");
        }
        assert!(
            guard
                .check_url(&"https://matrix.org/x".parse().unwrap())
                .is_ok()
        );
    }

    #[tokio::test]
    async fn names_resolving_to_refused_addresses_fail() {
        let resolver = GuardedResolver::new(AddressGuard::default());
        let name: Name = "localhost".parse().unwrap();
        let Err(err) = resolver.resolve(name).await else {
            panic!("localhost must not resolve through the guard");
        };
        assert!(err.to_string().contains("not a public address"), "{err}");
    }
}
