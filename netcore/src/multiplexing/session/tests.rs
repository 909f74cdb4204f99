//! The core fed exact frames and instants.

use std::io;
use std::sync::atomic::Ordering;
use std::task::Waker;
use std::time::Duration;

use futures::FutureExt;
use tokio::io::ReadBuf;
use tokio::time::Instant;

use super::*;
use crate::multiplexing::buffers::{OutQueue, SPARE_CHECK};
use crate::multiplexing::error::ProtocolError;
use crate::multiplexing::frame::HEADER_LEN;
use crate::multiplexing::reader::FrameReader;

const KIB: u32 = 1024;

pub(super) fn hdr(ty: FrameType, fl: u16, id: u32, len: u32) -> Vec<u8> {
    let mut v = Vec::new();
    Header::new(ty, fl, id, len).encode(&mut v);
    v
}

pub(super) fn waker() -> Waker {
    futures::task::noop_waker()
}

/// A session whose initial RTT probe has been taken off the wire.
pub(super) fn session(mode: Mode, config: MuxConfig, now: Instant) -> Session {
    let mut s = Session::new(mode, config, now);
    let mut out = OutQueue::default();
    s.poll_transmit(&mut out, usize::MAX);
    assert_eq!(out.take_all(), hdr(FrameType::Ping, flags::SYN, 0, 1));
    s
}

pub(super) fn transmit(s: &mut Session) -> Vec<u8> {
    let mut out = OutQueue::default();
    s.poll_transmit(&mut out, usize::MAX);
    out.take_all()
}

pub(super) fn feed(s: &mut Session, wire: &[u8], now: Instant) -> Result<(), ProtocolError> {
    FrameReader::default().feed(s, wire, now)
}

pub(super) fn read_n(s: &mut Session, id: u32, n: usize, now: Instant) -> Vec<u8> {
    let mut storage = vec![0u8; n];
    let mut rb = ReadBuf::new(&mut storage);
    match s.poll_read(id, &waker(), &mut rb, || now) {
        Poll::Ready(Ok(())) => rb.filled().to_vec(),
        other => panic!("read gave {other:?}"),
    }
}

pub(super) fn write(s: &mut Session, id: u32, data: &[u8]) -> usize {
    match s.poll_write(id, &waker(), data) {
        Poll::Ready(Ok(n)) => n,
        other => panic!("write gave {other:?}"),
    }
}

#[test]
fn syn_rides_on_the_first_data_frame() {
    let now = Instant::now();
    let mut s = session(Mode::Client, MuxConfig::default(), now);
    let id = s.open_stream(now, Priority::default()).unwrap();
    assert_eq!(id, 1, "client streams are odd, starting at 1");
    assert_eq!(write(&mut s, id, b"hi"), 2);
    let mut expected = hdr(FrameType::Data, flags::SYN, 1, 2);
    expected.extend_from_slice(b"hi");
    assert_eq!(transmit(&mut s), expected);
}

#[test]
fn a_stream_opened_without_data_sends_syn_on_a_window_update() {
    let now = Instant::now();
    let mut s = session(Mode::Server, MuxConfig::default(), now);
    assert_eq!(
        s.open_stream(now, Priority::default()).unwrap(),
        2,
        "server streams are even"
    );
    assert_eq!(
        transmit(&mut s),
        hdr(FrameType::WindowUpdate, flags::SYN, 2, 0)
    );
}

#[test]
fn a_larger_initial_window_is_announced_with_the_syn() {
    let now = Instant::now();
    let config = MuxConfig {
        initial_window: 1024 * KIB,
        ..MuxConfig::default()
    };
    let mut s = session(Mode::Client, config, now);
    let id = s.open_stream(now, Priority::default()).unwrap();
    write(&mut s, id, b"x");
    let mut expected = hdr(FrameType::WindowUpdate, flags::SYN, 1, 768 * KIB);
    expected.extend(hdr(FrameType::Data, 0, 1, 1));
    expected.push(b'x');
    assert_eq!(transmit(&mut s), expected);
}

