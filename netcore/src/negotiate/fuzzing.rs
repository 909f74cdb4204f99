//! The negotiation fuzzing entry points; see [`crate::fuzzing`].

use bytes::BytesMut;

use super::core::{DialerCore, DialerProgress, ListenerCore, ListenerProgress};
use crate::fuzzing::Input;

/// The protocols the fuzzed negotiation listener supports.
const SUPPORTED: [&str; 2] = ["/fuzz/rpc/1", "/fuzz/direct-send/1"];

/// Negotiation as the listener: `data` is what the dialer sends, fed in pieces whose
/// sizes the first byte chooses, until a protocol is agreed or the exchange fails.
pub fn negotiate_listener(data: &[u8]) {
    let mut input = Input { data };
    let piece = usize::from(input.byte()).max(1);
    let mut core = ListenerCore::new();
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    while !input.is_empty() {
        buf.extend_from_slice(input.take(piece));
        match core.on_input(&SUPPORTED, &mut buf, &mut out) {
            Ok(ListenerProgress::NeedInput) => out.clear(),
            Ok(ListenerProgress::Accepted(index)) => {
                assert!(index < SUPPORTED.len(), "accepted an unsupported protocol");
                return;
            }
            Err(_) => return,
        }
    }
    let _ = core.on_eof();
}

/// Negotiation as the dialer: proposes each supported protocol in turn while `data`,
/// the listener's answers fed in pieces whose sizes the first byte chooses, refuses.
pub fn negotiate_dialer(data: &[u8]) {
    let mut input = Input { data };
    let piece = usize::from(input.byte()).max(1);
    let mut out = BytesMut::new();
    let mut proposals = SUPPORTED.iter();
    let Some(first) = proposals.next() else {
        return;
    };
    let Ok(mut core) = DialerCore::start(*first, &mut out) else {
        return;
    };
    let mut buf = BytesMut::new();
    while !input.is_empty() {
        buf.extend_from_slice(input.take(piece));
        match core.on_input(&mut buf) {
            Ok(DialerProgress::NeedInput) => {}
            Ok(DialerProgress::Accepted) | Err(_) => return,
            Ok(DialerProgress::Refused) => match proposals.next() {
                Some(next) => {
                    if core.propose(*next, &mut out).is_err() {
                        return;
                    }
                }
                None => return,
            },
        }
    }
    let _ = core.on_eof();
}
