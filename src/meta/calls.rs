//! One typed call per metadata script: a struct whose fields are the script's arguments
//! after `P` and `sid`, in the order of the `ARGV:` header at the top of its file in
//! `src/lua/`, and the parser of its reply. [`Meta`](super::Meta) sends them; nothing else
//! builds a script's arguments by position.

use redis::{Script, Value};

use crate::attr::{Attr, Timestamp};
use crate::error::FsError;
use crate::scripts::Scripts;
use crate::store::ScriptArgs;

use super::{
    bytes, int, record, stored_records, AttrChange, BlockSwap, Closed, LockFamily, LockState,
    RawEntries, Stored,
};

/// A script call: its arguments and how its reply reads.
pub trait Call {
    /// The reply, parsed.
    type Reply;
    /// How logs name the call.
    const NAME: &'static str;
    /// The script.
    fn script(scripts: &Scripts) -> &Script;
    /// The arguments after `P` and `sid`.
    fn args(&self) -> ScriptArgs;
    /// Reads a reply whose status was 0.
    fn parse(&self, reply: Vec<Value>) -> Result<Self::Reply, FsError>;
    /// Where the call puts new blocks, if it does.
    fn places(&self) -> Option<Places> {
        None
    }
    /// For a call that changes one inode only (a data commit), that inode and how many changes
    /// the deferred log held when the call's data was written: only those, and the changes
    /// touching the inode, go first. `None`: the whole log.
    fn follows_log_at(&self) -> Option<(u64, u64)> {
        None
    }
}

/// The inode whose map a call puts new blocks in, and where: (index, block id).
pub type Places = (u64, Vec<(u64, u64)>);

/// Where `swaps` put new blocks (holes left out) in the map of `ino`.
fn places_of(ino: u64, swaps: &[BlockSwap]) -> Option<Places> {
    let at = (swaps.iter())
        .filter(|s| s.new != 0)
        .map(|s| (s.idx, s.new));
    Some((ino, at.collect()))
}

/// A reply's inode number at `at`.
fn ino_at(reply: &[Value], at: usize) -> Result<u64, FsError> {
    int(reply.get(at)).map(|i| i as u64).ok_or(FsError::Io)
}

/// `lookup.lua`: resolves `name` in `parent`; the inode and its record.
pub struct Lookup<'a> {
    pub parent: u64,
    pub name: &'a [u8],
}

impl Call for Lookup<'_> {
    type Reply = Attr;
    const NAME: &'static str = "lookup";
    fn script(scripts: &Scripts) -> &Script {
        &scripts.lookup
    }
    fn args(&self) -> ScriptArgs {
        ScriptArgs::default().num(self.parent).bytes(self.name)
    }
    fn parse(&self, reply: Vec<Value>) -> Result<Attr, FsError> {
        record(ino_at(&reply, 1)?, reply.get(2))
    }
}

/// `records.lua`: the records of `inos` and (with `with_xattrs`; otherwise all true) which of
/// them may have extended attributes.
pub struct Records<'a> {
    pub with_xattrs: bool,
    pub inos: &'a [u64],
}

impl Call for Records<'_> {
    type Reply = (Vec<Stored>, Vec<bool>);
    const NAME: &'static str = "records";
    fn script(scripts: &Scripts) -> &Script {
        &scripts.records
    }
    fn args(&self) -> ScriptArgs {
        let args = ScriptArgs::default().num(u8::from(self.with_xattrs));
        self.inos.iter().fold(args, |a, i| a.num(i))
    }
    fn parse(&self, reply: Vec<Value>) -> Result<Self::Reply, FsError> {
        let marks = bytes(reply.get(self.inos.len() + 1));
        Ok(stored_records(self.inos, &reply[1..], marks))
    }
}

/// `listing.lua`: a directory's record and entries; past `whole` entries only their count;
/// for at most `most` entries also their records (and, with `with_xattrs`, their marks).
pub struct ListDir {
    pub dir: u64,
    pub whole: usize,
    pub most: usize,
    pub with_xattrs: bool,
}

/// The entries a listing's reply carries.
pub enum ListedEntries {
    /// All of them, as HGETALL gives them.
    All(RawEntries),
    /// How many there are: too many for one reply.
    Count(i64),
}

/// What `listing.lua` answers.
pub struct ListingReply {
    /// The directory's record.
    pub attr: Attr,
    /// Its entries.
    pub entries: ListedEntries,
    /// Their records, in inode order, and the marks of which have extended attributes.
    pub records: Option<(Vec<Value>, Option<Vec<u8>>)>,
}

