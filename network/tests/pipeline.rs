//! The connection pipeline alone (TCP or memsocket → Noise → handshake → negotiated
//! multiplexer): many concurrent substreams, each negotiated, each echoing.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use netcore::NetworkAddress;
use netcore::multiplexing::MuxConfig;
use netcore::negotiate::{negotiate_inbound, negotiate_outbound_select};
use netcore::transport::{MemoryTransport, TcpTransport, Transport, TransportError};
use network::transport::{UpgradedConnection, upgrade};
use noise::{Identity, NoiseConfig, NoiseUpgrader, TrustedPeers};
use proto::handshake::HandshakeMsg;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const ECHO: &str = "/test/echo/1";
const STREAMS: usize = 100;

/// Connects two pipelines over `base` and returns (dialer's, listener's) connection.
async fn connect<T>(base: T, listen: &str) -> (UpgradedConnection, UpgradedConnection)
where
    T: Transport<Error = TransportError> + Clone + Send + Sync + 'static,
    T::Output: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T::Inbound: 'static,
    T::Outbound: 'static,
    T::Listener: 'static,
{
    let (a, b) = (Identity::generate(), Identity::generate());
    let b_id = b.peer_id();
    let trusted = TrustedPeers::from_peers([a.peer_id(), b.peer_id()]).unwrap();
    let handshake = HandshakeMsg {
        chain_id: 7,
        network_id: "validator".into(),
        supported_protocols: vec![ECHO.into()],
        client_version: "test".into(),
    };
    let timeout = Duration::from_secs(10);
    let pipeline = |id: Identity| {
        let noise = NoiseUpgrader::new(id, NoiseConfig::mutual(trusted.clone()));
        upgrade(
            base.clone(),
            noise,
            handshake.clone(),
            MuxConfig::default(),
            timeout,
        )
    };
    let (dialer, listener) = (pipeline(a), pipeline(b));
    let (mut incoming, bound) = listener.listen_on(listen.parse().unwrap()).unwrap();
    let target: NetworkAddress = bound.with_peer_id(b_id);
    let (outbound, inbound) = tokio::join!(dialer.dial(target).unwrap(), async {
        let (upgrade, _) = incoming.next().await.unwrap().unwrap();
        upgrade.await
    });
    (outbound.unwrap(), inbound.unwrap())
}

/// Opens `STREAMS` substreams at once on `client`, each negotiating the echo protocol
/// and checking its echo, while `server` echoes every substream it accepts.
async fn echo_many(client: UpgradedConnection, server: UpgradedConnection) {
    assert_eq!(client.remote_protocols, vec![ECHO.to_string()]);
    let mut server_incoming = server.incoming;
    let echo_server = tokio::spawn(async move {
        let mut served = FuturesUnordered::new();
        let mut accepted = 0;
        while accepted < STREAMS {
            let substream = server_incoming.next().await.unwrap();
            accepted += 1;
            served.push(async move {
                let (mut io, index) = negotiate_inbound(substream, &[ECHO]).await.unwrap();
                assert_eq!(index, 0);
                let mut buf = Vec::new();
                io.read_to_end(&mut buf).await.unwrap();
                io.write_all(&buf).await.unwrap();
                io.shutdown().await.unwrap();
            });
        }
        while served.next().await.is_some() {}
        server.control
    });

    let calls: FuturesUnordered<_> = (0..STREAMS)
        .map(|i| {
            let control = client.control.clone();
            async move {
                let substream = control.open_stream().await.unwrap();
                let mut io = negotiate_outbound_select(substream, ECHO).unwrap();
                let message = format!("stream {i} says hello").repeat(i + 1);
                io.write_all(message.as_bytes()).await.unwrap();
                io.shutdown().await.unwrap();
                let mut echoed = Vec::new();
                io.read_to_end(&mut echoed).await.unwrap();
                assert_eq!(echoed, message.as_bytes(), "stream {i}");
            }
        })
        .collect();
    calls.collect::<Vec<()>>().await;
    let _server_control = echo_server.await.unwrap();
}

#[tokio::test]
async fn hundred_concurrent_substreams_echo_over_tcp_noise_mux() {
    let (client, server) = connect(TcpTransport::default(), "/ip4/127.0.0.1/tcp/0").await;
    echo_many(client, server).await;
}

#[tokio::test]
async fn hundred_concurrent_substreams_echo_over_memsocket_noise_mux() {
    let (client, server) = connect(MemoryTransport::default(), "/memory/0").await;
    echo_many(client, server).await;
}
