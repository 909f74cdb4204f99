//! The two-process RPC workloads (see [`crate::remote`]): round trips of 32 bytes, one
//! in flight, over our stack, rust-libp2p and a plain TCP echo, taking turns in rounds;
//! then each one's rate with many in flight.

use std::time::{Duration, Instant};

use benches::stack::{BenchNode, RPC};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

use crate::remote::{self, Server};
use crate::rounds::percentile;
use crate::{libp2p_side, ours};

/// A client of a server child's RPCs, run on spawned tasks.
trait RpcClient: Send {
    /// Round trips of `count` requests of 32 bytes, one in flight.
    fn latencies(&mut self, count: usize) -> BoxFuture<'_, Vec<Duration>>;
    /// Requests per second over `count` requests with `in_flight` outstanding; `None`
    /// for the TCP echo (one write and one read per request on both ends, no batching:
    /// no limit for a stack that batches).
    fn rate(&mut self, in_flight: usize, count: u64) -> Option<BoxFuture<'_, f64>> {
        let _ = (in_flight, count);
        None
    }
}

/// Our client node, connected to the server child's node.
struct OursClient {
    node: BenchNode,
    peer: netcore::PeerId,
}

impl RpcClient for OursClient {
    fn latencies(&mut self, count: usize) -> BoxFuture<'_, Vec<Duration>> {
        async move {
            let mut lat = Vec::with_capacity(count);
            ours::rpc_latencies(&self.node.sender, self.peer, count, &mut lat).await;
            lat
        }
        .boxed()
    }

    fn rate(&mut self, in_flight: usize, count: u64) -> Option<BoxFuture<'_, f64>> {
        Some(ours::rpc_rate(&self.node.sender, self.peer, in_flight, count).boxed())
    }
}

/// A rust-libp2p swarm connected to the server child's, driven by the caller's task.
struct Libp2pClient {
    swarm: libp2p::Swarm<libp2p_side::Behaviour>,
    peer: libp2p::PeerId,
}

impl RpcClient for Libp2pClient {
    fn latencies(&mut self, count: usize) -> BoxFuture<'_, Vec<Duration>> {
        async move {
            libp2p_side::latencies(&mut self.swarm, self.peer, count)
                .await
                .expect("libp2p rpc")
        }
        .boxed()
    }

    fn rate(&mut self, in_flight: usize, count: u64) -> Option<BoxFuture<'_, f64>> {
        let rate = async move {
            libp2p_side::rate(&mut self.swarm, self.peer, in_flight, count)
                .await
                .expect("libp2p rpc")
        };
        Some(rate.boxed())
    }
}

/// A 32-byte echo over plain TCP.
struct EchoClient {
    tcp: TcpStream,
}

impl RpcClient for EchoClient {
    fn latencies(&mut self, count: usize) -> BoxFuture<'_, Vec<Duration>> {
        async move {
            let mut lat = Vec::with_capacity(count);
            let mut buf = [0u8; 32];
            for _ in 0..count {
                let start = Instant::now();
                self.tcp.write_all(&[0x5a; 32]).await.expect("write");
                self.tcp.read_exact(&mut buf).await.expect("read");
                lat.push(start.elapsed());
            }
            lat
        }
        .boxed()
    }
}

/// One side of the RPC workloads: a client on its runtime, and its server child.
struct RpcSide {
    name: &'static str,
    rt: Runtime,
    /// `None` only during a round and while being dropped.
    client: Option<Box<dyn RpcClient>>,
    _server: Server,
}

