//! Hostile peers for the attack tests: raw TCP sockets and hand-crafted bytes at each
//! layer of the connection pipeline, plus honest probes that measure what the attack
//! costs everyone else. Included with `#[path = "common/attacker.rs"] mod attacker;`.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use netcore::multiplexing::{self, Control, Incoming, Mode, MuxConfig};
use netcore::negotiate::{Negotiated, negotiate_outbound_select};
use netcore::{NetworkAddress, PeerId};
use network::handshake;
use network::{NetworkSender, ProtocolId};
use noise::{Identity, NoiseConfig, NoiseStream, NoiseUpgrader};
use proto::handshake::HandshakeMsg;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// The loopback socket address of a node's listen address.
pub fn socket_addr(addr: &NetworkAddress) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], addr.port()))
}

/// The bytes a dialer with `identity` sends first to `victim` (prologue, length,
/// Noise message 1), recorded over an in-memory pipe.
pub async fn first_noise_message(identity: Identity, victim: PeerId) -> Vec<u8> {
    let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
    let upgrader = NoiseUpgrader::new(identity, NoiseConfig::open());
    let dial = tokio::spawn(async move {
        let _ = upgrader.upgrade_outbound(ours, victim).await;
    });
    let mut head = [0u8; 66];
    theirs.read_exact(&mut head).await.unwrap();
    let len = usize::from(u16::from_be_bytes([head[64], head[65]]));
    let mut message = vec![0u8; len];
    theirs.read_exact(&mut message).await.unwrap();
    dial.abort();
    let mut wire = head.to_vec();
    wire.extend_from_slice(&message);
    wire
}

/// A TCP connection to `victim` authenticated by Noise with `identity`.
pub async fn noise_connect(
    identity: Identity,
    victim: PeerId,
    addr: &NetworkAddress,
) -> Result<NoiseStream<TcpStream>, noise::NoiseError> {
    let socket = TcpStream::connect(socket_addr(addr)).await.unwrap();
    socket.set_nodelay(true).unwrap();
    let upgrader = NoiseUpgrader::new(identity, NoiseConfig::open());
    upgrader
        .upgrade_outbound(socket, victim)
        .await
        .map(|(stream, _)| stream)
}

/// The handshake message of a peer on `chain_id` serving `protocols`.
pub fn handshake_msg(chain_id: u32, protocols: &[ProtocolId]) -> HandshakeMsg {
    HandshakeMsg {
        chain_id,
        network_id: "validator".to_owned(),
        supported_protocols: protocols.iter().map(|p| p.as_str().to_owned()).collect(),
        client_version: "attacker/0".to_owned(),
    }
}

/// A connection past Noise and the handshake message, with the multiplexer proposed
/// (optimistically): what follows is read by the victim's multiplexer.
pub async fn past_handshake(
    identity: Identity,
    victim: PeerId,
    addr: &NetworkAddress,
) -> Negotiated<NoiseStream<TcpStream>> {
    let stream = noise_connect(identity, victim, addr).await.unwrap();
    let (stream, _) = handshake::exchange(stream, &handshake_msg(0, &[]))
        .await
        .unwrap();
    negotiate_outbound_select(stream, network::transport::YAMUX_PROTOCOL).unwrap()
}

/// A full connection to the victim with a multiplexer of our own: the attacker can open
/// substreams and speak any protocol, or break the rules above it.
pub async fn muxed(
    identity: Identity,
    victim: PeerId,
    addr: &NetworkAddress,
    mux: MuxConfig,
) -> (Control, Incoming) {
    let mut stream = past_handshake(identity, victim, addr).await;
    stream.flush().await.unwrap();
    multiplexing::start(stream, Mode::Client, mux)
}

/// A yamux frame header: version 0, `kind`, `flags`, `stream`, `length`.
pub fn yamux_header(kind: u8, flags: u16, stream: u32, length: u32) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[1] = kind;
    h[2..4].copy_from_slice(&flags.to_be_bytes());
    h[4..8].copy_from_slice(&stream.to_be_bytes());
    h[8..12].copy_from_slice(&length.to_be_bytes());
    h
}

/// yamux: the data frame type and the SYN flag.
pub const YAMUX_DATA: u8 = 0;
/// yamux: opens a stream.
pub const YAMUX_SYN: u16 = 1;

/// Waits until the victim closes `stream` (reads until EOF or an error), at most
/// `limit`; returns whether it did.
pub async fn closed_by_victim<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> bool {
    let drain = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, drain).await.is_ok()
}

/// What an honest prober saw.
#[derive(Debug)]
pub struct ProbeReport {
    /// RPCs answered.
    pub answered: usize,
    /// RPCs that failed.
    pub failed: usize,
    /// The slowest answer.
    pub max_latency: Duration,
}

/// An honest peer calling the victim every 20 ms while an attack runs.
pub struct Prober {
    stop: Arc<AtomicBool>,
    task: JoinHandle<ProbeReport>,
}

impl Prober {
    /// Starts probing `victim` over `protocol`, each RPC with the timeout `bound`.
    pub fn start(
        sender: NetworkSender,
        victim: PeerId,
        protocol: ProtocolId,
        bound: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut report = ProbeReport {
                answered: 0,
                failed: 0,
                max_latency: Duration::ZERO,
            };
            while !flag.load(Ordering::Relaxed) {
                let start = Instant::now();
                let request = Bytes::from_static(b"probe");
                match sender.rpc(victim, protocol, request.clone(), bound).await {
                    Ok(answer) if answer == request => {
                        report.answered += 1;
                        report.max_latency = report.max_latency.max(start.elapsed());
                    }
                    _ => report.failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            report
        });
        Self { stop, task }
    }

    /// Stops probing and returns what was seen.
    pub async fn finish(self) -> ProbeReport {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// This process's resident memory, in bytes (Linux).
pub fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