#[test]
fn inbound_syn_is_accepted_its_data_readable_and_the_ack_rides_on_the_first_reply() {
    let now = Instant::now();
    let mut s = session(Mode::Server, MuxConfig::default(), now);
    let mut wire = hdr(FrameType::Data, flags::SYN, 1, 3);
    wire.extend_from_slice(b"abc");
    feed(&mut s, &wire, now).unwrap();
    assert_eq!(s.poll_accept(&waker()), Poll::Ready(Some(1)));
    assert_eq!(read_n(&mut s, 1, 10, now), b"abc");
    assert!(transmit(&mut s).is_empty(), "no frame for the ACK alone");
    write(&mut s, 1, b"re");
    let mut expected = hdr(FrameType::Data, flags::ACK, 1, 2);
    expected.extend_from_slice(b"re");
    assert_eq!(transmit(&mut s), expected);
}

#[test]
fn an_inbound_stream_reset_before_replying_carries_its_ack_on_the_rst() {
    let now = Instant::now();
    let mut s = session(Mode::Server, MuxConfig::default(), now);
    feed(&mut s, &hdr(FrameType::Data, flags::SYN, 1, 0), now).unwrap();
    assert_eq!(s.poll_accept(&waker()), Poll::Ready(Some(1)));
    s.reset(1);
    assert_eq!(
        transmit(&mut s),
        hdr(FrameType::WindowUpdate, flags::RST | flags::ACK, 1, 0)
    );
}

#[test]
fn a_larger_initial_window_is_announced_with_the_ack_at_once() {
    let now = Instant::now();
    let config = MuxConfig {
        initial_window: 512 * KIB,
        ..MuxConfig::default()
    };
    let mut s = session(Mode::Server, config, now);
    feed(&mut s, &hdr(FrameType::Data, flags::SYN, 1, 0), now).unwrap();
    assert_eq!(
        transmit(&mut s),
        hdr(FrameType::WindowUpdate, flags::ACK, 1, 256 * KIB)
    );
}

#[test]
fn fin_follows_the_last_data_in_a_frame_of_its_own_and_the_reader_then_sees_eof() {
    let now = Instant::now();
    let mut s = session(Mode::Client, MuxConfig::default(), now);
    let id = s.open_stream(now, Priority::default()).unwrap();
    write(&mut s, id, b"bye");
    s.shutdown(id).unwrap();
    let mut expected = hdr(FrameType::Data, flags::SYN, 1, 3);
    expected.extend_from_slice(b"bye");
    expected.extend(hdr(FrameType::Data, flags::FIN, 1, 0));
    assert_eq!(
        transmit(&mut s),
        expected,
        "one batch: the data, then FIN alone"
    );

    feed(
        &mut s,
        &hdr(FrameType::Data, flags::ACK | flags::FIN, 1, 0),
        now,
    )
    .unwrap();
    assert_eq!(
        read_n(&mut s, id, 10, now),
        b"",
        "EOF after the remote's FIN"
    );
}

#[test]
fn dropping_an_open_stream_resets_it() {
    let now = Instant::now();
    let mut s = session(Mode::Client, MuxConfig::default(), now);
    let id = s.open_stream(now, Priority::default()).unwrap();
    transmit(&mut s);
    s.drop_handle(id);
    assert_eq!(
        transmit(&mut s),
        hdr(FrameType::WindowUpdate, flags::RST, 1, 0)
    );
    assert!(
        s.stream(id).is_none(),
        "a reset stream without handle is forgotten"
    );
}

#[test]
fn a_received_rst_fails_reads_and_writes_with_reset() {
    let now = Instant::now();
    let mut s = session(Mode::Client, MuxConfig::default(), now);
    let id = s.open_stream(now, Priority::default()).unwrap();
    feed(&mut s, &hdr(FrameType::WindowUpdate, flags::RST, 1, 0), now).unwrap();
    let mut storage = [0u8; 4];
    let mut rb = ReadBuf::new(&mut storage);
    let Poll::Ready(Err(e)) = s.poll_read(id, &waker(), &mut rb, || now) else {
        panic!("read after RST must fail");
    };
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    let Poll::Ready(Err(e)) = s.poll_write(id, &waker(), b"x") else {
        panic!("write after RST must fail");
    };
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
}

