//! The transports and their combinators, over memory and over TCP on loopback.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::future::pending;
use std::time::Duration;

use futures::StreamExt;
use netcore::NetworkAddress;
use netcore::transport::{
    ConnectionOrigin, MemoryTransport, TcpTransport, TimeoutError, Transport, TransportError,
    TransportExt,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

fn addr(s: &str) -> NetworkAddress {
    s.parse().unwrap()
}

/// Listens on `listen`, dials the bound address, and sends data both ways.
async fn exchange_both_ways<T>(transport: T, listen: &str) -> NetworkAddress
where
    T: Transport,
    T::Output: AsyncRead + AsyncWrite + Unpin,
    T::Listener: Unpin,
{
    let (mut listener, bound) = transport.listen_on(addr(listen)).unwrap();
    assert_ne!(bound.port(), 0, "the bound address names the port picked");
    // A dial future does nothing until polled: drive it and the accept together.
    let (client, accepted) = tokio::join!(transport.dial(bound.clone()).unwrap(), listener.next());
    let (inbound, _remote) = accepted.unwrap().unwrap();
    let (mut client, mut server) = (client.unwrap(), inbound.await.unwrap());

    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    server.write_all(b"pong").await.unwrap();
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    bound
}

#[tokio::test]
async fn memory_transport_carries_data_both_ways() {
    exchange_both_ways(MemoryTransport::default(), "/memory/0").await;
}

#[tokio::test]
async fn tcp_transport_carries_data_both_ways_over_ip4() {
    let bound = exchange_both_ways(TcpTransport::default(), "/ip4/127.0.0.1/tcp/0").await;
    assert!(bound.to_string().starts_with("/ip4/127.0.0.1/tcp/"));
}

#[tokio::test]
async fn tcp_transport_carries_data_both_ways_over_ip6() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipping: this machine has no IPv6 loopback");
        return;
    }
    let bound = exchange_both_ways(TcpTransport::default(), "/ip6/::1/tcp/0").await;
    assert!(bound.to_string().starts_with("/ip6/::1/tcp/"));
}

#[tokio::test]
async fn tcp_transport_dials_a_dns_name() {
    let transport = TcpTransport::default();
    let (mut listener, bound) = transport.listen_on(addr("/ip4/127.0.0.1/tcp/0")).unwrap();
    let dial = transport
        .dial(addr(&format!("/dns4/localhost/tcp/{}", bound.port())))
        .unwrap();
    let (client, accepted) = tokio::join!(dial, listener.next());
    let (client, _server) = (client.unwrap(), accepted.unwrap().unwrap().0.await.unwrap());
    assert!(client.nodelay().unwrap(), "nodelay is on by default");
}

#[tokio::test]
async fn tcp_listener_reports_the_remote_address() {
    let transport = TcpTransport::default();
    let (mut listener, bound) = transport.listen_on(addr("/ip4/127.0.0.1/tcp/0")).unwrap();
    let (client, accepted) = tokio::join!(transport.dial(bound).unwrap(), listener.next());
    let (client, (_, remote)) = (client.unwrap(), accepted.unwrap().unwrap());
    assert_eq!(remote, NetworkAddress::from(client.local_addr().unwrap()));
}

#[tokio::test]
async fn an_inbound_tcp_socket_dropped_before_its_upgrade_is_reset() {
    let transport = TcpTransport::default();
    let (mut listener, bound) = transport.listen_on(addr("/ip4/127.0.0.1/tcp/0")).unwrap();
    let (client, accepted) = tokio::join!(transport.dial(bound).unwrap(), listener.next());
    let mut client = client.unwrap();
    // Refused on its address alone: the upgrade is dropped without being polled.
    drop(accepted.unwrap().unwrap());
    let read = client.read(&mut [0u8; 8]).await;
    assert_eq!(
        read.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionReset,
        "a refused socket is reset, not closed with a FIN"
    );
}