impl Call for ListDir {
    type Reply = ListingReply;
    const NAME: &'static str = "readdir";
    fn script(scripts: &Scripts) -> &Script {
        &scripts.listing
    }
    fn args(&self) -> ScriptArgs {
        ScriptArgs::default()
            .num(self.dir)
            .num(self.whole)
            .num(self.most)
            .num(u8::from(self.with_xattrs))
    }
    fn parse(&self, mut reply: Vec<Value>) -> Result<ListingReply, FsError> {
        let unexpected = |what: &dyn std::fmt::Display| {
            tracing::error!("readdir of {}: unexpected reply: {what}", self.dir);
            FsError::Io
        };
        let attr = record(self.dir, reply.get(1))?;
        let entries = match reply.get_mut(2).map(std::mem::take) {
            Some(Value::Int(count)) => ListedEntries::Count(count),
            Some(flat) => {
                ListedEntries::All(redis::from_redis_value(flat).map_err(|e| unexpected(&e))?)
            }
            None => return Err(unexpected(&"no entries")),
        };
        let records = match reply.get_mut(3).map(std::mem::take) {
            Some(Value::Array(records)) => Some((records, bytes(reply.get(4)).map(<[u8]>::to_vec))),
            _ => None,
        };
        Ok(ListingReply {
            attr,
            entries,
            records,
        })
    }
}

/// `create.lua`: makes the inode `attr` describes as `parent/name` (a directory `lease`d to
/// the calling session; a file the caller has `opened`); the new inode number and the
/// parent's record after.
pub struct Create<'a> {
    pub parent: u64,
    pub name: &'a [u8],
    pub attr: &'a Attr,
    pub symlink_target: &'a [u8],
    pub lease: bool,
    pub opened: bool,
    /// The new inode's number, from the mount's reserved range.
    pub ino: u64,
}

impl Call for Create<'_> {
    type Reply = (u64, Attr);
    const NAME: &'static str = "create";
    fn script(scripts: &Scripts) -> &Script {
        &scripts.create
    }
    fn args(&self) -> ScriptArgs {
        ScriptArgs::default()
            .num(self.parent)
            .bytes(self.name)
            .bytes(self.attr.encode())
            .bytes(self.attr.kind().letter().to_string())
            .bytes(self.attr.ctime.encode())
            .bytes(self.symlink_target)
            .num(u8::from(self.lease))
            .num(u8::from(self.opened))
            .num(self.ino)
    }
    fn parse(&self, reply: Vec<Value>) -> Result<Self::Reply, FsError> {
        Ok((ino_at(&reply, 1)?, record(self.parent, reply.get(2))?))
    }
}

/// `link.lua`: adds `new_parent/new_name` to `ino` (an `unnamed` file held by the caller gets
/// its first link); the inode's record after.
pub struct Link<'a> {
    pub ino: u64,
    pub new_parent: u64,
    pub new_name: &'a [u8],
    pub ts: Timestamp,
    pub unnamed: bool,
}

impl Call for Link<'_> {
    type Reply = Attr;
    const NAME: &'static str = "link";
    fn script(scripts: &Scripts) -> &Script {
        &scripts.link
    }
    fn args(&self) -> ScriptArgs {
        ScriptArgs::default()
            .num(self.ino)
            .num(self.new_parent)
            .bytes(self.new_name)
            .bytes(self.ts.encode())
            .num(u8::from(self.unnamed))
    }
    fn parse(&self, reply: Vec<Value>) -> Result<Attr, FsError> {
        record(self.ino, reply.get(1))
    }
}

/// `tmpfile.lua`: an unnamed file in `parent`, held by the caller; its inode number.
pub struct Tmpfile<'a> {
    pub parent: u64,
    pub attr: &'a Attr,
    /// The new inode's number, from the mount's reserved range.
    pub ino: u64,
}

impl Call for Tmpfile<'_> {
    type Reply = u64;
    const NAME: &'static str = "tmpfile";
    fn script(scripts: &Scripts) -> &Script {
        &scripts.tmpfile
    }
    fn args(&self) -> ScriptArgs {
        ScriptArgs::default()
            .num(self.parent)
            .bytes(self.attr.encode())
            .num(self.ino)
    }
    fn parse(&self, reply: Vec<Value>) -> Result<u64, FsError> {
        ino_at(&reply, 1)
    }
}

