//! The files open on this mount: one [`OpenFile`] per inode, shared by its handles, and the
//! rules that keep opens, closes and removals of one inode apart.
//!
//! * A file stays in the table while it has handles, and after its last close while data that
//!   close could not store is still buffered (the write-back stores it; its data was answered
//!   for and is never dropped).
//! * An open under way and a removal that may delete its inode exclude each other: the kernel
//!   may send an OPEN for a name it resolved just before an UNLINK took the last link; such an
//!   open is either done looking the inode up before the removal decides (and the inode then
//!   waits for its last close) or fails. A removal that takes the last link of an inode nothing
//!   here has open deletes it in the same script (one round trip, no reclaim pass afterwards);
//!   opens of that inode wait for it.
//! * What each inode looked like when this mount last had it open decides whether the kernel
//!   may keep its cached pages at the next open (close-to-open consistency).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::attr::{Attr, Timestamp};
use crate::error::FsError;

use super::{lock, OpenFile};

/// What tells one state of a file's data from another, for close-to-open consistency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DataVersion {
    mtime: Timestamp,
    ctime: Timestamp,
    size: u64,
}

impl DataVersion {
    fn of(a: &Attr) -> DataVersion {
        DataVersion {
            mtime: a.mtime,
            ctime: a.ctime,
            size: a.size,
        }
    }
}

/// Inodes remembered in `seen` before the oldest memories are dropped.
const SEEN_LIMIT: usize = 100_000;

/// An inode open here, with how many handles share it.
struct OpenInode {
    file: Arc<OpenFile>,
    handles: usize,
}

/// Inodes being opened (not yet registered as open) and inodes a removal may delete.
#[derive(Default)]
struct OpenGuard {
    opening: HashMap<u64, usize>,
    deleting: HashSet<u64>,
}

/// The open files of a mount and their handles.
pub struct OpenFiles {
    /// Inodes open on this mount.
    files: Mutex<HashMap<u64, OpenInode>>,
    /// File handles.
    handles: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_handle: AtomicU64,
    /// Whether this mount sets mtime and ctime on writes (not with the kernel's writeback
    /// cache, which owns them).
    stamps_times: bool,
    /// What each inode looked like when this mount last had it open and the kernel cached its
    /// pages: an open that finds it unchanged keeps those pages.
    seen: Mutex<HashMap<u64, DataVersion>>,
    /// Opens under way and removals that may delete their inode.
    guard: Mutex<OpenGuard>,
    /// Woken when such a removal ends.
    removal_ended: Notify,
    /// Woken when an open under way ends.
    open_ended: Notify,
}

/// What became of an open file whose last link a removal took (see
/// [`OpenFiles::orphan`]).
pub enum Orphaned {
    /// Handles are open: the last close deletes it.
    StillOpen,
    /// It was kept after its last close only for data that close could not store: nobody can
    /// read that data now, so it was dropped and the file taken out of the table.
    Retired,
    /// It is not open here.
    NotOpen,
}

/// An open under way; dropping it (once the handle is registered) ends it.
pub struct Opening<'a> {
    table: &'a OpenFiles,
    ino: u64,
}

/// A removal allowed to delete `ino`; dropping it lets waiting opens go on.
pub struct Deleting<'a> {
    table: &'a OpenFiles,
    /// The inode the removal may delete.
    pub ino: u64,
}

impl OpenFiles {
    /// An empty table; `stamps_times` as in [`OpenFile::new`].
    pub fn new(stamps_times: bool) -> OpenFiles {
        OpenFiles {
            files: Mutex::default(),
            handles: Mutex::default(),
            next_handle: AtomicU64::new(1),
            stamps_times,
            seen: Mutex::default(),
            guard: Mutex::default(),
            removal_ended: Notify::new(),
            open_ended: Notify::new(),
        }
    }

