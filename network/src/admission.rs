//! Admission of inbound sockets, before any cryptography: how many handshakes may be
//! pending in total, per source IP and per subnet (/24 for IPv4, /64 for IPv6), and how
//! fast new ones may start per IP and per subnet (every attempt counts, let in or not),
//! with room kept for the addresses of known validators.
//!
//! [`Admission`] is an I/O-free core: the peer manager asks it about each socket as it
//! is accepted (its source IP and the time) and tells it when the socket's upgrade
//! ends. A refused socket is closed before Noise reads a byte of it, so refusing costs
//! a hash lookup or two, no Diffie-Hellman. Its memory is bounded: pending counts exist
//! only for pending sockets, and at most [`MAX_TRACKED_SOURCES`] rate buckets per kind
//! are kept, the idle ones forgotten first.
//!
//! A source refused for its rate is also *filtered* for as long as its bucket takes to
//! refill (when the listeners have a [`SourceFilter`](netcore::transport::SourceFilter)):
//! [`Admission::take_filter_rules`] gives the sources to block (IPv6 ones by /64), and
//! the kernel drops their SYNs before any accept. A flood then costs the node the kernel's receive of each SYN instead of an accept and
//! a reset each; once a block expires the source gets its burst again and, if it keeps
//! flooding, is blocked again, so what it gets through is still its configured rate. At
//! most [`MAX_FILTERED_SOURCES`] are blocked at once (every SYN walks the list);
//! sources beyond that are refused at accept as before. Known validators are never
//! blocked: their addresses inside a blocked subnet are let through by the filter.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netcore::transport::{FilterRules, Prefix};
use netcore::{NetworkAddress, PeerId};
use parking_lot::RwLock;

use crate::rate_limit::{Rate, TokenBucket};

/// Default handshakes pending at once from one IP: a node dials once, a redial or a
/// simultaneous dial makes two or three.
pub const DEFAULT_MAX_PENDING_PER_IP: usize = 4;
/// Default handshakes pending at once from one subnet: a few nodes behind one NAT or in
/// one data-centre range.
pub const DEFAULT_MAX_PENDING_PER_SUBNET: usize = 16;
/// Default connection attempts per second from one IP (let in or not), and its burst.
pub const DEFAULT_RATE_PER_IP: Rate = Rate {
    per_second: 4,
    burst: 8,
};
/// Default connection attempts per second from one subnet (let in or not), and its burst.
pub const DEFAULT_RATE_PER_SUBNET: Rate = Rate {
    per_second: 16,
    burst: 32,
};
/// Default handshake slots kept for the addresses of known validators, out of
/// `max_concurrent_inbound_upgrades`: a quarter of the default 128, so that many
/// validators can reconnect at once while strangers share the rest.
pub const DEFAULT_RESERVED_FOR_VALIDATORS: usize = 32;
/// Rate buckets kept per kind (IPs, subnets) at most: a flood from more sources than
/// this forgets the idlest ones, so memory stays bounded whatever the source count.
pub const MAX_TRACKED_SOURCES: usize = 16_384;

/// Sources (IPs and subnets) blocked in the listeners' socket filter at once, at most:
/// every SYN walks the list (2 to 4 instructions per IPv4 entry, up to 9 per IPv6 one),
/// and the kernel caps a socket's program by its option memory.
pub const MAX_FILTERED_SOURCES: usize = 256;

/// The limits applied at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Handshakes pending at once from one IP.
    pub max_pending_per_ip: usize,
    /// Handshakes pending at once from one subnet.
    pub max_pending_per_subnet: usize,
    /// Connection attempts per second from one IP, let in or not.
    pub rate_per_ip: Rate,
    /// Connection attempts per second from one subnet, let in or not.
    pub rate_per_subnet: Rate,
    /// Of all pending slots, those only sockets from known validators' addresses may
    /// take (at most half of them are: strangers keep the rest).
    pub reserved_for_validators: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_pending_per_ip: DEFAULT_MAX_PENDING_PER_IP,
            max_pending_per_subnet: DEFAULT_MAX_PENDING_PER_SUBNET,
            rate_per_ip: DEFAULT_RATE_PER_IP,
            rate_per_subnet: DEFAULT_RATE_PER_SUBNET,
            reserved_for_validators: DEFAULT_RESERVED_FOR_VALIDATORS,
        }
    }
}

