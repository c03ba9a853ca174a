//! Typed metadata operations: each is one script call or one pipelined read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::{RedisError, Value};

use crate::attr::{Attr, FileKind, Timestamp};
use crate::codec::Encoded;
pub mod deferred;

use crate::error::FsError;
use crate::scripts::Scripts;
use crate::store::{Request, ScriptArgs, Store};
use deferred::{leased_dir, Delegation};

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name (any bytes but `/` and NUL).
    pub name: Vec<u8>,
    /// What kind of inode it names.
    pub kind: FileKind,
    /// The inode it names.
    pub ino: u64,
}

/// What reading one inode's record found.
#[derive(Clone, Copy, Debug)]
pub enum Stored {
    /// The record, decoded.
    Attr(Attr),
    /// No record: the inode is gone.
    Missing,
    /// A record (or the directory entry naming it) that does not decode.
    Corrupt,
}

/// Inode numbers from here up stand in for directory entries whose value does not decode
/// (their inode is unknown): a listing shows such an entry, and its look-up fails with EIO.
/// Real inode numbers come from a counter and never get this high.
pub const UNREADABLE_ENTRY: u64 = 1 << 62;

/// The stand-in inode number of the undecodable entry `name`.
fn unreadable_entry(name: &[u8]) -> u64 {
    let hash = name.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    UNREADABLE_ENTRY | (hash >> 2)
}

/// Attribute changes requested by setattr; `None` leaves a field alone.
#[derive(Clone, Debug, Default)]
pub struct AttrChange {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<Timestamp>,
    /// New modification time.
    pub mtime: Option<Timestamp>,
    /// New change time (otherwise: now).
    pub ctime: Option<Timestamp>,
    /// An access recorded, not a change: the change time stays.
    pub access_only: bool,
}

/// What a mount is done with, for [`Meta::reclaim`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// A file whose last handle here closed, its open registered in Redis.
    Open(u64),
    /// An unlinked inode this mount held until its last close.
    Held(u64),
}

/// Which locks a lock request is about: on Linux `fcntl` and `flock` locks are independent
/// of each other, each conflicting only with its own family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockFamily {
    /// `fcntl` byte-range locks, process-owned and OFD.
    Fcntl,
    /// `flock` whole-file locks.
    Flock,
    /// Both (only to release everything an owner holds).
    Both,
}

impl LockFamily {
    /// How `lock.lua` names it.
    fn code(self) -> &'static str {
        match self {
            LockFamily::Fcntl => "p",
            LockFamily::Flock => "f",
            LockFamily::Both => "pf",
        }
    }
}

/// Directory entries as Redis returns them: name, then kind letter and inode number.
type RawEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// A block that replaces the last one on a size cut: (index, expected old id, new id).
pub type TailSwap = (u64, u64, u64);

/// A lock reported by a test (F_GETLK).
#[derive(Clone, Copy, Debug, Default)]
pub struct LockState {
    /// 0 read, 1 write, 2 none.
    pub kind: i32,
    /// First byte.
    pub start: u64,
    /// Last byte; `None`: to the end of the file.
    pub end: Option<u64>,
    /// The holder's pid (on its own machine).
    pub pid: u32,
}

/// Filesystem-wide counters for statfs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// Inodes in use.
    pub inodes: u64,
    /// Blocks stored.
    pub blocks: u64,
    /// Bytes Redis may still use.
    pub available: u64,
}

/// Metadata operations on one filesystem.
#[derive(Clone)]
pub struct Meta {
    /// The connection and key names.
    pub store: Store,
    pub(crate) scripts: Arc<Scripts>,
    /// This mount's session id (owner of the inodes it orphans).
    pub session: u64,
    /// Directories leased to this mount and the changes deferred in them.
    pub delegation: Arc<Delegation>,
}

/// Logs a Redis failure with its context and maps it to an errno.
pub fn redis_failure(what: &str, err: &RedisError) -> FsError {
    let text = err.to_string();
    if text.contains("READONLY") {
        return FsError::ReadOnly;
    }
    if text.contains("OOM") {
        tracing::error!("{what}: Redis is out of memory: {text}");
        return FsError::NoSpace;
    }
    tracing::error!("{what}: {text}");
    FsError::Io
}

fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn bytes(v: Option<&Value>) -> Option<&[u8]> {
    match v? {
        Value::BulkString(b) => Some(b),
        _ => None,
    }
}

/// Entries of a directory one reply carries at most: a bigger directory is read in pieces.
const ENTRIES_PER_REPLY: usize = 10_000;

/// The error for a listing Redis answered in a shape no script gives.
fn unexpected_listing(ino: u64, what: &dyn std::fmt::Display) -> FsError {
    tracing::error!("readdir of {ino}: unexpected reply: {what}");
    FsError::Io
}

/// Records of `inos` as a script read them (`raw`, in the same order), with the marks of
/// which have extended attributes (`xattrs`; unknown, a reply without them: as if all had).
fn stored_records(inos: &[u64], raw: &[Value], xattrs: Option<&[u8]>) -> (Vec<Stored>, Vec<bool>) {
    let marks = xattrs.unwrap_or(&[]);
    let has_xattrs = (0..inos.len())
        .map(|i| marks.get(i) != Some(&b'0'))
        .collect();
    let records = inos
        .iter()
        .enumerate()
        .map(|(i, &ino)| match bytes(raw.get(i)) {
            None => Stored::Missing,
            Some(raw) => match Attr::decode(ino, raw) {
                Some(attr) => Stored::Attr(attr),
                None => {
                    tracing::error!("inode {ino}: record of {} bytes does not decode", raw.len());
                    Stored::Corrupt
                }
            },
        })
        .collect();
    (records, has_xattrs)
}

/// A directory's listing (see [`Meta::read_dir`]).
pub struct Listing {
    /// The directory's own record.
    pub attr: Attr,
    /// Its entries.
    pub entries: Vec<DirEntry>,
    /// For a small directory, its entries' records and which have extended attributes.
    pub records: Option<(Vec<Stored>, Vec<bool>)>,
}

/// Checks a script reply's leading errno.
pub(crate) fn checked(reply: Vec<Value>) -> Result<Vec<Value>, FsError> {
    match int(reply.first()) {
        Some(0) => Ok(reply),
        Some(errno) => Err(FsError::from_errno(errno)),
        None => {
            tracing::error!("script reply without a status: {reply:?}");
            Err(FsError::Io)
        }
    }
}

fn record(ino: u64, v: Option<&Value>) -> Result<Attr, FsError> {
    let raw = bytes(v).ok_or(FsError::Io)?;
    Attr::decode(ino, raw).ok_or_else(|| {
        tracing::error!("inode {ino}: record of {} bytes does not decode", raw.len());
        FsError::Io
    })
}

/// Parses a directory entry value: a kind letter followed by the inode number.
pub fn parse_entry(value: &[u8]) -> Option<(FileKind, u64)> {
    let (&letter, digits) = value.split_first()?;
    let ino = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((FileKind::from_letter(letter)?, ino))
}

impl Meta {
    /// Metadata operations for `store`, orphaning inodes into `session`.
    pub fn new(store: Store, scripts: Arc<Scripts>, session: u64) -> Meta {
        Meta {
            store,
            scripts,
            session,
            delegation: Arc::new(Delegation::new(false, Duration::ZERO)),
        }
    }

    /// The same, leasing the directories this mount creates to its session, which expires
    /// after `session_timeout` (see [`crate::meta::deferred`]).
    pub fn delegating(self, session_timeout: Duration) -> Meta {
        Meta {
            delegation: Arc::new(Delegation::new(self.session != 0, session_timeout)),
            ..self
        }
    }

    async fn run(
        &self,
        what: &str,
        script: &redis::Script,
        args: ScriptArgs,
    ) -> Result<Vec<Value>, FsError> {
        self.send_deferred().await?;
        self.run_unsent(what, script, args).await
    }

