use std::time::{Duration, Instant};

use netcore::PeerId;

use super::*;

fn peer(n: u8) -> PeerId {
    PeerId::new([n; 32])
}

fn config() -> ReputationConfig {
    ReputationConfig::default()
}

#[test]
fn penalties_under_the_threshold_do_not_ban() {
    let mut r = Reputation::new(config());
    let t0 = Instant::now();
    assert_eq!(
        r.penalize(peer(1), Misbehaviour::UndecodableMessage, false, t0),
        Verdict::Penalized { score: 10 }
    );
    assert_eq!(
        r.penalize(peer(1), Misbehaviour::NegotiationGarbage, false, t0),
        Verdict::Penalized { score: 30 }
    );
    assert!(!r.is_banned(&peer(1), t0));
    assert_eq!(r.score(&peer(2), t0), 0, "other peers are untouched");
}

#[test]
fn reaching_the_threshold_bans_for_the_base_period() {
    let mut r = Reputation::new(config());
    let t0 = Instant::now();
    r.penalize(peer(1), Misbehaviour::OversizedMessage, false, t0);
    assert_eq!(
        r.penalize(peer(1), Misbehaviour::OversizedMessage, false, t0),
        Verdict::Banned {
            period: DEFAULT_BASE_BAN,
            offence: 1
        }
    );
    assert_eq!(r.banned_until(&peer(1), t0), Some(t0 + DEFAULT_BASE_BAN));
    assert!(r.is_banned(&peer(1), t0 + DEFAULT_BASE_BAN - Duration::from_millis(1)));
    assert!(!r.is_banned(&peer(1), t0 + DEFAULT_BASE_BAN));
    assert_eq!(r.banned_count(t0), 1);
}

#[test]
fn a_penalty_while_banned_changes_nothing() {
    let mut r = Reputation::new(config());
    let t0 = Instant::now();
    r.penalize(peer(1), Misbehaviour::BadSignature, false, t0);
    r.penalize(peer(1), Misbehaviour::BadSignature, false, t0);
    assert_eq!(
        r.penalize(peer(1), Misbehaviour::BadSignature, false, t0),
        Verdict::AlreadyBanned
    );
    assert_eq!(r.banned_until(&peer(1), t0), Some(t0 + DEFAULT_BASE_BAN));
}

#[test]
fn scores_halve_every_half_life() {
    let mut r = Reputation::new(config());
    let t0 = Instant::now();
    r.penalize(peer(1), Misbehaviour::OversizedMessage, false, t0);
    assert_eq!(r.score(&peer(1), t0 + DEFAULT_SCORE_HALF_LIFE), 25);
    assert_eq!(r.score(&peer(1), t0 + 2 * DEFAULT_SCORE_HALF_LIFE), 13); // 12.5, rounded
    // 25 + 50 stays under 100: spaced-out faults never ban.
    assert_eq!(
        r.penalize(
            peer(1),
            Misbehaviour::OversizedMessage,
            false,
            t0 + DEFAULT_SCORE_HALF_LIFE
        ),
        Verdict::Penalized { score: 75 }
    );
}

#[test]
fn each_repeat_offence_doubles_the_ban() {
    let mut r = Reputation::new(config());
    let mut now = Instant::now();
    let mut periods = Vec::new();
    for _ in 0..4 {
        r.penalize(peer(1), Misbehaviour::ProtocolViolation, false, now);
        match r.penalize(peer(1), Misbehaviour::ProtocolViolation, false, now) {
            Verdict::Banned { period, .. } => periods.push(period),
            other => panic!("expected a ban, got {other:?}"),
        }
        now += periods[periods.len() - 1];
    }
    let base = DEFAULT_BASE_BAN;
    assert_eq!(periods, vec![base, base * 2, base * 4, base * 8]);
}

#[test]
fn bans_are_capped_at_the_maximum() {
    let c = config();
    assert_eq!(ban_period(&c, 40, false), DEFAULT_MAX_BAN);
    assert_eq!(ban_period(&c, u32::MAX, false), DEFAULT_MAX_BAN);
}

#[test]
fn a_trusted_validator_is_never_banned_past_the_short_cap() {
    let mut r = Reputation::new(config());
    let mut now = Instant::now();
    for _ in 0..10 {
        r.penalize(peer(1), Misbehaviour::ProtocolViolation, true, now);
        match r.penalize(peer(1), Misbehaviour::ProtocolViolation, true, now) {
            Verdict::Banned { period, .. } => {
                assert!(period <= DEFAULT_TRUSTED_MAX_BAN, "{period:?}");
                now += period;
            }
            other => panic!("expected a ban, got {other:?}"),
        }
    }
    assert_eq!(ban_period(&config(), 10, true), DEFAULT_TRUSTED_MAX_BAN);
}

#[test]
fn offences_are_forgotten_a_while_after_the_last_ban() {
    let mut r = Reputation::new(config());
    let t0 = Instant::now();
    for m in [Misbehaviour::BadSignature; 2] {
        r.penalize(peer(1), m, false, t0);
    }
    let later = t0 + DEFAULT_FORGET_OFFENCES_AFTER;
    r.penalize(peer(1), Misbehaviour::BadSignature, false, later);
    assert_eq!(
        r.penalize(peer(1), Misbehaviour::BadSignature, false, later),
        Verdict::Banned {
            period: DEFAULT_BASE_BAN,
            offence: 1
        }
    );
}

#[test]
fn the_table_is_bounded_and_keeps_bans_over_scores() {
    let mut c = config();
    c.max_tracked_peers = 3;
    let mut r = Reputation::new(c);
    let t0 = Instant::now();
    r.penalize(peer(1), Misbehaviour::BadSignature, false, t0);
    r.penalize(peer(1), Misbehaviour::BadSignature, false, t0); // banned
    r.penalize(peer(2), Misbehaviour::UndecodableMessage, false, t0);
    r.penalize(peer(3), Misbehaviour::OversizedMessage, false, t0);
    r.penalize(peer(4), Misbehaviour::OversizedMessage, false, t0);
    assert_eq!(r.len(), 3);
    assert!(r.is_banned(&peer(1), t0), "the ban survives eviction");
    assert_eq!(r.score(&peer(2), t0), 0, "the lowest score was evicted");
}

#[test]
fn prune_forgets_faded_records() {
    let mut r = Reputation::new(config());
    let t0 = Instant::now();
    r.penalize(peer(1), Misbehaviour::UndecodableMessage, false, t0);
    r.prune(t0 + DEFAULT_SCORE_HALF_LIFE * 4);
    assert!(r.is_empty());
}