#[tokio::test]
async fn an_inbound_tcp_socket_gets_the_configured_options_when_upgraded() {
    let transport = TcpTransport::default();
    let (mut listener, bound) = transport.listen_on(addr("/ip4/127.0.0.1/tcp/0")).unwrap();
    let (client, accepted) = tokio::join!(transport.dial(bound).unwrap(), listener.next());
    let (inbound, _) = accepted.unwrap().unwrap();
    let mut server = inbound.await.unwrap();
    assert!(
        server.nodelay().unwrap(),
        "the default config disables Nagle"
    );
    let mut client = client.unwrap();
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    // An upgraded socket closes gracefully: the client reads the end, not a reset.
    drop(server);
    assert_eq!(client.read(&mut buf).await.unwrap(), 0);
}

/// A nonblocking connect from `from` to `to`: the SYN is sent when this returns.
#[cfg(target_os = "linux")]
fn start_connect(from: impl Into<std::net::IpAddr>, to: std::net::SocketAddr) -> socket2::Socket {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, None).unwrap();
    socket
        .bind(&std::net::SocketAddr::new(from.into(), 0).into())
        .unwrap();
    socket.set_nonblocking(true).unwrap();
    if let Err(e) = socket.connect(&to.into()) {
        // EINPROGRESS: the SYN is out, the handshake goes on in the kernel.
        assert_eq!(e.raw_os_error(), Some(115), "{e}");
    }
    socket
}

/// The kernel's side of the source filter: SYNs from a blocked prefix never reach the
/// accept queue, other sources (and an allowed one inside the prefix) do, and a source
/// unblocked gets through at its SYN's next retransmission (about 1 s later).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_listener_drops_the_syns_of_blocked_sources_before_accepting() {
    use netcore::transport::{FilterRules, Prefix, SourceFilter};
    use std::net::{IpAddr, Ipv4Addr};

    let ip = |d: u8| IpAddr::V4(Ipv4Addr::new(127, 0, 0, d));
    let filter = SourceFilter::default();
    filter.set(FilterRules {
        allowed: vec![ip(3)],
        blocked: vec![Prefix {
            addr: ip(0),
            len: 24,
        }],
    });
    let transport = TcpTransport::default().with_source_filter(filter.clone());
    let (mut listener, bound) = transport.listen_on(addr("/ip4/127.0.0.1/tcp/0")).unwrap();
    // The listener applies the rules when first polled; nothing is waiting yet.
    assert!(futures::poll!(listener.next()).is_pending());
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], bound.port()));

    let blocked = start_connect(Ipv4Addr::new(127, 0, 0, 2), target);
    let _allowed = start_connect(Ipv4Addr::new(127, 0, 0, 3), target);
    let _outside = start_connect(Ipv4Addr::new(127, 0, 1, 1), target);
    let mut accepted = Vec::new();
    for _ in 0..2 {
        let (_, remote) = listener.next().await.unwrap().unwrap();
        accepted.push(remote.ip().unwrap());
    }
    accepted.sort();
    assert_eq!(accepted, [ip(3), IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1))]);
    // The blocked SYN went out before the others were accepted, and got no answer.
    assert_eq!(
        blocked.peer_addr().unwrap_err().raw_os_error(),
        Some(107),
        "ENOTCONN: the blocked socket is still waiting for a SYN-ACK"
    );

    filter.set(FilterRules::default());
    let (_, remote) = tokio::time::timeout(Duration::from_secs(10), listener.next())
        .await
        .expect("the retransmitted SYN is accepted once unblocked")
        .unwrap()
        .unwrap();
    assert_eq!(remote.ip(), Some(ip(2)));
}

