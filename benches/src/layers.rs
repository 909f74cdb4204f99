//! Connected byte-stream pairs with any subset of the stack's layers, for the transport
//! throughput matrix: {memsocket, TCP} × {plain, +Noise, +mux, +Noise+mux}.

use futures::StreamExt;
use memsocket::MemorySocket;
use netcore::multiplexing::{self, Control, Mode, MuxConfig};
use noise::{Identity, NoiseConfig, NoiseUpgrader, TrustedPeers};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::stack::Socket;

/// Any byte stream.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A boxed byte stream.
pub type BoxIo = Box<dyn Io>;

/// Which layers sit on the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layers {
    /// The socket alone.
    Plain,
    /// Noise IK on the socket.
    Noise,
    /// The multiplexer on the socket (one substream).
    Mux,
    /// The multiplexer on Noise (one substream): the full connection stack.
    NoiseMux,
}

impl Layers {
    /// Every combination, in table order.
    pub const ALL: [Layers; 4] = [Layers::Plain, Layers::Noise, Layers::Mux, Layers::NoiseMux];

    /// A label for benchmark ids and tables.
    pub fn label(self) -> &'static str {
        match self {
            Layers::Plain => "plain",
            Layers::Noise => "noise",
            Layers::Mux => "mux",
            Layers::NoiseMux => "noise+mux",
        }
    }
}

/// The two ends of a connection, and the multiplexer handles that keep it open.
pub struct Pair {
    /// The dialer's end (the stream opened on it, when multiplexed).
    pub client: BoxIo,
    /// The listener's end.
    pub server: BoxIo,
    /// The multiplexer controls, when multiplexed; dropping them closes the connection.
    pub controls: Option<(Control, Control)>,
}

/// A connected socket pair.
pub async fn sockets(socket: Socket) -> (BoxIo, BoxIo) {
    match socket {
        Socket::Memory => {
            let (a, b) = MemorySocket::new_pair();
            (Box::new(a), Box::new(b))
        }
        Socket::Tcp => {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            let addr = listener.local_addr().expect("bound address");
            let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
            let client = client.expect("connect loopback");
            let (server, _) = accepted.expect("accept loopback");
            client.set_nodelay(true).expect("nodelay");
            server.set_nodelay(true).expect("nodelay");
            (Box::new(client), Box::new(server))
        }
    }
}

/// Runs a Noise IK handshake over `client` and `server`.
pub async fn noise_pair(client: BoxIo, server: BoxIo) -> (BoxIo, BoxIo) {
    let (a, b) = (Identity::generate(), Identity::generate());
    let trusted = TrustedPeers::from_peers([a.peer_id(), b.peer_id()]).expect("valid keys");
    let b_id = b.peer_id();
    let dialer = NoiseUpgrader::new(a, NoiseConfig::mutual(trusted.clone()));
    let listener = NoiseUpgrader::new(b, NoiseConfig::mutual(trusted));
    let (c, s) = tokio::join!(
        dialer.upgrade_outbound(client, b_id),
        listener.upgrade_inbound(server)
    );
    let (c, _) = c.expect("noise dialer");
    let (s, _) = s.expect("noise listener");
    (Box::new(c), Box::new(s))
}

/// Starts the multiplexer on both ends and opens one substream.
pub async fn mux_pair(client: BoxIo, server: BoxIo) -> Pair {
    let (client_control, _client_incoming) =
        multiplexing::start(client, Mode::Client, MuxConfig::default());
    let (server_control, mut server_incoming) =
        multiplexing::start(server, Mode::Server, MuxConfig::default());
    let mut out = client_control.open_stream().await.expect("open substream");
    // The SYN rides with the first byte; the listener learns of the stream from it.
    out.write_all(&[1]).await.expect("write");
    out.flush().await.expect("flush");
    let mut inbound = server_incoming.next().await.expect("inbound substream");
    let mut one = [0u8; 1];
    inbound.read_exact(&mut one).await.expect("read");
    Pair {
        client: Box::new(out),
        server: Box::new(inbound),
        controls: Some((client_control, server_control)),
    }
}

/// A connected pair over `socket` with `layers`.
pub async fn pair(socket: Socket, layers: Layers) -> Pair {
    let (client, server) = sockets(socket).await;
    match layers {
        Layers::Plain => Pair {
            client,
            server,
            controls: None,
        },
        Layers::Noise => {
            let (client, server) = noise_pair(client, server).await;
            Pair {
                client,
                server,
                controls: None,
            }
        }
        Layers::Mux => mux_pair(client, server).await,
        Layers::NoiseMux => {
            let (client, server) = noise_pair(client, server).await;
            mux_pair(client, server).await
        }
    }
}
