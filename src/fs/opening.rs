//! Opens and removals of one inode on this mount, kept apart, so that no open ends with a
//! handle on a deleted inode. The kernel may send an OPEN for a name it resolved just before
//! an UNLINK of it took the last link; such an open is either done looking the inode up before
//! the removal decides (and the inode then waits for its last close) or fails.
//!
//! A removal that takes the last link of an inode nothing here has open deletes it in the same
//! script (one round trip, no reclaim pass afterwards); opens of that inode wait for it.

use std::collections::{HashMap, HashSet};

use super::{lock, Core};

/// Inodes being opened (not yet registered as open) and inodes a removal may delete.
#[derive(Default)]
pub struct OpenGuard {
    opening: HashMap<u64, usize>,
    deleting: HashSet<u64>,
}

/// An open under way; dropping it (once the handle is registered) ends it.
pub struct Opening<'a> {
    core: &'a Core,
    ino: u64,
}

/// A removal allowed to delete `ino`; dropping it lets waiting opens go on.
pub struct Deleting<'a> {
    core: &'a Core,
    /// The inode the removal may delete.
    pub ino: u64,
}

impl Core {
    /// Marks an open of `ino` as under way, once no removal may be deleting it.
    pub(super) async fn opening(&self, ino: u64) -> Opening<'_> {
        loop {
            // Created before the check, so that a removal ending in between still wakes it.
            let removal_ended = self.removal_ended.notified();
            {
                let mut guard = lock(&self.open_guard);
                if !guard.deleting.contains(&ino) {
                    *guard.opening.entry(ino).or_insert(0) += 1;
                    return Opening { core: self, ino };
                }
            }
            removal_ended.await;
        }
    }

    /// Waits until no open of `ino` is under way here.
    pub(super) async fn no_open_under_way(&self, ino: u64) {
        loop {
            let open_ended = self.open_ended.notified();
            if !lock(&self.open_guard).opening.contains_key(&ino) {
                return;
            }
            open_ended.await;
        }
    }

    /// Whether an open or a removal of `ino` is under way here.
    pub(super) fn open_or_removal_under_way(&self, ino: u64) -> bool {
        let guard = lock(&self.open_guard);
        guard.opening.contains_key(&ino) || guard.deleting.contains(&ino)
    }

    /// Lets a removal delete `ino` at once, if nothing here has it open or is opening it.
    pub(super) fn deleting(&self, ino: u64) -> Option<Deleting<'_>> {
        let files = lock(&self.files);
        let mut guard = lock(&self.open_guard);
        let busy = files.contains_key(&ino) || guard.opening.contains_key(&ino);
        (!busy && guard.deleting.insert(ino)).then(|| Deleting { core: self, ino })
    }
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        let mut guard = lock(&self.core.open_guard);
        if let Some(n) = guard.opening.get_mut(&self.ino) {
            *n -= 1;
            if *n == 0 {
                guard.opening.remove(&self.ino);
            }
        }
        drop(guard);
        self.core.open_ended.notify_waiters();
    }
}

impl Drop for Deleting<'_> {
    fn drop(&mut self) {
        lock(&self.core.open_guard).deleting.remove(&self.ino);
        self.core.removal_ended.notify_waiters();
    }
}
