//! File locks shared by every mount: fcntl byte-range locks, and flock as whole-file locks.
//!
//! A blocking request waits in a task, polling Redis with back-off, so no FUSE thread is held;
//! fuser answers the kernel's interrupts itself, so the wait watches the requesting process
//! for a pending signal and answers EINTR then.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use crate::error::FsError;
use crate::meta::{LockFamily, LockState};

use crate::fs::{lock, Core};

/// Lock kind meaning "unlock" (F_UNLCK on Linux).
const UNLOCK: i32 = libc::F_UNLCK;
/// How long a lock request refused because of a lock of this mount's own waits before asking
/// once more: long enough for another FUSE thread to begin a release it has read.
const OWN_RELEASE_GRACE: Duration = Duration::from_millis(2);

/// A lock's last byte as the kernel sends it; ends past what Lua counts exactly mean "to the end".
fn last_byte(end: u64) -> Option<u64> {
    (end < 1 << 52).then_some(end)
}

/// Whether thread `tid` has a signal pending that it neither blocks nor ignores (a dying
/// process's threads have SIGKILL pending).
fn signal_pending(tid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        // The thread is gone: nobody waits any more.
        return true;
    };
    let mask = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let pending = mask("SigPnd:") | mask("ShdPnd:");
    pending & !mask("SigBlk:") & !mask("SigIgn:") != 0
}

/// A lock as a request describes it.
#[derive(Clone, Copy, Debug)]
pub struct Lock {
    /// The locked file.
    pub ino: u64,
    /// Who holds it: a process's files, or an open file description (flock, OFD locks).
    pub owner: u64,
    /// First byte.
    pub start: u64,
    /// Last byte, as the kernel sends it.
    pub end: u64,
    /// F_RDLCK, F_WRLCK or F_UNLCK.
    pub kind: i32,
    /// The holding process, as F_GETLK reports it.
    pub pid: u32,
    /// An fcntl or a flock lock.
    pub family: LockFamily,
}

impl Lock {
    /// The fcntl lock a request describes: `range` is its first and last byte.
    pub fn asked(ino: u64, owner: u64, range: (u64, u64), kind: i32, pid: u32) -> Lock {
        let (start, end) = range;
        Lock {
            ino,
            owner,
            start,
            end,
            kind,
            pid,
            family: LockFamily::Fcntl,
        }
    }

    /// The flock a request describes (a lock of the whole file).
    pub fn flock(ino: u64, owner: u64, kind: i32, pid: u32) -> Lock {
        Lock {
            family: LockFamily::Flock,
            ..Lock::asked(ino, owner, (0, u64::MAX), kind, pid)
        }
    }
}

/// What this mount knows of the locks its handles hold.
///
/// The kernel sends a description's last close (RELEASE) after close(2) has returned, so a
/// lock asked for right after it reaches the mount while the closed description's locks are
/// still in Redis. RELEASE arrives first, though: the FUSE thread that reads it marks its
/// inode as releasing at once, and lock requests on that inode wait until the release is
/// done. That also keeps a release from unlocking a new description that reuses the closed
/// one's owner id (the kernel's file structures are reused at once). fuser reads requests on
/// several threads, though, so a lock request read just after a RELEASE can run before the
/// thread that read the RELEASE marks the inode: a request refused while this mount itself
/// holds another lock on the inode asks once more, after a grace of a few milliseconds. What
/// is left: a RELEASE the kernel holds back behind `max_background` requests.
#[derive(Default)]
pub struct LockTable {
    /// (inode, lock owner) pairs that may hold locks, with the handle the last lock was taken
    /// through, so that a close without locks costs no round trip, and the last close of an
    /// open file description drops the OFD locks taken through it.
    holders: Mutex<HashMap<(u64, u64), u64>>,
    /// Inodes with releases under way, and how many.
    releasing: Mutex<HashMap<u64, usize>>,
    /// Woken when a release ends.
    released: Notify,
}

/// The locks a close must release, taken out of the table on the FUSE thread.
#[must_use]
pub struct Release {
    ino: u64,
    owners: Vec<u64>,
}

impl LockTable {
    /// Whether `owner` may hold a lock on `ino`, or one may have been taken through handle
    /// `fh` of it.
    pub fn may_hold(&self, ino: u64, fh: Option<u64>, owner: Option<u64>) -> bool {
        lock(&self.holders)
            .iter()
            .any(|(&(i, o), &through)| i == ino && (Some(through) == fh || Some(o) == owner))
    }

