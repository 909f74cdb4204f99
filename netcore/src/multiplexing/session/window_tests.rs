//! New streams start with the window the connection's path asked for.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::tests::{feed, hdr, read_n, session, transmit};
use super::*;

const KIB: u32 = 1024;

/// A server session whose RTT is 10 ms and whose stream 1 grew its window to 2 MiB.
fn session_with_a_grown_stream(config: MuxConfig, t0: Instant) -> Session {
    let mut s = session(Mode::Server, config, t0);
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
        t1 + Duration::from_millis(5),
    );
    transmit(&mut s);
    assert_eq!(s.stats().window_grows.load(Ordering::Relaxed), 1);
    s
}

#[test]
fn a_new_stream_starts_with_the_largest_window_grown_on_the_connection() {
    let t0 = Instant::now();
    let mut s = session_with_a_grown_stream(MuxConfig::default(), t0);
    // A stream we open announces the 2 MiB with its SYN.
    let id = s.open_stream(t0, Priority::default()).unwrap();
    assert_eq!(
        transmit(&mut s),
        hdr(FrameType::WindowUpdate, flags::SYN, id, 1792 * KIB)
    );
    // So does a stream the remote opens, with its ACK; and the remote may use it.
    feed(&mut s, &hdr(FrameType::WindowUpdate, flags::SYN, 3, 0), t0).unwrap();
    assert_eq!(
        transmit(&mut s),
        hdr(FrameType::WindowUpdate, flags::ACK, 3, 1792 * KIB)
    );
}

#[test]
fn a_new_streams_window_stays_within_the_connection_cap() {
    let t0 = Instant::now();
    // Room for the grown stream's 2 MiB and 384 KiB more.
    let config = MuxConfig {
        max_connection_window: (2432 * KIB) as usize,
        ..MuxConfig::default()
    };
    let mut s = session_with_a_grown_stream(config, t0);
    let id = s.open_stream(t0, Priority::default()).unwrap();
    assert_eq!(
        transmit(&mut s),
        hdr(FrameType::WindowUpdate, flags::SYN, id, 128 * KIB)
    );
    // The cap is reached: the next stream gets the initial window, never less.
    let id = s.open_stream(t0, Priority::default()).unwrap();
    assert_eq!(
        transmit(&mut s),
        hdr(FrameType::WindowUpdate, flags::SYN, id, 0)
    );
}
