//! `NoiseUpgrader`: runs the handshake over a socket and yields a [`NoiseStream`]; usable
//! as a `netcore` transport upgrade.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use netcore::transport::ConnectionOrigin;
use netcore::{NetworkAddress, PeerId};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::constants::{
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONCURRENT_INBOUND_HANDSHAKES, PROLOGUE_LEN,
};
use crate::dh::StaticKeys;
use crate::error::NoiseError;
use crate::handshake::{self, AuthMode, DialerHandshake, Inputs, RemoteInfo};
use crate::identity::Identity;
use crate::replay::ReplayGuard;
use crate::stream::NoiseStream;
use crate::suite::NoiseSuite;
use reader::HandshakeReader;

mod reader;

/// How an upgrader authenticates and how long it waits.
#[derive(Clone, Debug)]
pub struct NoiseConfig {
    /// Who a listener accepts.
    pub mode: AuthMode,
    /// The longest a handshake may take, either side.
    pub timeout: Duration,
    /// The Noise protocol and backend; the same protocol on every node of a network.
    pub suite: NoiseSuite,
    /// Inbound handshakes run at once; more are refused with
    /// [`NoiseError::TooManyHandshakes`].
    pub max_concurrent_inbound: usize,
}

impl NoiseConfig {
    /// Mutual authentication against `trusted`, with the default timeout, suite and limit.
    pub fn mutual(trusted: super::TrustedPeers) -> Self {
        Self::with_mode(AuthMode::Mutual(trusted))
    }

    /// Open mode (any dialer accepted), with the default timeout, suite and limit.
    pub fn open() -> Self {
        Self::with_mode(AuthMode::Open)
    }

    fn with_mode(mode: AuthMode) -> Self {
        Self {
            mode,
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            suite: crate::DEFAULT_SUITE,
            max_concurrent_inbound: DEFAULT_MAX_CONCURRENT_INBOUND_HANDSHAKES,
        }
    }
}

/// Runs Noise IK handshakes for one identity. Cheap to clone; clones share the
/// anti-replay memory, the inbound-handshake limit and the trusted set.
///
/// Inbound handshakes above [`NoiseConfig::max_concurrent_inbound`] are **refused at
/// once** with [`NoiseError::TooManyHandshakes`] rather than queued: queueing would let a
/// flood hold sockets and memory for up to a timeout each, while an honest dialer simply
/// retries with its backoff.
///
/// As a transport upgrade:
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use futures::StreamExt;
/// use netcore::transport::{MemoryTransport, Transport, TransportExt};
/// use noise::{Identity, NoiseConfig, NoiseUpgrader};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// let (alice, bob) = (Identity::generate(), Identity::generate());
/// let (alice_id, bob_id) = (alice.peer_id(), bob.peer_id());
/// let alice_up = NoiseUpgrader::new(alice, NoiseConfig::open());
/// let bob_up = NoiseUpgrader::new(bob, NoiseConfig::open());
/// let alice_net = MemoryTransport::default()
///     .and_then(move |io, addr, origin| alice_up.upgrade(io, addr, origin));
/// let bob_net = MemoryTransport::default()
///     .and_then(move |io, addr, origin| bob_up.upgrade(io, addr, origin));
///
/// let (mut listener, addr) = bob_net.listen_on("/memory/0".parse().unwrap()).unwrap();
/// let dial = alice_net.dial(addr.with_peer_id(bob_id)).unwrap();
/// let (inbound, _) = listener.next().await.unwrap().unwrap();
/// let (dialed, accepted) = futures::join!(dial, inbound);
/// let ((mut a, _), (mut b, remote)) = (dialed.unwrap(), accepted.unwrap());
///
/// a.write_all(b"hello").await.unwrap();
/// a.flush().await.unwrap();
/// let mut buf = [0u8; 5];
/// b.read_exact(&mut buf).await.unwrap();
/// assert_eq!(&buf, b"hello");
/// assert_eq!(remote.peer_id, alice_id);
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct NoiseUpgrader {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    identity: Identity,
    /// The identity's static key pair and the static-static secrets kept with it.
    static_keys: StaticKeys,
    config: NoiseConfig,
    replay: Mutex<ReplayGuard>,
    inbound_permits: Arc<Semaphore>,
    last_timestamp: AtomicU64,
    /// Set only by [`NoiseUpgrader::with_fixed_inputs`]: the clock and the ephemeral keys.
    fixed: Option<Fixed>,
}

