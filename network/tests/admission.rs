//! Admission at accept, over loopback TCP: sockets past the per-IP and per-subnet limits
//! are closed before Noise reads a byte; a stranger flood from many loopback addresses
//! does not lock a validator out.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{Net, counter_in, eventually, identities, start_node};
use netcore::address::{Endpoint, Host};
use netcore::transport::{Prefix, SourceFilter, TcpTransport};
use network::admission::AdmissionConfig;
use network::rate_limit::Rate;
use network::{NetworkBuilder, NetworkConfig};
use noise::{NoiseConfig, NoiseUpgrader};
use prometheus::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Rates high enough not to matter.
const FAST: Rate = Rate {
    per_second: 1_000_000,
    burst: 1_000_000,
};

fn socket_addr(addr: &netcore::NetworkAddress) -> SocketAddr {
    match addr.endpoint() {
        Endpoint::Tcp {
            host: Host::Ip4(ip),
            port,
        } => SocketAddr::from((*ip, *port)),
        other => panic!("not a TCP address: {other:?}"),
    }
}

/// Connects to `to` from the loopback address `from`, sending nothing. A socket the
/// node refuses at accept is reset, which may reach the connect itself.
async fn try_connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(to).await
}

/// Connects to `to` from `from`, a socket the node lets in.
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    try_connect_from(from, to).await.unwrap()
}

/// Whether the node refuses a socket from `from`: it resets it, at once.
async fn refused_by_node(from: Ipv4Addr, to: SocketAddr) -> bool {
    let mut stream = match try_connect_from(from, to).await {
        Ok(stream) => stream,
        Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await;
    matches!(read, Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

#[tokio::test]
async fn sockets_over_the_pending_limits_are_closed_before_noise_reads_them() {
    let config = NetworkConfig {
        admission: AdmissionConfig {
            max_pending_per_ip: 2,
            max_pending_per_subnet: 3,
            rate_per_ip: FAST,
            rate_per_subnet: FAST,
            ..AdmissionConfig::default()
        },
        ..NetworkConfig::default()
    };
    let (mut ids, trusted) = identities(1);
    let node = start_node(Net::Tcp, ids.remove(0), trusted, config);
    let to = socket_addr(&node.addr);
    let refusals =
        |reason: &str| counter_in(&node.registry, "network_admission_refusals_total", reason);

    // Two stalled sockets from 127.0.0.2 are let in; the third is refused.
    let mut held = vec![
        connect_from(Ipv4Addr::new(127, 0, 0, 2), to).await,
        connect_from(Ipv4Addr::new(127, 0, 0, 2), to).await,
    ];
    assert!(refused_by_node(Ipv4Addr::new(127, 0, 0, 2), to).await);
    eventually(|| refusals("pending_per_ip") == 1).await;
    // One more from the same /24 fits the subnet's three; the next does not.
    held.push(connect_from(Ipv4Addr::new(127, 0, 0, 3), to).await);
    assert!(refused_by_node(Ipv4Addr::new(127, 0, 0, 4), to).await);
    eventually(|| refusals("pending_per_subnet") == 1).await;
    // Refused before Noise: no handshake failed, none was started for them.
    assert_eq!(
        counter_in(&node.registry, "network_handshake_failures_total", "noise"),
        0
    );
    // Another subnet is not held up.
    held.push(connect_from(Ipv4Addr::new(127, 0, 1, 2), to).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        refusals("pending_per_ip") + refusals("pending_per_subnet"),
        2
    );
    drop(held);
}

#[tokio::test]
async fn a_stranger_flood_from_many_addresses_does_not_keep_a_validator_out() {
    let config = NetworkConfig {
        max_concurrent_inbound_upgrades: 16,
        admission: AdmissionConfig {
            reserved_for_validators: 4,
            ..AdmissionConfig::default()
        },
        ..NetworkConfig::default()
    };
    let (mut ids, trusted) = identities(2);
    let mut victim = start_node(Net::Tcp, ids.remove(0), trusted.clone(), config.clone());
    let to = socket_addr(&victim.addr);
    // Strangers from 200 loopback addresses open and hold sockets as fast as they can.
    let mut flood = Vec::new();
    for i in 0..200u32 {
        let from = Ipv4Addr::from(0x7f02_0000 + i * 3);
        for _ in 0..2 {
            flood.push(try_connect_from(from, to).await);
        }
    }
    // More strangers got in than their share of slots: the oldest were evicted, and
    // most sockets were refused at accept (three /24s, sixteen pending each at most).
    eventually(|| victim_evictions(&victim.registry) > 0).await;
    let refused: u64 = [
        "pending_per_ip",
        "pending_per_subnet",
        "rate_per_ip",
        "rate_per_subnet",
    ]
    .iter()
    .map(|r| counter_in(&victim.registry, "network_admission_refusals_total", r))
    .sum();
    assert!(refused > 0);
    // A validator connects through it all.
    let mut validator = start_node(Net::Tcp, ids.remove(0), trusted, config);
    validator.sender.dial(victim.addr.clone()).await.unwrap();
    victim.expect_new_peer().await;
    drop(flood);
    validator.shutdown().await;
    victim.shutdown().await;
}

/// Upgrades evicted to make room, on `registry`.
fn victim_evictions(registry: &prometheus::Registry) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "network_upgrades_evicted_total")
        .flat_map(|f| f.get_metric().iter())
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

#[tokio::test]
async fn a_handshake_naming_a_trusted_peer_is_not_evicted_by_strangers() {
    let config = NetworkConfig {
        max_concurrent_inbound_upgrades: 4,
        admission: AdmissionConfig {
            max_pending_per_ip: 1_000,
            max_pending_per_subnet: 1_000,
            rate_per_ip: FAST,
            rate_per_subnet: FAST,
            reserved_for_validators: 0,
        },
        ..NetworkConfig::default()
    };
    let (mut ids, trusted) = identities(2);
    let validator = ids.pop().unwrap().peer_id();
    let node = start_node(Net::Tcp, ids.remove(0), trusted, config);
    let to = socket_addr(&node.addr);
    // A slow validator: its prologue's first bytes (its peer id, in clear) are in.
    let mut slow = connect_from(Ipv4Addr::new(127, 0, 0, 1), to).await;
    slow.write_all(validator.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Strangers take every other slot, over and over.
    let mut strangers = Vec::new();
    for _ in 0..40 {
        let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 1), to).await;
        s.write_all(&[0u8; 32]).await.unwrap();
        strangers.push(s);
    }
    eventually(|| victim_evictions(&node.registry) >= 36).await;
    // The validator's handshake is still waiting for the rest of its prologue.
    let mut byte = [0u8; 1];
    let still_open = tokio::time::timeout(Duration::from_millis(200), slow.read(&mut byte)).await;
    assert!(still_open.is_err(), "evicted: {still_open:?}");
    drop(strangers);
}

/// Starts a node over TCP whose listener has a socket filter, and returns the filter.
fn start_filtered_node(config: NetworkConfig) -> (network::Network, SourceFilter, Registry) {
    let (mut ids, trusted) = identities(1);
    let registry = Registry::new();
    let upgrader = NoiseUpgrader::new(ids.remove(0), NoiseConfig::mutual(trusted));
    let mut builder = NetworkBuilder::new(config, upgrader, registry.clone());
    let filter = SourceFilter::default();
    builder.source_filter(filter.clone());
    builder.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap());
    let tcp = TcpTransport::default().with_source_filter(filter.clone());
    (builder.start(tcp).unwrap(), filter, registry)
}

