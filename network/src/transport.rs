//! The connection pipeline: socket → Noise IK → handshake message → negotiation of the
//! multiplexer (`/yamux/1.0.0`) → multiplexer, as one `Transport` built with netcore's
//! combinators.
//!
//! The multiplexer is negotiated so that a later version can be introduced without a
//! flag day. It costs no round trip: the dialer sends its proposal and starts the
//! multiplexer without waiting (optimistic negotiation), and reads the listener's
//! confirmation with its first multiplexer read (docs/WIRE.md).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use netcore::framing::FramingError;
use netcore::multiplexing::{self, Control, Incoming, Mode, MuxConfig};
use netcore::negotiate::{NegotiateError, negotiate_inbound, negotiate_outbound_select};
use netcore::transport::{
    BoxedTransport, ConnectionOrigin, Transport, TransportError, TransportExt,
};
use netcore::{NetworkAddress, PeerId};
use noise::{NoiseError, NoiseUpgrader};
use parking_lot::Mutex;
use prometheus::IntCounter;
use proto::handshake::HandshakeMsg;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::admission::ClaimBoard;
use crate::connection::TrustPredicate;
use crate::handshake::{self, HandshakeError};
use crate::rate_limit::{RateLimitConfig, RateLimitedRead};
use crate::reputation::Reputation;

/// What the network's transport checks of each authenticated peer before going on.
#[derive(Clone)]
pub(crate) struct PeerGuard {
    /// Where inbound handshakes that name a trusted peer in their prologue are marked,
    /// for the peer manager to keep them from eviction.
    pub(crate) claims: ClaimBoard,
    /// Banned peers are refused right after Noise.
    pub(crate) reputation: Arc<Mutex<Reputation>>,
    /// Whether a peer is in the trusted set (for its rate limit).
    pub(crate) is_trusted: TrustPredicate,
    /// The inbound byte limits.
    pub(crate) rate_limit: RateLimitConfig,
    /// Counts the times a connection's reader was held back.
    pub(crate) rate_limited: IntCounter,
}

/// The multiplexer protocol negotiated on every connection.
pub const YAMUX_PROTOCOL: &str = "/yamux/1.0.0";

/// A connection that completed every upgrade step.
pub struct UpgradedConnection {
    /// The remote, authenticated by Noise.
    pub peer_id: PeerId,
    /// The address dialed, or the remote's address as the listener saw it.
    pub addr: NetworkAddress,
    /// Who dialed.
    pub origin: ConnectionOrigin,
    /// Opens substreams and closes the connection.
    pub control: Control,
    /// The remote's substreams.
    pub incoming: Incoming,
    /// The protocols the remote's handshake listed.
    pub remote_protocols: Vec<String>,
    /// The remote's software and version.
    pub client_version: String,
}

impl std::fmt::Debug for UpgradedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpgradedConnection")
            .field("peer_id", &self.peer_id)
            .field("addr", &self.addr)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Why a connection could not be established or upgraded.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The socket could not be opened.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Noise authentication failed.
    #[error(transparent)]
    Noise(#[from] NoiseError),
    /// The handshake message exchange failed or the remote is on another chain/network.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The multiplexer could not be negotiated.
    #[error("multiplexer negotiation: {0}")]
    Negotiate(#[from] NegotiateError),
    /// The whole upgrade took longer than allowed.
    #[error("connection upgrade timed out after {0:?}")]
    Timeout(Duration),
    /// A dial reached a peer other than the one the address named.
    #[error("dial reached another peer than the address named")]
    WrongPeer,
    /// The peer is banned; its connection was refused right after Noise authenticated
    /// it.
    #[error("peer {0:?} is banned")]
    Banned(PeerId),
}

impl UpgradeError {
    /// A short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            UpgradeError::Transport(_) => "transport",
            UpgradeError::Noise(NoiseError::SelfDial) => "self_dial",
            UpgradeError::Noise(NoiseError::UntrustedPeer(_)) => "untrusted_peer",
            UpgradeError::Noise(NoiseError::Replay { .. } | NoiseError::TimestampTooOld { .. }) => {
                "replay"
            }
            UpgradeError::Noise(NoiseError::TooManyHandshakes { .. }) => "too_many_handshakes",
            UpgradeError::Noise(NoiseError::Timeout(_)) => "noise_timeout",
            UpgradeError::Noise(_) => "noise",
            UpgradeError::Handshake(e) => e.reason(),
            UpgradeError::Negotiate(_) => "mux_negotiation",
            UpgradeError::Timeout(_) => "timeout",
            UpgradeError::WrongPeer => "wrong_peer",
            UpgradeError::Banned(_) => "banned",
        }
    }
}

