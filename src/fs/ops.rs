//! The operations of [`Core`], one async function each.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::attr::{Attr, FileKind, Timestamp};
use crate::error::FsError;
use crate::meta::{AttrChange, Closed, Usage};

use super::acl::{self, Acl};
use super::{Backlog, Core, OpenFile, MAX_FILE_SIZE};

/// Longest name in a directory.
pub const NAME_MAX: usize = 255;
/// Longest symlink target.
const PATH_MAX: usize = 4095;
/// Largest extended attribute value (as Linux's XATTR_SIZE_MAX).
const XATTR_SIZE_MAX: usize = 65536;
/// Copy granularity of copy_file_range.
const COPY_CHUNK: u64 = 1 << 20;

pub(super) fn check_name(name: &[u8]) -> Result<(), FsError> {
    if name.len() > NAME_MAX {
        Err(FsError::NameTooLong)
    } else {
        Ok(())
    }
}

/// The attributes of a new inode of `kind` in directory `dir`, made at `now`. In a set-group-ID
/// directory, new entries take the directory's group, and new directories its set-group-ID
/// bit (the kernel has taken that bit off new files a caller outside the group creates).
pub(super) fn new_attr(
    dir: &Attr,
    kind: FileKind,
    perm: u32,
    rdev: u32,
    caller: Caller,
    now: Timestamp,
) -> Attr {
    let mut attr = Attr::new(kind, perm, caller.uid, caller.gid, now);
    if dir.mode & libc::S_ISGID != 0 {
        attr.gid = dir.gid;
        if kind == FileKind::Dir {
            attr.mode |= libc::S_ISGID;
        }
    }
    match kind {
        FileKind::Dir => attr.parent = dir.ino,
        FileKind::CharDevice | FileKind::BlockDevice => attr.rdev = rdev,
        _ => {}
    }
    attr
}

/// The ACLs a new inode inherits from its directory's default ACL: access, default.
type Inherited = (Option<Acl>, Option<Acl>);

/// Who asks for an operation.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// The asking thread.
    pub pid: u32,
    /// For a create: the permission bits to take away, unless the directory has a default
    /// ACL (then that decides).
    pub umask: u32,
}

impl Caller {
    /// Whether the caller belongs to group `gid`: its own, or one of its supplementary groups.
    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid
            || std::fs::read_to_string(format!("/proc/{}/status", self.pid)).is_ok_and(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Groups:"))
                    .is_some_and(|g| g.split_whitespace().any(|g| g.parse() == Ok(gid)))
            })
    }
}

/// The mode a change of a regular file's data (a write, `fallocate`, a truncate) by `caller`
/// leaves, as on a local filesystem: set-user-ID goes, and set-group-ID if group-execute is set
/// or the caller is outside the file's group; the superuser (CAP_FSETID) keeps both. (The
/// kernel's FUSE side drops set-group-ID only with group-execute: the rest is done here.)
fn mode_after_data_change(attr: &Attr, caller: &Caller) -> u32 {
    let set_id = libc::S_ISUID | libc::S_ISGID;
    if caller.uid == 0 || attr.kind() != FileKind::File || attr.mode & set_id == 0 {
        return attr.mode;
    }
    let mut mode = attr.mode & !libc::S_ISUID;
    if mode & libc::S_ISGID != 0 && (mode & libc::S_IXGRP != 0 || !caller.in_group(attr.gid)) {
        mode &= !libc::S_ISGID;
    }
    mode
}

/// The answer to getxattr/listxattr: a size probe or the bytes.
pub enum XattrReply {
    /// The caller asked for the size only.
    Size(u32),
    /// The value (or the NUL-separated names).
    Data(Vec<u8>),
}

fn xattr_reply(bytes: Vec<u8>, size: u32) -> Result<XattrReply, FsError> {
    if size == 0 {
        Ok(XattrReply::Size(bytes.len() as u32))
    } else if bytes.len() > size as usize {
        Err(FsError::Range)
    } else {
        Ok(XattrReply::Data(bytes))
    }
}

/// Granularity of the holes SEEK_HOLE reports: the page size programs copy sparse files in.
const HOLE_GRAIN: u64 = 4096;

