//! The inode record: a file's attributes packed into at most 64 bytes.
//!
//! Layout (little-endian), shared with `src/lua/prelude.lua`:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 2 | mode (type bits and permissions) |
//! | 2 | 4 | nlink |
//! | 6 | 4 | uid |
//! | 10 | 4 | gid |
//! | 14 | 8 | size |
//! | 22 | 10 | atime: seconds (signed, 48 bits) then nanoseconds (32 bits) |
//! | 32 | 10 | mtime |
//! | 42 | 10 | ctime |
//! | 52 | 8 or 4 | directories: parent inode; regular files: blocks stored; device nodes: rdev |
//! | 60 | 4 | directories: version, counting every change (absent or 0: not yet counted) |
//!
//! A directory's version orders what a mount hears of it: the record a change event carries
//! and the record a read or a script's reply brings may come in either order, and the higher
//! version is the newer (see `src/fs/cache.rs`). Every script's `save()` counts one up.
//! A record stays under Redis's 64-byte `hash-max-listpack-value`, so 64 records share one
//! compact hash (see `docs/design.md` for the memory figures that chose this).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where each field of a record begins (the table above): the scripts get these as
/// `AT.<name>` (see `src/scripts.rs`), so that the layout is written here only.
pub const FIELDS_AT: [(&str, usize); 10] = [
    ("MODE", MODE_AT),
    ("NLINK", NLINK_AT),
    ("UID", UID_AT),
    ("GID", GID_AT),
    ("SIZE", SIZE_AT),
    ("ATIME", ATIME_AT),
    ("MTIME", MTIME_AT),
    ("CTIME", CTIME_AT),
    ("TAIL", FIXED_LEN),
    ("VERSION", VERSION_AT),
];
const MODE_AT: usize = 0;
const NLINK_AT: usize = 2;
const UID_AT: usize = 6;
const GID_AT: usize = 10;
const SIZE_AT: usize = 14;
const ATIME_AT: usize = 22;
const MTIME_AT: usize = 32;
const CTIME_AT: usize = 42;
/// Bytes of the fixed part of a record; the kind's own field follows.
pub const FIXED_LEN: usize = 52;
/// Where a directory's version begins, after its parent.
const VERSION_AT: usize = FIXED_LEN + 8;
/// Bytes of a directory's record as every change leaves it (with its version).
pub const DIR_RECORD_LEN: usize = VERSION_AT + 4;

/// Whether directory version `a` comes after version `b`. Versions count round past
/// `u32::MAX` to 1, so of two versions less than 2^31 changes apart, the one ahead is the newer;
/// 0 (not yet counted) comes before every other.
pub fn version_after(a: u32, b: u32) -> bool {
    a != 0 && (b == 0 || (a.wrapping_sub(b) as i32) > 0)
}

/// The kinds of inode a filesystem holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A Unix socket.
    Socket,
}

impl FileKind {
    /// Every kind.
    pub const ALL: [FileKind; 7] = [
        FileKind::File,
        FileKind::Dir,
        FileKind::Symlink,
        FileKind::Fifo,
        FileKind::CharDevice,
        FileKind::BlockDevice,
        FileKind::Socket,
    ];

    /// The kind named by the `S_IFMT` bits of `mode`.
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::File,
            libc::S_IFDIR => FileKind::Dir,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            libc::S_IFSOCK => FileKind::Socket,
            _ => return None,
        })
    }

    /// The `S_IFMT` bits of this kind.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileKind::File => libc::S_IFREG,
            FileKind::Dir => libc::S_IFDIR,
            FileKind::Symlink => libc::S_IFLNK,
            FileKind::Fifo => libc::S_IFIFO,
            FileKind::CharDevice => libc::S_IFCHR,
            FileKind::BlockDevice => libc::S_IFBLK,
            FileKind::Socket => libc::S_IFSOCK,
        }
    }

    /// The letter that stands for this kind in a directory entry.
    pub fn letter(self) -> char {
        match self {
            FileKind::File => 'f',
            FileKind::Dir => 'd',
            FileKind::Symlink => 'l',
            FileKind::Fifo => 'p',
            FileKind::CharDevice => 'c',
            FileKind::BlockDevice => 'b',
            FileKind::Socket => 's',
        }
    }

    /// The kind a directory-entry letter stands for.
    pub fn from_letter(letter: u8) -> Option<FileKind> {
        Some(match letter {
            b'f' => FileKind::File,
            b'd' => FileKind::Dir,
            b'l' => FileKind::Symlink,
            b'p' => FileKind::Fifo,
            b'c' => FileKind::CharDevice,
            b'b' => FileKind::BlockDevice,
            b's' => FileKind::Socket,
            _ => return None,
        })
    }

    /// The kind as fuser names it.
    pub fn to_fuser(self) -> fuser::FileType {
        match self {
            FileKind::File => fuser::FileType::RegularFile,
            FileKind::Dir => fuser::FileType::Directory,
            FileKind::Symlink => fuser::FileType::Symlink,
            FileKind::Fifo => fuser::FileType::NamedPipe,
            FileKind::CharDevice => fuser::FileType::CharDevice,
            FileKind::BlockDevice => fuser::FileType::BlockDevice,
            FileKind::Socket => fuser::FileType::Socket,
        }
    }
}