#[test]
fn window_update_is_sent_once_half_the_window_was_read_not_per_read() {
    let now = Instant::now();
    let mut s = session(Mode::Server, MuxConfig::default(), now);
    let mut wire = hdr(FrameType::Data, flags::SYN, 1, 256 * KIB);
    wire.extend(vec![7u8; (256 * KIB) as usize]);
    feed(&mut s, &wire, now).unwrap();
    assert!(
        transmit(&mut s).is_empty(),
        "the ACK waits for the stream's first frame"
    );
    let later = now + Duration::from_secs(1); // no RTT known: no growth either way
    read_n(&mut s, 1, (128 * KIB - 1) as usize, later);
    assert!(
        transmit(&mut s).is_empty(),
        "under half a window read: no update"
    );
    read_n(&mut s, 1, 1, later);
    assert_eq!(
        transmit(&mut s),
        hdr(FrameType::WindowUpdate, flags::ACK, 1, 128 * KIB)
    );
}

#[test]
fn window_stays_when_consumed_slower_than_two_rtts() {
    let t0 = Instant::now();
    let mut s = session(Mode::Server, MuxConfig::default(), t0);
    let t1 = t0 + Duration::from_millis(10);
    feed(&mut s, &hdr(FrameType::Ping, flags::ACK, 0, 1), t1).unwrap();
    let mut wire = hdr(FrameType::Data, flags::SYN, 1, 128 * KIB);
    wire.extend(vec![0u8; (128 * KIB) as usize]);
    feed(&mut s, &wire, t1).unwrap();
    transmit(&mut s);
    read_n(
        &mut s,
        1,
        (128 * KIB) as usize,
        t1 + Duration::from_millis(30),
    );
    assert_eq!(
        transmit(&mut s),
        hdr(FrameType::WindowUpdate, flags::ACK, 1, 128 * KIB)
    );
}

#[test]
fn window_growth_stops_at_the_connection_cap() {
    let t0 = Instant::now();
    let config = MuxConfig {
        max_connection_window: (256 * KIB) as usize, // room for one spec window only
        ..MuxConfig::default()
    };
    let mut s = session(Mode::Server, config, t0);
    feed(&mut s, &hdr(FrameType::Ping, flags::ACK, 0, 1), t0).unwrap();
    let mut wire = hdr(FrameType::Data, flags::SYN, 1, 128 * KIB);
    wire.extend(vec![0u8; (128 * KIB) as usize]);
    feed(&mut s, &wire, t0).unwrap();
    transmit(&mut s);
    read_n(&mut s, 1, (128 * KIB) as usize, t0);
    assert_eq!(
        transmit(&mut s),
        hdr(FrameType::WindowUpdate, flags::ACK, 1, 128 * KIB)
    );
}

#[test]
fn data_past_the_window_is_a_protocol_error_before_the_payload_is_read() {
    let now = Instant::now();
    let mut s = session(Mode::Server, MuxConfig::default(), now);
    // Only the header: the session refuses it before any payload arrives.
    let err = feed(
        &mut s,
        &hdr(FrameType::Data, flags::SYN, 1, 256 * KIB + 1),
        now,
    );
    assert!(matches!(err, Err(ProtocolError::WindowExceeded { .. })));

    let mut s = session(Mode::Server, MuxConfig::default(), now);
    let mut wire = hdr(FrameType::Data, flags::SYN, 1, 256 * KIB);
    wire.extend(vec![0u8; (256 * KIB) as usize]);
    wire.extend(hdr(FrameType::Data, 0, 1, 1));
    assert_eq!(
        feed(&mut s, &wire, now),
        Err(ProtocolError::WindowExceeded {
            stream: 1,
            len: 1,
            credit: 0
        })
    );
}

