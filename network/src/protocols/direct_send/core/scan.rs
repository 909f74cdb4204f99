//! The receiver's reading of frames: which whole frames at the front of its read buffer
//! go to the application in one batch, and where a batch's first frames end when the
//! application's queue splits it.

use netcore::framing::{FramingError, LENGTH_FIELD_BYTES, MessageCodec};

/// Messages one reader hands to the application's queue at a time, at most.
pub(crate) const DELIVER_BATCH: usize = 64;

/// A reader stops gathering a batch past this many payload bytes: what it holds outside
/// the application's queue stays small (it has already given the sender the window
/// back for it).
pub(crate) const DELIVER_BATCH_BYTES: u64 = 16 * 1024;

/// What a scan of the read buffer found.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Whole frames at its front, admitted for delivery.
    pub(crate) count: usize,
    /// Their bytes, prefixes included.
    pub(crate) end: usize,
    /// Their messages' bytes.
    pub(crate) payload: u64,
    /// The next frame is over the maximum size.
    pub(crate) failure: Option<FramingError>,
    /// The next whole frame was not admitted (its sender is over its message rate).
    pub(crate) limited: bool,
    /// The next frame's length (prefix included), when its prefix has arrived.
    pub(crate) next_len: Option<usize>,
}

/// Counts the whole frames at the front of `buf` to deliver in one batch: at most
/// `limit` messages and about [`DELIVER_BATCH_BYTES`], each checked against `codec`'s
/// maximum and admitted by `admit` (asked once per whole frame, in order; a refusal
/// ends the batch with [`Scan::limited`]).
pub(crate) fn scan(
    codec: &MessageCodec,
    buf: &[u8],
    limit: usize,
    mut admit: impl FnMut() -> bool,
) -> Scan {
    let mut scan = Scan {
        count: 0,
        end: 0,
        payload: 0,
        failure: None,
        limited: false,
        next_len: None,
    };
    while scan.count < limit && scan.payload < DELIVER_BATCH_BYTES {
        let rest = &buf[scan.end..];
        let whole = match codec.frame_len(rest) {
            Ok(Some(whole)) => whole,
            Ok(None) => break,
            Err(e) => {
                scan.failure = Some(e);
                break;
            }
        };
        scan.next_len = Some(whole);
        if rest.len() < whole {
            break;
        }
        if !admit() {
            scan.limited = true;
            break;
        }
        scan.count += 1;
        scan.end += whole;
        scan.payload += (whole - LENGTH_FIELD_BYTES) as u64;
        scan.next_len = None;
    }
    scan
}

/// The length (prefixes included) of the first `count` frames of `frames`, whole
/// frames back to back; `None` if it holds fewer than `count` whole frames.
pub(crate) fn frames_end(frames: &[u8], count: usize) -> Option<usize> {
    let mut end = 0usize;
    for _ in 0..count {
        let prefix = frames.get(end..)?.first_chunk::<LENGTH_FIELD_BYTES>()?;
        end = end.checked_add(LENGTH_FIELD_BYTES + u32::from_be_bytes(*prefix) as usize)?;
    }
    (end <= frames.len()).then_some(end)
}
