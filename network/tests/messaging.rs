//! RPC and DirectSend over memsocket: answers, errors, limits, cancellation, fairness.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{
    DIRECT, Net, RPC, bytes, connect, connected_pair, spawn_echo_server, start_nodes,
    start_nodes_with,
};
use futures::StreamExt;
use network::{Event, NetworkConfig, ProtocolId, ProtocolKind, RemoteFailure, RpcError, SendError};

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn rpc_gets_the_answer() {
    let (a, b) = connected_pair(Net::Memory, NetworkConfig::default()).await;
    let _server = spawn_echo_server(b.events);
    for i in 0..50 {
        let request = Bytes::from(format!("request {i}"));
        let answer = a
            .sender
            .rpc(b.peer_id, RPC, request.clone(), TIMEOUT)
            .await
            .unwrap();
        assert_eq!(answer, request);
    }
    assert_eq!(a.counter("network_rpc_outcomes_total", "ok"), 50);
}

/// How many inbound RPCs the node of `registry` served with `outcome`.
fn inbound_outcomes(registry: &prometheus::Registry, outcome: &str) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "network_rpc_outcomes_total")
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            let has = |v: &str| m.get_label().iter().any(|l| l.value() == v);
            has(RPC.as_str()) && has("inbound") && has(outcome)
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

#[tokio::test]
async fn answers_past_the_window_are_finished_and_every_answer_is_counted() {
    let (a, b) = connected_pair(Net::Memory, NetworkConfig::default()).await;
    let _server = spawn_echo_server(b.events);
    // Answers of 1 MiB (past the substream's window: the responder writes what fits
    // and a task the rest) among small ones, all in flight at once. A pattern, so
    // that a byte out of place in the answer's head or payload shows.
    let big: Bytes = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let calls = (0..24).map(|i| {
        let request = if i % 8 == 0 {
            big.clone()
        } else {
            Bytes::from(format!("request {i}"))
        };
        let sender = a.sender.clone();
        let peer = b.peer_id;
        async move {
            let answer = sender.rpc(peer, RPC, request.clone(), TIMEOUT).await;
            assert_eq!(answer.unwrap(), request);
        }
    });
    futures::future::join_all(calls).await;
    assert_eq!(inbound_outcomes(&b.registry, "ok"), 24);
    assert_eq!(inbound_outcomes(&b.registry, "write_failed"), 0);
}

#[tokio::test]
async fn a_responder_kept_past_its_connection_answers_nothing() {
    let (a, mut b) = connected_pair(Net::Memory, NetworkConfig::default()).await;
    let b_id = b.peer_id;
    let call = tokio::spawn({
        let sender = a.sender.clone();
        async move { sender.rpc(b_id, RPC, bytes("x"), TIMEOUT).await }
    });
    let responder = loop {
        if let Event::RpcRequest { responder, .. } = b.next_event().await {
            break responder;
        }
    };
    a.sender.disconnect(b_id).await.unwrap();
    loop {
        if let Event::LostPeer { .. } = b.next_event().await {
            break;
        }
    }
    assert_eq!(call.await.unwrap(), Err(RpcError::Disconnected));
    // Nothing is left to write to: the answer goes nowhere, and fails nothing else.
    let _ = responder.respond(bytes("late"));
    assert_eq!(inbound_outcomes(&b.registry, "write_failed"), 1);
    assert_eq!(inbound_outcomes(&b.registry, "ok"), 0);
}

