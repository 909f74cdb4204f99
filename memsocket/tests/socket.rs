//! The rules of `MemorySocket` and `MemoryListener`, one test each.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::io::ErrorKind;
use std::time::Duration;

use futures::StreamExt;
use memsocket::{MemoryListener, MemorySocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn data_flows_both_ways() {
    let (mut a, mut b) = MemorySocket::new_pair();
    a.write_all(b"hello").await.unwrap();
    b.write_all(b"world").await.unwrap();
    let mut buf = [0u8; 5];
    b.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
    a.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"world");
}

#[tokio::test(start_paused = true)]
async fn writer_waits_when_the_reader_falls_behind() {
    let (mut a, mut b) = MemorySocket::new_pair_with_capacity(8);
    // A partial write fills the buffer, then the writer must wait.
    assert_eq!(a.write(&[1u8; 20]).await.unwrap(), 8);
    let blocked = tokio::time::timeout(Duration::from_secs(1), a.write(&[2u8; 4])).await;
    assert!(blocked.is_err(), "a write into a full buffer must wait");

    // Reading frees room and the writer proceeds.
    let mut buf = [0u8; 8];
    b.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, [1u8; 8]);
    assert_eq!(a.write(&[2u8; 4]).await.unwrap(), 4);
}

#[tokio::test]
async fn backpressure_does_not_lose_or_reorder_bytes() {
    let (mut a, mut b) = MemorySocket::new_pair_with_capacity(1000);
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let expected = data.clone();
    let writer = tokio::spawn(async move {
        a.write_all(&data).await.unwrap();
        a.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    b.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn shutdown_half_closes() {
    let (mut a, mut b) = MemorySocket::new_pair();
    a.write_all(b"last words").await.unwrap();
    a.shutdown().await.unwrap();

    let mut got = Vec::new();
    b.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"last words");

    // The other direction still works after a half-close.
    b.write_all(b"reply").await.unwrap();
    let mut buf = [0u8; 5];
    a.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"reply");

    // Writing after our own shutdown fails.
    assert_eq!(
        a.write(b"x").await.unwrap_err().kind(),
        ErrorKind::BrokenPipe
    );
}

#[tokio::test]
async fn dropping_one_end_gives_eof_and_broken_pipe() {
    let (a, mut b) = MemorySocket::new_pair();
    drop(a);
    let mut buf = [0u8; 1];
    assert_eq!(b.read(&mut buf).await.unwrap(), 0, "read sees EOF");
    assert_eq!(
        b.write(b"x").await.unwrap_err().kind(),
        ErrorKind::BrokenPipe
    );
}

#[tokio::test]
async fn dropping_the_reader_wakes_a_blocked_writer() {
    let (mut a, b) = MemorySocket::new_pair_with_capacity(4);
    let writer = tokio::spawn(async move { a.write_all(&[0u8; 64]).await });
    tokio::task::yield_now().await;
    drop(b);
    let err = writer.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
}

#[tokio::test]
async fn dropping_the_writer_wakes_a_blocked_reader() {
    let (a, mut b) = MemorySocket::new_pair();
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        b.read_to_end(&mut buf).await.map(|_| buf)
    });
    tokio::task::yield_now().await;
    drop(a);
    assert!(reader.await.unwrap().unwrap().is_empty());
}

#[tokio::test]
async fn connect_without_listener_is_refused() {
    let listener = MemoryListener::bind(0).unwrap();
    let port = listener.local_addr();
    drop(listener);
    let err = MemorySocket::connect(port).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn listener_accepts_connections_through_incoming() {
    let mut listener = MemoryListener::bind(0).unwrap();
    let port = listener.local_addr();
    assert_ne!(port, 0, "port 0 picks a real port");

    let mut client = MemorySocket::connect(port).unwrap();
    let mut server = listener.incoming().next().await.unwrap().unwrap();
    client.write_all(b"hi").await.unwrap();
    let mut buf = [0u8; 2];
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hi");
}

#[tokio::test]
async fn bound_port_is_in_use_until_the_listener_drops() {
    let listener = MemoryListener::bind(0).unwrap();
    let port = listener.local_addr();
    assert_eq!(
        MemoryListener::bind(port).unwrap_err().kind(),
        ErrorKind::AddrInUse
    );
    drop(listener);
    let again = MemoryListener::bind(port).unwrap();
    assert_eq!(again.local_addr(), port);
}

#[tokio::test]
async fn ephemeral_ports_are_distinct() {
    let listeners: Vec<_> = (0..200).map(|_| MemoryListener::bind(0).unwrap()).collect();
    let mut ports: Vec<u16> = listeners.iter().map(|l| l.local_addr()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), listeners.len());
}

#[tokio::test]
async fn full_backlog_refuses_connections() {
    let mut listener = MemoryListener::bind_with(0, 1024, 2).unwrap();
    let port = listener.local_addr();
    let _a = MemorySocket::connect(port).unwrap();
    let _b = MemorySocket::connect(port).unwrap();
    assert_eq!(
        MemorySocket::connect(port).unwrap_err().kind(),
        ErrorKind::ConnectionRefused
    );
    // Accepting one makes room for another.
    let _accepted = listener.accept().await.unwrap();
    MemorySocket::connect(port).unwrap();
}