#[test]
fn a_protocol_error_sends_go_away_with_the_protocol_error_code() {
    let now = Instant::now();
    let mut s = session(Mode::Server, MuxConfig::default(), now);
    let mut wire = hdr(FrameType::Data, 0, 1, 0);
    wire[0] = 1; // bad version
    let err = feed(&mut s, &wire, now).unwrap_err();
    assert_eq!(err, ProtocolError::BadVersion(1));
    s.on_protocol_error(err, now);
    assert_eq!(
        transmit(&mut s),
        hdr(FrameType::GoAway, 0, 0, go_away::PROTOCOL_ERROR)
    );
    assert!(s.go_away_sent());
    assert_eq!(s.stats().protocol_errors.load(Ordering::Relaxed), 1);
}

#[test]
fn a_syn_with_our_parity_is_a_protocol_error() {
    let now = Instant::now();
    let mut s = session(Mode::Client, MuxConfig::default(), now);
    assert_eq!(
        feed(&mut s, &hdr(FrameType::WindowUpdate, flags::SYN, 3, 0), now),
        Err(ProtocolError::InvalidStreamId(3))
    );
}

#[test]
fn a_syn_past_the_stream_cap_gets_rst_and_is_counted() {
    let now = Instant::now();
    let config = MuxConfig {
        max_streams: 1,
        ..MuxConfig::default()
    };
    let mut s = session(Mode::Server, config, now);
    feed(&mut s, &hdr(FrameType::WindowUpdate, flags::SYN, 1, 0), now).unwrap();
    // Nothing counted yet: an exporter waiting for news would sleep.
    assert!(s.stats().changed().now_or_never().is_none());
    let mut wire = hdr(FrameType::Data, flags::SYN, 3, 2);
    wire.extend_from_slice(b"zz");
    feed(&mut s, &wire, now).unwrap();
    let mut expected = hdr(FrameType::WindowUpdate, flags::RST, 3, 0);
    expected.extend(hdr(FrameType::WindowUpdate, flags::ACK, 1, 0));
    assert_eq!(transmit(&mut s), expected);
    assert_eq!(s.stats().streams_refused.load(Ordering::Relaxed), 1);
    // Counted while nobody waited: the next wait ends at once, and only that one.
    assert!(s.stats().changed().now_or_never().is_some());
    assert!(s.stats().changed().now_or_never().is_none());
    assert_eq!(s.poll_accept(&waker()), Poll::Ready(Some(1)));
    assert_eq!(s.poll_accept(&waker()), Poll::Pending);
}

#[test]
fn a_ping_is_answered_with_the_same_opaque_value() {
    let now = Instant::now();
    let mut s = session(Mode::Server, MuxConfig::default(), now);
    feed(
        &mut s,
        &hdr(FrameType::Ping, flags::SYN, 0, 0xdead_beef),
        now,
    )
    .unwrap();
    assert_eq!(
        transmit(&mut s),
        hdr(FrameType::Ping, flags::ACK, 0, 0xdead_beef)
    );
}

#[test]
fn the_next_rtt_probe_waits_for_the_interval() {
    let t0 = Instant::now();
    let mut s = session(Mode::Client, MuxConfig::default(), t0);
    assert_eq!(s.poll_timeout(), None, "no second probe while one is out");
    feed(&mut s, &hdr(FrameType::Ping, flags::ACK, 0, 1), t0).unwrap();
    let due = t0 + MuxConfig::default().rtt_probe_interval;
    assert_eq!(s.poll_timeout(), Some(due));
    s.handle_timeout(due);
    assert_eq!(transmit(&mut s), hdr(FrameType::Ping, flags::SYN, 0, 2));
}

