//! The model's rules, one scenario each, with exact instants.

use std::io;
use std::time::Duration;

use super::*;
use crate::core::Wake;

/// Rounding of the rate arithmetic to whole nanoseconds, with room to spare.
const EXACT: Duration = Duration::from_micros(1);

/// One nanosecond: the harness looks exactly when the core says.
const NS: Duration = Duration::from_nanos(1);

fn assert_near(actual: Duration, expected: Duration, tolerance: Duration) {
    let diff = actual.abs_diff(expected);
    assert!(
        diff <= tolerance,
        "{actual:?} is not within {tolerance:?} of {expected:?}"
    );
}

/// `bytes` at `bytes_per_second`.
fn transmission(bytes: u64, bytes_per_second: u64) -> Duration {
    Duration::from_secs_f64(bytes as f64 / bytes_per_second as f64)
}

/// Two nodes of `rate` bytes per second, 50 ms apart.
fn pair(params: Params, rate: u64) -> (Net, NodeId, NodeId) {
    let mut net = Net::new(params);
    let a = net.node(rate);
    let b = net.node(rate);
    net.latency(a, b, ms(50));
    (net, a, b)
}

#[test]
fn connect_completes_after_one_round_trip_and_accept_after_one_and_a_half() {
    let (mut net, a, b) = pair(params(), mbit(100));
    let port = net.port(b);
    let conn = net.core.connect(a, port).unwrap();

    net.core.advance(ms(100) - NS);
    assert_eq!(net.core.connect_state(conn), ConnectState::Pending);
    net.core.advance(ms(100));
    assert_eq!(net.core.connect_state(conn), ConnectState::Established);
    assert!(net.core.take_wakes().contains(&Wake::Connect(conn)));

    net.core.advance(ms(150) - NS);
    assert_eq!(net.core.accept(port), None);
    net.core.advance(ms(150));
    assert_eq!(net.core.accept(port).map(|(c, _, _)| c), Some(conn));
}

#[test]
fn a_port_nobody_listens_on_refuses_after_one_round_trip() {
    let (mut net, a, b) = pair(params(), mbit(100));
    let port = net.port(b);
    net.core.unlisten(port);
    let conn = net.core.connect(a, port).unwrap();

    net.core.advance(ms(100) - NS);
    assert_eq!(net.core.connect_state(conn), ConnectState::Pending);
    net.core.advance(ms(100));
    assert_eq!(net.core.connect_state(conn), ConnectState::Refused);
}

#[test]
fn a_port_no_node_ever_listened_on_refuses_after_a_local_round_trip() {
    let (mut net, a, _) = pair(params(), mbit(100));
    let conn = net.core.connect(a, 7).unwrap();
    net.core.advance(Duration::from_micros(200));
    assert_eq!(net.core.connect_state(conn), ConnectState::Refused);
}

/// Asserts that `flow` has delivered fewer than `bytes` just before `at` and all of
/// them at `at` (within [`EXACT`]).
fn assert_arrives(net: &mut Net, flows: &[FlowId], bytes: u64, at: Duration) {
    net.core.advance(at - EXACT);
    for flow in flows {
        match net.core.readable(*flow) {
            Readable::Bytes(n) => assert!(n < bytes, "{n} bytes arrived before {at:?}"),
            Readable::Nothing => {}
            Readable::Eof => panic!("EOF"),
        }
    }
    net.core.advance(at + EXACT);
    for flow in flows {
        assert_eq!(
            net.core.readable(*flow),
            Readable::Bytes(bytes),
            "at {at:?}"
        );
    }
}

/// A send buffer that takes a whole transfer at once.
fn roomy() -> Params {
    Params {
        send_buffer: 4 * MIB,
        ..params()
    }
}

#[test]
fn a_megabyte_takes_the_latency_plus_its_size_over_the_rate() {
    let (mut net, a, b) = pair(roomy(), mbit(100));
    let flow = net.open(a, b);
    let start = net.core.now();
    net.core.write(flow, MIB);

    let expected = start + ms(50) + transmission(MIB, mbit(100));
    assert_arrives(&mut net, &[flow], MIB, expected);
}