/// `remove.lua`: unlinks (`want_dir`: removes an empty directory); `closed` names an inode the
/// caller does not have open, deleted at once if this takes its last link. The inode, and
/// whether its last link went.
pub struct Remove<'a> {
    pub parent: u64,
    pub name: &'a [u8],
    pub want_dir: bool,
    pub ts: Timestamp,
    pub closed: u64,
}

impl Call for Remove<'_> {
    type Reply = (u64, bool);
    const NAME: &'static str = "remove";
    fn script(scripts: &Scripts) -> &Script {
        &scripts.remove
    }
    fn args(&self) -> ScriptArgs {
        ScriptArgs::default()
            .num(self.parent)
            .bytes(self.name)
            .num(u8::from(self.want_dir))
            .bytes(self.ts.encode())
            .num(self.closed)
    }
    fn parse(&self, reply: Vec<Value>) -> Result<Self::Reply, FsError> {
        Ok((ino_at(&reply, 1)?, int(reply.get(2)) == Some(1)))
    }
}

/// `rename.lua`: `flags` 1 no-replace, 2 exchange. An inode whose last link went (if any), and
/// the inodes changed (the moved one, a replaced one).
pub struct Rename<'a> {
    pub src_parent: u64,
    pub src_name: &'a [u8],
    pub dst_parent: u64,
    pub dst_name: &'a [u8],
    pub flags: u8,
    pub ts: Timestamp,
}

impl Call for Rename<'_> {
    type Reply = (Option<u64>, [u64; 2]);
    const NAME: &'static str = "rename";
    fn script(scripts: &Scripts) -> &Script {
        &scripts.rename
    }
    fn args(&self) -> ScriptArgs {
        ScriptArgs::default()
            .num(self.src_parent)
            .bytes(self.src_name)
            .num(self.dst_parent)
            .bytes(self.dst_name)
            .num(self.flags)
            .bytes(self.ts.encode())
    }
    fn parse(&self, reply: Vec<Value>) -> Result<Self::Reply, FsError> {
        let ino = |i: usize| int(reply.get(i)).unwrap_or(0).max(0) as u64;
        Ok(((ino(1) > 0).then(|| ino(1)), [ino(2), ino(3)]))
    }
}

/// `setattr.lua`: applies `change`; a size cut may carry a re-written last block (`tail`).
/// The record after.
pub struct Setattr<'a> {
    pub ino: u64,
    pub ts: Timestamp,
    pub change: &'a AttrChange,
    pub block_size: u32,
    pub tail: Option<BlockSwap>,
}

impl Call for Setattr<'_> {
    type Reply = Attr;
    const NAME: &'static str = "setattr";
    fn script(scripts: &Scripts) -> &Script {
        &scripts.setattr
    }
    fn args(&self) -> ScriptArgs {
        let c = self.change;
        let time = |t: Option<Timestamp>| t.unwrap_or_default().encode();
        let (tail_index, tail_old, tail_new, tail_len) = match self.tail {
            Some(t) => (t.idx.to_string(), t.old, t.new, t.new_len),
            None => (String::new(), 0, 0, 0),
        };
        ScriptArgs::default()
            .num(self.ino)
            .bytes(self.ts.encode())
            .num(c.mask())
            .num(c.mode.unwrap_or(0))
            .num(c.uid.unwrap_or(0))
            .num(c.gid.unwrap_or(0))
            .bytes(time(c.atime))
            .bytes(time(c.mtime))
            .bytes(time(c.ctime))
            .num(c.size.unwrap_or(0))
            .num(self.block_size)
            .bytes(tail_index)
            .num(tail_old)
            .num(tail_new)
            .num(tail_len)
            .bytes(time(c.accessed))
    }
    fn parse(&self, reply: Vec<Value>) -> Result<Attr, FsError> {
        record(self.ino, reply.get(1))
    }
    fn places(&self) -> Option<Places> {
        places_of(self.ino, self.tail.as_slice())
    }
}

/// `commit.lua`: swaps block-map entries (`swaps`), storing the `inline` blocks first; stamps
/// `mtime` if given and grows the size to `end_size`. The record after, and the indexes whose
/// expected block no longer held.
pub struct Commit<'a> {
    pub ino: u64,
    pub mtime: Option<Timestamp>,
    pub end_size: u64,
    pub swaps: &'a [BlockSwap],
    /// How many changes the deferred log held when the data was written (`None`: unknown,
    /// the whole log goes first).
    pub written_at: Option<u64>,
}

