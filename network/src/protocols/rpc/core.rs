//! RPC's wire rules, without I/O: the limits of request and response frames, the
//! response an application's answer becomes, how a response frame is laid out, and
//! what a caller makes of the frame it reads back. The drivers (`inbound`,
//! `answering`, `outbound`) move these bytes; the deadline queue they share is in
//! `deadlines`.

use bytes::Bytes;
use netcore::framing::LENGTH_FIELD_BYTES;
use proto::Message;
use proto::rpc::rpc_failure::Code;
use proto::rpc::{RpcFailure, RpcResponse, rpc_response};

use crate::error::{InvalidResponse, RemoteFailure, RpcError};

/// The most bytes the response envelope adds to a payload: `RpcResponse.ok`'s key and
/// its length as a varint (at most 10 bytes). The payload limit is the same both ways,
/// so a response frame may be this much longer than a request frame.
pub(crate) const ENVELOPE_OVERHEAD: usize = 11;

/// The longest explanation a failure carries; the rest of a longer one is cut, so that
/// a failure always fits its frame.
pub(crate) const MAX_FAILURE_MESSAGE: usize = 1024;

/// The largest failure response: `RpcResponse.failure`'s key and 2-byte length around
/// an `RpcFailure` of a code (2 bytes with its key), a [`MAX_FAILURE_MESSAGE`]-byte
/// message (3 bytes of key and length) and the size and limit (11 bytes each at most).
pub(crate) const MAX_FAILURE_FRAME: usize = 3 + 2 + 3 + MAX_FAILURE_MESSAGE + 11 + 11;

/// The largest response frame for a payload limit of `max`: room for the envelope
/// around a payload of `max`, and always for a failure, however small `max` is.
pub(crate) fn response_frame_limit(max: usize) -> usize {
    max.saturating_add(ENVELOPE_OVERHEAD).max(MAX_FAILURE_FRAME)
}

