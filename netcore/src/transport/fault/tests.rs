//! Tests of the fault-injection transport: partitions, cuts and latency over memory and
//! TCP sockets.

use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::*;
use crate::transport::{MemoryTransport, TcpTransport};

type Node<T> = (
    FaultyTransport<T>,
    FaultyListener<<T as Transport>::Output>,
    NetworkAddress,
);

fn node<T>(faults: &FaultController, base: T, name: &str, addr: &str) -> Node<T>
where
    T: Transport<Error = TransportError>,
    T::Output: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T::Inbound: 'static,
    T::Outbound: 'static,
    T::Listener: 'static,
{
    let t = faults.transport(base, name);
    let (listener, bound) = t.listen_on(addr.parse().unwrap()).unwrap();
    (t, listener, bound)
}

/// Dials `to` and returns both ends, the dialer's first.
async fn connect<S>(
    from: &FaultyTransport<
        impl Transport<
            Output = S,
            Error = TransportError,
            Inbound: 'static,
            Outbound: 'static,
            Listener: 'static,
        >,
    >,
    listener: &mut FaultyListener<S>,
    to: &NetworkAddress,
) -> (FaultyStream<S>, FaultyStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let dial = from.dial(to.clone()).unwrap();
    let accept = async {
        let (inbound, _) = listener.next().await.unwrap().unwrap();
        inbound.await
    };
    let (out, inb) = futures::join!(dial, accept);
    (out.unwrap(), inb.unwrap())
}

async fn ends_for_both<S: AsyncRead + AsyncWrite + Unpin>(
    dialer: &mut FaultyStream<S>,
    listener: &mut FaultyStream<S>,
) {
    let mut buf = [0u8; 8];
    let err = dialer.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    // The dialer's socket is gone, so the listener reads EOF (or a reset).
    match listener.read(&mut buf).await {
        Ok(n) => assert_eq!(n, 0),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
    }
}

async fn works<S: AsyncRead + AsyncWrite + Unpin>(
    a: &mut FaultyStream<S>,
    b: &mut FaultyStream<S>,
) {
    a.write_all(b"ping").await.unwrap();
    a.flush().await.unwrap();
    let mut buf = [0u8; 4];
    b.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test(start_paused = true)]
async fn a_partition_refuses_dials_both_ways_until_healed() {
    let faults = FaultController::new();
    let (a, mut a_listener, a_addr) = node(&faults, MemoryTransport::default(), "a", "/memory/0");
    let (b, mut b_listener, b_addr) = node(&faults, MemoryTransport::default(), "b", "/memory/0");
    faults.partition(&["a"], &["b"]);
    assert!(faults.is_partitioned("b", "a"));
    let refused = a.dial(b_addr.clone()).err().unwrap();
    assert!(
        matches!(refused, TransportError::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused)
    );
    assert!(b.dial(a_addr.clone()).is_err());
    assert_eq!(faults.stats().dials_refused, 2);

    faults.heal();
    let (mut x, mut y) = connect(&a, &mut b_listener, &b_addr).await;
    works(&mut x, &mut y).await;
    let (mut x, mut y) = connect(&b, &mut a_listener, &a_addr).await;
    works(&mut x, &mut y).await;
}

#[tokio::test(start_paused = true)]
async fn a_partition_cuts_the_connections_between_the_groups_and_no_others() {
    let faults = FaultController::new();
    let (a, _a_listener, _) = node(&faults, MemoryTransport::default(), "a", "/memory/0");
    let (_b, mut b_listener, b_addr) = node(&faults, MemoryTransport::default(), "b", "/memory/0");
    let (_c, mut c_listener, c_addr) = node(&faults, MemoryTransport::default(), "c", "/memory/0");
    let (mut ab, mut ba) = connect(&a, &mut b_listener, &b_addr).await;
    let (mut ac, mut ca) = connect(&a, &mut c_listener, &c_addr).await;

    faults.partition(&["a"], &["b"]);
    assert_eq!(faults.stats().connections_cut, 1);
    ends_for_both(&mut ab, &mut ba).await;
    assert!(ab.is_cut());
    works(&mut ac, &mut ca).await;
    works(&mut ca, &mut ac).await;
}

