//! The block codec: one tag byte, then the block's bytes, maybe compressed.
//!
//! Trailing zero bytes of a block are never stored (a block shorter than the block size reads
//! as zeros to its end), so a 100-byte file costs about 100 bytes of Redis, not a whole block.
//! A block is compressed only when a quick trial on its first 4 KiB with LZ4 shrinks it, so
//! incompressible data costs one small failed attempt, not a full one.

use std::io::{Read, Write};
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;

/// Compression applied to blocks, chosen when a filesystem is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Codec {
    /// Store bytes as they are.
    None,
    /// LZ4: fastest, about 2x on text.
    Lz4,
    /// Zstandard level 1: fast, better ratio than LZ4.
    Zstd,
    /// zlib level 6: the slowest, kept for compatibility.
    Zlib,
}

/// The tag byte of a block stored uncompressed.
const TAG_RAW: u8 = 0;
/// Bytes the compressibility trial looks at.
const TRIAL_LEN: usize = 4096;

impl Codec {
    /// Every codec, for tests and help texts.
    pub const ALL: [Codec; 4] = [Codec::None, Codec::Lz4, Codec::Zstd, Codec::Zlib];

    /// The name stored in `P:meta` and accepted by `--compression`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
            Codec::Zlib => "zlib",
        }
    }

    fn tag(self) -> u8 {
        match self {
            Codec::None => TAG_RAW,
            Codec::Lz4 => 1,
            Codec::Zstd => 2,
            Codec::Zlib => 3,
        }
    }

    fn from_tag(tag: u8) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.tag() == tag)
    }

    /// Encodes one block image for storage.
    pub fn encode(self, block: &[u8]) -> Vec<u8> {
        let data = trimmed(block);
        self.pack(data).unwrap_or_else(|| {
            let mut out = Vec::with_capacity(data.len() + 1);
            out.push(TAG_RAW);
            out.extend_from_slice(data);
            out
        })
    }

    /// Encodes a shared block image, `None` for an all-zero one (stored as a hole); an image
    /// that does not compress is not copied.
    pub fn encode_shared(self, image: &Arc<Vec<u8>>) -> Option<Encoded> {
        let len = trimmed(image).len();
        if len == 0 {
            return None;
        }
        Some(match self.pack(&image[..len]) {
            Some(packed) => Encoded::Laid(packed),
            None => Encoded::Raw {
                image: image.clone(),
                len,
            },
        })
    }

    /// The tagged, compressed form of `data`, when compressing is worth it.
    fn pack(self, data: &[u8]) -> Option<Vec<u8>> {
        // The trial only pays where compressing the whole costs much more than the trial.
        let try_first = data.len() > 2 * TRIAL_LEN;
        if self == Codec::None || data.len() <= 64 || (try_first && !worth_compressing(data)) {
            return None;
        }
        let packed = self.compress(data)?;
        if packed.len() + 1 >= data.len() {
            return None;
        }
        let mut out = Vec::with_capacity(packed.len() + 1);
        out.push(self.tag());
        out.extend_from_slice(&packed);
        Some(out)
    }

    fn compress(self, data: &[u8]) -> Option<Vec<u8>> {
        match self {
            Codec::None => None,
            Codec::Lz4 => Some(lz4_flex::block::compress(data)),
            Codec::Zstd => zstd::bulk::compress(data, 1).ok(),
            Codec::Zlib => {
                let mut enc = flate2::write::ZlibEncoder::new(
                    Vec::with_capacity(data.len() / 2),
                    flate2::Compression::new(6),
                );
                enc.write_all(data).ok()?;
                enc.finish().ok()
            }
        }
    }
}

impl FromStr for Codec {
    type Err = String;

    fn from_str(s: &str) -> Result<Codec, String> {
        Codec::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown compression '{s}' (use none, lz4, zstd or zlib)"))
    }
}

/// A block ready to store: the stored value laid out, or an uncompressed image that is
/// written with its tag straight into the request, saving a copy of every incompressible block.
#[derive(Clone, Debug)]
pub enum Encoded {
    /// The stored value itself.
    Laid(Vec<u8>),
    /// The raw tag, then the first `len` bytes of `image`.
    Raw {
        /// The block image.
        image: Arc<Vec<u8>>,
        /// Bytes kept (trailing zeros are dropped).
        len: usize,
    },
}

impl Encoded {
    /// The stored value's length in bytes.
    pub fn stored_len(&self) -> usize {
        match self {
            Encoded::Laid(bytes) => bytes.len(),
            Encoded::Raw { len, .. } => len + 1,
        }
    }

    /// The stored value in two pieces written one after the other: a tag that the body does
    /// not carry (empty when it does), and the body.
    pub fn parts(&self) -> (&[u8], &[u8]) {
        match self {
            Encoded::Laid(bytes) => (&[], bytes),
            Encoded::Raw { image, len } => (&[TAG_RAW], &image[..*len]),
        }
    }

    /// The stored value as one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let (tag, body) = self.parts();
        [tag, body].concat()
    }
}

impl redis::ToRedisArgs for Encoded {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        let (tag, body) = self.parts();
        let mut arg = out.writer_for_next_arg();
        // Writing into the request's own buffer cannot fail.
        let _ = arg.write_all(tag);
        let _ = arg.write_all(body);
    }
}