    /// The open state of `ino`, if it is open on this mount.
    pub fn get(&self, ino: u64) -> Option<Arc<OpenFile>> {
        lock(&self.files).get(&ino).map(|e| e.file.clone())
    }

    /// Every file in the table.
    pub fn all(&self) -> Vec<Arc<OpenFile>> {
        lock(&self.files).values().map(|e| e.file.clone()).collect()
    }

    /// The file behind a handle.
    pub fn handle(&self, fh: u64) -> Result<Arc<OpenFile>, FsError> {
        lock(&self.handles)
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)
    }

    /// Registers a new handle on `attr`'s inode. At the first open what Redis says is the
    /// truth (close-to-open); at another, `attr` is taken if `newer()` says nothing changed
    /// the inode since it was read (it may be another mount's change). `generation`: the
    /// node in use.
    pub fn attach(
        &self,
        attr: Attr,
        created: bool,
        generation: u64,
        newer: impl FnOnce() -> bool,
    ) -> (u64, Arc<OpenFile>) {
        let file = {
            let mut files = lock(&self.files);
            let entry = files.entry(attr.ino).or_insert_with(|| OpenInode {
                file: Arc::new(OpenFile::new(attr, created, self.stamps_times, generation)),
                handles: 0,
            });
            entry.handles += 1;
            let mut st = entry.file.state();
            if entry.handles == 1 {
                st.refresh(attr);
                st.changed_elsewhere = false;
                if !st.has_unstored() {
                    st.forget_map(created);
                }
            } else if newer() {
                st.refresh(attr);
            }
            drop(st);
            entry.file.clone()
        };
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, file.clone());
        (fh, file)
    }

    /// Drops a handle; returns the inode's state when it was the last handle. A file whose
    /// last close could not store its data (Redis away or full) stays in the table without
    /// handles: the write-back stores it later (see [`OpenFiles::retire`]), and an open
    /// meanwhile finds it and stores it first.
    pub fn detach(&self, fh: u64) -> Option<Arc<OpenFile>> {
        let file = lock(&self.handles).remove(&fh)?;
        let mut files = lock(&self.files);
        let entry = files.get_mut(&file.ino)?;
        entry.handles -= 1;
        if entry.handles > 0 {
            return None;
        }
        let (unstored, unreplicated) = {
            let st = file.state();
            (
                st.has_unstored() && !st.orphaned,
                st.buffers.has_unreplicated(),
            )
        };
        if unreplicated && !unstored {
            // Kept until a replica has its blocks (see `Core::replicated`), quietly.
            return None;
        }
        if unstored {
            tracing::warn!(
                "inode {}: closed with data not yet stored; it is kept and stored when Redis \
                 takes it",
                file.ino
            );
            return None;
        }
        files.remove(&file.ino).map(|e| e.file)
    }

    /// Takes a file without handles whose data is now stored out of the table (see
    /// [`OpenFiles::detach`]), as its last close would have; says whether it did.
    pub fn retire(&self, file: &OpenFile) -> bool {
        let mut files = lock(&self.files);
        let closed = files
            .get(&file.ino)
            .is_some_and(|e| e.handles == 0 && std::ptr::eq(&*e.file, file));
        if !closed || file.state().has_pending() {
            return false;
        }
        files.remove(&file.ino);
        true
    }

    /// Marks `ino`, whose last link a removal took, as orphaned if it is open here. A file
    /// without handles is retired, `let_go` called on it first. Marked under the table's lock:
    /// a last close takes the file out of the table under it too, so it either sees the mark
    /// or leaves the inode to the caller.
    pub fn orphan(&self, ino: u64, let_go: impl FnOnce(&OpenFile)) -> Orphaned {
        let mut files = lock(&self.files);
        let Some(entry) = files.get(&ino) else {
            return Orphaned::NotOpen;
        };
        entry.file.state().orphaned = true;
        if entry.handles > 0 {
            return Orphaned::StillOpen;
        }
        entry.file.state().drop_buffers();
        let_go(&entry.file);
        files.remove(&ino);
        Orphaned::Retired
    }

    /// Runs `act` on `ino`'s open state under the table's lock, if it has handles here (where
    /// a last close takes the file out, so that the close sees what `act` did); says what
    /// `act` said, or false.
    pub fn while_open(&self, ino: u64, act: impl FnOnce(&OpenFile) -> bool) -> bool {
        let files = lock(&self.files);
        files
            .get(&ino)
            .filter(|e| e.handles > 0)
            .is_some_and(|e| act(&e.file))
    }

    /// Runs `act` under the table's lock (where opens register their handles) if `file` has
    /// exactly one handle; says what `act` said, or false.
    pub fn while_last_handle(&self, file: &OpenFile, act: impl FnOnce() -> bool) -> bool {
        let files = lock(&self.files);
        files.get(&file.ino).is_some_and(|e| e.handles == 1) && act()
    }

    /// Whether the kernel may keep cached pages of a file being opened, whose attributes are
    /// `attr` now: only if nothing changed since this mount last had it open.
    pub fn keeps_pages(&self, attr: &Attr) -> bool {
        let mut seen = lock(&self.seen);
        let same = seen.get(&attr.ino) == Some(&DataVersion::of(attr));
        if seen.len() >= SEEN_LIMIT {
            seen.clear();
        }
        seen.insert(attr.ino, DataVersion::of(attr));
        same
    }

    /// Remembers the state of a file whose last handle closed.
    pub fn closed(&self, attr: &Attr) {
        lock(&self.seen).insert(attr.ino, DataVersion::of(attr));
    }

    /// Forgets what `ino` looked like (its data changed elsewhere); `None`: every inode.
    pub fn forget_seen(&self, ino: Option<u64>) {
        let mut seen = lock(&self.seen);
        match ino {
            Some(ino) => {
                seen.remove(&ino);
            }
            None => seen.clear(),
        }
    }

    /// Marks an open of `ino` as under way, once no removal may be deleting it.
    pub async fn opening(&self, ino: u64) -> Opening<'_> {
        loop {
            // Created before the check, so that a removal ending in between still wakes it.
            let removal_ended = self.removal_ended.notified();
            {
                let mut guard = lock(&self.guard);
                if !guard.deleting.contains(&ino) {
                    *guard.opening.entry(ino).or_insert(0) += 1;
                    return Opening { table: self, ino };
                }
            }
            removal_ended.await;
        }
    }

    /// Waits until no open of `ino` is under way here.
    pub async fn no_open_under_way(&self, ino: u64) {
        loop {
            let open_ended = self.open_ended.notified();
            if !lock(&self.guard).opening.contains_key(&ino) {
                return;
            }
            open_ended.await;
        }
    }

    /// Whether an open or a removal of `ino` is under way here.
    pub fn open_or_removal_under_way(&self, ino: u64) -> bool {
        let guard = lock(&self.guard);
        guard.opening.contains_key(&ino) || guard.deleting.contains(&ino)
    }

    /// Lets a removal delete `ino` at once, if nothing here has it open or is opening it.
    pub fn deleting(&self, ino: u64) -> Option<Deleting<'_>> {
        let files = lock(&self.files);
        let mut guard = lock(&self.guard);
        let busy = files.contains_key(&ino) || guard.opening.contains_key(&ino);
        (!busy && guard.deleting.insert(ino)).then(|| Deleting { table: self, ino })
    }
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        let mut guard = lock(&self.table.guard);
        if let Some(n) = guard.opening.get_mut(&self.ino) {
            *n -= 1;
            if *n == 0 {
                guard.opening.remove(&self.ino);
            }
        }
        drop(guard);
        self.table.open_ended.notify_waiters();
    }
}

impl Drop for Deleting<'_> {
    fn drop(&mut self) {
        lock(&self.table.guard).deleting.remove(&self.ino);
        self.table.removal_ended.notify_waiters();
    }
}