#[test]
fn ready_streams_take_turns_one_capped_frame_each() {
    let now = Instant::now();
    let config = MuxConfig {
        max_frame_size: 16 * KIB,
        ..MuxConfig::default()
    };
    let mut s = session(Mode::Client, config, now);
    let a = s.open_stream(now, Priority::default()).unwrap();
    let b = s.open_stream(now, Priority::default()).unwrap();
    write(&mut s, a, &vec![1u8; (40 * KIB) as usize]);
    write(&mut s, b, &[2u8; 100]);
    let wire = transmit(&mut s);
    let mut order = Vec::new();
    let mut rest = &wire[..];
    while let Some(h) = Header::decode(rest).unwrap() {
        let len = if h.ty == FrameType::Data {
            h.length as usize
        } else {
            0
        };
        order.push((h.stream_id, len));
        rest = &rest[HEADER_LEN + len..];
    }
    let k16 = (16 * KIB) as usize;
    assert_eq!(
        order,
        [(a, k16), (b, 100), (a, k16), (a, (8 * KIB) as usize)],
        "stream b's small message goes after one frame of a, not after all of it"
    );
}

#[test]
fn writes_wait_when_the_send_window_is_used_up() {
    let now = Instant::now();
    let mut s = session(Mode::Client, MuxConfig::default(), now);
    let id = s.open_stream(now, Priority::default()).unwrap();
    let big = vec![0u8; (300 * KIB) as usize];
    assert_eq!(write(&mut s, id, &big), (256 * KIB) as usize);
    assert!(s.poll_write(id, &waker(), &big).is_pending());
    transmit(&mut s);
    feed(
        &mut s,
        &hdr(FrameType::WindowUpdate, flags::ACK, 1, 10),
        now,
    )
    .unwrap();
    assert_eq!(write(&mut s, id, &big), 10);
}

#[test]
fn frames_of_forgotten_streams_are_skipped() {
    let now = Instant::now();
    let mut s = session(Mode::Server, MuxConfig::default(), now);
    let mut wire = hdr(FrameType::Data, 0, 9, 5);
    wire.extend_from_slice(b"junk!");
    wire.extend(hdr(FrameType::Ping, flags::SYN, 0, 4));
    let mut reader = FrameReader::default();
    reader.feed(&mut s, &wire, now).unwrap();
    assert_eq!(reader.buffered(), 0);
    assert_eq!(transmit(&mut s), hdr(FrameType::Ping, flags::ACK, 0, 4));
}

#[test]
fn close_sends_buffered_data_then_go_away() {
    let now = Instant::now();
    let mut s = session(Mode::Client, MuxConfig::default(), now);
    let id = s.open_stream(now, Priority::default()).unwrap();
    write(&mut s, id, b"z");
    s.close(now);
    let mut expected = hdr(FrameType::Data, flags::SYN, 1, 1);
    expected.push(b'z');
    expected.extend(hdr(FrameType::GoAway, 0, 0, go_away::NORMAL));
    assert_eq!(transmit(&mut s), expected);
    assert!(s.open_stream(now, Priority::default()).is_err());
}

#[test]
fn data_before_a_fin_stays_readable_after_a_later_rst() {
    let now = Instant::now();
    let mut s = session(Mode::Server, MuxConfig::default(), now);
    let mut wire = hdr(FrameType::Data, flags::SYN | flags::FIN, 1, 4);
    wire.extend_from_slice(b"done");
    wire.extend(hdr(FrameType::WindowUpdate, flags::RST, 1, 0));
    feed(&mut s, &wire, now).unwrap();
    assert_eq!(read_n(&mut s, 1, 10, now), b"done");
    assert_eq!(read_n(&mut s, 1, 10, now), b"", "then EOF, not an error");
}

#[test]
fn a_syn_window_update_adds_its_credit_to_the_spec_window_once() {
    let now = Instant::now();
    let config = MuxConfig {
        send_buffer: (1024 * KIB) as usize,
        ..MuxConfig::default()
    };
    let mut s = session(Mode::Server, config, now);
    feed(
        &mut s,
        &hdr(FrameType::WindowUpdate, flags::SYN, 1, 1000),
        now,
    )
    .unwrap();
    let big = vec![0u8; (512 * KIB) as usize];
    assert_eq!(write(&mut s, 1, &big), (256 * KIB + 1000) as usize);
}