/// Why a socket was refused at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its IP has as many handshakes pending as allowed.
    PendingPerIp,
    /// Its subnet has as many handshakes pending as allowed.
    PendingPerSubnet,
    /// Its IP starts handshakes faster than allowed.
    RatePerIp,
    /// Its subnet starts handshakes faster than allowed.
    RatePerSubnet,
}

impl Refusal {
    /// The label of the refusal in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::PendingPerIp => "pending_per_ip",
            Refusal::PendingPerSubnet => "pending_per_subnet",
            Refusal::RatePerIp => "rate_per_ip",
            Refusal::RatePerSubnet => "rate_per_subnet",
        }
    }
}

/// A subnet: the /24 of an IPv4 address, the /64 of an IPv6 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subnet {
    /// The first three bytes of an IPv4 address.
    V4([u8; 3]),
    /// The first eight bytes of an IPv6 address.
    V6([u8; 8]),
}

impl Subnet {
    /// The subnet as an address prefix.
    pub fn prefix(self) -> Prefix {
        match self {
            Subnet::V4([a, b, c]) => Prefix {
                addr: IpAddr::from([a, b, c, 0]),
                len: 24,
            },
            Subnet::V6(head) => {
                let mut octets = [0u8; 16];
                octets[..8].copy_from_slice(&head);
                Prefix {
                    addr: IpAddr::from(octets),
                    len: 64,
                }
            }
        }
    }

    /// The subnet of `ip` (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                Subnet::V4([a, b, c])
            }
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::of(IpAddr::V4(v4)),
                None => {
                    let o = v6.octets();
                    Subnet::V6([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
                }
            },
        }
    }
}

/// The IPs of known validators, shared with whoever learns them (configuration, epoch
/// changes). Cheap to clone: clones share the set.
#[derive(Clone, Debug, Default)]
pub struct ValidatorAddresses(Arc<RwLock<Validators>>);

#[derive(Debug, Default)]
struct Validators {
    ips: HashSet<IpAddr>,
    /// Bumped at each replacement, so admission sees a change of the set.
    generation: u64,
}

impl ValidatorAddresses {
    /// Replaces the set.
    pub fn replace(&self, ips: impl IntoIterator<Item = IpAddr>) {
        let mut validators = self.0.write();
        validators.ips = ips.into_iter().collect();
        validators.generation += 1;
    }

    /// Whether `ip` is a known validator's.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.read().ips.contains(ip)
    }

    /// The known validators' IPs for which `keep` holds.
    fn matching(&self, keep: impl Fn(&IpAddr) -> bool) -> Vec<IpAddr> {
        self.0.read().ips.iter().copied().filter(keep).collect()
    }

    /// How many times the set was replaced.
    fn generation(&self) -> u64 {
        self.0.read().generation
    }
}

/// Inbound handshakes pending at once that may be protected by the one claimed
/// trusted peer: a stranger who writes a validator's id in its prologue (it is clear
/// text, anyone can) protects at most this many of its sockets from eviction, and
/// Noise fails them at the key exchange.
pub const MAX_CLAIMS_PER_PEER: usize = 2;

/// Inbound handshakes whose clear prologue names a trusted peer, by source address:
/// strangers' sockets do not evict them (the peer manager treats them as a validator's
/// from then on). Filled by the transport as it reads each prologue, before any
/// Diffie-Hellman; cleared by the peer manager as each upgrade ends. Cheap to clone:
/// clones share the board.
#[derive(Clone, Debug, Default)]
pub struct ClaimBoard(Arc<parking_lot::Mutex<Claims>>);

#[derive(Debug, Default)]
struct Claims {
    by_addr: HashMap<NetworkAddress, PeerId>,
    per_peer: HashMap<PeerId, usize>,
}

