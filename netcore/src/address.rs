//! `NetworkAddress`: where a peer listens, in a strict multiaddr-style text form.
//!
//! The accepted forms are exactly:
//!
//! ```text
//! /ip4/<ipv4>/tcp/<port>[/p2p/<peer id hex>]
//! /ip6/<ipv6>/tcp/<port>[/p2p/<peer id hex>]
//! /dns/<name>/tcp/<port>[/p2p/<peer id hex>]     (also /dns4 and /dns6)
//! /memory/<port>[/p2p/<peer id hex>]
//! ```
//!
//! The trailing `/p2p/` part names the peer expected behind the address; the Noise layer
//! uses it to know the listener's key before dialing.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use crate::peer_id::{PeerId, PeerIdError};

/// The longest address text accepted; far above any real address, it bounds the work a
/// hostile string can cause.
pub const MAX_ADDRESS_LENGTH: usize = 1024;

/// The longest DNS name (RFC 1035: 253 characters in text form).
const MAX_DNS_NAME_LENGTH: usize = 253;
/// The longest DNS label (RFC 1035).
const MAX_DNS_LABEL_LENGTH: usize = 63;

/// The host part of a TCP address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// `/ip4/<addr>`
    Ip4(Ipv4Addr),
    /// `/ip6/<addr>`
    Ip6(Ipv6Addr),
    /// `/dns/<name>`: resolved to any address family.
    Dns(DnsName),
    /// `/dns4/<name>`: resolved to IPv4 addresses only.
    Dns4(DnsName),
    /// `/dns6/<name>`: resolved to IPv6 addresses only.
    Dns6(DnsName),
}

/// A DNS name checked against RFC 1035's syntax: labels of letters, digits and hyphens,
/// 1 to 63 characters each, not starting or ending with a hyphen, 253 characters at most.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DnsName(String);

impl DnsName {
    /// Checks `name` and wraps it.
    pub fn new(name: &str) -> Result<Self, AddressError> {
        let invalid = || AddressError::InvalidDnsName(truncated(name));
        if name.is_empty() || name.len() > MAX_DNS_NAME_LENGTH {
            return Err(invalid());
        }
        for label in name.split('.') {
            let ok = !label.is_empty()
                && label.len() <= MAX_DNS_LABEL_LENGTH
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(invalid());
            }
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where the bytes go: a TCP endpoint or an in-memory port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A TCP host and port.
    Tcp {
        /// The host: an IP address or a DNS name.
        host: Host,
        /// The TCP port; 0 asks the listener to pick one.
        port: u16,
    },
    /// A `memsocket` port; 0 asks the listener to pick one.
    Memory(u16),
}

/// A peer's network address: an endpoint and, optionally, the peer expected there.
///
/// ```
/// use netcore::NetworkAddress;
///
/// let addr: NetworkAddress = "/ip4/127.0.0.1/tcp/6180".parse().unwrap();
/// assert_eq!(addr.to_string(), "/ip4/127.0.0.1/tcp/6180");
/// assert!(addr.peer_id().is_none());
/// assert!("/ip4/127.0.0.1/udp/6180".parse::<NetworkAddress>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NetworkAddress {
    endpoint: Endpoint,
    peer_id: Option<PeerId>,
}