#[test]
fn a_close_is_bounded_by_the_close_timeout() {
    let now = Instant::now();
    let config = MuxConfig {
        close_timeout: Duration::from_secs(5),
        ..MuxConfig::default()
    };
    let mut s = session(Mode::Client, config, now);
    s.close(now);
    let deadline = now + Duration::from_secs(5);
    assert_eq!(
        s.poll_timeout(),
        Some(deadline),
        "the ping no longer counts"
    );
    s.handle_timeout(deadline - Duration::from_millis(1));
    assert!(!s.is_finished());
    // A second close does not move the deadline.
    s.close(now + Duration::from_secs(1));
    assert_eq!(s.poll_timeout(), Some(deadline));
    s.handle_timeout(deadline);
    assert!(s.is_finished());
    assert!(matches!(
        s.poll_closed(&waker()),
        Poll::Ready(Err(MuxError::CloseTimedOut))
    ));
}

/// A data frame on stream `id` with `payload`, and `flags`.
fn data(id: u32, fl: u16, payload: &[u8]) -> Vec<u8> {
    let mut wire = hdr(FrameType::Data, fl, id, payload.len() as u32);
    wire.extend_from_slice(payload);
    wire
}

#[test]
fn a_read_payload_buffer_carries_the_next_stream_payload_and_goes_once_unused() {
    let t0 = Instant::now();
    let mut s = session(Mode::Server, MuxConfig::default(), t0);
    let large = 8 * KIB as usize;
    let first = vec![1u8; large];
    let second: Vec<u8> = (0..large).map(|i| i as u8).collect();
    feed(&mut s, &data(1, flags::SYN, &first), t0).unwrap();
    assert_eq!(s.poll_accept(&waker()), Poll::Ready(Some(1)));
    // Read in two parts: the buffer is kept only once read to its end.
    assert_eq!(read_n(&mut s, 1, large / 2, t0), first[..large / 2]);
    assert!(s.spare_payloads.kept().is_empty());
    assert_eq!(read_n(&mut s, 1, large, t0), first[large / 2..]);
    assert_eq!(s.spare_payloads.kept().len(), 1);
    let kept = s.spare_payloads.kept()[0].as_ptr();
    // Another stream's payload goes into it, and reads as itself.
    feed(&mut s, &data(3, flags::SYN, &second), t0).unwrap();
    assert_eq!(s.poll_accept(&waker()), Poll::Ready(Some(3)));
    assert!(s.spare_payloads.kept().is_empty(), "taken");
    assert_eq!(read_n(&mut s, 3, large, t0), second);
    assert_eq!(s.spare_payloads.kept()[0].as_ptr(), kept, "back once read");
    // A check is due SPARE_CHECK after the first large payload; this one finds a reuse
    // and keeps the buffer, the next finds none and drops it.
    let check = t0 + SPARE_CHECK;
    // (The session's first RTT probe is never answered here: no ping timer.)
    assert_eq!(s.poll_timeout(), Some(check));
    s.handle_timeout(check);
    assert_eq!(s.spare_payloads.kept().len(), 1);
    assert_eq!(s.poll_timeout(), Some(check + SPARE_CHECK));
    s.handle_timeout(check + SPARE_CHECK);
    assert!(s.spare_payloads.kept().is_empty());
}

#[test]
fn kept_payload_buffers_are_checked_while_a_ping_is_unanswered() {
    let t0 = Instant::now();
    let mut s = session(Mode::Server, MuxConfig::default(), t0);
    // The first RTT probe is out and never answered: no ping timer.
    assert_eq!(s.poll_timeout(), None);
    feed(&mut s, &data(1, flags::SYN, &[5u8; 8 * 1024]), t0).unwrap();
    assert_eq!(s.poll_accept(&waker()), Poll::Ready(Some(1)));
    read_n(&mut s, 1, 8 * 1024, t0);
    assert_eq!(s.spare_payloads.kept().len(), 1);
    assert_eq!(s.poll_timeout(), Some(t0 + SPARE_CHECK));
    s.handle_timeout(t0 + SPARE_CHECK);
    assert!(s.spare_payloads.kept().is_empty(), "none reused: dropped");
    assert_eq!(s.poll_timeout(), None);
}
