//! An inode open on this mount: what the mount knows of it (attributes with buffered writes,
//! the known part of its block map) and its write buffers, shared by all its handles.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Mutex, MutexGuard};

use crate::attr::Attr;
use crate::error::FsError;

use super::buffers::Buffers;
use super::Core;

/// Largest file size: sizes travel through Lua, whose numbers are exact up to 2^53.
pub const MAX_FILE_SIZE: u64 = 1 << 52;

/// Block-map entries fetched at once when reading a file whose map is not known.
const MAP_WINDOW: u64 = 64;

/// What this mount knows of one open inode.
pub struct FileState {
    /// Attributes, with the size and times of buffered writes.
    pub attr: Attr,
    /// Known block-map entries (0: hole).
    map: HashMap<u64, u64>,
    /// Whether `map` holds every entry (true for files this mount created).
    map_complete: bool,
    /// Bumped whenever this mount changes the map, so a slower map read cannot undo it.
    map_version: u64,
    /// Writes not yet stored.
    pub buffers: Buffers,
    /// The last link is gone; reclaim the inode at the last close.
    pub orphaned: bool,
    /// An `O_TMPFILE` file that no link has named yet (`linkat` may).
    pub unnamed: bool,
    /// Another mount changed the file since this mount last read its record: an `O_APPEND`
    /// write reads it again first, so that it lands at the end that mount left.
    pub changed_elsewhere: bool,
    /// Where the last sequential read ended.
    pub read_end: u64,
    /// Where the run of sequential reads that ended at `read_end` began.
    pub run_start: u64,
    /// The block index up to which read-ahead has been started.
    pub ahead_to: u64,
    /// Whether this mount sets mtime/ctime on writes (the kernel does with its writeback cache).
    pub stamps_times: bool,
    /// The inode is gone from Redis while open here: a primary that failed took its creation
    /// along, or other mounts took this one for dead and let its files go. What was written
    /// to it cannot be stored, and `fsync` and `close` say so.
    pub lost: bool,
    /// The last change of attributes made through this mount while open (a truncation, a
    /// chmod): after a failover, `fsync` asks whether the new primary has it.
    pub last_attr_change: Option<crate::store::Request>,
    /// How many changes the deferred log held when this file was last written: stores of what
    /// is buffered send the log up to there first, so that they land in program order.
    pub log_position: u64,
}

impl FileState {
    /// Drops what is buffered and not being stored (see [`Core::release`]).
    pub fn drop_buffers(&mut self) {
        self.buffers.drop_dirty();
    }

    /// Whether writes are buffered, being stored, or waiting to reach a replica: the file
    /// stays in the table until none are.
    pub fn has_pending(&self) -> bool {
        !self.buffers.is_empty()
    }

    /// Whether writes are buffered or being stored: this mount knows the file's size and times
    /// better than Redis does. (Blocks waiting to reach a replica are in Redis already.)
    pub fn has_unstored(&self) -> bool {
        self.buffers.has_unstored()
    }

    /// Takes attributes read from Redis, keeping the size and times of buffered writes.
    pub fn refresh(&mut self, remote: Attr) {
        let local = self.attr;
        self.attr = remote;
        if self.has_unstored() {
            self.attr.size = local.size.max(remote.size);
            if self.stamps_times {
                self.attr.mtime = local.mtime.max(remote.mtime);
                self.attr.ctime = local.ctime.max(remote.ctime);
            }
        }
    }

    /// Forgets the block map (after a truncate or a change by another mount).
    pub fn forget_map(&mut self, now_empty: bool) {
        self.map.clear();
        self.map_complete = now_empty;
        self.map_version += 1;
    }

    /// The block id of index `idx`, if known (0: a hole).
    pub fn known_id(&self, idx: u64) -> Option<u64> {
        self.map
            .get(&idx)
            .copied()
            .or(if self.map_complete { Some(0) } else { None })
    }

