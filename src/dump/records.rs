//! The dump file format: a stream of records, MessagePack or JSON lines, optionally gzipped.
//!
//! A dump is a [`Header`], then for each directory its entries, each followed (the first time
//! its inode is met) by the inode and, for a regular file, its non-empty blocks and a
//! [`FileEnd`] with the SHA-256 of those blocks; then a [`Trailer`] with the record count and
//! the SHA-256 of every byte before it. A reader therefore rejects any change to the bytes,
//! and a stream that ends before its trailer. Every error names the record and byte offset.

use std::io::{BufRead, Read, Write};

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::attr::Timestamp;
use crate::error::Error;

/// Written in every header; anything else is not a redisfs dump.
pub const MAGIC: &str = "redisfs-dump";
/// The newest dump format this build reads and writes.
pub const DUMP_VERSION: u32 = 1;

/// Bytes that serialize as MessagePack binary, or as base64 in JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes or a base64 string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Bytes, E> {
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map(Bytes)
                    .map_err(|e| E::custom(format!("bad base64: {e}")))
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(Visitor)
        } else {
            d.deserialize_byte_buf(Visitor)
        }
    }
}

/// Longest name a directory entry may have.
const NAME_MAX: usize = 255;

/// Whether `name` can name a directory entry: not empty, not `.` or `..`, no `/` or NUL, at
/// most 255 bytes. Checked before a name is stored or used as a path.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && !name.contains(&b'/')
        && !name.contains(&0)
        && name != b"."
        && name != b".."
}

/// A point in time: seconds since the epoch and nanoseconds.
pub type Time = (i64, u32);

/// Converts a stored timestamp for a record.
pub fn time(t: Timestamp) -> Time {
    (t.sec, t.nsec)
}

/// Converts a record's time back, refusing nanoseconds out of range.
pub fn timestamp(t: Time) -> Option<Timestamp> {
    (t.1 < 1_000_000_000).then_some(Timestamp {
        sec: t.0,
        nsec: t.1,
    })
}

/// The first record: what the dump is and the settings of the filesystem it came from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Header {
    /// Always [`MAGIC`].
    pub magic: String,
    /// The dump format version.
    pub version: u32,
    /// Data bytes per block: the unit of [`Data`] records.
    pub block_size: u32,
    /// Compression the filesystem used (a restore uses it too unless told otherwise).
    pub codec: String,
    /// Where it came from (prefix, or directory), for people reading the dump.
    pub source: String,
    /// When the dump was made (seconds since the epoch).
    pub created: i64,
    /// The redisfs version that wrote it.
    pub writer: String,
    /// Whether the filesystem kept POSIX ACLs (dumps older than the setting: it did).
    #[serde(default = "acls_kept")]
    pub acl: bool,
}

fn acls_kept() -> bool {
    true
}

/// An inode: its attributes, a symlink's target, extended attributes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Inode {
    /// Inode number (the root is 1).
    pub ino: u64,
    /// Type and permission bits.
    pub mode: u32,
    /// Hard links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Access time.
    pub atime: Time,
    /// Modification time.
    pub mtime: Time,
    /// Change time.
    pub ctime: Time,
    /// Device number of a device node.
    pub rdev: u32,
    /// A symlink's target.
    pub target: Option<Bytes>,
    /// Extended attributes, name and value.
    pub xattrs: Vec<(Bytes, Bytes)>,
}

/// A directory entry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EntryRecord {
    /// The directory.
    pub parent: u64,
    /// The name.
    pub name: Bytes,
    /// The inode named.
    pub ino: u64,
    /// Its kind, as stored in directories: f, d, l, p, c, b or s.
    pub kind: char,
}

/// One block of a regular file; blocks not written are holes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Data {
    /// The file.
    pub ino: u64,
    /// Block index: the bytes start at `index × block_size`.
    pub index: u64,
    /// The block's bytes, trailing zeros left out.
    pub bytes: Bytes,
}

