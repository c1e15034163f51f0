//! Who is really calling: the TCP peer, or, when the peer is one of
//! `server.trusted_proxies`, the client named by the header those proxies
//! write (`server.client_ip_header`: `X-Forwarded-For`, `Forwarded` or
//! `X-Real-IP`; any other is ignored). A request that carries one of those
//! headers from a peer that is not trusted is still the peer's, and is never
//! a loopback caller: behind a same-host reverse proxy the internet is not
//! local.

use crate::config::edge::{canonical, ClientIpHeader, Nets};
use std::net::{IpAddr, SocketAddr};

/// The caller's address as the gateway decides on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The real client (`None`: a Unix-socket peer with no trusted proxy
    /// naming anyone, or a proxy chain the gateway could not read).
    pub ip: Option<IpAddr>,
    /// May be served as a local caller (loopback or Unix socket, not
    /// forwarded for someone else).
    pub local: bool,
}

const FORWARDING: [&str; 3] = ["x-forwarded-for", "forwarded", "x-real-ip"];

/// How to read a request's forwarding headers.
#[derive(Debug, Clone, Copy)]
pub struct Trust<'n> {
    /// `server.trusted_proxies`.
    pub proxies: &'n Nets,
    /// `server.client_ip_header`: the one header those proxies write.
    pub source: ClientIpHeader,
    /// Whether `local` is wanted: without it (a gateway with `clients`),
    /// an untrusted peer's headers are not read at all and `local` is false.
    pub need_local: bool,
}

/// Works out the client address. `peer`: the TCP peer (`None`: Unix socket,
/// trusted as a proxy when `trust.proxies` holds a loopback address);
/// `header(name)` gives every value of a request header.
pub fn client_addr<'a, I>(
    peer: Option<IpAddr>,
    header: impl Fn(&str) -> I,
    trust: &Trust<'_>,
) -> ClientAddr
where
    I: Iterator<Item = &'a str>,
{
    let (trusted, source) = (trust.proxies, trust.source);
    let peer = peer.map(canonical);
    let peer_local = peer.is_none_or(|ip| ip.is_loopback());
    let peer_trusted =
        !trusted.is_empty() && trusted.contains(&peer.unwrap_or(IpAddr::from([127, 0, 0, 1])));
    let read_headers = peer_trusted || (peer_local && trust.need_local);
    if !read_headers {
        // the peer is the client; what it forwards matters only to `local`
        return ClientAddr {
            ip: peer,
            local: false,
        };
    }
    let proxied = FORWARDING.iter().any(|h| header(h).next().is_some());
    if !proxied {
        return ClientAddr {
            ip: peer,
            local: peer_local,
        };
    }
    let chain = forwarded_chain(&header, source);
    if !peer_trusted || chain.is_empty() {
        // an untrusted peer's word, or a header the proxy does not write
        return ClientAddr {
            ip: peer,
            local: false,
        };
    }
    // from the nearest hop back: the first address not a trusted proxy
    let mut real = peer;
    for hop in chain.iter().rev() {
        match hop {
            Some(ip) if trusted.contains(ip) => real = Some(*ip),
            Some(ip) => {
                return ClientAddr {
                    ip: Some(*ip),
                    local: false,
                }
            }
            // an unreadable hop (`unknown`, garbage): the client is not known
            None => {
                return ClientAddr {
                    ip: None,
                    local: false,
                }
            }
        }
    }
    // local only when the proxy and every hop are this machine: a trusted
    // network's client cannot claim to be 127.0.0.1
    let all_loopback = peer_local && chain.iter().all(|h| h.is_some_and(|ip| ip.is_loopback()));
    ClientAddr {
        ip: real,
        local: all_loopback,
    }
}

/// The hops `source` lists, oldest first.
fn forwarded_chain<'a, I>(
    header: &impl Fn(&str) -> I,
    source: ClientIpHeader,
) -> Vec<Option<IpAddr>>
where
    I: Iterator<Item = &'a str>,
{
    match source {
        ClientIpHeader::XForwardedFor => header("x-forwarded-for")
            .flat_map(|v| v.split(','))
            .map(parse_hop)
            .collect(),
        ClientIpHeader::Forwarded => header("forwarded")
            .flat_map(|v| v.split(','))
            .map(|element| {
                element
                    .split(';')
                    .find_map(|pair| {
                        let (k, v) = pair.trim().split_once('=')?;
                        k.trim().eq_ignore_ascii_case("for").then_some(v)
                    })
                    .and_then(parse_hop)
            })
            .collect(),
        ClientIpHeader::XRealIp => header("x-real-ip").map(parse_hop).collect(),
    }
}

/// One hop: `1.2.3.4`, `1.2.3.4:80`, `"[::1]:80"`, `::1`; else `None`.
fn parse_hop(text: &str) -> Option<IpAddr> {
    let t = text.trim().trim_matches('"');
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = t.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    t.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse().ok())
        .map(canonical)
}

