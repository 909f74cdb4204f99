//! The accept side of the peer manager: admission of each inbound socket before any
//! cryptography, and the inbound upgrades in flight.

use std::time::Instant;

use futures::FutureExt;
use futures::future::abortable;
use netcore::NetworkAddress;
use tracing::debug;

use super::decisions::UpgradeId;
use super::{PeerManager, Upgrade};

impl PeerManager {
    /// Starts upgrading an inbound socket. When the limit of upgrades in flight is
    /// reached, the oldest is evicted (its socket closed): connections that connect and
    /// stall hold a slot until newer sockets push them out, while an honest handshake,
    /// done in a round trip or two, finishes long before that many newer sockets arrive.
    pub(super) fn start_inbound_upgrade(&mut self, upgrade: Upgrade, addr: NetworkAddress) {
        let source = addr.ip();
        let validator = match source.map(|ip| self.admission.admit(ip, Instant::now())) {
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
                self.publish_filter();
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

    /// Hands admission's blocks to the listeners' filter if they changed, and arms the
    /// timer for the next one to end.
    pub(super) fn publish_filter(&mut self) {
        let Some(filter) = &self.source_filter else {
            return;
        };
        let Some(rules) = self.admission.take_filter_rules() else {
            return;
        };
        filter.set(rules);
        let metrics = &self.shared.protocols.metrics.connection;
        metrics
            .filtered_sources
            .set(self.admission.filtered_sources() as i64);
        self.arm_filter_timer();
    }

    /// Sets the timer for the next block to end, or disarms it if none is in force.
    fn arm_filter_timer(&mut self) {
        match self.admission.next_expiry() {
            Some(at) => {
                let at = tokio::time::Instant::from_std(at);
                self.filter_expiry.as_mut().reset(at);
                self.filter_armed = true;
            }
            None => self.filter_armed = false,
        }
    }

    /// The next block ended: the filter lets its source through again.
    pub(super) fn on_filter_expiry(&mut self) {
        self.admission.expire(Instant::now());
        self.publish_filter();
        self.arm_filter_timer();
    }
}
