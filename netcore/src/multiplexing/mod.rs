//! Stream multiplexing: many independent, flow-controlled substreams over one
//! connection, speaking the yamux wire format.
//!
//! [`start`] takes a connected byte stream (a socket or a Noise session) and spawns one
//! task that owns it; [`Control`] opens streams (no round trip: the SYN rides on the
//! first frame) and closes the connection, [`Incoming`] yields the streams the remote
//! opens, and each [`Substream`] is a tokio `AsyncRead + AsyncWrite` with half-close
//! and reset. A close sends what streams buffered and a GoAway, bounded by
//! [`MuxConfig::close_timeout`]: a remote that stops reading cannot hold a closing
//! connection open.
//!
//! How it stays fast (the lessons of Diem's 2019 yamux measurements):
//! - substreams write into shared per-stream buffers and wake the connection task; the
//!   task takes every ready frame at once, writes them and flushes **once per batch**,
//!   so the Noise layer below sees full frames;
//! - frames of ready streams are sent by [`Priority`] class, higher first, and in turns
//!   within a class: an urgent or normal stream's turn is one frame (at most
//!   [`MuxConfig::max_frame_size`]), so a small message of those classes never waits
//!   behind a transfer of its class or a lower one; a bulk stream's turn is up to
//!   [`BULK_TURN`] bytes, so that several responses complete one after another rather
//!   than all at once, and a bulk message waits up to a turn per bulk stream ahead;
//! - receive windows start at the spec's 256 KiB and grow eightfold (or at once to the
//!   largest window grown on the connection) when half a window is consumed within two
//!   RTTs (measured with Ping frames), up to [`MuxConfig::max_window`] per stream and
//!   [`MuxConfig::max_connection_window`] over the connection; window updates are sent
//!   once half a window was read, not per read.
//!
//! The protocol rules live in an I/O-free core (`session.rs`) fed exact frames and
//! instants by its tests; `driver.rs` is the task around it.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use futures::StreamExt;
//! use netcore::multiplexing::{start, Mode, MuxConfig};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let (a, b) = memsocket::MemorySocket::new_pair();
//! let (client, _client_incoming) = start(a, Mode::Client, MuxConfig::default());
//! let (_server, mut server_incoming) = start(b, Mode::Server, MuxConfig::default());
//!
//! let mut out = client.open_stream().await.unwrap();
//! out.write_all(b"hello").await.unwrap();
//! out.shutdown().await.unwrap();
//!
//! let mut inbound = server_incoming.next().await.unwrap();
//! let mut got = Vec::new();
//! inbound.read_to_end(&mut got).await.unwrap();
//! assert_eq!(got, b"hello");
//! # });
//! ```

mod batch;
mod buffers;
mod config;
mod driver;
mod error;
mod frame;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;
mod handles;
mod priority;
mod reader;
mod session;
mod stats;

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

pub use config::{MuxConfig, SPEC_INITIAL_WINDOW};
pub use error::{MuxError, ProtocolError};
pub use handles::{Control, Incoming, Substream};
pub use priority::{BULK_TURN, Priority};
pub use stats::MuxStats;

/// Which end of the connection we are: the client opens odd stream ids, the server
/// even ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The dialer.
    Client,
    /// The listener.
    Server,
}

/// A multiplexed connection as the layers above see it: open streams, close, ask
/// whether it is closed. Inbound streams come from a separate `Stream` of substreams.
pub trait StreamMultiplexer: Clone + Send + Sync + 'static {
    /// A substream.
    type Substream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Why an operation failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Opens a substream.
    fn open_stream(&self) -> impl Future<Output = Result<Self::Substream, Self::Error>> + Send;

    /// Closes the connection gracefully.
    fn close(&self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Whether the connection is closing or closed.
    fn is_closed(&self) -> bool;
}

impl StreamMultiplexer for Control {
    type Substream = Substream;
    type Error = MuxError;

    fn open_stream(&self) -> impl Future<Output = Result<Substream, MuxError>> + Send {
        Control::open_stream(self)
    }

    fn close(&self) -> impl Future<Output = Result<(), MuxError>> + Send {
        Control::close(self)
    }

    fn is_closed(&self) -> bool {
        Control::is_closed(self)
    }
}

/// Starts multiplexing over `io`: spawns the connection task (on the current tokio
/// runtime) and returns the handles. The task ends when the connection closes. It
/// flushes `io` on its first run, so bytes an upgrade wrote and left unflushed (a
/// handshake message, a multiplexer proposal) go out with its first frames, or alone.
/// A client's task writes before it first reads, so that those bytes and its first
/// frames leave in one write; a server's reads first, to answer the client's first
/// frames in the same write as its own.
pub fn start<IO>(io: IO, mode: Mode, config: MuxConfig) -> (Control, Incoming)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let session = session::Session::new(mode, config, tokio::time::Instant::now());
    let shared = Arc::new(driver::Shared::new(session));
    tokio::spawn(driver::Driver::new(io, shared.clone(), mode));
    (Control::new(shared.clone()), Incoming::new(shared))
}
