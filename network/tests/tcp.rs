//! The core scenario over TCP on loopback: connect, RPC, DirectSend, simultaneous dial,
//! disconnect.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{DIRECT, Net, RPC, bytes, connect, spawn_echo_server, start_nodes};
use netcore::transport::ConnectionOrigin;
use network::{DisconnectReason, Event, RpcError};

const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn rpc_and_direct_send_over_tcp() {
    let mut nodes = start_nodes(Net::Tcp, 3);
    let mut c = nodes.pop().unwrap();
    let mut b = nodes.pop().unwrap();
    let mut a = nodes.pop().unwrap();
    assert!(a.addr.to_string().starts_with("/ip4/127.0.0.1/tcp/"));
    connect(&mut a, &mut b).await;
    connect(&mut c, &mut b).await;

    // DirectSend from two peers, then RPCs answered by an echo server.
    for i in 0..100u32 {
        a.sender
            .send_to(b.peer_id, DIRECT, Bytes::from(i.to_be_bytes().to_vec()))
            .unwrap();
    }
    c.sender
        .send_to(b.peer_id, DIRECT, bytes("from c"))
        .unwrap();
    let (mut from_a, mut from_c) = (0u32, 0);
    while from_a < 100 || from_c < 1 {
        match b.next_event().await {
            Event::Message { peer_id, data, .. } if peer_id == a.peer_id => {
                assert_eq!(data, Bytes::from(from_a.to_be_bytes().to_vec()), "in order");
                from_a += 1;
            }
            Event::Message { peer_id, .. } if peer_id == c.peer_id => from_c += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let common::Node {
        events,
        peer_id: b_id,
        network: _b_network,
        ..
    } = b;
    let server = spawn_echo_server(events);
    let big = Bytes::from(vec![7u8; 1 << 20]);
    assert_eq!(
        a.sender.rpc(b_id, RPC, big.clone(), TIMEOUT).await.unwrap(),
        big
    );
    assert_eq!(
        c.sender.rpc(b_id, RPC, bytes("hi"), TIMEOUT).await.unwrap(),
        bytes("hi")
    );

    // Disconnect: the caller sees LostPeer, and RPCs fail with NotConnected.
    a.sender.disconnect(b_id).await.unwrap();
    match a.next_event().await {
        Event::LostPeer {
            peer_id, reason, ..
        } => {
            assert_eq!(peer_id, b_id);
            assert_eq!(reason, DisconnectReason::Requested);
        }
        other => panic!("expected LostPeer, got {other:?}"),
    }
    assert_eq!(
        a.sender.rpc(b_id, RPC, bytes("x"), TIMEOUT).await,
        Err(RpcError::NotConnected(b_id))
    );
    server.abort();
}

#[tokio::test]
async fn simultaneous_dials_over_tcp_keep_one_connection() {
    for _ in 0..10 {
        let nodes = start_nodes(Net::Tcp, 2);
        let (ra, rb) = tokio::join!(
            nodes[0].sender.dial(nodes[1].addr.clone()),
            nodes[1].sender.dial(nodes[0].addr.clone())
        );
        ra.unwrap();
        rb.unwrap();
        // Wait (bounded) until each side holds exactly the connection the rule keeps.
        let expected_at_0 = if nodes[0].peer_id < nodes[1].peer_id {
            ConnectionOrigin::Outbound
        } else {
            ConnectionOrigin::Inbound
        };
        let settled = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let p0 = nodes[0].sender.connected_peers();
                let p1 = nodes[1].sender.connected_peers();
                if p0.len() == 1
                    && p1.len() == 1
                    && p0[0].origin == expected_at_0
                    && p1[0].origin != expected_at_0
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(settled.is_ok(), "both ends settled on the same connection");
    }
}
