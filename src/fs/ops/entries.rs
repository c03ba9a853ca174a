//! Names: look-ups, creates, removals, renames, links and symlinks. In a directory leased to
//! this mount, creates and removals are answered on the FUSE thread and sent to Redis later,
//! in order (see [`crate::meta::deferred`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::attr::{Attr, FileKind, Timestamp};
use crate::error::FsError;
use crate::meta::deferred::Removal;

use super::{check_name, Caller, NewInode};
use crate::fs::acl::{self, Acl};
use crate::fs::Core;

/// Longest symlink target.
const PATH_MAX: usize = 4095;

/// The attributes of a new inode of `kind` in directory `dir`, made at `now`. In a set-group-ID
/// directory, new entries take the directory's group, and new directories its set-group-ID
/// bit (the kernel has taken that bit off new files a caller outside the group creates).
fn new_attr(dir: &Attr, new: &NewInode, perm: u32, now: Timestamp) -> Attr {
    let (kind, caller) = (new.kind, new.caller);
    let mut attr = Attr::new(kind, perm, caller.uid, caller.gid, now);
    if dir.mode & libc::S_ISGID != 0 {
        attr.gid = dir.gid;
        if kind == FileKind::Dir {
            attr.mode |= libc::S_ISGID;
        }
    }
    match kind {
        FileKind::Dir => attr.parent = dir.ino,
        FileKind::CharDevice | FileKind::BlockDevice => attr.rdev = new.rdev,
        _ => {}
    }
    attr
}

/// The ACLs a new inode inherits from its directory's default ACL: access, default.
type Inherited = (Option<Acl>, Option<Acl>);

