//! Reads a recorded connection as `docs/WIRE.md` specifies it, independently of the
//! code that wrote it: the prologue and Noise IK messages (replayed with `snow` from
//! the test's keys), the encrypted frames, the handshake message, the multiplexer's
//! frames, the negotiation on each substream and the messages of RPC and DirectSend.
//! Returns the annotated transcript that `docs/WIRE.md` shows.

use std::collections::HashMap;
use std::fmt::Write as _;

use proto::Message as _;
use snow::{HandshakeState, TransportState};

use super::record::{Side, Step};

/// The test's keys: what an observer holding every secret knows.
pub(crate) struct Keys {
    pub(crate) protocol: &'static str,
    /// The dialer's and the listener's Noise static secrets.
    pub(crate) dialer_static: [u8; 32],
    pub(crate) listener_static: [u8; 32],
    /// The ephemeral secrets of their first handshake.
    pub(crate) dialer_ephemeral: [u8; 32],
    pub(crate) listener_ephemeral: [u8; 32],
    /// Protocol ids that are RPC (the others are DirectSend).
    pub(crate) rpc_protocols: Vec<&'static str>,
}

/// One direction of the connection, as a reader of it sees it.
#[derive(Default)]
struct Direction {
    /// Plaintext not yet parsed into whole items.
    plain: Vec<u8>,
    /// The handshake message was read.
    handshake_read: bool,
    /// The multiplexer's negotiation messages read (a header and `/yamux/1.0.0`).
    mux_lines: u8,
}

/// What a substream carries, per direction.
struct Substream {
    /// The side that opened it (sent SYN).
    opener: Option<Side>,
    /// The negotiated protocol.
    protocol: Option<String>,
    /// Bytes of each direction not yet parsed: the opener's, then the other's.
    pending: [Vec<u8>; 2],
    /// Negotiation messages still expected in each direction (header, then proposal
    /// or echo).
    negotiating: [u8; 2],
}

impl Substream {
    fn new() -> Self {
        Self {
            opener: None,
            protocol: None,
            pending: Default::default(),
            negotiating: [2, 2],
        }
    }
}

/// Decodes recorded steps into annotated text.
pub(crate) struct Decoder {
    keys: Keys,
    handshake: Option<(HandshakeState, HandshakeState)>,
    transport: Option<(TransportState, TransportState)>,
    directions: [Direction; 2],
    streams: HashMap<u32, Substream>,
    out: String,
}

fn index(side: Side) -> usize {
    match side {
        Side::Dialer => 0,
        Side::Listener => 1,
    }
}

fn name(side: Side) -> &'static str {
    match side {
        Side::Dialer => "dialer",
        Side::Listener => "listener",
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Dialer => Side::Listener,
        Side::Listener => Side::Dialer,
    }
}

/// Hex in groups a line can hold, each line behind `indent` spaces.
fn hex_lines(bytes: &[u8], indent: usize) -> String {
    let mut s = String::new();
    for chunk in bytes.chunks(32) {
        let _ = writeln!(s, "{:indent$}{}", "", hex::encode(chunk));
    }
    s
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("four bytes"))
}

fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => format!("{s:?}"),
        _ => format!("{} bytes", bytes.len()),
    }
}

impl Decoder {
    /// A decoder for a connection made with `keys`.
    pub(crate) fn new(keys: Keys) -> Self {
        Self {
            keys,
            handshake: None,
            transport: None,
            directions: Default::default(),
            streams: HashMap::new(),
            out: String::new(),
        }
    }

