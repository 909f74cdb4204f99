//! Every limit and default of the crate, each with the reason for its value.

use std::time::Duration;

/// The largest Noise message, handshake or transport, in bytes: the Noise specification's
/// limit, which the 2-byte length prefix of every message on the wire also expresses.
pub const MAX_NOISE_MESSAGE_LEN: usize = 65535;

/// The authentication tag appended to every encrypted Noise payload (ChaChaPoly and
/// AES-GCM alike).
pub const TAG_LEN: usize = 16;

/// The largest plaintext one transport frame carries: a full Noise message minus its tag.
pub const MAX_FRAME_PAYLOAD_LEN: usize = MAX_NOISE_MESSAGE_LEN - TAG_LEN;

/// The length prefix of every message on the wire: a u16, big-endian.
pub const LENGTH_PREFIX_LEN: usize = 2;

/// The largest frame on the wire: its length prefix and a full Noise message.
pub const MAX_WIRE_FRAME_LEN: usize = LENGTH_PREFIX_LEN + MAX_NOISE_MESSAGE_LEN;

/// Bytes of ciphertext a `NoiseStream` reads from its socket at once. Two full frames:
/// one read call drains what a fast sender has queued (fewer syscalls), and a partial
/// frame left at the end always fits once moved to the front.
pub const READ_BUFFER_LEN: usize = 2 * MAX_WIRE_FRAME_LEN;

/// How long a `NoiseStream` keeps a large buffer once nothing needs it: the read buffer
/// of [`READ_BUFFER_LEN`] once no read has needed it, the write buffers once no frame
/// of more than [`INITIAL_READ_BUFFER_LEN`] bytes has been sealed. Checked when a buffer
/// is empty (the socket has nothing more to give, or a flush wrote everything), so a
/// connection whose burst is over gives its buffers back at its next wake-up past this
/// (the multiplexer's RTT probe comes every 10 s), and one that keeps needing them keeps
/// them. Time is tokio's clock, so under paused time (tests, simulations) it is the
/// simulated time.
pub const LARGE_BUFFER_QUIET: std::time::Duration = std::time::Duration::from_secs(10);

/// The read buffer a `NoiseStream` starts with: enough for a burst of small messages. It
/// grows to [`READ_BUFFER_LEN`] only when a frame does not fit or a read fills it, so a
/// chatty-but-small connection uses 4 KiB here instead of 128 KiB. It is let go whenever
/// everything was read and the socket has no more (an idle connection holds none), so
/// such a connection takes a new one (not zeroed) per wake-up.
pub const INITIAL_READ_BUFFER_LEN: usize = 4 * 1024;

/// The length of the prologue: the dialer's peer id, then the static key it expects.
pub const PROLOGUE_LEN: usize = 64;

/// The length of the dialer's first handshake payload: a u64 big-endian timestamp in
/// milliseconds since the Unix epoch.
pub const TIMESTAMP_LEN: usize = 8;

/// Room for the handshake messages we write: message 1 is 104 bytes (ephemeral key,
/// encrypted static key, encrypted timestamp), message 2 is 48; this leaves margin.
pub(crate) const HANDSHAKE_WRITE_BUFFER_LEN: usize = 256;

/// How long a handshake may take by default. It is one round trip plus two DH-heavy
/// steps, so a healthy link finishes in well under a second; 10 s tolerates a slow or
/// loaded link and still frees a socket held open by a silent remote soon.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Inbound handshakes an upgrader runs at once by default. Above the number of
/// validators that reconnect at once after a restart, and low enough that a flood of
/// connections cannot hold more than this many sockets and handshake states.
pub const DEFAULT_MAX_CONCURRENT_INBOUND_HANDSHAKES: usize = 128;

/// Static keys whose last accepted timestamp the anti-replay guard remembers. Far above
/// any validator set, so in mutual mode nothing is ever forgotten; in open mode it
/// bounds the memory (about 100 bytes an entry) a stream of fresh keys can take.
pub const REPLAY_GUARD_CAPACITY: usize = 16 * 1024;

/// How far in the future (by our clock) a dialer's timestamp may be. NTP-synced clocks
/// agree within a second; a minute tolerates a badly synced host, and bounds how long a
/// flood of fresh keys with future timestamps can lock new keys out (see `replay`).
pub const MAX_TIMESTAMP_FUTURE_SKEW: Duration = Duration::from_secs(60);

/// How far in the past (by our clock) a dialer's timestamp may be. An honest dialer
/// sends its clock at the moment it dials, so only a clock this far behind ours, or a
/// captured message replayed later, is older. With the guard's start (a listener
/// refuses every timestamp from before it started), this is what keeps replays refused
/// across restarts without any stored state.
pub const MAX_TIMESTAMP_AGE: Duration = Duration::from_secs(60);

/// The suite every upgrader uses unless configured otherwise, chosen by the figures in
/// the crate documentation (see "Choice of suite").
pub const DEFAULT_SUITE: crate::NoiseSuite = crate::NoiseSuite {
    protocol: crate::NoiseProtocol::AesGcmSha256,
    backend: crate::CryptoBackend::Ring,
};