impl ClaimBoard {
    /// The handshake from `addr` names the trusted peer `peer`; whether it is now
    /// protected (no more than [`MAX_CLAIMS_PER_PEER`] per peer are).
    pub fn mark(&self, addr: NetworkAddress, peer: PeerId) -> bool {
        let mut claims = self.0.lock();
        let count = claims.per_peer.entry(peer).or_default();
        if *count >= MAX_CLAIMS_PER_PEER {
            return false;
        }
        *count += 1;
        if let Some(old) = claims.by_addr.insert(addr, peer) {
            // The same source address twice: the older claim is replaced.
            release(&mut claims.per_peer, old);
        }
        true
    }

    /// Whether the handshake from `addr` is protected by a claim.
    pub fn is_claimed(&self, addr: &NetworkAddress) -> bool {
        self.0.lock().by_addr.contains_key(addr)
    }

    /// The handshake from `addr` ended.
    pub fn clear(&self, addr: &NetworkAddress) {
        let mut claims = self.0.lock();
        if let Some(peer) = claims.by_addr.remove(addr) {
            release(&mut claims.per_peer, peer);
        }
    }
}

fn release(per_peer: &mut HashMap<PeerId, usize>, peer: PeerId) {
    if let Some(n) = per_peer.get_mut(&peer) {
        *n -= 1;
        if *n == 0 {
            per_peer.remove(&peer);
        }
    }
}

/// Rate buckets by source, at most [`MAX_TRACKED_SOURCES`].
#[derive(Debug)]
struct Buckets<K> {
    rate: Rate,
    buckets: HashMap<K, TokenBucket>,
}

impl<K: std::hash::Hash + Eq + Copy> Buckets<K> {
    fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for `key` at `now`; false when its bucket is empty.
    fn take(&mut self, key: K, now: Instant) -> bool {
        if !self.buckets.contains_key(&key) && self.buckets.len() >= MAX_TRACKED_SOURCES {
            self.forget_idle(now);
        }
        let rate = self.rate;
        let bucket = self
            .buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::new(rate, now));
        bucket.try_take(1, now).is_ok()
    }

    /// Whether `key` could take a token at `now` (a source not tracked has a full
    /// bucket).
    fn has_token(&mut self, key: K, now: Instant) -> bool {
        self.buckets
            .get_mut(&key)
            .is_none_or(|b| b.available(now) >= 1)
    }

    /// Forgets the buckets that are full again (their sources are idle), and if that
    /// leaves more than three quarters of [`MAX_TRACKED_SOURCES`], half of them: a
    /// forgotten source starts again with a full burst, which only lets a flood of very
    /// many sources pace itself at the burst. Each scan leaves room for at least a
    /// quarter of the limit of new sources, so scans cost O(1) per source, amortised.
    fn forget_idle(&mut self, now: Instant) {
        let full = self.rate.burst.max(1);
        self.buckets.retain(|_, b| b.available(now) < full);
        if self.buckets.len() > MAX_TRACKED_SOURCES / 4 * 3 {
            let mut keep = false;
            self.buckets.retain(|_, _| {
                keep = !keep;
                keep
            });
        }
    }

    fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// The admission state: pending handshakes by IP and subnet, and the rate buckets.
#[derive(Debug)]
pub struct Admission {
    config: AdmissionConfig,
    validators: ValidatorAddresses,
    pending_ip: HashMap<IpAddr, usize>,
    pending_subnet: HashMap<Subnet, usize>,
    rate_ip: Buckets<IpAddr>,
    rate_subnet: Buckets<Subnet>,
    blocks: Blocks,
}

/// Sources blocked in the listeners' filter, with when each block ends.
#[derive(Debug, Default)]
struct Blocks {
    /// Off when no listener has a filter: nothing is recorded.
    enabled: bool,
    ips: HashMap<IpAddr, Instant>,
    subnets: HashMap<Subnet, Instant>,
    /// The set changed since the rules were last taken.
    changed: bool,
    /// The generation of the validator set the rules were last taken with.
    validators_seen: u64,
    /// The origin of the grid block ends are rounded up to.
    grid: Option<Instant>,
}

