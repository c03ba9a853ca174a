//! The filesystem as the kernel sees it.
//!
//! [`Core`] holds a mount's state and implements each operation as an async function that
//! returns an [`FsError`] on failure; [`fuse::RedisFs`] adapts it to fuser, moving each
//! request's reply into a task so that no FUSE thread waits on the network.

mod acl;
mod atime;
mod cache;
mod delegated;
mod dir;
mod fast;
mod file;
pub mod fuse;
mod hold;
mod locks;
pub mod notify;
mod opening;
mod ops;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::attr::{Attr, Timestamp};
use crate::blocks::BlockStore;
use crate::error::FsError;
use crate::events::{Change, Listener};
use crate::meta::{Closed, Meta};
use notify::{Invalidation, KernelNotifier};

pub use atime::AtimePolicy;
pub use dir::DirHandle;
pub use file::{Backlog, OpenFile, MAX_FILE_SIZE};

/// How a mount behaves, fixed when it starts.
#[derive(Clone, Debug)]
pub struct MountSettings {
    /// Refuse every change with EROFS.
    pub read_only: bool,
    /// How long the kernel may cache attributes and names.
    pub ttl: Duration,
    /// Whether the kernel's writeback cache is on.
    pub writeback: bool,
    /// Bytes of unstored writes the mount may hold before writers must wait for stores.
    pub write_buffer: u64,
    /// When accesses update access times.
    pub atime: AtimePolicy,
    /// Whether the filesystem keeps and enforces POSIX ACLs.
    pub acl: bool,
}

/// A mount's state: Redis access, open files and handles.
pub struct Core {
    /// Metadata operations.
    pub meta: Meta,
    /// Block storage and cache.
    pub blocks: BlockStore,
    /// Data bytes per block.
    pub block_size: u32,
    /// Fixed settings.
    pub settings: MountSettings,
    /// Inodes open on this mount, with how many handles share each.
    files: Mutex<HashMap<u64, (Arc<OpenFile>, usize)>>,
    /// File handles.
    handles: Mutex<HashMap<u64, Arc<OpenFile>>>,
    /// Directory handles.
    dirs: Mutex<HashMap<u64, Arc<Mutex<DirHandle>>>>,
    /// The last listing taken of a leased directory, with the cache epoch it was taken in
    /// (see `dir.rs`).
    last_listing: Mutex<Option<(u64, u64, Vec<crate::meta::DirEntry>)>>,
    next_handle: std::sync::atomic::AtomicU64,
    /// Files this mount is done with, for Redis to end their opens and delete those no longer
    /// linked nor open anywhere.
    reclaim_queue: mpsc::UnboundedSender<Closed>,
    /// Freeze requests of snapshot and dump tools, answered one at a time.
    hold_requests: mpsc::UnboundedSender<String>,
    /// Directories other mounts recalled (see `delegated.rs`).
    recalls: mpsc::UnboundedSender<u64>,
    /// Changes take it shared; a freeze request takes it alone (see `hold.rs`).
    gate: tokio::sync::RwLock<()>,
    /// Woken when a tool ends a hold.
    thawed: tokio::sync::Notify,
    /// The kernel's caches, once mounted.
    kernel: OnceLock<KernelNotifier>,
    /// What each inode looked like (mtime, ctime, size) when this mount last had it open and
    /// the kernel cached its pages: an open that finds it unchanged keeps those pages.
    seen: Mutex<HashMap<u64, Version>>,
    /// The locks this mount's handles may hold.
    locks: locks::LockTable,
    /// Names and attributes remembered between requests.
    cache: cache::MetaCache,
    /// Bytes held in write buffers, counted by the buffers themselves (see `file::Charge`).
    buffered: Arc<AtomicUsize>,
    /// Opens under way and removals that may delete their inode (see `opening.rs`).
    open_guard: Mutex<opening::OpenGuard>,
    /// Woken when such a removal ends.
    removal_ended: tokio::sync::Notify,
    /// Woken when an open under way ends.
    open_ended: tokio::sync::Notify,
    /// Access times being written (see `atime.rs`).
    access_writes: atime::AccessWrites,
    /// Files handed to the reclaimer and not yet sent.
    reclaims_pending: AtomicUsize,
}

/// What tells one state of a file's data from another, for close-to-open consistency.
type Version = (Timestamp, Timestamp, u64);

fn version(a: &Attr) -> Version {
    (a.mtime, a.ctime, a.size)
}

