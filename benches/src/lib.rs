//! Criterion benchmarks of the network stack, and the helpers they share; and the
//! kernel mix benchmark's program (`src/bin/kernel_mix.rs`, run by
//! `scripts/kernel-mix.sh`).
//!
//! Run them with `cargo bench -p benches`; `README.md` beside this crate holds the
//! latest figures, the command, and the machine they ran on. This crate owns no part of
//! the stack itself.

pub mod kernel_mix;
pub mod layers;
pub mod stack;
pub mod wan;