/// The end of a regular file's blocks.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEnd {
    /// The file.
    pub ino: u64,
    /// SHA-256 over each block's index (8 bytes, little-endian), length (4 bytes) and bytes.
    pub sha256: Bytes,
}

/// The last record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Trailer {
    /// Records before this one.
    pub records: u64,
    /// SHA-256 of every byte before this record (uncompressed).
    pub sha256: Bytes,
}

/// One record of a dump.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Record {
    /// See [`Header`].
    Header(Header),
    /// See [`Inode`].
    Inode(Inode),
    /// See [`EntryRecord`].
    Entry(EntryRecord),
    /// See [`Data`].
    Data(Data),
    /// See [`FileEnd`].
    FileEnd(FileEnd),
    /// See [`Trailer`].
    Trailer(Trailer),
}

/// The running content checksum of one file (see [`FileEnd::sha256`]).
#[derive(Default, Clone)]
pub struct ContentHash(Sha256);

impl ContentHash {
    /// Adds one block.
    pub fn add(&mut self, index: u64, bytes: &[u8]) {
        self.0.update(index.to_le_bytes());
        self.0.update((bytes.len() as u32).to_le_bytes());
        self.0.update(bytes);
    }

    /// The checksum.
    pub fn finish(self) -> Vec<u8> {
        self.0.finalize().to_vec()
    }
}

/// How records are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// MessagePack: compact, the default.
    Msgpack,
    /// JSON, one record per line, bytes in base64.
    Json,
}

/// Writes records, keeping the stream checksum for the trailer.
pub struct RecordWriter<W: Write> {
    out: W,
    encoding: Encoding,
    hash: Sha256,
    records: u64,
    bytes: u64,
    buf: Vec<u8>,
}

impl<W: Write> RecordWriter<W> {
    /// Starts a dump on `out`.
    pub fn new(out: W, encoding: Encoding) -> RecordWriter<W> {
        RecordWriter {
            out,
            encoding,
            hash: Sha256::new(),
            records: 0,
            bytes: 0,
            buf: Vec::new(),
        }
    }

    /// Appends one record.
    pub fn write(&mut self, record: &Record) -> std::io::Result<()> {
        self.buf.clear();
        match self.encoding {
            Encoding::Msgpack => rmp_serde::encode::write_named(&mut self.buf, record)
                .map_err(|e| std::io::Error::other(e.to_string()))?,
            Encoding::Json => {
                serde_json::to_writer(&mut self.buf, record)?;
                self.buf.push(b'\n');
            }
        }
        self.hash.update(&self.buf);
        self.records += 1;
        self.bytes += self.buf.len() as u64;
        self.out.write_all(&self.buf)
    }

    /// Uncompressed bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes the trailer and returns the output.
    pub fn finish(mut self) -> std::io::Result<W> {
        let trailer = Record::Trailer(Trailer {
            records: self.records,
            sha256: Bytes(self.hash.clone().finalize().to_vec()),
        });
        self.write(&trailer)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A buffered reader that hashes and counts every byte consumed.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    offset: u64,
}

impl<R: BufRead> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.offset += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Hashing<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            self.hash.update(&buf[..amt.min(buf.len())]);
        }
        self.offset += amt as u64;
        self.inner.consume(amt);
    }
}

/// Reads and checks the records of a dump, gzipped or not, MessagePack or JSON (detected).
pub struct RecordReader<R: BufRead> {
    input: Hashing<R>,
    name: String,
    encoding: Encoding,
    records: u64,
    ended: bool,
    line: Vec<u8>,
}

