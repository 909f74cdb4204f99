//! Per-stream protocol negotiation: multistream-select 1.0.
//!
//! Each side sends the header `/multistream/1.0.0`; the dialer proposes a protocol id
//! and the listener either echoes it (agreed) or answers `na` (not available), after
//! which the dialer may propose another. Every message is an unsigned-varint length,
//! then the message, then a newline. This is the wire format of libp2p's
//! `multistream-select`, against which the tests check it.
//!
//! Three ways in:
//! - [`negotiate_inbound`]: the listener. It answers each proposal and flushes each
//!   answer at once (an interactive dialer waits for it). It answers `ls` with the
//!   list of the protocols it supports on the stream, as the spec says (the list is
//!   cut to fit [`MAX_MESSAGE_LEN`]; an `ls` counts against [`MAX_PROPOSALS`]).
//! - [`negotiate_outbound_interactive`]: the dialer, proposing in order of preference
//!   and waiting for each answer.
//! - [`negotiate_outbound_select`]: the optimistic dialer, for a single protocol (an RPC
//!   or DirectSend substream, the multiplexer itself). It returns at once, without I/O: the header and proposal go out with
//!   the first write, so a request costs one packet and one round trip, and the answer
//!   is checked on the first read, where a refusal surfaces as an `io::Error` wrapping
//!   [`NegotiateError::Refused`] (see [`Negotiated`]).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use netcore::negotiate::{negotiate_inbound, negotiate_outbound_select};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let (dialer, listener) = memsocket::MemorySocket::new_pair();
//! let mut out = negotiate_outbound_select(dialer, "/net/rpc/1").unwrap();
//! out.write_all(b"ping").await.unwrap(); // header, proposal and request in one write
//! out.flush().await.unwrap();
//!
//! let (mut inbound, index) = negotiate_inbound(listener, &["/net/direct/1", "/net/rpc/1"])
//!     .await
//!     .unwrap();
//! assert_eq!(index, 1);
//! let mut request = [0u8; 4];
//! inbound.read_exact(&mut request).await.unwrap(); // the data behind the proposal
//! assert_eq!(&request, b"ping");
//! # });
//! ```
//!
//! The exchange itself is a pair of state machines with no I/O (`core`), fed and
//! drained by the thin async functions here. None of them has a timeout: wrap them in
//! `tokio::time::timeout`. They are not cancel safe: dropping one mid-way drops the
//! stream with it, which ends that stream only.
//!
//! Bad input never panics and never makes the negotiation buffer more than
//! [`MAX_MESSAGE_LEN`] + [`MAX_LENGTH_PREFIX_LEN`] + [`READ_CHUNK`] bytes: oversized
//! lengths, overlong length prefixes and too many proposals end the stream with a typed
//! [`NegotiateError`].

mod codec;
mod core;
mod error;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;
mod negotiated;

use std::borrow::Cow;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use self::core::{DialerCore, DialerProgress, ListenerCore, ListenerProgress, validate_protocol};
use self::negotiated::poll_fill;

pub use error::NegotiateError;
pub use negotiated::Negotiated;

/// The largest negotiation message accepted or sent, in bytes including its newline.
/// The same cap as go-multistream and js-libp2p (rust-libp2p accepts up to 16 KiB):
/// our protocol ids are short (`/consensus/rpc/2`), so 1 KiB leaves them ample room
/// while bounding what a stream that has not yet agreed on a protocol can make us buffer.
pub const MAX_MESSAGE_LEN: usize = 1024;

/// The longest length prefix read: an unsigned varint carries 7 bits a byte, so this
/// many bytes encode every length up to [`MAX_MESSAGE_LEN`]. A prefix that goes on past
/// it is refused without reading further.
pub const MAX_LENGTH_PREFIX_LEN: usize = varint_len(MAX_MESSAGE_LEN);

/// The most proposals (and `ls` requests) a listener answers on one stream. A dialer
/// proposes a handful of versions of one protocol, best first; each answer costs the
/// listener a write, so a dialer walking a dictionary of protocol ids is cut off here.
/// A dialer is refused more than this many protocols to propose, too.
pub const MAX_PROPOSALS: usize = 16;

/// Bytes read from the stream at a time while negotiating. One read usually holds all
/// the negotiation messages in flight (a header and a proposal or an answer are about
/// 40 bytes) and the first application bytes behind them, which are kept and served
/// first; small enough that negotiating thousands of substreams costs little.
pub const READ_CHUNK: usize = 256;

/// The most bytes of a first write an optimistic dialer copies behind its header and
/// proposal, so that both leave in one write call (one packet, one multiplexer frame).
/// It covers typical requests (votes, pings, sync requests); a larger one is sent in
/// several frames anyway, so copying more of it would buy nothing.
pub const MAX_COALESCED_WRITE: usize = 16 * 1024;

/// Room left behind the negotiation bytes when their buffer is allocated, so that a
/// small first write (an RPC's request or response, about 40 bytes with its prefix)
/// joins them without growing it: an RPC then costs no reallocation on either side.
const FIRST_WRITE_ROOM: usize = 192;

