//! A simulated wide-area network under `netcore`'s `Transport`, on tokio's clock.
//!
//! This crate owns [`SimNetwork`], a model of validators' links: nodes in regions, each
//! with an uplink and a downlink of given bandwidth, the one-way latency between regions
//! (a [`LatencyModel`]), and cuts between nodes. Each node has a [`SimTransport`], which
//! implements `netcore::transport::Transport` over `/memory/<port>` addresses, so the
//! stack runs over it unchanged (`network::NetworkBuilder::start`, or
//! `validator_network::StackBuilder::with_transport`). Its connections are
//! [`SimSocket`]s: byte streams like TCP sockets.
//!
//! # The model
//!
//! - **Connection setup**: `connect` completes after one round trip (SYN, SYN-ACK); the
//!   listener accepts when the ACK arrives, 1.5 round trips after the start; a port
//!   nobody listens on refuses after one round trip (`ConnectionRefused`), and a port no
//!   node ever listened on after a local one.
//! - **Send buffer**: a writer's bytes wait in a bounded buffer (per connection and
//!   direction, [`SimConfig::send_buffer`]) until they leave; a full buffer makes
//!   `poll_write` wait. It holds unsent bytes only: bytes in flight count against the
//!   receive window (a kernel keeps them in its send buffer until acknowledged).
//!   [`SimSocket::unsent`] reads it, and [`SimSocket::set_notsent_lowat`] lowers it as
//!   `TCP_NOTSENT_LOWAT` does.
//! - **Bandwidth**: bytes leave at the connection's share of its sender's uplink and
//!   its receiver's downlink, both taken at the instant they leave (the path acts as one
//!   link). Shares are max-min fair among the flows that have bytes to send (a flow held
//!   back elsewhere leaves the rest of a link to the others) and are recomputed whenever
//!   a flow starts or stops. Flows are fluid, not packets: a flow sends at its rate
//!   exactly. A node's connection to itself uses its own links too.
//! - **Latency**: bytes arrive one one-way latency after they leave.
//! - **Receive window**: bytes in flight plus bytes unread at the receiver stay within
//!   [`SimConfig::receive_window`]; the sender learns of reads a latency after them, as
//!   from TCP's window updates, so a window limits a flow to window / round trip.
//! - **Close**: `poll_shutdown` half-closes (the peer reads the data, then EOF). Dropping
//!   a socket does that and discards what arrives for it; the peer's writes fail with
//!   `BrokenPipe` once it hears so, one latency later.
//! - **Cuts** ([`SimNetwork::partition`], [`SimNetwork::cut`]): nothing passes between
//!   cut nodes. Bytes on the wire are lost and sent again from the heal on (TCP
//!   retransmits), bytes written meanwhile wait in the send buffer, handshakes wait (a
//!   dial timeout of the stack gives up on them). Healing resumes all at once.
//!
//! It does **not** model packet loss, reordering or jitter; congestion control (no slow
//! start: a flow gets its fair share at once, and keeps it however long the path); the
//! wait for a retransmission timeout after a heal; queues in routers (a link is never
//! oversubscribed, so there is no queueing delay); packet headers (bandwidth carries
//! payload only); links inside the network (only each node's own uplink and downlink
//! limit a flow); CPU time.
//!
//! # Time
//!
//! Everything runs on tokio's clock, so under paused time (`#[tokio::test(start_paused
//! = true)]`) a simulated minute of a hundred nodes takes what the work takes, not a
//! minute. A core without I/O holds the model: fed byte counts and instants, it returns
//! what to wake and when it next has something to do, computing rates and arrival
//! instants to the nanosecond. A wire task sleeps until that instant, and holds no timer
//! while nothing is in flight. Tokio's timers fire on whole milliseconds, so a task
//! learns of an arrival at the first millisecond tick after it: the model's instants do
//! not drift (a transfer of any size ends when the model says, at most 1 ms late to the
//! reader), but each exchange that waits for an answer can take up to 1 ms longer than
//! its latencies. The model uses no randomness: on a current-thread runtime, the same
//! run of the same tasks gives the same figures.
//!
//! It does not own what runs over the connections, nor the stack's timeouts.

mod config;
mod core;
mod driver;
mod network;
mod regions;
mod shared;
mod socket;
mod transport;

pub use config::{
    DEFAULT_BACKLOG, DEFAULT_LOCAL_LATENCY, DEFAULT_RECEIVE_WINDOW, DEFAULT_SEND_BUFFER,
    LatencyMatrix, LatencyModel, NodeConfig, NodeId, SimConfig, mbit,
};
pub use network::SimNetwork;
pub use regions::{REGIONS, RTT_MS, five_regions};
pub use socket::SimSocket;
pub use transport::{SimConnect, SimListener, SimTransport};
