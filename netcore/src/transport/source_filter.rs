//! Sources whose new TCP connections are dropped by the kernel before they are
//! accepted.
//!
//! Refusing a socket after `accept` costs the kernel's accept, the close and a reset:
//! tens of microseconds each, which a flood of connects turns into a core. A
//! [`SourceFilter`] is the cheaper way: whoever decides (the network's admission
//! control) publishes [`FilterRules`], and every TCP listener that shares the handle
//! compiles them into a classic BPF program on its listening socket (`SO_ATTACH_FILTER`,
//! no privileges needed). The kernel runs it on each SYN before a connection exists, so
//! a blocked source's SYN costs the kernel's receive path and a walk of the rules, no
//! accept, and the sender's TCP backs off by itself.
//!
//! The handle owns the rules, not the decision: it neither learns nor expires sources.
//! Only SYNs are dropped: connections already made, and the rest of a handshake in
//! progress, pass whatever the rules say. Linux and Android only; elsewhere the rules are
//! kept and never applied, and refusals happen at accept as before.

mod bpf;

use std::net::IpAddr;
use std::sync::{Arc, Weak};

use futures::task::AtomicWaker;
use parking_lot::Mutex;

pub(crate) use bpf::{Insn, compile};

/// Largest program a socket filter may have (the kernel's `BPF_MAXINSNS`).
pub const MAX_PROGRAM_LEN: usize = 4096;

/// The longest program a socket may hold when the kernel allows `optmem_max` bytes of
/// option memory per socket (`net.core.optmem_max`; 20 KiB on many distributions, 128
/// KiB on recent kernels). The kernel charges a filter by its converted (eBPF) size,
/// reckoned here at 16 bytes per classic instruction (a `ret` becomes two eBPF
/// instructions of 8 bytes), plus a header and room for the socket's other options.
/// Rules beyond it are left out of the program; their sources are refused at accept.
pub(crate) fn max_program_len(optmem_max: usize) -> usize {
    const OTHER_OPTIONS: usize = 1024;
    const HEADER: usize = 256;
    (optmem_max.saturating_sub(OTHER_OPTIONS + HEADER) / 16).min(MAX_PROGRAM_LEN)
}

/// An address prefix: `addr` with its first `len` bits significant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// The address; bits past `len` are ignored.
    pub addr: IpAddr,
    /// Significant bits, at most 32 for IPv4 and 128 for IPv6 (larger counts as the
    /// whole address).
    pub len: u8,
}

impl Prefix {
    /// The prefix that is `ip` alone.
    pub fn host(ip: IpAddr) -> Self {
        let len = if ip.is_ipv4() { 32 } else { 128 };
        Self { addr: ip, len }
    }

    /// Whether `ip` lies within the prefix (never across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (a, b, width) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        let len = u32::from(self.len).min(width);
        if len == 0 {
            return true;
        }
        let shift = width - len;
        (a >> shift) == (b >> shift)
    }
}

/// What a listener's filter does: SYNs from `blocked` prefixes are dropped unless their
/// source is one of `allowed` (allowed wins, e.g. a validator inside a blocked subnet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterRules {
    /// Sources that always pass.
    pub allowed: Vec<IpAddr>,
    /// Sources whose SYNs are dropped.
    pub blocked: Vec<Prefix>,
}

/// A shared handle on the rules of the TCP listeners it is given to
/// ([`super::TcpTransport::with_source_filter`]). Cheap to clone: clones share the
/// rules.
#[derive(Clone, Debug, Default)]
pub struct SourceFilter(Arc<Mutex<Published>>);

#[derive(Debug, Default)]
struct Published {
    /// Bumped at each [`SourceFilter::set`], so listeners see a change once.
    generation: u64,
    rules: Arc<FilterRules>,
    /// The listeners to wake when the rules change; dead ones are dropped as found.
    listeners: Vec<Weak<AtomicWaker>>,
}

impl SourceFilter {
    /// Replaces the rules; every listener sharing the handle applies them the next time
    /// it is polled (they are woken for it).
    pub fn set(&self, rules: FilterRules) {
        let wakers: Vec<Arc<AtomicWaker>> = {
            let mut published = self.0.lock();
            published.generation += 1;
            published.rules = Arc::new(rules);
            published.listeners.retain(|w| w.strong_count() > 0);
            published
                .listeners
                .iter()
                .filter_map(Weak::upgrade)
                .collect()
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// The rules now in force.
    pub fn rules(&self) -> Arc<FilterRules> {
        Arc::clone(&self.0.lock().rules)
    }

    /// Registers a listener: it is woken at each change.
    pub(crate) fn subscribe(&self) -> Subscription {
        let waker = Arc::new(AtomicWaker::new());
        self.0.lock().listeners.push(Arc::downgrade(&waker));
        Subscription {
            filter: self.clone(),
            waker,
            seen: 0,
        }
    }
}

/// A listener's view of a [`SourceFilter`]: which generation it applied last.
#[derive(Debug)]
pub(crate) struct Subscription {
    filter: SourceFilter,
    waker: Arc<AtomicWaker>,
    seen: u64,
}

impl Subscription {
    /// Registers `waker` for the next change, and returns the rules if they changed
    /// since the last call.
    pub(crate) fn poll_changed(&mut self, waker: &std::task::Waker) -> Option<Arc<FilterRules>> {
        self.waker.register(waker);
        let published = self.filter.0.lock();
        if published.generation == self.seen {
            return None;
        }
        self.seen = published.generation;
        Some(Arc::clone(&published.rules))
    }
}

#[cfg(test)]
mod tests;
