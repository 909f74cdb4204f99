//! The simulated network without I/O: nodes, connections and their flows, fed byte
//! counts and instants, returning what to wake and when to look again.
//!
//! Time is a `Duration` since the network began. [`Core::advance`] moves the clock to an
//! instant, handling every event due by then at its own instant, so the driver may look
//! late without the model drifting; every other call acts at the clock. Flows are fluid:
//! an active flow (bytes to send, room in its window, not cut) sends at its max-min fair
//! share of its sender's uplink and its receiver's downlink, recomputed whenever the set
//! of active flows changes, and its bytes arrive one latency after they leave.

mod connection;
mod events;
mod fairness;
mod flow;
mod fluid;
mod partition;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::time::Duration;

use crate::config::NodeId;
pub(crate) use connection::ConnectState;
use connection::{Conn, Ports};
pub(crate) use events::{ConnId, FlowId, Side};
use events::{Event, EventQueue, Packet, Slot};
use flow::Flow;
pub(crate) use flow::Readable;

/// What the driver should do for the core's sake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The flow's waiting reader can read (bytes or EOF).
    Read(FlowId),
    /// The flow's waiting writer can write (or learn that it cannot).
    Write(FlowId),
    /// The connection's dialer has its answer.
    Connect(ConnId),
    /// The listener on this port has a connection to accept.
    Accept(u16),
    /// Nobody will read this flow's bytes: drop them.
    Discard(FlowId),
}

/// The settings every connection is created with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Params {
    pub(crate) send_buffer: u64,
    pub(crate) window: u64,
    pub(crate) local_latency: Duration,
    pub(crate) backlog: usize,
}

/// A node's capacities, in bytes per nanosecond.
#[derive(Clone, Copy, Debug)]
struct Node {
    uplink: f64,
    downlink: f64,
    /// Bytes that arrived at this node over connections since forgotten.
    received_before: u64,
}

/// The state of the simulated network.
#[derive(Debug)]
pub(crate) struct Core {
    clock: Duration,
    params: Params,
    nodes: Vec<Node>,
    /// One-way latency by sender, then receiver.
    latency: Vec<Vec<Duration>>,
    conns: BTreeMap<ConnId, Conn>,
    ports: Ports,
    next_conn: u64,
    /// The flows sharing capacity, in a fixed order so that shares are reproducible.
    active: BTreeSet<FlowId>,
    /// Node pairs cut apart, each as (lower, higher).
    cuts: BTreeSet<(NodeId, NodeId)>,
    /// Control packets held by a cut, sent again when it heals.
    parked: Vec<(ConnId, Packet)>,
    queue: EventQueue,
    /// The set of active flows changed since the shares were computed.
    rates_stale: bool,
    /// Flows whose timers may be out of date.
    stale: BTreeSet<FlowId>,
    wakes: Vec<Wake>,
}

impl Core {
    pub(crate) fn new(params: Params) -> Self {
        Self {
            clock: Duration::ZERO,
            params,
            nodes: Vec::new(),
            latency: Vec::new(),
            conns: BTreeMap::new(),
            ports: Ports::default(),
            next_conn: 0,
            active: BTreeSet::new(),
            cuts: BTreeSet::new(),
            parked: Vec::new(),
            queue: EventQueue::default(),
            rates_stale: false,
            stale: BTreeSet::new(),
            wakes: Vec::new(),
        }
    }

    /// Adds a node sending and receiving at the given bytes per second; its latency to
    /// every node is the local one until [`set_latency`](Self::set_latency).
    pub(crate) fn add_node(&mut self, uplink: u64, downlink: u64) -> NodeId {
        let id = NodeId(self.nodes.len() as u32);
        let per_ns = |bytes_per_second: u64| bytes_per_second as f64 / 1e9;
        self.nodes.push(Node {
            uplink: per_ns(uplink),
            downlink: per_ns(downlink),
            received_before: 0,
        });
        let local = self.params.local_latency;
        for row in &mut self.latency {
            row.push(local);
        }
        self.latency.push(vec![local; self.nodes.len()]);
        id
    }

    /// Sets the one-way latency from `from` to `to`, for connections opened from now on.
    pub(crate) fn set_latency(&mut self, from: NodeId, to: NodeId, one_way: Duration) {
        self.latency[from.index()][to.index()] = one_way;
    }

    /// Bytes that arrived at `node` by the clock, over all its connections ever: what
    /// its downlink carried.
    pub(crate) fn received(&self, node: NodeId) -> u64 {
        let live: u64 = (self.conns.values())
            .flat_map(|c| c.flows.iter())
            .filter(|f| f.dst == node)
            .map(|f| f.arrived(self.clock))
            .sum();
        self.nodes[node.index()].received_before + live
    }