/// The number of bytes of the unsigned varint encoding of `n`.
const fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// Negotiates as the listener: reads the dialer's header and proposals, echoing the
/// first proposal found in `supported` and answering `na` to any other.
///
/// Returns the stream, with any bytes the dialer sent behind its accepted proposal kept
/// to be read first, and the index in `supported` of the agreed protocol. When such
/// bytes came (an optimistic dialer, which does not wait for the answer), the echo is
/// not sent yet: it goes out in front of the first write, or on the first flush or
/// shutdown, so a response leaves together with it.
///
/// # Errors
/// [`NegotiateError::Refused`] if the dialer gave up after an `na` (closed or reset
/// the stream, or sent something else);
/// [`NegotiateError::TooManyProposals`] after [`MAX_PROPOSALS`] refused proposals; a
/// protocol-violation variant for malformed or unexpected input;
/// [`NegotiateError::UnexpectedEof`] or [`NegotiateError::Io`] if the stream ends or
/// fails.
pub async fn negotiate_inbound<IO, P>(
    mut io: IO,
    supported: &[P],
) -> Result<(Negotiated<IO>, usize), NegotiateError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    P: AsRef<str>,
{
    let mut core = ListenerCore::new();
    let mut input = BytesMut::new();
    // Room for the usual answers, the header and an echo, and a small first write
    // behind them (an RPC's response), in one allocation.
    let mut out = BytesMut::with_capacity(64 + FIRST_WRITE_ROOM);
    loop {
        let progress = core.on_input(supported, &mut input, &mut out)?;
        if let ListenerProgress::Accepted(index) = progress
            && !input.is_empty()
        {
            // The dialer sent data behind its proposal: it did not wait for the echo,
            // so the echo can wait for our first write and leave in the same write
            // call (for a request and its response, one frame each way).
            return Ok((Negotiated::answering(io, input, out), index));
        }
        // Otherwise answers go out before we wait or return: the dialer may be
        // waiting for them.
        send(&mut io, &mut out).await?;
        match progress {
            ListenerProgress::Accepted(index) => return Ok((Negotiated::new(io, input), index)),
            ListenerProgress::NeedInput => match read_more(&mut io, &mut input).await {
                Ok(0) => return Err(core.on_eof()),
                Ok(_) => {}
                Err(e) => return Err(core.on_read_error(e)),
            },
        }
    }
}

/// Negotiates as a dialer that waits for each answer: proposes `protocols` in order
/// until the listener accepts one.
///
/// Returns the stream, with any bytes the listener sent behind its echo kept to be read
/// first, and the index in `protocols` of the agreed protocol.
///
/// # Errors
/// [`NegotiateError::Refused`] if the listener refused every protocol;
/// [`NegotiateError::NoProtocols`], [`NegotiateError::TooManyProposals`] (more than
/// [`MAX_PROPOSALS`]) or [`NegotiateError::InvalidProtocol`] before anything is sent;
/// a protocol-violation variant for a malformed or unexpected answer;
/// [`NegotiateError::UnexpectedEof`] or [`NegotiateError::Io`] if the stream ends or
/// fails.
pub async fn negotiate_outbound_interactive<IO, P>(
    mut io: IO,
    protocols: &[P],
) -> Result<(Negotiated<IO>, usize), NegotiateError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    P: AsRef<str>,
{
    let Some(first) = protocols.first() else {
        return Err(NegotiateError::NoProtocols);
    };
    if protocols.len() > MAX_PROPOSALS {
        return Err(NegotiateError::TooManyProposals { max: MAX_PROPOSALS });
    }
    for protocol in protocols {
        validate_protocol(protocol.as_ref())?;
    }
    let mut out = BytesMut::new();
    // Interactive negotiation is the uncommon way: its proposals are copied.
    let mut core = DialerCore::start(first.as_ref().to_owned(), &mut out)?;
    let mut input = BytesMut::new();
    let mut index = 0;
    loop {
        send(&mut io, &mut out).await?;
        match core.on_input(&mut input)? {
            DialerProgress::Accepted => return Ok((Negotiated::new(io, input), index)),
            DialerProgress::Refused => {
                index += 1;
                let Some(next) = protocols.get(index) else {
                    return Err(NegotiateError::Refused);
                };
                core.propose(next.as_ref().to_owned(), &mut out)?;
            }
            DialerProgress::NeedInput => {
                if read_more(&mut io, &mut input).await? == 0 {
                    return Err(core.on_eof());
                }
            }
        }
    }
}

/// Selects `protocol` optimistically, with no I/O: returns a stream that sends the
/// header and the proposal in front of its first write (or on its first flush), and
/// checks the listener's answer on its first read. See [`Negotiated`] for how a refusal
/// is reported.
///
/// A `&'static str` id is kept borrowed, to check the listener's echo against, so a
/// substream costs no copy of it; a shorter-lived id is passed as a `String`.
///
/// # Errors
/// [`NegotiateError::InvalidProtocol`] if `protocol` cannot be proposed.
pub fn negotiate_outbound_select<IO>(
    io: IO,
    protocol: impl Into<Cow<'static, str>>,
) -> Result<Negotiated<IO>, NegotiateError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = BytesMut::new();
    let core = DialerCore::start(protocol, &mut out)?;
    Ok(Negotiated::expecting(io, out, core))
}

/// Writes and flushes `out`, if it holds anything, and empties it.
async fn send<IO: AsyncWrite + Unpin>(io: &mut IO, out: &mut BytesMut) -> std::io::Result<()> {
    if !out.is_empty() {
        io.write_all(out).await?;
        io.flush().await?;
        out.clear();
    }
    Ok(())
}

/// Reads once into `buf`; 0 means the stream ended.
async fn read_more<IO: AsyncRead + Unpin>(
    io: &mut IO,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| poll_fill(io, cx, buf)).await
}
