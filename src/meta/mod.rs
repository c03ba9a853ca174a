//! Typed metadata operations: each is one script call or one pipelined read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::{RedisError, Value};

pub mod calls;
pub mod counters;
pub mod deferred;

use crate::attr::{Attr, FileKind, Timestamp};
use crate::codec::Encoded;
use crate::error::FsError;
use crate::scripts::Scripts;
use crate::store::{BlocksFirst, Request, ScriptArgs, Store};
use calls::{Call, ListedEntries, Places};
use counters::Counters;
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
    /// An access recorded, not a change (`atime` is when): the access time the access saw,
    /// which the change replaces only if it is still there (an explicit change made since
    /// wins, whichever reaches Redis first); the change time stays.
    pub accessed: Option<Timestamp>,
}

impl AttrChange {
    /// Which fields change, as `setattr.lua` takes it.
    fn mask(&self) -> u32 {
        [
            self.mode.is_some(),
            self.uid.is_some(),
            self.gid.is_some(),
            self.size.is_some(),
            self.atime.is_some(),
            self.mtime.is_some(),
            self.ctime.is_some(),
            self.accessed.is_some(),
        ]
        .iter()
        .enumerate()
        .filter(|(_, &set)| set)
        .map(|(bit, _)| 1 << bit)
        .sum()
    }

    /// Every change but a size, packed as `deferred.lua`'s `attr_change` reads it.
    fn packed(&self) -> Vec<u8> {
        debug_assert!(self.size.is_none(), "a size change goes through Redis");
        let numbers = [
            self.mask(),
            self.mode.unwrap_or(0),
            self.uid.unwrap_or(0),
            self.gid.unwrap_or(0),
        ];
        let times = [self.atime, self.mtime, self.ctime, self.accessed]
            .map(|t| t.unwrap_or_default().encode());
        (numbers.iter().flat_map(|n| n.to_le_bytes()))
            .chain(times.into_iter().flatten())
            .collect()
    }

    /// Applies every change but a size to `attr` as `setattr.lua` does to a record (`now`:
    /// the change time unless given), for a creation not yet sent to carry it (see
    /// [`Delegation::amend_creation`]), or to this mount's copy of a directory whose change
    /// waits in the deferred log.
    fn apply_to(&self, attr: &mut Attr, now: Timestamp) {
        debug_assert!(self.size.is_none(), "a size change goes through Redis");
        if let Some(mode) = self.mode {
            attr.mode = attr.mode & libc::S_IFMT | mode & 0o7777;
        }
        attr.uid = self.uid.unwrap_or(attr.uid);
        attr.gid = self.gid.unwrap_or(attr.gid);
        if self.accessed.is_none_or(|seen| seen == attr.atime) {
            attr.atime = self.atime.unwrap_or(attr.atime);
        }
        attr.mtime = self.mtime.unwrap_or(attr.mtime);
        attr.ctime = match self.ctime {
            Some(ctime) => ctime,
            None if self.accessed.is_some() => attr.ctime,
            None => now,
        };
    }
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
pub type RawEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// One block-map entry swapped by a commit: at index `idx`, the block `old` (as expected; 0: a
/// hole) becomes `new` (0: a hole).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSwap {
    /// The block's index in the file.
    pub idx: u64,
    /// The block id the entry is expected to hold.
    pub old: u64,
    /// The block id it is to hold.
    pub new: u64,
    /// What the new block takes in Redis (its stored bytes; 0 for a hole), counted in
    /// `stored_bytes` when the swap succeeds: scripts never read a block (see `src/keys.rs`).
    pub new_len: u64,
}

/// The new blocks a call swaps into maps, which it does not store itself (scripts never touch
/// a block, see `src/keys.rs`): `stored` before it on the node of generation `stored_on`, or
/// `inline`, set with it in one transaction (a small batch: one round trip).
#[derive(Clone, Copy, Default)]
pub struct NewBlocks<'a> {
    pub inline: &'a [(u64, Encoded)],
    pub stored: &'a [(u64, Encoded)],
    pub stored_on: Option<u64>,
}

impl NewBlocks<'_> {
    fn ids(&self) -> Vec<u64> {
        (self.inline.iter().chain(self.stored))
            .map(|(id, _)| *id)
            .collect()
    }
}

