//! The messaging protocols: RPC and DirectSend.

pub(crate) mod direct_send;
pub(crate) mod rpc;

use std::io;

use netcore::multiplexing::{Control, Substream};
use netcore::negotiate::{
    NegotiateError, Negotiated, negotiate_outbound_interactive, negotiate_outbound_select,
};

use crate::protocol_id::ProtocolId;
use crate::shared::PeerHandle;

/// Why an outbound substream could not be opened for a protocol.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The connection is closed.
    Closed,
    /// The remote refused the protocol.
    Refused,
    /// Negotiation failed otherwise.
    Negotiation(NegotiateError),
}

/// Opens a substream to the peer of `control` for `protocol`. When the remote's
/// handshake listed the protocol, negotiation is optimistic: no round trip, and the
/// request data rides with the protocol name.
pub(crate) async fn open_substream(
    control: &Control,
    remote_supports: bool,
    protocol: ProtocolId,
) -> Result<Negotiated<Substream>, OpenError> {
    let substream = control.open_stream().await.map_err(|_| OpenError::Closed)?;
    if remote_supports {
        return negotiate_outbound_select(substream, protocol.as_str())
            .map_err(OpenError::Negotiation);
    }
    match negotiate_outbound_interactive(substream, &[protocol.as_str()]).await {
        Ok((io, _)) => Ok(io),
        Err(NegotiateError::Refused) => Err(OpenError::Refused),
        Err(e) if control.is_closed() => {
            let _ = e;
            Err(OpenError::Closed)
        }
        Err(e) => Err(OpenError::Negotiation(e)),
    }
}

/// Whether an I/O error on a substream of `peer` means the remote refused the protocol.
pub(crate) fn is_refusal(err: &io::Error) -> bool {
    matches!(NegotiateError::from_io(err), Some(NegotiateError::Refused))
}

/// Whether the handle's connection is gone.
pub(crate) fn connection_closed(peer: &PeerHandle) -> bool {
    peer.control.is_closed()
}