/// A point in time with nanosecond precision, as stored in a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp {
    /// Seconds since the epoch (may be negative).
    pub sec: i64,
    /// Nanoseconds within the second.
    pub nsec: u32,
}

/// The largest magnitude of seconds the 48-bit field holds.
const SEC_LIMIT: i64 = 1 << 47;

impl Timestamp {
    /// The current time of this machine.
    pub fn now() -> Timestamp {
        Timestamp::from_system(SystemTime::now())
    }

    /// Converts from `SystemTime`, clamping to what the record can hold.
    pub fn from_system(time: SystemTime) -> Timestamp {
        let (sec, nsec) = match time.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                let (s, n) = (d.as_secs() as i64, d.subsec_nanos());
                if n == 0 {
                    (-s, 0)
                } else {
                    (-s - 1, 1_000_000_000 - n)
                }
            }
        };
        Timestamp {
            sec: sec.clamp(-SEC_LIMIT, SEC_LIMIT - 1),
            nsec,
        }
    }

    /// Converts to `SystemTime`.
    pub fn to_system(self) -> SystemTime {
        if self.sec >= 0 {
            UNIX_EPOCH + Duration::new(self.sec as u64, self.nsec)
        } else {
            UNIX_EPOCH - Duration::from_secs(self.sec.unsigned_abs())
                + Duration::from_nanos(u64::from(self.nsec))
        }
    }

    /// The 10-byte form stored in records and passed to scripts.
    pub fn encode(self) -> [u8; 10] {
        let mut out = [0u8; 10];
        out[..6].copy_from_slice(&self.sec.to_le_bytes()[..6]);
        out[6..].copy_from_slice(&self.nsec.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Timestamp {
        let mut sec = [0u8; 8];
        sec[..6].copy_from_slice(&bytes[..6]);
        if bytes[5] & 0x80 != 0 {
            sec[6] = 0xff;
            sec[7] = 0xff;
        }
        Timestamp {
            sec: i64::from_le_bytes(sec),
            nsec: u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]),
        }
    }
}

/// A decoded inode record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Type and permission bits.
    pub mode: u32,
    /// Hard link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (for symlinks, the target's length).
    pub size: u64,
    /// Last access.
    pub atime: Timestamp,
    /// Last data change.
    pub mtime: Timestamp,
    /// Last status change.
    pub ctime: Timestamp,
    /// For directories, the parent's inode number (the root is its own parent).
    pub parent: u64,
    /// For device nodes, the device number.
    pub rdev: u32,
    /// For regular files, how many data blocks are stored (holes are not); `None` in a
    /// record written before they were counted.
    pub stored_blocks: Option<u64>,
    /// For directories, the count of changes made to the record (see the module header).
    pub version: u32,
}

impl Attr {
    /// A fresh record for a new inode, all three times set to `now`.
    pub fn new(kind: FileKind, perm: u32, uid: u32, gid: u32, now: Timestamp) -> Attr {
        Attr {
            ino: 0,
            mode: kind.mode_bits() | (perm & 0o7777),
            nlink: if kind == FileKind::Dir { 2 } else { 1 },
            uid,
            gid,
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            parent: 0,
            rdev: 0,
            stored_blocks: (kind == FileKind::File).then_some(0),
            version: 0,
        }
    }

    /// The kind of inode; records always carry a valid one (checked on decode).
    pub fn kind(&self) -> FileKind {
        FileKind::from_mode(self.mode).unwrap_or(FileKind::File)
    }