/// Of the blocks `stored` for inode `ino` (index, id), those no map names now: neither the
/// inode's map at their index nor the queue of blocks to delete, and the inode has no map
/// waiting to be freed (which may name them). The blocks of a commit that never ran are such,
/// and deleting them leaks nothing; a block a commit that ran named, and that a later change
/// has taken out since, is in the queue (the change queued it).
async fn unnamed_blocks(
    store: &Store,
    ino: u64,
    stored: &[(u64, u64)],
) -> redis::RedisResult<Vec<u64>> {
    if stored.is_empty() {
        return Ok(Vec::new());
    }
    let keys = &store.keys;
    let (idxs, ids): (Vec<u64>, Vec<u64>) = stored.iter().copied().unzip();
    let mut pipe = redis::pipe();
    pipe.cmd("HMGET").arg(keys.map(ino)).arg(&idxs);
    pipe.cmd("HMGET").arg(keys.garbage()).arg(&ids);
    pipe.cmd("EXISTS").arg(keys.freed_map(ino));
    type Named = (Vec<Option<u64>>, Vec<Option<Vec<u8>>>, bool);
    let (in_map, queued, freeing): Named = store.pipe(&pipe).await?;
    if freeing {
        return Ok(Vec::new());
    }
    Ok((ids.iter().zip(in_map).zip(queued))
        .filter(|((&id, named), queued)| named != &Some(id) && queued.is_none())
        .map(|((&id, _), _)| id)
        .collect())
}

/// A size cut's re-written last block (see [`Meta::setattr`]): its swap, and, unless it
/// became a hole, the block as stored on the node of `stored_on`.
pub struct Tail {
    pub swap: BlockSwap,
    pub stored: Vec<(u64, Encoded)>,
    pub stored_on: Option<u64>,
}

/// Times a call whose blocks were stored on a primary that was then replaced stores them again
/// and is sent again, before its writer is told to start over.
const MOVES: u32 = 4;

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
    pub counters: Counters,
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
    /// Wakes [`Meta::delete_garbage_in_background`]: a script may have queued blocks.
    garbage_queued: Arc<tokio::sync::Notify>,
}

/// Why a script call failed. Whoever stored blocks for a call must know whether it may have
/// run: the blocks of a call that did not run are named by nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// It did not run (Redis refused it: out of memory, a replica), or it ran and refused
    /// with this errno: nothing changed.
    NotRun(FsError),
    /// The primary changed after the blocks it names were stored: it was not sent to the new
    /// one, which may lack them (it may have run on the one before). Store them again.
    Moved,
    /// No answer came (Redis away past the I/O timeout, the connection lost while the call
    /// was on it): it may have run.
    Unknown,
}

impl From<SendError> for FsError {
    fn from(e: SendError) -> FsError {
        match e {
            SendError::NotRun(errno) => errno,
            SendError::Moved => FsError::Again,
            SendError::Unknown => FsError::Io,
        }
    }
}

/// What a Redis error that ended a call says of it (logged with `what`): an error Redis
/// answered with before running anything means it did not run; any other may have come after
/// it ran.
fn send_failure(what: &str, err: &RedisError) -> SendError {
    if crate::store::is_moved_since_stored(err) {
        tracing::info!("{what}: {err}; storing them again");
        return SendError::Moved;
    }
    // (The script checks before it reads or writes anything; blocks stored with it in one
    // transaction stay, as the store sends nothing more, not even their deletion.)
    if crate::store::is_filesystem_gone(err) {
        return SendError::NotRun(redis_failure(what, err));
    }
    match redis_failure(what, err) {
        FsError::Io => SendError::Unknown,
        refused => SendError::NotRun(refused),
    }
}

