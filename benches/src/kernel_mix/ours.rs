//! The kernel mix over our stack: TCP, Noise (mutual, both keys derived from fixed
//! seeds so the two processes need no shared files), handshake, multiplexer, network.
//! Two RPC protocols on the one connection: [`SMALL`] at [`Priority::Urgent`], echoing
//! its 32 B request, and [`BULK`] at [`Priority::Bulk`], answering with 4 MiB.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;
use netcore::PeerId;
use netcore::transport::{TcpConfig, TcpTransport};
use network::{
    Event, Network, NetworkBuilder, NetworkConfig, NetworkEvents, NetworkSender, Priority,
    ProtocolId, ProtocolKind,
};
use noise::{Identity, NoiseConfig, NoiseUpgrader, TrustedPeers};
use tokio::time::MissedTickBehavior;

use super::{BULK_SIZE, ClientOptions, Figures, GRACE, Recorder, SMALL_INTERVAL, SMALL_SIZE};

/// The small RPC: 32 B echoed, `Urgent`.
pub const SMALL: ProtocolId = ProtocolId::new("/kernel-mix/small/1");
/// The bulk RPC: an 8 B request answered with [`BULK_SIZE`] bytes, `Bulk`.
pub const BULK: ProtocolId = ProtocolId::new("/kernel-mix/bulk/1");

/// Seed of the server's key.
const SERVER_SEED: u8 = 1;
/// Seed of the client's key.
const CLIENT_SEED: u8 = 2;
/// Timeout of every RPC: long enough never to fire.
const RPC_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the client keeps dialing a server that is not listening yet.
const DIAL_PATIENCE: Duration = Duration::from_secs(10);

fn identity(seed: u8) -> Identity {
    Identity::from_secret_bytes(&[seed; 32])
}

/// The server's peer id, the same in every process.
pub fn server_peer() -> PeerId {
    identity(SERVER_SEED).peer_id()
}

/// A node with the two protocols, its key from `seed`, trusting both keys (so neither
/// end rate-limits the other), listening on `listen` if given.
fn start_node(
    seed: u8,
    listen: Option<SocketAddr>,
    lowat: Option<u32>,
) -> anyhow::Result<(Network, NetworkSender, NetworkEvents)> {
    let trusted =
        TrustedPeers::from_peers([SERVER_SEED, CLIENT_SEED].map(|s| identity(s).peer_id()))
            .context("derived keys are valid")?;
    let upgrader = NoiseUpgrader::new(identity(seed), NoiseConfig::mutual(trusted.clone()));
    let mut builder = NetworkBuilder::new(
        NetworkConfig::default(),
        upgrader,
        prometheus::Registry::new(),
    );
    builder.trusted_peers(trusted);
    if let Some(addr) = listen {
        builder.listen_on(addr.into());
    }
    let app = builder.register(&[(SMALL, ProtocolKind::Rpc), (BULK, ProtocolKind::Rpc)]);
    builder
        .set_priority(SMALL, Priority::Urgent)
        .set_priority(BULK, Priority::Bulk)
        .set_max_message_size(BULK, BULK_SIZE);
    let tcp = TcpConfig {
        notsent_lowat: lowat,
        ..TcpConfig::default()
    };
    let mut network = builder.start(TcpTransport::new(tcp))?;
    let (sender, events) = network.take_app(app).context("the app is taken once")?;
    Ok((network, sender, events))
}

/// Serves on `listen` until killed: echoes [`SMALL`], answers [`BULK`] with 4 MiB.
pub async fn serve(listen: SocketAddr, lowat: Option<u32>) -> anyhow::Result<()> {
    let (_network, _sender, mut events) = start_node(SERVER_SEED, Some(listen), lowat)?;
    let bulk = Bytes::from(vec![0x42; BULK_SIZE]);
    while let Some(event) = events.next().await {
        if let Event::RpcRequest {
            protocol,
            data,
            responder,
            ..
        } = event
        {
            let response = if protocol == BULK { bulk.clone() } else { data };
            let _ = responder.respond(response);
        }
    }
    Ok(())
}

/// Dials the server until it answers or [`DIAL_PATIENCE`] runs out.
async fn connect(sender: &NetworkSender, server: SocketAddr) -> anyhow::Result<()> {
    let addr = netcore::NetworkAddress::from(server).with_peer_id(server_peer());
    let start = Instant::now();
    loop {
        match sender.dial(addr.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if start.elapsed() > DIAL_PATIENCE => bail!("dialing {server}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Runs the client's workload; returns the figures of the measured window.
pub async fn client(options: &ClientOptions) -> anyhow::Result<Figures> {
    let (_network, sender, _events) = start_node(CLIENT_SEED, None, options.lowat)?;
    connect(&sender, options.server).await?;
    let peer = server_peer();
    let recorder = Arc::new(Recorder::default());
    let start = Instant::now();
    let (from, to) = options.window(start);
    for lane in 0..options.in_flight {
        let (sender, recorder) = (sender.clone(), Arc::clone(&recorder));
        tokio::spawn(async move {
            let request = Bytes::from_static(&[0; 8]);
            while let Ok(response) = sender.rpc(peer, BULK, request.clone(), RPC_TIMEOUT).await {
                if response.len() == BULK_SIZE {
                    recorder.bulk_completed(lane);
                }
            }
        });
    }
    if options.small {
        tokio::spawn(small_requests(sender, peer, Arc::clone(&recorder), to));
    }
    tokio::time::sleep_until((to + GRACE).into()).await;
    Ok(recorder.summary(from, to, options.in_flight))
}

/// Sends a small request every [`SMALL_INTERVAL`] until `until`, each in its own task.
async fn small_requests(
    sender: NetworkSender,
    peer: PeerId,
    recorder: Arc<Recorder>,
    until: Instant,
) {
    let mut ticks = tokio::time::interval(SMALL_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let payload = Bytes::from_static(&[0x5a; SMALL_SIZE]);
    while Instant::now() < until {
        ticks.tick().await;
        let (sender, recorder, payload) = (sender.clone(), Arc::clone(&recorder), payload.clone());
        tokio::spawn(async move {
            let sent = Instant::now();
            recorder.small_sent(sent);
            if let Ok(echo) = sender.rpc(peer, SMALL, payload, RPC_TIMEOUT).await
                && echo.len() == SMALL_SIZE
            {
                recorder.small_answered(sent, sent.elapsed());
            }
        });
    }
}
