//! Byte copies for the data path that run at full speed whatever the distance between
//! source and destination.
//!
//! On AMD Zen 3 and later CPUs with glibc before 2.39, `memcpy` of more than a few KiB
//! uses `rep movsb`, which runs about twenty times slower when the destination starts
//! less than 32 bytes past the source modulo 4 KiB (glibc bug 30994). Buffers from
//! `malloc` tend to start at the same offset within their pages, so a network stack's
//! copies between its buffers hit that case often. Copies made in pieces of at most
//! [`COPY_CHUNK`] bytes stay below glibc's `rep movsb` threshold and take its vector
//! loop instead, which has no such case. On the 2-core AMD EPYC this stack is measured
//! on, one 64 KiB copy at a distance of 16 bytes ran at 2.4 GB/s whole and at 41 GB/s
//! in pieces; at a distance of 256 bytes at 47 and 45 GB/s.
//!
//! Small copies (a frame header, a 32-byte message) gain nothing from this; the helpers
//! are for the copies of payload data.

use bytes::BytesMut;
use tokio::io::ReadBuf;

/// The largest piece copied by one `memcpy` call: below glibc's smallest `rep movsb`
/// threshold (4 KiB with AVX2).
pub const COPY_CHUNK: usize = 2048;

/// Copies `src` into `dst`, which must have the same length.
///
/// # Panics
/// If the lengths differ, like `<[u8]>::copy_from_slice`.
pub fn copy_bytes(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy_bytes: lengths differ");
    for (d, s) in dst.chunks_mut(COPY_CHUNK).zip(src.chunks(COPY_CHUNK)) {
        d.copy_from_slice(s);
    }
}

/// Appends `src` to `buf`, reserving once.
pub fn extend_bytes(buf: &mut BytesMut, src: &[u8]) {
    buf.reserve(src.len());
    for piece in src.chunks(COPY_CHUNK) {
        buf.extend_from_slice(piece);
    }
}

/// Appends `src` to the filled part of `buf`.
///
/// # Panics
/// If `buf` has less room than `src.len()`, like `ReadBuf::put_slice`.
pub fn put_bytes(buf: &mut ReadBuf<'_>, src: &[u8]) {
    assert!(buf.remaining() >= src.len(), "put_bytes: not enough room");
    for piece in src.chunks(COPY_CHUNK) {
        buf.put_slice(piece);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn copies_are_exact_at_any_length_and_offset(
            data in proptest::collection::vec(any::<u8>(), 0..3 * COPY_CHUNK + 7),
            offset in 0usize..64,
        ) {
            let mut dst = vec![0u8; data.len() + offset];
            copy_bytes(&mut dst[offset..], &data);
            prop_assert_eq!(&dst[offset..], &data[..]);

            let mut buf = BytesMut::from(&b"head"[..]);
            extend_bytes(&mut buf, &data);
            prop_assert_eq!(&buf[..4], b"head");
            prop_assert_eq!(&buf[4..], &data[..]);

            let mut storage = vec![0u8; data.len() + offset];
            let mut read = ReadBuf::new(&mut storage);
            read.advance(offset);
            put_bytes(&mut read, &data);
            prop_assert_eq!(&read.filled()[offset..], &data[..]);
        }
    }

    #[test]
    #[should_panic(expected = "lengths differ")]
    fn copy_bytes_refuses_different_lengths() {
        copy_bytes(&mut [0u8; 3], &[1u8; 4]);
    }
}