/// Logs a Redis failure with its context and maps it to an errno.
pub fn redis_failure(what: &str, err: &RedisError) -> FsError {
    // (Said once, by the store: see `Store::lost_filesystem`.)
    if crate::store::is_filesystem_gone(err) {
        tracing::debug!("{what}: the filesystem is gone from Redis");
        return FsError::Io;
    }
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
/// Queued blocks deleted per round (see [`Meta::delete_garbage`]).
const GARBAGE_BATCH: u64 = 512;
/// How long the background deletion of queued blocks waits for more after it is woken.
const GARBAGE_DELAY: Duration = Duration::from_millis(20);

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
    /// Its entries, if they were few enough for one reply; a bigger directory's are read in
    /// pieces with [`Meta::scan_dir`].
    pub entries: Option<Vec<DirEntry>>,
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
            garbage_queued: Arc::new(tokio::sync::Notify::new()),
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

    /// Sends this mount's deferred changes, then `call`.
    async fn call<C: Call>(&self, call: &C) -> Result<C::Reply, FsError> {
        self.send_deferred().await?;
        self.call_unsent(call).await
    }

    /// Sends `call` without sending this mount's deferred changes first: for reads of inodes
    /// the changes do not touch.
    async fn call_unsent<C: Call>(&self, call: &C) -> Result<C::Reply, FsError> {
        let request = self.store.request(self.session).bounded();
        let reply = self.send(call, &request).await?;
        call.parse(reply)
    }

    /// Sends `call` as `request`, returning its reply unparsed (see [`Meta::run_as`]).
    async fn send<C: Call>(&self, call: &C, request: &Request) -> Result<Vec<Value>, SendError> {
        self.send_after(call, request, BlocksFirst::default()).await
    }

    /// [`Meta::send`] for a call whose new blocks are stored first (see [`BlocksFirst`]).
    async fn send_after<C: Call>(
        &self,
        call: &C,
        request: &Request,
        blocks: BlocksFirst<'_>,
    ) -> Result<Vec<Value>, SendError> {
        let script = C::script(&self.scripts);
        self.run_as(C::NAME, script, request, &call.args(), blocks)
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
        blocks: BlocksFirst<'_>,
    ) -> Result<Vec<Value>, SendError> {
        let started = std::time::Instant::now();
        let mut delay = std::time::Duration::from_millis(1);
        loop {
            match (self
                .store
                .script_after_blocks(script, request, args, blocks))
            .await
            {
                // A script's answer: it ran and refused (an errno), or it is of a shape no
                // script gives, and may have run.
                Ok((reply, _)) if int(reply.first()).is_none() => {
                    tracing::error!("{what}: script reply without a status: {reply:?}");
                    return Err(SendError::Unknown);
                }
                Ok((reply, generation)) => {
                    if self.scripts.changes(script) {
                        self.store.changed(generation, *request);
                    }
                    if self.scripts.frees(script) {
                        self.garbage_queued.notify_one();
                    }
                    return checked(reply).map_err(SendError::NotRun);
                }
                Err(e) => match leased_dir(&e) {
                    Some(dir) => self
                        .recall(dir, started, &mut delay)
                        .await
                        .map_err(SendError::NotRun)?,
                    None => return Err(send_failure(what, &e)),
                },
            }
        }
    }

    /// Sees to the blocks `stored` for a call (sent as `request`) that failed: deleted at once
    /// if it did not run, or once its outcome is known (see [`Meta::settle_later`]).
    fn blocks_of_failed(
        &self,
        failure: SendError,
        request: Request,
        stored: Vec<u64>,
        places: Option<Places>,
    ) {
        match failure {
            SendError::NotRun(_) => crate::blocks::discard(&self.store, stored),
            SendError::Unknown | SendError::Moved => self.settle_later(request, stored, places),
        }
    }

    /// Runs `reads` of inode `dir` in one pipeline after a command that reads its lease,
    /// once this mount's deferred changes that touch it are sent; while another mount holds
    /// `dir`, recalls it and runs again. Returns the replies to `reads`. (The lease is read
    /// first: Redis may run another client's commands between two of a pipeline's, and a
    /// lease given back between a read of the record and a later read of the lease would
    /// pass off a record older than changes its holder had answered.)
    async fn read_unleased(
        &self,
        what: &str,
        dir: u64,
        reads: &redis::Pipeline,
    ) -> Result<Vec<Value>, FsError> {
        self.send_deferred_through(&[dir]).await?;
        let mut pipe = redis::pipe();
        pipe.cmd("HGET").arg(self.store.keys.lease()).arg(dir);
        for read in reads.cmd_iter() {
            pipe.add_command(read.clone());
        }
        let started = std::time::Instant::now();
        let mut delay = std::time::Duration::from_millis(1);
        loop {
            let reply: Vec<Value> = self
                .store
                .pipe_of_served(&pipe)
                .await
                .map_err(|e| redis_failure(what, &e))?;
            let holder = int(reply.first()).map_or(self.session, |h| h as u64);
            if holder == self.session || self.session == 0 {
                return Ok(reply.into_iter().skip(1).collect());
            }
            self.recall(dir, started, &mut delay).await?;
        }
    }

    /// Resolves `name` in directory `parent`.
    pub async fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr, FsError> {
        self.call(&calls::Lookup { parent, name }).await
    }

    /// Reads one inode's record.
    pub async fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let (key, field) = self.store.keys.inode(ino);
        let mut pipe = redis::pipe();
        pipe.cmd("HGET").arg(key).arg(field);
        let reply = self.read_unleased("getattr", ino, &pipe).await?;
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
        self.send_deferred_through(inos).await?;
        match self.records_pipelined(inos, with_xattrs).await? {
            Some(read) => Ok(read),
            // A directory among them is leased elsewhere: the script recalls it first.
            None => {
                self.call_unsent(&calls::Records { with_xattrs, inos })
                    .await
            }
        }
    }

    /// The records of `inos` (and their extended-attribute marks) read with plain commands
    /// in one pipeline: an `HMGET` per run of inodes sharing a bucket, an `EXISTS` per inode
    /// for the marks. For a listing's thousands of entries this costs Redis about a fifth of
    /// what `records.lua` does (its loop, the arguments and the reply converted through Lua).
    /// The leases of all of them are read first: `None` if a directory among them is leased
    /// to another mount, whose changes may not be in Redis yet. A lease read as free stays
    /// free (a directory is leased only when made, and given back with its last changes).
    async fn records_pipelined(
        &self,
        inos: &[u64],
        with_xattrs: bool,
    ) -> Result<Option<(Vec<Stored>, Vec<bool>)>, FsError> {
        if inos.is_empty() {
            return Ok(Some((Vec::new(), Vec::new())));
        }
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(self.store.keys.lease()).arg(inos);
        let mut runs = Vec::new();
        let places: Vec<(String, u64)> =
            inos.iter().map(|&ino| self.store.keys.inode(ino)).collect();
        for run in places.chunk_by(|a, b| a.0 == b.0) {
            let fields: Vec<u64> = run.iter().map(|(_, field)| *field).collect();
            pipe.cmd("HMGET").arg(&run[0].0).arg(fields);
            runs.push(run.len());
        }
        if with_xattrs {
            for &ino in inos {
                pipe.cmd("EXISTS").arg(self.store.keys.xattrs(ino));
            }
        }
        let malformed = || {
            tracing::error!(
                "a pipelined read of {} records had an unexpected reply",
                inos.len()
            );
            FsError::Io
        };
        let reply = self
            .store
            .pipe_of_served(&pipe)
            .await
            .map_err(|e| redis_failure("records", &e))?;
        let mut reply = reply.into_iter();
        let Some(Value::Array(holders)) = reply.next() else {
            return Err(malformed());
        };
        let held_elsewhere = |h: &Value| int(Some(h)).is_some_and(|h| h as u64 != self.session);
        if self.session != 0 && holders.iter().any(held_elsewhere) {
            return Ok(None);
        }
        let mut raw = Vec::with_capacity(inos.len());
        for len in runs {
            match reply.next() {
                Some(Value::Array(values)) if values.len() == len => raw.extend(values),
                _ => return Err(malformed()),
            }
        }
        let marks: Option<Vec<u8>> = with_xattrs.then(|| {
            reply
                .map(|exists| {
                    if int(Some(&exists)) == Some(0) {
                        b'0'
                    } else {
                        b'1'
                    }
                })
                .collect()
        });
        if marks.as_ref().is_some_and(|m| m.len() != inos.len()) {
            return Err(malformed());
        }
        Ok(Some(stored_records(inos, &raw, marks.as_deref())))
    }

    /// Creates an inode described by `attr` under `parent` as `name` (a file this mount
    /// `opened`, its open registered); returns it and the parent's attributes after.
    pub async fn create(
        &self,
        parent: u64,
        name: &[u8],
        attr: &Attr,
        symlink_target: &[u8],
        opened: bool,
    ) -> Result<(Attr, Attr), FsError> {
        self.delegation.changed_directly(parent);
        let lease = attr.kind() == FileKind::Dir && self.delegation.enabled();
        let call = calls::Create {
            parent,
            name,
            attr,
            symlink_target,
            lease,
            opened,
            ino: self.new_ino().await?,
        };
        let (ino, dir) = self.call(&call).await?;
        self.delegation.room_again();
        if lease {
            self.delegation.leased(ino);
        }
        Ok((Attr { ino, ..*attr }, dir))
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
        let call = calls::Link {
            ino,
            new_parent: parent,
            new_name: name,
            ts: Timestamp::now(),
            unnamed,
        };
        self.call(&call).await
    }

    /// Creates an unnamed file (`O_TMPFILE`) in `parent`, held by this session: no link.
    pub async fn tmpfile(&self, parent: u64, attr: &Attr) -> Result<Attr, FsError> {
        let ino = self.new_ino().await?;
        let ino = self.call(&calls::Tmpfile { parent, attr, ino }).await?;
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
        let call = calls::Remove {
            parent,
            name,
            want_dir: dir,
            ts: now,
            closed,
        };
        let removed = self.call(&call).await?;
        if dir {
            self.delegation.removed_dir(removed.0);
        }
        Ok(removed)
    }

    /// Renames `from` to `to` (directory, name); `flags` are the kernel's RENAME_* bits.
    /// Returns an inode whose last link the rename removed, if any, and the inodes it changed
    /// (the moved one, a replaced one). A directory leased here that moved is no longer
    /// one only this mount can have seen (the caller tells the delegation of what it is
    /// about to move, in case the reply is lost).
    pub async fn rename(
        &self,
        from: (u64, &[u8]),
        to: (u64, &[u8]),
        flags: u32,
    ) -> Result<(Option<u64>, [u64; 2]), FsError> {
        self.delegation.changed_directly(from.0);
        self.delegation.changed_directly(to.0);
        let flags = if flags & libc::RENAME_EXCHANGE != 0 {
            2
        } else if flags & libc::RENAME_NOREPLACE != 0 {
            1
        } else {
            0
        };
        let call = calls::Rename {
            src_parent: from.0,
            src_name: from.1,
            dst_parent: to.0,
            dst_name: to.1,
            flags,
            ts: Timestamp::now(),
        };
        let (victim, moved) = self.call(&call).await?;
        for ino in moved {
            self.delegation.moved(ino);
        }
        Ok((victim, moved))
    }

    /// Applies attribute changes; a size cut may carry a re-written last block (`tail`,
    /// stored on the node of `tail_on`), which nothing keeps when the change fails (as with
    /// [`Meta::commit`]'s blocks). `EAGAIN`: store the tail again. `known`: the inode's
    /// attributes as this mount knows them, if it does (a directory no other mount can see
    /// changes in the deferred log, see [`Delegation::change_dir`]). No request is returned
    /// where the change was deferred.
    pub async fn setattr(
        &self,
        ino: u64,
        change: &AttrChange,
        block_size: u32,
        tail: Option<&Tail>,
        known: Option<Attr>,
    ) -> Result<(Attr, Option<Request>), FsError> {
        let ts = Timestamp::now();
        if change.size.is_none() {
            let amended = (self.delegation).amend_creation(ino, |attr| change.apply_to(attr, ts));
            if let Some(attr) = amended {
                return Ok((attr, None));
            }
            if let Some(mut dir) = known.filter(|a| a.kind() == FileKind::Dir && a.nlink > 0) {
                if self.delegation.change_dir(ino, change, ts) {
                    change.apply_to(&mut dir, ts);
                    return Ok((dir, None));
                }
            }
        }
        let call = calls::Setattr {
            ino,
            ts,
            change,
            block_size,
            tail: tail.map(|t| t.swap),
        };
        let blocks = match tail {
            Some(t) => NewBlocks {
                stored: &t.stored,
                stored_on: t.stored_on,
                ..NewBlocks::default()
            },
            None => NewBlocks::default(),
        };
        let (attr, request) = self.send_or_forget(&call, blocks).await?;
        Ok((attr, Some(request)))
    }

    /// Swaps block-map entries; id 0 is a hole. Returns the new record and the indexes whose
    /// expected id no longer held (their new blocks are gone). `EAGAIN`: the primary changed
    /// since the blocks were stored; store them again. `written_at`: the deferred log's
    /// [`position`](deferred::Delegation::position) when the data was written, if known (only
    /// the changes before it, and those touching `ino`, need go first).
    pub async fn commit(
        &self,
        ino: u64,
        mtime: Option<Timestamp>,
        end_size: u64,
        swaps: &[BlockSwap],
        blocks: NewBlocks<'_>,
        written_at: Option<u64>,
    ) -> Result<(Attr, Vec<u64>, Request), FsError> {
        let call = calls::Commit {
            ino,
            mtime,
            end_size,
            swaps,
            written_at,
        };
        let ((attr, lost), request) = self.send_or_forget(&call, blocks).await?;
        // The script queued a loser's new block for deletion, but a run replayed from the
        // ring of replies set it again (in the transaction before the script): delete it. (An
        // entry a run before left as this one would is not lost: see commit.lua.)
        let losers: Vec<u64> = (swaps.iter())
            .filter(|s| s.new != 0 && lost.contains(&s.idx))
            .map(|s| s.new)
            .collect();
        crate::blocks::discard(&self.store, losers);
        Ok((attr, lost, request))
    }

    /// Sends `call`, for which the blocks `stored` were stored, after this mount's deferred
    /// changes; answers its reply and identity. Nothing stays behind when it fails: the blocks are deleted when the call was
    /// refused or never sent, and when its outcome is unknown (it may be queued in a stalled
    /// Redis), once its deadline has passed and its slot of the reply ring says it never ran.
    async fn send_or_forget<C: Call>(
        &self,
        call: &C,
        blocks: NewBlocks<'_>,
    ) -> Result<(C::Reply, Request), FsError> {
        let sent = match call.follows_log_at() {
            Some((ino, written_at)) => self.send_deferred_for(ino, written_at).await,
            None => self.send_deferred().await,
        };
        if let Err(e) = sent {
            crate::blocks::discard(&self.store, blocks.ids());
            return Err(e);
        }
        let request = self.store.request(self.session).bounded();
        let inline: Vec<(String, &Encoded)> = (blocks.inline.iter())
            .map(|(id, data)| (self.store.keys.block(*id), data))
            .collect();
        let mut stored_on = blocks.stored_on;
        let mut moves = 0;
        loop {
            let first = BlocksFirst {
                with: &inline,
                stored_on,
            };
            match self.send_after(call, &request, first).await {
                Ok(reply) => return Ok((call.parse(reply)?, request)),
                // The primary was replaced after the blocks were stored, and the new one may
                // lack them: they are stored there again, under the same ids, and the same
                // request sent (its ring of replies answers if it ran already).
                Err(SendError::Moved) if moves < MOVES => {
                    moves += 1;
                    match crate::blocks::put(&self.store, blocks.stored).await {
                        Ok(node) => stored_on = Some(node),
                        Err(e) => {
                            redis_failure("storing blocks again on the new primary", &e);
                            let places = call.places();
                            self.blocks_of_failed(
                                SendError::Unknown,
                                request,
                                blocks.ids(),
                                places,
                            );
                            return Err(FsError::Io);
                        }
                    }
                }
                Err(failure) => {
                    self.blocks_of_failed(failure, request, blocks.ids(), call.places());
                    return Err(failure.into());
                }
            }
        }
    }

    /// [`unnamed_blocks`] of this filesystem.
    pub async fn unnamed_blocks(
        &self,
        ino: u64,
        stored: &[(u64, u64)],
    ) -> Result<Vec<u64>, FsError> {
        (unnamed_blocks(&self.store, ino, stored).await)
            .map_err(|e| redis_failure("asking which stored blocks a map names", &e))
    }

    /// Learns what became of a commit whose reply never came, once no attempt of it can run
    /// any more (its deadline passed), and deletes the blocks stored for it (at `places`) if
    /// it never ran and no map names them. (If it ran, its blocks are in the map, or deleted
    /// by its lost compare-and-swap.)
    fn settle_later(&self, request: Request, stored: Vec<u64>, places: Option<Places>) {
        if stored.is_empty() {
            return;
        }
        let store = self.store.clone();
        self.store.clean_up_later(async move {
            tokio::time::sleep(store.io_timeout() + Duration::from_secs(1)).await;
            let mut wait = Duration::from_millis(100);
            loop {
                // A reply's slot of the ring is taken again 4,096 requests later: a commit
                // that ran may look as if it had not, so its blocks go only if no map names
                // them.
                let unnamed = match store.ran(&request).await {
                    Ok(true) => return,
                    Ok(false) => match &places {
                        Some((ino, at)) => unnamed_blocks(&store, *ino, at).await,
                        None => Ok(stored.clone()),
                    },
                    Err(e) => Err(e),
                };
                match unnamed {
                    Ok(unnamed) => return crate::blocks::discard(&store, unnamed),
                    Err(e) if crate::store::is_filesystem_gone(&e) => return,
                    Err(e) => {
                        tracing::warn!("asking Redis what became of a commit: {e}; trying again");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
    }

    /// The listing of directory `ino`: its record and, if it has at most [`ENTRIES_PER_REPLY`]
    /// entries, all of them; with their records too if there are at most `records_up_to`.
    pub async fn read_dir(
        &self,
        ino: u64,
        records_up_to: usize,
        with_xattrs: bool,
    ) -> Result<Listing, FsError> {
        self.send_deferred_through(&[ino]).await?;
        let call = calls::ListDir {
            dir: ino,
            whole: ENTRIES_PER_REPLY,
            most: records_up_to,
            with_xattrs,
        };
        let reply = self.call_unsent(&call).await?;
        let entries = match reply.entries {
            ListedEntries::Count(_) => None,
            ListedEntries::All(entries) => Some(self.parse_entries(ino, entries)),
        };
        let records = match (&entries, reply.records) {
            (Some(entries), Some((records, marks))) => {
                let inos: Vec<u64> = entries.iter().map(|e| e.ino).collect();
                Some(stored_records(&inos, &records, marks.as_deref()))
            }
            _ => None,
        };
        Ok(Listing {
            attr: reply.attr,
            entries,
            records,
        })
    }

    /// A piece of a big directory's entries (about `size`, at most [`ENTRIES_PER_REPLY`]),
    /// from `cursor` on (0: the start), and the cursor of the next piece (0: there is none):
    /// memory holds the listing, never a reply as big. Together the pieces hold every entry
    /// present throughout at least once, and one changed meanwhile possibly twice (HSCAN's
    /// promise).
    pub async fn scan_dir(
        &self,
        ino: u64,
        cursor: u64,
        size: usize,
    ) -> Result<(u64, Vec<DirEntry>), FsError> {
        let mut scan = redis::cmd("HSCAN");
        scan.arg(self.store.keys.dir(ino))
            .arg(cursor)
            .arg("COUNT")
            .arg(size.min(ENTRIES_PER_REPLY));
        let (next, piece): (u64, RawEntries) = self
            .store
            .cmd(&scan)
            .await
            .map_err(|e| redis_failure("readdir", &e))?;
        Ok((next, self.parse_entries(ino, piece)))
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
        let call = calls::XattrSet {
            ino,
            name,
            value,
            flags,
            ts: Timestamp::now(),
        };
        self.call(&call).await
    }

    /// Removes an extended attribute.
    pub async fn xattr_remove(&self, ino: u64, name: &[u8]) -> Result<(), FsError> {
        let ts = Timestamp::now();
        self.call(&calls::XattrRemove { ino, name, ts }).await
    }

    /// Ends this mount's registered opens and holds of `closed`, deleting the inodes no longer
    /// linked nor open anywhere; returns how many were deleted.
    pub async fn reclaim(&self, closed: &[Closed]) -> Result<u64, FsError> {
        let holder = self.session;
        self.call(&calls::Reclaim { holder, closed }).await
    }

    /// Deletes orphaned inodes recorded by session `holder` (this one, or a dead one).
    pub async fn reclaim_for(&self, holder: u64, inos: &[u64]) -> Result<u64, FsError> {
        let closed: Vec<Closed> = inos.iter().map(|&ino| Closed::Held(ino)).collect();
        let call = calls::Reclaim {
            holder,
            closed: &closed,
        };
        self.call(&call).await
    }

    /// Reads the record of a file this mount opens and did not have open, registering the
    /// open (see `src/lua/prelude.lua`): while it stays open here, a removal elsewhere keeps
    /// its data. Without `register`, registers an open of a file open here already.
    pub async fn open(&self, ino: u64, register: bool) -> Result<Attr, FsError> {
        if !register {
            return self.getattr(ino).await;
        }
        self.call(&calls::Open { ino }).await
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
        let call = calls::ExpireSession {
            dead,
            cutoff_ms,
            keep_replies_ms: keep_replies.as_millis(),
        };
        self.call(&call).await
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
        let call = calls::LockRequest {
            ino,
            owner,
            kind,
            start,
            end,
            pid,
            test,
            family,
        };
        self.call(&call).await
    }

    /// Frees up to `count` blocks of a large deleted file; returns how many were freed.
    pub async fn free_batch(&self, count: u32) -> Result<u64, FsError> {
        self.call(&calls::FreeBatch { count }).await
    }

    /// Frees the queued blocks of large deleted files, a batch at a time, until none are left
    /// (or Redis fails: the queue stays for the next try); the blocks they held are deleted in
    /// the background (see [`Meta::delete_garbage`]), woken here too in case a mount that
    /// queued some stopped before deleting them.
    pub async fn free_queued(&self) {
        while let Ok(n) = self.free_batch(2048).await {
            if n == 0 {
                break;
            }
        }
        self.garbage_queued.notify_one();
    }

    /// Deletes queued blocks whenever a script may have queued some, for as long as the mount
    /// runs: what a removal frees leaves Redis a moment later, and `df` shows it then.
    pub async fn delete_garbage_in_background(self) {
        loop {
            self.garbage_queued.notified().await;
            // Removals come in runs (`rm -rf`): what a few milliseconds queue goes in one batch.
            tokio::time::sleep(GARBAGE_DELAY).await;
            if let Err(e) = self.delete_garbage().await {
                if self.store.is_gone() {
                    return;
                }
                tracing::warn!("deleting unneeded blocks: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.garbage_queued.notify_one();
            }
        }
    }

    /// Deletes the queued blocks no map names (see `src/lua/garbage.lua`), a batch at a time,
    /// until the queue is empty; returns the blocks deleted.
    ///
    /// The change that queued a block and the block's deletion are two steps, and a failover
    /// between them may take the change (a truncation, an unlink) while the block goes: the map
    /// on the new primary would name a deleted block. So a batch is deleted only on the primary
    /// its queue was read from (a move between the steps starts over on the new one): a replica
    /// receives that primary's writes in order, so one that has the deletion has the change.
    pub async fn delete_garbage(&self) -> Result<Vec<u64>, FsError> {
        let failed = |e: &redis::RedisError| redis_failure("deleting unneeded blocks", e);
        let garbage = self.store.keys.garbage();
        let mut deleted = Vec::new();
        loop {
            let generation = self.store.link.node().generation;
            let queued: Vec<(u64, String)> = self
                .store
                .cmd(
                    redis::cmd("HRANDFIELD")
                        .arg(&garbage)
                        .arg(GARBAGE_BATCH)
                        .arg("WITHVALUES"),
                )
                .await
                .map_err(|e| failed(&e))?;
            if queued.is_empty() {
                return Ok(deleted);
            }
            let ids: Vec<u64> = queued.iter().map(|(id, _)| *id).collect();
            let unweighed: Vec<u64> = (queued.iter())
                .filter(|(_, state)| state != "w")
                .map(|(id, _)| *id)
                .collect();
            if !unweighed.is_empty() {
                let lengths = crate::blocks::lengths(&self.store, &unweighed)
                    .await
                    .map_err(|e| failed(&e))?;
                let blocks: Vec<(u64, u64)> = unweighed.into_iter().zip(lengths).collect();
                // Outside any session's ring of replies (weighing twice changes nothing),
                // which may run after this mount's session ended.
                let unrecorded = Request::unrecorded();
                self.send(&calls::WeighGarbage { blocks: &blocks }, &unrecorded)
                    .await
                    .map_err(FsError::from)?;
            }
            if self.store.link.node().is_cluster() && self.store.replicated_node().is_some() {
                self.wait_for_the_frees(&garbage, ids[0]).await?;
            }
            let mut delete = redis::cmd("DEL");
            for &id in &ids {
                delete.arg(self.store.keys.block(id));
            }
            let dequeue = redis::cmd("HDEL").arg(&garbage).arg(&ids).clone();
            // The queue lets go of the blocks only once they are gone: on a cluster a `DEL`
            // spans nodes and can fail on one (a node refusing writes, a slot moving) while
            // an `HDEL` sent in the same pipeline goes through, leaving blocks no map or
            // queue names.
            let still_there = self
                .store
                .retry_on_node(|node| {
                    let (mut conn, delete, dequeue) = (node.conn.clone(), &delete, &dequeue);
                    async move {
                        if node.generation != generation {
                            return Ok(false);
                        }
                        delete.query_async::<()>(&mut conn).await?;
                        dequeue.query_async::<()>(&mut conn).await.map(|()| true)
                    }
                })
                .await
                .map_err(|e| failed(&e))?;
            if still_there {
                deleted.extend(ids);
            } else {
                tracing::info!("the primary moved while blocks were being deleted: starting over");
            }
        }
    }

    /// On a cluster, waits until a replica of the metadata's primary has the changes that
    /// queued the blocks about to be deleted: there the blocks lie on other nodes, and a
    /// failover that took such a change after its blocks went would leave a map naming
    /// deleted blocks (on one server, the order of replication covers it). `WAIT` covers the
    /// writes of its own connection, so one is made first, after those changes (marking the
    /// weighed entry `queued` again).
    async fn wait_for_the_frees(&self, garbage: &str, queued: u64) -> Result<(), FsError> {
        let failed = |e: &redis::RedisError| redis_failure("waiting for a replica", e);
        let mark = redis::cmd("HSET").arg(garbage).arg(queued).arg("w").clone();
        self.store.cmd::<()>(&mark).await.map_err(|e| failed(&e))?;
        self.store.reach_replicas().await.map_err(|e| failed(&e))?;
        Ok(())
    }

    /// Block ids for `count` indexes from `first` (0 for holes), in one round trip.
    pub async fn map_range(&self, ino: u64, first: u64, count: u64) -> Result<Vec<u64>, FsError> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.store.keys.map(ino));
        for idx in first..first + count {
            cmd.arg(idx);
        }
        // (A missing map reads as holes: only while the filesystem is the one served.)
        let ids: Vec<Option<u64>> = self
            .store
            .cmd_of_served(&cmd)
            .await
            .map_err(|e| redis_failure("read block map", &e))?;
        Ok(ids.into_iter().map(|i| i.unwrap_or(0)).collect())
    }

    /// The whole block map of a file.
    pub async fn map_all(&self, ino: u64) -> Result<HashMap<u64, u64>, FsError> {
        self.store
            .cmd_of_served(redis::cmd("HGETALL").arg(self.store.keys.map(ino)))
            .await
            .map_err(|e| redis_failure("read block map", &e))
    }

    /// Inode and block counters, and how much memory Redis has left.
    pub async fn usage(&self) -> Result<Usage, FsError> {
        self.send_deferred().await?;
        let mut pipe = redis::pipe();
        Counters::ask(&mut pipe, &self.store.keys);
        let (counters,): (Vec<Option<u64>>,) =
            (self.store.pipe(&pipe).await).map_err(|e| redis_failure("statfs", &e))?;
        // (Of a cluster, every primary's memory.)
        let server = (crate::server::ServerInfo::read(&self.store).await).map_err(|e| {
            tracing::error!("statfs: {e}");
            FsError::Io
        })?;
        Ok(Usage {
            counters: Counters::parse(counters),
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