    /// Records what a commit of this mount left at `idx` (`Some(id)`), or that the entry is not
    /// known any more (`None`: the commit lost a race there).
    pub fn committed(&mut self, idx: u64, id: Option<u64>) {
        match id {
            Some(id) => {
                self.map.insert(idx, id);
            }
            None => {
                // A file this mount created must not read the missing entry as a hole (its own
                // earlier commit, whose reply was lost, may be what the race was lost to).
                self.map.remove(&idx);
                self.map_complete = false;
            }
        }
    }

    /// Marks the map as changed by this mount (a commit landed).
    pub fn map_changed(&mut self) {
        self.map_version += 1;
    }
}

/// An inode open on this mount, shared by all its handles.
pub struct OpenFile {
    /// Its inode number.
    pub ino: u64,
    state: Mutex<FileState>,
    /// One store of the file's buffers at a time (see [`Core::flush_file`]).
    pub flush_lock: tokio::sync::Mutex<()>,
    /// Orders the commits of batches stored at once.
    pub commit_lock: tokio::sync::Mutex<()>,
    /// A background store of full blocks is under way.
    pub storing: AtomicBool,
    /// The leased directory whose deferred create made this file (0: none). While the
    /// directory stays leased and the file has one link, no other mount can open it, so its
    /// close need not wait for the store (see [`Core::flush_at_once`]).
    pub born_in: AtomicU64,
    /// This mount's open of the file is registered in Redis (see `src/lua/prelude.lua`), so
    /// that a removal by another mount keeps its data; its last close here ends it.
    pub registered: AtomicBool,
    /// The node (see `Node::generation`) on which the inode was last known to be in Redis:
    /// after a failover, `fsync` makes sure the new primary has it (see
    /// [`Core::make_durable`]).
    pub known_on: AtomicU64,
}

impl OpenFile {
    /// A newly opened inode; `created` means this mount just made it (its map is empty);
    /// `generation` is the node in use (see [`OpenFile::known_on`]).
    pub fn new(attr: Attr, created: bool, stamps_times: bool, generation: u64) -> OpenFile {
        OpenFile {
            ino: attr.ino,
            state: Mutex::new(FileState {
                attr,
                map: HashMap::new(),
                map_complete: created,
                map_version: 0,
                buffers: Buffers::default(),
                orphaned: false,
                unnamed: false,
                changed_elsewhere: false,
                read_end: 0,
                run_start: 0,
                ahead_to: 0,
                stamps_times,
                lost: false,
                last_attr_change: None,
                log_position: 0,
            }),
            flush_lock: tokio::sync::Mutex::new(()),
            commit_lock: tokio::sync::Mutex::new(()),
            storing: AtomicBool::new(false),
            born_in: AtomicU64::new(0),
            registered: AtomicBool::new(false),
            known_on: AtomicU64::new(generation),
        }
    }

    /// Locks the state (a poisoned lock still holds consistent data: no code panics under it).
    pub fn state(&self) -> MutexGuard<'_, FileState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Core {
    /// Current block ids for `idxs`, from the cached map or Redis.
    pub(super) async fn block_ids(
        &self,
        file: &OpenFile,
        idxs: &[u64],
    ) -> Result<Vec<u64>, FsError> {
        let (known, version): (Vec<Option<u64>>, u64) = {
            let st = file.state();
            (
                idxs.iter().map(|&i| st.known_id(i)).collect(),
                st.map_version,
            )
        };
        if known.iter().all(Option::is_some) {
            return Ok(known.into_iter().flatten().collect());
        }
        let lo = idxs.iter().min().copied().unwrap_or(0);
        let hi = idxs.iter().max().copied().unwrap_or(0);
        let count = (hi - lo + 1).max(MAP_WINDOW);
        let fetched = self.meta.map_range(file.ino, lo, count).await?;
        let mut st = file.state();
        if st.map_version == version {
            for (k, &id) in fetched.iter().enumerate() {
                st.map.entry(lo + k as u64).or_insert(id);
            }
        }
        Ok(idxs
            .iter()
            .zip(known)
            .map(|(&i, k)| k.unwrap_or(fetched[(i - lo) as usize]))
            .collect())
    }
}
