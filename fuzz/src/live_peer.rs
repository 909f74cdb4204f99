//! Raw bytes into a live peer: a full network node (PeerManager, RPC, DirectSend,
//! discovery, health checks) over memsocket, reached past Noise, the handshake message
//! and the multiplexer's negotiation, so the fuzzed bytes are what its multiplexer reads.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use netcore::negotiate::negotiate_outbound_select;
use netcore::transport::MemoryTransport;
use netcore::{NetworkAddress, PeerId};
use network::{Event, Network, NetworkBuilder, NetworkConfig, ProtocolId, ProtocolKind};
use noise::{Identity, NoiseConfig, NoiseUpgrader};
use proto::handshake::HandshakeMsg;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

/// The RPC protocol the victim serves (its handler answers every request).
pub const LIVE_RPC: ProtocolId = ProtocolId::new("/fuzz/rpc/1");

/// The DirectSend protocol the victim serves.
pub const LIVE_DIRECT: ProtocolId = ProtocolId::new("/fuzz/direct-send/1");

/// How long the harness lets the victim chew on one input before hanging up: bytes it
/// has not read by then are dropped with the connection.
const CHEW_TIME: Duration = Duration::from_millis(2);

/// The victim and the runtime it runs on, for the whole fuzzing process.
struct Victim {
    runtime: Runtime,
    addr: NetworkAddress,
    peer_id: PeerId,
    _network: Mutex<Network>,
}

fn victim() -> &'static Victim {
    static VICTIM: OnceLock<Victim> = OnceLock::new();
    VICTIM.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot build the victim's runtime: {e}"));
        let network = runtime.block_on(async {
            let identity = Identity::generate();
            let upgrader = NoiseUpgrader::new(identity, NoiseConfig::open());
            let mut builder = NetworkBuilder::new(
                NetworkConfig::default(),
                upgrader,
                prometheus::Registry::new(),
            );
            let app = builder.register(&[
                (LIVE_RPC, ProtocolKind::Rpc),
                (LIVE_DIRECT, ProtocolKind::DirectSend),
            ]);
            if let Ok(addr) = "/memory/0".parse() {
                builder.listen_on(addr);
            }
            let mut network = builder
                .start(MemoryTransport::default())
                .unwrap_or_else(|e| panic!("the victim did not start: {e}"));
            if let Some((_sender, mut events)) = network.take_app(app) {
                tokio::spawn(async move {
                    while let Some(event) = events.next().await {
                        if let Event::RpcRequest {
                            data, responder, ..
                        } = event
                        {
                            let _ = responder.respond(data);
                        }
                    }
                });
            }
            network
        });
        let addr = network.listen_addrs()[0].clone();
        let peer_id = network.local_peer_id();
        Victim {
            runtime,
            addr,
            peer_id,
            _network: Mutex::new(network),
        }
    })
}

/// The handshake message of an attacker on the victim's chain and network.
fn hello() -> HandshakeMsg {
    let config = NetworkConfig::default();
    HandshakeMsg {
        chain_id: config.chain_id,
        network_id: config.network_id,
        supported_protocols: vec![
            LIVE_RPC.as_str().to_owned(),
            LIVE_DIRECT.as_str().to_owned(),
        ],
        client_version: "fuzz/0".to_owned(),
    }
}

/// Connects to the live victim as a fresh identity, completes Noise, the handshake
/// message and the multiplexer's negotiation, then writes `data` as the multiplexed
/// byte stream, reads what the victim answers for a moment, and hangs up.
pub fn live_peer(data: &[u8]) {
    let _ = write_to_live_peer(data);
}

/// [`live_peer`], telling whether the connection got as far as the multiplexer (so the
/// harness itself works: the victim accepted Noise, the handshake and the negotiation).
pub(crate) fn write_to_live_peer(data: &[u8]) -> bool {
    let victim = victim();
    victim.runtime.block_on(async {
        let Ok(socket) = memsocket::MemorySocket::connect(victim.addr.port()) else {
            return false;
        };
        let upgrader = NoiseUpgrader::new(Identity::generate(), NoiseConfig::open());
        let Ok((stream, _)) = upgrader.upgrade_outbound(socket, victim.peer_id).await else {
            return false;
        };
        let Ok((stream, _)) = network::handshake::exchange(stream, &hello()).await else {
            return false;
        };
        let Ok(mut stream) = negotiate_outbound_select(stream, network::transport::YAMUX_PROTOCOL)
        else {
            return false;
        };
        if stream.write_all(data).await.is_err() || stream.flush().await.is_err() {
            return false;
        }
        let mut buf = [0u8; 4096];
        let _ = tokio::time::timeout(CHEW_TIME, async {
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_harness_reaches_the_live_peers_multiplexer() {
        assert!(write_to_live_peer(&[]));
        assert!(write_to_live_peer(b"garbage after the handshake"));
    }
}
