//! The multiplexer's fuzzing entry points; see [`crate::fuzzing`].

use std::task::Poll;
use std::time::Duration;

use tokio::io::ReadBuf;
use tokio::time::Instant;

use super::buffers::OutQueue;
use super::priority::Priority;
use super::reader::FrameReader;
use super::session::Session;
use super::{Mode, MuxConfig};
use crate::fuzzing::Input;

/// Streams a fuzzed session may hold: small, so the state machine reaches its limits.
const FUZZ_MAX_STREAMS: usize = 8;

/// Bytes the fuzzed side may queue for the socket before the harness drains them.
const TRANSMIT_BUDGET: usize = 64 * 1024;

fn fuzz_mux_config() -> MuxConfig {
    MuxConfig {
        max_streams: FUZZ_MAX_STREAMS,
        max_frame_size: 1024,
        send_buffer: 8 * 1024,
        rtt_probe_interval: Duration::from_secs(1),
        ..MuxConfig::default()
    }
}

/// The multiplexer's frame decoder: `data` is the whole byte stream a server session
/// reads from the remote, fed in pieces whose sizes the first byte chooses. A protocol
/// error ends the session as the connection task would.
pub fn mux_frames(data: &[u8]) {
    let mut input = Input { data };
    let piece = usize::from(input.byte()).max(1);
    let now = Instant::now();
    let mut session = Session::new(Mode::Server, fuzz_mux_config(), now);
    let mut reader = FrameReader::default();
    let mut out = OutQueue::default();
    while !input.is_empty() {
        let chunk = input.take(piece);
        if let Err(e) = reader.feed(&mut session, chunk, now) {
            session.on_protocol_error(e, now);
            break;
        }
        session.poll_transmit(&mut out, TRANSMIT_BUDGET);
        out = OutQueue::default();
    }
    session.on_eof();
    session.poll_transmit(&mut out, TRANSMIT_BUDGET);
}

/// The multiplexer's session state machine driven by a sequence of operations: frames
/// from the remote, local opens, accepts, reads, writes, half-closes, resets, handle
/// drops, time passing, transmissions, EOF and close, in the order `data` gives.
pub fn mux_session(data: &[u8]) {
    let mut input = Input { data };
    let mode = if input.byte() & 1 == 0 {
        Mode::Client
    } else {
        Mode::Server
    };
    let mut now = Instant::now();
    let mut session = Session::new(mode, fuzz_mux_config(), now);
    let mut reader = FrameReader::default();
    let mut out = OutQueue::default();
    let mut ids: Vec<u32> = Vec::new();
    let waker = futures::task::noop_waker();
    let mut read_space = [0u8; 2048];
    let write_data = [0xA5u8; 4096];
    let mut broken = false;
    while !input.is_empty() {
        let op = input.byte();
        let pick = |input: &mut Input<'_>, ids: &[u32]| -> Option<u32> {
            let i = usize::from(input.byte());
            (!ids.is_empty()).then(|| ids[i % ids.len()])
        };
        match op % 12 {
            0 => {
                let len = usize::from(input.u16());
                let frames = input.take(len);
                if !broken && let Err(e) = reader.feed(&mut session, frames, now) {
                    session.on_protocol_error(e, now);
                    broken = true;
                }
            }
            1 => {
                // The op byte's high part picks the class (so urgent batches are fuzzed).
                let priority = Priority::ALL[usize::from(op / 12) % Priority::ALL.len()];
                if let Ok(id) = session.open_stream(now, priority) {
                    ids.push(id);
                }
            }
            2 => {
                if let Poll::Ready(Some(id)) = session.poll_accept(&waker) {
                    ids.push(id);
                }
            }
            3 => {
                if let Some(id) = pick(&mut input, &ids) {
                    let n = usize::from(input.u16()) % read_space.len() + 1;
                    let mut buf = ReadBuf::new(&mut read_space[..n]);
                    let _ = session.poll_read(id, &waker, &mut buf, || now);
                }
            }
            4 => {
                if let Some(id) = pick(&mut input, &ids) {
                    let n = usize::from(input.u16()) % write_data.len();
                    let _ = session.poll_write(id, &waker, &write_data[..n]);
                }
            }
            5 => {
                if let Some(id) = pick(&mut input, &ids) {
                    let _ = session.shutdown(id);
                }
            }
            6 => {
                if let Some(id) = pick(&mut input, &ids) {
                    session.reset(id);
                }
            }
            7 => {
                if let Some(id) = pick(&mut input, &ids) {
                    session.drop_handle(id);
                    ids.retain(|&other| other != id);
                }
            }
            8 => {
                now += Duration::from_millis(u64::from(input.byte()) * 50);
                session.handle_timeout(now);
            }
            9 => {
                session.poll_transmit(&mut out, TRANSMIT_BUDGET);
                out = OutQueue::default();
            }
            10 => session.on_eof(),
            _ => session.close(now),
        }
        session.to_wake.clear();
    }
    for id in ids {
        session.drop_handle(id);
    }
    session.poll_transmit(&mut out, TRANSMIT_BUDGET);
}