impl RpcSide {
    /// Our client node, connected to an `ours` server's node.
    fn ours() -> Self {
        let server = Server::start("ours", 1);
        let rt = remote::multi_thread();
        let addr: netcore::NetworkAddress = server.words[0].parse().expect("address");
        let client = rt.block_on(async move {
            let node = remote::node(remote::CLIENT_SEED);
            node.sender.dial(addr).await.expect("dial");
            let peer = remote::identity(remote::SERVER_SEED).peer_id();
            // The first RPC may reach the server before it registered the connection.
            let payload = bytes::Bytes::from_static(&[0x5a; 32]);
            let mut tries = 0;
            while let Err(e) = node
                .sender
                .rpc(peer, RPC, payload.clone(), Duration::from_secs(1))
                .await
            {
                tries += 1;
                assert!(tries < 100, "no RPC to the server child: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Box::new(OursClient { node, peer }) as Box<dyn RpcClient>
        });
        Self::new("ours", rt, client, server)
    }

    /// A rust-libp2p swarm, connected to a `libp2p` server's.
    fn libp2p() -> Self {
        let server = Server::start("libp2p", 1);
        let rt = remote::multi_thread();
        let peer = server.words[0].parse().expect("peer id");
        let addr = server.words[1].parse().expect("address");
        let client = rt.block_on(async move {
            let swarm = libp2p_side::connected_client(peer, &addr)
                .await
                .expect("libp2p connects");
            Box::new(Libp2pClient { swarm, peer }) as Box<dyn RpcClient>
        });
        Self::new("libp2p", rt, client, server)
    }

    /// A TCP connection to a `tcp` server's echo.
    fn echo() -> Self {
        let server = Server::start("tcp", 1);
        let rt = remote::multi_thread();
        let addr = server.words[0].clone();
        let client = rt.block_on(async move {
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            tcp.set_nodelay(true).expect("nodelay");
            tcp.write_all(b"E").await.expect("write");
            Box::new(EchoClient { tcp }) as Box<dyn RpcClient>
        });
        Self::new("echo", rt, client, server)
    }

    fn new(name: &'static str, rt: Runtime, client: Box<dyn RpcClient>, server: Server) -> Self {
        Self {
            name,
            rt,
            client: Some(client),
            _server: server,
        }
    }

    /// Runs `work` on the client as a task spawned on the side's runtime.
    fn spawn<T: Send + 'static>(
        &mut self,
        work: impl FnOnce(&mut dyn RpcClient) -> BoxFuture<'_, T> + Send + 'static,
    ) -> T {
        let mut client = self.client.take().expect("open");
        let (client, out) = self.rt.block_on(async move {
            tokio::spawn(async move {
                let out = work(&mut *client).await;
                (client, out)
            })
            .await
            .expect("rpc round")
        });
        self.client = Some(client);
        out
    }
}

impl Drop for RpcSide {
    fn drop(&mut self) {
        // The client's sockets and tasks go inside its runtime.
        let _inside = self.rt.enter();
        self.client.take();
    }
}

/// What the two-process RPC workloads measured on each side (ours, rust-libp2p, the TCP
/// echo): sorted round trips, and the rate with `in_flight` outstanding (not the echo's).
pub struct RpcFigures {
    /// Each side's name, round trips (sorted) and rate, in that order.
    pub sides: Vec<(&'static str, Vec<Duration>, Option<f64>)>,
}

/// Runs the two-process RPC workloads: after a warm-up of a tenth of `samples` each,
/// `samples` round trips per side in turns over `rounds` rounds (rotating which goes
/// first; each round's p50 goes to stderr); then ours' and rust-libp2p's rate over `rate_count`
/// requests with `in_flight` outstanding. `ours_only` (for profiling): our side alone.
pub fn rpc(
    samples: usize,
    rounds: usize,
    in_flight: usize,
    rate_count: u64,
    ours_only: bool,
) -> RpcFigures {
    let mut sides = vec![RpcSide::ours()];
    if !ours_only {
        sides.push(RpcSide::libp2p());
        sides.push(RpcSide::echo());
    }
    let rounds = rounds.next_multiple_of(sides.len());
    let per_round = (samples / rounds).max(1);
    let warm_up = (samples / 10).max(1);
    for side in &mut sides {
        side.spawn(move |c| c.latencies(warm_up));
    }
    let mut lat = vec![Vec::new(); sides.len()];
    let mut p50s = Vec::new();
    for round in 0..rounds {
        let mut p50 = vec![String::new(); sides.len()];
        for turn in 0..sides.len() {
            let i = (round + turn) % sides.len();
            let mut l = sides[i].spawn(move |c| c.latencies(per_round));
            l.sort();
            p50[i] = format!("{:.1}", percentile(&l, 0.5));
            lat[i].append(&mut l);
        }
        p50s.push(p50.join("/"));
    }
    let names: Vec<&str> = sides.iter().map(|s| s.name).collect();
    eprintln!(
        "  two-process rpc p50 per round, {} µs: {}",
        names.join("/"),
        p50s.join(" ")
    );
    let mut figures = RpcFigures { sides: Vec::new() };
    for (side, mut lat) in sides.iter_mut().zip(lat) {
        lat.sort();
        let rate = side.spawn(move |c| match c.rate(in_flight, rate_count) {
            Some(rate) => rate.map(Some).boxed(),
            None => futures::future::ready(None).boxed(),
        });
        figures.sides.push((side.name, lat, rate));
    }
    figures
}