    pub(crate) fn latency(&self, from: NodeId, to: NodeId) -> Duration {
        self.latency[from.index()][to.index()]
    }

    pub(crate) fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// The clock: the instant of the last [`advance`](Self::advance).
    #[cfg(test)]
    pub(crate) fn now(&self) -> Duration {
        self.clock
    }

    /// Moves the clock to `now` (never back), handling every event due by then at its
    /// own instant.
    pub(crate) fn advance(&mut self, now: Duration) {
        loop {
            let due = self.queue.peek().filter(|(at, _)| *at <= now);
            match due {
                // Changes made at one instant are settled once, before time moves on.
                Some((at, _)) if at > self.clock && self.unsettled() => self.settle(),
                Some((at, event)) => {
                    self.queue.pop();
                    self.clock = self.clock.max(at);
                    self.handle(event, at);
                }
                None if now > self.clock && self.unsettled() => self.settle(),
                None => break,
            }
        }
        self.clock = self.clock.max(now);
    }

    /// Whether changes await [`settle`](Self::settle): shares to recompute, timers to
    /// set.
    pub(crate) fn unsettled(&self) -> bool {
        self.rates_stale || !self.stale.is_empty()
    }

    /// When [`advance`](Self::advance) next has something to do; `None` when nothing is
    /// in flight.
    pub(crate) fn next_wake(&mut self) -> Option<Duration> {
        self.settle();
        while let Some((at, event)) = self.queue.peek() {
            if self.is_current(at, event) {
                return Some(at);
            }
            self.queue.pop();
        }
        None
    }

    /// What to wake, since the last call.
    pub(crate) fn take_wakes(&mut self) -> Vec<Wake> {
        std::mem::take(&mut self.wakes)
    }

    /// Whether a queued event still matters (a flow's timers are replaced, not removed).
    fn is_current(&self, at: Duration, event: Event) -> bool {
        match event {
            Event::Timer { flow, slot } => self
                .flow(flow)
                .is_some_and(|f| f.scheduled[slot.index()] == Some(at)),
            Event::Packet { conn, .. } => self.conns.contains_key(&conn),
        }
    }

    fn handle(&mut self, event: Event, at: Duration) {
        match event {
            Event::Timer { flow, slot } => self.on_timer(flow, slot, at),
            Event::Packet { conn, packet } => self.on_packet(conn, packet),
        }
    }

    pub(crate) fn flow(&self, id: FlowId) -> Option<&Flow> {
        self.conns.get(&id.conn).map(|c| &c.flows[id.dir.index()])
    }

    fn flow_mut(&mut self, id: FlowId) -> Option<&mut Flow> {
        self.conns
            .get_mut(&id.conn)
            .map(|c| &mut c.flows[id.dir.index()])
    }

    /// What the reader of `flow` can do now.
    pub(crate) fn readable(&self, flow: FlowId) -> Readable {
        self.flow(flow)
            .map_or(Readable::Eof, |f| f.readable(self.clock))
    }

    /// The reader took `n` bytes.
    pub(crate) fn consume(&mut self, flow: FlowId, n: u64) {
        let now = self.clock;
        if let Some(f) = self.flow_mut(flow) {
            f.consume(now, n);
            self.stale.insert(flow);
        }
    }

    /// The reader waits: [`Wake::Read`] when it can read.
    pub(crate) fn wait_read(&mut self, flow: FlowId) {
        if let Some(f) = self.flow_mut(flow) {
            f.waiting_read = true;
            self.stale.insert(flow);
        }
    }

    /// Bytes the writer of `flow` may hand over now; `BrokenPipe` once it shut down or
    /// heard that its reader is gone.
    pub(crate) fn room(&self, flow: FlowId) -> io::Result<u64> {
        match self.flow(flow) {
            Some(f) if f.write_closed() => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )),
            Some(f) if !f.reset => Ok(f.room(self.clock)),
            _ => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// The writer handed over `n` bytes (no more than [`room`](Self::room)).
    pub(crate) fn write(&mut self, flow: FlowId, n: u64) {
        if let Some(f) = self.flow_mut(flow) {
            f.write(n);
            self.refresh(flow);
        }
    }

    /// The writer waits: [`Wake::Write`] when it has room.
    pub(crate) fn wait_write(&mut self, flow: FlowId) {
        if let Some(f) = self.flow_mut(flow) {
            f.waiting_write = true;
            self.stale.insert(flow);
        }
    }