/// Why a string is not a [`NetworkAddress`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The string is empty.
    #[error("an address is empty")]
    Empty,
    /// The string is longer than [`MAX_ADDRESS_LENGTH`].
    #[error("an address is at most {MAX_ADDRESS_LENGTH} characters, got {0}")]
    TooLong(usize),
    /// The string does not start with `/`.
    #[error("an address starts with '/'")]
    MissingLeadingSlash,
    /// Two slashes in a row, or a trailing slash.
    #[error("an address has an empty component")]
    EmptyComponent,
    /// A component names no known protocol.
    #[error("unknown protocol {0:?}")]
    UnknownProtocol(String),
    /// A protocol is not followed by its value.
    #[error("protocol {0} needs a value")]
    MissingValue(&'static str),
    /// A protocol appears where it does not belong, e.g. `/tcp` first, or anything after
    /// `/p2p`.
    #[error("protocol {found} is not allowed here (expected {expected})")]
    Unexpected {
        /// The protocol found.
        found: String,
        /// What was allowed at that place.
        expected: &'static str,
    },
    /// The address ends before it is complete, e.g. `/ip4/1.2.3.4` without `/tcp`.
    #[error("address is incomplete: expected {0}")]
    Incomplete(&'static str),
    /// Not a valid IPv4 address.
    #[error("invalid IPv4 address {0:?}")]
    InvalidIp4(String),
    /// Not a valid IPv6 address.
    #[error("invalid IPv6 address {0:?}")]
    InvalidIp6(String),
    /// Not a valid DNS name.
    #[error("invalid DNS name {0:?}")]
    InvalidDnsName(String),
    /// Not a port: decimal digits without a leading zero, at most 65535.
    #[error("invalid port {0:?}")]
    InvalidPort(String),
    /// Not a valid peer id.
    #[error("invalid peer id: {0}")]
    InvalidPeerId(#[from] PeerIdError),
}

/// A bounded copy of hostile input for an error message.
fn truncated(s: &str) -> String {
    s.chars().take(64).collect()
}

fn parse_port(s: &str) -> Result<u16, AddressError> {
    let valid = !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    if !valid {
        return Err(AddressError::InvalidPort(truncated(s)));
    }
    s.parse()
        .map_err(|_| AddressError::InvalidPort(truncated(s)))
}

impl NetworkAddress {
    /// An address for `endpoint` with no peer named.
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            peer_id: None,
        }
    }

    /// `/memory/<port>`.
    pub fn memory(port: u16) -> Self {
        Self::new(Endpoint::Memory(port))
    }

    /// `/ip4/<ip>/tcp/<port>` or `/ip6/<ip>/tcp/<port>`.
    pub fn from_socket_addr(addr: SocketAddr) -> Self {
        let host = match addr {
            SocketAddr::V4(a) => Host::Ip4(*a.ip()),
            SocketAddr::V6(a) => Host::Ip6(*a.ip()),
        };
        Self::new(Endpoint::Tcp {
            host,
            port: addr.port(),
        })
    }

    /// The IP of a TCP address given by IP (`None` for a DNS name or a memory
    /// address: nothing is resolved here).
    pub fn ip(&self) -> Option<IpAddr> {
        match self.endpoint() {
            Endpoint::Tcp {
                host: Host::Ip4(ip),
                ..
            } => Some(IpAddr::V4(*ip)),
            Endpoint::Tcp {
                host: Host::Ip6(ip),
                ..
            } => Some(IpAddr::V6(*ip)),
            _ => None,
        }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The peer named by the `/p2p/` part, if any.
    pub fn peer_id(&self) -> Option<PeerId> {
        self.peer_id
    }

    /// The same address naming `peer_id` (replacing any peer it named).
    pub fn with_peer_id(mut self, peer_id: PeerId) -> Self {
        self.peer_id = Some(peer_id);
        self
    }

    /// The same address without its `/p2p/` part.
    pub fn without_peer_id(mut self) -> Self {
        self.peer_id = None;
        self
    }

    /// The port of the endpoint (TCP or memory).
    pub fn port(&self) -> u16 {
        match self.endpoint {
            Endpoint::Tcp { port, .. } | Endpoint::Memory(port) => port,
        }
    }
}

impl From<SocketAddr> for NetworkAddress {
    fn from(addr: SocketAddr) -> Self {
        Self::from_socket_addr(addr)
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip4(ip) => write!(f, "/ip4/{ip}"),
            Host::Ip6(ip) => write!(f, "/ip6/{ip}"),
            Host::Dns(name) => write!(f, "/dns/{name}"),
            Host::Dns4(name) => write!(f, "/dns4/{name}"),
            Host::Dns6(name) => write!(f, "/dns6/{name}"),
        }
    }
}

impl fmt::Display for NetworkAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.endpoint {
            Endpoint::Tcp { host, port } => write!(f, "{host}/tcp/{port}")?,
            Endpoint::Memory(port) => write!(f, "/memory/{port}")?,
        }
        if let Some(peer) = &self.peer_id {
            write!(f, "/p2p/{peer}")?;
        }
        Ok(())
    }
}

