//! The Lua scripts that make every metadata change atomic, one round trip each.
//!
//! Each script is `src/lua/prelude.lua` followed by its own file. Read-only scripts carry the
//! `no-writes` flag so that they also run on replicas.

use redis::Script;

use crate::attr::{FileKind, FIELDS_AT};
use crate::keys::{self, INODES_PER_BUCKET};

/// Every script the filesystem runs.
pub struct Scripts {
    /// Creates a new filesystem's meta key and root inode.
    pub format: Script,
    /// Resolves a name in a directory to an inode and its record.
    pub lookup: Script,
    /// Reads several inode records at once.
    pub records: Script,
    /// Reads a directory's record and entries, and a small one's entries' records.
    pub listing: Script,
    /// Creates a file, directory, symlink or special file.
    pub create: Script,
    /// Adds a hard link.
    pub link: Script,
    /// Unlinks a file or removes an empty directory.
    pub remove: Script,
    /// Renames, with replace, no-replace and exchange semantics.
    pub rename: Script,
    /// Changes attributes, including the size.
    pub setattr: Script,
    /// Swaps block-map entries after new blocks were written.
    pub commit: Script,
    /// Sets an extended attribute.
    pub xattr_set: Script,
    /// Removes an extended attribute.
    pub xattr_remove: Script,
    /// Ends a mount's opens of files and its hold of unlinked ones; deletes those no longer
    /// open anywhere.
    pub reclaim: Script,
    /// Reads a file being opened and registers the open.
    pub open: Script,
    /// Creates an unnamed file (O_TMPFILE).
    pub tmpfile: Script,
    /// Frees a batch of blocks of a large deleted file.
    pub free_batch: Script,
    /// Takes the bytes of queued blocks about to be deleted from the count.
    pub garbage: Script,
    /// Forgets a dead mount, deletes the unlinked inodes it held and releases its locks.
    pub expire_session: Script,
    /// Takes, releases or tests a byte-range lock.
    pub lock: Script,
    /// Applies a batch of deferred changes in leased directories.
    pub deferred: Script,
}

const PRELUDE: &str = include_str!("lua/prelude.lua");

/// The errno values scripts answer with, by the names they use (`E.NOENT`).
const ERRNOS: &[(&str, i32)] = &[
    ("PERM", libc::EPERM),
    ("NOENT", libc::ENOENT),
    ("IO", libc::EIO),
    ("AGAIN", libc::EAGAIN),
    ("EXIST", libc::EEXIST),
    ("NOTDIR", libc::ENOTDIR),
    ("ISDIR", libc::EISDIR),
    ("INVAL", libc::EINVAL),
    ("MLINK", libc::EMLINK),
    ("NOTEMPTY", libc::ENOTEMPTY),
    ("NODATA", libc::ENODATA),
    ("TIMEDOUT", libc::ETIMEDOUT),
];

/// What every script begins with: the layout, generated from its Rust declarations (key names,
/// errno values, record field offsets, file type bits and entry letters, records per bucket),
/// then
/// `src/lua/prelude.lua`.
fn prelude() -> String {
    let errnos: Vec<String> = ERRNOS.iter().map(|(n, v)| format!("{n} = {v}")).collect();
    let letters: Vec<String> = FileKind::ALL
        .iter()
        .map(|k| format!("[{}] = '{}'", k.mode_bits(), k.letter()))
        .collect();
    let fields: Vec<String> = FIELDS_AT
        .iter()
        .map(|(n, at)| format!("{n} = {at}"))
        .collect();
    format!(
        "local PREFIX = ARGV[1]\n{}local E = {{ {} }}\n\
         local AT = {{ {} }}\n\
         local S_IFMT, S_IFDIR, S_IFREG = {}, {}, {}\n\
         local LETTER = {{ {} }}\n\
         local PER_BUCKET = {INODES_PER_BUCKET}\n{PRELUDE}",
        keys::lua_builders(),
        errnos.join(", "),
        fields.join(", "),
        libc::S_IFMT,
        libc::S_IFDIR,
        libc::S_IFREG,
        letters.join(", "),
    )
}

