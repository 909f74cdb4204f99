//! The core's identifiers, its timed events and their queue.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// Names a connection of the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ConnId(pub(crate) u64);

/// A direction of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Dir {
    /// From the dialer to the listener.
    Forward,
    /// From the listener to the dialer.
    Backward,
}

impl Dir {
    pub(crate) fn reverse(self) -> Self {
        match self {
            Dir::Forward => Dir::Backward,
            Dir::Backward => Dir::Forward,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Dir::Forward => 0,
            Dir::Backward => 1,
        }
    }
}

/// An end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Side {
    /// The end that connected.
    Dialer,
    /// The end that accepted.
    Listener,
}

impl Side {
    /// The direction this end writes.
    pub(crate) fn sends(self) -> Dir {
        match self {
            Side::Dialer => Dir::Forward,
            Side::Listener => Dir::Backward,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Side::Dialer => 0,
            Side::Listener => 1,
        }
    }
}

/// One direction of one connection: a flow of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct FlowId {
    pub(crate) conn: ConnId,
    pub(crate) dir: Dir,
}

/// What a flow's timers watch for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Slot {
    /// The flow runs out of bytes it may send (its unsent bytes or its window), or a
    /// window update lets a blocked flow send again.
    Send,
    /// A waiting reader's next byte, or EOF, arrives.
    Read,
    /// A waiting writer's send buffer has room.
    Write,
}

impl Slot {
    pub(crate) const ALL: [Slot; 3] = [Slot::Send, Slot::Read, Slot::Write];

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A control packet of a connection: the handshake, and the reset that tells a writer
/// that its reader is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Packet {
    /// Dialer to listener: open.
    Syn,
    /// Listener to dialer: accepted.
    SynAck,
    /// Dialer to listener: the handshake's last step.
    Ack,
    /// Listener to dialer: nobody listens, or the backlog is full.
    Rst,
    /// Dialer to listener: the dialer gave up before the handshake completed.
    Abort,
    /// The reader of the flow in this direction is gone; travels to its writer.
    Reset(Dir),
}

impl Packet {
    /// The direction the packet travels.
    pub(crate) fn dir(self) -> Dir {
        match self {
            Packet::Syn | Packet::Ack | Packet::Abort => Dir::Forward,
            Packet::SynAck | Packet::Rst => Dir::Backward,
            Packet::Reset(flow) => flow.reverse(),
        }
    }
}

/// Something due at an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Event {
    /// A flow's timer: acted on only if it is still the one the flow scheduled.
    Timer { flow: FlowId, slot: Slot },
    /// A control packet arrives.
    Packet { conn: ConnId, packet: Packet },
}

/// Events by instant; events of one instant in the order they were pushed.
#[derive(Debug, Default)]
pub(crate) struct EventQueue {
    heap: BinaryHeap<Reverse<(Duration, u64, Event)>>,
    pushed: u64,
}

impl EventQueue {
    pub(crate) fn push(&mut self, at: Duration, event: Event) {
        self.pushed += 1;
        self.heap.push(Reverse((at, self.pushed, event)));
    }

    /// The earliest event, without taking it.
    pub(crate) fn peek(&self) -> Option<(Duration, Event)> {
        self.heap
            .peek()
            .map(|Reverse((at, _, event))| (*at, *event))
    }

    /// Takes the earliest event.
    pub(crate) fn pop(&mut self) -> Option<(Duration, Event)> {
        self.heap.pop().map(|Reverse((at, _, event))| (at, event))
    }
}
