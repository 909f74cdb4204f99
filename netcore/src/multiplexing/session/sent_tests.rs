//! A stream is "sent" once the connection task took all it was given for the socket.

use std::task::Poll;

use tokio::time::Instant;

use super::tests::{feed, hdr, session, transmit, waker, write};
use super::*;

const KIB: u32 = 1024;

#[test]
fn a_stream_is_sent_once_its_bytes_are_taken_for_the_socket() {
    let now = Instant::now();
    let mut s = session(Mode::Client, MuxConfig::default(), now);
    let id = s.open_stream(now, Priority::default()).unwrap();
    assert!(s.poll_sent(id, &waker()).is_ready(), "nothing written");
    let big = vec![0u8; (300 * KIB) as usize];
    assert_eq!(write(&mut s, id, &big), (256 * KIB) as usize);
    assert!(s.poll_sent(id, &waker()).is_pending());
    // The whole window goes in one batch: sent.
    transmit(&mut s);
    assert!(matches!(s.poll_sent(id, &waker()), Poll::Ready(Ok(()))));
    // More than the window allows waits for the remote's update.
    feed(
        &mut s,
        &hdr(FrameType::WindowUpdate, flags::ACK, 1, 10),
        now,
    )
    .unwrap();
    assert_eq!(write(&mut s, id, &big[..20]), 10);
    assert!(s.poll_sent(id, &waker()).is_pending());
    transmit(&mut s);
    assert!(s.poll_sent(id, &waker()).is_ready());
    assert!(
        s.poll_write(id, &waker(), &big[..20]).is_pending(),
        "window used up"
    );
}

#[test]
fn a_reset_stream_is_never_sent() {
    let now = Instant::now();
    let mut s = session(Mode::Client, MuxConfig::default(), now);
    let id = s.open_stream(now, Priority::default()).unwrap();
    write(&mut s, id, b"data");
    s.reset(id);
    assert!(matches!(s.poll_sent(id, &waker()), Poll::Ready(Err(_))));
}
