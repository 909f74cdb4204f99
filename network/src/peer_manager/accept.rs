//! The accept side of the peer manager: admission of each inbound socket before any
//! cryptography, and the inbound upgrades in flight.

use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::abortable;
use netcore::NetworkAddress;
use netcore::transport::SourceFilter;
use tokio::time::Sleep;
use tracing::debug;

use super::decisions::UpgradeId;
use super::{PeerManager, Upgrade};

/// Admission's blocks reach the listeners' filter at most this often: each change costs
/// every listener a compile and an attach, which grows with the rules, so a flood of
/// changing sources is not a flood of attaches. Short, because a block held back is a
/// flood refused at accept meanwhile.
const FILTER_PUBLISH_INTERVAL: Duration = Duration::from_millis(20);

/// While blocks are in force, the validator set is looked at this often: a validator
/// that joined from inside a blocked subnet gets through within it (plus its SYN's
/// retransmission).
const FILTER_VALIDATOR_RECHECK: Duration = Duration::from_millis(500);

/// The publication of admission's blocks to the listeners' socket filter.
pub(super) struct FilterState {
    /// The listeners' filter, if they have one.
    filter: Option<SourceFilter>,
    /// Fires when the next block ends, a held-back publication is due, or the
    /// validator set is to be looked at; armed only while one of these is ahead.
    pub(super) timer: Pin<Box<Sleep>>,
    pub(super) armed: bool,
    /// When the rules were last published.
    published: Option<Instant>,
    /// A change waits for the next publication.
    pending: bool,
}

impl FilterState {
    pub(super) fn new(filter: Option<SourceFilter>) -> Self {
        Self {
            filter,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: false,
            published: None,
            pending: false,
        }
    }
}

impl PeerManager {
    /// Starts upgrading an inbound socket. When the limit of upgrades in flight is
    /// reached, the oldest is evicted (its socket closed): connections that connect and
    /// stall hold a slot until newer sockets push them out, while an honest handshake,
    /// done in a round trip or two, finishes long before that many newer sockets arrive.
    pub(super) fn start_inbound_upgrade(&mut self, upgrade: Upgrade, addr: NetworkAddress) {
        let source = addr.ip();
        // The runtime's clock, as the filter's timer (paused in tests).
        let now = tokio::time::Instant::now().into_std();
        let validator = match source.map(|ip| self.admission.admit(ip, now)) {
            Some(Err(refusal)) => {
                // Dropping the upgrade closes the socket: Noise never read from it.
                self.shared
                    .protocols
                    .metrics
                    .connection
                    .admission_refusals
                    .with_label_values(&[refusal.as_str()])
                    .inc();
                debug!(from = %addr, reason = refusal.as_str(), "socket refused at accept");
                self.publish_filter(now);
                return;
            }
            Some(Ok(admitted)) => admitted.validator,
            // A memory address has no source IP: nothing to count it under.
            None => false,
        };
        let (claims, addrs) = (&self.claims, &self.upgrade_addrs);
        let claimed = |id| addrs.get(&id).is_some_and(|addr| claims.is_claimed(addr));
        let Some((id, evicted)) = self.decisions.on_inbound_socket(validator, claimed) else {
            if let Some(ip) = source {
                self.admission.release(ip);
            }
            self.count_failure("too_many_upgrades");
            return;
        };
        if let Some(ip) = source {
            self.upgrade_sources.insert(id, ip);
        }
        self.upgrade_addrs.insert(id, addr.clone());
        for oldest in evicted {
            if let Some(abort) = self.upgrade_aborts.remove(&oldest) {
                abort.abort();
            }
            self.count_failure("too_many_upgrades");
            self.shared
                .protocols
                .metrics
                .connection
                .upgrades_evicted
                .inc();
            let limit = self.shared.protocols.config.max_concurrent_inbound_upgrades;
            self.refusals
                .log_eviction(limit, tokio::time::Instant::now());
        }
        let (upgrade, abort) = abortable(upgrade);
        self.upgrade_aborts.insert(id, abort);
        self.inbound_upgrades
            .push(upgrade.map(move |r| (id, addr, r)).boxed());
    }

    /// Inbound upgrade `id` ended (upgraded, failed or evicted): its slot and its
    /// source's count are free.
    pub(super) fn on_upgrade_ended(&mut self, id: UpgradeId) {
        self.decisions.on_upgrade_finished(id);
        self.upgrade_aborts.remove(&id);
        if let Some(ip) = self.upgrade_sources.remove(&id) {
            self.admission.release(ip);
        }
        if let Some(addr) = self.upgrade_addrs.remove(&id) {
            self.claims.clear(&addr);
        }
    }

    /// Hands admission's blocks to the listeners' filter if they changed, at most once
    /// every [`FILTER_PUBLISH_INTERVAL`] (each change recompiles and re-attaches the
    /// program of every listener, on this task), and arms the timer.
    pub(super) fn publish_filter(&mut self, now: Instant) {
        if self.filter.filter.is_none() || !self.admission.filter_changed() {
            return;
        }
        if let Some(last) = self.filter.published
            && now < last + FILTER_PUBLISH_INTERVAL
        {
            self.filter.pending = true;
            self.arm_filter_timer(now);
            return;
        }
        if let (Some(filter), Some(rules)) =
            (&self.filter.filter, self.admission.take_filter_rules())
        {
            filter.set(rules);
            self.filter.published = Some(now);
            let metrics = &self.shared.protocols.metrics.connection;
            metrics
                .filtered_sources
                .set(self.admission.filtered_sources() as i64);
        }
        self.filter.pending = false;
        self.arm_filter_timer(now);
    }

    /// Sets the timer for what comes first: the next block's end, a publication held
    /// back, or (while blocks are in force) a look at the validator set, which may have
    /// been replaced. Disarmed when there is none.
    fn arm_filter_timer(&mut self, now: Instant) {
        let mut next = self.admission.next_expiry();
        if self.admission.filtered_sources() > 0 {
            next = earliest(next, now + FILTER_VALIDATOR_RECHECK);
        }
        if self.filter.pending
            && let Some(last) = self.filter.published
        {
            next = earliest(next, last + FILTER_PUBLISH_INTERVAL);
        }
        match next {
            Some(at) => {
                let at = tokio::time::Instant::from_std(at);
                self.filter.timer.as_mut().reset(at);
                self.filter.armed = true;
            }
            None => self.filter.armed = false,
        }
    }

    /// The filter's timer fired: blocks due end, held-back changes are published.
    pub(super) fn on_filter_timer(&mut self) {
        let now = tokio::time::Instant::now().into_std();
        self.admission.expire(now);
        self.publish_filter(now);
        self.arm_filter_timer(now);
    }
}

/// `at` or `other`, whichever is earlier.
fn earliest(at: Option<Instant>, other: Instant) -> Option<Instant> {
    Some(at.map_or(other, |at| at.min(other)))
}