#[test]
fn a_writer_refilling_the_send_buffer_each_millisecond_keeps_the_link_busy() {
    let (mut net, a, b) = pair(params(), mbit(100));
    let flow = net.open(a, b);
    let start = net.core.now();
    let mut jobs = [Job::new(flow, start, MIB)];

    net.run(&mut jobs, ms(1), ms(10_000));

    let expected = ms(50) + transmission(MIB, mbit(100));
    assert_near(jobs[0].done.unwrap() - start, expected, ms(1));
}

#[test]
fn two_flows_from_one_node_share_its_uplink_equally() {
    let mut net = Net::new(roomy());
    let [a, b, c] = [0; 3].map(|_| net.node(mbit(100)));
    net.latency(a, b, ms(50));
    net.latency(a, c, ms(50));
    let (ab, ac) = (net.open(a, b), net.open(a, c));
    let start = net.core.now();
    net.core.write(ab, MIB);
    net.core.write(ac, MIB);

    let expected = start + ms(50) + transmission(2 * MIB, mbit(100));
    assert_arrives(&mut net, &[ab, ac], MIB, expected);
}

#[test]
fn a_flow_held_back_by_its_receiver_leaves_the_rest_of_the_uplink_to_the_other() {
    let mut net = Net::new(roomy());
    let a = net.node(mbit(100));
    let slow = net.core.add_node(mbit(100), mbit(10));
    let c = net.node(mbit(100));
    net.latency(a, slow, ms(50));
    net.latency(a, c, ms(50));
    let (to_slow, to_c) = (net.open(a, slow), net.open(a, c));
    let start = net.core.now();
    net.core.write(to_slow, MIB);
    net.core.write(to_c, MIB);

    assert_arrives(
        &mut net,
        &[to_c],
        MIB,
        start + ms(50) + transmission(MIB, mbit(90)),
    );
    assert_arrives(
        &mut net,
        &[to_slow],
        MIB,
        start + ms(50) + transmission(MIB, mbit(10)),
    );
}

#[test]
fn a_writer_without_a_reader_stops_after_the_send_buffer_and_the_window() {
    let params = Params {
        window: MIB,
        ..params()
    };
    let (mut net, a, b) = pair(params, mbit(100));
    let flow = net.open(a, b);
    let start = net.core.now();
    let mut jobs = [Job {
        no_reader: true,
        ..Job::new(flow, start, 100 * MIB)
    }];

    net.run(&mut jobs, ms(1), start + ms(10_000));

    // The window is full, and the writer was last woken with half the send buffer free.
    let written = jobs[0].written;
    assert!(
        (MIB + 128 * KIB..=MIB + 256 * KIB).contains(&written),
        "{written}"
    );
    assert_eq!(net.core.unsent(flow), written - MIB);
    assert_eq!(
        net.core.next_wake(),
        None,
        "the flow is stuck until the reader reads"
    );
    net.core.advance(start + ms(10_000));
    assert_eq!(net.core.readable(flow), Readable::Bytes(MIB));
}

#[test]
fn a_window_limits_a_flow_to_a_window_per_round_trip() {
    let params = Params {
        window: MIB,
        ..params()
    };
    let (mut net, a, b) = pair(params, mbit(1000));
    let flow = net.open(a, b);
    let start = net.core.now();
    let mut jobs = [Job::new(flow, start, 10 * MIB)];

    net.run(&mut jobs, ms(1), start + ms(10_000));

    // Ten windows, each a round trip (100 ms) apart, the last one latency late.
    let took = jobs[0].done.unwrap() - start;
    assert!(took >= ms(950) && took <= ms(1010), "took {took:?}");
}

#[test]
fn a_cut_holds_the_bytes_and_the_heal_delivers_them() {
    let (mut net, a, b) = pair(params(), mbit(100));
    let flow = net.open(a, b);
    let start = net.core.now();
    net.core.write(flow, 200 * KIB);
    net.core.advance(start + ms(30));

    net.core.set_cut([(a, b)], true);
    net.core.advance(start + ms(1000));
    assert_eq!(
        net.core.readable(flow),
        Readable::Nothing,
        "nothing crosses a cut"
    );
    net.core.heal_all();

    // All had left, nothing had arrived when the cut came: all is sent again.
    let expected = start + ms(1000) + ms(50) + transmission(200 * KIB, mbit(100));
    assert_arrives(&mut net, &[flow], 200 * KIB, expected);
}