    /// Annotates every step; the text ends with the last step.
    pub(crate) fn decode(mut self, steps: &[Step]) -> String {
        for step in steps {
            let _ = writeln!(self.out, "=== step: {} ===", step.name);
            let mut deferred: &[u8] = &[];
            for (side, bytes) in [
                (Side::Dialer, &step.dialer),
                (Side::Listener, &step.listener),
            ] {
                if bytes.is_empty() {
                    continue;
                }
                let _ = writeln!(
                    self.out,
                    "\n{} -> {}: {} bytes",
                    name(side),
                    name(other(side)),
                    bytes.len()
                );
                let rest = self.wire(side, bytes);
                if !rest.is_empty() {
                    deferred = rest;
                }
            }
            if !deferred.is_empty() {
                // The dialer's frames behind its first flight: readable once message 2
                // gave the session keys.
                let _ = writeln!(
                    self.out,
                    "\ndialer -> listener, after its first flight: {} bytes",
                    deferred.len()
                );
                let rest = self.wire(Side::Dialer, deferred);
                assert!(rest.is_empty());
            }
            self.out.push('\n');
        }
        self.out
    }

    fn builder(&self) -> snow::Builder<'static> {
        snow::Builder::with_resolver(
            self.keys.protocol.parse().expect("a Noise protocol name"),
            Box::new(snow::resolvers::DefaultResolver),
        )
    }

    /// The bytes one side wrote: the handshake flights, then transport frames. Returns
    /// the dialer's frames that follow its first flight while the keys to read them
    /// are not known yet.
    fn wire<'a>(&mut self, side: Side, mut bytes: &'a [u8]) -> &'a [u8] {
        if self.transport.is_none() {
            bytes = match side {
                Side::Dialer if self.handshake.is_none() => self.first_flight(bytes),
                Side::Dialer => return bytes,
                Side::Listener => self.reply(bytes),
            };
            if self.transport.is_none() {
                return bytes;
            }
        }
        while !bytes.is_empty() {
            let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
            let frame = &bytes[2..2 + len];
            let mut plain = vec![0u8; len];
            let (dialer, listener) = self.transport.as_mut().expect("handshake done");
            let n = match side {
                Side::Dialer => listener.read_message(frame, &mut plain),
                Side::Listener => dialer.read_message(frame, &mut plain),
            }
            .expect("a frame decrypts");
            let _ = writeln!(
                self.out,
                "  noise frame: u16 length {:04x}, {len} bytes of ciphertext, {n} of plaintext:",
                len
            );
            self.plaintext(side, &plain[..n]);
            bytes = &bytes[2 + len..];
        }
        bytes
    }

    /// The dialer's prologue and Noise message 1.
    fn first_flight<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let prologue = &bytes[..64];
        let len = usize::from(u16::from_be_bytes([bytes[64], bytes[65]]));
        let message = &bytes[66..66 + len];
        let mut initiator = self
            .builder()
            .local_private_key(&self.keys.dialer_static)
            .and_then(|b| {
                b.remote_public_key(&prologue[32..])?
                    .prologue(prologue)?
                    .fixed_ephemeral_key_for_testing_only(&self.keys.dialer_ephemeral)
                    .build_initiator()
            })
            .expect("an initiator");
        let mut responder = self
            .builder()
            .local_private_key(&self.keys.listener_static)
            .and_then(|b| {
                b.prologue(prologue)?
                    .fixed_ephemeral_key_for_testing_only(&self.keys.listener_ephemeral)
                    .build_responder()
            })
            .expect("a responder");
        let mut payload = [0u8; 64];
        let n = responder
            .read_message(message, &mut payload)
            .expect("message 1 decrypts with the listener's key");
        // The dialer's own state must write the same bytes: the test holds its keys.
        let mut again = [0u8; 256];
        let m = initiator
            .write_message(&payload[..n], &mut again)
            .expect("the dialer's message 1");
        assert_eq!(
            &again[..m],
            message,
            "message 1 is Noise IK over these keys"
        );
        let timestamp = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
        let _ = write!(
            self.out,
            "  prologue, 64 bytes in clear:\n    dialer peer id (ed25519 public key)\n{}    \
             static key expected of the listener (X25519)\n{}",
            hex_lines(&prologue[..32], 6),
            hex_lines(&prologue[32..], 6),
        );
        let _ = write!(
            self.out,
            "  noise message 1: u16 length {len:04x}, then {len} bytes:\n    e, the dialer's \
             ephemeral key (clear)\n{}    s, the dialer's static key (encrypted, 32 + 16)\n{}    \
             payload: timestamp {timestamp} ms (u64 BE {:016x}, encrypted, 8 + 16)\n{}",
            hex_lines(&message[..32], 6),
            hex_lines(&message[32..80], 6),
            timestamp,
            hex_lines(&message[80..], 6),
        );
        self.handshake = Some((initiator, responder));
        &bytes[66 + len..]
    }

    /// The listener's Noise message 2.
    fn reply<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
        let message = &bytes[2..2 + len];
        let (mut initiator, mut responder) = self.handshake.take().expect("message 1 first");
        let mut again = [0u8; 256];
        let m = responder
            .write_message(&[], &mut again)
            .expect("the listener's message 2");
        assert_eq!(
            &again[..m],
            message,
            "message 2 is Noise IK over these keys"
        );
        let mut payload = [0u8; 64];
        let n = initiator
            .read_message(message, &mut payload)
            .expect("message 2 decrypts with the dialer's keys");
        assert_eq!(n, 0, "message 2 has no payload");
        let _ = write!(
            self.out,
            "  noise message 2: u16 length {len:04x}, then {len} bytes:\n    e, the listener's \
             ephemeral key (clear)\n{}    empty payload's tag (16)\n{}",
            hex_lines(&message[..32], 6),
            hex_lines(&message[32..], 6),
        );
        self.transport = Some((
            initiator.into_transport_mode().expect("transport"),
            responder.into_transport_mode().expect("transport"),
        ));
        &bytes[2 + len..]
    }

    /// Plaintext of one side: the handshake message first, then multiplexer frames.
    fn plaintext(&mut self, side: Side, plain: &[u8]) {
        let dir = &mut self.directions[index(side)];
        dir.plain.extend_from_slice(plain);
        let mut buf = std::mem::take(&mut dir.plain);
        let mut at = 0;
        if !self.directions[index(side)].handshake_read {
            if buf.len() < 4 || buf.len() < 4 + u32_at(&buf, 0) as usize {
                self.directions[index(side)].plain = buf;
                return;
            }
            let len = u32_at(&buf, 0) as usize;
            let msg = proto::handshake::HandshakeMsg::decode(&buf[4..4 + len])
                .expect("a handshake message");
            let _ = write!(
                self.out,
                "    handshake message: u32 length {len:08x}, then {len} bytes of \
                 HandshakeMsg\n{}      chain_id {}, network_id {:?}, client_version {:?}, \
                 supported_protocols {:?}\n",
                hex_lines(&buf[4..4 + len], 6),
                msg.chain_id,
                msg.network_id,
                msg.client_version,
                msg.supported_protocols,
            );
            self.directions[index(side)].handshake_read = true;
            at = 4 + len;
        }
        while self.directions[index(side)].mux_lines < 2 {
            let Some(&len) = buf.get(at) else { break };
            let len = usize::from(len); // both lines are under 128 bytes
            if buf.len() < at + 1 + len {
                break;
            }
            let what = match (self.directions[index(side)].mux_lines, side) {
                (0, _) => "multistream header",
                (_, Side::Dialer) => "multiplexer proposal",
                (_, Side::Listener) => "echo: agreed",
            };
            let _ = writeln!(
                self.out,
                "    {what} {:?}: {}",
                String::from_utf8_lossy(&buf[at + 1..at + len]),
                hex::encode(&buf[at..at + 1 + len])
            );
            self.directions[index(side)].mux_lines += 1;
            at += 1 + len;
        }
        while self.directions[index(side)].mux_lines == 2 && buf.len() - at >= 12 {
            let header = &buf[at..at + 12];
            let (ty, flags, id, len) = (
                header[1],
                u16::from_be_bytes([header[2], header[3]]),
                u32_at(header, 4),
                u32_at(header, 8),
            );
            let payload_len = if ty == 0 { len as usize } else { 0 };
            if buf.len() - at < 12 + payload_len {
                break;
            }
            let _ = writeln!(
                self.out,
                "    mux {} {} stream {id} length {len}: {}",
                ["Data", "WindowUpdate", "Ping", "GoAway"]
                    .get(usize::from(ty))
                    .copied()
                    .unwrap_or("unknown"),
                flag_names(flags),
                hex::encode(header),
            );
            assert_eq!(header[0], 0, "yamux version 0");
            if flags & 1 != 0 && ty <= 1 {
                self.streams.entry(id).or_insert_with(Substream::new).opener = Some(side);
            }
            if payload_len > 0 {
                let payload = buf[at + 12..at + 12 + payload_len].to_vec();
                self.substream(side, id, &payload);
            }
            at += 12 + payload_len;
        }
        buf.drain(..at);
        self.directions[index(side)].plain = buf;
    }

    /// Data of substream `id` from `side`: negotiation, then the protocol's frames.
    fn substream(&mut self, side: Side, id: u32, data: &[u8]) {
        let stream = self.streams.entry(id).or_insert_with(Substream::new);
        let opener = stream.opener.expect("data on an opened stream");
        let dir = usize::from(side != opener);
        stream.pending[dir].extend_from_slice(data);
        let mut lines = String::new();
        while stream.negotiating[dir] > 0 {
            let buf = &stream.pending[dir];
            let Some(&len) = buf.first() else { break };
            let len = usize::from(len); // every line here is under 128 bytes
            if buf.len() < 1 + len {
                break;
            }
            let line = &buf[1..len]; // without the newline
            let what = if stream.negotiating[dir] == 2 {
                "multistream header"
            } else if dir == 0 {
                "proposal"
            } else {
                "echo: agreed"
            };
            let _ = writeln!(
                lines,
                "      {what} {:?}: {}",
                String::from_utf8_lossy(line),
                hex::encode(&buf[..1 + len])
            );
            if stream.negotiating[dir] == 1 && dir == 0 {
                stream.protocol = Some(String::from_utf8_lossy(line).into_owned());
            }
            stream.negotiating[dir] -= 1;
            stream.pending[dir].drain(..1 + len);
        }
        let protocol = stream.protocol.clone().unwrap_or_default();
        let rpc = self.keys.rpc_protocols.contains(&protocol.as_str());
        loop {
            let buf = &stream.pending[dir];
            if stream.negotiating[dir] > 0
                || buf.len() < 4
                || buf.len() < 4 + u32_at(buf, 0) as usize
            {
                break;
            }
            let len = u32_at(buf, 0) as usize;
            let body = &buf[4..4 + len];
            let what = match (rpc, dir) {
                (true, 0) => format!("RPC request {}", text(body)),
                (true, _) => describe_response(body),
                (false, 0) => format!("DirectSend message {}", text(body)),
                (false, _) => {
                    let ack = proto::direct_send::DirectSendAck::decode(body)
                        .expect("an acknowledgement");
                    format!("DirectSendAck delivered {}", ack.delivered)
                }
            };
            let _ = writeln!(
                lines,
                "      {what}: u32 length {len:08x}, body {}",
                hex::encode(body)
            );
            stream.pending[dir].drain(..4 + len);
        }
        self.out.push_str(&lines);
    }
}

fn flag_names(flags: u16) -> String {
    let names: Vec<&str> = [(1, "SYN"), (2, "ACK"), (4, "FIN"), (8, "RST")]
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        "-".to_owned()
    } else {
        names.join("|")
    }
}

fn describe_response(body: &[u8]) -> String {
    use proto::rpc::rpc_response::Result as R;
    let response = proto::rpc::RpcResponse::decode(body).expect("an RpcResponse");
    match response.result {
        Some(R::Ok(data)) => format!("RpcResponse ok {}", text(&data)),
        Some(R::Failure(f)) => format!("RpcResponse failure {:?} {:?}", f.code(), f.message),
        None => "RpcResponse without a result".to_owned(),
    }
}
