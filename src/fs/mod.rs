//! The filesystem as the kernel sees it.
//!
//! [`Core`] is a mount's state: the connection pieces (metadata, blocks) and parts that each
//! own their state and its rules. Each operation is an async function of `Core` that returns
//! an [`FsError`] on failure; [`fuse::RedisFs`] adapts them to fuser, moving each request's
//! reply into a task so that no FUSE thread waits on the network.
//!
//! Where things live:
//!
//! * `ops/`: the operations by family (`entries`, `io`, `attrs`, `dirs`, `locks`), each
//!   operation's fast form beside its async form;
//! * the parts of `Core`: `open_files` (open files, handles, opens against removals),
//!   `freeze_gate` (changes against tools' freezes), `reclaim` (files this mount is done
//!   with), `buffers` (write buffers and their budget), `cache` (names and attributes),
//!   `atime` (access times), `ops/locks` (locks held through this mount), `ops/dirs`
//!   (directory handles);
//! * the data paths: `file` (an open file's state), `write` (buffer, store, commit), `read`;
//! * `notify` (the kernel's caches), `acl` (POSIX ACL values), `fuse` (the adapter).

mod acl;
mod atime;
mod buffers;
mod cache;
mod file;
mod freeze_gate;
pub mod fuse;
pub mod notify;
mod open_files;
mod ops;
mod read;
mod reclaim;
mod write;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::attr::Attr;
use crate::blocks::BlockStore;
use crate::error::FsError;
use crate::events::{Change, Listener};
use crate::meta::{Closed, Meta};
use notify::{Invalidation, KernelNotifier};

pub use atime::AtimePolicy;
pub use file::{OpenFile, MAX_FILE_SIZE};
pub use ops::dirs::DirHandle;
pub use ops::io::WriteAnswer;
pub use ops::{Caller, NewInode};
pub use write::Backlog;

use buffers::WriteBudget;
use freeze_gate::FreezeGate;
use open_files::OpenFiles;
use ops::dirs::DirHandles;
use ops::locks::LockTable;
use reclaim::Reclaimer;

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

/// A mount's state.
pub struct Core {
    /// Metadata operations.
    pub meta: Meta,
    /// Block storage and cache.
    pub blocks: BlockStore,
    /// Data bytes per block.
    pub block_size: u32,
    /// Fixed settings.
    pub settings: MountSettings,
    /// Files open here and their handles.
    open: OpenFiles,
    /// Directory handles and the last listing taken.
    dirs: DirHandles,
    /// Changes wait here while a tool freezes the filesystem.
    freeze: FreezeGate,
    /// Files this mount is done with, on their way to Redis.
    reclaimer: Reclaimer,
    /// Bytes held in write buffers, against `settings.write_buffer`.
    write_budget: WriteBudget,
    /// The locks this mount's handles may hold.
    locks: LockTable,
    /// Names and attributes remembered between requests.
    cache: cache::MetaCache,
    /// Access times being written.
    access_writes: atime::AccessWrites,
    /// The kernel's caches, once mounted.
    kernel: OnceLock<KernelNotifier>,
    /// Directories other mounts recalled (see [`Core::recaller`]).
    recalls: mpsc::UnboundedSender<u64>,
    /// The tasks requests started and the workers, ended before the session is (see
    /// [`Core::stop`]).
    tasks: Tasks,
}

/// The tasks of a core: work that requests started (answering them, storing in the
/// background, writing access times), and the workers that run for as long as the mount.
/// A mount ends its session only once none of them runs: a request that landed after would
/// change a filesystem its mount had left, and keep keys of a session that no longer exists.
#[derive(Default)]
struct Tasks {
    started: tokio_util::task::TaskTracker,
    workers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The receiving ends of a core's queues, for [`Core::start_workers`].
pub struct Queues {
    reclaims: mpsc::UnboundedReceiver<Closed>,
    freezes: mpsc::UnboundedReceiver<String>,
    recalls: mpsc::UnboundedReceiver<u64>,
}

impl Core {
    /// A mount's core, and the receiving ends of its queues.
    pub fn new(meta: Meta, blocks: BlockStore, settings: MountSettings) -> (Arc<Core>, Queues) {
        let (reclaimer, reclaims) = Reclaimer::new();
        let (freeze, freezes) = FreezeGate::new();
        let (recalls_tx, recalls) = mpsc::unbounded_channel();
        let core = Core {
            block_size: blocks.block_size as u32,
            meta,
            blocks,
            open: OpenFiles::new(!settings.writeback),
            dirs: DirHandles::default(),
            freeze,
            reclaimer,
            write_budget: WriteBudget::new(settings.write_buffer),
            locks: LockTable::default(),
            cache: cache::MetaCache::default(),
            access_writes: atime::AccessWrites::default(),
            kernel: OnceLock::new(),
            recalls: recalls_tx,
            settings,
            tasks: Tasks::default(),
        };
        let queues = Queues {
            reclaims,
            freezes,
            recalls,
        };
        (Arc::new(core), queues)
    }

