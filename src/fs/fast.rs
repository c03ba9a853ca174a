//! Answers that need nothing but this mount's memory, given on the FUSE thread itself: a task
//! hand-off and two thread switches cost more than the work (a cached look-up, a close with
//! nothing to store).

use super::Core;
use crate::attr::Attr;
use crate::error::FsError;

impl Core {
    /// A look-up answered from the name cache: known (`Ok`), known absent (`NotFound`), or
    /// `None` when Redis must be asked.
    pub fn lookup_cached(&self, parent: u64, name: &[u8]) -> Option<Result<Attr, FsError>> {
        if name == b"." || name == b".." || super::ops::check_name(name).is_err() {
            return None;
        }
        let epoch = self.cache.epoch();
        if let Some(attr) = self.cache.entry(parent, name) {
            return Some(Ok(self.current(attr, epoch)));
        }
        self.cache
            .absent(parent, name)
            .then_some(Err(FsError::NotFound))
    }

    /// Attributes of an inode not open here, if remembered.
    pub fn getattr_cached(&self, ino: u64) -> Option<Attr> {
        if self.open_file(ino).is_some() {
            return None;
        }
        self.cache.attr(ino)
    }

    /// Whether `ino` is known to have no extended attributes (a look-up of one is `ENODATA`).
    pub fn xattr_known_absent(&self, ino: u64) -> bool {
        self.cache.has_no_xattrs(ino)
    }

    /// Whether closing `fh` (for lock owner `owner`; at its `last` close, also what was locked
    /// through it) has nothing to unlock, and nothing to store unless `store_later` lets the
    /// file's store wait.
    fn closes_quietly(
        &self,
        fh: u64,
        ino: u64,
        owner: Option<u64>,
        last: bool,
        store_later: impl FnOnce(&super::OpenFile) -> bool,
    ) -> bool {
        !self.locks.may_hold(ino, last.then_some(fh), owner)
            && self
                .file(fh)
                .is_ok_and(|f| !f.state().has_pending() || store_later(&f))
    }

    /// A flush with nothing to store or unlock: done. So is one of a file no other mount can
    /// open yet (created in a directory leased here, with one link, or none left): its
    /// buffers are stored at its release, which close(2) does not wait for (or dropped there,
    /// if it has no link), or before another mount recalls the directory, or at a freeze,
    /// `fsync`, an open or unmount.
    pub fn flush_at_once(&self, fh: u64, ino: u64, owner: u64) -> Option<Result<(), FsError>> {
        let private = |f: &super::OpenFile| self.born_leased(f) && f.state().attr.nlink <= 1;
        self.closes_quietly(fh, ino, Some(owner), false, private)
            .then_some(Ok(()))
    }

    /// A release with nothing to store or unlock, done here.
    pub fn release_at_once(
        &self,
        fh: u64,
        ino: u64,
        owner: Option<u64>,
    ) -> Option<Result<(), FsError>> {
        if !self.closes_quietly(fh, ino, owner, true, |_| false) {
            return None;
        }
        Some(self.detached(fh, Ok(())))
    }
}