/// Blocks end on a grid of this step, so that blocks started close together end
/// together, in one change of the rules.
const BLOCK_END_STEP: Duration = Duration::from_millis(250);

impl Blocks {
    /// `at`, rounded up to the grid of [`BLOCK_END_STEP`].
    fn end_of(&mut self, at: Instant) -> Instant {
        let origin = *self.grid.get_or_insert(at);
        let steps = at
            .saturating_duration_since(origin)
            .as_nanos()
            .div_ceil(BLOCK_END_STEP.as_nanos());
        origin + BLOCK_END_STEP * steps as u32
    }

    fn len(&self) -> usize {
        self.ips.len() + self.subnets.len()
    }

    /// Blocks `ip` until `until`, unless it is blocked already: a block is not
    /// extended by the refusals of sockets that were queued before it took effect.
    fn block_ip(&mut self, ip: IpAddr, until: Instant) {
        if self.enabled && !self.ips.contains_key(&ip) && self.len() < MAX_FILTERED_SOURCES {
            self.ips.insert(ip, until);
            self.changed = true;
        }
    }

    /// Blocks `subnet` until `until`, as [`Self::block_ip`].
    fn block_subnet(&mut self, subnet: Subnet, until: Instant) {
        if self.enabled && !self.subnets.contains_key(&subnet) && self.len() < MAX_FILTERED_SOURCES
        {
            self.subnets.insert(subnet, until);
            self.changed = true;
        }
    }
}

/// A socket let in: whether it comes from a known validator's address (then the slots
/// kept for validators are open to it, and strangers never evict it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// From a known validator's address.
    pub validator: bool,
}

impl Admission {
    /// Nothing pending; `validators` are the addresses given reserved room.
    pub fn new(config: AdmissionConfig, validators: ValidatorAddresses) -> Self {
        Self {
            rate_ip: Buckets::new(config.rate_per_ip),
            rate_subnet: Buckets::new(config.rate_per_subnet),
            blocks: Blocks::default(),
            config,
            validators,
            pending_ip: HashMap::new(),
            pending_subnet: HashMap::new(),
        }
    }