    /// Starts the tasks that work off the core's queues.
    pub fn start_workers(self: &Arc<Self>, queues: Queues) {
        let core = self.clone();
        let workers = [
            tokio::spawn(async move { core.reclaimer.run(&core.meta, queues.reclaims).await }),
            tokio::spawn(self.clone().answer_freezes(queues.freezes)),
            tokio::spawn(self.clone().write_back()),
            tokio::spawn(self.clone().replicate_in_background()),
            tokio::spawn(self.meta.clone().send_in_background()),
            tokio::spawn(self.meta.clone().delete_garbage_in_background()),
            tokio::spawn(self.clone().recaller(queues.recalls)),
        ];
        lock(&self.tasks.workers).extend(workers);
    }

    /// Runs `work`, which a request started, on `runtime`, as one of the tasks
    /// [`Core::finish_requests`] waits for.
    pub fn spawn<F>(&self, runtime: &tokio::runtime::Handle, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.started.spawn_on(work, runtime);
    }

    /// Waits until the work requests started has ended (once no request comes in any more).
    pub async fn finish_requests(&self) {
        self.tasks.started.close();
        self.tasks.started.wait().await;
    }

    /// Stops the workers and waits until they and the work they started have ended: after
    /// this, nothing of the mount sends to Redis but its caller.
    pub async fn stop_workers(&self) {
        let workers = std::mem::take(&mut *lock(&self.tasks.workers));
        for worker in &workers {
            worker.abort();
        }
        for worker in workers {
            let _ = worker.await;
        }
        self.finish_requests().await;
    }

    /// Connects the kernel's caches, so that changes by other mounts invalidate them.
    pub fn attach_kernel(&self, notifier: KernelNotifier) {
        let _ = self.kernel.set(notifier);
    }

    /// What the metrics show of this mount now: bytes written and not yet stored, and
    /// changes deferred and not yet in Redis.
    pub fn state_for_metrics(&self) -> (usize, u64) {
        (self.write_budget.used(), self.meta.delegation.waiting())
    }

    fn invalidate(&self, item: Invalidation) {
        if let Some(k) = self.kernel.get() {
            k.send(item);
        }
    }

    fn writable(&self) -> Result<(), FsError> {
        if self.settings.read_only {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// What to tell the kernel of `attr`, read (from Redis or the cache) in `epoch`: for a
    /// file open here, this mount's own view, which is newer when writes are buffered or a
    /// store of its own landed after the read began. The kernel takes a size from any reply
    /// to a request sent after its last write, and places `O_APPEND` writes there: an older
    /// size overwrote fsync'd records.
    fn current(&self, attr: Attr, epoch: u64) -> Attr {
        let Some(file) = self.open.get(attr.ino) else {
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

    /// Waits (at most `patience`) until the files this mount is done with were sent to Redis:
    /// the session's end must come after them.
    pub async fn reclaims_sent(&self, patience: Duration) {
        self.reclaimer.all_sent(patience).await;
    }

    /// Frees queued blocks of large deleted files, a batch at a time.
    pub async fn free_queued_blocks(&self) {
        self.meta.free_queued().await;
    }

    /// Sends deferred changes and stores every buffered write of every open file (freeze,
    /// unmount).
    pub async fn flush_all(&self) -> Result<(), FsError> {
        let files = self.open.all();
        let mut result = self.meta.send_deferred().await;
        if result.is_err() {
            // A send that failed while this one waited fails it too (see
            // `Meta::send_deferred`): this is the last chance, so it makes its own attempt.
            result = self.meta.send_deferred().await;
        }
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
                if let Some(f) = self.open.get(ino) {
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
                if let Some(f) = self.open.get(ino) {
                    f.state().forget_map(false);
                }
                self.open.forget_seen(Some(ino));
                let bs = i64::from(self.block_size);
                let (offset, len) = match blocks {
                    Some(range) => {
                        let (lo, hi) = range.into_inner();
                        (lo as i64 * bs, (hi - lo + 1) as i64 * bs)
                    }
                    None => (0, 0),
                };
                self.invalidate(Invalidation::Data(ino, offset, len));
            }
            Change::Freeze(token) => self.freeze.requested(token),
            Change::Thaw => self.freeze.thawed(),
            Change::Recall(dir) => {
                let _ = self.recalls.send(dir);
            }
        }
    }

    fn missed(&self) {
        self.cache.clear();
        for f in self.open.all() {
            f.state().forget_map(false);
        }
        self.open.forget_seen(None);
    }
}