    /// Runs a script without sending this mount's deferred changes first: for reads of
    /// inodes the changes do not touch.
    async fn run_unsent(
        &self,
        what: &str,
        script: &redis::Script,
        args: ScriptArgs,
    ) -> Result<Vec<Value>, FsError> {
        self.run_as(
            what,
            script,
            &self.store.request(self.session).bounded(),
            &args,
        )
        .await
    }

    /// Runs a script as `request` (see [`Store::script_as`]); while a directory it needs is
    /// leased to another mount, recalls it and runs again.
    async fn run_as(
        &self,
        what: &str,
        script: &redis::Script,
        request: &Request,
        args: &ScriptArgs,
    ) -> Result<Vec<Value>, FsError> {
        let started = std::time::Instant::now();
        let mut delay = std::time::Duration::from_millis(1);
        loop {
            match self.store.script_as(script, request, args).await {
                Ok(reply) => return checked(reply),
                Err(e) => match leased_dir(&e) {
                    Some(dir) => self.recall(dir, started, &mut delay).await?,
                    None => return Err(redis_failure(what, &e)),
                },
            }
        }
    }

    /// Runs a pipeline of reads of inode `dir` and a last command that reads its lease,
    /// after sending this mount's deferred changes that touch it; while another mount holds
    /// `dir`, recalls it and runs again. Returns the replies before the lease.
    async fn read_unleased(
        &self,
        what: &str,
        dir: u64,
        pipe: &mut redis::Pipeline,
    ) -> Result<Vec<Value>, FsError> {
        if self.delegation.touches(dir) {
            self.send_deferred().await?;
        }
        pipe.cmd("HGET").arg(self.store.keys.lease()).arg(dir);
        let started = std::time::Instant::now();
        let mut delay = std::time::Duration::from_millis(1);
        loop {
            let mut reply: Vec<Value> = self
                .store
                .pipe(pipe)
                .await
                .map_err(|e| redis_failure(what, &e))?;
            let holder = int(reply.last()).map_or(self.session, |h| h as u64);
            if holder == self.session || self.session == 0 {
                reply.pop();
                return Ok(reply);
            }
            self.recall(dir, started, &mut delay).await?;
        }
    }

    /// Resolves `name` in directory `parent`.
    pub async fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr, FsError> {
        let reply = self
            .run(
                "lookup",
                &self.scripts.lookup,
                ScriptArgs::default().num(parent).bytes(name),
            )
            .await?;
        let ino = int(reply.get(1)).ok_or(FsError::Io)? as u64;
        record(ino, reply.get(2))
    }

