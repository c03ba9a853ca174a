//! Attributes: stat, setattr, extended attributes and POSIX ACLs, access(2), statfs.

use std::sync::Arc;

use crate::attr::{Attr, FileKind};
use crate::error::FsError;
use crate::meta::{AttrChange, BlockSwap, Tail, Usage};

use super::{Caller, NAME_MAX};
use crate::fs::acl::{self, Acl};
use crate::fs::{Core, MAX_FILE_SIZE};

/// Largest extended attribute value (as Linux's XATTR_SIZE_MAX).
const XATTR_SIZE_MAX: usize = 65536;

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

impl Core {
    /// Attributes of an inode not open here, if remembered.
    pub fn getattr_cached(&self, ino: u64) -> Option<Attr> {
        if self.open.get(ino).is_some() {
            return None;
        }
        self.cache.attr(ino)
    }

    /// Current attributes, including buffered writes of this mount.
    pub async fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let epoch = self.cache.epoch();
        if let Some(f) = self.open.get(ino) {
            let st = f.state();
            if st.has_unstored() {
                return Ok(st.attr);
            }
        }
        let attr = match self.cache.attr(ino) {
            Some(attr) => attr,
            None => {
                let attr = match self.meta.getattr(ino).await {
                    Err(FsError::NotFound) => self.dirs.removed(ino).ok_or(FsError::NotFound),
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
    pub(in crate::fs) async fn change_attrs(
        &self,
        ino: u64,
        change: AttrChange,
    ) -> Result<Attr, FsError> {
        self.writable()?;
        let open = self.open.get(ino);
        if let Some(size) = change.size {
            if size > MAX_FILE_SIZE {
                return Err(FsError::FileTooBig);
            }
            if let Some(f) = &open {
                self.flush_file(f, false).await?;
            }
        }
        // A store of the open file's data answered while this change is on its way would
        // leave a record this change's reply may predate (or follow): the two take turns, so
        // that the file's attributes here are whichever Redis answered last.
        let _in_order = match &open {
            Some(f) => Some(f.commit_lock.lock().await),
            None => None,
        };
        // A directory leased here is as this mount knows it (see `Delegation::change_dir`).
        let known = open.is_none().then(|| self.cache.attr(ino)).flatten();
        let mut attempts = 0;
        let (attr, request) = loop {
            let tail = match change.size {
                Some(size) => self.zeroed_tail(ino, size).await?,
                None => None,
            };
            match (self.meta)
                .setattr(ino, &change, self.block_size, tail.as_ref(), known)
                .await
            {
                Err(FsError::Again) if attempts < 16 => attempts += 1,
                other => break other?,
            }
        };
        match request {
            Some(_) => self.cache.forget_attr(ino),
            // The change was deferred (it rides with the inode's creation, or follows the
            // changes made in a new directory): this mount's copy is all there is of it.
            None => self.cache.set(None, attr),
        }
        if let Some(f) = &open {
            let mut st = f.state();
            if request.is_some() {
                st.last_attr_change = request;
            }
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

    /// For a cut to `size` inside a block: that block rewritten with zeros past the new end, so
    /// that growing the file again reads zeros there.
    async fn zeroed_tail(&self, ino: u64, size: u64) -> Result<Option<Tail>, FsError> {
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
            let hole = BlockSwap {
                idx,
                old,
                new: 0,
                new_len: 0,
            };
            return Ok(Some(Tail {
                swap: hole,
                stored: Vec::new(),
                stored_on: None,
            }));
        };
        let new = self.blocks.allocate(1).await?[0];
        let new_len = encoded.stored_len() as u64;
        let stored = vec![(new, encoded)];
        let stored_on = match self.blocks.put(&stored).await {
            Ok(node) => node,
            Err(e) => {
                // It may have been stored, and no map will ever name it.
                self.blocks.discard(vec![new]);
                return Err(e);
            }
        };
        self.blocks.remember(new, image);
        let swap = BlockSwap {
            idx,
            old,
            new,
            new_len,
        };
        Ok(Some(Tail {
            swap,
            stored,
            stored_on: Some(stored_on),
        }))
    }
}

impl Core {
    /// Whether `ino` is known to have no extended attributes (a look-up of one is `ENODATA`).
    pub fn xattr_known_absent(&self, ino: u64) -> bool {
        self.cache.has_no_xattrs(ino)
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

    /// The default ACL of directory `dir`, if it has one (its absence is remembered).
    pub(in crate::fs) async fn default_acl(&self, dir: u64) -> Result<Option<Acl>, FsError> {
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
}

impl Core {
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