impl Call for Commit<'_> {
    type Reply = (Attr, Vec<u64>);
    const NAME: &'static str = "commit";
    fn script(scripts: &Scripts) -> &Script {
        &scripts.commit
    }
    fn args(&self) -> ScriptArgs {
        let mut args = ScriptArgs::default()
            .num(self.ino)
            .bytes(self.mtime.map(|t| t.encode().to_vec()).unwrap_or_default())
            .num(self.end_size);
        for s in self.swaps {
            args = args.num(s.idx).num(s.old).num(s.new).num(s.new_len);
        }
        args
    }
    fn parse(&self, reply: Vec<Value>) -> Result<Self::Reply, FsError> {
        let attr = record(self.ino, reply.get(1))?;
        let lost = reply[2..]
            .iter()
            .filter_map(|v| int(Some(v)))
            .map(|i| i as u64)
            .collect();
        Ok((attr, lost))
    }
    fn places(&self) -> Option<Places> {
        places_of(self.ino, self.swaps)
    }
    fn follows_log_at(&self) -> Option<(u64, u64)> {
        self.written_at.map(|at| (self.ino, at))
    }
}

/// `xattr_set.lua`: `flags` 1 create only, 2 replace only.
pub struct XattrSet<'a> {
    pub ino: u64,
    pub name: &'a [u8],
    pub value: &'a [u8],
    pub flags: u8,
    pub ts: Timestamp,
}

impl Call for XattrSet<'_> {
    type Reply = ();
    const NAME: &'static str = "setxattr";
    fn script(scripts: &Scripts) -> &Script {
        &scripts.xattr_set
    }
    fn args(&self) -> ScriptArgs {
        ScriptArgs::default()
            .num(self.ino)
            .bytes(self.name)
            .bytes(self.value)
            .num(self.flags)
            .bytes(self.ts.encode())
    }
    fn parse(&self, _: Vec<Value>) -> Result<(), FsError> {
        Ok(())
    }
}

/// `xattr_remove.lua`.
pub struct XattrRemove<'a> {
    pub ino: u64,
    pub name: &'a [u8],
    pub ts: Timestamp,
}

impl Call for XattrRemove<'_> {
    type Reply = ();
    const NAME: &'static str = "removexattr";
    fn script(scripts: &Scripts) -> &Script {
        &scripts.xattr_remove
    }
    fn args(&self) -> ScriptArgs {
        ScriptArgs::default()
            .num(self.ino)
            .bytes(self.name)
            .bytes(self.ts.encode())
    }
    fn parse(&self, _: Vec<Value>) -> Result<(), FsError> {
        Ok(())
    }
}

/// `reclaim.lua`: ends `holder`'s registered opens and holds of `closed`; how many inodes
/// were deleted.
pub struct Reclaim<'a> {
    pub holder: u64,
    pub closed: &'a [Closed],
}

impl Call for Reclaim<'_> {
    type Reply = u64;
    const NAME: &'static str = "reclaim";
    fn script(scripts: &Scripts) -> &Script {
        &scripts.reclaim
    }
    fn args(&self) -> ScriptArgs {
        let args = ScriptArgs::default().num(self.holder);
        self.closed.iter().fold(args, |a, c| match c {
            Closed::Open(ino) => a.bytes(format!("r{ino}")),
            Closed::Held(ino) => a.num(ino),
        })
    }
    fn parse(&self, reply: Vec<Value>) -> Result<u64, FsError> {
        Ok(int(reply.get(1)).unwrap_or(0) as u64)
    }
}

/// `open.lua`: registers an open of `ino` by the caller; its record.
pub struct Open {
    pub ino: u64,
}

impl Call for Open {
    type Reply = Attr;
    const NAME: &'static str = "open";
    fn script(scripts: &Scripts) -> &Script {
        &scripts.open
    }
    fn args(&self) -> ScriptArgs {
        ScriptArgs::default().num(self.ino).num(1)
    }
    fn parse(&self, reply: Vec<Value>) -> Result<Attr, FsError> {
        record(self.ino, reply.get(1))
    }
}