/// What the application answered, as the server writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The response payload.
    Data(Bytes),
    /// The application failed the request, with a short explanation.
    Failed(String),
    /// The application's response was over the payload limit.
    TooLarge {
        /// The response's length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// A failure response with `code` and `message`, cut to [`MAX_FAILURE_MESSAGE`] bytes
/// at a character boundary.
pub(crate) fn failure(code: Code, message: &str) -> RpcResponse {
    let mut end = message.len().min(MAX_FAILURE_MESSAGE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    RpcResponse {
        result: Some(rpc_response::Result::Failure(RpcFailure {
            code: code.into(),
            message: message[..end].to_owned(),
            size: 0,
            limit: 0,
        })),
    }
}

/// The failure that tells the caller the response was over the payload limit.
pub(crate) fn too_large(len: usize, max: usize) -> RpcResponse {
    RpcResponse {
        result: Some(rpc_response::Result::Failure(RpcFailure {
            code: Code::TooLarge.into(),
            message: format!("response of {len} bytes is over the limit of {max}"),
            size: len as u64,
            limit: max as u64,
        })),
    }
}

/// The response that carries the application's `answer`, and the outcome it is
/// counted as.
pub(crate) fn response_to(answer: Answer) -> (RpcResponse, &'static str) {
    match answer {
        Answer::Data(data) => {
            let response = RpcResponse {
                result: Some(rpc_response::Result::Ok(data)),
            };
            (response, "ok")
        }
        Answer::Failed(reason) => (failure(Code::Application, &reason), "application_error"),
        Answer::TooLarge { len, max } => (too_large(len, max), "too_large"),
    }
}

/// The length of `response`'s frame, its length prefix included, if it is within the
/// response frame limit for a payload limit of `max`.
pub(crate) fn frame_len(response: &RpcResponse, max: usize) -> Option<usize> {
    let len = response.encoded_len();
    (len <= response_frame_limit(max).min(u32::MAX as usize)).then_some(LENGTH_FIELD_BYTES + len)
}

/// Lays out `response`'s frame in `frame`, which is exactly [`frame_len`] long: the
/// length as a big-endian `u32`, then the encoded message.
pub(crate) fn write_frame(response: &RpcResponse, frame: &mut [u8]) {
    let (prefix, body) = frame.split_at_mut(LENGTH_FIELD_BYTES);
    // `frame_len` checked that the length fits the prefix.
    prefix.copy_from_slice(&(body.len() as u32).to_be_bytes());
    // The slice is exactly the encoded length, so encoding cannot fail.
    let _ = response.encode_into(&mut &mut body[..]);
}

/// Answers up to this size, with their length prefix, are framed whole, on the stack.
const SMALL_ANSWER: usize = 512;

/// An answer's frame laid out for writing: [`head`](Self::head), then
/// [`body`](Self::body). A frame of up to [`SMALL_ANSWER`] bytes is all head. A larger
/// `ok` answer's head is the length prefix and `RpcResponse.ok`'s key and length, and
/// its body the payload itself, not copied: copying megabytes into a frame first held
/// a large response back by milliseconds. A larger failure is all body.
pub(crate) struct AnswerFrame {
    head: [u8; SMALL_ANSWER],
    head_len: usize,
    body: Bytes,
}

impl AnswerFrame {
    /// Lays out `response`, whose frame is `whole` bytes long, as [`frame_len`]
    /// measured and accepted it.
    pub(crate) fn new(response: RpcResponse, whole: usize) -> Self {
        let mut head = [0u8; SMALL_ANSWER];
        if whole <= SMALL_ANSWER {
            write_frame(&response, &mut head[..whole]);
            return Self {
                head,
                head_len: whole,
                body: Bytes::new(),
            };
        }
        match response.result {
            Some(rpc_response::Result::Ok(payload)) => {
                let (field, field_len) = RpcResponse::ok_head(payload.len());
                // `frame_len` checked that the frame's length fits the prefix.
                debug_assert!(u32::try_from(field_len + payload.len()).is_ok());
                let body_len = (field_len + payload.len()) as u32;
                head[..LENGTH_FIELD_BYTES].copy_from_slice(&body_len.to_be_bytes());
                head[LENGTH_FIELD_BYTES..LENGTH_FIELD_BYTES + field_len]
                    .copy_from_slice(&field[..field_len]);
                Self {
                    head,
                    head_len: LENGTH_FIELD_BYTES + field_len,
                    body: payload,
                }
            }
            result => {
                let mut frame = vec![0u8; whole];
                write_frame(&RpcResponse { result }, &mut frame);
                Self {
                    head,
                    head_len: 0,
                    body: Bytes::from(frame),
                }
            }
        }
    }

    /// What goes first.
    pub(crate) fn head(&self) -> &[u8] {
        &self.head[..self.head_len]
    }

    /// What follows the head.
    pub(crate) fn body(&self) -> &Bytes {
        &self.body
    }
}

/// Checks a request's payload against the limit `max`, before anything is sent.
pub(crate) fn check_request(len: usize, max: usize) -> Result<(), RpcError> {
    if len > max {
        return Err(RpcError::TooLarge { len, max });
    }
    Ok(())
}

/// What a caller makes of the response frame it read: the payload, or the failure the
/// frame reports. A payload over `max` (the frame may be a little longer than `max`,
/// for the envelope) is refused as the server should have refused it.
pub(crate) fn decode_response(frame: Bytes, max: usize) -> Result<Bytes, RpcError> {
    let response = RpcResponse::decode(frame)
        .map_err(|_| RpcError::InvalidResponse(InvalidResponse::Undecodable))?;
    match response.result {
        Some(rpc_response::Result::Ok(data)) if data.len() > max => Err(RpcError::TooLarge {
            len: data.len(),
            max,
        }),
        Some(rpc_response::Result::Ok(data)) => Ok(data),
        Some(rpc_response::Result::Failure(failure)) => Err(remote_failure(failure)),
        None => Err(RpcError::InvalidResponse(InvalidResponse::Empty)),
    }
}

/// The caller's error for a failure the server reported.
fn remote_failure(failure: RpcFailure) -> RpcError {
    let kind = match failure.code() {
        Code::TooManyRequests => return RpcError::TooManyRequests,
        Code::TooLarge => {
            return RpcError::TooLarge {
                len: usize::try_from(failure.size).unwrap_or(usize::MAX),
                max: usize::try_from(failure.limit).unwrap_or(usize::MAX),
            };
        }
        Code::NoResponse => RemoteFailure::NoResponse,
        Code::Application => RemoteFailure::Application,
        Code::Timeout => RemoteFailure::Timeout,
    };
    RpcError::Remote {
        failure: kind,
        message: failure.message,
    }
}