    /// The writer shut down: the reader gets EOF after the last byte.
    pub(crate) fn shutdown(&mut self, flow: FlowId) {
        if let Some(f) = self.flow_mut(flow) {
            f.close_write();
            self.refresh(flow);
        }
    }

    /// Bytes handed over by the writer and not yet sent.
    pub(crate) fn unsent(&self, flow: FlowId) -> u64 {
        self.flow(flow).map_or(0, |f| f.unsent(self.clock))
    }

    /// Lets the writer hand over bytes only while fewer than `lowat` are unsent.
    pub(crate) fn set_lowat(&mut self, flow: FlowId, lowat: Option<u64>) {
        if let Some(f) = self.flow_mut(flow) {
            f.set_lowat(lowat);
            self.stale.insert(flow);
        }
    }

    /// Brings `flow` in line with what it may send: joins or leaves the flows sharing
    /// capacity, follows its new target, sends its FIN when done.
    fn refresh(&mut self, id: FlowId) {
        let now = self.clock;
        let Some(flow) = self.flow_mut(id) else {
            return;
        };
        flow.apply_updates(now);
        let wants = flow.wants_to_send(now);
        let changed = flow.active != wants;
        flow.active = wants;
        // Leaving stops the flow at once; joining starts it at the next share.
        let rate = if wants { flow.rate() } else { 0.0 };
        flow.set_rate(now, rate);
        flow.send_fin_if_done(now);
        if changed {
            if wants {
                self.active.insert(id);
            } else {
                self.active.remove(&id);
            }
            self.rates_stale = true;
        }
        self.stale.insert(id);
    }

    /// Recomputes the shares if the active flows changed, and the timers of the flows
    /// whose state changed.
    fn settle(&mut self) {
        if std::mem::take(&mut self.rates_stale) {
            self.share();
        }
        for id in std::mem::take(&mut self.stale) {
            self.schedule(id);
        }
    }

    /// Gives every active flow its max-min fair share of its sender's uplink and its
    /// receiver's downlink (node `n`'s are resources `2n` and `2n + 1`).
    fn share(&mut self) {
        let now = self.clock;
        let capacity: Vec<f64> = self
            .nodes
            .iter()
            .flat_map(|n| [n.uplink, n.downlink])
            .collect();
        let ids: Vec<FlowId> = self.active.iter().copied().collect();
        let paths: Vec<[usize; 2]> = ids
            .iter()
            .filter_map(|id| self.flow(*id))
            .map(|f| [2 * f.src.index(), 2 * f.dst.index() + 1])
            .collect();
        let rates = fairness::max_min(&capacity, &paths);
        for (id, rate) in ids.into_iter().zip(rates) {
            if let Some(flow) = self.flow_mut(id)
                && flow.rate() != rate
            {
                flow.set_rate(now, rate);
                self.stale.insert(id);
            }
        }
    }

    /// Sets the timers of `id` for its current state. A timer only moves earlier: one
    /// that fires early finds nothing to do and is set again.
    fn schedule(&mut self, id: FlowId) {
        let now = self.clock;
        let Some(flow) = self.flow_mut(id) else {
            return;
        };
        let mut due = Vec::new();
        for slot in Slot::ALL {
            let Some(at) = flow.timer(slot, now).map(|t| t.max(now)) else {
                continue;
            };
            let scheduled = &mut flow.scheduled[slot.index()];
            if scheduled.is_none_or(|s| at < s) {
                *scheduled = Some(at);
                due.push((at, slot));
            }
        }
        for (at, slot) in due {
            self.queue.push(at, Event::Timer { flow: id, slot });
        }
    }

    fn on_timer(&mut self, id: FlowId, slot: Slot, at: Duration) {
        let now = self.clock;
        let Some(flow) = self.flow_mut(id) else {
            return;
        };
        if flow.scheduled[slot.index()] != Some(at) {
            return;
        }
        flow.scheduled[slot.index()] = None;
        match slot {
            Slot::Send => self.refresh(id),
            Slot::Read => {
                let ready = !matches!(flow.readable(now), Readable::Nothing);
                if flow.waiting_read && ready {
                    flow.waiting_read = false;
                    self.wakes.push(Wake::Read(id));
                }
            }
            Slot::Write => {
                if flow.waiting_write && flow.writer_ready(now) {
                    flow.waiting_write = false;
                    self.wakes.push(Wake::Write(id));
                }
            }
        }
        self.stale.insert(id);
    }
}