/// Whether the address passes `allow` (empty: all) and `deny`. An unknown
/// address passes only when neither list is set.
pub fn permitted(ip: Option<IpAddr>, allow: &Nets, deny: &Nets) -> bool {
    match ip {
        Some(ip) => (allow.is_empty() || allow.contains(&ip)) && !deny.contains(&ip),
        None => allow.is_empty() && deny.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Nets {
        let mut e = Vec::new();
        let n = Nets::parse(
            "t",
            Some(list.iter().map(|s| s.to_string()).collect()),
            &mut e,
        );
        assert!(e.is_empty());
        n
    }

    fn addr(peer: &str, headers: &[(&str, &str)], trusted: &[&str]) -> ClientAddr {
        let source = match headers.first().map(|h| h.0) {
            Some("forwarded") => ClientIpHeader::Forwarded,
            Some("x-real-ip") => ClientIpHeader::XRealIp,
            _ => ClientIpHeader::XForwardedFor,
        };
        addr_from(peer, headers, trusted, source)
    }

    fn addr_from(
        peer: &str,
        headers: &[(&str, &str)],
        trusted: &[&str],
        source: ClientIpHeader,
    ) -> ClientAddr {
        let get = |name: &str| {
            let name = name.to_string();
            headers
                .iter()
                .filter(move |(n, _)| *n == name)
                .map(|(_, v)| *v)
        };
        let proxies = nets(trusted);
        let trust = Trust {
            proxies: &proxies,
            source,
            need_local: true,
        };
        client_addr(peer.parse().ok(), get, &trust)
    }

    #[test]
    fn an_untrusted_peer_is_itself_and_forwarding_makes_it_remote() {
        let local = addr("127.0.0.1", &[], &[]);
        assert_eq!(
            local,
            ClientAddr {
                ip: Some([127, 0, 0, 1].into()),
                local: true
            }
        );
        let behind = addr("127.0.0.1", &[("x-forwarded-for", "203.0.113.9")], &[]);
        assert_eq!(
            behind,
            ClientAddr {
                ip: Some([127, 0, 0, 1].into()),
                local: false
            }
        );
        let spoof = addr("198.51.100.1", &[("x-forwarded-for", "127.0.0.1")], &[]);
        assert!(!spoof.local && spoof.ip == Some([198, 51, 100, 1].into()));
        assert!(addr("", &[], &[]).local, "a unix socket is local");
        assert!(!addr("", &[("x-real-ip", "1.2.3.4")], &[]).local);
    }

    #[test]
    fn trusted_proxies_name_the_first_untrusted_hop_from_the_right() {
        let t = ["127.0.0.1", "10.0.0.0/8"];
        let a = addr(
            "127.0.0.1",
            &[("x-forwarded-for", "127.0.0.1, 198.51.100.7, 10.1.1.1")],
            &t,
        );
        assert_eq!(
            a,
            ClientAddr {
                ip: Some([198, 51, 100, 7].into()),
                local: false
            }
        );
        let two = addr(
            "10.0.0.2",
            &[
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-for", "5.5.5.5"),
            ],
            &t,
        );
        assert_eq!(two.ip, Some([5, 5, 5, 5].into()));
        let fwd = addr(
            "::1",
            &[("forwarded", "for=\"[2001:db8::7]:4711\";proto=https")],
            &["::1"],
        );
        assert_eq!(fwd.ip, Some("2001:db8::7".parse().unwrap()));
        let all_local = addr("127.0.0.1", &[("x-forwarded-for", "127.0.0.1")], &t);
        assert!(all_local.local);
        let garbage = addr("127.0.0.1", &[("x-forwarded-for", "unknown")], &t);
        assert_eq!(
            garbage,
            ClientAddr {
                ip: None,
                local: false
            }
        );
        let real = addr("127.0.0.1", &[("x-real-ip", "192.0.2.4:99")], &t);
        assert_eq!(real.ip, Some([192, 0, 2, 4].into()));
        // a proxy that writes X-Real-IP: a client's own X-Forwarded-For is not believed
        let headers = [
            ("x-forwarded-for", "127.0.0.1"),
            ("x-real-ip", "198.51.100.3"),
        ];
        let a = addr_from("127.0.0.1", &headers, &t, ClientIpHeader::XRealIp);
        assert_eq!(
            a,
            ClientAddr {
                ip: Some([198, 51, 100, 3].into()),
                local: false
            }
        );
        let only_xff = addr_from("127.0.0.1", &headers[..1], &t, ClientIpHeader::XRealIp);
        assert_eq!(
            only_xff,
            ClientAddr {
                ip: Some([127, 0, 0, 1].into()),
                local: false
            }
        );
    }

    #[test]
    fn allow_and_deny_lists() {
        let (allow, deny) = (nets(&["10.0.0.0/8"]), nets(&["10.6.0.0/16"]));
        assert!(permitted(Some([10, 1, 0, 1].into()), &allow, &deny));
        assert!(!permitted(Some([10, 6, 0, 1].into()), &allow, &deny));
        assert!(!permitted(Some([11, 0, 0, 1].into()), &allow, &deny));
        assert!(!permitted(None, &allow, &Nets::default()));
        assert!(permitted(None, &Nets::default(), &Nets::default()));
    }
}