/// The inputs of [`NoiseUpgrader::with_fixed_inputs`] and the count of handshakes that
/// used them.
#[derive(Debug)]
struct Fixed {
    inputs: FixedInputs,
    handshakes: AtomicU64,
}

/// What makes a handshake's bytes reproducible: the clock and the seed of the ephemeral
/// keys. For transcript tests only: anyone who knows the seed can compute every session
/// key of the handshakes that used it, so the upgrader that takes it
/// ([`NoiseUpgrader::with_fixed_inputs`]) exists only with the crate's `fixed-inputs`
/// feature, which only test builds turn on.
#[derive(Clone, Copy, Debug)]
pub struct FixedInputs {
    /// The clock every handshake reads, in ms since the Unix epoch.
    pub clock_ms: u64,
    /// The seed of the ephemeral keys: the `n`th handshake's key is the SHA-256 of the
    /// seed and `n` (u64 BE).
    pub ephemeral_seed: [u8; 32],
}

impl Fixed {
    /// The ephemeral secret of the next handshake.
    fn next_ephemeral(&self) -> [u8; 32] {
        let n = self.handshakes.fetch_add(1, Ordering::Relaxed);
        let mut input = [0u8; 40];
        input[..32].copy_from_slice(&self.inputs.ephemeral_seed);
        input[32..].copy_from_slice(&n.to_be_bytes());
        let digest = ring::digest::digest(&ring::digest::SHA256, &input);
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        key
    }
}

fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl NoiseUpgrader {
    /// An upgrader for `identity` with `config`.
    pub fn new(identity: Identity, config: NoiseConfig) -> Self {
        let permits = config.max_concurrent_inbound;
        Self {
            inner: Arc::new(Inner {
                static_keys: StaticKeys::new(&identity),
                identity,
                config,
                replay: Mutex::new(ReplayGuard::starting_at(system_ms())),
                inbound_permits: Arc::new(Semaphore::new(permits)),
                last_timestamp: AtomicU64::new(0),
                fixed: None,
            }),
        }
    }

    /// An upgrader whose handshakes read a fixed clock and derive their ephemeral keys
    /// from a seed, so that the same inputs give the same bytes on the wire: for
    /// transcript tests, never for a node (see [`FixedInputs`]).
    #[cfg(feature = "fixed-inputs")]
    pub fn with_fixed_inputs(identity: Identity, config: NoiseConfig, inputs: FixedInputs) -> Self {
        let mut upgrader = Self::new(identity, config);
        if let Some(inner) = Arc::get_mut(&mut upgrader.inner) {
            inner.replay = Mutex::new(ReplayGuard::starting_at(inputs.clock_ms));
            inner.fixed = Some(Fixed {
                inputs,
                handshakes: AtomicU64::new(0),
            });
        }
        upgrader
    }

    /// The clock of the handshakes, in ms since the Unix epoch.
    fn now_ms(&self) -> u64 {
        self.inner
            .fixed
            .as_ref()
            .map_or_else(system_ms, |f| f.inputs.clock_ms)
    }

    /// The fixed ephemeral secret of the next handshake, if the inputs are fixed.
    fn fixed_ephemeral(&self) -> Option<[u8; 32]> {
        self.inner.fixed.as_ref().map(Fixed::next_ephemeral)
    }

    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.identity.peer_id()
    }

    /// The configuration.
    pub fn config(&self) -> &NoiseConfig {
        &self.inner.config
    }

    /// The timestamp for our next first message: our clock in ms, but always above the
    /// previous one, so two dials within one millisecond are not taken for a replay.
    fn next_timestamp(&self) -> u64 {
        let now = self.now_ms();
        let previous = self
            .inner
            .last_timestamp
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(now.max(last.saturating_add(1)))
            })
            .unwrap_or(0);
        now.max(previous.saturating_add(1))
    }

    /// Dials: runs the handshake as the initiator with `remote` over `io`, under the
    /// timeout.
    ///
    /// Cancel safety: dropping the future abandons the handshake and the socket.
    pub async fn upgrade_outbound<IO>(
        &self,
        io: IO,
        remote: PeerId,
    ) -> Result<(NoiseStream<IO>, RemoteInfo), NoiseError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let timeout = self.inner.config.timeout;
        let result = tokio::time::timeout(timeout, self.outbound(io, remote))
            .await
            .map_err(|_| NoiseError::Timeout(timeout))
            .and_then(|r| r);
        if let Err(error) = &result {
            tracing::debug!(peer = %remote.short_str(), %error, "outbound Noise handshake failed");
        }
        result
    }

    async fn outbound<IO>(
        &self,
        mut io: IO,
        remote: PeerId,
    ) -> Result<(NoiseStream<IO>, RemoteInfo), NoiseError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let (handshake, first) = DialerHandshake::start(
            &self.inner.identity,
            &self.inner.static_keys,
            remote,
            self.inner.config.suite,
            Inputs {
                clock_ms: self.next_timestamp(),
                ephemeral: self.fixed_ephemeral(),
            },
        )?;
        io.write_all(&first).await?;
        io.flush().await?;
        let mut reader = HandshakeReader::default();
        let reply = reader.read_message(&mut io).await?;
        let (cipher, remote) = handshake.finish(&reply)?;
        let stream = NoiseStream::with_read(io, cipher, remote, &reader.into_rest());
        Ok((stream, remote))
    }

    /// Listens: runs the handshake as the responder over `io`, under the timeout and the
    /// limit of concurrent inbound handshakes.
    ///
    /// Cancel safety: dropping the future abandons the handshake and the socket.
    pub async fn upgrade_inbound<IO>(
        &self,
        io: IO,
    ) -> Result<(NoiseStream<IO>, RemoteInfo), NoiseError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let _permit = self.inner.inbound_permits.try_acquire().map_err(|_| {
            NoiseError::TooManyHandshakes {
                limit: self.inner.config.max_concurrent_inbound,
            }
        })?;
        let timeout = self.inner.config.timeout;
        tokio::time::timeout(timeout, self.inbound(io))
            .await
            .map_err(|_| NoiseError::Timeout(timeout))?
    }

    async fn inbound<IO>(&self, mut io: IO) -> Result<(NoiseStream<IO>, RemoteInfo), NoiseError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let inner = &self.inner;
        let mut reader = HandshakeReader::default();
        let mut prologue = [0u8; PROLOGUE_LEN];
        reader.read_exact(&mut io, &mut prologue).await?;
        let remote = handshake::check_prologue(&inner.identity, &inner.config.mode, &prologue)?;
        let first = reader.read_message(&mut io).await?;
        // Under mutual authentication the claimed key is a trusted one, whose
        // static-static secret is kept; an open listener keeps none (any key may come).
        let keep = matches!(inner.config.mode, AuthMode::Mutual(_));
        let keys = inner
            .static_keys
            .for_handshake(remote.static_key.as_bytes(), keep);
        let (cipher, reply) = handshake::respond(
            &keys,
            inner.config.suite,
            &prologue,
            remote,
            &first,
            &inner.replay,
            Inputs {
                clock_ms: self.now_ms(),
                ephemeral: self.fixed_ephemeral(),
            },
        )?;
        io.write_all(&reply).await?;
        io.flush().await?;
        let stream = NoiseStream::with_read(io, cipher, remote, &reader.into_rest());
        Ok((stream, remote))
    }

    /// The upgrade step for [`TransportExt::and_then`](netcore::transport::TransportExt::and_then):
    /// dials the peer named by `addr`'s `/p2p/` part (a missing one is
    /// [`NoiseError::MissingPeerId`]) or listens, by `origin`. The future owns a clone of
    /// the upgrader, so the closure can be `move |io, addr, origin| up.upgrade(io, addr, origin)`.
    pub fn upgrade<IO>(
        &self,
        io: IO,
        addr: NetworkAddress,
        origin: ConnectionOrigin,
    ) -> impl Future<Output = Result<(NoiseStream<IO>, RemoteInfo), NoiseError>> + Send + 'static + use<IO>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let this = self.clone();
        async move {
            match origin {
                ConnectionOrigin::Outbound => {
                    let remote = addr.peer_id().ok_or(NoiseError::MissingPeerId(addr))?;
                    this.upgrade_outbound(io, remote).await
                }
                ConnectionOrigin::Inbound => this.upgrade_inbound(io).await,
            }
        }
    }
}
