//! The messaging protocols, RPC and DirectSend, and what they share: the events they
//! hand to applications, the state of a live connection they keep ([`PeerHandle`]),
//! substream deadlines, and [`Protocols`], what they need from the node.
//!
//! Nothing here names the peer manager, the connection task or the application
//! interface: those sit above and pass in what a protocol needs.

pub(crate) mod deadline;
pub(crate) mod direct_send;
pub(crate) mod events;
pub(crate) mod handle;
pub(crate) mod rpc;

use std::io;

use netcore::multiplexing::{Control, Substream};
use netcore::negotiate::{
    NegotiateError, Negotiated, negotiate_outbound_interactive, negotiate_outbound_select,
};

use crate::config::NetworkConfig;
use crate::counters::NetworkMetrics;
use crate::reporter::Reporter;
use crate::routes::{Route, Routes};

pub(crate) use events::{AppQueue, Delivery, Event};
pub(crate) use handle::{PeerHandle, PeerTable};

/// What serving and sending on the protocols needs from the node, each part owned by
/// one component: the configuration, the metrics, the registered protocols, the
/// applications' queues, where misbehaviour goes, and the runtime.
pub(crate) struct Protocols {
    pub(crate) config: NetworkConfig,
    pub(crate) metrics: NetworkMetrics,
    pub(crate) routes: Routes,
    /// Each application's event queue, indexed like `Route::app`.
    pub(crate) apps: Vec<AppQueue>,
    /// Penalizes peers that break a protocol, and bans them.
    pub(crate) reporter: Reporter,
    /// The runtime the network started on, for work begun outside it (an answer that
    /// could not be written at once).
    pub(crate) runtime: tokio::runtime::Handle,
}

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

/// Opens a substream to the peer of `control` for the protocol of `route`, in its
/// class. When the remote's handshake listed the protocol, negotiation is optimistic:
/// no round trip, and the request data rides with the protocol name.
pub(crate) async fn open_substream(
    control: &Control,
    remote_supports: bool,
    route: &Route,
) -> Result<Negotiated<Substream>, OpenError> {
    let protocol = route.protocol;
    let substream = control
        .open_stream_with_priority(route.priority)
        .await
        .map_err(|_| OpenError::Closed)?;
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