    /// A socket from `ip` arrived at `now`: let in (its handshake counted as pending
    /// until [`Self::release`]) or refused. Known validators' addresses pass every limit
    /// here (TCP's handshake means a socket from such an address comes from that
    /// machine; several validators may share one address, e.g. on loopback): their
    /// handshakes are bounded by the slots of the peer manager alone, and Noise refuses
    /// a key outside the set.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<Admitted, Refusal> {
        let validator = self.validators.contains(&ip);
        let subnet = Subnet::of(ip);
        if !validator {
            // Every attempt spends a token, whether or not it is then let in: a source
            // that keeps connecting while at its pending limit runs out of tokens and is
            // filtered like any other flood. The IP's token is taken only once the
            // subnet gave one, so a socket refused for its subnet does not also use up
            // its own IP's budget; the subnet's is taken only for an IP within its own
            // rate, so one fast IP cannot spend its neighbours' budget.
            if !self.rate_ip.has_token(ip, now) {
                let until = self
                    .blocks
                    .end_of(now + refill_time(self.config.rate_per_ip));
                match subnet {
                    // A host holds a whole /64 (and an attacker its 2^64 addresses):
                    // the filter blocks IPv6 sources by /64, in fewer instructions.
                    Subnet::V6(_) => self.blocks.block_subnet(subnet, until),
                    Subnet::V4(_) => self.blocks.block_ip(ip, until),
                }
                return Err(Refusal::RatePerIp);
            }
            if !self.rate_subnet.take(subnet, now) {
                let until = self
                    .blocks
                    .end_of(now + refill_time(self.config.rate_per_subnet));
                self.blocks.block_subnet(subnet, until);
                return Err(Refusal::RatePerSubnet);
            }
            self.rate_ip.take(ip, now);
            if self.pending_ip.get(&ip).copied().unwrap_or(0) >= self.config.max_pending_per_ip {
                return Err(Refusal::PendingPerIp);
            }
            let in_subnet = self.pending_subnet.get(&subnet).copied().unwrap_or(0);
            if in_subnet >= self.config.max_pending_per_subnet {
                return Err(Refusal::PendingPerSubnet);
            }
        }
        *self.pending_ip.entry(ip).or_default() += 1;
        *self.pending_subnet.entry(subnet).or_default() += 1;
        Ok(Admitted { validator })
    }

    /// The handshake of a socket from `ip` let in by [`Self::admit`] ended (upgraded,
    /// failed or evicted).
    pub fn release(&mut self, ip: IpAddr) {
        if let Some(n) = self.pending_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.pending_ip.remove(&ip);
            }
        }
        let subnet = Subnet::of(ip);
        if let Some(n) = self.pending_subnet.get_mut(&subnet) {
            *n -= 1;
            if *n == 0 {
                self.pending_subnet.remove(&subnet);
            }
        }
    }

    /// Slots of `total` that sockets from strangers may hold.
    pub fn stranger_slots(&self, total: usize) -> usize {
        total.saturating_sub(self.config.reserved_for_validators)
    }

    /// Handshakes pending from `ip`.
    pub fn pending_from(&self, ip: &IpAddr) -> usize {
        self.pending_ip.get(ip).copied().unwrap_or(0)
    }

    /// Sources with a rate bucket, IPs and subnets: what the state holds besides the
    /// pending sockets.
    pub fn tracked_sources(&self) -> usize {
        self.rate_ip.len() + self.rate_subnet.len()
    }

    /// How long rate buckets take to refill completely: a source idle that long is as
    /// good as new.
    pub fn refill_time(&self) -> Duration {
        refill_time(self.config.rate_per_ip).max(refill_time(self.config.rate_per_subnet))
    }

    /// Record the sources refused for their rate, to be blocked in the listeners'
    /// filter (off by default: without a filter there is nobody to tell).
    pub fn enable_filter(&mut self) {
        self.blocks.enabled = true;
    }

    /// Ends the blocks due by `now`.
    pub fn expire(&mut self, now: Instant) {
        let before = self.blocks.len();
        self.blocks.ips.retain(|_, until| *until > now);
        self.blocks.subnets.retain(|_, until| *until > now);
        self.blocks.changed |= self.blocks.len() != before;
    }

    /// When the next block ends, if any is in force.
    pub fn next_expiry(&self) -> Option<Instant> {
        let ips = self.blocks.ips.values();
        ips.chain(self.blocks.subnets.values()).min().copied()
    }

    /// Sources blocked now.
    pub fn filtered_sources(&self) -> usize {
        self.blocks.len()
    }

    /// Whether the rules for the listeners' filter changed since last taken (blocks
    /// added or ended, or the validator set replaced while blocks are in force).
    pub fn filter_changed(&self) -> bool {
        self.blocks.changed
            || (self.blocks.len() > 0
                && self.validators.generation() != self.blocks.validators_seen)
    }

    /// The rules for the listeners' filter, if they changed since last taken: the
    /// blocked IPs and subnets, and the known validators inside a blocked subnet (they
    /// pass). A blocked IP that has since become a validator's is unblocked.
    pub fn take_filter_rules(&mut self) -> Option<FilterRules> {
        if !self.filter_changed() {
            return None;
        }
        self.blocks.changed = false;
        self.blocks.validators_seen = self.validators.generation();
        let validators = &self.validators;
        self.blocks.ips.retain(|ip, _| !validators.contains(ip));
        let subnets = &self.blocks.subnets;
        let allowed = self
            .validators
            .matching(|ip| subnets.contains_key(&Subnet::of(*ip)));
        let blocked = (self.blocks.ips.keys().map(|ip| Prefix::host(*ip)))
            .chain(subnets.keys().map(|s| s.prefix()))
            .collect();
        Some(FilterRules { allowed, blocked })
    }
}

/// How long a bucket of `rate` takes to refill from empty.
fn refill_time(rate: Rate) -> Duration {
    Duration::from_secs_f64(rate.burst.max(1) as f64 / rate.per_second.max(1) as f64)
}

#[cfg(test)]
mod tests;
