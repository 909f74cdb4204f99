//! The server process of the two-process workloads: `compare --child-server KIND CHUNK`
//! serves one kind of connection on loopback TCP from a tokio multi-thread runtime with
//! its default workers, prints where it listens on one line, and exits when its standard
//! input closes (when the parent drops it).
//!
//! Every kind serves the bulk protocol of [`bulk_sink`] and a 32-byte echo: `ours` a full
//! node answering RPCs and a listener of TCP + Noise IK + multiplexer substreams;
//! `libp2p` a swarm answering request-response and accepting `libp2p-stream` streams;
//! `tcp` plain TCP, whose first byte chooses bulk (`B`) or echo (`E`).

use std::any::Any;
use std::io::Write as _;

use futures::StreamExt;
use netcore::multiplexing::{self, Mode, MuxConfig};
use noise::NoiseUpgrader;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::{libp2p_side, ours, remote};

/// Runs the server of `kind` (`ours`, `libp2p` or `tcp`) until standard input closes;
/// bulk reads go into `chunk`-byte buffers.
pub fn child_server(kind: &str, chunk: usize) {
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let rt = remote::multi_thread();
    let (line, _held) = rt.block_on(async {
        match kind {
            "ours" => serve_ours(chunk).await,
            "libp2p" => serve_libp2p(chunk).await,
            "tcp" => serve_tcp(chunk).await,
            other => panic!("no server kind {other}"),
        }
    });
    let mut out = std::io::stdout();
    writeln!(out, "{line}").expect("stdout");
    out.flush().expect("stdout");
    rt.block_on(std::future::pending::<()>());
}

/// The bulk protocol's reading end: repeatedly an 8-byte big-endian count, that many
/// bytes (read into a page-aligned `chunk`-byte buffer), and one byte back once the
/// last is read; until the stream ends.
pub async fn bulk_sink(mut io: impl AsyncRead + AsyncWrite + Unpin, chunk: usize) {
    let mut storage = vec![0u8; chunk + ours::PAGE];
    let buf = ours::page_aligned(&mut storage, chunk);
    let mut header = [0u8; 8];
    while io.read_exact(&mut header).await.is_ok() {
        let mut left = u64::from_be_bytes(header);
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = io.read(&mut buf[..want]).await.expect("bulk read");
            assert!(n > 0, "bulk stream ended early");
            left -= n as u64;
        }
        io.write_all(&[1]).await.expect("bulk ack");
        io.flush().await.expect("bulk ack");
    }
}

/// Our full node answering RPCs with their request, and a listener of TCP + Noise +
/// multiplexer whose substreams each run [`bulk_sink`]: prints the node's address and
/// the listener's.
async fn serve_ours(chunk: usize) -> (String, Box<dyn Any>) {
    let mut node = remote::node(remote::SERVER_SEED);
    tokio::spawn(benches::stack::echo_server(
        node.events.take().expect("events"),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let stream_addr = listener.local_addr().expect("bound");
    tokio::spawn(async move {
        let upgrader = NoiseUpgrader::new(remote::identity(remote::SERVER_SEED), remote::config());
        loop {
            let (tcp, _) = listener.accept().await.expect("accept");
            tcp.set_nodelay(true).expect("nodelay");
            let (noise, _) = upgrader.upgrade_inbound(tcp).await.expect("noise");
            tokio::spawn(async move {
                let (_control, mut incoming) =
                    multiplexing::start(noise, Mode::Server, MuxConfig::default());
                while let Some(stream) = incoming.next().await {
                    tokio::spawn(bulk_sink(stream, chunk));
                }
            });
        }
    });
    let line = format!("{} {stream_addr}", node.network.listen_addrs()[0]);
    (line, Box::new(node))
}

/// A rust-libp2p swarm answering request-response with the request, and accepting
/// streams that each run [`bulk_sink`]: prints its peer id and address.
async fn serve_libp2p(chunk: usize) -> (String, Box<dyn Any>) {
    let (peer, addr, mut control) = libp2p_side::echo_server().await.expect("libp2p server");
    let mut incoming = control.accept(libp2p_side::STREAM).expect("accept streams");
    tokio::spawn(async move {
        while let Some((_, stream)) = incoming.next().await {
            tokio::spawn(bulk_sink(stream.compat(), chunk));
        }
    });
    (format!("{peer} {addr}"), Box::new(control))
}

/// Plain TCP: a connection whose first byte is `B` runs [`bulk_sink`], one whose first
/// byte is `E` echoes 32-byte requests. Prints the address.
async fn serve_tcp(chunk: usize) -> (String, Box<dyn Any>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.expect("accept");
            tcp.set_nodelay(true).expect("nodelay");
            tokio::spawn(async move {
                let mut kind = [0u8; 1];
                tcp.read_exact(&mut kind).await.expect("kind");
                if kind[0] == b'B' {
                    return bulk_sink(tcp, chunk).await;
                }
                let mut buf = [0u8; 32];
                while tcp.read_exact(&mut buf).await.is_ok() {
                    if tcp.write_all(&buf).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr.to_string(), Box::new(()))
}