/// Wraps a changing script so that it runs at most once per request: a request sent again
/// after a lost reply, or an earlier attempt that reaches Redis after a later one (an attempt
/// queued on a connection given up for dead), returns the reply of the run that happened
/// instead of running again (a create must not answer EEXIST to its own retry, a batch of
/// deferred creates must not be refused for finding its own files). Replies are kept in a ring
/// of slots per session, overwritten as requests go on.
/// A request past its deadline (its caller gave up on it: see `Store::script_as`) answers
/// ETIMEDOUT without running.
/// While a snapshot holds the filesystem (see `src/freeze.rs`) it changes nothing and answers
/// `{-1}`, and the caller waits and tries again.
const ONCE: &str = "
local RING = session_replies_key(SID)
local SLOT = tonumber(REQ) % 4096
if REQ ~= '0' then
  local done = redis.call('HGET', RING, SLOT)
  if done and string.sub(done, 1, #REQ + 1) == REQ .. ':' then
    return cmsgpack.unpack(string.sub(done, #REQ + 2))
  end
end
if DEADLINE ~= '0' then
  local now = redis.call('TIME')
  if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(DEADLINE) then
    return { E.TIMEDOUT }
  end
end
local FROZEN = redis.call('GET', FREEZE_KEY)
if FROZEN and string.sub(FROZEN, 1, 5) == 'hold ' then return { -1 } end
local reply = main()
if REQ ~= '0' then redis.call('HSET', RING, SLOT, REQ .. ':' .. cmsgpack.pack(reply)) end
return reply";

/// A changing script (see [`ONCE`]).
fn writing(prelude: &str, body: &str) -> Script {
    Script::new(&format!(
        "{prelude}\nlocal function main()\n{body}\nend\n{ONCE}"
    ))
}

/// A changing script that runs even when Redis is over its `maxmemory`: for changes that were
/// answered already and must not be refused, and for removals, which are how a full Redis
/// gets room again.
fn writing_when_full(prelude: &str, body: &str) -> Script {
    Script::new(&format!(
        "#!lua flags=allow-oom\n{prelude}\nlocal function main()\n{body}\nend\n{ONCE}"
    ))
}

fn read_only(prelude: &str, body: &str) -> Script {
    Script::new(&format!("#!lua flags=no-writes\n{prelude}\n{body}"))
}

impl Scripts {
    /// Whether `script` may change something (is not one of the read-only ones).
    pub fn changes(&self, script: &Script) -> bool {
        let hash = script.get_hash();
        ![&self.lookup, &self.records, &self.listing]
            .iter()
            .any(|s| s.get_hash() == hash)
    }

    /// Whether `script` may queue blocks for deletion (see `queue_garbage` in the prelude).
    pub fn frees(&self, script: &Script) -> bool {
        let hash = script.get_hash();
        [
            &self.commit,
            &self.setattr,
            &self.remove,
            &self.rename,
            &self.reclaim,
            &self.expire_session,
            &self.free_batch,
            &self.deferred,
        ]
        .iter()
        .any(|s| s.get_hash() == hash)
    }

    /// Builds every script (hashing them; nothing is sent yet).
    pub fn new() -> Scripts {
        let prelude = &prelude();
        Scripts {
            format: writing(prelude, include_str!("lua/format.lua")),
            lookup: read_only(prelude, include_str!("lua/lookup.lua")),
            records: read_only(prelude, include_str!("lua/records.lua")),
            listing: read_only(prelude, include_str!("lua/listing.lua")),
            create: writing(prelude, include_str!("lua/create.lua")),
            link: writing(prelude, include_str!("lua/link.lua")),
            remove: writing_when_full(prelude, include_str!("lua/remove.lua")),
            rename: writing(prelude, include_str!("lua/rename.lua")),
            setattr: writing(prelude, include_str!("lua/setattr.lua")),
            commit: writing(prelude, include_str!("lua/commit.lua")),
            xattr_set: writing(prelude, include_str!("lua/xattr_set.lua")),
            xattr_remove: writing(prelude, include_str!("lua/xattr_remove.lua")),
            reclaim: writing_when_full(prelude, include_str!("lua/reclaim.lua")),
            open: writing_when_full(prelude, include_str!("lua/open.lua")),
            tmpfile: writing(prelude, include_str!("lua/tmpfile.lua")),
            free_batch: writing_when_full(prelude, include_str!("lua/free_batch.lua")),
            garbage: writing_when_full(prelude, include_str!("lua/garbage.lua")),
            expire_session: writing_when_full(prelude, include_str!("lua/expire_session.lua")),
            lock: writing(prelude, include_str!("lua/lock.lua")),
            deferred: writing_when_full(prelude, include_str!("lua/deferred.lua")),
        }
    }
}

/// `reserve.lua`: counts numbers off a counter for the caller, outside of any request's ring of
/// replies (a reservation sent twice only wastes numbers) and of a snapshot's hold (a mount
/// storing its buffers for the snapshot may need block ids). Every counting is there (and in
/// `format.lua`, which starts the counters).
pub fn reserve() -> &'static Script {
    static RESERVE: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    RESERVE.get_or_init(|| {
        Script::new(&format!(
            "{}\n{}",
            prelude(),
            include_str!("lua/reserve.lua")
        ))
    })
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts::new()
    }
}
