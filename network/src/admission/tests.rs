use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn admission(config: AdmissionConfig) -> Admission {
    Admission::new(config, ValidatorAddresses::default())
}

/// Rates high enough not to matter.
const FAST: Rate = Rate {
    per_second: 1_000_000,
    burst: 1_000_000,
};

#[test]
fn one_ip_holds_at_most_its_pending_handshakes_until_one_ends() {
    let mut a = admission(AdmissionConfig {
        rate_per_ip: FAST,
        rate_per_subnet: FAST,
        ..AdmissionConfig::default()
    });
    let now = Instant::now();
    let ip = v4(10, 0, 0, 1);
    for _ in 0..DEFAULT_MAX_PENDING_PER_IP {
        assert!(a.admit(ip, now).is_ok());
    }
    assert_eq!(a.admit(ip, now), Err(Refusal::PendingPerIp));
    // Another address of the same /24 still gets in.
    assert!(a.admit(v4(10, 0, 0, 2), now).is_ok());
    a.release(ip);
    assert!(a.admit(ip, now).is_ok());
}

#[test]
fn one_subnet_holds_at_most_its_pending_handshakes() {
    let mut a = admission(AdmissionConfig {
        rate_per_ip: FAST,
        rate_per_subnet: FAST,
        ..AdmissionConfig::default()
    });
    let now = Instant::now();
    for d in 0..DEFAULT_MAX_PENDING_PER_SUBNET as u8 {
        assert!(a.admit(v4(192, 0, 2, d), now).is_ok());
    }
    assert_eq!(
        a.admit(v4(192, 0, 2, 200), now),
        Err(Refusal::PendingPerSubnet)
    );
    assert!(
        a.admit(v4(192, 0, 3, 1), now).is_ok(),
        "the next /24 is another subnet"
    );
}

#[test]
fn rates_refill_with_time() {
    let mut a = admission(AdmissionConfig {
        max_pending_per_ip: 1_000,
        max_pending_per_subnet: 1_000,
        ..AdmissionConfig::default()
    });
    let start = Instant::now();
    let ip = v4(10, 1, 1, 1);
    for _ in 0..DEFAULT_RATE_PER_IP.burst {
        a.admit(ip, start).unwrap();
        a.release(ip);
    }
    assert_eq!(a.admit(ip, start), Err(Refusal::RatePerIp));
    let later = start + Duration::from_secs(1);
    assert!(a.admit(ip, later).is_ok(), "a second refills the rate");
    // The subnet's rate stops many addresses of one /24 however few each opens.
    let mut refused = None;
    for d in 0..=255u8 {
        if let Err(e) = a.admit(v4(10, 2, 2, d), start) {
            refused = Some(e);
            break;
        }
    }
    assert_eq!(refused, Some(Refusal::RatePerSubnet));
}

#[test]
fn known_validators_pass_every_limit() {
    let validators = ValidatorAddresses::default();
    let ip = v4(198, 51, 100, 7);
    validators.replace([ip]);
    let mut a = Admission::new(
        AdmissionConfig {
            max_pending_per_ip: 1,
            max_pending_per_subnet: 1,
            ..AdmissionConfig::default()
        },
        validators,
    );
    let now = Instant::now();
    // A stranger fills the subnet; a validator of it still gets in, again and again.
    a.admit(v4(198, 51, 100, 8), now).unwrap();
    assert_eq!(
        a.admit(v4(198, 51, 100, 9), now),
        Err(Refusal::PendingPerSubnet)
    );
    for _ in 0..100 {
        assert!(a.admit(ip, now).unwrap().validator);
    }
}

#[test]
fn ipv6_subnets_are_slash_64_and_mapped_ipv4_is_ipv4() {
    let a = IpAddr::V6("2001:db8:1:2:aaaa::1".parse::<Ipv6Addr>().unwrap());
    let b = IpAddr::V6("2001:db8:1:2:bbbb::9".parse::<Ipv6Addr>().unwrap());
    let c = IpAddr::V6("2001:db8:1:3::1".parse::<Ipv6Addr>().unwrap());
    assert_eq!(Subnet::of(a), Subnet::of(b));
    assert_ne!(Subnet::of(a), Subnet::of(c));
    let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
    assert_eq!(Subnet::of(mapped), Subnet::of(v4(10, 0, 0, 99)));
}

