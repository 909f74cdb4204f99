//! Tests of the core, fed instants and byte counts: no runtime, no sockets.
//!
//! [`Net`] plays the sockets: it opens connections, and runs [`Job`]s (a writer that
//! hands over its bytes as fast as the send buffer takes them, a reader that reads
//! everything as soon as it arrives), looking again when the core says, rounded up to a
//! tick as tokio's timers round.

mod properties;
mod scenarios;

use std::collections::BTreeMap;
use std::time::Duration;

use super::events::Dir;
use super::{ConnectState, Core, FlowId, Params, Readable, Side, Wake};
use crate::config::NodeId;

pub(super) const KIB: u64 = 1024;
pub(super) const MIB: u64 = 1024 * 1024;

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Bytes per second of `n` Mbit/s.
pub(super) fn mbit(n: u64) -> u64 {
    crate::mbit(n)
}

pub(super) fn params() -> Params {
    Params {
        send_buffer: 256 * KIB,
        window: 64 * MIB,
        local_latency: Duration::from_micros(100),
        backlog: 16,
    }
}

/// A transfer of `total` bytes over `flow`, starting at `start`.
#[derive(Clone, Debug)]
pub(super) struct Job {
    pub(super) flow: FlowId,
    pub(super) start: Duration,
    pub(super) total: u64,
    pub(super) written: u64,
    pub(super) received: u64,
    /// When the last byte was read.
    pub(super) done: Option<Duration>,
    /// Reads nothing (a stalled application).
    pub(super) no_reader: bool,
    /// Woken (or not yet waiting): the writer tries to write.
    may_write: bool,
    /// Woken (or not yet waiting): the reader tries to read.
    may_read: bool,
}

impl Job {
    pub(super) fn new(flow: FlowId, start: Duration, total: u64) -> Self {
        Self {
            flow,
            start,
            total,
            written: 0,
            received: 0,
            done: None,
            no_reader: false,
            may_write: true,
            may_read: true,
        }
    }
}

/// A core and the ports its nodes listen on.
pub(super) struct Net {
    pub(super) core: Core,
    ports: BTreeMap<NodeId, u16>,
}

impl Net {
    pub(super) fn new(params: Params) -> Self {
        Self {
            core: Core::new(params),
            ports: BTreeMap::new(),
        }
    }

    pub(super) fn node(&mut self, bytes_per_second: u64) -> NodeId {
        self.core.add_node(bytes_per_second, bytes_per_second)
    }

    /// Sets the one-way latency between `a` and `b`, both ways.
    pub(super) fn latency(&mut self, a: NodeId, b: NodeId, one_way: Duration) {
        self.core.set_latency(a, b, one_way);
        self.core.set_latency(b, a, one_way);
    }

    /// The port `node` listens on, listening first if it does not yet.
    pub(super) fn port(&mut self, node: NodeId) -> u16 {
        if let Some(port) = self.ports.get(&node) {
            return *port;
        }
        let port = self.core.listen(node, 1000 + node.0 as u16).unwrap();
        self.ports.insert(node, port);
        port
    }

    /// Advances to the core's next event; false when there is none.
    pub(super) fn step(&mut self) -> bool {
        match self.core.next_wake() {
            Some(at) => {
                self.core.advance(at);
                true
            }
            None => false,
        }
    }

    /// Connects `a` to `b` and accepts, running the handshake to its end; returns the
    /// flow from `a` to `b`.
    pub(super) fn open(&mut self, a: NodeId, b: NodeId) -> FlowId {
        let port = self.port(b);
        let conn = self.core.connect(a, port).unwrap();
        while self.core.connect_state(conn) == ConnectState::Pending {
            assert!(self.step(), "the handshake stalled");
        }
        assert_eq!(self.core.connect_state(conn), ConnectState::Established);
        loop {
            if let Some((accepted, _, _)) = self.core.accept(port) {
                assert_eq!(accepted, conn);
                break;
            }
            assert!(self.step(), "the ACK never arrived");
        }
        self.core.take_wakes();
        FlowId {
            conn,
            dir: Side::Dialer.sends(),
        }
    }

    /// Runs `jobs` until all are done or `until`, looking again at the core's next event
    /// rounded up to a multiple of `tick`.
    pub(super) fn run(&mut self, jobs: &mut [Job], tick: Duration, until: Duration) {
        self.run_checked(jobs, tick, until, |_, _| {});
    }

    /// [`run`](Self::run), calling `check` after each step.
    pub(super) fn run_checked(
        &mut self,
        jobs: &mut [Job],
        tick: Duration,
        until: Duration,
        mut check: impl FnMut(&Core, &[Job]),
    ) {
        let mut steps = 0u64;
        loop {
            steps += 1;
            if steps > 200_000 {
                panic!(
                    "no end in sight at {:?}: {:?}",
                    self.core.now(),
                    self.core.queue.peek()
                );
            }
            check(&self.core, jobs);
            self.pump(jobs);
            let next_start = jobs
                .iter()
                .filter(|j| j.start > self.core.now())
                .map(|j| j.start)
                .min();
            let next = [self.core.next_wake(), next_start]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else {
                return;
            };
            let next = round_up(next, tick);
            if next > until || jobs.iter().all(|j| j.done.is_some()) {
                return;
            }
            self.core.advance(next);
            check(&self.core, jobs);
        }
    }

    /// Lets every started job that was woken (or never waited) write and read all it
    /// can at the clock, as a socket's user does.
    pub(super) fn pump(&mut self, jobs: &mut [Job]) {
        let now = self.core.now();
        for wake in self.core.take_wakes() {
            for job in jobs.iter_mut() {
                match wake {
                    Wake::Write(f) if f == job.flow => job.may_write = true,
                    Wake::Read(f) if f == job.flow => job.may_read = true,
                    _ => {}
                }
            }
        }
        for job in jobs.iter_mut().filter(|j| j.start <= now) {
            if job.may_write && job.written < job.total {
                let room = self.core.room(job.flow).unwrap_or(0);
                let n = room.min(job.total - job.written);
                self.core.write(job.flow, n);
                job.written += n;
                if job.written < job.total {
                    self.core.wait_write(job.flow);
                    job.may_write = false;
                }
            }
            if job.no_reader || !job.may_read {
                continue;
            }
            loop {
                match self.core.readable(job.flow) {
                    Readable::Bytes(n) => {
                        self.core.consume(job.flow, n);
                        job.received += n;
                        if job.received == job.total {
                            job.done = Some(now);
                        }
                    }
                    Readable::Nothing => {
                        self.core.wait_read(job.flow);
                        job.may_read = false;
                        break;
                    }
                    Readable::Eof => break,
                }
            }
        }
    }
}

/// `t` rounded up to a multiple of `tick`.
pub(super) fn round_up(t: Duration, tick: Duration) -> Duration {
    let tick = tick.as_nanos().max(1);
    let n = t.as_nanos().div_ceil(tick) * tick;
    Duration::from_nanos(n as u64)
}

/// The flow the other way on the same connection.
pub(super) fn reverse(flow: FlowId) -> FlowId {
    FlowId {
        conn: flow.conn,
        dir: match flow.dir {
            Dir::Forward => Dir::Backward,
            Dir::Backward => Dir::Forward,
        },
    }
}
