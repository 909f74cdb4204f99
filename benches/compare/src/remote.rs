//! The two-process workloads, as nodes really run: the server side in a child process
//! (see [`crate::server`]), the client side in this one, over loopback TCP, each process
//! on a tokio multi-thread runtime with its default workers; the client's workloads run
//! as tasks spawned on its runtime. Bulk (ours, rust-libp2p, plain TCP) and RPC latency
//! (ours, rust-libp2p, a TCP echo) take turns in rounds; each side keeps its connection
//! and its child process across rounds.

use std::any::Any;
use std::io::BufRead as _;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Instant;

use benches::layers::BoxIo;
use benches::stack::BenchNode;
use netcore::multiplexing::{self, Mode, MuxConfig};
use noise::{Identity, NoiseConfig, NoiseUpgrader, TrustedPeers};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::rounds::Turn;
use crate::{libp2p_side, ours};

/// The seed of the serving node's identity (a benchmark's fixed key).
pub const SERVER_SEED: u8 = 1;
/// The seed of the client node's identity.
pub const CLIENT_SEED: u8 = 2;

/// A tokio multi-thread runtime with its default workers (one per core).
pub fn multi_thread() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The benchmark identity of `seed`.
pub fn identity(seed: u8) -> Identity {
    Identity::from_secret_bytes(&[seed; 32])
}

/// The two benchmark identities, trusted by both.
fn trusted() -> TrustedPeers {
    let peers = [SERVER_SEED, CLIENT_SEED].map(|s| identity(s).peer_id());
    TrustedPeers::from_peers(peers).expect("valid keys")
}

/// Mutual authentication between the two benchmark identities.
pub fn config() -> NoiseConfig {
    NoiseConfig::mutual(trusted())
}

/// A full node with the identity of `seed`, trusting the two benchmark identities (see
/// [`crate::nodes`]).
pub fn node(seed: u8) -> BenchNode {
    crate::nodes::node(identity(seed), trusted())
}

/// A server child process, which exits when dropped (its standard input closes).
pub struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The words of the line it printed: where it listens.
    pub words: Vec<String>,
}

impl Server {
    /// Starts the server of `kind` (see [`crate::server`]) and reads where it listens.
    pub fn start(kind: &str, chunk: usize) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .args(["--child-server", kind, &chunk.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("server child starts");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("server child prints where it listens");
        let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        assert!(!words.is_empty(), "server child {kind} failed");
        Self {
            stdin: child.stdin.take(),
            child,
            words,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// One stream to a server child, kept across rounds; each round sends a count and that
/// many bytes in `chunk`-byte writes and takes the seconds until the server's one-byte
/// acknowledgement of the last arrived (one loopback round trip more than the bytes).
pub struct BulkSide {
    name: &'static str,
    rt: Runtime,
    /// `None` only during a round and while being dropped.
    io: Option<BoxIo>,
    chunk: usize,
    /// What keeps the connection open (a multiplexer's control, a swarm's).
    held: Option<Box<dyn Any + Send>>,
    _server: Server,
}

impl BulkSide {
    /// Our TCP + Noise IK + multiplexer, one substream, to an `ours` server.
    pub fn ours(chunk: usize) -> Self {
        let server = Server::start("ours", chunk);
        let rt = multi_thread();
        let addr = server.words[1].clone();
        let (io, held) = rt.block_on(async move {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            tcp.set_nodelay(true).expect("nodelay");
            let upgrader = NoiseUpgrader::new(identity(CLIENT_SEED), config());
            let (noise, _) = upgrader
                .upgrade_outbound(tcp, identity(SERVER_SEED).peer_id())
                .await
                .expect("noise");
            let (control, _incoming) =
                multiplexing::start(noise, Mode::Client, MuxConfig::default());
            let stream = control.open_stream().await.expect("substream");
            let held: Box<dyn Any + Send> = Box::new(control);
            (Box::new(stream) as BoxIo, held)
        });
        Self::new(
            "bulk, two processes, ours, bytes/s",
            rt,
            io,
            chunk,
            held,
            server,
        )
    }

    /// A `libp2p-stream` stream over TCP + Noise + yamux to a `libp2p` server.
    pub fn libp2p(chunk: usize) -> Self {
        let server = Server::start("libp2p", chunk);
        let rt = multi_thread();
        let peer = server.words[0].parse().expect("peer id");
        let addr = server.words[1].parse().expect("address");
        let (io, held) = rt.block_on(async move {
            let client = libp2p_side::connected_client(peer, &addr)
                .await
                .expect("libp2p connects");
            let mut control = client.behaviour().stream.new_control();
            tokio::spawn(libp2p_side::drive(client));
            let stream = control
                .open_stream(peer, libp2p_side::STREAM)
                .await
                .expect("libp2p stream");
            let held: Box<dyn Any + Send> = Box::new(control);
            (Box::new(stream.compat()) as BoxIo, held)
        });
        Self::new(
            "bulk, two processes, libp2p, bytes/s",
            rt,
            io,
            chunk,
            held,
            server,
        )
    }

    /// Plain TCP to a `tcp` server.
    pub fn tcp(chunk: usize) -> Self {
        let server = Server::start("tcp", chunk);
        let rt = multi_thread();
        let addr = server.words[0].clone();
        let io = rt.block_on(async move {
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            tcp.set_nodelay(true).expect("nodelay");
            tcp.write_all(b"B").await.expect("write");
            Box::new(tcp) as BoxIo
        });
        Self::new(
            "bulk, two processes, TCP, bytes/s",
            rt,
            io,
            chunk,
            Box::new(()),
            server,
        )
    }

    fn new(
        name: &'static str,
        rt: Runtime,
        io: BoxIo,
        chunk: usize,
        held: Box<dyn Any + Send>,
        server: Server,
    ) -> Self {
        Self {
            name,
            rt,
            io: Some(io),
            chunk,
            held: Some(held),
            _server: server,
        }
    }
}

impl Turn for BulkSide {
    fn name(&self) -> &'static str {
        self.name
    }

    fn round(&mut self, total: u64) -> f64 {
        let io = self.io.take().expect("open");
        let chunk = self.chunk;
        let (io, secs) = self.rt.block_on(async move {
            tokio::spawn(send_round(io, total, chunk))
                .await
                .expect("bulk round")
        });
        self.io = Some(io);
        secs
    }
}

impl Drop for BulkSide {
    fn drop(&mut self) {
        // The stream and what holds it open go inside their runtime.
        let _inside = self.rt.enter();
        self.io.take();
        self.held.take();
    }
}

/// One round of the bulk protocol (see [`crate::server::bulk_sink`]) on `io`: `total`
/// bytes (a multiple of `chunk`) from a page-aligned buffer.
async fn send_round(mut io: BoxIo, total: u64, chunk: usize) -> (BoxIo, f64) {
    let mut storage = vec![0x5au8; chunk + ours::PAGE];
    let data = &*ours::page_aligned(&mut storage, chunk);
    let start = Instant::now();
    io.write_all(&total.to_be_bytes()).await.expect("write");
    let mut sent = 0u64;
    while sent < total {
        io.write_all(data).await.expect("write");
        sent += chunk as u64;
    }
    io.flush().await.expect("flush");
    let mut ack = [0u8; 1];
    io.read_exact(&mut ack).await.expect("bulk ack");
    (io, start.elapsed().as_secs_f64())
}