/// Inodes remembered in `seen` before the oldest memories are dropped.
const SEEN_LIMIT: usize = 100_000;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The receiving ends of a core's queues, for [`Core::start_workers`].
pub struct Queues {
    reclaims: mpsc::UnboundedReceiver<Closed>,
    holds: mpsc::UnboundedReceiver<String>,
    recalls: mpsc::UnboundedReceiver<u64>,
}

impl Core {
    /// A mount's core, and the receiving ends of its queues.
    pub fn new(meta: Meta, blocks: BlockStore, settings: MountSettings) -> (Arc<Core>, Queues) {
        let (tx, reclaims) = mpsc::unbounded_channel();
        let (hold_requests, holds) = mpsc::unbounded_channel();
        let (recalls_tx, recalls) = mpsc::unbounded_channel();
        let core = Core {
            block_size: blocks.block_size as u32,
            meta,
            blocks,
            settings,
            files: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            last_listing: Mutex::new(None),
            next_handle: std::sync::atomic::AtomicU64::new(1),
            reclaim_queue: tx,
            hold_requests,
            recalls: recalls_tx,
            gate: tokio::sync::RwLock::new(()),
            thawed: tokio::sync::Notify::new(),
            kernel: OnceLock::new(),
            seen: Mutex::new(HashMap::new()),
            locks: locks::LockTable::default(),
            cache: cache::MetaCache::default(),
            buffered: Arc::default(),
            open_guard: Mutex::default(),
            removal_ended: tokio::sync::Notify::new(),
            open_ended: tokio::sync::Notify::new(),
            access_writes: atime::AccessWrites::default(),
            reclaims_pending: AtomicUsize::new(0),
        };
        (
            Arc::new(core),
            Queues {
                reclaims,
                holds,
                recalls,
            },
        )
    }

    /// Starts the tasks that work off the core's queues.
    pub fn start_workers(self: &Arc<Self>, queues: Queues) {
        tokio::spawn(self.clone().reclaimer(queues.reclaims));
        tokio::spawn(self.clone().holder(queues.holds));
        tokio::spawn(self.clone().write_back());
        tokio::spawn(self.meta.clone().send_in_background());
        tokio::spawn(self.clone().recaller(queues.recalls));
    }

    /// Connects the kernel's caches, so that changes by other mounts invalidate them.
    pub fn attach_kernel(&self, notifier: KernelNotifier) {
        let _ = self.kernel.set(notifier);
    }

    fn invalidate(&self, item: Invalidation) {
        if let Some(k) = self.kernel.get() {
            k.send(item);
        }
    }

    /// Whether the kernel may keep cached pages of a file being opened, whose attributes are
    /// `attr` now: only if nothing changed since this mount last had it open.
    fn keeps_pages(&self, attr: &Attr) -> bool {
        let mut seen = lock(&self.seen);
        let same = seen.get(&attr.ino) == Some(&version(attr));
        if seen.len() >= SEEN_LIMIT {
            seen.clear();
        }
        seen.insert(attr.ino, version(attr));
        same
    }

    /// Remembers the state of a file whose last handle closed.
    fn closed(&self, attr: &Attr) {
        lock(&self.seen).insert(attr.ino, version(attr));
    }

