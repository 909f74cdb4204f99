//! Protocol ids: the names substreams are negotiated by.

use std::fmt;

/// The name of an application protocol, negotiated on each substream, e.g.
/// `/consensus/rpc/2`. Registered at build time, so it is a `&'static str`.
#[derive(Clone, Copy, PartialOrd, Ord)]
pub struct ProtocolId(&'static str);

impl PartialEq for ProtocolId {
    fn eq(&self, other: &Self) -> bool {
        // Ids are usually copies of one registered constant: the same text at the same
        // address, which settles it without comparing the bytes.
        std::ptr::eq(self.0, other.0) || self.0 == other.0
    }
}

impl Eq for ProtocolId {}

impl std::hash::Hash for ProtocolId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl ProtocolId {
    /// A protocol id. By convention `/<application>/<kind>/<version>`.
    pub const fn new(name: &'static str) -> Self {
        Self(name)
    }

    /// The id as text, as it appears on the wire and in metric labels.
    pub const fn as_str(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for ProtocolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for ProtocolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProtocolId({})", self.0)
    }
}

impl AsRef<str> for ProtocolId {
    fn as_ref(&self) -> &str {
        self.0
    }
}

/// How a protocol uses its substreams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProtocolKind {
    /// One substream per request: one request message, one response message.
    Rpc,
    /// One long-lived substream per peer carrying one-way messages.
    DirectSend,
}