impl FromStr for NetworkAddress {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if s.len() > MAX_ADDRESS_LENGTH {
            return Err(AddressError::TooLong(s.len()));
        }
        let rest = s
            .strip_prefix('/')
            .ok_or(AddressError::MissingLeadingSlash)?;
        let mut parts = rest.split('/');
        let mut next = |what: &'static str| -> Result<&str, AddressError> {
            match parts.next() {
                None => Err(AddressError::MissingValue(what)),
                Some("") => Err(AddressError::EmptyComponent),
                Some(v) => Ok(v),
            }
        };

        let first = match next("a protocol") {
            Err(AddressError::MissingValue(_)) => return Err(AddressError::Empty),
            other => other?,
        };
        let endpoint = match first {
            "memory" => Endpoint::Memory(parse_port(next("memory")?)?),
            "ip4" | "ip6" | "dns" | "dns4" | "dns6" => {
                let value = next(static_name(first))?;
                let host = match first {
                    "ip4" => Host::Ip4(
                        value
                            .parse()
                            .map_err(|_| AddressError::InvalidIp4(truncated(value)))?,
                    ),
                    "ip6" => Host::Ip6(
                        value
                            .parse()
                            .map_err(|_| AddressError::InvalidIp6(truncated(value)))?,
                    ),
                    "dns" => Host::Dns(DnsName::new(value)?),
                    "dns4" => Host::Dns4(DnsName::new(value)?),
                    _ => Host::Dns6(DnsName::new(value)?),
                };
                match next("tcp") {
                    Ok("tcp") => {}
                    Ok(other) if is_known(other) => {
                        return Err(AddressError::Unexpected {
                            found: other.to_owned(),
                            expected: "tcp",
                        });
                    }
                    Ok(other) => return Err(AddressError::UnknownProtocol(truncated(other))),
                    Err(AddressError::MissingValue(_)) => {
                        return Err(AddressError::Incomplete("/tcp/<port>"));
                    }
                    Err(e) => return Err(e),
                }
                let port = parse_port(next("tcp")?)?;
                Endpoint::Tcp { host, port }
            }
            other if is_known(other) => {
                return Err(AddressError::Unexpected {
                    found: other.to_owned(),
                    expected: "ip4, ip6, dns, dns4, dns6 or memory",
                });
            }
            other => return Err(AddressError::UnknownProtocol(truncated(other))),
        };

        let peer_id = match next("p2p") {
            Err(AddressError::MissingValue(_)) => None,
            Err(e) => return Err(e),
            Ok("p2p") => Some(next("p2p")?.parse::<PeerId>()?),
            Ok(other) if is_known(other) => {
                return Err(AddressError::Unexpected {
                    found: other.to_owned(),
                    expected: "p2p or the end",
                });
            }
            Ok(other) => return Err(AddressError::UnknownProtocol(truncated(other))),
        };
        match next("the end") {
            Err(AddressError::MissingValue(_)) => {}
            Err(e) => return Err(e),
            Ok(other) if is_known(other) => {
                return Err(AddressError::Unexpected {
                    found: other.to_owned(),
                    expected: "the end",
                });
            }
            Ok(other) => return Err(AddressError::UnknownProtocol(truncated(other))),
        }
        Ok(Self { endpoint, peer_id })
    }
}

fn is_known(protocol: &str) -> bool {
    matches!(
        protocol,
        "ip4" | "ip6" | "dns" | "dns4" | "dns6" | "tcp" | "memory" | "p2p"
    )
}

