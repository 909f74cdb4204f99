use netcore::NetworkAddress;
use noise::{Identity, TrustedPeers};

use super::{Merge, NoteBook};
use crate::discovery::error::NoteError;
use crate::discovery::note::{SignedNote, signing_bytes};

fn id(seed: u8) -> Identity {
    Identity::from_secret_bytes(&[seed; 32])
}

fn note(identity: &Identity, port: u16, epoch: u64) -> SignedNote {
    SignedNote::sign(identity, &[NetworkAddress::memory(port)], epoch)
}

fn book(me: &Identity) -> NoteBook {
    NoteBook::new(note(me, 1, 100), 4)
}

#[test]
fn a_newer_epoch_wins_and_an_older_or_equal_one_is_stale() {
    let (me, peer) = (id(1), id(2));
    let mut book = book(&me);
    assert_eq!(book.merge(note(&peer, 5, 10), None), Ok(Merge::Added));
    assert_eq!(book.merge(note(&peer, 6, 10), None), Ok(Merge::Stale));
    assert_eq!(book.merge(note(&peer, 7, 9), None), Ok(Merge::Stale));
    assert_eq!(book.merge(note(&peer, 8, 11), None), Ok(Merge::Updated));
    let held = book.get(&peer.peer_id()).unwrap();
    assert_eq!((held.epoch(), held.addresses()[0].port()), (11, 8));
}

#[test]
fn a_bad_signature_is_dropped() {
    let (me, peer, forger) = (id(1), id(2), id(3));
    let mut book = book(&me);
    // The forger signs a note that claims to be about `peer`.
    let mut wire = note(&forger, 5, 10).to_proto();
    wire.peer_id = bytes::Bytes::copy_from_slice(peer.peer_id().as_bytes());
    let forged = SignedNote::from_proto(&wire, 8).unwrap();
    assert_eq!(book.merge(forged, None), Err(NoteError::BadSignature));
    // A tampered epoch breaks the signature too.
    let mut wire = note(&peer, 5, 10).to_proto();
    wire.epoch = 11;
    let tampered = SignedNote::from_proto(&wire, 8).unwrap();
    assert_eq!(book.merge(tampered, None), Err(NoteError::BadSignature));
    assert!(book.get(&peer.peer_id()).is_none());
}

#[test]
fn a_note_whose_address_names_another_peer_is_dropped() {
    let (peer, other) = (id(2), id(3));
    let mut wire = note(&peer, 5, 10).to_proto();
    wire.addresses = vec![
        NetworkAddress::memory(5)
            .with_peer_id(other.peer_id())
            .to_string(),
    ];
    assert_eq!(
        SignedNote::from_proto(&wire, 8),
        Err(NoteError::PeerMismatch(other.peer_id()))
    );
}

#[test]
fn too_many_addresses_are_refused_before_parsing() {
    let peer = id(2);
    let mut wire = note(&peer, 5, 10).to_proto();
    wire.addresses = vec!["not even an address".to_owned(); 9];
    assert_eq!(
        SignedNote::from_proto(&wire, 8),
        Err(NoteError::TooManyAddresses { count: 9, max: 8 })
    );
}

#[test]
fn in_mutual_mode_untrusted_peers_are_dropped() {
    let (me, friend, stranger) = (id(1), id(2), id(3));
    let trusted = TrustedPeers::from_peers([me.peer_id(), friend.peer_id()]).unwrap();
    let mut book = book(&me);
    assert_eq!(
        book.merge(note(&friend, 5, 10), Some(&trusted)),
        Ok(Merge::Added)
    );
    assert_eq!(
        book.merge(note(&stranger, 5, 10), Some(&trusted)),
        Err(NoteError::Untrusted(stranger.peer_id()))
    );
    // Open mode takes anyone.
    assert_eq!(book.merge(note(&stranger, 5, 10), None), Ok(Merge::Added));
}

#[test]
fn a_full_book_refuses_new_peers_but_updates_known_ones() {
    let me = id(1);
    let mut book = book(&me);
    for seed in 2..=4 {
        assert_eq!(book.merge(note(&id(seed), 5, 10), None), Ok(Merge::Added));
    }
    assert_eq!(book.len(), 4);
    assert_eq!(
        book.merge(note(&id(5), 5, 10), None),
        Err(NoteError::BookFull)
    );
    assert_eq!(book.merge(note(&id(2), 6, 11), None), Ok(Merge::Updated));
}

#[test]
fn a_newer_note_of_this_node_asks_for_a_later_epoch_and_is_not_stored() {
    let me = id(1);
    let mut book = book(&me);
    assert_eq!(book.merge(note(&me, 1, 100), None), Ok(Merge::Stale));
    assert_eq!(book.merge(note(&me, 2, 50), None), Ok(Merge::Stale));
    assert_eq!(
        book.merge(note(&me, 3, 200), None),
        Ok(Merge::OwnSuperseded { epoch: 200 })
    );
    assert_eq!(book.own().unwrap().epoch(), 100);
}

#[test]
fn notes_round_trip_through_the_wire_form() {
    let peer = id(2);
    let addrs = [
        "/ip4/10.0.0.1/tcp/6180".parse().unwrap(),
        NetworkAddress::memory(7).with_peer_id(peer.peer_id()),
    ];
    let original = SignedNote::sign(&peer, &addrs, 42);
    let back = SignedNote::from_proto(&original.to_proto(), 8).unwrap();
    assert_eq!(back, original);
    back.verify().unwrap();
    assert!(back.addresses().iter().all(|a| a.peer_id().is_none()));
}

#[test]
fn the_signed_encoding_is_domain_separated_and_length_prefixed() {
    let peer = id(2).peer_id();
    let bytes = signing_bytes(&peer, 0x0102, &[NetworkAddress::memory(9)]);
    let mut expected = b"NETSTACK_DISCOVERY_NOTE_V1".to_vec();
    expected.extend_from_slice(peer.as_bytes());
    expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]);
    expected.extend_from_slice(&[0, 0, 0, 1]);
    expected.extend_from_slice(&[0, 0, 0, 9]);
    expected.extend_from_slice(b"/memory/9");
    assert_eq!(bytes, expected);
}
