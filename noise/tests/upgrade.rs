//! `NoiseUpgrader` as a `netcore` transport upgrade: stacked on the TCP and memory
//! transports with `and_then`, it authenticates both ends and carries data both ways.
#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use futures::StreamExt;
use netcore::transport::{MemoryTransport, TcpConfig, TcpTransport, Transport, TransportExt};
use netcore::{NetworkAddress, PeerId};
use noise::{
    Identity, NoiseConfig, NoiseError, NoiseStream, NoiseUpgrader, RemoteInfo, TrustedPeers,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bob listens on `listen`, Alice dials him; both must learn each other and exchange
/// data both ways.
async fn round_trip<A, B, S>(alice_net: A, bob_net: B, listen: &str, alice: PeerId, bob: PeerId)
where
    A: Transport<Output = (NoiseStream<S>, RemoteInfo), Error = NoiseError>,
    B: Transport<Output = (NoiseStream<S>, RemoteInfo), Error = NoiseError>,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (listener, addr) = bob_net.listen_on(listen.parse().unwrap()).unwrap();
    let mut listener = std::pin::pin!(listener);
    let dial = alice_net.dial(addr.with_peer_id(bob)).unwrap();
    let accept = async { listener.next().await.unwrap().unwrap().0.await };
    let (dialed, accepted) = tokio::join!(dial, accept);
    let ((mut a, to_bob), (mut b, to_alice)) = (dialed.unwrap(), accepted.unwrap());
    assert_eq!(to_bob.peer_id, bob);
    assert_eq!(to_alice.peer_id, alice);

    a.write_all(b"ping").await.unwrap();
    a.flush().await.unwrap();
    let mut buf = [0u8; 4];
    b.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    b.write_all(b"pong").await.unwrap();
    b.flush().await.unwrap();
    a.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
}

fn trusted_pair() -> (Identity, Identity, NoiseUpgrader, NoiseUpgrader) {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let trusted = TrustedPeers::from_peers([alice.peer_id(), bob.peer_id()]).unwrap();
    let up_a = NoiseUpgrader::new(alice.clone(), NoiseConfig::mutual(trusted.clone()));
    let up_b = NoiseUpgrader::new(bob.clone(), NoiseConfig::mutual(trusted));
    (alice, bob, up_a, up_b)
}

#[tokio::test]
async fn noise_over_the_tcp_transport_authenticates_both_ends() {
    let (alice, bob, up_a, up_b) = trusted_pair();
    let alice_net = TcpTransport::new(TcpConfig::default())
        .and_then(move |io, addr, origin| up_a.upgrade(io, addr, origin));
    let bob_net = TcpTransport::new(TcpConfig::default())
        .and_then(move |io, addr, origin| up_b.upgrade(io, addr, origin));
    round_trip(
        alice_net,
        bob_net,
        "/ip4/127.0.0.1/tcp/0",
        alice.peer_id(),
        bob.peer_id(),
    )
    .await;
}

#[tokio::test]
async fn noise_over_the_memory_transport_authenticates_both_ends() {
    let (alice, bob, up_a, up_b) = trusted_pair();
    let alice_net =
        MemoryTransport::default().and_then(move |io, addr, origin| up_a.upgrade(io, addr, origin));
    let bob_net =
        MemoryTransport::default().and_then(move |io, addr, origin| up_b.upgrade(io, addr, origin));
    round_trip(
        alice_net,
        bob_net,
        "/memory/0",
        alice.peer_id(),
        bob.peer_id(),
    )
    .await;
}

#[tokio::test]
async fn dialing_an_address_without_a_peer_id_fails_with_a_typed_error() {
    let (_, _, up_a, up_b) = trusted_pair();
    let alice_net =
        MemoryTransport::default().and_then(move |io, addr, origin| up_a.upgrade(io, addr, origin));
    let bob_net =
        MemoryTransport::default().and_then(move |io, addr, origin| up_b.upgrade(io, addr, origin));
    let (_listener, addr) = bob_net.listen_on(NetworkAddress::memory(0)).unwrap();
    let result = alice_net.dial(addr.clone()).unwrap().await;
    assert!(matches!(result, Err(NoiseError::MissingPeerId(a)) if a == addr));
}
