//! The multiplexer's configuration and the constants behind its defaults.

use std::time::Duration;

/// The receive window every yamux stream starts with, fixed by the spec: a peer may send
/// this much on a new stream before any window update.
pub const SPEC_INITIAL_WINDOW: u32 = 256 * 1024;

/// Default largest receive window of one stream: twice the bandwidth-delay product of
/// 1 Gbit/s at 230 ms RTT (US east to Sydney), since a receiver that returns credit at
/// half its window keeps a link full only with a window of about twice what the path
/// holds.
const DEFAULT_MAX_WINDOW: u32 = 64 * 1024 * 1024;

/// Default cap on concurrent streams per connection. RPCs open a stream each and carry
/// a bounded number of requests in flight per peer (tens); 256 leaves ample room and
/// bounds what a peer can make us hold.
const DEFAULT_MAX_STREAMS: usize = 256;

/// Default cap on the receive windows granted over all streams of a connection: every
/// stream at the cap gets its spec window (256 × 256 KiB = 64 MiB), plus 64 MiB for
/// a bulk stream to grow to [`DEFAULT_MAX_WINDOW`]. This is the most a peer can make us
/// buffer for one connection.
const DEFAULT_MAX_CONNECTION_WINDOW: usize = 128 * 1024 * 1024;

/// Default largest data-frame payload we send. Small enough that a 4 KiB message on one
/// stream waits behind at most one 16 KiB frame of each other ready stream; large
/// enough that the 12-byte header costs under 0.1% (rust-yamux measured the same value).
const DEFAULT_MAX_FRAME_SIZE: u32 = 16 * 1024;

/// Default bytes a substream's `poll_write` takes ahead of the connection task before it
/// waits: a few frames' worth keeps the task busy without holding much memory per stream.
const DEFAULT_SEND_BUFFER: usize = 256 * 1024;

/// Default interval between RTT probes (Ping frames); the RTT drives window growth and
/// changes slowly, so one probe per 10 s costs nothing (rust-yamux uses the same).
const DEFAULT_RTT_PROBE_INTERVAL: Duration = Duration::from_secs(10);

/// Default time a closing connection has to send what it buffered and its GoAway.
const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a multiplexed connection. The defaults suit a validator network; each
/// field says what it bounds.
#[derive(Debug, Clone)]
pub struct MuxConfig {
    /// The receive window a new stream gets. Never below [`SPEC_INITIAL_WINDOW`], which
    /// the spec grants implicitly; a larger value is announced with the SYN/ACK.
    pub initial_window: u32,
    /// The largest receive window a stream grows to (default 64 MiB).
    pub max_window: u32,
    /// Total receive windows granted over all streams: the memory a peer can make us
    /// hold for this connection (default 128 MiB). Windows grow only within it.
    pub max_connection_window: usize,
    /// Concurrent streams, both directions together (default 256). An inbound SYN past
    /// it is answered with RST and counted; a local open past it fails.
    pub max_streams: usize,
    /// The largest data-frame payload we send (default 16 KiB): the fairness quantum.
    pub max_frame_size: u32,
    /// Bytes a substream buffers ahead of the connection task (default 256 KiB).
    pub send_buffer: usize,
    /// Interval between RTT measurements with Ping frames (default 10 s).
    pub rtt_probe_interval: Duration,
    /// How long a closing connection (closed locally, or after a protocol error of the
    /// remote) may take to send what its streams buffered and its GoAway before the
    /// socket is dropped (default 10 s): a remote that stops reading cannot hold it
    /// open. The connection then ends with [`MuxError::CloseTimedOut`](super::MuxError).
    /// A timeout too large to add to the clock (`Duration::MAX`) means none.
    pub close_timeout: Duration,
}

impl Default for MuxConfig {
    fn default() -> Self {
        Self {
            initial_window: SPEC_INITIAL_WINDOW,
            max_window: DEFAULT_MAX_WINDOW,
            max_connection_window: DEFAULT_MAX_CONNECTION_WINDOW,
            max_streams: DEFAULT_MAX_STREAMS,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            send_buffer: DEFAULT_SEND_BUFFER,
            rtt_probe_interval: DEFAULT_RTT_PROBE_INTERVAL,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
        }
    }
}

impl MuxConfig {
    /// The configuration with every field brought into its valid range: windows at
    /// least the spec's, `max_window >= initial_window`, a frame size of at least 1.
    pub(crate) fn normalized(mut self) -> Self {
        self.initial_window = self.initial_window.max(SPEC_INITIAL_WINDOW);
        self.max_window = self.max_window.max(self.initial_window);
        self.max_frame_size = self.max_frame_size.max(1);
        self.send_buffer = self.send_buffer.max(1);
        self.max_streams = self.max_streams.max(1);
        self
    }
}
