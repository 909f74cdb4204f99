use proptest::prelude::*;

use super::*;

const POLL: Duration = Duration::from_millis(200);

fn block(height: u64) -> Block {
    let id = |h: u64| Bytes::from(format!("block-{h}"));
    Block {
        height,
        id: id(height),
        parent_id: if height == 1 {
            Bytes::new()
        } else {
            id(height - 1)
        },
        ..Block::default()
    }
}

fn peer(n: u8) -> PeerId {
    PeerId::new([n; 32])
}

/// What a peer holding the first `len` blocks answers to `fetch`.
fn answer_of(len: u64, fetch: &Fetch) -> Answer {
    let end = (fetch.from + fetch.count).min(len + 1);
    Answer::Blocks((fetch.from..end).map(block).collect())
}

/// A small deterministic generator for the simulation's choices.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

proptest! {
    /// Peers holding prefixes of one chain answer in any order, some requests fail and
    /// a peer may leave and come back: the client applies every block of the longest
    /// chain exactly once, in order, never with more than its limit in flight (one
    /// more while the chunk at the head is asked again).
    #[test]
    fn a_client_far_behind_applies_the_longest_chain_once_in_order(
        lens in prop::collection::vec(0u64..400, 1..5),
        chunk in 1u64..60,
        max_in_flight in 1usize..6,
        seed in any::<u64>(),
        fail_one_in in 2usize..10,
    ) {
        let best = *lens.iter().max().unwrap_or(&0);
        let mut rng = Rng(seed);
        let mut core = SyncCore::new(0, Bytes::new(), chunk, max_in_flight, POLL);
        for i in 0..lens.len() {
            core.on_peer_up(peer(i as u8));
        }
        let mut now = Instant::now();
        let mut pending: Vec<Fetch> = Vec::new();
        let mut applied = 0u64;
        for _ in 0..20_000 {
            pending.extend(core.poll(now));
            prop_assert!(core.in_flight() <= max_in_flight + 1);
            if core.height() == best && pending.is_empty() {
                break;
            }
            if pending.is_empty() {
                now += POLL;
                continue;
            }
            let fetch = pending.swap_remove(rng.below(pending.len()));
            let who = fetch.peer.as_bytes()[0] as usize;
            // Now and then a peer leaves (what it was asked goes to others) and
            // comes back.
            if rng.below(50) == 0 {
                core.on_peer_down(&fetch.peer);
                pending.retain(|f| f.peer != fetch.peer);
                core.on_peer_up(fetch.peer);
                continue;
            }
            let answer = if rng.below(fail_one_in) == 0 {
                Answer::Failed
            } else {
                answer_of(lens[who], &fetch)
            };
            let progress = core.on_answer(&fetch, answer, now);
            prop_assert!(progress.misbehaved.is_none());
            for block in progress.apply {
                applied += 1;
                prop_assert_eq!(block.height, applied);
            }
        }
        prop_assert_eq!(core.height(), best);
        prop_assert_eq!(applied, best);
    }
}

#[test]
fn blocks_that_do_not_chain_are_refused_and_fetched_again_from_an_honest_peer() {
    let (liar, honest) = (peer(1), peer(2));
    let mut core = SyncCore::new(0, Bytes::new(), 10, 1, POLL);
    core.on_peer_up(liar);
    let now = Instant::now();
    let fetch = core.poll(now).remove(0);
    assert_eq!((fetch.peer, fetch.from, fetch.count), (liar, 1, 10));
    // Right heights, a made-up parent at the start.
    let mut forged: Vec<Block> = (1..=10).map(block).collect();
    forged[0].parent_id = Bytes::from_static(b"elsewhere");
    let progress = core.on_answer(&fetch, Answer::Blocks(forged), now);
    assert_eq!(progress.misbehaved, Some(liar));
    assert!(progress.apply.is_empty());
    core.on_peer_down(&liar);
    core.on_peer_up(honest);
    let fetch = core.poll(now).remove(0);
    assert_eq!((fetch.peer, fetch.from), (honest, 1));
    let progress = core.on_answer(&fetch, answer_of(10, &fetch), now);
    assert_eq!(progress.apply.len(), 10);
    assert_eq!(core.height(), 10);
}

#[test]
fn wrong_heights_are_refused_before_they_are_kept() {
    let mut core = SyncCore::new(0, Bytes::new(), 5, 2, POLL);
    core.on_peer_up(peer(1));
    let now = Instant::now();
    let fetch = core.poll(now).remove(0);
    let shifted: Vec<Block> = (2..=6).map(block).collect();
    let progress = core.on_answer(&fetch, Answer::Blocks(shifted), now);
    assert_eq!(progress.misbehaved, Some(peer(1)));
    assert_eq!(core.height(), 0);
}

#[test]
fn at_the_end_of_the_chain_it_pauses_then_follows_new_blocks() {
    let mut core = SyncCore::new(0, Bytes::new(), 10, 2, POLL);
    core.on_peer_up(peer(1));
    let start = Instant::now();
    // The peer has 12 blocks.
    let mut len = 12;
    let mut now = start;
    for _ in 0..10 {
        for fetch in core.poll(now) {
            let progress = core.on_answer(&fetch, answer_of(len, &fetch), now);
            assert!(progress.misbehaved.is_none());
        }
    }
    assert_eq!(core.height(), 12);
    // Nothing more is asked until the pause is over.
    assert!(core.poll(now).is_empty());
    assert_eq!(core.next_poll(), Some(now + POLL));
    // The chain grew meanwhile; after the pause the client follows it.
    len = 15;
    now += POLL;
    for _ in 0..10 {
        for fetch in core.poll(now) {
            core.on_answer(&fetch, answer_of(len, &fetch), now);
        }
    }
    assert_eq!(core.height(), 15);
}

#[test]
fn a_late_answer_to_a_request_given_up_on_does_not_count_for_the_new_one() {
    let (a, b) = (peer(1), peer(2));
    let mut core = SyncCore::new(0, Bytes::new(), 10, 1, POLL);
    core.on_peer_up(a);
    let now = Instant::now();
    let first = core.poll(now).remove(0);
    // A leaves; the chunk goes to B.
    core.on_peer_down(&a);
    core.on_peer_up(b);
    let second = core.poll(now).remove(0);
    assert_eq!((second.peer, second.from), (b, first.from));
    // A's request fails late: nothing changes.
    assert!(core.on_answer(&first, Answer::Failed, now).apply.is_empty());
    assert_eq!(core.in_flight(), 1);
    // B's answer is applied.
    let progress = core.on_answer(&second, answer_of(10, &second), now);
    assert_eq!(progress.apply.len(), 10);
}

#[test]
fn a_failed_chunk_is_asked_again_after_the_pause_not_in_a_loop() {
    let mut core = SyncCore::new(0, Bytes::new(), 10, 1, POLL);
    core.on_peer_up(peer(1));
    let now = Instant::now();
    let fetch = core.poll(now).remove(0);
    core.on_answer(&fetch, Answer::Failed, now);
    assert!(core.poll(now).is_empty(), "not at once");
    let again = core.poll(now + POLL).remove(0);
    assert_eq!(again.from, fetch.from);
}
