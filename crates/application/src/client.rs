//! Which address a request comes from: the socket's peer, or, only when that peer is a trusted
//! proxy, the address it forwarded.

use std::net::IpAddr;

use ipnet::IpNet;

/// Networks whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses CIDRs (`10.0.0.0/8`) or single addresses.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| {
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("`{e}` is not an address or CIDR"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address. `X-Forwarded-For` is read right to left, skipping trusted proxies:
    /// the first address not trusted is the client, since anything left of it could be forged.
    pub fn client(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d.
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for hop in forwarded_for.unwrap_or_default().rsplit(',') {
            match hop.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) {
                Ok(ip) => {
                    client = ip;
                    if !self.trusts(ip) {
                        break;
                    }
                }
                // A malformed hop ends what can be believed.
                Err(_) => break,
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let trusted = TrustedProxies::parse(&["10.0.0.0/8".into(), "192.168.1.1".into()]).unwrap();
        let cases = [
            (
                "untrusted peer, spoofed header",
                "203.0.113.9",
                Some("1.2.3.4"),
                "203.0.113.9",
            ),
            (
                "trusted peer, one hop",
                "10.1.1.1",
                Some("198.51.100.7"),
                "198.51.100.7",
            ),
            (
                "spoofed left part ignored",
                "10.1.1.1",
                Some("1.2.3.4, 198.51.100.7"),
                "198.51.100.7",
            ),
            (
                "chain of trusted proxies",
                "10.1.1.1",
                Some("198.51.100.7, 192.168.1.1"),
                "198.51.100.7",
            ),
            ("trusted peer, no header", "10.1.1.1", None, "10.1.1.1"),
            (
                "garbage hop stops the walk",
                "10.1.1.1",
                Some("1.2.3.4, nonsense"),
                "10.1.1.1",
            ),
        ];
        for (name, peer, header, expected) in cases {
            assert_eq!(trusted.client(ip(peer), header), ip(expected), "{name}");
        }
        assert_eq!(
            trusted.client(ip("::ffff:10.1.1.1"), Some("198.51.100.7")),
            ip("198.51.100.7"),
            "IPv4-mapped peers are matched as IPv4"
        );
        let nobody = TrustedProxies::default();
        assert_eq!(
            nobody.client(ip("10.1.1.1"), Some("1.2.3.4")),
            ip("10.1.1.1")
        );
        assert!(TrustedProxies::parse(&["not-a-net".into()]).is_err());
    }
}
