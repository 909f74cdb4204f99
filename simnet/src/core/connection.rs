//! Ports, listeners and the life of a connection: the handshake, the close of either
//! end, and the reset a writer hears when its reader is gone.

use std::collections::{BTreeMap, VecDeque};
use std::io;

use super::events::{ConnId, Dir, Event, FlowId, Packet, Side};
use super::flow::{Flow, FlowParams};
use super::{Core, Wake};
use crate::config::NodeId;

/// Port 0 and connections pick from this port upward, leaving low ports to nodes that
/// listen on fixed ones (as `memsocket`).
pub(crate) const FIRST_EPHEMERAL_PORT: u16 = 32768;

/// How the dialer's attempt stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnectState {
    /// The SYN or its answer is on its way.
    Pending,
    /// The SYN-ACK arrived: the dialer may send.
    Established,
    /// A reset arrived: nobody listens, or the backlog is full.
    Refused,
}

/// Where an end of a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Not yet handed to a socket (connecting, or waiting to be accepted).
    Pending,
    /// A socket holds it.
    Open,
    /// Its socket was dropped, or it was never to be.
    Closed,
}

/// A connection between two nodes, from its SYN until both ends are closed.
#[derive(Debug)]
pub(crate) struct Conn {
    dialer: NodeId,
    listener: NodeId,
    source_port: u16,
    port: u16,
    /// The listener that took the SYN.
    listener_id: Option<u64>,
    state: ConnectState,
    /// By [`Side`].
    ends: [End; 2],
    /// By [`Dir`].
    pub(crate) flows: [Flow; 2],
}

impl Conn {
    /// The node sending in `dir`, and the node receiving.
    fn path(&self, dir: Dir) -> (NodeId, NodeId) {
        match dir {
            Dir::Forward => (self.dialer, self.listener),
            Dir::Backward => (self.listener, self.dialer),
        }
    }

    /// The two nodes.
    pub(crate) fn nodes(&self) -> (NodeId, NodeId) {
        (self.dialer, self.listener)
    }
}

/// What a port is used for.
#[derive(Debug)]
enum Port {
    Listening(Listener),
    /// A connection's local port at its dialer.
    Source(NodeId),
    /// Nobody listens any more: connections are refused by the node that did.
    Closed(NodeId),
}

/// A listening port.
#[derive(Debug)]
struct Listener {
    node: NodeId,
    /// Tells this listener from a later one on the same port.
    id: u64,
    /// Connections whose SYN was answered and whose ACK is on its way.
    half_open: usize,
    /// Connections established and not yet accepted.
    ready: VecDeque<ConnId>,
    waiting: bool,
}

/// Every port of the network, listening or used by a connection.
#[derive(Debug, Default)]
pub(crate) struct Ports {
    ports: BTreeMap<u16, Port>,
    next_ephemeral: u16,
    next_listener: u64,
}

impl Ports {
    /// A free port at or above [`FIRST_EPHEMERAL_PORT`], taking turns.
    fn ephemeral(&mut self) -> io::Result<u16> {
        let span = u32::from(u16::MAX - FIRST_EPHEMERAL_PORT) + 1;
        for _ in 0..span {
            if self.next_ephemeral < FIRST_EPHEMERAL_PORT {
                self.next_ephemeral = FIRST_EPHEMERAL_PORT;
            }
            let port = self.next_ephemeral;
            self.next_ephemeral = self.next_ephemeral.wrapping_add(1);
            if !matches!(
                self.ports.get(&port),
                Some(Port::Listening(_) | Port::Source(_))
            ) {
                return Ok(port);
            }
        }
        Err(io::ErrorKind::AddrNotAvailable.into())
    }
}

impl Core {
    /// `node` listens on `port` (0 picks one); returns the port.
    pub(crate) fn listen(&mut self, node: NodeId, port: u16) -> io::Result<u16> {
        let ports = &mut self.ports;
        let port = match port {
            0 => ports.ephemeral()?,
            p if matches!(
                ports.ports.get(&p),
                Some(Port::Listening(_) | Port::Source(_))
            ) =>
            {
                return Err(io::ErrorKind::AddrInUse.into());
            }
            p => p,
        };
        ports.next_listener += 1;
        let listener = Listener {
            node,
            id: ports.next_listener,
            half_open: 0,
            ready: VecDeque::new(),
            waiting: false,
        };
        ports.ports.insert(port, Port::Listening(listener));
        Ok(port)
    }