/// Why a stored block could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The value is empty: not even a tag.
    #[error("empty block value")]
    Empty,
    /// The tag names no known codec.
    #[error("unknown codec tag {0}")]
    UnknownTag(u8),
    /// The payload does not decompress, or decompresses past the block size.
    #[error("{codec} payload does not decode to at most {limit} bytes")]
    Corrupt {
        /// The codec's name.
        codec: &'static str,
        /// The block size.
        limit: usize,
    },
}

/// Decodes a stored block into exactly `block_size` bytes. A full uncompressed block is the
/// stored value itself past its tag: the bytes are not copied.
pub fn decode(stored: Vec<u8>, block_size: usize) -> Result<Bytes, DecodeError> {
    let (&tag, payload) = stored.split_first().ok_or(DecodeError::Empty)?;
    let codec = Codec::from_tag(tag).ok_or(DecodeError::UnknownTag(tag))?;
    let corrupt = DecodeError::Corrupt {
        codec: codec.name(),
        limit: block_size,
    };
    let mut out = match codec {
        Codec::None if payload.len() == block_size => return Ok(Bytes::from(stored).slice(1..)),
        Codec::None => {
            // Room for the zero tail at once: growing later would copy the block again.
            let mut out = Vec::with_capacity(block_size.max(payload.len()));
            out.extend_from_slice(payload);
            out
        }
        Codec::Lz4 => {
            let mut out = vec![0u8; block_size];
            let n = lz4_flex::block::decompress_into(payload, &mut out).map_err(|_| corrupt)?;
            out.truncate(n);
            out
        }
        Codec::Zstd => zstd::bulk::decompress(payload, block_size).map_err(|_| corrupt)?,
        Codec::Zlib => {
            let mut out = Vec::with_capacity(block_size);
            let read = flate2::read::ZlibDecoder::new(payload)
                .take(block_size as u64 + 1)
                .read_to_end(&mut out);
            if read.is_err() {
                return Err(corrupt);
            }
            out
        }
    };
    if out.len() > block_size {
        return Err(DecodeError::Corrupt {
            codec: codec.name(),
            limit: block_size,
        });
    }
    out.resize(block_size, 0);
    Ok(Bytes::from(out))
}

/// The block without its trailing zero bytes.
fn trimmed(block: &[u8]) -> &[u8] {
    // Whole chunks first: OR-ing a chunk compiles to vector instructions, where a byte-wise
    // search costs a cycle per byte, and a small file's block is mostly zeros after its end.
    const CHUNK: usize = 64;
    let mut end = block.len();
    while end >= CHUNK && block[end - CHUNK..end].iter().fold(0, |acc, &b| acc | b) == 0 {
        end -= CHUNK;
    }
    &block[..block[..end]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |p| p + 1)]
}

/// A cheap trial: does LZ4 shrink the first few KiB by at least 1/16?
fn worth_compressing(data: &[u8]) -> bool {
    let sample = &data[..data.len().min(TRIAL_LEN)];
    lz4_flex::block::compress(sample).len() < sample.len() - sample.len() / 16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn trimming_drops_exactly_the_trailing_zeros() {
        for len in [0, 1, 63, 64, 65, 130, 4096] {
            assert!(trimmed(&vec![0; len]).is_empty(), "{len} zeros");
            for last in [0, 1, 62, 63, 64, 65, 127, 128, len.saturating_sub(1)] {
                if last >= len {
                    continue;
                }
                let mut block = vec![0; len];
                block[last] = 7;
                block[0] |= 1;
                assert_eq!(trimmed(&block).len(), last + 1, "length {len}, last {last}");
            }
        }
    }

    #[test]
    fn every_codec_round_trips_text_random_and_sparse_blocks() {
        let bs = 65472;
        let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog\n"
            .iter()
            .cycle()
            .take(bs)
            .copied()
            .collect();
        let random = pseudo_random(bs);
        let mut sparse = vec![0u8; bs];
        sparse[10] = 1;
        for codec in Codec::ALL {
            for block in [&text, &random, &sparse, &vec![0u8; bs]] {
                let stored = codec.encode(block);
                assert_eq!(decode(stored, bs).unwrap(), &block[..], "{codec:?}");
            }
            if codec != Codec::None {
                assert!(
                    codec.encode(&text).len() < bs / 2,
                    "{codec:?} must compress text"
                );
            }
            assert!(codec.encode(&random).len() <= bs + 1);
        }
        assert_eq!(Codec::Lz4.encode(&sparse).len(), 12);
    }

    #[test]
    fn corrupt_blocks_are_errors_not_panics() {
        assert_eq!(decode(vec![], 16), Err(DecodeError::Empty));
        assert_eq!(decode(vec![9, 1], 16), Err(DecodeError::UnknownTag(9)));
        for tag in 1..=3 {
            assert!(decode(vec![tag, 0xff, 0xfe, 0x01, 0x02], 16).is_err());
        }
        assert!(
            decode(vec![0; 40], 16).is_err(),
            "raw block longer than the block size"
        );
    }
}
