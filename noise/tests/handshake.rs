//! The Noise IK handshake: who is accepted, and each refusal with its own typed error.
#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::time::Duration;

use memsocket::MemorySocket;
use netcore::transport::ConnectionOrigin;
use netcore::{NetworkAddress, PeerId};
use noise::{Identity, NoiseConfig, NoiseError, NoiseUpgrader, TrustedPeers};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn upgrader(identity: &Identity, config: NoiseConfig) -> NoiseUpgrader {
    NoiseUpgrader::new(identity.clone(), config)
}

/// Dials `listener` from `dialer` expecting `expected`; returns both results.
async fn handshake(
    dialer: &NoiseUpgrader,
    listener: &NoiseUpgrader,
    expected: PeerId,
) -> (Result<PeerId, NoiseError>, Result<PeerId, NoiseError>) {
    let (a, b) = MemorySocket::new_pair();
    let (out, inb) = tokio::join!(
        dialer.upgrade_outbound(a, expected),
        listener.upgrade_inbound(b)
    );
    (out.map(|(_, r)| r.peer_id), inb.map(|(_, r)| r.peer_id))
}

#[tokio::test]
async fn mutual_mode_accepts_a_trusted_dialer_and_both_learn_each_other() {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let trusted = TrustedPeers::from_peers([alice.peer_id(), bob.peer_id()]).unwrap();
    let a = upgrader(&alice, NoiseConfig::mutual(trusted.clone()));
    let b = upgrader(&bob, NoiseConfig::mutual(trusted));
    let (out, inb) = handshake(&a, &b, bob.peer_id()).await;
    assert_eq!(out.unwrap(), bob.peer_id());
    assert_eq!(inb.unwrap(), alice.peer_id());
}

#[tokio::test]
async fn open_mode_accepts_any_dialer_and_derives_its_peer_id() {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let a = upgrader(&alice, NoiseConfig::open());
    let b = upgrader(&bob, NoiseConfig::open());
    let (a_sock, b_sock) = MemorySocket::new_pair();
    let (out, inb) = tokio::join!(
        a.upgrade_outbound(a_sock, bob.peer_id()),
        b.upgrade_inbound(b_sock)
    );
    let (_, remote) = inb.unwrap();
    assert_eq!(remote.peer_id, alice.peer_id());
    assert_eq!(remote.static_key, alice.x25519_public());
    assert_eq!(out.unwrap().1.static_key, bob.x25519_public());
}

#[tokio::test]
async fn mutual_mode_refuses_an_untrusted_dialer() {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let a = upgrader(&alice, NoiseConfig::open());
    let b = upgrader(
        &bob,
        NoiseConfig::mutual(TrustedPeers::from_peers([bob.peer_id()]).unwrap()),
    );
    let (out, inb) = handshake(&a, &b, bob.peer_id()).await;
    assert!(matches!(inb, Err(NoiseError::UntrustedPeer(p)) if p == alice.peer_id()));
    assert!(out.is_err(), "the dialer sees the connection closed");
}

#[tokio::test]
async fn trusted_set_changes_apply_to_the_next_handshake() {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let trusted = TrustedPeers::new();
    let a = upgrader(&alice, NoiseConfig::open());
    let b = upgrader(&bob, NoiseConfig::mutual(trusted.clone()));
    assert!(matches!(
        handshake(&a, &b, bob.peer_id()).await.1,
        Err(NoiseError::UntrustedPeer(_))
    ));
    assert!(trusted.insert(alice.peer_id()).unwrap());
    assert_eq!(
        handshake(&a, &b, bob.peer_id()).await.1.unwrap(),
        alice.peer_id()
    );
    assert!(trusted.remove(&alice.peer_id()));
    assert!(matches!(
        handshake(&a, &b, bob.peer_id()).await.1,
        Err(NoiseError::UntrustedPeer(_))
    ));
    trusted.replace([alice.peer_id()]).unwrap();
    assert!(handshake(&a, &b, bob.peer_id()).await.1.is_ok());
}

#[tokio::test]
async fn listener_refuses_a_dialer_expecting_another_key() {
    let (alice, bob, carol) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let a = upgrader(&alice, NoiseConfig::open());
    let b = upgrader(&bob, NoiseConfig::open());
    // Alice thinks she reaches Carol, but Bob answers.
    let (out, inb) = handshake(&a, &b, carol.peer_id()).await;
    assert!(
        matches!(inb, Err(NoiseError::WrongExpectedKey(k)) if k == carol.x25519_public().to_bytes())
    );
    assert!(out.is_err());
}

