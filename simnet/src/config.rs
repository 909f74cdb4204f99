//! What a simulated network is made of: its settings, its nodes, and the latency between
//! regions.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Bytes a connection's writer may leave unsent by default, as a kernel's socket send
/// buffer: large enough that a writer of 64 KiB messages does not stall on each, as in
/// `memsocket`.
pub const DEFAULT_SEND_BUFFER: usize = 256 * 1024;

/// The default receive window: bytes in flight plus bytes unread at the receiver. A
/// tuned host: 1 Gbit/s over a 500 ms round trip (250 ms each way, the farthest pair of
/// validators) is 62.5 MB in flight, so this window does not limit such a link.
pub const DEFAULT_RECEIVE_WINDOW: usize = 64 * 1024 * 1024;

/// One-way latency within a region (and from a node to itself) by default: hosts of one
/// data center.
pub const DEFAULT_LOCAL_LATENCY: Duration = Duration::from_micros(100);

/// Connections a listener holds, half-open or not yet accepted, by default; past it a
/// SYN is refused, as in `memsocket`.
pub const DEFAULT_BACKLOG: usize = 1024;

/// Bytes per second of a link of `n` megabits per second.
///
/// ```
/// assert_eq!(simnet::mbit(1000), 125_000_000);
/// ```
pub const fn mbit(n: u64) -> u64 {
    n * 125_000
}

/// The settings of a simulated network, the same for all its connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// Bytes a writer may hand over and not yet sent, per connection and direction. A
    /// waiting writer is woken when half of it is free (as Linux wakes one), at the next
    /// millisecond tick of tokio's timers: to keep a link busy it holds more than a
    /// couple of milliseconds of the link (the default, of 1 Gbit/s).
    pub send_buffer: usize,
    /// Bytes in flight plus bytes unread at the receiver, per connection and direction.
    pub receive_window: usize,
    /// One-way latency between nodes of one region, and from a node to itself.
    pub local_latency: Duration,
    /// Connections a listener holds before it accepts them.
    pub backlog: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            send_buffer: DEFAULT_SEND_BUFFER,
            receive_window: DEFAULT_RECEIVE_WINDOW,
            local_latency: DEFAULT_LOCAL_LATENCY,
            backlog: DEFAULT_BACKLOG,
        }
    }
}

/// Names a node of a simulated network, in the order nodes were added (from 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub(crate) u32);

impl NodeId {
    /// The node's position in the order nodes were added.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node{}", self.0)
    }
}

/// A node: where it is and how fast its link is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// The node's region. Nodes of one region are [`SimConfig::local_latency`] apart;
    /// nodes of two regions as the [`LatencyModel`] says. A node with an explicit place
    /// of its own is a region of its own.
    pub region: String,
    /// Bytes per second the node sends, shared fairly by its connections.
    pub uplink: u64,
    /// Bytes per second the node receives, shared fairly by its connections.
    pub downlink: u64,
}

impl NodeConfig {
    /// A node in `region` whose link carries `bytes_per_second` each way.
    pub fn new(region: impl Into<String>, bytes_per_second: u64) -> Self {
        Self {
            region: region.into(),
            uplink: bytes_per_second,
            downlink: bytes_per_second,
        }
    }
}

/// The one-way latency between two regions.
///
/// Any `Fn(&str, &str) -> Duration` is one; [`LatencyMatrix`] is one from a table.
pub trait LatencyModel: Send + Sync + 'static {
    /// The one-way latency from a node in region `from` to a node in region `to`, two
    /// distinct regions.
    fn one_way(&self, from: &str, to: &str) -> Duration;
}

impl<F> LatencyModel for F
where
    F: Fn(&str, &str) -> Duration + Send + Sync + 'static,
{
    fn one_way(&self, from: &str, to: &str) -> Duration {
        self(from, to)
    }
}

/// One-way latencies by region pair, the same both ways, with a default for pairs not
/// listed.
///
/// ```
/// use std::time::Duration;
/// use simnet::{LatencyMatrix, LatencyModel};
///
/// let ms = Duration::from_millis;
/// let latency = LatencyMatrix::new(ms(100))
///     .with("us-east", "eu-west", ms(40))
///     .with("us-east", "ap-south", ms(110));
/// assert_eq!(latency.one_way("eu-west", "us-east"), ms(40));
/// assert_eq!(latency.one_way("eu-west", "ap-south"), ms(100));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyMatrix {
    default: Duration,
    pairs: BTreeMap<(String, String), Duration>,
}

impl LatencyMatrix {
    /// A matrix that gives `default` for every pair of regions.
    pub fn new(default: Duration) -> Self {
        Self {
            default,
            pairs: BTreeMap::new(),
        }
    }

    /// Sets the one-way latency between regions `a` and `b`, both ways.
    pub fn with(mut self, a: &str, b: &str, one_way: Duration) -> Self {
        self.pairs.insert(ordered(a, b), one_way);
        self
    }
}

impl LatencyModel for LatencyMatrix {
    fn one_way(&self, from: &str, to: &str) -> Duration {
        self.pairs
            .get(&ordered(from, to))
            .copied()
            .unwrap_or(self.default)
    }
}

/// A region pair in one order, whichever way it was named.
fn ordered(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}