#[test]
fn a_flood_from_more_sources_than_tracked_keeps_memory_bounded() {
    let mut a = admission(AdmissionConfig::default());
    let now = Instant::now();
    for i in 0..(MAX_TRACKED_SOURCES as u32 * 3) {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        if a.admit(ip, now).is_ok() {
            a.release(ip);
        }
    }
    assert!(a.tracked_sources() <= 2 * MAX_TRACKED_SOURCES);
}

#[test]
fn forgetting_leaves_room_for_a_quarter_of_the_limit_of_new_sources() {
    let mut a = admission(AdmissionConfig::default());
    let now = Instant::now();
    // Every source keeps a bucket that is not full, so none is idle to forget.
    for i in 0..MAX_TRACKED_SOURCES as u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i << 8)));
        assert!(a.admit(ip, now).is_ok());
        a.release(ip);
    }
    // One source more makes both kinds scan and halve: three quarters at most remain.
    a.admit(v4(11, 0, 0, 1), now).unwrap();
    assert!(a.tracked_sources() <= 2 * (MAX_TRACKED_SOURCES / 4 * 3) + 2);
    assert!(a.tracked_sources() >= MAX_TRACKED_SOURCES / 2);
}

#[test]
fn a_socket_refused_for_its_subnet_keeps_its_ips_budget() {
    // The subnet refills in half a second, an IP in a whole one.
    let mut a = admission(AdmissionConfig {
        rate_per_ip: Rate {
            per_second: 1,
            burst: 1,
        },
        rate_per_subnet: Rate {
            per_second: 2,
            burst: 1,
        },
        ..AdmissionConfig::default()
    });
    let now = Instant::now();
    let (first, second) = (v4(10, 1, 1, 1), v4(10, 1, 1, 2));
    a.admit(first, now).unwrap();
    a.release(first);
    // The subnet's one token is spent: the neighbour is refused for the subnet...
    assert_eq!(a.admit(second, now), Err(Refusal::RatePerSubnet));
    // ...and once the subnet refills, its own token is still there.
    let later = now + Duration::from_millis(500);
    assert!(a.admit(second, later).is_ok());
}

proptest! {
    /// Whatever arrives and ends in whatever order: the pending counts are exact, never
    /// over the limits for strangers, and nothing is left once every handshake ended.
    #[test]
    fn pending_counts_stay_within_the_limits_and_return_to_zero(
        ops in prop::collection::vec((0u8..4, 0u8..6, any::<bool>(), 0u64..300), 0..400),
    ) {
        let mut a = admission(AdmissionConfig::default());
        let start = Instant::now();
        let mut now = start;
        let mut pending: Vec<IpAddr> = Vec::new();
        for (subnet, host, release, ms) in ops {
            now += Duration::from_millis(ms);
            let ip = v4(10, 9, subnet, host);
            if release && !pending.is_empty() {
                let i = (host as usize) % pending.len();
                a.release(pending.swap_remove(i));
                continue;
            }
            if a.admit(ip, now).is_ok() {
                pending.push(ip);
            }
            let from_ip = pending.iter().filter(|p| **p == ip).count();
            prop_assert_eq!(a.pending_from(&ip), from_ip);
            prop_assert!(from_ip <= DEFAULT_MAX_PENDING_PER_IP);
            let in_subnet = pending.iter().filter(|p| Subnet::of(**p) == Subnet::of(ip)).count();
            prop_assert!(in_subnet <= DEFAULT_MAX_PENDING_PER_SUBNET);
        }
        for ip in pending.drain(..) {
            a.release(ip);
        }
        prop_assert!(a.pending_ip.is_empty() && a.pending_subnet.is_empty());
    }
}