/// The same over IPv6, where the program compares the source a word at a time: a SYN
/// from `::1` is dropped while `::1` is blocked, and passes once the rules block
/// another address instead.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn an_ipv6_listener_drops_the_syns_of_blocked_sources() {
    use netcore::transport::{FilterRules, Prefix, SourceFilter};
    use std::net::{IpAddr, Ipv6Addr};

    let block = |ip: Ipv6Addr| FilterRules {
        allowed: vec![],
        blocked: vec![Prefix::host(IpAddr::V6(ip))],
    };
    let filter = SourceFilter::default();
    filter.set(block(Ipv6Addr::LOCALHOST));
    let transport = TcpTransport::default().with_source_filter(filter.clone());
    let (mut listener, bound) = transport.listen_on(addr("/ip6/::1/tcp/0")).unwrap();
    assert!(futures::poll!(listener.next()).is_pending());
    // A second listener, unfiltered, orders the kernel's work: its SYN is handled
    // after the blocked one.
    let (mut witness, witness_addr) = TcpTransport::default()
        .listen_on(addr("/ip6/::1/tcp/0"))
        .unwrap();
    let to = |port| std::net::SocketAddr::from((Ipv6Addr::LOCALHOST, port));

    let blocked = start_connect(Ipv6Addr::LOCALHOST, to(bound.port()));
    let _witness_client = start_connect(Ipv6Addr::LOCALHOST, to(witness_addr.port()));
    witness.next().await.unwrap().unwrap();
    assert_eq!(blocked.peer_addr().unwrap_err().raw_os_error(), Some(107));
    assert!(futures::poll!(listener.next()).is_pending());

    filter.set(block("2001:db8::1".parse().unwrap()));
    tokio::time::timeout(Duration::from_secs(10), listener.next())
        .await
        .expect("the retransmitted SYN is accepted once unblocked")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn transports_refuse_addresses_of_the_other_kind() {
    let tcp = TcpTransport::default();
    assert!(matches!(
        tcp.listen_on(addr("/memory/0")),
        Err(TransportError::UnsupportedAddress(_))
    ));
    assert!(matches!(
        tcp.listen_on(addr("/dns/localhost/tcp/0")),
        Err(TransportError::UnsupportedAddress(_))
    ));
    let memory = MemoryTransport::default();
    assert!(matches!(
        memory.dial(addr("/ip4/127.0.0.1/tcp/1")),
        Err(TransportError::UnsupportedAddress(_))
    ));
}