/// Stacks Noise, the handshake message and the multiplexer on `base`. `handshake` is
/// what this node announces; `timeout` bounds the whole upgrade of each connection,
/// including an outbound connect.
pub fn upgrade<T>(
    base: T,
    noise: NoiseUpgrader,
    handshake: HandshakeMsg,
    mux: MuxConfig,
    timeout: Duration,
) -> BoxedTransport<UpgradedConnection, UpgradeError>
where
    T: Transport<Error = TransportError> + Send + Sync + 'static,
    T::Output: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T::Inbound: 'static,
    T::Outbound: 'static,
    T::Listener: 'static,
{
    upgrade_guarded(base, noise, handshake, mux, timeout, None)
}

/// [`upgrade`], refusing banned peers right after Noise and limiting each peer's
/// inbound bytes as `guard` says.
pub(crate) fn upgrade_guarded<T>(
    base: T,
    noise: NoiseUpgrader,
    handshake: HandshakeMsg,
    mux: MuxConfig,
    timeout: Duration,
    guard: Option<PeerGuard>,
) -> BoxedTransport<UpgradedConnection, UpgradeError>
where
    T: Transport<Error = TransportError> + Send + Sync + 'static,
    T::Output: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T::Inbound: 'static,
    T::Outbound: 'static,
    T::Listener: 'static,
{
    base.and_then(move |socket, addr, origin| {
        let guard = guard.clone();
        let steps = async move {
            let socket = match (&guard, origin) {
                (Some(guard), ConnectionOrigin::Inbound) => {
                    peek_claim(socket, &addr, guard).await?
                }
                _ => Prefixed::new(BytesMut::new(), socket),
            };
            let (stream, remote) = noise.upgrade(socket, addr.clone(), origin).await?;
            let peer_id = remote.peer_id;
            let (rate, waits) = match &guard {
                Some(guard) => {
                    let now = tokio::time::Instant::now().into_std();
                    if guard.reputation.lock().is_banned(&peer_id, now) {
                        return Err(UpgradeError::Banned(peer_id));
                    }
                    let trusted = (guard.is_trusted)(&peer_id);
                    let rate = guard.rate_limit.for_peer(trusted).and_then(|l| l.bytes);
                    (rate, Some(guard.rate_limited.clone()))
                }
                None => (None, None),
            };
            let stream = RateLimitedRead::new(stream, rate, waits);
            let (mut stream, theirs) = handshake::exchange(stream, &handshake).await?;
            let (stream, mode) = match origin {
                // The proposal goes out with the multiplexer's first frames: its task
                // flushes at once, with our handshake message if it is still here.
                ConnectionOrigin::Outbound => (
                    negotiate_outbound_select(stream, YAMUX_PROTOCOL)?,
                    Mode::Client,
                ),
                ConnectionOrigin::Inbound => {
                    // Our handshake message is still buffered if the dialer's came
                    // before we looked: the dialer waits for it before it proposes.
                    stream
                        .flush()
                        .await
                        .map_err(|e| HandshakeError::from(FramingError::Io(e)))?;
                    (
                        negotiate_inbound(stream, &[YAMUX_PROTOCOL]).await?.0,
                        Mode::Server,
                    )
                }
            };
            let (control, incoming) = multiplexing::start(stream, mode, mux);
            Ok(UpgradedConnection {
                peer_id,
                addr,
                origin,
                control,
                incoming,
                remote_protocols: theirs.supported_protocols,
                client_version: theirs.client_version,
            })
        };
        async move {
            tokio::time::timeout(timeout, steps)
                .await
                .unwrap_or(Err(UpgradeError::Timeout(timeout)))
        }
    })
    .boxed()
}