#[test]
fn a_claimed_trusted_id_protects_at_most_two_handshakes() {
    let board = ClaimBoard::default();
    let addr =
        |port: u16| -> NetworkAddress { format!("/ip4/10.0.0.1/tcp/{port}").parse().unwrap() };
    let validator = PeerId::new([9; 32]);
    assert!(board.mark(addr(1), validator));
    assert!(board.mark(addr(2), validator));
    assert!(
        !board.mark(addr(3), validator),
        "a third claim of one peer protects nothing"
    );
    assert!(board.is_claimed(&addr(1)) && !board.is_claimed(&addr(3)));
    board.clear(&addr(1));
    assert!(board.mark(addr(3), validator));
}

/// Admits and releases sockets from `ip` at `now` until one is refused; the refusal.
fn flood(a: &mut Admission, ip: IpAddr, now: Instant) -> Refusal {
    for _ in 0..10_000 {
        match a.admit(ip, now) {
            Ok(_) => a.release(ip),
            Err(refusal) => return refusal,
        }
    }
    panic!("never refused");
}

#[test]
fn a_source_refused_for_its_rate_is_filtered_until_its_bucket_refills() {
    let mut a = admission(AdmissionConfig::default());
    a.enable_filter();
    let now = Instant::now();
    let ip = v4(10, 0, 0, 9);
    assert_eq!(flood(&mut a, ip, now), Refusal::RatePerIp);
    let rules = a.take_filter_rules().expect("the IP is blocked");
    assert_eq!(rules.blocked, [Prefix::host(ip)]);
    assert!(rules.allowed.is_empty());
    assert_eq!(a.take_filter_rules(), None, "taken once");
    // Refused again while blocked (sockets queued before the block took effect): the
    // block stands as it was, not extended.
    let later = now + Duration::from_millis(100);
    assert_eq!(a.admit(ip, later), Err(Refusal::RatePerIp));
    assert_eq!(a.take_filter_rules(), None);

    let refill = refill_time(DEFAULT_RATE_PER_IP);
    assert_eq!(a.next_expiry(), Some(now + refill));
    a.expire(now + refill - Duration::from_millis(1));
    assert_eq!(a.take_filter_rules(), None);
    a.expire(now + refill);
    assert_eq!(a.take_filter_rules().unwrap().blocked, []);
    assert_eq!(a.next_expiry(), None);
    // Unblocked with its bucket full again: its whole burst gets in.
    for _ in 0..DEFAULT_RATE_PER_IP.burst {
        assert!(a.admit(ip, now + refill).is_ok());
        a.release(ip);
    }
}

#[test]
fn a_blocked_subnet_lets_its_known_validators_through() {
    let validators = ValidatorAddresses::default();
    validators.replace([v4(10, 0, 0, 1), v4(10, 0, 1, 1)]);
    let mut a = Admission::new(AdmissionConfig::default(), validators);
    a.enable_filter();
    let now = Instant::now();
    let refusal = (2..=255)
        .find_map(|d| {
            let ip = v4(10, 0, 0, d);
            let refused = a.admit(ip, now).err();
            if refused.is_none() {
                a.release(ip);
            }
            refused
        })
        .expect("the subnet's burst runs out");
    assert_eq!(refusal, Refusal::RatePerSubnet);
    let rules = a.take_filter_rules().unwrap();
    assert_eq!(rules.blocked, [Subnet::of(v4(10, 0, 0, 0)).prefix()]);
    // Only the validator inside the blocked subnet needs letting through.
    assert_eq!(rules.allowed, [v4(10, 0, 0, 1)]);
}

#[test]
fn at_most_so_many_sources_are_filtered() {
    let mut a = admission(AdmissionConfig {
        rate_per_subnet: FAST,
        ..AdmissionConfig::default()
    });
    a.enable_filter();
    let now = Instant::now();
    for i in 0..(MAX_FILTERED_SOURCES as u32 + 10) {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        assert_eq!(flood(&mut a, ip, now), Refusal::RatePerIp);
    }
    assert_eq!(a.filtered_sources(), MAX_FILTERED_SOURCES);
    assert_eq!(
        a.take_filter_rules().unwrap().blocked.len(),
        MAX_FILTERED_SOURCES
    );
}