#[test]
fn a_dialed_connection_learns_its_remote_when_it_is_made_not_when_dialed() {
    // A node dials an address before the node behind it listens (nodes that start
    // together do), and the connection is made once it listens: a partition must
    // still cover it.
    let faults = FaultController::new();
    let addr: NetworkAddress = "/memory/4242".parse().unwrap();
    faults
        .state
        .lock()
        .listeners
        .insert(addr.clone(), Arc::from("b"));
    let conn = faults.register(Arc::from("a"), Some(addr));
    let remote = conn.remote_in(&faults.state.lock().listeners);
    assert_eq!(remote.as_deref(), Some("b"));
    faults.partition(&["a"], &["b"]);
    assert!(conn.cut.load(Ordering::SeqCst));
    assert_eq!(faults.stats().connections_cut, 1);
}

#[test]
fn a_connection_made_before_its_listener_registered_is_still_partitioned() {
    // The listener's socket listens a moment before the controller learns its
    // address; a dial that connects in between learns its remote at the partition.
    let faults = FaultController::new();
    let addr: NetworkAddress = "/memory/4243".parse().unwrap();
    let conn = faults.register(Arc::from("a"), Some(addr.clone()));
    assert_eq!(conn.remote_in(&faults.state.lock().listeners), None);
    faults.state.lock().listeners.insert(addr, Arc::from("b"));
    faults.partition(&["a"], &["c"]);
    assert!(!conn.cut.load(Ordering::SeqCst), "not between a and c");
    faults.partition(&["a"], &["b"]);
    assert!(conn.cut.load(Ordering::SeqCst));
    let other = faults.register(Arc::from("c"), Some("/memory/4244".parse().unwrap()));
    faults
        .state
        .lock()
        .listeners
        .insert("/memory/4244".parse().unwrap(), Arc::from("d"));
    assert_eq!(faults.cut_node("d"), 1);
    assert!(other.cut.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn a_cut_wakes_a_blocked_reader() {
    let faults = FaultController::new();
    let (a, _al, _) = node(&faults, MemoryTransport::default(), "a", "/memory/0");
    let (_b, mut b_listener, b_addr) = node(&faults, MemoryTransport::default(), "b", "/memory/0");
    let (mut ab, _ba) = connect(&a, &mut b_listener, &b_addr).await;
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 1];
        ab.read(&mut buf).await
    });
    tokio::task::yield_now().await;
    assert_eq!(faults.cut_all(), 2);
    let err = reader.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
}

#[tokio::test(start_paused = true)]
async fn cutting_a_node_ends_its_connections_and_new_ones_work() {
    let faults = FaultController::new();
    let (a, _al, _) = node(&faults, MemoryTransport::default(), "a", "/memory/0");
    let (_b, mut b_listener, b_addr) = node(&faults, MemoryTransport::default(), "b", "/memory/0");
    let (mut ab, mut ba) = connect(&a, &mut b_listener, &b_addr).await;
    assert_eq!(faults.open_connections(), 2);
    assert_eq!(faults.cut_node("b"), 2);
    ends_for_both(&mut ab, &mut ba).await;
    assert_eq!(faults.open_connections(), 0);
    let (mut x, mut y) = connect(&a, &mut b_listener, &b_addr).await;
    works(&mut x, &mut y).await;
}

#[tokio::test(start_paused = true)]
async fn latency_delays_each_write_and_each_new_connection() {
    let faults = FaultController::new();
    let (a, _al, _) = node(&faults, MemoryTransport::default(), "a", "/memory/0");
    let (_b, mut b_listener, b_addr) = node(&faults, MemoryTransport::default(), "b", "/memory/0");
    faults.set_latency(Duration::from_millis(50));
    let start = Instant::now();
    let (mut ab, mut ba) = connect(&a, &mut b_listener, &b_addr).await;
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    let start = Instant::now();
    works(&mut ab, &mut ba).await;
    works(&mut ba, &mut ab).await;
    assert_eq!(start.elapsed(), Duration::from_millis(100));

    faults.set_latency(Duration::ZERO);
    let start = Instant::now();
    works(&mut ab, &mut ba).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn faults_work_over_tcp() {
    let faults = FaultController::new();
    let (a, _al, _) = node(
        &faults,
        TcpTransport::default(),
        "a",
        "/ip4/127.0.0.1/tcp/0",
    );
    let (_b, mut b_listener, b_addr) = node(
        &faults,
        TcpTransport::default(),
        "b",
        "/ip4/127.0.0.1/tcp/0",
    );
    let (mut ab, mut ba) = connect(&a, &mut b_listener, &b_addr).await;
    works(&mut ab, &mut ba).await;
    faults.partition(&["a"], &["b"]);
    ends_for_both(&mut ab, &mut ba).await;
    assert!(a.dial(b_addr.clone()).is_err());
    faults.heal();
    let (mut ab, mut ba) = connect(&a, &mut b_listener, &b_addr).await;
    works(&mut ba, &mut ab).await;
}