    fn writable(&self) -> Result<(), FsError> {
        if self.settings.read_only {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    fn new_handle(&self) -> u64 {
        self.next_handle
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// What to tell the kernel of `attr`, read (from Redis or the cache) in `epoch`: for a
    /// file open here, this mount's own view, which is newer when writes are buffered or a
    /// store of its own landed after the read began. The kernel takes a size from any reply
    /// to a request sent after its last write, and places `O_APPEND` writes there: an older
    /// size overwrote fsync'd records.
    fn current(&self, attr: Attr, epoch: u64) -> Attr {
        let Some(file) = self.open_file(attr.ino) else {
            return attr;
        };
        let mut st = file.state();
        if self.cache.unchanged_since(attr.ino, epoch) {
            st.refresh(attr);
            st.changed_elsewhere = false;
        }
        st.attr
    }

    /// Reads the record of a file open here again, if another mount changed it since this
    /// mount last did (see [`file::FileState::changed_elsewhere`]).
    async fn learn_changes_elsewhere(&self, file: &OpenFile) -> Result<(), FsError> {
        // Another change may arrive while the record is read: read again, a few times.
        for _ in 0..8 {
            if !file.state().changed_elsewhere {
                return Ok(());
            }
            let epoch = self.cache.epoch();
            let attr = self.meta.getattr(file.ino).await?;
            self.current(attr, epoch);
        }
        Ok(())
    }

    /// The open state of `ino`, if it is open on this mount.
    fn open_file(&self, ino: u64) -> Option<Arc<OpenFile>> {
        lock(&self.files).get(&ino).map(|(f, _)| f.clone())
    }

    /// Registers a new handle on `attr`'s inode (read in `epoch`).
    fn attach(&self, attr: Attr, created: bool, epoch: u64) -> (u64, Arc<OpenFile>) {
        let file = {
            let mut files = lock(&self.files);
            let entry = files.entry(attr.ino).or_insert_with(|| {
                (
                    Arc::new(OpenFile::new(attr, created, !self.settings.writeback)),
                    0,
                )
            });
            entry.1 += 1;
            let mut st = entry.0.state();
            if entry.1 == 1 {
                // First open: what Redis says now is the truth (close-to-open).
                st.refresh(attr);
                st.changed_elsewhere = false;
                if !st.has_pending() {
                    st.forget_map(created);
                }
            } else if self.cache.unchanged_since(attr.ino, epoch) {
                // Another open: what Redis says may be newer (another mount's change).
                st.refresh(attr);
            }
            drop(st);
            entry.0.clone()
        };
        let fh = self.new_handle();
        lock(&self.handles).insert(fh, file.clone());
        (fh, file)
    }

    /// The file behind a handle.
    fn file(&self, fh: u64) -> Result<Arc<OpenFile>, FsError> {
        lock(&self.handles)
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)
    }

    /// Drops a handle; returns the inode's state when it was the last handle. A file whose
    /// last close could not store its data (Redis away or full) stays in the table without
    /// handles: the write-back stores it later (see [`Core::retire`]), and an open meanwhile
    /// finds it and stores it first. Its data was answered for, and is never dropped.
    fn detach(&self, fh: u64) -> Option<Arc<OpenFile>> {
        let file = lock(&self.handles).remove(&fh)?;
        let mut files = lock(&self.files);
        let entry = files.get_mut(&file.ino)?;
        entry.1 -= 1;
        if entry.1 > 0 {
            return None;
        }
        let unstored = {
            let st = file.state();
            st.has_pending() && !st.orphaned
        };
        if unstored {
            tracing::warn!(
                "inode {}: closed with data not yet stored; it is kept and stored when Redis \
                 takes it",
                file.ino
            );
            return None;
        }
        files.remove(&file.ino).map(|(f, _)| f)
    }

    /// Takes a file without handles whose data is now stored out of the table (see
    /// [`Core::detach`]), as its last close would have.
    fn retire(&self, file: &OpenFile) {
        let mut files = lock(&self.files);
        let closed = files
            .get(&file.ino)
            .is_some_and(|(f, handles)| *handles == 0 && std::ptr::eq(&**f, file));
        if !closed || file.state().has_pending() {
            return;
        }
        files.remove(&file.ino);
        drop(files);
        let st = file.state();
        self.let_go(file, st.orphaned);
        if !st.orphaned {
            self.closed(&st.attr);
        }
    }

    /// Hands a file whose last handle here closed (`orphaned`: its last link gone) to the
    /// reclaimer: its registered open ends, and Redis deletes it if it has no link left and no
    /// mount has it open.
    fn let_go(&self, file: &OpenFile, orphaned: bool) {
        let registered = file.registered.swap(false, AtomicOrdering::AcqRel);
        let done = match (registered, orphaned) {
            (true, _) => Closed::Open(file.ino),
            (false, true) => Closed::Held(file.ino),
            (false, false) => return,
        };
        self.hand_over(done);
    }

    /// Deals with an inode whose last link a removal took: it is deleted once not open here.
    /// Opens already past their look-up in Redis are waited for (they will register a
    /// handle); later ones find no link and fail (see [`Core::open`]).
    async fn orphaned(&self, ino: u64) {
        self.no_open_under_way(ino).await;
        {
            // Marked under the table's lock: a last close takes the file out of the table
            // under it too, so it either sees the mark or leaves the inode to be queued here.
            let mut files = lock(&self.files);
            if let Some((file, handles)) = files.get(&ino) {
                file.state().orphaned = true;
                if *handles > 0 {
                    return;
                }
                // Closed already, kept only for data its close could not store (see
                // `Core::detach`): nobody can read that data now.
                file.state().drop_buffers();
                self.let_go(file, true);
                files.remove(&ino);
                return;
            }
        }
        self.hand_over(Closed::Held(ino));
    }

    /// Queues a file this mount is done with for the reclaimer.
    fn hand_over(&self, done: Closed) {
        self.reclaims_pending.fetch_add(1, AtomicOrdering::AcqRel);
        if self.reclaim_queue.send(done).is_err() {
            self.reclaims_pending.fetch_sub(1, AtomicOrdering::AcqRel);
        }
    }

    /// Waits (at most `patience`) until the reclaimer has sent everything queued: the
    /// session's end must come after them, or they would write keys of a session gone.
    pub async fn reclaims_sent(&self, patience: Duration) {
        let deadline = tokio::time::Instant::now() + patience;
        while self.reclaims_pending.load(AtomicOrdering::Acquire) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Deletes queued orphans in batches until the queue closes.
    async fn reclaimer(self: Arc<Self>, mut queue: mpsc::UnboundedReceiver<Closed>) {
        while let Some(first) = queue.recv().await {
            let mut batch = vec![first];
            while batch.len() < 256 {
                match queue.try_recv() {
                    Ok(done) => batch.push(done),
                    Err(_) => break,
                }
            }
            if let Err(e) = self.meta.reclaim(&batch).await {
                tracing::warn!(
                    "ending {} opens and holds of files failed ({e}); the files stay until \
                     this mount's session ends, or for fsck",
                    batch.len()
                );
            }
            self.reclaims_pending
                .fetch_sub(batch.len(), AtomicOrdering::AcqRel);
        }
    }

    /// Frees queued blocks of large deleted files, a batch at a time.
    pub async fn free_queued_blocks(&self) {
        self.meta.free_queued().await;
    }

    /// Sends deferred changes and stores every buffered write of every open file (freeze,
    /// unmount).
    pub async fn flush_all(&self) -> Result<(), FsError> {
        let files: Vec<Arc<OpenFile>> =
            lock(&self.files).values().map(|(f, _)| f.clone()).collect();
        let mut result = self.meta.send_deferred().await;
        if let Err(e) = result {
            tracing::error!("changes in leased directories could not be sent: {e}");
        }
        for f in files {
            if let Err(e) = self.flush_file(&f, false).await {
                tracing::error!("inode {}: buffered data could not be stored: {e}", f.ino);
                result = Err(e);
            }
        }
        result
    }
}

impl Listener for Core {
    fn changed(&self, change: Change) {
        match change {
            Change::Attr(ino) => {
                // The epoch first: a read of the old record that ends after the mark must not
                // take it off (see `Core::current`).
                self.cache.forget_attr(ino);
                if let Some(f) = self.open_file(ino) {
                    f.state().changed_elsewhere = true;
                }
                self.invalidate(Invalidation::Attr(ino));
            }
            Change::Dir(record) => {
                self.cache.changed_elsewhere(record);
                self.invalidate(Invalidation::Attr(record.ino));
            }
            Change::Xattrs(ino) => {
                self.cache.xattrs_changed(ino);
                // The kernel keeps ACLs with the attributes; this makes it forget both.
                self.invalidate(Invalidation::Attr(ino));
            }
            Change::Entry(dir, name) => {
                self.cache.forget_name(dir, &name);
                self.invalidate(Invalidation::Entry(dir, name));
            }
            Change::Data(ino, blocks) => {
                if let Some(f) = self.open_file(ino) {
                    f.state().forget_map(false);
                }
                lock(&self.seen).remove(&ino);
                let bs = i64::from(self.block_size);
                let (offset, len) = match blocks {
                    Some((lo, hi)) => (lo as i64 * bs, (hi - lo + 1) as i64 * bs),
                    None => (0, 0),
                };
                self.invalidate(Invalidation::Data(ino, offset, len));
            }
            Change::Freeze(token) => {
                let _ = self.hold_requests.send(token);
            }
            Change::Thaw => self.thawed.notify_waiters(),
            Change::Recall(dir) => {
                let _ = self.recalls.send(dir);
            }
        }
    }

    fn missed(&self) {
        self.cache.clear();
        for (f, _) in lock(&self.files).values() {
            f.state().forget_map(false);
        }
        lock(&self.seen).clear();
    }
}