    /// The listener on `port` is dropped: the connections it had not accepted close.
    pub(crate) fn unlisten(&mut self, port: u16) {
        let Some(Port::Listening(listener)) = self.ports.ports.remove(&port) else {
            return;
        };
        self.ports.ports.insert(port, Port::Closed(listener.node));
        for conn in listener.ready {
            self.close(conn, Side::Listener);
        }
    }

    /// The next established connection on `port`, handed to a socket: its id, its
    /// nodes (dialer, listener) and the dialer's source port.
    pub(crate) fn accept(&mut self, port: u16) -> Option<(ConnId, (NodeId, NodeId), u16)> {
        let Some(Port::Listening(listener)) = self.ports.ports.get_mut(&port) else {
            return None;
        };
        while let Some(conn) = listener.ready.pop_front() {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.ends[Side::Listener.index()] = End::Open;
                return Some((conn, c.nodes(), c.source_port));
            }
        }
        None
    }

    /// The listener waits: [`Wake::Accept`] when a connection is ready.
    pub(crate) fn wait_accept(&mut self, port: u16) {
        if let Some(Port::Listening(listener)) = self.ports.ports.get_mut(&port) {
            listener.waiting = true;
        }
    }

    /// The node that uses `port`: listens there, did, or dials from it.
    pub(crate) fn owner(&self, port: u16) -> Option<NodeId> {
        self.ports.ports.get(&port).map(|p| match p {
            Port::Listening(l) => l.node,
            Port::Source(node) | Port::Closed(node) => *node,
        })
    }

    pub(crate) fn conn(&self, conn: ConnId) -> Option<&Conn> {
        self.conns.get(&conn)
    }

    /// `node` connects to `port`: the SYN leaves now. A port nobody ever listened on
    /// is refused by the dialer's own node, after a local round trip.
    pub(crate) fn connect(&mut self, node: NodeId, port: u16) -> io::Result<ConnId> {
        let listener = self.owner(port).unwrap_or(node);
        let source_port = self.ports.ephemeral()?;
        self.ports.ports.insert(source_port, Port::Source(node));
        self.next_conn += 1;
        let id = ConnId(self.next_conn);
        let params = |src: NodeId, dst: NodeId| FlowParams {
            src,
            dst,
            latency: self.latency(src, dst),
            back_latency: self.latency(dst, src),
            window: self.params.window,
            send_buffer: self.params.send_buffer,
        };
        let now = self.clock;
        let flows = [
            Flow::new(now, params(node, listener)),
            Flow::new(now, params(listener, node)),
        ];
        let conn = Conn {
            dialer: node,
            listener,
            source_port,
            port,
            listener_id: None,
            state: ConnectState::Pending,
            ends: [End::Pending, End::Pending],
            flows,
        };
        self.conns.insert(id, conn);
        self.send(id, Packet::Syn);
        Ok(id)
    }

    /// How the dialer's attempt stands; once established, the dialer's end is handed
    /// to its socket.
    pub(crate) fn connect_state(&mut self, conn: ConnId) -> ConnectState {
        let Some(c) = self.conns.get_mut(&conn) else {
            return ConnectState::Refused;
        };
        if c.state == ConnectState::Established {
            c.ends[Side::Dialer.index()] = End::Open;
        }
        c.state
    }

    /// The dialer gave up (its connect future was dropped before it took the socket).
    pub(crate) fn abandon(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match c.state {
            // The SYN-ACK, when it comes, is answered with an abort.
            ConnectState::Pending => c.ends[Side::Dialer.index()] = End::Closed,
            ConnectState::Established => self.close(conn, Side::Dialer),
            ConnectState::Refused => self.remove(conn),
        }
    }

    /// The socket of `side` was dropped: its writes end with a FIN after the bytes it
    /// handed over; its reads end, and the peer's writer hears so a latency later.
    pub(crate) fn close(&mut self, conn: ConnId, side: Side) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.ends[side.index()] == End::Closed {
            return;
        }
        c.ends[side.index()] = End::Closed;
        let sends = FlowId {
            conn,
            dir: side.sends(),
        };
        let reads = FlowId {
            conn,
            dir: side.sends().reverse(),
        };
        let flow = &mut c.flows[reads.dir.index()];
        flow.reader_gone = true;
        flow.waiting_read = false;
        let established = c.state == ConnectState::Established;
        let both_closed = c.ends.iter().all(|e| *e == End::Closed);
        self.wakes.push(Wake::Discard(reads));
        if both_closed {
            self.remove(conn);
            return;
        }
        if established {
            self.shutdown(sends);
            self.send(conn, Packet::Reset(reads.dir));
        }
    }

    /// Forgets a connection and frees its port.
    fn remove(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        for flow in &c.flows {
            let arrived = flow.arrived(self.clock);
            self.nodes[flow.dst.index()].received_before += arrived;
        }
        if matches!(self.ports.ports.get(&c.source_port), Some(Port::Source(_))) {
            self.ports.ports.remove(&c.source_port);
        }
        for dir in [Dir::Forward, Dir::Backward] {
            let id = FlowId { conn, dir };
            if self.active.remove(&id) {
                self.rates_stale = true;
            }
            self.wakes.push(Wake::Discard(id));
        }
    }

    /// Sends a control packet now; a cut holds it until it heals.
    pub(super) fn send(&mut self, conn: ConnId, packet: Packet) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let (from, to) = c.path(packet.dir());
        if self.is_cut(from, to) {
            self.parked.push((conn, packet));
        } else {
            let at = self.clock + self.latency(from, to);
            self.queue.push(at, Event::Packet { conn, packet });
        }
    }

    pub(super) fn on_packet(&mut self, conn: ConnId, packet: Packet) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let (from, to) = c.path(packet.dir());
        if self.is_cut(from, to) {
            self.parked.push((conn, packet));
            return;
        }
        match packet {
            Packet::Syn => self.on_syn(conn),
            Packet::SynAck => self.on_syn_ack(conn),
            Packet::Ack => self.on_ack(conn),
            Packet::Rst => self.on_rst(conn),
            Packet::Abort => self.on_abort(conn),
            Packet::Reset(dir) => self.on_reset(FlowId { conn, dir }),
        }
    }

    /// The SYN reaches the listener's node: answered if a listener with room is there.
    fn on_syn(&mut self, conn: ConnId) {
        let backlog = self.params.backlog;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let answer = match self.ports.ports.get_mut(&c.port) {
            Some(Port::Listening(l))
                if l.node == c.listener && l.half_open + l.ready.len() < backlog =>
            {
                l.half_open += 1;
                c.listener_id = Some(l.id);
                Packet::SynAck
            }
            _ => Packet::Rst,
        };
        self.send(conn, answer);
    }

    /// The SYN-ACK reaches the dialer: it may send, and its ACK leaves.
    fn on_syn_ack(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.ends[Side::Dialer.index()] == End::Closed {
            self.send(conn, Packet::Abort);
            return;
        }
        c.state = ConnectState::Established;
        for flow in &mut c.flows {
            flow.open = true;
        }
        self.wakes.push(Wake::Connect(conn));
        self.send(conn, Packet::Ack);
    }

    /// The ACK reaches the listener: the connection is ready to accept, or closes if
    /// its listener is gone.
    fn on_ack(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        match self.ports.ports.get_mut(&c.port) {
            Some(Port::Listening(l)) if Some(l.id) == c.listener_id => {
                l.half_open -= 1;
                l.ready.push_back(conn);
                if std::mem::take(&mut l.waiting) {
                    self.wakes.push(Wake::Accept(c.port));
                }
            }
            _ => self.close(conn, Side::Listener),
        }
    }

    /// The reset reaches the dialer: refused.
    fn on_rst(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.state = ConnectState::Refused;
        if c.ends[Side::Dialer.index()] == End::Closed {
            self.remove(conn);
        } else {
            self.wakes.push(Wake::Connect(conn));
        }
    }

    /// The dialer's abort reaches the listener: its half-open slot is free.
    fn on_abort(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get(&conn)
            && let Some(Port::Listening(l)) = self.ports.ports.get_mut(&c.port)
            && Some(l.id) == c.listener_id
        {
            l.half_open -= 1;
        }
        self.remove(conn);
    }

    /// The writer of `flow` hears that its reader is gone.
    fn on_reset(&mut self, id: FlowId) {
        let now = self.clock;
        if let Some(flow) = self.flow_mut(id) {
            flow.on_reset(now);
            self.refresh(id);
        }
    }
}