/// Where SEEK_DATA or SEEK_HOLE (`whence`) from `offset` (below `size`) lands in a file whose
/// block `idx` (of `block_size` bytes) is `stored(idx)`. Holes are reported from the first
/// [`HOLE_GRAIN`] multiple inside them to the last, so a hole may look smaller than it is,
/// never larger; the end of the file is a hole.
fn seek(
    offset: u64,
    size: u64,
    block_size: u64,
    whence: i32,
    stored: impl Fn(u64) -> bool,
) -> Option<u64> {
    let want_data = whence == libc::SEEK_DATA;
    let mut idx = offset / block_size;
    loop {
        let start = idx * block_size;
        if start >= size {
            // No hole from `offset` on but the end of the file.
            return Some(if want_data { offset } else { size });
        }
        if stored(idx) {
            idx += 1;
            continue;
        }
        // A run of holes [start, end), reported as [hole_start, hole_end).
        let mut next = idx + 1;
        while next * block_size < size && !stored(next) {
            next += 1;
        }
        let end = (next * block_size).min(size);
        let hole_start = start.next_multiple_of(HOLE_GRAIN);
        let hole_end = if end == size {
            size
        } else {
            end / HOLE_GRAIN * HOLE_GRAIN
        };
        if hole_start < hole_end && offset < hole_end {
            let in_hole = offset >= hole_start;
            return Some(match (want_data, in_hole) {
                (true, false) => offset,
                (true, true) if hole_end == size => return None,
                (true, true) => hole_end,
                (false, true) => offset,
                (false, false) => hole_start,
            });
        }
        idx = next;
    }
}

impl Core {
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