/// Opens a dump: detects gzip and the encoding from the first bytes.
pub fn open_reader(
    input: Box<dyn Read + Send>,
    name: &str,
) -> Result<RecordReader<Box<dyn BufRead + Send>>, Error> {
    let mut raw = std::io::BufReader::with_capacity(1 << 20, input);
    let head = raw
        .fill_buf()
        .map_err(|e| bad_dump(name, 0, 0, &format!("cannot read: {e}")))?;
    let gzipped = head.starts_with(&[0x1f, 0x8b]);
    let mut plain: Box<dyn BufRead + Send> = if gzipped {
        Box::new(std::io::BufReader::with_capacity(
            1 << 20,
            flate2::bufread::MultiGzDecoder::new(raw),
        ))
    } else {
        Box::new(raw)
    };
    let first = plain
        .fill_buf()
        .map_err(|e| bad_dump(name, 0, 0, &format!("cannot read: {e}")))?
        .first()
        .copied();
    let encoding = match first {
        None => return Err(bad_dump(name, 0, 0, "the file is empty")),
        Some(b'{') => Encoding::Json,
        Some(_) => Encoding::Msgpack,
    };
    Ok(RecordReader {
        input: Hashing {
            inner: plain,
            hash: Sha256::new(),
            offset: 0,
        },
        name: name.to_string(),
        encoding,
        records: 0,
        ended: false,
        line: Vec::new(),
    })
}

/// A dump that cannot be read, naming the record and offset.
pub fn bad_dump(name: &str, record: u64, offset: u64, reason: &str) -> Error {
    Error::BadDump {
        file: name.to_string(),
        record,
        offset,
        reason: printable_line(reason),
    }
}

/// The most characters of a reason kept: a decoder's message may quote megabytes of
/// damaged bytes.
const REASON_CHARS: usize = 200;

/// `reason` as one short printable line: decoders quote the damaged bytes they met,
/// which may hold newlines and control characters.
fn printable_line(reason: &str) -> String {
    let mut printable = reason.chars().flat_map(|c| {
        let escape = c.is_control().then(|| c.escape_default());
        let plain = escape.is_none().then_some(c);
        escape.into_iter().flatten().chain(plain)
    });
    let mut line: String = printable.by_ref().take(REASON_CHARS).collect();
    if printable.next().is_some() {
        line.push('…');
    }
    line
}

impl<R: BufRead> RecordReader<R> {
    /// The next record, or `None` after a verified trailer. The header is checked when read.
    pub fn next_record(&mut self) -> Result<Option<Record>, Error> {
        if self.ended {
            return Ok(None);
        }
        let start = self.input.offset;
        let fail =
            |this: &Self, reason: &str| bad_dump(&this.name, this.records + 1, start, reason);
        let at_end = match self.input.fill_buf() {
            Ok(buf) => buf.is_empty(),
            Err(e) => return Err(fail(self, &format!("cannot read: {e}"))),
        };
        if at_end {
            return Err(fail(
                self,
                "the dump ends here, before its trailer: it is truncated",
            ));
        }
        let before = self.input.hash.clone();
        let record: Record = match self.encoding {
            Encoding::Msgpack => rmp_serde::decode::from_read(&mut self.input)
                .map_err(|e| fail(self, &format!("not a valid record: {e}")))?,
            Encoding::Json => {
                self.line.clear();
                self.input
                    .read_until(b'\n', &mut self.line)
                    .map_err(|e| fail(self, &format!("cannot read: {e}")))?;
                if self.line.last() != Some(&b'\n') {
                    return Err(fail(
                        self,
                        "the last line is cut short: the dump is truncated",
                    ));
                }
                serde_json::from_slice(&self.line)
                    .map_err(|e| fail(self, &format!("not a valid record: {e}")))?
            }
        };
        self.records += 1;
        match &record {
            Record::Header(h) if self.records == 1 => {
                check_header(h).map_err(|r| fail(self, &r))?
            }
            _ if self.records == 1 => {
                return Err(fail(
                    self,
                    "a dump starts with a header; this is not a redisfs dump",
                ))
            }
            Record::Header(_) => return Err(fail(self, "a second header")),
            Record::Trailer(t) => {
                if t.records != self.records - 1 {
                    return Err(fail(
                        self,
                        &format!(
                            "the trailer counts {} records, {} were read",
                            t.records,
                            self.records - 1
                        ),
                    ));
                }
                if t.sha256.0 != before.finalize().as_slice() {
                    return Err(fail(
                        self,
                        "the checksum of the dump does not match its content: the file is corrupt",
                    ));
                }
                let trailing = match self.input.fill_buf() {
                    Ok(buf) => !buf.is_empty(),
                    Err(e) => {
                        return Err(fail(self, &format!("cannot read after the trailer: {e}")))
                    }
                };
                if trailing {
                    return Err(fail(self, "bytes follow the trailer"));
                }
                self.ended = true;
                return Ok(None);
            }
            _ => {}
        }
        Ok(Some(record))
    }

