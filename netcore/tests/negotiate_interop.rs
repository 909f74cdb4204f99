//! Interop of our protocol negotiation with libp2p's `multistream-select`, an
//! independent implementation of the same spec, in both roles and both dialer modes
//! (their `V1Lazy` is their optimistic mode), over in-memory sockets.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use memsocket::MemorySocket;
use multistream_select::{NegotiationError, Version, dialer_select_proto, listener_select_proto};
use netcore::negotiate::{
    NegotiateError, negotiate_inbound, negotiate_outbound_interactive, negotiate_outbound_select,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

const RPC: &str = "/net/rpc/1";
const DIRECT: &str = "/net/direct/1";

/// A socket pair whose second end speaks futures-io, for their side.
fn pair() -> (MemorySocket, Compat<MemorySocket>) {
    let (ours, theirs) = MemorySocket::new_pair();
    (ours, theirs.compat())
}

#[tokio::test]
async fn our_optimistic_dialer_with_their_listener() {
    let (ours, theirs) = pair();
    let listening = tokio::spawn(async move {
        let (protocol, mut io) = listener_select_proto(theirs, [DIRECT, RPC]).await.unwrap();
        let mut request = [0u8; 7];
        io.read_exact(&mut request).await.unwrap();
        io.write_all(b"response").await.unwrap();
        io.flush().await.unwrap();
        (protocol, request)
    });

    let mut out = negotiate_outbound_select(ours, RPC).unwrap();
    out.write_all(b"request").await.unwrap();
    out.flush().await.unwrap();
    let mut response = [0u8; 8];
    out.read_exact(&mut response).await.unwrap();

    assert_eq!(&response, b"response");
    assert_eq!(listening.await.unwrap(), (RPC, *b"request"));
}

#[tokio::test]
async fn our_interactive_dialer_with_their_listener_falls_back() {
    let (ours, theirs) = pair();
    let listening = tokio::spawn(async move {
        let (protocol, mut io) = listener_select_proto(theirs, [DIRECT]).await.unwrap();
        io.write_all(b"hi").await.unwrap();
        io.flush().await.unwrap();
        protocol
    });

    let (mut out, index) = negotiate_outbound_interactive(ours, &[RPC, DIRECT])
        .await
        .unwrap();
    assert_eq!(index, 1);
    let mut hi = [0u8; 2];
    out.read_exact(&mut hi).await.unwrap();
    assert_eq!(&hi, b"hi");
    assert_eq!(listening.await.unwrap(), DIRECT);
}

#[tokio::test]
async fn our_interactive_dialer_refused_by_their_listener() {
    let (ours, theirs) = pair();
    let listening = tokio::spawn(async move {
        listener_select_proto(theirs, [DIRECT])
            .await
            .map(|(p, _)| p)
    });

    let result = negotiate_outbound_interactive(ours, &[RPC]).await;
    assert!(matches!(result, Err(NegotiateError::Refused)));
    // Our dialer drops the stream: their listener sees a failed negotiation.
    assert!(matches!(
        listening.await.unwrap(),
        Err(NegotiationError::Failed)
    ));
}

#[tokio::test]
async fn our_optimistic_dialer_refused_by_their_listener() {
    let (ours, theirs) = pair();
    let listening = tokio::spawn(async move {
        listener_select_proto(theirs, [DIRECT])
            .await
            .map(|(p, _)| p)
    });

    let mut out = negotiate_outbound_select(ours, RPC).unwrap();
    out.write_all(b"request").await.unwrap();
    out.flush().await.unwrap();
    let err = out.read(&mut [0u8; 8]).await.unwrap_err();
    assert!(matches!(
        NegotiateError::from_io(&err),
        Some(NegotiateError::Refused)
    ));
    drop(out);
    assert!(matches!(
        listening.await.unwrap(),
        Err(NegotiationError::Failed)
    ));
}

#[tokio::test]
async fn their_dialer_with_our_listener() {
    let (ours, theirs) = pair();
    let dialing = tokio::spawn(async move {
        let (protocol, mut io) = dialer_select_proto(theirs, ["/net/rpc/2", RPC], Version::V1)
            .await
            .unwrap();
        io.write_all(b"request").await.unwrap();
        io.flush().await.unwrap();
        let mut response = [0u8; 8];
        io.read_exact(&mut response).await.unwrap();
        (protocol, response)
    });

    let (mut inbound, index) = negotiate_inbound(ours, &[DIRECT, RPC]).await.unwrap();
    assert_eq!(index, 1);
    let mut request = [0u8; 7];
    inbound.read_exact(&mut request).await.unwrap();
    assert_eq!(&request, b"request");
    inbound.write_all(b"response").await.unwrap();
    inbound.flush().await.unwrap();
    assert_eq!(dialing.await.unwrap(), (RPC, *b"response"));
}

#[tokio::test]
async fn their_lazy_dialer_data_reaches_our_listener_intact() {
    let (ours, theirs) = pair();
    let request: Vec<u8> = (0..3000u32).map(|i| (i % 253) as u8).collect();
    let sent = request.clone();
    let dialing = tokio::spawn(async move {
        let (protocol, mut io) = dialer_select_proto(theirs, [RPC], Version::V1Lazy)
            .await
            .unwrap();
        io.write_all(&sent).await.unwrap();
        io.flush().await.unwrap();
        let mut response = [0u8; 2];
        io.read_exact(&mut response).await.unwrap();
        (protocol, response)
    });

    let (mut inbound, index) = negotiate_inbound(ours, &[RPC]).await.unwrap();
    assert_eq!(index, 0);
    let mut received = vec![0u8; request.len()];
    inbound.read_exact(&mut received).await.unwrap();
    assert_eq!(received, request);
    inbound.write_all(b"ok").await.unwrap();
    assert_eq!(dialing.await.unwrap(), (RPC, *b"ok"));
}

#[tokio::test]
async fn their_dialer_refused_by_our_listener() {
    let (ours, theirs) = pair();
    let dialing = tokio::spawn(async move {
        dialer_select_proto(theirs, [RPC], Version::V1)
            .await
            .map(|(p, _)| p)
    });
    let result = negotiate_inbound(ours, &[DIRECT]).await;
    assert!(matches!(result, Err(NegotiateError::Refused)));
    assert!(matches!(
        dialing.await.unwrap(),
        Err(NegotiationError::Failed)
    ));
}

#[tokio::test]
async fn their_lazy_dialer_refused_by_our_listener() {
    let (ours, theirs) = pair();
    let dialing = tokio::spawn(async move {
        let (_, mut io) = dialer_select_proto(theirs, [RPC], Version::V1Lazy)
            .await
            .unwrap();
        io.write_all(b"request").await.unwrap();
        io.flush().await.unwrap();
        io.read(&mut [0u8; 8]).await.unwrap_err()
    });
    let result = negotiate_inbound(ours, &[DIRECT]).await;
    assert!(matches!(result, Err(NegotiateError::Refused)));
    let err = dialing.await.unwrap();
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<NegotiationError>());
    assert!(matches!(inner, Some(NegotiationError::Failed)), "{err:?}");
}