fn static_name(protocol: &str) -> &'static str {
    match protocol {
        "ip4" => "ip4",
        "ip6" => "ip6",
        "dns" => "dns",
        "dns4" => "dns4",
        _ => "dns6",
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn ip_is_given_for_ip_addresses_only() {
        let ip = |text: &str| text.parse::<NetworkAddress>().unwrap().ip();
        assert_eq!(ip("/ip4/10.0.0.1/tcp/1"), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(ip("/ip6/::1/tcp/1"), Some("::1".parse().unwrap()));
        assert_eq!(ip("/dns/example.com/tcp/1"), None);
        assert_eq!(ip("/memory/5"), None);
    }

    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<NetworkAddress, AddressError> {
        s.parse()
    }

    const PEER: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn accepts_every_form() {
        for s in [
            "/ip4/127.0.0.1/tcp/6180",
            "/ip6/::1/tcp/6180",
            "/dns/host.example/tcp/6180",
            "/dns4/host.example/tcp/1",
            "/dns6/localhost/tcp/65535",
            "/memory/42",
            "/memory/0",
        ] {
            let addr = parse(s).unwrap();
            assert_eq!(addr.to_string(), s);
            let named = format!("{s}/p2p/{PEER}");
            let addr = parse(&named).unwrap();
            assert_eq!(addr.to_string(), named);
            assert_eq!(addr.peer_id().unwrap().to_string(), PEER);
        }
    }

    #[test]
    fn each_way_to_be_wrong_has_its_error() {
        use AddressError::*;
        let cases: &[(&str, AddressError)] = &[
            ("", Empty),
            ("/", EmptyComponent),
            ("ip4/1.2.3.4/tcp/1", MissingLeadingSlash),
            ("/ip4//tcp/1", EmptyComponent),
            ("/memory/1/", EmptyComponent),
            ("/udp/1", UnknownProtocol("udp".into())),
            (
                "/tcp/1",
                Unexpected {
                    found: "tcp".into(),
                    expected: "ip4, ip6, dns, dns4, dns6 or memory",
                },
            ),
            ("/ip4", MissingValue("ip4")),
            ("/ip4/1.2.3.4", Incomplete("/tcp/<port>")),
            ("/ip4/1.2.3.4/tcp", MissingValue("tcp")),
            (
                "/ip4/1.2.3.4/memory/1",
                Unexpected {
                    found: "memory".into(),
                    expected: "tcp",
                },
            ),
            ("/ip4/1.2.3.4/udp/1", UnknownProtocol("udp".into())),
            ("/ip4/1.2.3/tcp/1", InvalidIp4("1.2.3".into())),
            ("/ip4/01.2.3.4/tcp/1", InvalidIp4("01.2.3.4".into())),
            ("/ip6/::g/tcp/1", InvalidIp6("::g".into())),
            (
                "/dns/-bad.example/tcp/1",
                InvalidDnsName("-bad.example".into()),
            ),
            ("/dns/a..b/tcp/1", InvalidDnsName("a..b".into())),
            ("/ip4/1.2.3.4/tcp/65536", InvalidPort("65536".into())),
            ("/ip4/1.2.3.4/tcp/080", InvalidPort("080".into())),
            ("/ip4/1.2.3.4/tcp/+80", InvalidPort("+80".into())),
            ("/memory/x", InvalidPort("x".into())),
            ("/memory/1/p2p", MissingValue("p2p")),
            (
                "/memory/1/p2p/abc",
                InvalidPeerId(PeerIdError::WrongLength(3)),
            ),
            (
                "/memory/1/tcp/2",
                Unexpected {
                    found: "tcp".into(),
                    expected: "p2p or the end",
                },
            ),
            ("/memory/1/quic", UnknownProtocol("quic".into())),
        ];
        for (input, expected) in cases {
            assert_eq!(&parse(input).unwrap_err(), expected, "input {input:?}");
        }
        let after_p2p = format!("/memory/1/p2p/{PEER}/memory/2");
        assert_eq!(
            parse(&after_p2p).unwrap_err(),
            Unexpected {
                found: "memory".into(),
                expected: "the end"
            }
        );
        let long = format!("/dns/{}/tcp/1", "a".repeat(MAX_ADDRESS_LENGTH));
        assert!(matches!(parse(&long), Err(TooLong(_))));
    }

    fn dns_name() -> impl Strategy<Value = DnsName> {
        proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", 1..4)
            .prop_map(|labels| DnsName::new(&labels.join(".")).unwrap())
    }

    fn host() -> impl Strategy<Value = Host> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|b| Host::Ip4(Ipv4Addr::from(b))),
            any::<[u8; 16]>().prop_map(|b| Host::Ip6(Ipv6Addr::from(b))),
            dns_name().prop_map(Host::Dns),
            dns_name().prop_map(Host::Dns4),
            dns_name().prop_map(Host::Dns6),
        ]
    }

    fn address() -> impl Strategy<Value = NetworkAddress> {
        let endpoint = prop_oneof![
            (host(), any::<u16>()).prop_map(|(host, port)| Endpoint::Tcp { host, port }),
            any::<u16>().prop_map(Endpoint::Memory),
        ];
        (endpoint, proptest::option::of(any::<[u8; 32]>())).prop_map(|(endpoint, peer)| {
            NetworkAddress {
                endpoint,
                peer_id: peer.map(PeerId::new),
            }
        })
    }

    proptest! {
        #[test]
        fn any_valid_address_round_trips(addr in address()) {
            let text = addr.to_string();
            prop_assert_eq!(parse(&text).unwrap(), addr);
        }

        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,200}") {
            let _ = parse(&s);
        }

        #[test]
        fn address_like_strings_never_panic(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("ip4".to_string()), Just("ip6".to_string()), Just("dns".to_string()),
                    Just("tcp".to_string()), Just("memory".to_string()), Just("p2p".to_string()),
                    Just(String::new()), "[0-9a-f:.]{0,70}",
                ],
                0..8,
            )
        ) {
            let s = format!("/{}", parts.join("/"));
            if let Ok(addr) = parse(&s) {
                // Whatever parses prints back to something that parses to the same.
                prop_assert_eq!(parse(&addr.to_string()).unwrap(), addr);
            }
        }
    }
}
