//! The connection pipeline alone (TCP or memsocket → Noise → handshake → negotiated
//! multiplexer): many concurrent substreams, each negotiated, each echoing.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use netcore::NetworkAddress;
use netcore::multiplexing::MuxConfig;
use netcore::negotiate::{negotiate_inbound, negotiate_outbound_select};
use netcore::transport::{
    ConnectionOrigin, MemoryTransport, TcpTransport, Transport, TransportError, TransportExt,
};
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

/// A listener's socket whose first flush (Noise message 2's) waits `LATE` after the
/// write went out: the dialer reads message 2, sends its handshake message, and that
/// message is in before the listener starts its own exchange.
struct LateListener {
    io: memsocket::MemorySocket,
    late: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

const LATE: Duration = Duration::from_millis(100);

impl AsyncRead for LateListener {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for LateListener {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(late) = &mut self.late {
            std::task::ready!(late.as_mut().poll(cx));
            self.late = None;
        }
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[tokio::test(start_paused = true)]
async fn a_listener_that_finds_the_dialers_handshake_message_waiting_still_sends_its_own() {
    let base = MemoryTransport::default().map(|io, origin| LateListener {
        io,
        late: (origin == ConnectionOrigin::Inbound).then(|| Box::pin(tokio::time::sleep(LATE))),
    });
    let start = tokio::time::Instant::now();
    let (client, server) = connect(base, "/memory/0").await;
    // Well within the upgrade timeout: the listener did not wait for a proposal the
    // dialer sends only once it has the listener's message.
    assert!(start.elapsed() < Duration::from_secs(1));
    echo_many(client, server).await;
}