impl Core {
    /// A look-up answered from the name cache: known (`Ok`), known absent (`NotFound`), or
    /// `None` when Redis must be asked.
    pub fn lookup_cached(&self, parent: u64, name: &[u8]) -> Option<Result<Attr, FsError>> {
        if name == b"." || name == b".." || check_name(name).is_err() {
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

    /// Resolves a name.
    pub async fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr, FsError> {
        check_name(name)?;
        match name {
            b"." => self.getattr(parent).await,
            b".." => {
                let dir = self.getattr(parent).await?;
                self.getattr(dir.parent).await
            }
            _ => {
                if let Some(known) = self.lookup_cached(parent, name) {
                    return known;
                }
                let epoch = self.cache.epoch();
                let attr = self.meta.lookup(parent, name).await?;
                self.cache.remember(epoch, Some((parent, name)), attr);
                Ok(self.current(attr, epoch))
            }
        }
    }
}

impl Core {
    /// Creates an inode of any kind; for a regular file this mount is `opening`, also says
    /// whether the open was registered with it (not when the create was deferred).
    pub async fn make(
        &self,
        parent: u64,
        name: &[u8],
        new: NewInode<'_>,
        opening: bool,
    ) -> Result<(Attr, bool), FsError> {
        self.writable()?;
        check_name(name)?;
        let dir = self.getattr(parent).await?;
        let (acls, perm) = self.creation_mode(parent, new).await?;
        let mut attr = new_attr(&dir, &new, perm, Timestamp::now());
        let (kind, target) = (new.kind, new.target);
        if kind == FileKind::Symlink {
            if target.len() > PATH_MAX {
                return Err(FsError::NameTooLong);
            }
            attr.size = target.len() as u64;
        }
        if self.meta.delegation.holds(parent) && self.meta.delegation.out_of_inos() {
            // The range of inode numbers ran out: reserve more and defer after all.
            self.meta.reserve_inos().await?;
            if let Some(done) = self.make_deferred(parent, name, NewInode { perm, ..new }) {
                return done.map(|attr| (attr, false));
            }
        }
        let names_epoch = self.cache.names_epoch();
        let epoch = self.cache.epoch();
        let (created, dir) = self
            .meta
            .create(parent, name, &attr, target, opening)
            .await
            .inspect_err(|_| self.cache.forget_name(parent, name))?;
        // Kept rather than forgotten: the next create here needs the directory's mode and group.
        self.cache.replace(epoch, dir);
        // A change of this mount's own, as a deferred create is: it moves the epoch past what
        // a listing taken before may reuse (see `Core::recent_listing`).
        self.cache.set(Some((parent, name)), created);
        if kind == FileKind::Dir {
            self.cache.created_dir(names_epoch, created.ino);
        }
        self.give_acls(created.ino, acls).await?;
        Ok((created, opening))
    }

    /// The permission bits of a new inode of `kind` asking for `perm` in directory `parent`,
    /// with the ACLs it inherits (access, then default): the directory's default ACL decides
    /// if it has one, the caller's umask otherwise.
    async fn creation_mode(
        &self,
        parent: u64,
        new: NewInode<'_>,
    ) -> Result<(Inherited, u32), FsError> {
        let (kind, perm) = (new.kind, new.perm);
        let default_acl = match kind {
            FileKind::Symlink => None,
            _ => self.default_acl(parent).await?,
        };
        Ok(match default_acl {
            Some(inherited) => {
                let (access, perm) = inherited.inherit(perm);
                let default = (kind == FileKind::Dir).then_some(inherited);
                ((access, default), perm)
            }
            None => ((None, None), perm & !new.caller.umask),
        })
    }

    /// Writes the ACLs a new inode inherited.
    async fn give_acls(&self, ino: u64, (access, default): Inherited) -> Result<(), FsError> {
        if access.is_none() && default.is_none() {
            self.cache.created_without_xattrs(ino);
        }
        for (name, acl) in [(acl::ACCESS, access), (acl::DEFAULT, default)] {
            if let Some(acl) = acl {
                self.meta.xattr_set(ino, name, &acl.encode(), 0).await?;
            }
        }
        Ok(())
    }

    /// Creates and opens an unnamed file in `parent` (`O_TMPFILE`): no link, so its last close
    /// deletes it, unless `linkat` names it first.
    pub async fn tmpfile(
        &self,
        parent: u64,
        perm: u32,
        caller: Caller,
    ) -> Result<(Attr, u64), FsError> {
        self.writable()?;
        let dir = self.getattr(parent).await?;
        let new = NewInode::new(FileKind::File, perm, 0, caller);
        let (acls, perm) = self.creation_mode(parent, new).await?;
        let attr = new_attr(&dir, &new, perm, Timestamp::now());
        let generation = self.node_in_use();
        let attr = self.meta.tmpfile(parent, &attr).await?;
        self.give_acls(attr.ino, acls).await?;
        self.cache.forget_attr(parent);
        let (fh, file) = self.attach(attr, true, self.cache.epoch(), generation);
        let mut st = file.state();
        st.orphaned = true;
        st.unnamed = true;
        Ok((attr, fh))
    }

    /// Creates and opens a regular file; without `exclusive` (`O_EXCL`), a name that exists
    /// after all is opened instead.
    pub async fn create(
        &self,
        parent: u64,
        name: &[u8],
        perm: u32,
        caller: Caller,
        exclusive: bool,
    ) -> Result<(Attr, u64), FsError> {
        let generation = self.node_in_use();
        let made = self
            .make(
                parent,
                name,
                NewInode::new(FileKind::File, perm, 0, caller),
                true,
            )
            .await;
        let (attr, registered) = match made {
            // The kernel creates a name this mount said was absent: one made elsewhere whose
            // event had not arrived yet. The open must open what is there, with the checks
            // and O_TRUNC of an open: ESTALE makes the kernel look the name up again (in
            // Redis: `make` marked it uncertain) and retry the open.
            Err(FsError::Exists) if !exclusive => return Err(FsError::Stale),
            made => made?,
        };
        let (fh, file) = self.attach(attr, true, self.cache.epoch(), generation);
        if registered {
            file.registered.store(true, Ordering::Release);
        } else {
            file.born_in.store(parent, Ordering::Release);
        }
        Ok((attr, fh))
    }

    /// Creates `parent/name` without asking Redis, when `parent` is leased here and this mount
    /// knows the name is free; `None` when the change must take the synchronous path.
    pub fn make_deferred(
        &self,
        parent: u64,
        name: &[u8],
        new: NewInode<'_>,
    ) -> Option<Result<Attr, FsError>> {
        let kind = new.kind;
        if self.settings.read_only || kind == FileKind::Symlink || check_name(name).is_err() {
            return None;
        }
        let _open = self.freeze.try_pass()?;
        let dir = self.cache.attr(parent)?;
        // A default ACL to inherit takes the synchronous path (which reads it).
        if !self.cache.absent(parent, name) || !self.cache.has_no_default_acl(parent) {
            return None;
        }
        let now = Timestamp::now();
        let mut attr = new_attr(&dir, &new, new.perm & !new.caller.umask, now);
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
        let generation = self.node_in_use();
        let made =
            self.make_deferred(parent, name, NewInode::new(FileKind::File, perm, 0, caller))?;
        Some(made.map(|attr| {
            let (fh, file) = self.attach(attr, true, self.cache.epoch(), generation);
            file.born_in.store(parent, Ordering::Release);
            (attr, fh)
        }))
    }
}

impl Core {
    /// Unlinks a file or removes an empty directory.
    pub async fn remove(&self, parent: u64, name: &[u8], dir: bool) -> Result<(), FsError> {
        self.writable()?;
        check_name(name)?;
        // An inode not open here is deleted by the removal itself when it takes the last link
        // (directories are never open in that sense: the kernel ends reads of a removed one).
        let deleting = self
            .cache
            .entry(parent, name)
            .and_then(|attr| self.open.deleting(attr.ino));
        let closed = deleting.as_ref().map_or(0, |d| d.ino);
        let before = self.cache.attr(parent);
        let now = Timestamp::now();
        let (ino, orphaned) = self
            .meta
            .remove(parent, name, dir, closed, now)
            .await
            .inspect_err(|_| self.cache.forget_name(parent, name))?;
        drop(deleting);
        self.cache.removed(parent, name);
        // A directory leased here changes only through this mount: forgetting its attributes
        // would send every later create or removal in it (rm -rf of files still being closed)
        // the synchronous way.
        match before.filter(|_| self.meta.delegation.holds(parent)) {
            Some(attr) => self.stamp_dir(attr, now, -i32::from(dir)),
            None => self.cache.forget_attr(parent),
        }
        self.cache.forget_attr(ino);
        if orphaned {
            self.orphaned(ino).await;
        }
        Ok(())
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
        let _open = self.freeze.try_pass()?;
        let parent_attr = self.cache.attr(parent)?;
        let attr = self.cache.entry(parent, name)?;
        if (attr.kind() == FileKind::Dir) != dir || !dir && attr.nlink != 1 {
            return None;
        }
        let now = Timestamp::now();
        if let Some(_deleting) = self.open.deleting(attr.ino) {
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
    /// where a last close takes the file out, so that the close sees it orphaned. (A file kept
    /// only for data its close could not store, without handles, is no longer open: the
    /// synchronous removal drops that data, see [`Core::orphaned`].)
    fn remove_held(&self, parent: u64, name: &[u8], ino: u64, now: Timestamp) -> bool {
        self.open.while_open(ino, |file| {
            if file.born_in.load(Ordering::Acquire) != parent
                || self.open.open_or_removal_under_way(ino)
                || !self
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
        })
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

impl Core {
    /// Renames; with RENAME_WHITEOUT (overlayfs on an upper directory here), leaves a
    /// whiteout, a character device 0:0 made by `caller`, where the source was.
    pub async fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        flags: u32,
        caller: Caller,
    ) -> Result<(), FsError> {
        self.writable()?;
        check_name(name)?;
        check_name(new_name)?;
        let known = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE | libc::RENAME_WHITEOUT;
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if flags & !known != 0
            || exchange && flags & (libc::RENAME_NOREPLACE | libc::RENAME_WHITEOUT) != 0
        {
            return Err(FsError::Invalid);
        }
        let whiteout = flags & libc::RENAME_WHITEOUT != 0;
        let flags = flags & !libc::RENAME_WHITEOUT;
        self.publish_born_in(&[parent, new_parent], 0).await?;
        // (Also where the rename's reply is lost: see `Meta::rename`.)
        for (dir, name) in [(parent, name), (new_parent, new_name)] {
            if let Some(moving) = self.cache.named(dir, name) {
                self.meta.delegation.moved(moving);
            }
        }
        let (victim, touched) = self
            .meta
            .rename((parent, name), (new_parent, new_name), flags)
            .await
            .inspect_err(|_| {
                self.cache.forget_name(parent, name);
                self.cache.forget_name(new_parent, new_name);
            })?;
        if flags & libc::RENAME_EXCHANGE != 0 {
            self.cache.forget_name(parent, name);
        } else {
            self.cache.removed(parent, name);
        }
        self.cache.forget_name(new_parent, new_name);
        for ino in [parent, new_parent].into_iter().chain(touched) {
            self.cache.forget_attr(ino);
        }
        if let Some(victim) = victim {
            self.orphaned(victim).await;
        }
        if whiteout {
            let kind = FileKind::CharDevice;
            self.make(parent, name, NewInode::new(kind, 0, 0, caller), false)
                .await?;
        }
        Ok(())
    }

    /// Adds a hard link.
    pub async fn link(&self, ino: u64, parent: u64, name: &[u8]) -> Result<Attr, FsError> {
        self.writable()?;
        check_name(name)?;
        // (An unnamed file is registered open here first: named, it is held no more.)
        self.publish_born_in(&[], ino).await?;
        let open = self.open.get(ino);
        let unnamed = open.as_ref().is_some_and(|f| f.state().unnamed);
        // The reply is applied to the open file below: it takes turns with the file's
        // commits, as a change of attributes does (see `Core::change_attrs`).
        let _in_order = match &open {
            Some(f) => Some(f.commit_lock.lock().await),
            None => None,
        };
        // On any failure (a lost reply too) the name's state is unknown here.
        let attr = self
            .meta
            .link(ino, parent, name, unnamed)
            .await
            .inspect_err(|_| self.cache.forget_name(parent, name))?;
        self.cache.forget_name(parent, name);
        self.cache.forget_attr(parent);
        self.cache.forget_attr(ino);
        match &open {
            Some(f) => {
                let mut st = f.state();
                st.refresh(attr);
                if unnamed {
                    st.unnamed = false;
                    st.orphaned = false;
                }
                Ok(st.attr)
            }
            None => Ok(attr),
        }
    }

    /// A symlink's target.
    pub async fn readlink(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        self.meta.readlink(ino).await
    }

    /// Makes the open files created in any of `dirs` (and, with `ino`, that inode) visible
    /// to other mounts before a rename, a link or a recall could show them there: their opens
    /// are registered (a removal elsewhere keeps their data), their buffers stored now, and
    /// their closes wait for the store from now on.
    pub(super) async fn publish_born_in(&self, dirs: &[u64], ino: u64) -> Result<(), FsError> {
        // Chosen all at once: a recall clearing a file's mark while an earlier one is stored
        // must not make this skip it.
        let files: Vec<_> = self
            .open
            .all()
            .into_iter()
            .filter(|f| f.ino == ino || dirs.contains(&f.born_in.load(Ordering::Acquire)))
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
    pub(in crate::fs) async fn recaller(
        self: Arc<Self>,
        mut recalls: mpsc::UnboundedReceiver<u64>,
    ) {
        while let Some(first) = recalls.recv().await {
            let mut dirs = vec![first];
            while let Ok(dir) = recalls.try_recv() {
                dirs.push(dir);
            }
            if let Err(e) = self.publish_born_in(&dirs, 0).await {
                tracing::warn!("registering files open here before a recall failed: {e}");
            }
            for f in self.open.all() {
                if let Err(e) = self.flush_file(&f, false).await {
                    tracing::warn!("inode {}: storing before a recall failed: {e}", f.ino);
                }
            }
            for dir in dirs {
                self.meta.delegation.recall(dir);
            }
        }
    }
}
