//! Address lists: `server.trusted_proxies`, `server.allow_ips` /
//! `server.deny_ips` and `clients[].allow_ips`, each a list of CIDRs or
//! single addresses.

use ipnet::IpNet;
use std::net::IpAddr;

/// The header trusted proxies name the client in (`server.client_ip_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientIpHeader {
    /// `X-Forwarded-For` (nginx's `$proxy_add_x_forwarded_for`).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=`.
    Forwarded,
    /// `X-Real-IP`.
    XRealIp,
}

/// A list of networks (empty: none).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Nets(Vec<IpNet>);

impl Nets {
    /// Parses `raw` (at YAML `path`), pushing a problem per bad entry.
    pub fn parse(path: &str, raw: Option<Vec<String>>, e: &mut Vec<String>) -> Nets {
        let mut nets = Vec::new();
        for (i, item) in raw.unwrap_or_default().into_iter().enumerate() {
            let text = item.trim();
            let net = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
            match net {
                Ok(n) => nets.push(unmapped(n).trunc()),
                Err(_) => e.push(format!(
                    "{path}[{i}]: {text:?} is not an address or a CIDR such as 10.0.0.0/8 or ::1/128"
                )),
            }
        }
        Nets(nets)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The networks as written in a config (`10.0.0.0/8, ::1/128`).
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether `ip` (IPv4-mapped IPv6 read as IPv4) is in one of the networks.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        let ip = canonical(*ip);
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// `::ffff:a.b.c.d/N` (N ≥ 96) as `a.b.c.d/(N-96)`: addresses are compared
/// in IPv4 form.
fn unmapped(n: IpNet) -> IpNet {
    match n {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => v6
            .addr()
            .to_ipv4_mapped()
            .and_then(|v4| ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).ok())
            .map_or(n, IpNet::V4),
        other => other,
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; others as they are.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether a request's `Host` (with or without a port) is one the admin
/// listener and the dashboard answer to: an IP address, `localhost` (or a
/// name under it), or one of `names`. A page from another name that resolves
/// to this machine (DNS rebinding) is refused. No `Host`: allowed (not a
/// browser).
pub fn host_allowed(host: Option<&str>, names: &[String]) -> bool {
    let Some(host) = host else { return true };
    let name = match host.rsplit_once(':') {
        _ if host.starts_with('[') => return host.contains(']'),
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || names.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_a_rebinding_page_cannot_use() {
        let names = vec!["gw.example.com".to_string()];
        for ok in [
            None,
            Some("127.0.0.1:4001"),
            Some("[::1]:4001"),
            Some("localhost"),
            Some("LOCALHOST:4001"),
            Some("gw.example.com:4001"),
            Some("10.1.2.3"),
        ] {
            assert!(host_allowed(ok, &names), "{ok:?}");
        }
        for bad in [
            Some("evil.example:4001"),
            Some("attacker.com"),
            Some("localhost.evil.com"),
            Some(""),
        ] {
            assert!(!host_allowed(bad, &names), "{bad:?}");
        }
    }

    #[test]
    fn parses_cidrs_and_addresses_and_names_bad_entries() {
        let mut e = Vec::new();
        let raw = [
            "10.0.0.0/8",
            " 192.168.1.7 ",
            "::1",
            "fd00::/8",
            "10.1.2.3/8",
        ];
        let nets = Nets::parse(
            "server.trusted_proxies",
            Some(raw.map(String::from).to_vec()),
            &mut e,
        );
        assert!(e.is_empty(), "{e:?}");
        for ip in [
            "10.9.9.9",
            "192.168.1.7",
            "::1",
            "fd12::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(nets.contains(&ip.parse().unwrap()), "{ip}");
        }
        for ip in ["11.0.0.1", "192.168.1.8", "::2"] {
            assert!(!nets.contains(&ip.parse().unwrap()), "{ip}");
        }
        let bad = ["10.0.0.0/33", "localhost", "", "1.2.3"]
            .map(String::from)
            .to_vec();
        Nets::parse("server.allow_ips", Some(bad), &mut e);
        assert_eq!(e.len(), 4);
        assert!(
            e[0].starts_with("server.allow_ips[0]: \"10.0.0.0/33\""),
            "{e:?}"
        );
    }
}