#[test]
fn a_connect_across_a_cut_completes_a_round_trip_after_the_heal() {
    let (mut net, a, b) = pair(params(), mbit(100));
    let port = net.port(b);
    net.core.set_cut([(a, b)], true);
    let conn = net.core.connect(a, port).unwrap();
    net.core.advance(ms(5000));
    assert_eq!(net.core.connect_state(conn), ConnectState::Pending);

    net.core.heal_all();
    net.core.advance(ms(5100) - NS);
    assert_eq!(net.core.connect_state(conn), ConnectState::Pending);
    net.core.advance(ms(5100));
    assert_eq!(net.core.connect_state(conn), ConnectState::Established);
}

#[test]
fn the_reader_sees_eof_after_the_last_byte() {
    let (mut net, a, b) = pair(params(), mbit(100));
    let flow = net.open(a, b);
    let start = net.core.now();
    net.core.write(flow, 1000);
    net.core.shutdown(flow);

    // 1000 bytes at 12.5 MB/s: 80 µs, then 50 ms.
    net.core.advance(start + ms(50) + Duration::from_micros(80));
    assert_eq!(net.core.readable(flow), Readable::Bytes(1000));
    net.core.consume(flow, 1000);
    assert_eq!(net.core.readable(flow), Readable::Eof);
}

#[test]
fn a_shutdown_with_nothing_sent_gives_eof_a_latency_later() {
    let (mut net, a, b) = pair(params(), mbit(100));
    let flow = net.open(a, b);
    let start = net.core.now();
    net.core.shutdown(flow);
    net.core.advance(start + ms(50) - NS);
    assert_eq!(net.core.readable(flow), Readable::Nothing);
    net.core.advance(start + ms(50));
    assert_eq!(net.core.readable(flow), Readable::Eof);
}

#[test]
fn a_dropped_reader_fails_its_writer_a_latency_later() {
    let (mut net, a, b) = pair(params(), mbit(100));
    let flow = net.open(a, b);
    let start = net.core.now();
    net.core.close(flow.conn, Side::Listener);

    net.core.advance(start + ms(50) - NS);
    assert!(net.core.room(flow).is_ok());
    assert_eq!(net.core.readable(reverse(flow)), Readable::Nothing);
    net.core.advance(start + ms(50));
    let error = net.core.room(flow).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    // The listener's end closed its writes too: the dialer reads EOF.
    assert_eq!(net.core.readable(reverse(flow)), Readable::Eof);
}

#[test]
fn a_notsent_lowat_takes_writes_only_below_it() {
    let (mut net, a, b) = pair(params(), mbit(100));
    let flow = net.open(a, b);
    net.core.set_lowat(flow, Some(16 * KIB));
    assert_eq!(net.core.room(flow).unwrap(), 16 * KIB);
    net.core.write(flow, 16 * KIB);
    assert_eq!(net.core.room(flow).unwrap(), 0);
    assert_eq!(net.core.unsent(flow), 16 * KIB);

    // Half of it left after 16 KiB / 2 / 12.5 MB/s.
    let now = net.core.now();
    net.core
        .advance(now + transmission(8 * KIB, mbit(100)) + NS);
    assert_eq!(net.core.room(flow).unwrap(), 8 * KIB);
}

#[test]
fn nothing_in_flight_means_nothing_to_wake_for() {
    let (mut net, a, b) = pair(params(), mbit(100));
    let flow = net.open(a, b);
    let start = net.core.now();
    let mut jobs = [Job::new(flow, start, 100 * KIB)];
    net.run(&mut jobs, ms(1), start + ms(10_000));
    assert!(jobs[0].done.is_some());

    assert_eq!(net.core.next_wake(), None);
}

#[test]
fn a_closed_connection_frees_its_port_and_its_flows() {
    let (mut net, a, b) = pair(params(), mbit(100));
    let flow = net.open(a, b);
    let source = net.core.conn(flow.conn).unwrap().nodes();
    assert_eq!(source, (a, b));
    net.core.write(flow, 100 * KIB);
    net.core.close(flow.conn, Side::Dialer);
    net.core.close(flow.conn, Side::Listener);

    assert!(net.core.conn(flow.conn).is_none());
    assert!(net.core.active.is_empty());
    let wakes = net.core.take_wakes();
    assert!(wakes.contains(&Wake::Discard(flow)));
}