    /// Where the reader is: (records read, uncompressed bytes consumed).
    pub fn position(&self) -> (u64, u64) {
        (self.records, self.input.offset)
    }

    /// The dump's name, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn check_header(h: &Header) -> Result<(), String> {
    if h.magic != MAGIC {
        return Err(format!("not a redisfs dump (magic '{}')", h.magic));
    }
    if h.version != DUMP_VERSION {
        return Err(format!(
            "dump format version {} is not supported (this redisfs reads version {DUMP_VERSION})",
            h.version
        ));
    }
    if !(1024..=(64 << 20)).contains(&h.block_size) {
        return Err(format!("block size {} is out of range", h.block_size));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record::Header(Header {
                magic: MAGIC.into(),
                version: DUMP_VERSION,
                block_size: 4096,
                codec: "lz4".into(),
                source: "t".into(),
                created: 1,
                writer: "test".into(),
                acl: true,
            }),
            Record::Entry(EntryRecord {
                parent: 1,
                name: Bytes(b"a\xffb".to_vec()),
                ino: 2,
                kind: 'f',
            }),
            Record::Data(Data {
                ino: 2,
                index: 0,
                bytes: Bytes(vec![0, 1, 2, 255]),
            }),
        ]
    }

    fn encode(encoding: Encoding) -> Vec<u8> {
        let mut w = RecordWriter::new(Vec::new(), encoding);
        for r in sample() {
            w.write(&r).unwrap();
        }
        w.finish().unwrap()
    }

    fn decode(bytes: Vec<u8>) -> Result<Vec<Record>, Error> {
        let mut r = open_reader(Box::new(std::io::Cursor::new(bytes)), "t")?;
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push(rec);
        }
        Ok(out)
    }

    #[test]
    fn records_round_trip_in_both_encodings() {
        for e in [Encoding::Msgpack, Encoding::Json] {
            assert_eq!(decode(encode(e)).unwrap(), sample());
        }
    }

    #[test]
    fn a_reason_quoting_damaged_bytes_stays_one_short_line() {
        let quoted = format!("unknown variant `{}`", "\n\u{1}x\u{fffd}".repeat(100_000));
        let message = bad_dump("d", 3, 9, &quoted).to_string();
        assert!(
            message.starts_with("dump d: record 3 at byte 9: unknown variant `")
                && !message.contains('\n')
                && message.chars().count() < 400,
            "{message}"
        );
    }

    #[test]
    fn every_damage_is_an_error() {
        for e in [Encoding::Msgpack, Encoding::Json] {
            let good = encode(e);
            for cut in 0..good.len() {
                assert!(
                    decode(good[..cut].to_vec()).is_err(),
                    "cut at {cut} accepted"
                );
            }
            for at in 0..good.len() {
                for bit in 0..8 {
                    let mut bad = good.clone();
                    bad[at] ^= 1 << bit;
                    let err = decode(bad).expect_err("a flipped bit was accepted");
                    let message = err.to_string();
                    assert!(
                        !message.contains('\n') && message.len() < 400,
                        "flip of bit {bit} at {at}: {message}"
                    );
                }
            }
        }
    }
}