    /// Current attributes, including buffered writes of this mount.
    pub async fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let epoch = self.cache.epoch();
        if let Some(f) = self.open_file(ino) {
            let st = f.state();
            if st.has_pending() {
                return Ok(st.attr);
            }
        }
        let attr = match self.cache.attr(ino) {
            Some(attr) => attr,
            None => {
                let attr = match self.meta.getattr(ino).await {
                    Err(FsError::NotFound) => self.removed_open_dir(ino).ok_or(FsError::NotFound),
                    read => read,
                }?;
                self.cache.remember(epoch, None, attr);
                attr
            }
        };
        Ok(self.current(attr, epoch))
    }

    /// Changes attributes (a chmod also rewrites the file's access ACL, if it has one).
    pub async fn setattr(&self, ino: u64, change: AttrChange) -> Result<Attr, FsError> {
        let chmod = change.mode;
        let attr = self.change_attrs(ino, change).await?;
        if let Some(mode) = chmod.filter(|_| attr.kind() != FileKind::Symlink) {
            self.chmod_acl(ino, mode).await?;
        }
        Ok(attr)
    }

    /// Changes attributes, nothing else; a size change stores buffered writes first.
    async fn change_attrs(&self, ino: u64, change: AttrChange) -> Result<Attr, FsError> {
        self.writable()?;
        let open = self.open_file(ino);
        if let Some(size) = change.size {
            if size > MAX_FILE_SIZE {
                return Err(FsError::FileTooBig);
            }
            if let Some(f) = &open {
                self.flush_file(f, false).await?;
            }
        }
        let mut attempts = 0;
        let attr = loop {
            let tail = match change.size {
                Some(size) => self.zeroed_tail(ino, size).await?,
                None => None,
            };
            match self.meta.setattr(ino, &change, self.block_size, tail).await {
                Err(FsError::Again) if attempts < 16 => attempts += 1,
                Err(e) if e != FsError::Io => {
                    // Refused before it ran (Redis is full): its new last block is named by
                    // nothing. (A lost race, or a missing inode, deletes it in the script.)
                    if let Some((_, _, new)) = tail.filter(|&(_, _, new)| new != 0) {
                        self.blocks.discard(vec![new]);
                    }
                    return Err(e);
                }
                other => break other?,
            }
        };
        self.cache.forget_attr(ino);
        if let Some(f) = open {
            let mut st = f.state();
            st.refresh(attr);
            // Explicitly set times win over those of buffered writes.
            if change.mtime.is_some() {
                st.attr.mtime = attr.mtime;
            }
            if change.ctime.is_some() {
                st.attr.ctime = attr.ctime;
            }
            if let Some(size) = change.size {
                st.forget_map(size == 0);
            }
            return Ok(st.attr);
        }
        Ok(attr)
    }

    /// For a cut to `size` inside a block: that block rewritten with zeros past the new end,
    /// as (index, old id, new id), so that growing the file again reads zeros there.
    async fn zeroed_tail(&self, ino: u64, size: u64) -> Result<Option<(u64, u64, u64)>, FsError> {
        let bs = u64::from(self.block_size);
        let current = self.meta.getattr(ino).await?;
        if size >= current.size || size % bs == 0 {
            return Ok(None);
        }
        let idx = size / bs;
        let old = self.meta.map_range(ino, idx, 1).await?[0];
        if old == 0 {
            return Ok(None);
        }
        let Some(Some(block)) = self.blocks.get(&[old]).await?.pop() else {
            return Err(FsError::Again);
        };
        let mut image = block.to_vec();
        image[(size % bs) as usize..].fill(0);
        let image = Arc::new(image);
        let Some(encoded) = self.blocks.encode(&image) else {
            return Ok(Some((idx, old, 0)));
        };
        let new = self.blocks.allocate(1).await?[0];
        self.blocks.put(&[(new, encoded)]).await?;
        self.blocks.remember(new, image);
        Ok(Some((idx, old, new)))
    }

    /// Creates an inode of any kind; for a regular file this mount is `opening`, also says
    /// whether the open was registered with it (not when the create was deferred).
    #[allow(clippy::too_many_arguments)]
    pub async fn make(
        &self,
        parent: u64,
        name: &[u8],
        kind: FileKind,
        perm: u32,
        rdev: u32,
        target: &[u8],
        caller: Caller,
        opening: bool,
    ) -> Result<(Attr, bool), FsError> {
        self.writable()?;
        check_name(name)?;
        let dir = self.getattr(parent).await?;
        let (acls, perm) = self.creation_mode(parent, kind, perm, caller).await?;
        let mut attr = new_attr(&dir, kind, perm, rdev, caller, Timestamp::now());
        if kind == FileKind::Symlink {
            if target.len() > PATH_MAX {
                return Err(FsError::NameTooLong);
            }
            attr.size = target.len() as u64;
        }
        if self.meta.delegation.holds(parent) && self.meta.delegation.out_of_inos() {
            // The range of inode numbers ran out: reserve more and defer after all.
            self.meta.reserve_inos().await?;
            if let Some(done) = self.make_deferred(parent, name, kind, perm, rdev, caller) {
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
        self.cache
            .remember(self.cache.epoch(), Some((parent, name)), created);
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
        kind: FileKind,
        perm: u32,
        caller: Caller,
    ) -> Result<(Inherited, u32), FsError> {
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
            None => ((None, None), perm & !caller.umask),
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
        let (acls, perm) = self
            .creation_mode(parent, FileKind::File, perm, caller)
            .await?;
        let attr = new_attr(&dir, FileKind::File, perm, 0, caller, Timestamp::now());
        let attr = self.meta.tmpfile(parent, &attr).await?;
        self.give_acls(attr.ino, acls).await?;
        self.cache.forget_attr(parent);
        let (fh, file) = self.attach(attr, true, self.cache.epoch());
        let mut st = file.state();
        st.orphaned = true;
        st.unnamed = true;
        Ok((attr, fh))
    }

    /// The default ACL of directory `dir`, if it has one (its absence is remembered).
    async fn default_acl(&self, dir: u64) -> Result<Option<Acl>, FsError> {
        if !self.settings.acl || self.cache.has_no_default_acl(dir) {
            return Ok(None);
        }
        match self.meta.xattr_get(dir, acl::DEFAULT).await {
            Ok(bytes) => Ok(Acl::decode(&bytes)),
            Err(FsError::NoData) => {
                self.cache.without_default_acl(dir);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Sets a file's access ACL: its permission bits follow, and an ACL the bits say all of
    /// is not kept.
    async fn set_access_acl(&self, ino: u64, value: &[u8], flags: u8) -> Result<(), FsError> {
        let acl = Acl::decode(value).ok_or(FsError::Invalid)?;
        let attr = self.getattr(ino).await?;
        if acl.is_minimal() {
            match self.meta.xattr_remove(ino, acl::ACCESS).await {
                Ok(()) | Err(FsError::NoData) => {}
                Err(e) => return Err(e),
            }
        } else {
            self.meta.xattr_set(ino, acl::ACCESS, value, flags).await?;
        }
        let mode = attr.mode & 0o7000 | acl.mode_bits();
        if mode != attr.mode & 0o7777 {
            let change = AttrChange {
                mode: Some(mode),
                ..Default::default()
            };
            // (Not `setattr`: the ACL written above says the same as the mode.)
            self.change_attrs(ino, change).await?;
        }
        Ok(())
    }

    /// After a chmod of `ino` to `mode`: its access ACL, if it has one, says the same.
    async fn chmod_acl(&self, ino: u64, mode: u32) -> Result<(), FsError> {
        if !self.settings.acl || self.cache.has_no_xattrs(ino) {
            return Ok(());
        }
        let mut acl = match self.meta.xattr_get(ino, acl::ACCESS).await {
            Ok(bytes) => match Acl::decode(&bytes) {
                Some(acl) => acl,
                None => return Ok(()),
            },
            Err(FsError::NoData) => return Ok(()),
            Err(e) => return Err(e),
        };
        acl.chmod(mode);
        self.meta
            .xattr_set(ino, acl::ACCESS, &acl.encode(), 0)
            .await
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
        let made = self
            .make(parent, name, FileKind::File, perm, 0, &[], caller, true)
            .await;
        let (attr, registered) = match made {
            // The kernel creates a name this mount said was absent: one made elsewhere whose
            // event had not arrived yet. The open must open what is there, with the checks
            // and O_TRUNC of an open: ESTALE makes the kernel look the name up again (in
            // Redis: `make` marked it uncertain) and retry the open.
            Err(FsError::Exists) if !exclusive => return Err(FsError::Stale),
            made => made?,
        };
        let (fh, file) = self.attach(attr, true, self.cache.epoch());
        if registered {
            file.registered.store(true, Ordering::Release);
        } else {
            file.born_in.store(parent, Ordering::Release);
        }
        Ok((attr, fh))
    }

    /// Opens a file; also says whether the kernel may keep its cached pages.
    pub async fn open(&self, ino: u64, write: bool) -> Result<(u64, bool), FsError> {
        if write {
            self.writable()?;
        }
        let _opening = self.opening(ino).await;
        if let Some(file) = self.open_file(ino) {
            // Its last handle may be closing, its store (which a close need not wait for, see
            // `Core::flush_at_once`) under way: what Redis says must include it, since the
            // handle registered below may be the first one again.
            self.flush_file(&file, false).await?;
        }
        let epoch = self.cache.epoch();
        // The first open here is registered, so that a removal elsewhere keeps the data.
        let register = !self.settings.read_only && self.open_file(ino).is_none();
        let attr = self.meta.open(ino, register).await?;
        if attr.nlink == 0 && self.open_file(ino).is_none() {
            // The kernel resolved the name before a removal took the last link: the removal
            // came first. (A file open here stays reachable, through /proc/self/fd.)
            if register {
                self.hand_over(Closed::Open(ino));
            }
            return Err(FsError::NotFound);
        }
        self.cache.remember(epoch, None, attr);
        let keep = self.keeps_pages(&attr);
        if !keep {
            // Another mount may have changed the file: the kernel must not go on with the size
            // it cached (close-to-open).
            if let Some(k) = self.kernel.get() {
                k.attributes_now(ino);
            }
        }
        let (fh, file) = self.attach(attr, false, epoch);
        if register && file.registered.swap(true, Ordering::AcqRel) {
            // Registered twice (an open raced with a create here): one is enough.
            self.hand_over(Closed::Open(ino));
        }
        Ok((fh, keep))
    }

    /// Adds a hard link.
    pub async fn link(&self, ino: u64, parent: u64, name: &[u8]) -> Result<Attr, FsError> {
        self.writable()?;
        check_name(name)?;
        // (An unnamed file is registered open here first: named, it is held no more.)
        self.publish_born_in(&[], ino).await?;
        let open = self.open_file(ino);
        let unnamed = open.as_ref().is_some_and(|f| f.state().unnamed);
        // On any failure (a lost reply too) the name's state is unknown here.
        let attr = self
            .meta
            .link(ino, parent, name, unnamed)
            .await
            .inspect_err(|_| self.cache.forget_name(parent, name))?;
        self.cache.forget_name(parent, name);
        self.cache.forget_attr(parent);
        self.cache.forget_attr(ino);
        match open {
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

    /// Unlinks a file or removes an empty directory.
    pub async fn remove(&self, parent: u64, name: &[u8], dir: bool) -> Result<(), FsError> {
        self.writable()?;
        check_name(name)?;
        // An inode not open here is deleted by the removal itself when it takes the last link
        // (directories are never open in that sense: the kernel ends reads of a removed one).
        let deleting = self
            .cache
            .entry(parent, name)
            .and_then(|attr| self.deleting(attr.ino));
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
        let (victim, touched) = self
            .meta
            .rename(parent, name, new_parent, new_name, flags)
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
            self.make(parent, name, kind, 0, 0, &[], caller, false)
                .await?;
        }
        Ok(())
    }

    /// A symlink's target.
    pub async fn readlink(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        self.meta.readlink(ino).await
    }

    /// Reads through a handle.
    pub async fn read(
        self: &Arc<Self>,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, FsError> {
        let file = self.file(fh)?;
        self.read_file(&file, offset, size).await
    }

    /// Writes through a handle (with `append`, at the end of the file).
    pub async fn write(
        self: &Arc<Self>,
        fh: u64,
        offset: u64,
        data: &[u8],
        append: bool,
    ) -> Result<u32, FsError> {
        if append {
            self.learn_changes_elsewhere(&*self.file(fh)?).await?;
        }
        let spawner = tokio::runtime::Handle::current();
        if let Some((file, only_full)) = self.write_buffered(fh, offset, data, append, &spawner)? {
            self.flush_file(&file, only_full).await?;
        }
        Ok(data.len() as u32)
    }

    /// Whether an append through `fh` must first learn what another mount changed (see
    /// [`Core::write`]), which the FUSE thread cannot wait for.
    pub fn append_waits(&self, fh: u64) -> bool {
        self.file(fh).is_ok_and(|f| f.state().changed_elsewhere)
    }

    /// Buffers a write, starting a background store of full blocks on `spawner` when it is
    /// time; returns the file, and whether only its full blocks need storing, when the writer
    /// must wait for a store (see [`Backlog`]).
    pub fn write_buffered(
        self: &Arc<Self>,
        fh: u64,
        offset: u64,
        data: &[u8],
        append: bool,
        spawner: &tokio::runtime::Handle,
    ) -> Result<Option<(Arc<OpenFile>, bool)>, FsError> {
        self.writable()?;
        let file = self.file(fh)?;
        let backlog = self.buffer_write(&file, offset, data, append)?;
        if let Some(only_full) = backlog.wait_for() {
            return Ok(Some((file, only_full)));
        }
        // Store full blocks while the writer goes on filling the buffer. A failure leaves them
        // buffered: the next flush retries and reports it.
        if backlog == Backlog::StoreSoon
            && !file.storing.swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            let core = self.clone();
            spawner.spawn(async move {
                if let Err(e) = core.flush_file(&file, true).await {
                    tracing::warn!(
                        "inode {}: storing in the background failed ({e}); kept buffered",
                        file.ino
                    );
                }
                file.storing
                    .store(false, std::sync::atomic::Ordering::Release);
            });
        }
        Ok(None)
    }

    /// Stores a handle's buffered writes (close, fsync).
    pub async fn flush(&self, fh: u64) -> Result<(), FsError> {
        let file = self.file(fh)?;
        self.flush_file(&file, false).await
    }

    /// Closes a handle; the last close of an unlinked file deletes it. The last close of a
    /// file no one can reach any more (unlinked, and created in a directory leased here, so
    /// that no other mount can have it open) drops its buffers instead of storing them:
    /// `rm -rf` right after a copy removes files whose closes are still on their way.
    pub async fn release(&self, fh: u64) -> Result<(), FsError> {
        let file = self.file(fh)?;
        let flushed = if self.dropped_unreachable(&file).await {
            Ok(())
        } else {
            self.flush_file(&file, false).await
        };
        self.detached(fh, flushed)
    }

    /// Drops the buffers of an unreachable file at its last handle's release, once stores
    /// under way have ended (their blocks are then the inode's, and go with it); says whether
    /// it did.
    async fn dropped_unreachable(&self, file: &OpenFile) -> bool {
        if !self.unreachable(file) {
            return false;
        }
        let _stores_ended = file.flush_lock.lock().await;
        // Under the table's lock, where opens register their handles.
        let files = super::lock(&self.files);
        let last = files
            .get(&file.ino)
            .is_some_and(|(_, handles)| *handles == 1);
        if !last || !self.unreachable(file) {
            return false;
        }
        file.state().drop_buffers();
        true
    }

    /// Whether `file` is unlinked and was created in a directory still leased here.
    fn unreachable(&self, file: &OpenFile) -> bool {
        self.born_leased(file) && file.state().orphaned
    }

    /// Whether `file` was created in a directory still leased here, so that no other mount
    /// can have opened it.
    pub(super) fn born_leased(&self, file: &OpenFile) -> bool {
        let dir = file.born_in.load(std::sync::atomic::Ordering::Acquire);
        dir != 0 && self.meta.delegation.holds(dir)
    }

    /// Drops a handle whose data was stored (or not: `flushed`); the last close of an
    /// unlinked file queues it for deletion.
    pub(super) fn detached(&self, fh: u64, flushed: Result<(), FsError>) -> Result<(), FsError> {
        if let Some(last) = self.detach(fh) {
            let st = last.state();
            self.let_go(&last, st.orphaned);
            if !st.orphaned && flushed.is_ok() {
                self.closed(&st.attr);
            }
        }
        flushed
    }

    /// Preallocates, punches holes or zeroes ranges, for `caller`.
    pub async fn fallocate(
        &self,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
        caller: Caller,
    ) -> Result<(), FsError> {
        self.writable()?;
        let file = self.file(fh)?;
        let end = offset.checked_add(length).ok_or(FsError::FileTooBig)?;
        if end > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let supported =
            libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
        if mode & !supported != 0 {
            return Err(FsError::NotSupported);
        }
        // Preallocation stores nothing (unwritten bytes are holes), but it promises room: a
        // range larger than what Redis has left is refused, as a full disk refuses it. (The
        // whole range counts, bytes stored there already too.)
        if mode & !libc::FALLOC_FL_KEEP_SIZE == 0 && length > self.usage().await?.available {
            return Err(FsError::NoSpace);
        }
        if mode & (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE) != 0 {
            let size = self.getattr(file.ino).await?.size;
            let zero_end = if keep_size { end.min(size) } else { end };
            if offset < zero_end {
                self.zero_range(&file, offset, zero_end).await?;
            }
        }
        if !keep_size {
            let size = self.getattr(file.ino).await?.size;
            if end > size {
                self.setattr(
                    file.ino,
                    AttrChange {
                        size: Some(end),
                        ..Default::default()
                    },
                )
                .await?;
            }
        }
        let attr = self.getattr(file.ino).await?;
        self.drop_set_id_bits(attr, caller).await.map(drop)
    }

    /// Whether a write to open file `ino` by `caller` takes set-ID bits away (judged on what
    /// this mount knows: the bits are rare, the check is on every write).
    pub fn write_drops_set_id(&self, ino: u64, caller: &Caller) -> bool {
        self.open_file(ino).is_some_and(|f| {
            let attr = f.state().attr;
            mode_after_data_change(&attr, caller) != attr.mode
        })
    }

    /// Takes away the set-ID bits a change of the data of a file (now `attr`) by `caller`
    /// drops; returns the attributes after.
    pub async fn drop_set_id_bits(&self, attr: Attr, caller: Caller) -> Result<Attr, FsError> {
        let ino = attr.ino;
        let mode = mode_after_data_change(&attr, &caller);
        if mode == attr.mode {
            return Ok(attr);
        }
        let change = AttrChange {
            mode: Some(mode & 0o7777),
            ..Default::default()
        };
        // Only set-ID bits go: an ACL stays as it is.
        let attr = self.change_attrs(ino, change).await?;
        // The kernel answered the write with what it cached.
        self.invalidate(super::notify::Invalidation::Attr(ino));
        Ok(attr)
    }

    /// Makes `[start, end)` read as zeros: whole blocks become holes, edges are rewritten.
    async fn zero_range(&self, file: &Arc<OpenFile>, start: u64, end: u64) -> Result<(), FsError> {
        let bs = u64::from(self.block_size);
        let first_full = start.div_ceil(bs);
        let last_full = end / bs;
        let edges = [
            (start, end.min(first_full * bs)),
            ((last_full * bs).max(start), end),
        ];
        for (s, e) in edges {
            if s < e {
                self.buffer_write(file, s, &vec![0; (e - s) as usize], false)?;
            }
        }
        self.flush_file(file, false).await?;
        if first_full < last_full {
            for _ in 0..16 {
                let map = self.meta.map_all(file.ino).await?;
                let swaps: Vec<(u64, u64, u64)> = map
                    .iter()
                    .filter(|(&i, _)| (first_full..last_full).contains(&i))
                    .map(|(&i, &id)| (i, id, 0))
                    .collect();
                file.state().forget_map(false);
                if swaps.is_empty() {
                    break;
                }
                let (_, lost) = self
                    .meta
                    .commit(file.ino, Some(Timestamp::now()), 0, &swaps, &[], &[])
                    .await?;
                self.cache.forget_attr(file.ino);
                if lost.is_empty() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// SEEK_DATA and SEEK_HOLE.
    pub async fn lseek(&self, fh: u64, offset: i64, whence: i32) -> Result<i64, FsError> {
        let file = self.file(fh)?;
        if whence != libc::SEEK_DATA && whence != libc::SEEK_HOLE {
            return Err(FsError::Invalid);
        }
        self.flush_file(&file, false).await?;
        let size = self.getattr(file.ino).await?.size;
        let offset = u64::try_from(offset).map_err(|_| FsError::NoSuchOffset)?;
        if offset >= size {
            return Err(FsError::NoSuchOffset);
        }
        let map = self.meta.map_all(file.ino).await?;
        let stored = |idx: u64| map.get(&idx).is_some_and(|&id| id != 0);
        let found = seek(offset, size, u64::from(self.block_size), whence, stored);
        found.map(|o| o as i64).ok_or(FsError::NoSuchOffset)
    }

    /// Copies bytes between two open files inside redisfs.
    pub async fn copy_range(
        self: &Arc<Self>,
        fh_in: u64,
        offset_in: u64,
        fh_out: u64,
        offset_out: u64,
        len: u64,
    ) -> Result<u32, FsError> {
        self.writable()?;
        let (src, dst) = (self.file(fh_in)?, self.file(fh_out)?);
        // The reply carries a 32-bit count; the kernel asks again for the rest.
        let len = len.min(u64::from(u32::MAX) & !(COPY_CHUNK - 1));
        let mut done = 0u64;
        while done < len {
            let want = (len - done).min(COPY_CHUNK) as u32;
            let data = self.read_file(&src, offset_in + done, want).await?;
            if data.is_empty() {
                break;
            }
            // No background stores here: the copy waits for what it buffered.
            match self.buffer_write(&dst, offset_out + done, &data, false)? {
                Backlog::Fine => {}
                Backlog::StoreAll => self.flush_file(&dst, false).await?,
                Backlog::StoreSoon | Backlog::StoreFull => self.flush_file(&dst, true).await?,
            }
            done += data.len() as u64;
        }
        Ok(done as u32)
    }

    /// Reads an extended attribute.
    pub async fn getxattr(&self, ino: u64, name: &[u8], size: u32) -> Result<XattrReply, FsError> {
        self.check_xattr_name(name)?;
        xattr_reply(self.meta.xattr_get(ino, name).await?, size)
    }

    /// Whether extended attributes named `name` are kept here (`EOPNOTSUPP` if not): of the
    /// system namespace only POSIX ACLs, on a filesystem that keeps them (and the kernel
    /// enforces them); of the security namespace all but SELinux labels, which SELinux gives a
    /// FUSE mount as a whole, never per file. (`ls -l` asks every file for its label and ACL,
    /// and stops asking on a filesystem that answers `EOPNOTSUPP` once.)
    pub fn check_xattr_name(&self, name: &[u8]) -> Result<(), FsError> {
        if name.is_empty() {
            return Err(FsError::Invalid);
        }
        if name.len() > NAME_MAX {
            return Err(FsError::Range);
        }
        let acl = name == acl::ACCESS || name == acl::DEFAULT;
        let kept = match name {
            _ if name.starts_with(b"system.") => acl && self.settings.acl,
            b"security.selinux" => false,
            _ => true,
        };
        if !kept {
            return Err(FsError::NotSupported);
        }
        Ok(())
    }

    /// Lists extended attribute names.
    pub async fn listxattr(&self, ino: u64, size: u32) -> Result<XattrReply, FsError> {
        let mut out = Vec::new();
        let stored = self.meta.xattr_list(ino).await?;
        // (Names not kept any more, such as the ACLs of a filesystem restored without them,
        // are not offered.)
        for name in stored.iter().filter(|n| self.check_xattr_name(n).is_ok()) {
            out.extend_from_slice(name);
            out.push(0);
        }
        xattr_reply(out, size)
    }

    /// Sets an extended attribute.
    pub async fn setxattr(
        &self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: i32,
    ) -> Result<(), FsError> {
        self.writable()?;
        self.check_xattr_name(name)?;
        if value.len() > XATTR_SIZE_MAX {
            return Err(FsError::TooBig);
        }
        let mode = match flags {
            0 => 0,
            libc::XATTR_CREATE => 1,
            libc::XATTR_REPLACE => 2,
            _ => return Err(FsError::Invalid),
        };
        self.cache.xattrs_changed(ino);
        if name == acl::ACCESS {
            self.set_access_acl(ino, value, mode).await?;
        } else {
            self.meta.xattr_set(ino, name, value, mode).await?;
        }
        self.cache.forget_attr(ino);
        Ok(())
    }

    /// Removes an extended attribute.
    pub async fn removexattr(&self, ino: u64, name: &[u8]) -> Result<(), FsError> {
        self.writable()?;
        self.check_xattr_name(name)?;
        self.cache.xattrs_changed(ino);
        self.meta.xattr_remove(ino, name).await?;
        self.cache.forget_attr(ino);
        Ok(())
    }

    /// access(2) when the kernel leaves permission checks to us.
    pub async fn access(&self, ino: u64, mask: i32, caller: Caller) -> Result<(), FsError> {
        let attr = self.getattr(ino).await?;
        if mask == libc::F_OK {
            return Ok(());
        }
        if mask & libc::W_OK != 0 && self.settings.read_only {
            return Err(FsError::ReadOnly);
        }
        let mode = attr.mode;
        if caller.uid == 0 {
            let any_exec = mode & 0o111 != 0 || attr.kind() == FileKind::Dir;
            return if mask & libc::X_OK != 0 && !any_exec {
                Err(FsError::Access)
            } else {
                Ok(())
            };
        }
        let bits = if caller.uid == attr.uid {
            (mode >> 6) & 7
        } else if caller.gid == attr.gid {
            (mode >> 3) & 7
        } else {
            mode & 7
        };
        if (mask as u32 & 7) & !bits != 0 {
            Err(FsError::Access)
        } else {
            Ok(())
        }
    }

    /// Counters for statfs.
    pub async fn usage(&self) -> Result<Usage, FsError> {
        self.meta.usage().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BS: u64 = 65_472;

    fn seek_in(map: &[bool], size: u64, offset: u64, whence: i32) -> Option<u64> {
        seek(offset, size, BS, whence, |i| {
            map.get(i as usize) == Some(&true)
        })
    }

    #[test]
    fn holes_are_reported_between_page_multiples_inside_them() {
        // Data, hole, hole, data: the hole is [65,472, 196,416), reported [65,536, 196,608).
        let map = [true, false, false, true];
        let size = 4 * BS;
        assert_eq!(seek_in(&map, size, 0, libc::SEEK_HOLE), Some(65_536));
        assert_eq!(seek_in(&map, size, 0, libc::SEEK_DATA), Some(0));
        assert_eq!(seek_in(&map, size, 65_500, libc::SEEK_DATA), Some(65_500));
        assert_eq!(seek_in(&map, size, 65_536, libc::SEEK_DATA), Some(192_512));
        assert_eq!(seek_in(&map, size, 100_000, libc::SEEK_HOLE), Some(100_000));
        assert_eq!(seek_in(&map, size, 193_000, libc::SEEK_HOLE), Some(size));
        assert_eq!(seek_in(&map, size, 193_000, libc::SEEK_DATA), Some(193_000));
    }

    #[test]
    fn the_end_of_the_file_is_a_hole_and_has_no_data_after_it() {
        let map = [true, false];
        let size = 2 * BS;
        assert_eq!(seek_in(&map, size, 0, libc::SEEK_HOLE), Some(65_536));
        assert_eq!(seek_in(&map, size, 70_000, libc::SEEK_DATA), None);
        assert_eq!(seek_in(&[true], BS, 10, libc::SEEK_HOLE), Some(BS));
        assert_eq!(seek_in(&[true], BS, 10, libc::SEEK_DATA), Some(10));
        assert_eq!(seek_in(&[], 10_000, 0, libc::SEEK_DATA), None);
        assert_eq!(seek_in(&[], 10_000, 5, libc::SEEK_HOLE), Some(5));
    }
}