    /// Whether an owner other than `owner` may hold a lock on `ino` through this mount.
    fn held_by_another_here(&self, ino: u64, owner: u64) -> bool {
        lock(&self.holders)
            .keys()
            .any(|&(i, o)| i == ino && o != owner)
    }

    /// Starts releasing what `owner` holds on `ino`, and (at a last close, `fh`) what was
    /// locked through handle `fh`; lock requests on `ino` wait until [`Core::finish_release`].
    pub fn begin_release(&self, ino: u64, fh: Option<u64>, owner: Option<u64>) -> Release {
        let mut owners = Vec::new();
        lock(&self.holders).retain(|&(i, o), &mut through| {
            let goes = i == ino && (Some(through) == fh || Some(o) == owner);
            if goes {
                owners.push(o);
            }
            !goes
        });
        if !owners.is_empty() {
            *lock(&self.releasing).entry(ino).or_default() += 1;
        }
        Release { ino, owners }
    }

    fn end_release(&self, ino: u64) {
        let mut releasing = lock(&self.releasing);
        if let Some(count) = releasing.get_mut(&ino) {
            *count -= 1;
            if *count == 0 {
                releasing.remove(&ino);
            }
        }
        drop(releasing);
        self.released.notify_waiters();
    }

    /// Waits until no release of `ino`'s locks is under way.
    async fn settled(&self, ino: u64) {
        loop {
            let released = self.released.notified();
            if !lock(&self.releasing).contains_key(&ino) {
                return;
            }
            released.await;
        }
    }

    fn remember(&self, ino: u64, owner: u64, fh: u64) {
        lock(&self.holders).insert((ino, owner), fh);
    }
}

impl Core {
    /// F_GETLK: a lock that would conflict with the one described, if any.
    pub async fn getlk(&self, l: Lock) -> Result<LockState, FsError> {
        self.ask(l, true).await
    }

    /// Tests (`test`: F_GETLK) or takes the lock `l` once, without waiting.
    async fn ask(&self, l: Lock, test: bool) -> Result<LockState, FsError> {
        self.locks.settled(l.ino).await;
        let end = last_byte(l.end);
        self.meta
            .lock(
                l.ino,
                (l.owner, l.family),
                l.kind,
                l.start,
                end,
                l.pid,
                test,
            )
            .await
    }

    /// F_SETLK / F_SETLKW / flock: takes or releases a lock through handle `fh`. With
    /// `wait_for` (the asking thread), waits for it until that thread is signalled.
    pub async fn setlk(&self, l: Lock, fh: u64, wait_for: Option<u32>) -> Result<(), FsError> {
        let mut delay = Duration::from_millis(2);
        let mut graced = false;
        loop {
            match self.ask(l, false).await {
                // The lock in the way may be this mount's own, of a description whose last
                // close another FUSE thread has read but not begun (see `LockTable`).
                Err(FsError::Again)
                    if wait_for.is_none()
                        && !graced
                        && self.locks.held_by_another_here(l.ino, l.owner) =>
                {
                    graced = true;
                    tokio::time::sleep(OWN_RELEASE_GRACE).await;
                }
                Err(FsError::Again) if wait_for.is_some() => {
                    if wait_for.is_some_and(signal_pending) {
                        return Err(FsError::Interrupted);
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
                Ok(_) => {
                    if l.kind != UNLOCK {
                        self.locks.remember(l.ino, l.owner, fh);
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Unlocks what `release` took out of the lock table (see [`LockTable::begin_release`]).
    pub async fn finish_release(&self, release: Release) -> Result<(), FsError> {
        let mut result = Ok(());
        for &owner in &release.owners {
            result = result.and(self.unlock_all(release.ino, owner).await);
        }
        if !release.owners.is_empty() {
            self.locks.end_release(release.ino);
        }
        result
    }

    async fn unlock_all(&self, ino: u64, owner: u64) -> Result<(), FsError> {
        self.meta
            .lock(ino, (owner, LockFamily::Both), UNLOCK, 0, None, 0, false)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_past_lua_precision_mean_no_end() {
        assert_eq!(last_byte(i64::MAX as u64), None);
        assert_eq!(last_byte(99), Some(99));
    }

    #[test]
    fn own_process_has_no_pending_signal_and_a_dead_one_counts_as_interrupted() {
        assert!(!signal_pending(std::process::id()));
        assert!(signal_pending(u32::MAX));
    }
}
