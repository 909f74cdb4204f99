//! In-memory sockets and listeners for tests and benches.
//!
//! This crate owns [`MemorySocket`], a bidirectional byte stream implementing tokio's
//! `AsyncRead`/`AsyncWrite`, and [`MemoryListener`], which accepts connections on a
//! process-wide port number (the `/memory/<port>` addresses of `netcore`). It behaves
//! like a loopback TCP connection without the kernel:
//!
//! - buffering is **bounded** per direction, so a writer that outpaces its reader waits
//!   (backpressure) instead of growing memory;
//! - `poll_shutdown` half-closes: the peer reads what was sent, then EOF;
//! - dropping one end gives the other EOF on read and `BrokenPipe` on write;
//! - connecting to a port nobody listens on is refused with `ConnectionRefused`;
//! - binding port 0 picks a free port, and a dropped listener frees its port.
//!
//! It does not own addresses, transports or anything above bytes: `netcore` wraps it as
//! `MemoryTransport`.

mod listener;
mod pipe;
mod socket;

pub use listener::{Incoming, IntoIncoming, MemoryListener};
pub use socket::MemorySocket;

/// Bytes buffered per direction by default. Large enough that a writer of 64 KiB
/// messages does not stall on every message (loopback TCP buffers are larger still), and
/// small enough that thousands of idle test connections cost little: the buffer grows
/// only as far as it is filled.
pub const DEFAULT_CAPACITY: usize = 256 * 1024;

/// Connections a listener queues before it accepts them. Past it, `connect` is refused,
/// like a TCP listen backlog.
pub const DEFAULT_BACKLOG: usize = 1024;

/// Port 0 picks from this port upward, leaving low ports to tests that bind fixed ones.
pub const FIRST_EPHEMERAL_PORT: u16 = 32768;
