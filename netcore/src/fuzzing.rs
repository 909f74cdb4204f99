//! Entry points for the fuzz targets in `fuzz/`, into the sans-IO cores this crate keeps
//! private: the multiplexer's frame decoder and session state machine, and the
//! negotiation state machines. Only built with the `fuzzing` feature; not an API.
//!
//! Each function takes arbitrary bytes and must never panic, hang or allocate past the
//! configured limits, whatever the bytes are; that is what the fuzzer checks.

pub use crate::multiplexing::fuzzing::{mux_frames, mux_session};
pub use crate::negotiate::fuzzing::{negotiate_dialer, negotiate_listener};

/// A reader over the fuzz input that yields zeros once it runs out.
pub(crate) struct Input<'a> {
    pub(crate) data: &'a [u8],
}

impl<'a> Input<'a> {
    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub(crate) fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    pub(crate) fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }
}