    /// Reads one inode's record.
    pub async fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let (key, field) = self.store.keys.inode(ino);
        let mut pipe = redis::pipe();
        pipe.cmd("HGET").arg(key).arg(field);
        let reply = self.read_unleased("getattr", ino, &mut pipe).await?;
        match reply.first() {
            Some(Value::Nil) | None => Err(FsError::NotFound),
            raw => record(ino, raw),
        }
    }

    /// Reads many records in one round trip. Deferred changes are sent first only if they
    /// touch one of them (`rm -rf` reads each directory's records while its log of unlinks
    /// grows).
    pub async fn records(&self, inos: &[u64]) -> Result<Vec<Stored>, FsError> {
        Ok(self.listed(inos, false).await?.0)
    }

    /// Like [`Meta::records`], with (if `with_xattrs`; otherwise all true) which of the inodes
    /// may have extended attributes.
    pub async fn listed(
        &self,
        inos: &[u64],
        with_xattrs: bool,
    ) -> Result<(Vec<Stored>, Vec<bool>), FsError> {
        if inos.iter().any(|&ino| self.delegation.touches(ino)) {
            self.send_deferred().await?;
        }
        let args = ScriptArgs::default().num(u8::from(with_xattrs));
        let args = inos.iter().fold(args, |a, i| a.num(i));
        let reply = self
            .run_unsent("records", &self.scripts.records, args)
            .await?;
        Ok(stored_records(
            inos,
            &reply[1..],
            bytes(reply.get(inos.len() + 1)),
        ))
    }

    /// Creates an inode described by `attr` under `parent` as `name` (a file this mount
    /// `opened`, its open registered); returns it and the parent's attributes after.
    pub async fn create(
        &self,
        parent: u64,
        name: &[u8],
        attr: &Attr,
        target: &[u8],
        opened: bool,
    ) -> Result<(Attr, Attr), FsError> {
        self.delegation.changed_directly(parent);
        let leased = attr.kind() == FileKind::Dir && self.delegation.enabled();
        let args = ScriptArgs::default()
            .num(parent)
            .bytes(name)
            .bytes(attr.encode())
            .bytes(attr.kind().letter().to_string())
            .bytes(attr.ctime.encode())
            .bytes(target)
            .num(u8::from(leased))
            .num(u8::from(opened));
        let reply = self.run("create", &self.scripts.create, args).await?;
        self.delegation.room_again();
        let mut created = *attr;
        created.ino = int(reply.get(1)).ok_or(FsError::Io)? as u64;
        if leased {
            self.delegation.leased(created.ino);
        }
        Ok((created, record(parent, reply.get(2))?))
    }

    /// Adds the hard link `parent/name` to `ino` (`unnamed`: an `O_TMPFILE` file held here,
    /// whose first link this is).
    pub async fn link(
        &self,
        ino: u64,
        parent: u64,
        name: &[u8],
        unnamed: bool,
    ) -> Result<Attr, FsError> {
        self.delegation.changed_directly(parent);
        let args = ScriptArgs::default()
            .num(ino)
            .num(parent)
            .bytes(name)
            .bytes(Timestamp::now().encode())
            .num(u8::from(unnamed));
        let reply = self.run("link", &self.scripts.link, args).await?;
        record(ino, reply.get(1))
    }

    /// Creates an unnamed file (`O_TMPFILE`) in `parent`, held by this session: no link.
    pub async fn tmpfile(&self, parent: u64, attr: &Attr) -> Result<Attr, FsError> {
        let args = ScriptArgs::default().num(parent).bytes(attr.encode());
        let reply = self.run("tmpfile", &self.scripts.tmpfile, args).await?;
        let ino = int(reply.get(1)).ok_or(FsError::Io)? as u64;
        Ok(Attr {
            ino,
            nlink: 0,
            ..*attr
        })
    }

    /// Unlinks (or, with `dir`, removes an empty directory); returns the inode and whether its
    /// last link went (it is then held by this session until reclaimed).
    pub async fn remove(
        &self,
        parent: u64,
        name: &[u8],
        dir: bool,
        closed: u64,
        now: Timestamp,
    ) -> Result<(u64, bool), FsError> {
        self.delegation.changed_directly(parent);
        let args = ScriptArgs::default()
            .num(parent)
            .bytes(name)
            .num(u8::from(dir))
            .bytes(now.encode())
            .num(closed);
        let reply = self.run("remove", &self.scripts.remove, args).await?;
        let ino = int(reply.get(1)).ok_or(FsError::Io)? as u64;
        Ok((ino, int(reply.get(2)) == Some(1)))
    }

    /// Renames; `flags` are the kernel's RENAME_* bits. Returns an inode whose last link the
    /// rename removed, if any, and the inodes it changed (the moved one, a replaced one).
    pub async fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        flags: u32,
    ) -> Result<(Option<u64>, [u64; 2]), FsError> {
        self.delegation.changed_directly(parent);
        self.delegation.changed_directly(new_parent);
        let mode = if flags & libc::RENAME_EXCHANGE != 0 {
            2
        } else if flags & libc::RENAME_NOREPLACE != 0 {
            1
        } else {
            0
        };
        let args = ScriptArgs::default()
            .num(parent)
            .bytes(name)
            .num(new_parent)
            .bytes(new_name)
            .num(mode)
            .bytes(Timestamp::now().encode());
        let reply = self.run("rename", &self.scripts.rename, args).await?;
        let ino = |i: usize| int(reply.get(i)).unwrap_or(0).max(0) as u64;
        Ok(((ino(1) > 0).then(|| ino(1)), [ino(2), ino(3)]))
    }

    /// Applies attribute changes; a size cut may carry a re-written last block.
    pub async fn setattr(
        &self,
        ino: u64,
        change: &AttrChange,
        block_size: u32,
        tail: Option<TailSwap>,
    ) -> Result<Attr, FsError> {
        let mut mask = 0u32;
        let mut bit = |present: bool, b: u32| {
            if present {
                mask |= b
            }
        };
        bit(change.mode.is_some(), 1);
        bit(change.uid.is_some(), 2);
        bit(change.gid.is_some(), 4);
        bit(change.size.is_some(), 8);
        bit(change.atime.is_some(), 16);
        bit(change.mtime.is_some(), 32);
        bit(change.ctime.is_some(), 64);
        bit(change.access_only, 128);
        let time = |t: Option<Timestamp>| t.unwrap_or_default().encode();
        let (tail_idx, tail_old, tail_new) = match tail {
            Some((i, o, n)) => (i.to_string(), o, n),
            None => (String::new(), 0, 0),
        };
        let args = ScriptArgs::default()
            .num(ino)
            .bytes(Timestamp::now().encode())
            .num(mask)
            .num(change.mode.unwrap_or(0))
            .num(change.uid.unwrap_or(0))
            .num(change.gid.unwrap_or(0))
            .bytes(time(change.atime))
            .bytes(time(change.mtime))
            .bytes(time(change.ctime))
            .num(change.size.unwrap_or(0))
            .num(block_size)
            .bytes(tail_idx)
            .num(tail_old)
            .num(tail_new);
        let reply = self.run("setattr", &self.scripts.setattr, args).await?;
        record(ino, reply.get(1))
    }

    /// Swaps block-map entries `(index, expected old id, new id)`; id 0 is a hole. New blocks
    /// are stored already (`stored`), or travel as `inline` (id, stored bytes) and are stored
    /// first. Returns the new record and the indexes whose expected id no longer held (their
    /// new blocks are gone).
    ///
    /// Nothing stays behind when it fails: the `stored` blocks are deleted when the commit was
    /// refused or never sent, and when its outcome is unknown (it may be queued in a stalled
    /// Redis), once its deadline has passed and its slot of the reply ring says it never ran.
    pub async fn commit(
        &self,
        ino: u64,
        mtime: Option<Timestamp>,
        end: u64,
        swaps: &[(u64, u64, u64)],
        inline: &[(u64, Encoded)],
        stored: &[u64],
    ) -> Result<(Attr, Vec<u64>), FsError> {
        let mut args = ScriptArgs::default()
            .num(ino)
            .bytes(mtime.map(|t| t.encode().to_vec()).unwrap_or_default())
            .num(end)
            .num(inline.len());
        for (idx, old, new) in swaps {
            args = args.num(idx).num(old).num(new);
        }
        for (id, bytes) in inline {
            args = args.num(id).owned(bytes.to_vec());
        }
        if let Err(e) = self.send_deferred().await {
            crate::blocks::discard(&self.store, stored.to_vec());
            return Err(e);
        }
        let request = self.store.request(self.session).bounded();
        let reply = match self
            .run_as("commit", &self.scripts.commit, &request, &args)
            .await
        {
            Ok(reply) => reply,
            Err(FsError::Io) => {
                self.settle_later(request, stored.to_vec());
                return Err(FsError::Io);
            }
            Err(e) => {
                crate::blocks::discard(&self.store, stored.to_vec());
                return Err(e);
            }
        };
        let attr = record(ino, reply.get(1))?;
        let lost = reply[2..]
            .iter()
            .filter_map(|v| int(Some(v)))
            .map(|i| i as u64)
            .collect();
        Ok((attr, lost))
    }

    /// Learns what became of a commit whose reply never came, once no attempt of it can run
    /// any more (its deadline passed), and deletes the blocks stored for it if it never ran.
    /// (If it ran, its blocks are in the map, or deleted by its lost compare-and-swap.)
    fn settle_later(&self, request: Request, stored: Vec<u64>) {
        if stored.is_empty() {
            return;
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(store.io_timeout() + Duration::from_secs(1)).await;
            let mut wait = Duration::from_millis(100);
            loop {
                match store.ran(&request).await {
                    Ok(true) => return,
                    Ok(false) => return crate::blocks::discard(&store, stored),
                    Err(e) => {
                        tracing::warn!("asking Redis what became of a commit: {e}; trying again");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
    }

    /// A directory's record and entries, in one round trip (a big directory's entries in
    /// pieces after it); for a directory of at most `records_up_to` entries, also their
    /// records (and, `with_xattrs`, which of them have extended attributes), the entries then
    /// in inode order.
    pub async fn read_dir(
        &self,
        ino: u64,
        records_up_to: usize,
        with_xattrs: bool,
    ) -> Result<Listing, FsError> {
        if self.delegation.touches(ino) {
            self.send_deferred().await?;
        }
        let args = ScriptArgs::default()
            .num(ino)
            .num(ENTRIES_PER_REPLY)
            .num(records_up_to)
            .num(u8::from(with_xattrs));
        let mut reply = self
            .run_unsent("readdir", &self.scripts.listing, args)
            .await?;
        let attr = Attr::decode(ino, bytes(reply.get(1)).ok_or(FsError::Io)?).ok_or(FsError::Io)?;
        let entries = match reply.get_mut(2).map(std::mem::take) {
            Some(Value::Int(count)) => self.scan_entries(ino, count).await?,
            Some(flat) => {
                let entries: RawEntries =
                    redis::from_redis_value(flat).map_err(|e| unexpected_listing(ino, &e))?;
                self.parse_entries(ino, entries)
            }
            None => return Err(unexpected_listing(ino, &"no entries")),
        };
        let records = match reply.get_mut(3).map(std::mem::take) {
            Some(Value::Array(records)) => {
                let inos: Vec<u64> = entries.iter().map(|e| e.ino).collect();
                Some(stored_records(&inos, &records, bytes(reply.get(4))))
            }
            _ => None,
        };
        Ok(Listing {
            attr,
            entries,
            records,
        })
    }

    /// The entries of a big directory (about `count` of them), read in pieces: memory holds
    /// the listing, not a reply as big. HSCAN returns every entry present throughout at least
    /// once, and one changed meanwhile possibly twice: the listing keeps each name once.
    async fn scan_entries(&self, ino: u64, count: i64) -> Result<Vec<DirEntry>, FsError> {
        let key = self.store.keys.dir(ino);
        let mut list = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        let mut cursor = 0u64;
        loop {
            let mut scan = redis::cmd("HSCAN");
            scan.arg(&key)
                .arg(cursor)
                .arg("COUNT")
                .arg(ENTRIES_PER_REPLY);
            let (next, piece): (u64, RawEntries) = self
                .store
                .cmd(&scan)
                .await
                .map_err(|e| redis_failure("readdir", &e))?;
            list.extend(self.parse_entries(ino, piece));
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        list.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        list.dedup_by(|a, b| a.name == b.name);
        Ok(list)
    }

    /// Entries as HGETALL gives them, decoded; one that does not decode is named as such.
    fn parse_entries(&self, ino: u64, entries: RawEntries) -> Vec<DirEntry> {
        let mut list = Vec::with_capacity(entries.len());
        for (name, value) in entries {
            let entry = match parse_entry(&value) {
                Some((kind, child)) => DirEntry {
                    name,
                    kind,
                    ino: child,
                },
                None => {
                    tracing::error!(
                        "directory {ino}: entry {:?} has a corrupt value (run redisfs-fsck)",
                        String::from_utf8_lossy(&name)
                    );
                    DirEntry {
                        ino: unreadable_entry(&name),
                        name,
                        kind: FileKind::File,
                    }
                }
            };
            list.push(entry);
        }
        list
    }

    /// A symlink's target.
    pub async fn readlink(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        let target: Option<Vec<u8>> = self
            .store
            .cmd(redis::cmd("GET").arg(self.store.keys.symlink(ino)))
            .await
            .map_err(|e| redis_failure("readlink", &e))?;
        target.ok_or(FsError::Invalid)
    }

    /// One extended attribute's value.
    pub async fn xattr_get(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>, FsError> {
        let value: Option<Vec<u8>> = self
            .store
            .cmd(
                redis::cmd("HGET")
                    .arg(self.store.keys.xattrs(ino))
                    .arg(name),
            )
            .await
            .map_err(|e| redis_failure("getxattr", &e))?;
        value.ok_or(FsError::NoData)
    }

    /// The names of all extended attributes.
    pub async fn xattr_list(&self, ino: u64) -> Result<Vec<Vec<u8>>, FsError> {
        self.store
            .cmd(redis::cmd("HKEYS").arg(self.store.keys.xattrs(ino)))
            .await
            .map_err(|e| redis_failure("listxattr", &e))
    }

    /// Sets an extended attribute; `flags` 1 = create only, 2 = replace only.
    pub async fn xattr_set(
        &self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: u8,
    ) -> Result<(), FsError> {
        let args = ScriptArgs::default()
            .num(ino)
            .bytes(name)
            .bytes(value)
            .num(flags)
            .bytes(Timestamp::now().encode());
        self.run("setxattr", &self.scripts.xattr_set, args)
            .await
            .map(drop)
    }

    /// Removes an extended attribute.
    pub async fn xattr_remove(&self, ino: u64, name: &[u8]) -> Result<(), FsError> {
        let args = ScriptArgs::default()
            .num(ino)
            .bytes(name)
            .bytes(Timestamp::now().encode());
        self.run("removexattr", &self.scripts.xattr_remove, args)
            .await
            .map(drop)
    }

    /// Ends this mount's registered opens and holds of `closed`, deleting the inodes no longer
    /// linked nor open anywhere; returns how many were deleted.
    pub async fn reclaim(&self, closed: &[Closed]) -> Result<u64, FsError> {
        let args = closed
            .iter()
            .fold(ScriptArgs::default().num(self.session), |a, c| match c {
                Closed::Open(ino) => a.bytes(format!("r{ino}")),
                Closed::Held(ino) => a.num(ino),
            });
        self.run_reclaim(args).await
    }

    /// Deletes orphaned inodes recorded by session `holder` (this one, or a dead one).
    pub async fn reclaim_for(&self, holder: u64, inos: &[u64]) -> Result<u64, FsError> {
        let args = inos
            .iter()
            .fold(ScriptArgs::default().num(holder), |a, i| a.num(i));
        self.run_reclaim(args).await
    }

    async fn run_reclaim(&self, args: ScriptArgs) -> Result<u64, FsError> {
        let reply = self.run("reclaim", &self.scripts.reclaim, args).await?;
        Ok(int(reply.get(1)).unwrap_or(0) as u64)
    }

    /// Reads the record of a file this mount opens and did not have open, registering the
    /// open (see `src/lua/prelude.lua`): while it stays open here, a removal elsewhere keeps
    /// its data. Without `register`, registers an open of a file open here already.
    pub async fn open(&self, ino: u64, register: bool) -> Result<Attr, FsError> {
        if !register {
            return self.getattr(ino).await;
        }
        let args = ScriptArgs::default().num(ino).num(1);
        let reply = self.run("open", &self.scripts.open, args).await?;
        record(ino, reply.get(1))
    }

    /// Expires session `dead` if it has not heartbeaten since `cutoff_ms`, keeping its ring of
    /// replies for `keep_replies` (see `src/lua/expire_session.lua`); returns how many inodes it
    /// held were deleted, or `None` if it turned out to be alive.
    pub async fn expire_session(
        &self,
        dead: u64,
        cutoff_ms: u64,
        keep_replies: Duration,
    ) -> Result<Option<u64>, FsError> {
        let args = ScriptArgs::default()
            .num(dead)
            .num(cutoff_ms)
            .num(keep_replies.as_millis());
        let reply = self
            .run("expire session", &self.scripts.expire_session, args)
            .await?;
        Ok(int(reply.get(1)).filter(|&n| n >= 0).map(|n| n as u64))
    }

    /// Takes (`kind` 0 read, 1 write) or releases (2) the lock of `owner` on `range` (end
    /// `None`: to the end of the file); with `test`, only reports a conflicting lock as
    /// (kind, start, end, pid), kind 2 meaning none.
    #[allow(clippy::too_many_arguments)]
    pub async fn lock(
        &self,
        ino: u64,
        (owner, family): (u64, LockFamily),
        kind: i32,
        start: u64,
        end: Option<u64>,
        pid: u32,
        test: bool,
    ) -> Result<LockState, FsError> {
        let args = ScriptArgs::default()
            .num(ino)
            .num(owner)
            .num(kind)
            .num(start)
            .num(end.map_or(-1, |e| e as i64))
            .num(pid)
            .num(u8::from(test))
            .bytes(family.code());
        let reply = self.run("lock", &self.scripts.lock, args).await?;
        let field = |i: usize| int(reply.get(i)).unwrap_or(0);
        Ok(LockState {
            kind: field(1) as i32,
            start: field(2).max(0) as u64,
            end: u64::try_from(field(3)).ok(),
            pid: field(4) as u32,
        })
    }

    /// Frees up to `count` blocks of a large deleted file; returns how many were freed.
    pub async fn free_batch(&self, count: u32) -> Result<u64, FsError> {
        let reply = self
            .run(
                "free blocks",
                &self.scripts.free_batch,
                ScriptArgs::default().num(count),
            )
            .await?;
        Ok(int(reply.get(1)).unwrap_or(0) as u64)
    }

    /// Frees the queued blocks of large deleted files, a batch at a time, until none are left
    /// (or Redis fails: the queue stays for the next try).
    pub async fn free_queued(&self) {
        while let Ok(n) = self.free_batch(2048).await {
            if n == 0 {
                break;
            }
        }
    }

    /// Block ids for `count` indexes from `first` (0 for holes), in one round trip.
    pub async fn map_range(&self, ino: u64, first: u64, count: u64) -> Result<Vec<u64>, FsError> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.store.keys.map(ino));
        for idx in first..first + count {
            cmd.arg(idx);
        }
        let ids: Vec<Option<u64>> = self
            .store
            .cmd(&cmd)
            .await
            .map_err(|e| redis_failure("read block map", &e))?;
        Ok(ids.into_iter().map(|i| i.unwrap_or(0)).collect())
    }

    /// The whole block map of a file.
    pub async fn map_all(&self, ino: u64) -> Result<HashMap<u64, u64>, FsError> {
        self.store
            .cmd(redis::cmd("HGETALL").arg(self.store.keys.map(ino)))
            .await
            .map_err(|e| redis_failure("read block map", &e))
    }

    /// Inode and block counters, and how much memory Redis has left.
    pub async fn usage(&self) -> Result<Usage, FsError> {
        self.send_deferred().await?;
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(self.store.keys.stat())
            .arg("inodes")
            .arg("blocks");
        pipe.cmd("INFO").arg("memory");
        let ((inodes, blocks), info): ((Option<u64>, Option<u64>), String) = self
            .store
            .pipe(&pipe)
            .await
            .map_err(|e| redis_failure("statfs", &e))?;
        let server = crate::server::ServerInfo::parse(&info);
        Ok(Usage {
            inodes: inodes.unwrap_or(0),
            blocks: blocks.unwrap_or(0),
            available: server.capacity().saturating_sub(server.used_memory),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse() {
        assert_eq!(parse_entry(b"f12"), Some((FileKind::File, 12)));
        assert_eq!(parse_entry(b"d1"), Some((FileKind::Dir, 1)));
        assert_eq!(parse_entry(b"x1"), None);
        assert_eq!(parse_entry(b"f"), None);
        assert_eq!(parse_entry(b""), None);
    }
}
