//! Replays every committed fuzz seed (`fuzz/corpus/<target>/*`) through its target's
//! entry function, so `cargo test --workspace` checks that none of them crashes, and that
//! every target has a corpus.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use fuzz_entries::TARGETS;

/// Panics anywhere in the process, including in tasks a live node spawned (which tokio
/// would otherwise swallow).
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

fn seeds(target: &str) -> Vec<PathBuf> {
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("no corpus for {target}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    seeds.sort();
    seeds
}

#[test]
fn every_seed_of_every_target_runs_without_a_panic() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    for &(target, entry) in TARGETS {
        let seeds = seeds(target);
        assert!(!seeds.is_empty(), "the corpus of {target} is empty");
        for seed in seeds {
            let data = std::fs::read(&seed).unwrap();
            entry(&data);
            assert_eq!(
                PANICS.load(Ordering::SeqCst),
                0,
                "{} panicked",
                seed.display()
            );
        }
    }
}

#[test]
fn every_target_has_a_fuzz_target_file() {
    for &(target, _) in TARGETS {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("targets/fuzz_targets")
            .join(format!("{target}.rs"));
        assert!(file.is_file(), "{} is missing", file.display());
    }
}
