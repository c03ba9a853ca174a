//! Invalidating the kernel's caches from outside FUSE callbacks.
//!
//! A notification may wait for a kernel lock held by a request that is itself waiting for
//! redisfs, so notifications are sent from a thread of their own, never from a request.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::mpsc;

use fuser::INodeNo;

/// One thing the kernel should forget.
pub enum Invalidation {
    /// An inode's attributes.
    Attr(u64),
    /// A name in a directory.
    Entry(u64, Vec<u8>),
    /// Cached pages of an inode from `offset`, `len` bytes (0: to the end).
    Data(u64, i64, i64),
}

/// Sends invalidations to the kernel from a dedicated thread.
pub struct KernelNotifier {
    queue: mpsc::Sender<Invalidation>,
    direct: fuser::Notifier,
}

fn deliver(notifier: &fuser::Notifier, item: Invalidation) {
    // ENOENT only means the kernel does not hold what changed: nothing to drop.
    let _ = match item {
        Invalidation::Attr(ino) => notifier.inval_inode(INodeNo(ino), -1, 0),
        Invalidation::Entry(dir, name) => {
            notifier.inval_entry(INodeNo(dir), OsStr::from_bytes(&name))
        }
        Invalidation::Data(ino, offset, len) => notifier.inval_inode(INodeNo(ino), offset, len),
    };
}

impl KernelNotifier {
    /// Starts the thread that talks to the kernel through `notifier`.
    pub fn start(notifier: fuser::Notifier) -> KernelNotifier {
        let (queue, pending) = mpsc::channel::<Invalidation>();
        let direct = notifier.clone();
        let spawned = std::thread::Builder::new()
            .name("redisfs-notify".into())
            .spawn(move || {
                pending
                    .into_iter()
                    .for_each(|item| deliver(&notifier, item))
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the kernel notification thread: {e}");
        }
        KernelNotifier { queue, direct }
    }

    /// Invalidates an inode's attributes before returning. Only for tasks answering a request
    /// that holds no inode lock (open), never from a FUSE thread.
    pub fn attributes_now(&self, ino: u64) {
        deliver(&self.direct, Invalidation::Attr(ino));
    }

    /// Queues an invalidation.
    pub fn send(&self, item: Invalidation) {
        let _ = self.queue.send(item);
    }
}
