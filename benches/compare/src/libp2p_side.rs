//! rust-libp2p's side of the comparison: two swarms on loopback TCP with Noise (XX) and
//! yamux, a plain stream (`libp2p-stream`) and request-response with a 32-byte codec.

use std::io;
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, noise, tcp, yamux};

/// The plain-stream protocol.
pub const STREAM: StreamProtocol = StreamProtocol::new("/compare/stream/1");
/// The request-response protocol.
const RPC: StreamProtocol = StreamProtocol::new("/compare/rpc/1");
/// Largest request or response the codec reads.
const MAX_RPC: u64 = 1 << 16;

/// Reads the whole substream as one message; writes it and closes the substream (the
/// cheapest framing request-response allows: one substream per request).
#[derive(Clone, Default)]
pub struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        let mut buf = Vec::new();
        io.take(MAX_RPC).read_to_end(&mut buf).await?;
        Ok(buf)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        let mut buf = Vec::new();
        io.take(MAX_RPC).read_to_end(&mut buf).await?;
        Ok(buf)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        io.write_all(&res).await?;
        io.close().await
    }
}

/// The swarms' behaviour: a plain stream and request-response.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Plain streams.
    pub stream: libp2p_stream::Behaviour,
    /// Request-response.
    pub rpc: request_response::Behaviour<RawCodec>,
}

/// A swarm on loopback TCP + Noise + yamux that keeps idle connections open.
pub fn swarm() -> anyhow::Result<Swarm<Behaviour>> {
    let swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| Behaviour {
            stream: libp2p_stream::Behaviour::new(),
            rpc: request_response::Behaviour::with_codec(
                RawCodec,
                [(RPC, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_secs(60))
                    .with_max_concurrent_streams(1024),
            ),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    Ok(swarm)
}

/// Starts a listening swarm that echoes every request, and returns its id and address.
pub async fn echo_server() -> anyhow::Result<(PeerId, Multiaddr, libp2p_stream::Control)> {
    let mut server = swarm()?;
    server.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let peer = *server.local_peer_id();
    let control = server.behaviour().stream.new_control();
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(BehaviourEvent::Rpc(request_response::Event::Message {
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            })) = server.select_next_some().await
            {
                let _ = server.behaviour_mut().rpc.send_response(channel, request);
            }
        }
    });
    Ok((peer, addr, control))
}

/// A client swarm connected to `addr`, with its events left to the caller.
pub async fn connected_client(peer: PeerId, addr: &Multiaddr) -> anyhow::Result<Swarm<Behaviour>> {
    let mut client = swarm()?;
    client.dial(addr.clone())?;
    loop {
        match client.select_next_some().await {
            SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == peer => {
                return Ok(client);
            }
            SwarmEvent::OutgoingConnectionError { error, .. } => return Err(error.into()),
            _ => {}
        }
    }
}

/// Sends `total` bytes in `chunk`-byte writes over one stream, after `warm_up` bytes that
/// are not timed (as our side's warm-up round); returns the seconds taken until the
/// receiver read the last byte.
pub async fn bulk(total: u64, warm_up: u64, chunk: usize) -> anyhow::Result<f64> {
    let (peer, addr, mut server_control) = echo_server().await?;
    let client = connected_client(peer, &addr).await?;
    let mut control = client.behaviour().stream.new_control();
    tokio::spawn(drive(client));
    let mut incoming = server_control.accept(STREAM)?;
    let (warm_tx, warm) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(async move {
        let (_, mut stream) = incoming.next().await.expect("inbound stream");
        let mut storage = vec![0u8; chunk + crate::ours::PAGE];
        let buf = crate::ours::page_aligned(&mut storage, chunk);
        let mut read = 0u64;
        let mut warm_tx = Some(warm_tx);
        while read < warm_up + total {
            let n = stream.read(buf).await.expect("read");
            assert!(n > 0, "stream ended early");
            read += n as u64;
            if read >= warm_up
                && let Some(tx) = warm_tx.take()
            {
                let _ = tx.send(());
            }
        }
        Instant::now()
    });
    let mut stream = control.open_stream(peer, STREAM).await?;
    let mut storage = vec![0x5au8; chunk + crate::ours::PAGE];
    let data = &*crate::ours::page_aligned(&mut storage, chunk);
    let mut sent = 0u64;
    while sent < warm_up {
        stream.write_all(data).await?;
        sent += chunk as u64;
    }
    stream.flush().await?;
    warm.await?;
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        stream.write_all(data).await?;
        sent += chunk as u64;
    }
    stream.flush().await?;
    let end = reader.await?;
    Ok((end - start).as_secs_f64())
}