/// `expire_session.lua`: expires session `dead` unless it heartbeat after `cutoff_ms`, keeping
/// its ring of replies for `keep_replies_ms`; how many inodes it held were deleted, `None` if
/// it is alive.
pub struct ExpireSession {
    pub dead: u64,
    pub cutoff_ms: u64,
    pub keep_replies_ms: u128,
}

impl Call for ExpireSession {
    type Reply = Option<u64>;
    const NAME: &'static str = "expire session";
    fn script(scripts: &Scripts) -> &Script {
        &scripts.expire_session
    }
    fn args(&self) -> ScriptArgs {
        ScriptArgs::default()
            .num(self.dead)
            .num(self.cutoff_ms)
            .num(self.keep_replies_ms)
    }
    fn parse(&self, reply: Vec<Value>) -> Result<Option<u64>, FsError> {
        Ok(int(reply.get(1)).filter(|&n| n >= 0).map(|n| n as u64))
    }
}

/// `lock.lua`: takes (`kind` 0 read, 1 write) or releases (2) `owner`'s lock of `family` on
/// `[start, end]` (`None`: to the end); with `test`, only reports a conflicting lock.
pub struct LockRequest {
    pub ino: u64,
    pub owner: u64,
    pub kind: i32,
    pub start: u64,
    pub end: Option<u64>,
    pub pid: u32,
    pub test: bool,
    pub family: LockFamily,
}

impl Call for LockRequest {
    type Reply = LockState;
    const NAME: &'static str = "lock";
    fn script(scripts: &Scripts) -> &Script {
        &scripts.lock
    }
    fn args(&self) -> ScriptArgs {
        ScriptArgs::default()
            .num(self.ino)
            .num(self.owner)
            .num(self.kind)
            .num(self.start)
            .num(self.end.map_or(-1, |e| e as i64))
            .num(self.pid)
            .num(u8::from(self.test))
            .bytes(self.family.code())
    }
    fn parse(&self, reply: Vec<Value>) -> Result<LockState, FsError> {
        let field = |i: usize| int(reply.get(i)).unwrap_or(0);
        Ok(LockState {
            kind: field(1) as i32,
            start: field(2).max(0) as u64,
            end: u64::try_from(field(3)).ok(),
            pid: field(4) as u32,
        })
    }
}

/// `garbage.lua`: takes the bytes of queued blocks (id, length in Redis) from `stored_bytes`
/// before they are deleted, once each.
pub struct WeighGarbage<'a> {
    pub blocks: &'a [(u64, u64)],
}

impl Call for WeighGarbage<'_> {
    type Reply = ();
    const NAME: &'static str = "garbage";
    fn script(scripts: &Scripts) -> &Script {
        &scripts.garbage
    }
    fn args(&self) -> ScriptArgs {
        (self.blocks.iter()).fold(ScriptArgs::default(), |a, (id, len)| a.num(id).num(len))
    }
    fn parse(&self, _reply: Vec<Value>) -> Result<(), FsError> {
        Ok(())
    }
}

/// `free_batch.lua`: frees up to `count` blocks of a queued large map; how many it freed.
pub struct FreeBatch {
    pub count: u32,
}

impl Call for FreeBatch {
    type Reply = u64;
    const NAME: &'static str = "free blocks";
    fn script(scripts: &Scripts) -> &Script {
        &scripts.free_batch
    }
    fn args(&self) -> ScriptArgs {
        ScriptArgs::default().num(self.count)
    }
    fn parse(&self, reply: Vec<Value>) -> Result<u64, FsError> {
        Ok(int(reply.get(1)).unwrap_or(0) as u64)
    }
}

/// `format.lua`: creates a filesystem (its identity and root directory) unless one exists
/// (`EEXIST`: another mount created it at the same moment).
pub struct Format<'a> {
    pub version: u32,
    pub block_size: u32,
    pub codec: &'a str,
    pub uuid: String,
    pub created: i64,
    pub root: &'a Attr,
    pub acl: &'a str,
}

impl Call for Format<'_> {
    type Reply = ();
    const NAME: &'static str = "format";
    fn script(scripts: &Scripts) -> &Script {
        &scripts.format
    }
    fn args(&self) -> ScriptArgs {
        ScriptArgs::default()
            .num(self.version)
            .num(self.block_size)
            .bytes(self.codec)
            .bytes(&self.uuid)
            .num(self.created)
            .bytes(self.root.encode())
            .bytes(self.acl)
    }
    fn parse(&self, _: Vec<Value>) -> Result<(), FsError> {
        Ok(())
    }
}
