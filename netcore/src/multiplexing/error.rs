//! The multiplexer's errors.

use std::io;
use std::sync::Arc;

/// How the remote broke the yamux protocol. Each one ends the connection with a
/// GoAway(protocol error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A header with a version other than 0.
    #[error("frame version {0} is not 0")]
    BadVersion(u8),
    /// A header with a frame type other than Data, WindowUpdate, Ping or GoAway.
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    /// A data frame longer than the credit the stream had left.
    #[error("stream {stream}: {len} bytes of data but only {credit} bytes of window left")]
    WindowExceeded {
        /// The stream.
        stream: u32,
        /// The frame's payload length.
        len: u32,
        /// The credit left.
        credit: u32,
    },
    /// A window update that takes the send window past `u32::MAX`.
    #[error("stream {0}: window update overflows the window")]
    WindowOverflow(u32),
    /// A SYN for a stream id that is in use, has our parity, or is 0.
    #[error("stream {0}: invalid stream id in SYN")]
    InvalidStreamId(u32),
    /// A session frame (Ping, GoAway) on a stream, or a stream frame on stream 0.
    #[error("{0:?} frame on stream {1}")]
    WrongStreamId(&'static str, u32),
}

/// Why a multiplexer operation failed or a connection ended.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MuxError {
    /// The remote broke the protocol; the connection is closed.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The connection is closed (locally, or the remote went away).
    #[error("connection closed")]
    Closed,
    /// The remote sent GoAway with this code: it accepts no new streams.
    #[error("remote sent GoAway (code {0})")]
    RemoteGoAway(u32),
    /// Opening a stream would exceed the configured maximum of concurrent streams.
    #[error("too many streams (maximum {0})")]
    TooManyStreams(usize),
    /// Every stream id of our parity has been used.
    #[error("stream ids exhausted")]
    StreamIdsExhausted,
    /// The stream was reset (by us or by the remote).
    #[error("stream reset")]
    StreamReset,
    /// The underlying connection failed.
    #[error("I/O: {0}")]
    Io(Arc<io::Error>),
    /// The connection did not finish closing within
    /// [`MuxConfig::close_timeout`](super::MuxConfig::close_timeout) (the remote stopped
    /// reading): its socket was dropped.
    #[error("closing timed out")]
    CloseTimedOut,
}

impl From<io::Error> for MuxError {
    fn from(e: io::Error) -> Self {
        MuxError::Io(Arc::new(e))
    }
}

impl MuxError {
    /// This error as an `io::Error` for the `AsyncRead`/`AsyncWrite` of a substream; the
    /// `MuxError` stays reachable through `io::Error::get_ref`.
    pub(crate) fn into_io(self) -> io::Error {
        let kind = match &self {
            MuxError::StreamReset => io::ErrorKind::ConnectionReset,
            MuxError::Closed | MuxError::RemoteGoAway(_) => io::ErrorKind::BrokenPipe,
            MuxError::Protocol(_) => io::ErrorKind::InvalidData,
            MuxError::Io(e) => e.kind(),
            MuxError::CloseTimedOut => io::ErrorKind::TimedOut,
            MuxError::TooManyStreams(_) | MuxError::StreamIdsExhausted => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }
}
