//! File locks shared by every mount: fcntl byte-range locks, and flock as whole-file locks.
//!
//! A blocking request waits in a task, polling Redis with back-off, so no FUSE thread is held;
//! fuser answers the kernel's interrupts itself, so the wait watches the requesting process
//! for a pending signal and answers EINTR then.

use std::time::Duration;

use crate::error::FsError;
use crate::meta::LockState;

use super::{lock, Core};

/// Lock kind meaning "unlock" (F_UNLCK on Linux).
const UNLOCK: i32 = libc::F_UNLCK;

/// A lock's last byte as the kernel sends it; ends past what Lua counts exactly mean "to the end".
fn last_byte(end: u64) -> Option<u64> {
    (end < 1 << 52).then_some(end)
}

/// Whether process `pid` has a signal pending that it neither blocks nor ignores.
fn signal_pending(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        // The process is gone: nobody waits any more.
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

impl Core {
    /// F_GETLK: a lock that would conflict with the one described, if any.
    pub async fn getlk(
        &self,
        ino: u64,
        owner: u64,
        start: u64,
        end: u64,
        kind: i32,
        pid: u32,
    ) -> Result<LockState, FsError> {
        self.meta
            .lock(ino, owner, kind, start, last_byte(end), pid, true)
            .await
    }

    /// F_SETLK / F_SETLKW / flock: takes or releases a lock, waiting for it with `wait`.
    #[allow(clippy::too_many_arguments)]
    pub async fn setlk(
        &self,
        ino: u64,
        owner: u64,
        start: u64,
        end: u64,
        kind: i32,
        pid: u32,
        wait: bool,
    ) -> Result<(), FsError> {
        let mut delay = Duration::from_millis(2);
        loop {
            match self
                .meta
                .lock(ino, owner, kind, start, last_byte(end), pid, false)
                .await
            {
                Err(FsError::Again) if wait => {
                    if signal_pending(pid) {
                        return Err(FsError::Interrupted);
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
                Ok(_) => {
                    if kind != UNLOCK {
                        lock(&self.lock_holders).insert((ino, owner));
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Releases every lock `owner` holds on `ino` (at close), if it holds any.
    pub async fn release_locks(&self, ino: u64, owner: u64) -> Result<(), FsError> {
        if !lock(&self.lock_holders).remove(&(ino, owner)) {
            return Ok(());
        }
        self.meta
            .lock(ino, owner, UNLOCK, 0, None, 0, false)
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
