//! What the process tests share.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Ports handed out start here and stay below Linux's ephemeral range (32768 and up),
/// which `bind(0)` and every outbound connection draw from: a port chosen there can be
/// taken by another test's socket between the check and the node's own bind. Below it,
/// only tests that name ports explicitly compete, and each checks its pick.
const FIRST_PORT: u16 = 20_000;
const PORT_SPAN: u16 = 12_000;

/// A free port on 127.0.0.1 below the ephemeral range, for a child process to bind.
pub(crate) fn free_port() -> u16 {
    // A start that differs between test processes, then a walk from it.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().wrapping_mul(2_654_435_761);
    for _ in 0..PORT_SPAN {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST_PORT + ((seed as u16).wrapping_add(step.wrapping_mul(7919)) % PORT_SPAN);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!(
        "no free port between {FIRST_PORT} and {}",
        FIRST_PORT + PORT_SPAN
    );
}