#[tokio::test(start_paused = true)]
async fn requests_waiting_for_a_full_application_queue_time_out() {
    let config = NetworkConfig {
        inbound_rpc_timeout: Duration::from_secs(2),
        inbound_queue_size: 1,
        ..NetworkConfig::default()
    };
    let (a, b) = connected_pair(Net::Memory, config).await;
    // The application never reads: the first request fills its queue, the second
    // waits for room until the server's timeout.
    let _events = b.events;
    let call = || {
        let sender = a.sender.clone();
        let peer = b.peer_id;
        async move {
            let start = tokio::time::Instant::now();
            let result = sender
                .rpc(peer, RPC, bytes("x"), Duration::from_secs(10))
                .await;
            (result, start.elapsed())
        }
    };
    let (first, second) = tokio::join!(call(), call());
    let timed_out = Err(RpcError::Remote {
        failure: RemoteFailure::Timeout,
        message: "server timed out".into(),
    });
    assert_eq!(first, (timed_out.clone(), Duration::from_secs(2)));
    assert_eq!(second, (timed_out, Duration::from_secs(2)));
    assert_eq!(inbound_outcomes(&b.registry, "timeout"), 2);
    assert_eq!(inbound_outcomes(&b.registry, "no_response"), 0);
}

#[tokio::test]
async fn a_request_to_an_application_that_is_gone_gets_no_response() {
    let (a, b) = connected_pair(Net::Memory, NetworkConfig::default()).await;
    drop(b.events);
    let result = a.sender.rpc(b.peer_id, RPC, bytes("x"), TIMEOUT).await;
    assert_eq!(
        result,
        Err(RpcError::Remote {
            failure: RemoteFailure::NoResponse,
            message: "application is gone".into()
        })
    );
    assert_eq!(inbound_outcomes(&b.registry, "no_application"), 1);
}

#[tokio::test]
async fn rpc_failures_reported_by_the_remote_are_typed() {
    let (a, mut b) = connected_pair(Net::Memory, NetworkConfig::default()).await;
    let b_id = b.peer_id;
    let server = tokio::spawn(async move {
        // First request: an explicit failure. Second: dropped without an answer.
        for answer in 0..2 {
            loop {
                if let Event::RpcRequest { responder, .. } = b.next_event().await {
                    if answer == 0 {
                        responder.fail("cannot serve");
                    }
                    break;
                }
            }
        }
    });
    let first = a.sender.rpc(b_id, RPC, bytes("x"), TIMEOUT).await;
    assert_eq!(
        first,
        Err(RpcError::Remote {
            failure: RemoteFailure::Application,
            message: "cannot serve".into()
        })
    );
    let second = a.sender.rpc(b_id, RPC, bytes("y"), TIMEOUT).await;
    assert!(
        matches!(
            second,
            Err(RpcError::Remote {
                failure: RemoteFailure::NoResponse,
                ..
            })
        ),
        "{second:?}"
    );
    server.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn rpc_times_out_when_the_remote_never_answers() {
    let (a, mut b) = connected_pair(Net::Memory, NetworkConfig::default()).await;
    // The server takes the request and sits on it.
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(event) = b.events.next().await {
            held.push(event);
        }
    });
    let start = tokio::time::Instant::now();
    let result = a
        .sender
        .rpc(b.peer_id, RPC, bytes("x"), Duration::from_secs(2))
        .await;
    assert_eq!(result, Err(RpcError::Timeout));
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    server.abort();
}

#[tokio::test]
async fn rpc_to_an_unknown_peer_is_not_connected() {
    let nodes = start_nodes(Net::Memory, 2);
    let result = nodes[0]
        .sender
        .rpc(nodes[1].peer_id, RPC, bytes("x"), TIMEOUT)
        .await;
    assert_eq!(result, Err(RpcError::NotConnected(nodes[1].peer_id)));
}

#[tokio::test]
async fn rpc_on_an_unregistered_protocol_fails_locally() {
    let (a, b) = connected_pair(Net::Memory, NetworkConfig::default()).await;
    let unknown = ProtocolId::new("/test/unknown/1");
    let result = a.sender.rpc(b.peer_id, unknown, bytes("x"), TIMEOUT).await;
    assert_eq!(result, Err(RpcError::UnregisteredProtocol(unknown)));
}