    /// Packs the record for Redis.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + 8);
        out.extend_from_slice(&(self.mode as u16).to_le_bytes());
        out.extend_from_slice(&self.nlink.to_le_bytes());
        out.extend_from_slice(&self.uid.to_le_bytes());
        out.extend_from_slice(&self.gid.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.atime.encode());
        out.extend_from_slice(&self.mtime.encode());
        out.extend_from_slice(&self.ctime.encode());
        match self.kind() {
            FileKind::Dir => {
                out.extend_from_slice(&self.parent.to_le_bytes());
                out.extend_from_slice(&self.version.to_le_bytes());
            }
            FileKind::File => {
                if let Some(n) = self.stored_blocks {
                    out.extend_from_slice(&n.to_le_bytes())
                }
            }
            FileKind::CharDevice | FileKind::BlockDevice => {
                out.extend_from_slice(&self.rdev.to_le_bytes())
            }
            _ => {}
        }
        out
    }

    /// Unpacks a record read from Redis; `None` if it is not a valid record.
    pub fn decode(ino: u64, bytes: &[u8]) -> Option<Attr> {
        if bytes.len() < FIXED_LEN {
            return None;
        }
        let u32_at =
            |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let mode = u32::from(u16::from_le_bytes([bytes[MODE_AT], bytes[MODE_AT + 1]]));
        let kind = FileKind::from_mode(mode)?;
        let mut size = [0u8; 8];
        size.copy_from_slice(&bytes[SIZE_AT..SIZE_AT + 8]);
        let tail = &bytes[FIXED_LEN..];
        let u64_tail = || {
            let mut v = [0u8; 8];
            v.copy_from_slice(&tail[..8]);
            u64::from_le_bytes(v)
        };
        let mut stored_blocks = None;
        let mut version = 0;
        let (parent, rdev) = match kind {
            FileKind::Dir if tail.len() == 8 => (u64_tail(), 0),
            FileKind::Dir if tail.len() == DIR_RECORD_LEN - FIXED_LEN => {
                let v = &bytes[VERSION_AT..];
                version = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                (u64_tail(), 0)
            }
            FileKind::Dir => return None,
            FileKind::File if tail.len() == 8 => {
                stored_blocks = Some(u64_tail());
                (0, 0)
            }
            FileKind::CharDevice | FileKind::BlockDevice if tail.len() == 4 => {
                (0, u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]))
            }
            FileKind::CharDevice | FileKind::BlockDevice => return None,
            _ if tail.is_empty() => (0, 0),
            _ => return None,
        };
        Some(Attr {
            ino,
            mode,
            nlink: u32_at(NLINK_AT),
            uid: u32_at(UID_AT),
            gid: u32_at(GID_AT),
            size: u64::from_le_bytes(size),
            atime: Timestamp::decode(&bytes[ATIME_AT..MTIME_AT]),
            mtime: Timestamp::decode(&bytes[MTIME_AT..CTIME_AT]),
            ctime: Timestamp::decode(&bytes[CTIME_AT..FIXED_LEN]),
            parent,
            rdev,
            stored_blocks,
            version,
        })
    }

    /// The attributes as the kernel wants them.
    pub fn to_fuser(&self, block_size: u32) -> fuser::FileAttr {
        fuser::FileAttr {
            ino: fuser::INodeNo(self.ino),
            size: self.size,
            blocks: match self.stored_blocks {
                Some(n) => (n * u64::from(block_size)).div_ceil(512),
                None => self.size.div_ceil(512),
            },
            atime: self.atime.to_system(),
            mtime: self.mtime.to_system(),
            ctime: self.ctime.to_system(),
            crtime: self.ctime.to_system(),
            kind: self.kind().to_fuser(),
            perm: (self.mode & 0o7777) as u16,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: self.rdev,
            blksize: block_size.next_power_of_two(),
            flags: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_for_every_kind() {
        let now = Timestamp {
            sec: -5,
            nsec: 999_999_999,
        };
        for kind in FileKind::ALL {
            let mut attr = Attr::new(kind, 0o4755, 1000, 100, now);
            attr.ino = 77;
            attr.size = (1 << 50) + 3;
            attr.parent = if kind == FileKind::Dir { 12 } else { 0 };
            attr.rdev = if matches!(kind, FileKind::CharDevice | FileKind::BlockDevice) {
                0x0801
            } else {
                0
            };
            if kind == FileKind::File {
                attr.stored_blocks = Some(1 << 33);
            }
            if kind == FileKind::Dir {
                attr.version = u32::MAX;
            }
            let bytes = attr.encode();
            assert!(bytes.len() <= 64, "record must stay a listpack value");
            assert_eq!(Attr::decode(77, &bytes), Some(attr));
        }
    }

    #[test]
    fn timestamps_keep_nanoseconds_and_sign() {
        for t in [
            Timestamp { sec: 0, nsec: 1 },
            Timestamp { sec: -1, nsec: 5 },
            Timestamp {
                sec: 1 << 40,
                nsec: 999_999_999,
            },
            Timestamp {
                sec: -(1 << 40),
                nsec: 0,
            },
        ] {
            assert_eq!(Timestamp::decode(&t.encode()), t);
            assert_eq!(Timestamp::from_system(t.to_system()), t);
        }
    }

    #[test]
    fn a_file_record_without_a_block_count_reads_as_uncounted() {
        let mut attr = Attr::new(FileKind::File, 0o644, 0, 0, Timestamp::default());
        attr.stored_blocks = None;
        let bytes = attr.encode();
        assert_eq!(bytes.len(), FIXED_LEN);
        assert_eq!(Attr::decode(0, &bytes), Some(attr));
        assert_eq!(attr.to_fuser(65_472).blocks, 0);
        attr.size = 1000;
        assert_eq!(attr.to_fuser(65_472).blocks, 2);
        attr.stored_blocks = Some(3);
        assert_eq!(attr.to_fuser(65_472).blocks, 384);
    }

    #[test]
    fn directory_versions_order_records_across_the_wrap() {
        assert!(version_after(2, 1) && !version_after(1, 2) && !version_after(3, 3));
        assert!(version_after(1, 0) && !version_after(0, 1) && !version_after(0, 0));
        // The scripts count u32::MAX on to 1.
        assert!(version_after(1, u32::MAX) && !version_after(u32::MAX, 1));
        // A directory's record from before versions were counted reads as version 0.
        let mut dir = Attr::new(FileKind::Dir, 0o755, 0, 0, Timestamp::default());
        dir.parent = 9;
        dir.version = 7;
        let bytes = dir.encode();
        assert_eq!(bytes.len(), DIR_RECORD_LEN);
        let old = Attr::decode(3, &bytes[..FIXED_LEN + 8]).unwrap();
        assert_eq!((old.parent, old.version), (9, 0));
        assert_eq!(Attr::decode(3, &bytes).unwrap().version, 7);
    }

    /// The offsets the scripts patch records at are where `encode` puts each field.
    #[test]
    fn the_offsets_given_to_the_scripts_are_the_encoding() {
        let mut dir = Attr::new(
            FileKind::Dir,
            0o1755,
            0x0102_0304,
            0x0506_0708,
            Timestamp { sec: 11, nsec: 12 },
        );
        dir.nlink = 0x0a0b_0c0d;
        dir.size = 0x1122_3344_5566_7788;
        dir.atime.sec = 21;
        dir.mtime.sec = 31;
        dir.ctime.sec = 41;
        dir.parent = 0x99;
        dir.version = 0x7777;
        let b = dir.encode();
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        for (name, at) in FIELDS_AT {
            match name {
                "MODE" => assert_eq!(u16::from_le_bytes([b[at], b[at + 1]]), 0o41755),
                "NLINK" => assert_eq!(u32_at(at), dir.nlink),
                "UID" => assert_eq!(u32_at(at), dir.uid),
                "GID" => assert_eq!(u32_at(at), dir.gid),
                "SIZE" => assert_eq!(b[at..at + 8], dir.size.to_le_bytes()),
                "ATIME" => assert_eq!(b[at..at + 10], dir.atime.encode()),
                "MTIME" => assert_eq!(b[at..at + 10], dir.mtime.encode()),
                "CTIME" => assert_eq!(b[at..at + 10], dir.ctime.encode()),
                "TAIL" => assert_eq!(b[at..at + 8], dir.parent.to_le_bytes()),
                "VERSION" => assert_eq!(u32_at(at), dir.version),
                other => panic!("{other} is not tested"),
            }
        }
    }

    #[test]
    fn garbage_is_not_a_record() {
        assert_eq!(Attr::decode(1, b"short"), None);
        assert_eq!(Attr::decode(1, &[0u8; 52]), None);
    }
}
