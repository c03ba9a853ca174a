//! The operations of [`Core`](super::Core), one async function each, grouped by family; an
//! operation's fast form (answered on the FUSE thread from this mount's memory, or deferred
//! in a leased directory) sits beside its async form:
//!
//! * [`entries`]: names: look-up, create, remove, rename, link, symlinks;
//! * [`io`]: open files: open, read, write, flush, release, fallocate, seek, copy;
//! * [`attrs`]: attributes, extended attributes and ACLs, access, statfs;
//! * [`dirs`]: directory handles and listings;
//! * [`locks`]: fcntl and flock locks.

pub mod attrs;
pub mod dirs;
pub mod entries;
pub mod io;
pub mod locks;

use crate::attr::FileKind;
use crate::error::FsError;

/// Longest name in a directory.
pub const NAME_MAX: usize = 255;

pub(in crate::fs) fn check_name(name: &[u8]) -> Result<(), FsError> {
    if name.len() > NAME_MAX {
        Err(FsError::NameTooLong)
    } else {
        Ok(())
    }
}

/// What a create asks for.
#[derive(Clone, Copy, Debug)]
pub struct NewInode<'a> {
    /// Its kind.
    pub kind: FileKind,
    /// The permission bits asked for (the caller's umask or the directory's default ACL
    /// applies).
    pub perm: u32,
    /// The device number of a character or block device.
    pub rdev: u32,
    /// A symlink's target.
    pub target: &'a [u8],
    /// Who asks.
    pub caller: Caller,
}

impl NewInode<'static> {
    /// An inode of `kind` (not a symlink) with `perm` and device number `rdev`, for `caller`.
    pub fn new(kind: FileKind, perm: u32, rdev: u32, caller: Caller) -> NewInode<'static> {
        NewInode {
            kind,
            perm,
            rdev,
            target: &[],
            caller,
        }
    }
}

impl<'a> NewInode<'a> {
    /// A symlink to `target`, for `caller`.
    pub fn symlink(target: &'a [u8], caller: Caller) -> NewInode<'a> {
        NewInode {
            kind: FileKind::Symlink,
            perm: 0o777,
            rdev: 0,
            target,
            caller,
        }
    }
}

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
    pub(in crate::fs) fn in_group(&self, gid: u32) -> bool {
        self.gid == gid
            || std::fs::read_to_string(format!("/proc/{}/status", self.pid)).is_ok_and(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Groups:"))
                    .is_some_and(|g| g.split_whitespace().any(|g| g.parse() == Ok(gid)))
            })
    }
}