#[tokio::test]
async fn rpc_on_a_protocol_the_remote_does_not_serve_is_refused_in_negotiation() {
    const EXTRA: ProtocolId = ProtocolId::new("/test/extra/1");
    let (ids, trusted) = common::identities(2);
    let mut ids = ids.into_iter();
    let config = NetworkConfig::default();
    let mut a = common::start_node_with_protocols(
        Net::Memory,
        ids.next().unwrap(),
        trusted.clone(),
        config.clone(),
        &[(RPC, ProtocolKind::Rpc), (EXTRA, ProtocolKind::Rpc)],
    );
    let mut b = common::start_node(Net::Memory, ids.next().unwrap(), trusted, config);
    connect(&mut a, &mut b).await;
    let result = a.sender.rpc(b.peer_id, EXTRA, bytes("x"), TIMEOUT).await;
    assert_eq!(result, Err(RpcError::ProtocolNotSupported));
    // The dialer gives up after `na`; depending on whether its stream closes or resets
    // first, the listener counts an unknown protocol or a failed negotiation.
    let refused = || {
        b.counter("network_substreams_refused_total", "unknown_protocol")
            + b.counter("network_substreams_refused_total", "negotiation_failed")
    };
    for _ in 0..200 {
        if refused() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(refused(), 1);
}

#[tokio::test(start_paused = true)]
async fn excess_outbound_rpcs_fail_at_once_with_too_many_requests() {
    let config = NetworkConfig {
        max_concurrent_outbound_rpcs: 2,
        ..NetworkConfig::default()
    };
    let (a, mut b) = connected_pair(Net::Memory, config).await;
    let sender = a.sender.clone();
    let peer = b.peer_id;
    let pending: Vec<_> = (0..2)
        .map(|_| {
            let sender = sender.clone();
            tokio::spawn(async move {
                sender
                    .rpc(peer, RPC, bytes("x"), Duration::from_secs(60))
                    .await
            })
        })
        .collect();
    // Let both requests reach the server, which holds them.
    let mut held = Vec::new();
    for _ in 0..2 {
        loop {
            if let ev @ Event::RpcRequest { .. } = b.next_event().await {
                held.push(ev);
                break;
            }
        }
    }
    let start = tokio::time::Instant::now();
    let third = a
        .sender
        .rpc(peer, RPC, bytes("x"), Duration::from_secs(60))
        .await;
    assert_eq!(third, Err(RpcError::TooManyRequests));
    assert_eq!(start.elapsed(), Duration::ZERO, "refused at once");
    for p in pending {
        p.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn excess_inbound_rpcs_are_refused_by_the_server() {
    let config = NetworkConfig {
        max_concurrent_inbound_rpcs: 1,
        ..NetworkConfig::default()
    };
    let (a, mut b) = connected_pair(Net::Memory, config).await;
    let sender = a.sender.clone();
    let peer = b.peer_id;
    let first = tokio::spawn(async move {
        sender
            .rpc(peer, RPC, bytes("x"), Duration::from_secs(60))
            .await
    });
    let _held = loop {
        if let ev @ Event::RpcRequest { .. } = b.next_event().await {
            break ev;
        }
    };
    let second = a
        .sender
        .rpc(peer, RPC, bytes("y"), Duration::from_secs(60))
        .await;
    assert_eq!(second, Err(RpcError::TooManyRequests));
    first.abort();
}

#[tokio::test(start_paused = true)]
async fn connection_drop_mid_rpc_fails_the_caller_at_once() {
    let (a, mut b) = connected_pair(Net::Memory, NetworkConfig::default()).await;
    let sender = a.sender.clone();
    let peer = b.peer_id;
    let call = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let result = sender
            .rpc(peer, RPC, bytes("x"), Duration::from_secs(60))
            .await;
        (result, start.elapsed())
    });
    // The request reaches the server, which holds it unanswered and drops the connection.
    let _held = loop {
        if let Event::RpcRequest { responder, .. } = b.next_event().await {
            break responder;
        }
    };
    b.shutdown().await;
    let (result, elapsed) = call.await.unwrap();
    assert_eq!(result, Err(RpcError::Disconnected));
    assert!(
        elapsed < Duration::from_secs(1),
        "failed after {elapsed:?}, not at once"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_rpc_future_cancels_the_request() {
    let (a, mut b) = connected_pair(Net::Memory, NetworkConfig::default()).await;
    let sender = a.sender.clone();
    let peer = b.peer_id;
    let call = tokio::spawn(async move {
        sender
            .rpc(peer, RPC, bytes("x"), Duration::from_secs(60))
            .await
    });
    let responder = loop {
        if let Event::RpcRequest { responder, .. } = b.next_event().await {
            break responder;
        }
    };
    call.abort();
    let _ = call.await;
    // The slot the cancelled request held is free again: the limit counts it no longer.
    let _server = spawn_echo_server(b.events);
    drop(responder);
    let answer = a
        .sender
        .rpc(peer, RPC, bytes("again"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(answer, bytes("again"));
}

#[tokio::test]
async fn direct_send_delivers_in_order() {
    let (a, mut b) = connected_pair(Net::Memory, NetworkConfig::default()).await;
    for i in 0..500u32 {
        a.sender
            .send_to(b.peer_id, DIRECT, Bytes::from(i.to_be_bytes().to_vec()))
            .unwrap();
    }
    for i in 0..500u32 {
        match b.next_event().await {
            Event::Message {
                peer_id,
                protocol,
                data,
            } => {
                assert_eq!(peer_id, a.peer_id);
                assert_eq!(protocol, DIRECT);
                assert_eq!(data, Bytes::from(i.to_be_bytes().to_vec()));
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn direct_send_drops_and_counts_when_the_queue_is_full() {
    let config = NetworkConfig {
        direct_send_queue_size: 4,
        ..NetworkConfig::default()
    };
    let (a, b) = connected_pair(Net::Memory, config).await;
    // Without yielding, the writer task cannot drain: the fifth message finds the queue full.
    let results: Vec<_> = (0..6)
        .map(|_| a.sender.send_to(b.peer_id, DIRECT, bytes("m")))
        .collect();
    assert!(results[..4].iter().all(Result::is_ok));
    assert_eq!(results[4], Err(SendError::QueueFull));
    assert_eq!(a.counter("network_queue_drops_total", DIRECT.as_str()), 2);
}

/// The sender's count of messages written to a substream that ended before the receiver
/// acknowledged them.
fn unconfirmed(node: &common::Node) -> u64 {
    node.counter("network_queue_drops_total", "unconfirmed")
}

#[tokio::test(start_paused = true)]
async fn direct_send_messages_delivered_before_a_disconnect_are_confirmed() {
    let (mut a, mut b) = connected_pair(Net::Memory, NetworkConfig::default()).await;
    for i in 0..1000u32 {
        a.sender
            .send_to(b.peer_id, DIRECT, Bytes::from(i.to_be_bytes().to_vec()))
            .unwrap();
    }
    for _ in 0..1000 {
        assert!(matches!(b.next_event().await, Event::Message { .. }));
    }
    // Paused time: the sleeps only let every task run until it waits.
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.sender.disconnect(b.peer_id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        a.counter("network_messages_out_total", DIRECT.as_str()),
        1000
    );
    assert_eq!(unconfirmed(&a), 0);
    assert_eq!(a.counter("network_queue_drops_total", DIRECT.as_str()), 0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn direct_send_messages_undelivered_at_a_disconnect_are_counted_unconfirmed() {
    // The receiving application reads nothing and its queue holds 8 messages: the
    // receiver delivers 8, acknowledges them when it has to wait for room, and holds
    // the rest unread.
    let config = NetworkConfig {
        inbound_queue_size: 8,
        ..NetworkConfig::default()
    };
    let (mut a, mut b) = connected_pair(Net::Memory, config).await;
    for _ in 0..100 {
        a.sender.send_to(b.peer_id, DIRECT, bytes("m")).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(unconfirmed(&a), 0, "counted while the substream is alive");
    a.sender.disconnect(b.peer_id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        a.counter("network_messages_out_total", DIRECT.as_str()),
        100
    );
    assert_eq!(unconfirmed(&a), 92);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn direct_send_messages_still_queued_when_the_connection_closes_are_counted() {
    // The receiving application reads nothing and holds one message, so the sender's
    // window fills: its writer is stuck in the middle of a batch while later messages
    // wait in the queue.
    let config = NetworkConfig {
        inbound_queue_size: 1,
        ..NetworkConfig::default()
    };
    let (mut a, mut b) = connected_pair(Net::Memory, config).await;
    let big = Bytes::from(vec![7u8; 64 * 1024]);
    for _ in 0..40 {
        a.sender.send_to(b.peer_id, DIRECT, big.clone()).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..30 {
        a.sender.send_to(b.peer_id, DIRECT, big.clone()).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.sender.disconnect(b.peer_id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The first 40 were written (in one batch) and mostly never acknowledged; the 30
    // behind them were never written. All 70 are accounted for, and nothing is left in
    // the depth gauge.
    let written = a.counter("network_messages_out_total", DIRECT.as_str());
    let never_written = a.counter("network_queue_drops_total", "stream_failed");
    assert_eq!((written, never_written), (40, 30));
    assert!(unconfirmed(&a) >= 38, "{} unconfirmed", unconfirmed(&a));
    let depth = a
        .registry
        .gather()
        .iter()
        .filter(|f| f.name() == "network_queue_depth")
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.value() == "direct_send_outbound")
        })
        .map(|m| m.get_gauge().get_value())
        .sum::<f64>();
    assert_eq!(depth, 0.0);
    // A message sent before the peer is gone from the table is refused as not
    // connected, not counted as a full queue.
    assert_eq!(a.counter("network_queue_drops_total", "queue_full"), 0);
    a.shutdown().await;
    b.shutdown().await;
}

/// The payload of the next event, which must be a DirectSend message from `from`.
async fn next_message_from(node: &mut common::Node, from: netcore::PeerId) -> Bytes {
    match node.next_event().await {
        Event::Message { peer_id, data, .. } if peer_id == from => data,
        other => panic!("expected a message from {from}, got {other:?}"),
    }
}

#[tokio::test]
async fn direct_send_carries_every_size_intact_and_in_order() {
    // Around the sizes the sender packs (up to 4 KiB) or sends as their own buffer, and
    // around the reader's read chunk and batch limits (16 KiB).
    let sizes = [
        0, 1, 31, 32, 4095, 4096, 4097, 5000, 0, 16383, 16384, 16385, 1, 70_000, 3, 200_000,
    ];
    let (a, mut b) = connected_pair(Net::Memory, NetworkConfig::default()).await;
    let messages: Vec<Bytes> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| Bytes::from((0..n).map(|j| (i * 7 + j) as u8).collect::<Vec<u8>>()))
        .collect();
    for m in &messages {
        a.sender.send_to(b.peer_id, DIRECT, m.clone()).unwrap();
    }
    for m in &messages {
        assert_eq!(&next_message_from(&mut b, a.peer_id).await, m);
    }
}

#[tokio::test(start_paused = true)]
async fn direct_send_after_a_reconnect_goes_on_the_new_connection() {
    let (mut a, mut b) = connected_pair(Net::Memory, NetworkConfig::default()).await;
    // Sends in a row: this thread keeps (b, DIRECT)'s queue from the second on.
    for m in ["one", "two", "three"] {
        a.sender.send_to(b.peer_id, DIRECT, bytes(m)).unwrap();
    }
    for m in ["one", "two", "three"] {
        assert_eq!(next_message_from(&mut b, a.peer_id).await, bytes(m));
    }
    a.sender.disconnect(b.peer_id).await.unwrap();
    // The kept queue closed with the connection: the call finds no peer.
    assert_eq!(
        a.sender.send_to(b.peer_id, DIRECT, bytes("lost")),
        Err(SendError::NotConnected(b.peer_id))
    );
    loop {
        if let Event::LostPeer { .. } = b.next_event().await {
            break;
        }
    }
    connect(&mut a, &mut b).await;
    for m in ["four", "five", "six"] {
        a.sender.send_to(b.peer_id, DIRECT, bytes(m)).unwrap();
    }
    for m in ["four", "five", "six"] {
        assert_eq!(next_message_from(&mut b, a.peer_id).await, bytes(m));
    }
    assert_eq!(a.counter("network_queue_drops_total", "stream_failed"), 0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn direct_send_from_two_nodes_on_one_thread_keeps_their_queues_apart() {
    // Two senders in one process and on one thread (a test, a simulation): the queue
    // one node's sends kept is never used for the other's.
    let mut nodes = start_nodes(Net::Memory, 3);
    let mut c = nodes.pop().unwrap();
    let mut b = nodes.pop().unwrap();
    let mut a = nodes.pop().unwrap();
    connect(&mut a, &mut b).await;
    connect(&mut c, &mut b).await;
    connect(&mut a, &mut c).await;
    for round in 0..3u8 {
        for _ in 0..2 {
            a.sender
                .send_to(b.peer_id, DIRECT, bytes("from a"))
                .unwrap();
        }
        for _ in 0..2 {
            c.sender
                .send_to(b.peer_id, DIRECT, bytes("from c"))
                .unwrap();
        }
        // And one node alternating between peers.
        a.sender
            .send_to(c.peer_id, DIRECT, Bytes::from(vec![round]))
            .unwrap();
        a.sender
            .send_to(b.peer_id, DIRECT, bytes("from a"))
            .unwrap();
    }
    let (mut from_a, mut from_c) = (0, 0);
    while from_a + from_c < 15 {
        match b.next_event().await {
            Event::Message { peer_id, data, .. } if peer_id == a.peer_id => {
                assert_eq!(data, bytes("from a"));
                from_a += 1;
            }
            Event::Message { peer_id, data, .. } if peer_id == c.peer_id => {
                assert_eq!(data, bytes("from c"));
                from_c += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((from_a, from_c), (9, 6));
    for round in 0..3u8 {
        assert_eq!(
            next_message_from(&mut c, a.peer_id).await,
            Bytes::from(vec![round])
        );
    }
}

#[tokio::test]
async fn send_to_many_reports_the_peers_it_could_not_reach() {
    let mut nodes = start_nodes(Net::Memory, 3);
    let mut c = nodes.pop().unwrap();
    let mut b = nodes.pop().unwrap();
    let mut a = nodes.pop().unwrap();
    connect(&mut a, &mut b).await;
    let failures = a
        .sender
        .send_to_many([b.peer_id, c.peer_id], DIRECT, bytes("hi"));
    assert_eq!(
        failures,
        vec![(c.peer_id, SendError::NotConnected(c.peer_id))]
    );
    assert!(matches!(b.next_event().await, Event::Message { .. }));
    let _ = &mut c;
}

#[tokio::test]
async fn a_flooding_peer_does_not_delay_another_peers_messages() {
    let config = NetworkConfig {
        inbound_queue_size: 1024,
        ..NetworkConfig::default()
    };
    let mut nodes = start_nodes_with(Net::Memory, 3, config);
    let mut honest = nodes.pop().unwrap();
    let mut flooder = nodes.pop().unwrap();
    let mut server = nodes.pop().unwrap();
    connect(&mut flooder, &mut server).await;
    connect(&mut honest, &mut server).await;

    // The flooder keeps its queue at the server full.
    let flood_sender = flooder.sender.clone();
    let target = server.peer_id;
    let flood = tokio::spawn(async move {
        loop {
            let _ = flood_sender.send_to(target, DIRECT, Bytes::from(vec![0u8; 64]));
            tokio::task::yield_now().await;
        }
    });
    // Consume until the flood is well under way.
    let mut consumed = 0;
    while consumed < 2000 {
        if let Event::Message { .. } = server.next_event().await {
            consumed += 1;
        }
        tokio::task::yield_now().await;
    }
    honest
        .sender
        .send_to(target, DIRECT, bytes("vote"))
        .unwrap();
    // The bound: the honest message arrives within 100 events of being sent, although
    // the flooder has up to 1024 messages queued ahead of it at every moment.
    let mut waited = 0;
    loop {
        match server.next_event().await {
            Event::Message { peer_id, .. } if peer_id == honest.peer_id => break,
            _ => waited += 1,
        }
        assert!(
            waited <= 100,
            "the honest message waited behind {waited} flood messages"
        );
        tokio::task::yield_now().await;
    }
    flood.abort();
}

#[tokio::test(start_paused = true)]
async fn a_server_that_runs_out_of_time_tells_the_caller() {
    let config = NetworkConfig {
        inbound_rpc_timeout: Duration::from_secs(2),
        ..NetworkConfig::default()
    };
    let (a, mut b) = connected_pair(Net::Memory, config).await;
    // The server's application holds the request past the server's own timeout.
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(event) = b.events.next().await {
            held.push(event);
        }
    });
    let peer = nodes_peer(&a);
    let start = tokio::time::Instant::now();
    let result = a
        .sender
        .rpc(peer, RPC, bytes("x"), Duration::from_secs(10))
        .await;
    assert_eq!(
        result,
        Err(RpcError::Remote {
            failure: RemoteFailure::Timeout,
            message: "server timed out".into()
        })
    );
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn each_request_has_the_server_timeout_from_its_own_arrival() {
    // Requests whose FIN came with them are timed out by their connection's task, from
    // a queue of deadlines: each must get its own, whether the one before it timed
    // out, was answered, or the connection sat idle.
    let config = NetworkConfig {
        inbound_rpc_timeout: Duration::from_secs(2),
        ..NetworkConfig::default()
    };
    let (a, mut b) = connected_pair(Net::Memory, config).await;
    // Answers "answer" at once and holds every other request.
    let _server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(event) = b.events.next().await {
            match event {
                Event::RpcRequest {
                    data, responder, ..
                } if data == "answer" => responder.respond(data).unwrap(),
                other => held.push(other),
            }
        }
    });
    let peer = nodes_peer(&a);
    let call = |data: &'static str| {
        let sender = a.sender.clone();
        async move {
            let start = tokio::time::Instant::now();
            let result = sender
                .rpc(peer, RPC, bytes(data), Duration::from_secs(10))
                .await;
            (result, start.elapsed())
        }
    };
    let timed_out = Err(RpcError::Remote {
        failure: RemoteFailure::Timeout,
        message: "server timed out".into(),
    });
    // A first timeout; then one after the connection sat idle past it.
    assert_eq!(call("x").await, (timed_out.clone(), Duration::from_secs(2)));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(call("x").await, (timed_out.clone(), Duration::from_secs(2)));
    // An answered request, then a held one: its timer runs from its own arrival.
    assert_eq!(call("answer").await, (Ok(bytes("answer")), Duration::ZERO));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(call("x").await, (timed_out, Duration::from_secs(2)));
}

/// The one peer `node` is connected to.
fn nodes_peer(node: &common::Node) -> netcore::PeerId {
    node.sender.connected_peers()[0].peer_id
}

#[tokio::test]
async fn requests_and_responses_obey_the_same_payload_limit() {
    const MAX: usize = 4096;
    let config = NetworkConfig {
        max_message_size: MAX,
        ..NetworkConfig::default()
    };
    let (a, mut b) = connected_pair(Net::Memory, config).await;
    // The server answers with a payload as long as the request says.
    let server = tokio::spawn(async move {
        let mut refused = Vec::new();
        while let Some(event) = b.events.next().await {
            if let Event::RpcRequest {
                data, responder, ..
            } = event
            {
                let len: usize = std::str::from_utf8(&data).unwrap().parse().unwrap();
                if let Err(e) = responder.respond(Bytes::from(vec![7u8; len])) {
                    refused.push(e);
                }
                if len > MAX {
                    return refused;
                }
            }
        }
        refused
    });
    // A request of exactly the maximum passes.
    let request = Bytes::from(format!("{MAX:0width$}", width = MAX));
    let answer = a
        .sender
        .rpc(b.peer_id, RPC, request, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        answer.len(),
        MAX,
        "a response of exactly the maximum passes too"
    );
    // A request one past the maximum is refused before it is sent.
    let over = Bytes::from(vec![b'1'; MAX + 1]);
    assert!(matches!(
        a.sender.rpc(b.peer_id, RPC, over, TIMEOUT).await,
        Err(RpcError::TooLarge { len, max: MAX }) if len == MAX + 1
    ));
    // A response one past the maximum fails at the responder, and the caller is told.
    let result = a
        .sender
        .rpc(b.peer_id, RPC, Bytes::from((MAX + 1).to_string()), TIMEOUT)
        .await;
    assert!(
        matches!(result, Err(RpcError::TooLarge { len, max: MAX }) if len == MAX + 1),
        "{result:?}"
    );
    let refused = server.await.unwrap();
    assert_eq!(
        refused,
        [network::ResponseTooLarge {
            len: MAX + 1,
            max: MAX
        }]
    );
}

#[tokio::test]
async fn a_tracked_message_reports_when_it_went_to_the_socket() {
    let (a, mut b) = connected_pair(Net::Memory, NetworkConfig::default()).await;
    // Large enough to take several multiplexer frames and write batches.
    let large = Bytes::from(vec![7u8; 3 << 20]);
    a.sender
        .send_to(b.peer_id, DIRECT, bytes("before"))
        .unwrap();
    let sent = a
        .sender
        .send_to_tracked(b.peer_id, DIRECT, large.clone())
        .unwrap();
    // The receiver reads as the sender writes (memsocket buffers 256 KiB), so the
    // receipt comes once the last frames are out.
    let reader = tokio::spawn(async move {
        let first = next_message_from(&mut b, a.peer_id).await;
        let second = next_message_from(&mut b, a.peer_id).await;
        (first, second)
    });
    assert_eq!(sent.await, Ok(()));
    let (first, second) = reader.await.unwrap();
    assert_eq!((first, second.len()), (bytes("before"), large.len()));
    let stranger = noise::Identity::generate().peer_id();
    assert_eq!(
        a.sender
            .send_to_tracked(stranger, DIRECT, bytes("nobody"))
            .err(),
        Some(SendError::NotConnected(stranger))
    );
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_does_not_read_holds_its_copy_not_the_others() {
    let config = NetworkConfig {
        inbound_queue_size: 1,
        ..NetworkConfig::default()
    };
    let mut nodes = start_nodes_with(Net::Memory, 3, config);
    let mut c = nodes.pop().unwrap();
    let mut b = nodes.pop().unwrap();
    let mut a = nodes.pop().unwrap();
    connect(&mut a, &mut b).await;
    connect(&mut a, &mut c).await;
    // b's application reads nothing: one message fills its queue, the next holds its
    // reader, and a large copy then waits for a window b never opens.
    for m in ["fills", "holds"] {
        a.sender.send_to(b.peer_id, DIRECT, bytes(m)).unwrap();
    }
    let large = Bytes::from(vec![1u8; 2 << 20]);
    let start = tokio::time::Instant::now();
    let failed = a
        .sender
        .send_nearest_first(&[b.peer_id, c.peer_id, b.peer_id], DIRECT, large.clone())
        .await;
    assert!(failed.is_empty(), "{failed:?}");
    assert!(
        start.elapsed() >= network::IN_ORDER_PATIENCE,
        "waited for b's copy before giving up on it"
    );
    assert_eq!(
        next_message_from(&mut c, a.peer_id).await.len(),
        large.len()
    );
    // Sent to b once: after its two small messages, one large one.
    for expected in [bytes("fills"), bytes("holds")] {
        assert_eq!(next_message_from(&mut b, a.peer_id).await, expected);
    }
    assert_eq!(
        next_message_from(&mut b, a.peer_id).await.len(),
        large.len()
    );
    let more = tokio::time::timeout(Duration::from_secs(5), next_message_from(&mut b, a.peer_id));
    assert!(more.await.is_err(), "a duplicate peer gets one copy");
}
