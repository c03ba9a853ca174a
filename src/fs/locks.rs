//! File locks shared by every mount: fcntl byte-range locks, and flock as whole-file locks.
//!
//! A blocking request waits in a task, polling Redis with back-off, so no FUSE thread is held;
//! fuser answers the kernel's interrupts itself, so the wait watches the requesting process
//! for a pending signal and answers EINTR then.

use std::time::Duration;

use crate::error::FsError;
use crate::meta::{LockFamily, LockState};

use super::{lock, Core};

/// Lock kind meaning "unlock" (F_UNLCK on Linux).
const UNLOCK: i32 = libc::F_UNLCK;

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

impl Core {
    /// F_GETLK: a lock that would conflict with the one described, if any.
    pub async fn getlk(&self, l: Lock) -> Result<LockState, FsError> {
        self.ask(l, true).await
    }

    /// Tests (`test`: F_GETLK) or takes the lock `l` once, without waiting.
    async fn ask(&self, l: Lock, test: bool) -> Result<LockState, FsError> {
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
        loop {
            match self.ask(l, false).await {
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
                        lock(&self.lock_holders).insert((l.ino, l.owner), fh);
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Releases every lock `owner` holds on `ino` (at close), if it holds any.
    pub async fn release_locks(&self, ino: u64, owner: u64) -> Result<(), FsError> {
        if lock(&self.lock_holders).remove(&(ino, owner)).is_none() {
            return Ok(());
        }
        self.unlock_all(ino, owner).await
    }

    /// Releases the locks taken through handle `fh` of `ino`, at its last close. Those of a
    /// process went at its close(2) already (the flush before); what is left are the open
    /// file description's own: OFD locks, and flock.
    pub async fn release_handle_locks(&self, ino: u64, fh: u64) -> Result<(), FsError> {
        let mut owners = Vec::new();
        lock(&self.lock_holders).retain(|&(i, owner), &mut through| {
            let goes = i == ino && through == fh;
            if goes {
                owners.push(owner);
            }
            !goes
        });
        for owner in owners {
            self.unlock_all(ino, owner).await?;
        }
        Ok(())
    }

    /// Whether `owner` may hold a lock on `ino`, or one may have been taken through handle
    /// `fh` of it.
    pub(super) fn may_hold_locks(&self, ino: u64, fh: Option<u64>, owner: Option<u64>) -> bool {
        lock(&self.lock_holders)
            .iter()
            .any(|(&(i, o), &through)| i == ino && (Some(through) == fh || Some(o) == owner))
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