/// Sends `count` length-prefixed 32-byte messages over one stream (buffered writes),
/// after `warm_up` messages that are not timed (as our side's warm-up round); returns
/// messages per second until the receiver counted the last one.
pub async fn small_messages(count: u64, warm_up: u64) -> anyhow::Result<f64> {
    let (peer, addr, mut server_control) = echo_server().await?;
    let client = connected_client(peer, &addr).await?;
    let mut control = client.behaviour().stream.new_control();
    tokio::spawn(drive(client));
    let mut incoming = server_control.accept(STREAM)?;
    let (warm_tx, warm) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(async move {
        let (_, stream) = incoming.next().await.expect("inbound stream");
        let mut stream = futures::io::BufReader::with_capacity(64 * 1024, stream);
        let mut frame = [0u8; 36];
        for _ in 0..warm_up {
            stream.read_exact(&mut frame).await.expect("read");
        }
        let _ = warm_tx.send(());
        for _ in 0..count {
            stream.read_exact(&mut frame).await.expect("read");
        }
        Instant::now()
    });
    let stream = control.open_stream(peer, STREAM).await?;
    let mut stream = futures::io::BufWriter::with_capacity(64 * 1024, stream);
    let mut frame = [0x5au8; 36];
    frame[..4].copy_from_slice(&32u32.to_be_bytes());
    for _ in 0..warm_up {
        stream.write_all(&frame).await?;
    }
    stream.flush().await?;
    warm.await?;
    let start = Instant::now();
    for _ in 0..count {
        stream.write_all(&frame).await?;
    }
    stream.flush().await?;
    let end = reader.await?;
    Ok(count as f64 / (end - start).as_secs_f64())
}

/// RPC latencies (one in flight, `samples` of them, sorted) and the rate with
/// `in_flight` requests outstanding over `rate_count` requests.
pub async fn rpc(
    samples: usize,
    in_flight: usize,
    rate_count: u64,
) -> anyhow::Result<(Vec<Duration>, f64)> {
    let (peer, addr, _control) = echo_server().await?;
    let mut client = connected_client(peer, &addr).await?;
    latencies(&mut client, peer, samples / 10).await?;
    let mut lat = latencies(&mut client, peer, samples).await?;
    lat.sort();
    Ok((lat, rate(&mut client, peer, in_flight, rate_count).await?))
}

/// Round trips of `count` requests to `peer`, one in flight, from `client` (which the
/// caller's task drives).
pub async fn latencies(
    client: &mut Swarm<Behaviour>,
    peer: PeerId,
    count: usize,
) -> anyhow::Result<Vec<Duration>> {
    let payload = vec![0x5au8; 32];
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        client
            .behaviour_mut()
            .rpc
            .send_request(&peer, payload.clone());
        wait_response(client).await?;
        latencies.push(start.elapsed());
    }
    Ok(latencies)
}

/// Requests per second to `peer` from `client` over `rate_count` requests with
/// `in_flight` outstanding.
pub async fn rate(
    client: &mut Swarm<Behaviour>,
    peer: PeerId,
    in_flight: usize,
    rate_count: u64,
) -> anyhow::Result<f64> {
    let payload = vec![0x5au8; 32];
    let start = Instant::now();
    let mut issued = 0u64;
    while issued < (in_flight as u64).min(rate_count) {
        client
            .behaviour_mut()
            .rpc
            .send_request(&peer, payload.clone());
        issued += 1;
    }
    let mut done = 0u64;
    while done < rate_count {
        wait_response(client).await?;
        done += 1;
        if issued < rate_count {
            client
                .behaviour_mut()
                .rpc
                .send_request(&peer, payload.clone());
            issued += 1;
        }
    }
    Ok(rate_count as f64 / start.elapsed().as_secs_f64())
}

async fn wait_response(client: &mut Swarm<Behaviour>) -> anyhow::Result<()> {
    loop {
        match client.select_next_some().await {
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            })) => {
                anyhow::ensure!(response.len() == 32, "short response");
                return Ok(());
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(
                request_response::Event::OutboundFailure { error, .. },
            )) => return Err(error.into()),
            _ => {}
        }
    }
}

/// Connections per second: each dials, upgrades (TCP, Noise XX, yamux), sends one RPC,
/// and closes, `count` times in sequence from one client swarm.
pub async fn setup(count: u32) -> anyhow::Result<f64> {
    let (peer, addr, _control) = echo_server().await?;
    let mut client = swarm()?;
    let payload = vec![0x5au8; 32];
    let start = Instant::now();
    for _ in 0..count {
        client.dial(addr.clone())?;
        loop {
            match client.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => break,
                SwarmEvent::OutgoingConnectionError { error, .. } => return Err(error.into()),
                _ => {}
            }
        }
        client
            .behaviour_mut()
            .rpc
            .send_request(&peer, payload.clone());
        wait_response(&mut client).await?;
        let _ = client.disconnect_peer_id(peer);
        loop {
            if let SwarmEvent::ConnectionClosed { .. } = client.select_next_some().await {
                break;
            }
        }
    }
    Ok(f64::from(count) / start.elapsed().as_secs_f64())
}

/// Opens `count` connections from one client swarm to one server swarm in this
/// process and leaves them idle; returns the two swarms' tasks running.
pub async fn idle_connections(count: u32) -> anyhow::Result<()> {
    let (peer, addr, _control) = echo_server().await?;
    let mut client = swarm()?;
    for _ in 0..count {
        client.dial(
            DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .condition(PeerCondition::Always)
                .build(),
        )?;
        loop {
            match client.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => break,
                SwarmEvent::OutgoingConnectionError { error, .. } => return Err(error.into()),
                _ => {}
            }
        }
    }
    anyhow::ensure!(
        client
            .network_info()
            .connection_counters()
            .num_established()
            == count,
        "not all connections are open"
    );
    tokio::spawn(drive(client));
    // Keep the control alive with the process.
    std::mem::forget(_control);
    Ok(())
}

/// Polls `swarm` for ever, dropping its events.
pub async fn drive(mut swarm: Swarm<Behaviour>) {
    loop {
        swarm.select_next_some().await;
    }
}
