//! The errors of protocol negotiation.

use std::io;

/// Why a protocol negotiation failed.
///
/// Every error ends the stream being negotiated; none of them is a panic, and none is
/// reached after allocating more than the limits in [`negotiate`](super) allow.
#[derive(Debug, thiserror::Error)]
pub enum NegotiateError {
    /// No protocol was agreed on. On a dialer: the listener answered `na` to every
    /// proposal. On a listener: the dialer gave up (closed the stream, or sent bytes that
    /// are not a negotiation message) right after we answered `na`, as an optimistic
    /// dialer whose only protocol we refused does.
    #[error("no common protocol: the proposal was refused")]
    Refused,
    /// A message declared a length over the maximum; nothing was read or reserved for it.
    #[error("negotiation message of {len} bytes is over the maximum of {max}")]
    MessageTooLong {
        /// The declared length.
        len: usize,
        /// The maximum, [`MAX_MESSAGE_LEN`](super::MAX_MESSAGE_LEN).
        max: usize,
    },
    /// A length prefix went on past the bytes any allowed length needs.
    #[error("length prefix longer than {max} bytes")]
    LengthPrefixTooLong {
        /// The longest prefix allowed, [`MAX_LENGTH_PREFIX_LEN`](super::MAX_LENGTH_PREFIX_LEN).
        max: usize,
    },
    /// A message that is not a multistream-select message: a length prefix that is not
    /// minimal, an empty message, no trailing newline, or a newline inside.
    #[error("malformed negotiation message: {0}")]
    Malformed(&'static str),
    /// The first message was not the `/multistream/1.0.0` header.
    #[error("the remote did not start with the /multistream/1.0.0 header")]
    BadHeader,
    /// A well-formed message that has no place at this point of the exchange, such as
    /// an echo of a protocol we did not propose, or a second header.
    #[error("unexpected negotiation message: {0}")]
    UnexpectedMessage(&'static str),
    /// The dialer proposed more protocols than a listener answers, or a caller asked a
    /// dialer to propose more than that.
    #[error("more than {max} protocol proposals")]
    TooManyProposals {
        /// The maximum, [`MAX_PROPOSALS`](super::MAX_PROPOSALS).
        max: usize,
    },
    /// The stream ended before the negotiation did.
    #[error("stream ended during protocol negotiation")]
    UnexpectedEof,
    /// A protocol id given to a dialer cannot be proposed (a local mistake, not the
    /// remote's): it must start with `/`, hold no newline, not be the multistream header,
    /// and fit in a message.
    #[error("invalid protocol id: {0}")]
    InvalidProtocol(&'static str),
    /// No protocol was given to propose.
    #[error("no protocol to propose")]
    NoProtocols,
    /// The underlying stream failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl NegotiateError {
    /// The negotiation error inside an `io::Error` returned by a
    /// [`Negotiated`](super::Negotiated) stream, if it holds one.
    ///
    /// An optimistic dialer learns the listener's answer on its first read, and an
    /// `AsyncRead` can only fail with an `io::Error`: this recovers the typed error.
    ///
    /// ```
    /// use std::io;
    /// use netcore::negotiate::NegotiateError;
    ///
    /// let err = io::Error::from(NegotiateError::Refused);
    /// assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    /// assert!(matches!(NegotiateError::from_io(&err), Some(NegotiateError::Refused)));
    /// ```
    pub fn from_io(err: &io::Error) -> Option<&NegotiateError> {
        err.get_ref()
            .and_then(|e| e.downcast_ref::<NegotiateError>())
    }

    /// The `io::ErrorKind` this error is reported with through `AsyncRead`/`AsyncWrite`.
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            NegotiateError::Refused => io::ErrorKind::ConnectionRefused,
            NegotiateError::UnexpectedEof => io::ErrorKind::UnexpectedEof,
            NegotiateError::Io(e) => e.kind(),
            NegotiateError::InvalidProtocol(_) | NegotiateError::NoProtocols => {
                io::ErrorKind::InvalidInput
            }
            NegotiateError::MessageTooLong { .. }
            | NegotiateError::LengthPrefixTooLong { .. }
            | NegotiateError::Malformed(_)
            | NegotiateError::BadHeader
            | NegotiateError::UnexpectedMessage(_)
            | NegotiateError::TooManyProposals { .. } => io::ErrorKind::InvalidData,
        }
    }

    /// A copy of this error, to report it again on later calls. An I/O error is copied
    /// by kind and message (`io::Error` is not `Clone`).
    pub(crate) fn replicate(&self) -> NegotiateError {
        match self {
            NegotiateError::Refused => NegotiateError::Refused,
            NegotiateError::MessageTooLong { len, max } => NegotiateError::MessageTooLong {
                len: *len,
                max: *max,
            },
            NegotiateError::LengthPrefixTooLong { max } => {
                NegotiateError::LengthPrefixTooLong { max: *max }
            }
            NegotiateError::Malformed(why) => NegotiateError::Malformed(why),
            NegotiateError::BadHeader => NegotiateError::BadHeader,
            NegotiateError::UnexpectedMessage(what) => NegotiateError::UnexpectedMessage(what),
            NegotiateError::TooManyProposals { max } => {
                NegotiateError::TooManyProposals { max: *max }
            }
            NegotiateError::UnexpectedEof => NegotiateError::UnexpectedEof,
            NegotiateError::InvalidProtocol(why) => NegotiateError::InvalidProtocol(why),
            NegotiateError::NoProtocols => NegotiateError::NoProtocols,
            NegotiateError::Io(e) => NegotiateError::Io(io::Error::new(e.kind(), e.to_string())),
        }
    }
}

/// How a [`Negotiated`](super::Negotiated) stream reports a failed negotiation.
///
/// An [`Io`](NegotiateError::Io) error is the underlying stream's own error and passes
/// through unchanged. Every other error is wrapped, with the kind given by
/// [`NegotiateError::io_kind`] (`ConnectionRefused` for [`Refused`](NegotiateError::Refused),
/// `UnexpectedEof` for a truncated exchange, `InvalidData` for a protocol violation), and
/// [`NegotiateError::from_io`] recovers it.
impl From<NegotiateError> for io::Error {
    fn from(err: NegotiateError) -> io::Error {
        match err {
            NegotiateError::Io(e) => e,
            other => io::Error::new(other.io_kind(), other),
        }
    }
}