#[tokio::test]
async fn dialing_ourselves_is_refused_before_any_byte_is_sent() {
    let alice = Identity::generate();
    let a = upgrader(&alice, NoiseConfig::open());
    let (sock, mut other) = MemorySocket::new_pair();
    let result = a.upgrade_outbound(sock, alice.peer_id()).await;
    assert!(matches!(result, Err(NoiseError::SelfDial)));
    let mut buf = Vec::new();
    other.read_to_end(&mut buf).await.unwrap();
    assert!(buf.is_empty());
}

#[tokio::test]
async fn listener_refuses_a_dialer_claiming_its_own_peer_id() {
    // Alice's key, loaded twice (e.g. a copied key file): the listener sees itself.
    let alice = Identity::generate();
    let listener = upgrader(&alice, NoiseConfig::open());
    let (a, b) = MemorySocket::new_pair();
    // Our own dialer refuses first, so write its first bytes by hand: our own id, then
    // our key as the expected one.
    let mut prefix = alice.peer_id().as_bytes().to_vec();
    prefix.extend_from_slice(alice.x25519_public().as_bytes());
    let mut a = a;
    a.write_all(&prefix).await.unwrap();
    assert!(matches!(
        listener.upgrade_inbound(b).await,
        Err(NoiseError::SelfDial)
    ));
}

/// Runs a successful handshake from `a` to `b` (whose peer id is `b_id`) through a tap,
/// and returns what `a` sent: the prologue and message 1 (64 + 2 + 104 bytes).
async fn recorded_first_flight(a: &NoiseUpgrader, b: &NoiseUpgrader, b_id: PeerId) -> Vec<u8> {
    let (a_sock, mut tap) = MemorySocket::new_pair();
    let (b_sock, mut b_side) = MemorySocket::new_pair();
    let relay = async {
        let mut first = vec![0u8; 64 + 2 + 104];
        tap.read_exact(&mut first).await.unwrap();
        b_side.write_all(&first).await.unwrap();
        let mut reply = vec![0u8; 2 + 48];
        b_side.read_exact(&mut reply).await.unwrap();
        tap.write_all(&reply).await.unwrap();
        first
    };
    let (out, inb, first) = tokio::join!(
        a.upgrade_outbound(a_sock, b_id),
        b.upgrade_inbound(b_sock),
        relay
    );
    out.unwrap();
    inb.unwrap();
    first
}

#[tokio::test]
async fn a_replayed_first_message_is_refused() {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let a = upgrader(&alice, NoiseConfig::open());
    let b = upgrader(&bob, NoiseConfig::open());
    let first = recorded_first_flight(&a, &b, bob.peer_id()).await;
    // An eavesdropper replays it.
    let (mut attacker, b_sock) = MemorySocket::new_pair();
    attacker.write_all(&first).await.unwrap();
    let result = b.upgrade_inbound(b_sock).await;
    assert!(
        matches!(result, Err(NoiseError::Replay { peer, .. }) if peer == alice.peer_id()),
        "{result:?}"
    );
}

fn system_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn a_first_message_replayed_after_the_listener_restarts_is_refused() {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let a = upgrader(&alice, NoiseConfig::open());
    let b = upgrader(&bob, NoiseConfig::open());
    let first = recorded_first_flight(&a, &b, bob.peer_id()).await;
    // Bob restarts: a new upgrader with the same key and no memory of Alice. (The
    // clock first moves past the handshake, as any restart takes longer.)
    let handshake_done = system_ms();
    while system_ms() <= handshake_done {
        tokio::task::yield_now().await;
    }
    drop(b);
    let restarted = upgrader(&bob, NoiseConfig::open());
    let (mut attacker, b_sock) = MemorySocket::new_pair();
    attacker.write_all(&first).await.unwrap();
    let result = restarted.upgrade_inbound(b_sock).await;
    assert!(
        matches!(result, Err(NoiseError::Replay { peer, .. }) if peer == alice.peer_id()),
        "{result:?}"
    );
    // Alice herself connects to the restarted Bob at once.
    let (out, inb) = handshake(&a, &restarted, bob.peer_id()).await;
    out.unwrap();
    inb.unwrap();
}