fn filtered_sources(registry: &Registry) -> f64 {
    registry
        .gather()
        .iter()
        .find(|f| f.name() == "network_admission_filtered_sources")
        .map_or(0.0, |f| f.get_metric()[0].get_gauge().get_value())
}

/// A nonblocking connect from `from`: the SYN is out when this returns.
fn start_connect(from: Ipv4Addr, to: SocketAddr) -> socket2::Socket {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    if let Err(e) = socket.connect(&to.into()) {
        assert_eq!(e.raw_os_error(), Some(115), "EINPROGRESS expected: {e}");
    }
    socket
}

/// A source over its rate is blocked in the listener's socket filter: the kernel drops
/// its next SYNs before any accept, the gauge shows the block, and the block ends once
/// the source's bucket has refilled (its SYN's retransmission then gets through).
#[tokio::test]
async fn a_source_over_its_rate_is_dropped_by_the_kernel_until_its_bucket_refills() {
    let config = NetworkConfig {
        admission: AdmissionConfig {
            // Refills in 200 ms.
            rate_per_ip: Rate {
                per_second: 10,
                burst: 2,
            },
            rate_per_subnet: FAST,
            ..AdmissionConfig::default()
        },
        ..NetworkConfig::default()
    };
    let (network, filter, registry) = start_filtered_node(config);
    let to = socket_addr(&network.listen_addrs()[0]);
    let flooder = Ipv4Addr::new(127, 0, 0, 5);
    let _held = [
        connect_from(flooder, to).await,
        connect_from(flooder, to).await,
    ];
    assert!(refused_by_node(flooder, to).await);
    eventually(|| filtered_sources(&registry) == 1.0).await;
    let blocked = filter.rules().blocked.clone();
    assert_eq!(blocked, [Prefix::host(flooder.into())]);

    // The node's listener runs the new program once it has been polled: wait until a
    // SYN from the flooder goes unanswered while one from a neighbour is answered.
    let mut tries = 0;
    let unanswered = loop {
        let syn = start_connect(flooder, to);
        // The neighbour's SYN is handled after the flooder's.
        connect_from(Ipv4Addr::new(127, 0, 0, 6), to).await;
        // Unanswered, not answered and reset (a reset leaves an error behind).
        if syn.peer_addr().is_err() && syn.take_error().unwrap().is_none() {
            break syn;
        }
        tries += 1;
        assert!(tries < 100, "the listener never dropped the flooder's SYNs");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    // The block ends 200 ms after it began; the retransmitted SYN (about 1 s after
    // the first) is answered.
    eventually(|| filtered_sources(&registry) == 0.0).await;
    assert!(filter.rules().blocked.is_empty());
    eventually(|| unanswered.peer_addr().is_ok()).await;
}