#[tokio::test]
async fn dialing_a_closed_port_fails() {
    let memory = MemoryTransport::default();
    let (listener, bound) = memory.listen_on(addr("/memory/0")).unwrap();
    drop(listener);
    let err = memory.dial(bound).unwrap().await.unwrap_err();
    assert!(
        matches!(err, TransportError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
    );

    let tcp = TcpTransport::default();
    let (listener, bound) = tcp.listen_on(addr("/ip4/127.0.0.1/tcp/0")).unwrap();
    drop(listener);
    assert!(tcp.dial(bound).unwrap().await.is_err());
}

#[tokio::test]
async fn and_then_sees_the_origin_on_both_sides() {
    let transport = MemoryTransport::default()
        .and_then(
            |socket, addr, origin| async move { Ok::<_, TransportError>((socket, addr, origin)) },
        )
        .map(|(socket, addr, origin), map_origin| {
            assert_eq!(origin, map_origin, "map sees the same origin");
            (socket, addr, origin)
        });
    let (mut listener, bound) = transport.listen_on(addr("/memory/0")).unwrap();
    let dial = transport.dial(bound.clone()).unwrap();
    let (inbound, _) = listener.next().await.unwrap().unwrap();
    let (_, out_addr, out_origin) = dial.await.unwrap();
    let (_, in_addr, in_origin) = inbound.await.unwrap();
    assert_eq!(out_origin, ConnectionOrigin::Outbound);
    assert_eq!(in_origin, ConnectionOrigin::Inbound);
    assert_eq!(out_addr, bound, "the dialer's step sees the dialed address");
    assert_eq!(
        in_addr,
        NetworkAddress::memory(0),
        "the listener's step sees the remote"
    );
}

#[tokio::test]
async fn and_then_errors_end_the_upgrade() {
    #[derive(Debug, thiserror::Error)]
    enum UpgradeError {
        #[error("refused")]
        Refused,
        #[error(transparent)]
        Transport(#[from] TransportError),
    }
    let transport = MemoryTransport::default()
        .and_then(|_socket, _addr, _origin| async { Err::<(), _>(UpgradeError::Refused) });
    let (_listener, bound) = transport.listen_on(addr("/memory/0")).unwrap();
    let err = transport.dial(bound).unwrap().await.unwrap_err();
    assert!(matches!(err, UpgradeError::Refused));
}

#[tokio::test(start_paused = true)]
async fn with_timeout_fails_a_slow_upgrade() {
    let transport = MemoryTransport::default()
        .and_then(|socket, _addr, origin| async move {
            if origin == ConnectionOrigin::Inbound {
                // The listener's upgrade never completes.
                pending::<()>().await;
            }
            Ok::<_, TransportError>(socket)
        })
        .with_timeout(Duration::from_secs(5));
    let (mut listener, bound) = transport.listen_on(addr("/memory/0")).unwrap();
    let outbound = transport.dial(bound).unwrap();
    let (inbound, _) = listener.next().await.unwrap().unwrap();
    assert!(outbound.await.is_ok(), "a fast upgrade passes");

    let start = tokio::time::Instant::now();
    let err = inbound.await.unwrap_err();
    assert!(matches!(err, TimeoutError::Timeout(d) if d == Duration::from_secs(5)));
    assert_eq!(start.elapsed(), Duration::from_secs(5));
}

#[tokio::test]
async fn boxed_transports_of_different_kinds_share_one_type() {
    trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
    impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
    let transports = [
        (
            MemoryTransport::default()
                .map(|s, _| Box::new(s) as Box<dyn Io>)
                .boxed(),
            "/memory/0",
        ),
        (
            TcpTransport::default()
                .map(|s, _| Box::new(s) as Box<dyn Io>)
                .boxed(),
            "/ip4/127.0.0.1/tcp/0",
        ),
    ];
    for (transport, listen) in transports {
        exchange_both_ways(transport.clone(), listen).await;
    }
}

/// Programs of a few hundred rules, as admission's cap allows, attach to real sockets
/// and replace one another (the kernel charges both while replacing, which a small
/// `optmem_max` refuses: the listener then removes the old one first), and their last
/// rule still applies: a SYN from the source it alone covers is dropped.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn large_programs_attach_and_their_last_rule_applies() {
    use netcore::transport::{FilterRules, Prefix, SourceFilter};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    let rules = |salt: u32| {
        let mut blocked: Vec<Prefix> = (0..200u32)
            .map(|i| Prefix::host(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + salt + i))))
            .chain((0..55u32).map(|i| Prefix {
                addr: IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + (salt + i) * 256)),
                len: 24,
            }))
            .chain((0..200u16).map(|i| Prefix {
                addr: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, salt as u16, i, 0, 0, 0, 0)),
                len: 64,
            }))
            .collect();
        // Last of all, masked rules that alone cover 127.0.0.2 and ::1.
        blocked.push(Prefix {
            addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
            len: 31,
        });
        blocked.push(Prefix {
            addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
            len: 127,
        });
        FilterRules {
            allowed: vec![],
            blocked,
        }
    };
    let filter = SourceFilter::default();
    let transport = TcpTransport::default().with_source_filter(filter.clone());
    let (mut v4, v4_addr) = transport.listen_on(addr("/ip4/127.0.0.1/tcp/0")).unwrap();
    let (mut v6, v6_addr) = transport.listen_on(addr("/ip6/::1/tcp/0")).unwrap();
    let (mut witness, witness_addr) = TcpTransport::default()
        .listen_on(addr("/ip4/127.0.0.1/tcp/0"))
        .unwrap();
    for salt in [0, 1000] {
        filter.set(rules(salt));
        assert!(futures::poll!(v4.next()).is_pending());
        assert!(futures::poll!(v6.next()).is_pending());
    }
    let blocked_v4 = start_connect(
        Ipv4Addr::new(127, 0, 0, 2),
        ([127, 0, 0, 1], v4_addr.port()).into(),
    );
    let blocked_v6 = start_connect(
        Ipv6Addr::LOCALHOST,
        (Ipv6Addr::LOCALHOST, v6_addr.port()).into(),
    );
    let _passes = start_connect(
        Ipv4Addr::new(127, 0, 0, 4),
        ([127, 0, 0, 1], v4_addr.port()).into(),
    );
    let _witness_client = start_connect(
        Ipv4Addr::new(127, 0, 0, 1),
        ([127, 0, 0, 1], witness_addr.port()).into(),
    );
    witness.next().await.unwrap().unwrap();
    let (_, remote) = v4.next().await.unwrap().unwrap();
    assert_eq!(remote.ip(), Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4))));
    assert_eq!(
        blocked_v4.peer_addr().unwrap_err().raw_os_error(),
        Some(107)
    );
    assert_eq!(
        blocked_v6.peer_addr().unwrap_err().raw_os_error(),
        Some(107)
    );
}