#[tokio::test]
async fn quick_successive_dials_are_not_taken_for_replays() {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let a = upgrader(&alice, NoiseConfig::open());
    let b = upgrader(&bob, NoiseConfig::open());
    for _ in 0..20 {
        let (out, inb) = handshake(&a, &b, bob.peer_id()).await;
        out.unwrap();
        inb.unwrap();
    }
}

#[tokio::test]
async fn a_static_key_not_matching_the_claimed_peer_id_is_refused() {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let b = upgrader(
        &bob,
        NoiseConfig::mutual(TrustedPeers::from_peers([alice.peer_id()]).unwrap()),
    );
    // Mallory claims Alice's (trusted) id in a well-formed handshake, with her own key.
    let builder = noise::DEFAULT_SUITE.builder().unwrap();
    let mallory_key = builder.generate_keypair().unwrap();
    let mut prologue = alice.peer_id().as_bytes().to_vec();
    prologue.extend_from_slice(bob.x25519_public().as_bytes());
    let mut state = builder
        .local_private_key(&mallory_key.private)
        .unwrap()
        .remote_public_key(bob.x25519_public().as_bytes())
        .unwrap()
        .prologue(&prologue)
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut message = [0u8; 256];
    let len = state
        .write_message(&u64::MAX.to_be_bytes(), &mut message)
        .unwrap();
    let mut bytes = prologue.clone();
    bytes.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
    bytes.extend_from_slice(&message[..len]);
    let (mut mallory, b_sock) = MemorySocket::new_pair();
    mallory.write_all(&bytes).await.unwrap();
    let result = b.upgrade_inbound(b_sock).await;
    assert!(
        matches!(result, Err(NoiseError::StaticKeyMismatch(p)) if p == alice.peer_id()),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_timestamp_far_in_the_future_is_refused() {
    let bob = Identity::generate();
    let b = upgrader(&bob, NoiseConfig::open());
    // A well-formed first message from Alice's key, with a timestamp far ahead.
    let secret = [3u8; 32];
    let alice = Identity::from_secret_bytes(&secret);
    let scalar = ed25519_scalar(&secret);
    let mut prologue = alice.peer_id().as_bytes().to_vec();
    prologue.extend_from_slice(bob.x25519_public().as_bytes());
    let mut state = noise::DEFAULT_SUITE
        .builder()
        .unwrap()
        .local_private_key(&scalar)
        .unwrap()
        .remote_public_key(bob.x25519_public().as_bytes())
        .unwrap()
        .prologue(&prologue)
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut message = [0u8; 256];
    let len = state
        .write_message(&u64::MAX.to_be_bytes(), &mut message)
        .unwrap();
    let mut bytes = prologue;
    bytes.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
    bytes.extend_from_slice(&message[..len]);
    let (mut dialer, b_sock) = MemorySocket::new_pair();
    dialer.write_all(&bytes).await.unwrap();
    let result = b.upgrade_inbound(b_sock).await;
    assert!(
        matches!(
            result,
            Err(NoiseError::TimestampInFuture {
                timestamp: u64::MAX,
                ..
            })
        ),
        "{result:?}"
    );
}

/// The X25519 secret an identity derives: the first half of SHA-512 of the ed25519 secret.
fn ed25519_scalar(secret: &[u8; 32]) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(secret).to_scalar_bytes()
}

#[tokio::test]
async fn garbage_first_message_is_a_handshake_error() {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let b = upgrader(&bob, NoiseConfig::open());
    let (mut attacker, b_sock) = MemorySocket::new_pair();
    let mut bytes = alice.peer_id().as_bytes().to_vec();
    bytes.extend_from_slice(bob.x25519_public().as_bytes());
    bytes.extend_from_slice(&104u16.to_be_bytes());
    bytes.extend_from_slice(&[0xa5; 104]);
    attacker.write_all(&bytes).await.unwrap();
    assert!(matches!(
        b.upgrade_inbound(b_sock).await,
        Err(NoiseError::Handshake(_))
    ));
}

#[tokio::test]
async fn a_first_message_shorter_than_ik_needs_is_a_handshake_error() {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let b = upgrader(&bob, NoiseConfig::open());
    let (mut attacker, b_sock) = MemorySocket::new_pair();
    let mut bytes = alice.peer_id().as_bytes().to_vec();
    bytes.extend_from_slice(bob.x25519_public().as_bytes());
    bytes.extend_from_slice(&3u16.to_be_bytes());
    bytes.extend_from_slice(&[1, 2, 3]);
    attacker.write_all(&bytes).await.unwrap();
    assert!(matches!(
        b.upgrade_inbound(b_sock).await,
        Err(NoiseError::Handshake(_))
    ));
}

#[tokio::test]
async fn a_truncated_handshake_message_is_refused_as_truncated() {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let b = upgrader(&bob, NoiseConfig::open());
    let (mut attacker, b_sock) = MemorySocket::new_pair();
    let mut bytes = alice.peer_id().as_bytes().to_vec();
    bytes.extend_from_slice(bob.x25519_public().as_bytes());
    // Declares the longest message, sends 10 bytes of it, and hangs up.
    bytes.extend_from_slice(&u16::MAX.to_be_bytes());
    bytes.extend_from_slice(&[0; 10]);
    attacker.write_all(&bytes).await.unwrap();
    drop(attacker);
    assert!(matches!(
        b.upgrade_inbound(b_sock).await,
        Err(NoiseError::Truncated)
    ));
    // A prologue cut short is refused the same way.
    let (mut attacker, b_sock) = MemorySocket::new_pair();
    attacker.write_all(&[1; 40]).await.unwrap();
    drop(attacker);
    assert!(matches!(
        b.upgrade_inbound(b_sock).await,
        Err(NoiseError::Truncated)
    ));
}

#[tokio::test]
async fn a_garbage_reply_is_a_handshake_error_for_the_dialer() {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let a = upgrader(&alice, NoiseConfig::open());
    let (a_sock, mut fake) = MemorySocket::new_pair();
    let fake_listener = async {
        let mut first = vec![0u8; 64 + 2 + 104];
        fake.read_exact(&mut first).await.unwrap();
        let mut reply = 48u16.to_be_bytes().to_vec();
        reply.extend_from_slice(&[7; 48]);
        fake.write_all(&reply).await.unwrap();
        fake
    };
    let (out, _fake) = tokio::join!(a.upgrade_outbound(a_sock, bob.peer_id()), fake_listener);
    assert!(matches!(out, Err(NoiseError::Handshake(_))), "{out:?}");
}

#[tokio::test(start_paused = true)]
async fn a_silent_remote_times_out_either_side() {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let mut config = NoiseConfig::open();
    config.timeout = Duration::from_secs(5);
    let a = upgrader(&alice, config.clone());
    let b = upgrader(&bob, config);
    let (a_sock, _silent_listener) = MemorySocket::new_pair();
    let out = a.upgrade_outbound(a_sock, bob.peer_id()).await;
    assert!(matches!(out, Err(NoiseError::Timeout(d)) if d == Duration::from_secs(5)));
    let (b_sock, _silent_dialer) = MemorySocket::new_pair();
    let inb = b.upgrade_inbound(b_sock).await;
    assert!(matches!(inb, Err(NoiseError::Timeout(_))));
}

#[tokio::test(start_paused = true)]
async fn inbound_handshakes_over_the_limit_are_refused_at_once() {
    let bob = Identity::generate();
    let mut config = NoiseConfig::open();
    config.max_concurrent_inbound = 2;
    let b = upgrader(&bob, config);
    let mut silent = Vec::new();
    let mut running = Vec::new();
    for _ in 0..2 {
        let (dialer, sock) = MemorySocket::new_pair();
        silent.push(dialer);
        let b = b.clone();
        running.push(tokio::spawn(async move { b.upgrade_inbound(sock).await }));
    }
    tokio::task::yield_now().await;
    let (_dialer, sock) = MemorySocket::new_pair();
    assert!(matches!(
        b.upgrade_inbound(sock).await,
        Err(NoiseError::TooManyHandshakes { limit: 2 })
    ));
    // Once they end (here by timing out), permits come back.
    for task in running {
        assert!(matches!(task.await.unwrap(), Err(NoiseError::Timeout(_))));
    }
    let (_dialer, sock) = MemorySocket::new_pair();
    assert!(matches!(
        b.upgrade_inbound(sock).await,
        Err(NoiseError::Timeout(_))
    ));
}

#[tokio::test]
async fn upgrade_needs_a_peer_id_in_the_address_to_dial() {
    let alice = Identity::generate();
    let a = upgrader(&alice, NoiseConfig::open());
    let (sock, _other) = MemorySocket::new_pair();
    let addr = NetworkAddress::memory(7);
    let result = a
        .upgrade(sock, addr.clone(), ConnectionOrigin::Outbound)
        .await;
    assert!(matches!(result, Err(NoiseError::MissingPeerId(a)) if a == addr));
}
