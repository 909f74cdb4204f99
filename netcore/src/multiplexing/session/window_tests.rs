//! A stream that keeps up grows at once to the window its connection's path asked for;
//! one that does not stays small.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::tests::{feed, hdr, read_n, session, transmit};
use super::*;

const KIB: u32 = 1024;

/// A server session whose RTT is 10 ms and whose stream 1 grew its window to 2 MiB;
/// returns it, the instant after the growth and the window update that announced it.
fn session_with_a_grown_stream(config: MuxConfig, t0: Instant) -> (Session, Instant, Vec<u8>) {
    let mut s = session(Mode::Server, config, t0);
    // The pong of the initial probe arrives 10 ms later: RTT = 10 ms.
    let t1 = t0 + Duration::from_millis(10);
    feed(&mut s, &hdr(FrameType::Ping, flags::ACK, 0, 1), t1).unwrap();
    assert_eq!(s.rtt(), Some(Duration::from_millis(10)));
    assert_eq!(s.min_rtt(), Some(Duration::from_millis(10)));
    let mut wire = hdr(FrameType::Data, flags::SYN, 1, 128 * KIB);
    wire.extend(vec![0u8; (128 * KIB) as usize]);
    feed(&mut s, &wire, t1).unwrap();
    transmit(&mut s);
    let now = t1 + Duration::from_millis(5);
    read_n(&mut s, 1, (128 * KIB) as usize, now);
    let update = transmit(&mut s);
    (s, now, update)
}

#[test]
fn a_window_grows_eightfold_when_consumed_within_two_rtts() {
    let (s, _, update) = session_with_a_grown_stream(MuxConfig::default(), Instant::now());
    // Half the window read 5 ms after the stream began (< 2 RTT): grow to 2 MiB, so
    // the update gives back the 128 KiB read plus the 1792 KiB of growth.
    assert_eq!(
        update,
        hdr(FrameType::WindowUpdate, flags::ACK, 1, 1920 * KIB)
    );
    assert_eq!(s.stats().window_grows.load(Ordering::Relaxed), 1);
}

/// Opens inbound stream `id` with half the initial window of data, then reads it
/// `after` later; returns the frames the session sends.
fn half_window_read_after(s: &mut Session, id: u32, now: Instant, after: Duration) -> Vec<u8> {
    let mut wire = hdr(FrameType::Data, flags::SYN, id, 128 * KIB);
    wire.extend(vec![0u8; (128 * KIB) as usize]);
    feed(s, &wire, now).unwrap();
    assert!(
        transmit(s).is_empty(),
        "a new stream starts with the initial window"
    );
    read_n(s, id, (128 * KIB) as usize, now + after);
    transmit(s)
}

#[test]
fn a_new_stream_that_keeps_up_grows_at_once_to_the_connections_largest_window() {
    let t0 = Instant::now();
    let (mut s, now, _) = session_with_a_grown_stream(MuxConfig::default(), t0);
    // Read within 2 RTTs: from 256 KiB straight to 2 MiB, not to 256 KiB × 8 later.
    let update = half_window_read_after(&mut s, 3, now, Duration::from_millis(5));
    assert_eq!(
        update,
        hdr(FrameType::WindowUpdate, flags::ACK, 3, 1920 * KIB)
    );
}

#[test]
fn a_new_stream_that_does_not_keep_up_stays_at_the_initial_window() {
    let t0 = Instant::now();
    let (mut s, now, _) = session_with_a_grown_stream(MuxConfig::default(), t0);
    // Read after 3 RTTs: the reader, not the window, is what holds the stream.
    let update = half_window_read_after(&mut s, 3, now, Duration::from_millis(30));
    assert_eq!(
        update,
        hdr(FrameType::WindowUpdate, flags::ACK, 3, 128 * KIB)
    );
}

#[test]
fn growth_stops_at_the_connection_cap_with_what_room_is_left() {
    let t0 = Instant::now();
    // Room for stream 1's 2 MiB, stream 3's initial 256 KiB and 384 KiB more.
    let config = MuxConfig {
        max_connection_window: (2688 * KIB) as usize,
        ..MuxConfig::default()
    };
    let (mut s, now, _) = session_with_a_grown_stream(config, t0);
    let update = half_window_read_after(&mut s, 3, now, Duration::from_millis(5));
    assert_eq!(
        update,
        hdr(FrameType::WindowUpdate, flags::ACK, 3, 512 * KIB)
    );
}

#[test]
fn the_smallest_round_trip_is_kept_beside_the_last() {
    let t0 = Instant::now();
    let mut s = session(Mode::Client, MuxConfig::default(), t0);
    let t1 = t0 + Duration::from_millis(10);
    feed(&mut s, &hdr(FrameType::Ping, flags::ACK, 0, 1), t1).unwrap();
    // The next probe waits behind bulk data: its round trip is longer.
    let t2 = t1 + MuxConfig::default().rtt_probe_interval;
    s.handle_timeout(t2);
    assert_eq!(transmit(&mut s), hdr(FrameType::Ping, flags::SYN, 0, 2));
    feed(
        &mut s,
        &hdr(FrameType::Ping, flags::ACK, 0, 2),
        t2 + Duration::from_millis(50),
    )
    .unwrap();
    assert_eq!(s.rtt(), Some(Duration::from_millis(50)));
    assert_eq!(s.min_rtt(), Some(Duration::from_millis(10)));
}