/// Bytes at the start of a Noise prologue that name the dialer: its peer id, in clear
/// (docs/WIRE.md §5.3).
const CLAIMED_ID_LEN: usize = 32;

/// Reads the peer id the dialer names at the start of its prologue and, if it is a
/// trusted peer's, marks the handshake on the guard's claim board, before any
/// Diffie-Hellman; gives back a socket that reads those bytes again, for Noise. It
/// reads what the socket has, up to the room of Noise's own first read, so the
/// prologue and message 1 usually come in one read.
async fn peek_claim<IO: AsyncRead + Unpin>(
    mut socket: IO,
    addr: &NetworkAddress,
    guard: &PeerGuard,
) -> Result<Prefixed<IO>, UpgradeError> {
    let mut read = BytesMut::with_capacity(noise::INITIAL_READ_BUFFER_LEN);
    while read.len() < CLAIMED_ID_LEN {
        let room = read.capacity() - read.len();
        let n = socket
            .read_buf(&mut (&mut read).limit(room))
            .await
            .map_err(|e| UpgradeError::Noise(NoiseError::Io(e)))?;
        if n == 0 {
            return Err(UpgradeError::Noise(NoiseError::Truncated));
        }
    }
    // Only an IP address names one socket (a memory listener names every socket
    // alike): claims are kept for those.
    if addr.ip().is_some()
        && let Ok(peer) = PeerId::from_slice(&read[..CLAIMED_ID_LEN])
        && (guard.is_trusted)(&peer)
    {
        guard.claims.mark(addr.clone(), peer);
    }
    Ok(Prefixed::new(read, socket))
}

/// A stream that yields `prefix` before what `inner` reads; writes go to `inner`.
pub(crate) struct Prefixed<IO> {
    /// Not yet read again.
    prefix: BytesMut,
    inner: IO,
}

impl<IO> Prefixed<IO> {
    fn new(prefix: BytesMut, inner: IO) -> Self {
        Self { prefix, inner }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // Its buffer is let go once read.
                this.prefix = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reputation::{Reputation, ReputationConfig};
    use memsocket::MemorySocket;

    fn guard() -> PeerGuard {
        PeerGuard {
            claims: ClaimBoard::default(),
            reputation: Arc::new(Mutex::new(Reputation::new(ReputationConfig::default()))),
            is_trusted: Arc::new(|_| true),
            rate_limit: RateLimitConfig::default(),
            rate_limited: IntCounter::new("rate_limited", "test").unwrap(),
        }
    }

    #[tokio::test]
    async fn the_peek_waits_for_a_whole_claim_and_gives_every_byte_read_back() {
        let (mut dialer, socket) = MemorySocket::new_pair();
        let sent: Vec<u8> = (0..200u8).collect();
        let addr: NetworkAddress = "/memory/1".parse().unwrap();
        let guard = guard();
        let peek = peek_claim(socket, &addr, &guard);
        let send = async {
            // The claim in pieces, the rest of the flight behind it.
            for piece in [&sent[..10], &sent[10..31], &sent[31..]] {
                dialer.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            dialer
        };
        let (prefixed, dialer) = tokio::join!(peek, send);
        drop(dialer);
        let mut got = Vec::new();
        prefixed.unwrap().read_to_end(&mut got).await.unwrap();
        assert_eq!(got, sent);
    }

    #[tokio::test]
    async fn a_stream_that_ends_inside_the_claim_is_truncated() {
        let (mut dialer, socket) = MemorySocket::new_pair();
        dialer.write_all(&[7; 31]).await.unwrap();
        drop(dialer);
        let addr: NetworkAddress = "/memory/1".parse().unwrap();
        assert!(matches!(
            peek_claim(socket, &addr, &guard()).await,
            Err(UpgradeError::Noise(NoiseError::Truncated))
        ));
    }
}
