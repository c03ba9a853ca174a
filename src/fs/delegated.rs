//! Creates and removals in directories leased to this mount, answered on the FUSE thread and
//! sent to Redis later, in order (see [`crate::meta::deferred`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::attr::{Attr, FileKind, Timestamp};
use crate::error::FsError;
use crate::meta::deferred::Removal;

use super::ops::{check_name, new_attr, Caller};
use super::{lock, Core, OpenFile};

impl Core {
    /// Creates `parent/name` without asking Redis, when `parent` is leased here and this mount
    /// knows the name is free; `None` when the change must take the synchronous path.
    pub fn make_deferred(
        &self,
        parent: u64,
        name: &[u8],
        kind: FileKind,
        perm: u32,
        rdev: u32,
        caller: Caller,
    ) -> Option<Result<Attr, FsError>> {
        if self.settings.read_only || kind == FileKind::Symlink || check_name(name).is_err() {
            return None;
        }
        let _open = self.open_gate()?;
        let dir = self.cache.attr(parent)?;
        // A default ACL to inherit takes the synchronous path (which reads it).
        if !self.cache.absent(parent, name) || !self.cache.has_no_default_acl(parent) {
            return None;
        }
        let now = Timestamp::now();
        let mut attr = new_attr(&dir, kind, perm & !caller.umask, rdev, caller, now);
        if !self.meta.delegation.create(parent, name, &mut attr) {
            return None;
        }
        self.cache.set(Some((parent, name)), attr);
        if kind == FileKind::Dir {
            self.cache.created_dir(self.cache.names_epoch(), attr.ino);
        }
        self.stamp_dir(dir, now, i32::from(kind == FileKind::Dir));
        self.cache.created_without_xattrs(attr.ino);
        Some(Ok(attr))
    }

    /// Creates and opens a regular file without asking Redis (see [`Core::make_deferred`]).
    pub fn create_deferred(
        &self,
        parent: u64,
        name: &[u8],
        perm: u32,
        caller: Caller,
    ) -> Option<Result<(Attr, u64), FsError>> {
        let made = self.make_deferred(parent, name, FileKind::File, perm, 0, caller)?;
        Some(made.map(|attr| {
            let (fh, file) = self.attach(attr, true, self.cache.epoch());
            file.born_in.store(parent, Ordering::Release);
            (attr, fh)
        }))
    }

    /// Makes the open files created in any of `dirs` (and, with `ino`, that inode) visible
    /// to other mounts before a rename, a link or a recall could show them there: their opens
    /// are registered (a removal elsewhere keeps their data), their buffers stored now, and
    /// their closes wait for the store from now on.
    pub(super) async fn publish_born_in(&self, dirs: &[u64], ino: u64) -> Result<(), FsError> {
        let files: Vec<Arc<OpenFile>> = lock(&self.files)
            .values()
            .map(|(f, _)| f)
            .filter(|f| f.ino == ino || dirs.contains(&f.born_in.load(Ordering::Acquire)))
            .cloned()
            .collect();
        for f in files {
            f.born_in.store(0, Ordering::Release);
            if !self.settings.read_only && !f.registered.swap(true, Ordering::AcqRel) {
                // Counted in Redis whatever the order: a close already queued balances it.
                if let Err(e) = self.meta.open(f.ino, true).await {
                    f.registered.store(false, Ordering::Release);
                    return Err(e);
                }
            }
            self.flush_file(&f, false).await?;
        }
        Ok(())
    }

    /// Hands back directories other mounts recalled, for as long as the mount runs: the
    /// buffers of every open file are stored first (a close may not have waited for them, see
    /// [`Core::flush_at_once`]), then the directory's lease goes with the log's last batch.
    pub(super) async fn recaller(self: Arc<Self>, mut recalls: mpsc::UnboundedReceiver<u64>) {
        while let Some(first) = recalls.recv().await {
            let mut dirs = vec![first];
            while let Ok(dir) = recalls.try_recv() {
                dirs.push(dir);
            }
            if let Err(e) = self.publish_born_in(&dirs, 0).await {
                tracing::warn!("registering files open here before a recall failed: {e}");
            }
            let files: Vec<Arc<OpenFile>> =
                lock(&self.files).values().map(|(f, _)| f.clone()).collect();
            for f in files {
                if let Err(e) = self.flush_file(&f, false).await {
                    tracing::warn!("inode {}: storing before a recall failed: {e}", f.ino);
                }
            }
            for dir in dirs {
                self.meta.delegation.recall(dir);
            }
        }
    }

    /// Removes `parent/name` without asking Redis, when `parent` is leased here and the name
    /// is known to be the only link of a file not open (or being opened) here, or with `dir`,
    /// a leased directory known to be empty; `None` when the change must take the synchronous
    /// path.
    pub fn remove_deferred(
        &self,
        parent: u64,
        name: &[u8],
        dir: bool,
    ) -> Option<Result<(), FsError>> {
        if self.settings.read_only || check_name(name).is_err() {
            return None;
        }
        let _open = self.open_gate()?;
        let parent_attr = self.cache.attr(parent)?;
        let attr = self.cache.entry(parent, name)?;
        if (attr.kind() == FileKind::Dir) != dir || !dir && attr.nlink != 1 {
            return None;
        }
        let now = Timestamp::now();
        if let Some(_deleting) = self.deleting(attr.ino) {
            let removal = if dir { Removal::Dir } else { Removal::File };
            if !self
                .meta
                .delegation
                .remove(parent, name, attr.ino, removal, now)
            {
                return None;
            }
        } else if dir || !self.remove_held(parent, name, attr.ino, now) {
            return None;
        }
        self.cache.removed(parent, name);
        self.cache.forget_attr(attr.ino);
        self.stamp_dir(parent_attr, now, -i32::from(dir));
        Some(Ok(()))
    }

    /// Defers the removal of the last link of `ino`, a file open here that was created in
    /// `parent`: this session holds it until its last close. Under the table of open files,
    /// where a last close takes the file out, so that the close sees it orphaned.
    fn remove_held(&self, parent: u64, name: &[u8], ino: u64, now: Timestamp) -> bool {
        let files = lock(&self.files);
        // A file kept only for data its close could not store (no handles) is no longer open:
        // the synchronous removal drops that data (see `Core::orphaned`).
        let Some((file, _)) = files.get(&ino).filter(|(_, handles)| *handles > 0) else {
            return false;
        };
        if file.born_in.load(Ordering::Acquire) != parent || self.open_or_removal_under_way(ino) {
            return false;
        }
        if !self
            .meta
            .delegation
            .remove(parent, name, ino, Removal::HeldFile, now)
        {
            return false;
        }
        let mut st = file.state();
        st.orphaned = true;
        st.attr.nlink = 0;
        st.attr.ctime = now;
        true
    }

    /// Caches the attributes of a directory (`attr` as cached before) after this mount
    /// created or removed an entry in it at `now`, adding `subdirs` subdirectories (or
    /// removing them): the same change its script or log entry makes in Redis.
    pub(super) fn stamp_dir(&self, mut attr: Attr, now: Timestamp, subdirs: i32) {
        attr.nlink = attr.nlink.saturating_add_signed(subdirs);
        (attr.mtime, attr.ctime) = (now, now);
        self.cache.set(None, attr);
    }
}
