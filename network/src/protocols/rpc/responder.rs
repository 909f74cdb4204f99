//! What an application answers an inbound RPC with.

use bytes::Bytes;

use super::{Answer, Reply};
use crate::error::ResponseTooLarge;

/// Answers one inbound RPC. Dropping it without answering tells the caller the request
/// got no response.
///
/// The answer of a request whose caller had finished sending is written into the
/// substream by `respond` or `fail` itself (or by the drop), on the calling thread,
/// without waiting; only a response larger than the caller's flow-control window leaves
/// the rest to a task.
#[derive(Debug)]
pub struct RpcResponder {
    pub(crate) reply: Reply,
    /// The protocol's payload limit for responses.
    pub(crate) max: usize,
}

impl RpcResponder {
    /// The largest response payload: the protocol's message limit
    /// (`NetworkBuilder::set_max_message_size`, else `max_message_size`).
    pub fn max_len(&self) -> usize {
        self.max
    }

    /// Sends `response` to the caller. A response over the protocol's message limit
    /// is not sent: the caller gets [`RpcError::TooLarge`] with its
    /// size, and so does this call.
    ///
    /// [`RpcError::TooLarge`]: crate::RpcError::TooLarge
    pub fn respond(self, response: Bytes) -> Result<(), ResponseTooLarge> {
        let (len, max) = (response.len(), self.max);
        if len > max {
            self.reply.send(Answer::TooLarge { len, max });
            return Err(ResponseTooLarge { len, max });
        }
        self.reply.send(Answer::Data(response));
        Ok(())
    }

    /// Tells the caller the request failed, with a short explanation (cut at 1 KiB).
    pub fn fail(self, reason: impl Into<String>) {
        self.reply.send(Answer::Failed(reason.into()));
    }
}
