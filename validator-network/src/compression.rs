//! Optional compression of an application's payloads, chosen per application
//! ([`Application::COMPRESSION`](crate::Application::COMPRESSION)).
//!
//! A compressed payload is the decompressed length as a little-endian `u32`, then one
//! LZ4 block (the layout of `lz4_flex::compress_prepend_size`). The receiver checks the
//! declared length against the message limit before it allocates anything, then
//! decompresses into exactly that many bytes: a payload that declares more than the
//! limit, or decompresses to another length, is refused. See docs/WIRE.md.

use bytes::Bytes;

/// How an application's payloads travel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// As encoded.
    #[default]
    None,
    /// LZ4-compressed (fast, modest ratio): for large, repetitive payloads such as
    /// blocks. Turning it on changes what travels on the application's protocols, so
    /// their ids must change with it.
    Lz4,
}

/// Bytes of the declared-length prefix.
const PREFIX: usize = 4;

/// Why a compressed payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressionError {
    /// Shorter than its length prefix.
    #[error("compressed payload of {0} bytes has no length prefix")]
    Truncated(usize),
    /// It declares more than the message limit; nothing was allocated.
    #[error("compressed payload declares {declared} bytes, over the limit of {max}")]
    TooLarge {
        /// The declared length.
        declared: u64,
        /// The limit.
        max: usize,
    },
    /// The LZ4 block is corrupt, or does not decompress to the declared length.
    #[error("compressed payload does not decompress to its declared {declared} bytes")]
    Corrupt {
        /// The declared length.
        declared: usize,
    },
}

impl Compression {
    /// The payload `encoded` as it travels.
    pub fn compress(self, encoded: Bytes) -> Bytes {
        match self {
            Compression::None => encoded,
            Compression::Lz4 => Bytes::from(lz4_flex::block::compress_prepend_size(&encoded)),
        }
    }

    /// The encoded payload in `wire`, which may decompress to at most `max` bytes.
    pub fn decompress(self, wire: Bytes, max: usize) -> Result<Bytes, CompressionError> {
        match self {
            Compression::None => Ok(wire),
            Compression::Lz4 => decompress_lz4(&wire, max).map(Bytes::from),
        }
    }
}

/// Checks the declared length against `max`, then decompresses into exactly that many
/// bytes.
fn decompress_lz4(wire: &[u8], max: usize) -> Result<Vec<u8>, CompressionError> {
    let Some((prefix, block)) = wire.split_first_chunk::<PREFIX>() else {
        return Err(CompressionError::Truncated(wire.len()));
    };
    let declared = u32::from_le_bytes(*prefix);
    let len = usize::try_from(declared)
        .ok()
        .filter(|len| *len <= max)
        .ok_or(CompressionError::TooLarge {
            declared: u64::from(declared),
            max,
        })?;
    let mut out = vec![0u8; len];
    match lz4_flex::block::decompress_into(block, &mut out) {
        Ok(written) if written == len => Ok(out),
        _ => Err(CompressionError::Corrupt { declared: len }),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn what_is_compressed_decompresses_to_itself(
            data in prop::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..4_000),
        ) {
            let wire = Compression::Lz4.compress(Bytes::from(data.clone()));
            let back = Compression::Lz4.decompress(wire, data.len()).unwrap();
            prop_assert_eq!(&back[..], &data[..]);
        }

        #[test]
        fn arbitrary_bytes_are_refused_or_decompress_within_the_limit(
            wire in prop::collection::vec(any::<u8>(), 0..2_000),
            max in 0usize..100_000,
        ) {
            if let Ok(out) = Compression::Lz4.decompress(Bytes::from(wire), max) {
                prop_assert!(out.len() <= max);
            }
        }
    }

    #[test]
    fn a_declared_length_over_the_limit_is_refused_before_any_allocation() {
        // A few bytes that claim 4 GiB: refused on the prefix alone.
        let mut bomb = u32::MAX.to_le_bytes().to_vec();
        bomb.extend_from_slice(&[0x1f, 0, 1, 0]);
        assert_eq!(
            Compression::Lz4.decompress(Bytes::from(bomb), 8 << 20),
            Err(CompressionError::TooLarge {
                declared: u64::from(u32::MAX),
                max: 8 << 20
            })
        );
        assert_eq!(
            Compression::Lz4.decompress(Bytes::from_static(&[1, 2]), 10),
            Err(CompressionError::Truncated(2))
        );
    }

    #[test]
    fn a_block_shorter_than_declared_is_corrupt() {
        let mut wire = Compression::Lz4
            .compress(Bytes::from(vec![7u8; 1000]))
            .to_vec();
        wire[..4].copy_from_slice(&2000u32.to_le_bytes());
        assert_eq!(
            Compression::Lz4.decompress(Bytes::from(wire), 4096),
            Err(CompressionError::Corrupt { declared: 2000 })
        );
    }

    #[test]
    fn without_compression_the_payload_is_untouched() {
        let data = Bytes::from_static(b"as encoded");
        assert_eq!(Compression::None.compress(data.clone()), data);
        assert_eq!(Compression::None.decompress(data.clone(), 0), Ok(data));
    }
}