#[test]
fn without_a_filter_no_block_is_recorded() {
    let mut a = admission(AdmissionConfig::default());
    assert_eq!(
        flood(&mut a, v4(10, 0, 0, 9), Instant::now()),
        Refusal::RatePerIp
    );
    assert_eq!(a.filtered_sources(), 0);
    assert_eq!(a.take_filter_rules(), None);
}

#[test]
fn subnets_as_prefixes_cover_their_addresses() {
    let v6: IpAddr = "2001:db8:1:2:3::4".parse().unwrap();
    for ip in [v4(192, 0, 2, 77), v6] {
        let prefix = Subnet::of(ip).prefix();
        assert!(prefix.contains(ip));
    }
    assert!(
        !Subnet::of(v4(192, 0, 2, 77))
            .prefix()
            .contains(v4(192, 0, 3, 77))
    );
    let next: IpAddr = "2001:db8:1:3::4".parse().unwrap();
    assert!(!Subnet::of(v6).prefix().contains(next));
}

#[test]
fn a_source_that_keeps_connecting_at_its_pending_limit_is_filtered_after_its_burst() {
    let mut a = admission(AdmissionConfig::default());
    a.enable_filter();
    let now = Instant::now();
    let ip = v4(10, 0, 0, 9);
    let burst = DEFAULT_RATE_PER_IP.burst as usize;
    let refusals: Vec<_> = (0..burst + 1)
        .filter_map(|_| a.admit(ip, now).err())
        .collect();
    // Its pending sockets take four tokens, the attempts refused for them the rest of
    // the burst; then it is refused for its rate, and blocked.
    let pending_refusals = burst - DEFAULT_MAX_PENDING_PER_IP;
    assert_eq!(
        refusals[..pending_refusals],
        vec![Refusal::PendingPerIp; pending_refusals]
    );
    assert_eq!(refusals[pending_refusals..], [Refusal::RatePerIp]);
    assert_eq!(a.take_filter_rules().unwrap().blocked, [Prefix::host(ip)]);
}

#[test]
fn an_ipv6_source_over_its_rate_is_filtered_by_its_64() {
    let mut a = admission(AdmissionConfig::default());
    a.enable_filter();
    let ip: IpAddr = "2001:db8:1:2::7".parse().unwrap();
    assert_eq!(flood(&mut a, ip, Instant::now()), Refusal::RatePerIp);
    assert_eq!(
        a.take_filter_rules().unwrap().blocked,
        [Subnet::of(ip).prefix()]
    );
}

#[test]
fn a_validator_set_replaced_while_blocks_are_in_force_changes_the_rules() {
    let validators = ValidatorAddresses::default();
    let mut a = Admission::new(AdmissionConfig::default(), validators.clone());
    a.enable_filter();
    let now = Instant::now();
    let flooder = v4(10, 0, 0, 9);
    assert_eq!(flood(&mut a, flooder, now), Refusal::RatePerIp);
    assert!(a.take_filter_rules().is_some());
    assert!(!a.filter_changed());

    // The blocked IP becomes a validator's: it is unblocked.
    validators.replace([flooder]);
    assert!(a.filter_changed());
    let rules = a.take_filter_rules().unwrap();
    assert!(rules.blocked.is_empty(), "{rules:?}");
    assert_eq!(a.filtered_sources(), 0);
    // With no block in force, a replacement changes nothing to publish.
    validators.replace([v4(10, 0, 0, 1)]);
    assert!(!a.filter_changed());
}

#[test]
fn blocks_started_close_together_end_together() {
    let mut a = admission(AdmissionConfig::default());
    a.enable_filter();
    let now = Instant::now();
    assert_eq!(flood(&mut a, v4(10, 0, 0, 1), now), Refusal::RatePerIp);
    let first_end = a.next_expiry().unwrap();
    let later = now + Duration::from_millis(100);
    assert_eq!(flood(&mut a, v4(10, 0, 1, 1), later), Refusal::RatePerIp);
    a.expire(first_end);
    assert_eq!(
        a.filtered_sources(),
        1,
        "the later block ends on the next step"
    );
    a.expire(first_end + BLOCK_END_STEP);
    assert_eq!(a.filtered_sources(), 0);
}
