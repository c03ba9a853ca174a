//! `listing-floor MOUNT_POINT FILES`: mounts a filesystem whose root holds `big-dir`, a
//! directory of FILES empty files named as `bench/run` names them, every answer made from
//! memory with no store behind it. `ls -l` of `big-dir` on it is the least any FUSE
//! filesystem can take on this machine: the kernel's side of readdirplus (an inode and a
//! dentry per entry) and the lister's own work, with nothing to wait for. (libfuse's
//! `passthrough_ll`, the floor of the other rows, keeps a descriptor open per inode and
//! cannot list 100,000 files under this machine's limit.) Serves until unmounted.

use std::ffi::OsStr;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, MountOption, OpenFlags, ReplyAttr, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEntry, ReplyOpen, ReplyXattr, Request,
};

const ROOT: u64 = 1;
const BIG_DIR: u64 = 2;
/// The first file's inode number; file `i` is `FIRST_FILE + i`.
const FIRST_FILE: u64 = 3;
/// Nothing here ever changes: the kernel may keep every answer for as long as it likes.
const FOREVER: Duration = Duration::from_secs(3600);

struct Floor {
    files: u64,
    created: SystemTime,
}

impl Floor {
    fn attr(&self, ino: u64) -> FileAttr {
        let dir = ino < FIRST_FILE;
        FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: self.created,
            mtime: self.created,
            ctime: self.created,
            crtime: self.created,
            kind: if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if dir { 0o755 } else { 0o644 },
            nlink: if dir { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// The entries of directory `ino` from position `offset` on: (inode, name).
    fn entries(&self, ino: u64, offset: u64) -> Box<dyn Iterator<Item = (u64, String)> + '_> {
        match ino {
            ROOT => {
                Box::new(std::iter::once((BIG_DIR, "big-dir".to_string())).skip(offset as usize))
            }
            _ => Box::new((offset..self.files).map(|i| (FIRST_FILE + i, file_name(i)))),
        }
    }

    fn child(&self, parent: u64, name: &OsStr) -> Option<u64> {
        let name = name.to_str()?;
        match parent {
            ROOT => (name == "big-dir").then_some(BIG_DIR),
            BIG_DIR => {
                let i: u64 = name.strip_prefix("file-")?.parse().ok()?;
                (i < self.files && file_name(i) == name).then_some(FIRST_FILE + i)
            }
            _ => None,
        }
    }
}

fn file_name(i: u64) -> String {
    format!("file-{i:07}")
}

impl fuser::Filesystem for Floor {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        for flag in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
        ] {
            let _ = config.add_capabilities(flag);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent.0, name) {
            Some(ino) => reply.entry(&FOREVER, &self.attr(ino), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&FOREVER, &self.attr(ino.0));
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        for (at, (child, name)) in (offset..).zip(self.entries(ino.0, offset)) {
            if reply.add(INodeNo(child), at + 1, self.attr(child).kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        for (at, (child, name)) in (offset..).zip(self.entries(ino.0, offset)) {
            if reply.add(
                INodeNo(child),
                at + 1,
                name,
                &FOREVER,
                &self.attr(child),
                Generation(0),
            ) {
                break;
            }
        }
        reply.ok();
    }

    /// No extended attributes are kept, as redisfs with `--acl off` answers for `security.*`
    /// and `system.*`: `ls -l` then stops asking the filesystem for every entry's label and ACL.
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, mount_point, files] = args.as_slice() else {
        eprintln!("usage: listing-floor MOUNT_POINT FILES");
        std::process::exit(2);
    };
    let Ok(files) = files.parse() else {
        eprintln!("listing-floor: FILES must be a number, not {files:?}");
        std::process::exit(2);
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![MountOption::FSName("listing-floor".into()), MountOption::RO];
    let floor = Floor {
        files,
        created: SystemTime::now(),
    };
    if let Err(e) = fuser::mount(floor, mount_point, &config) {
        eprintln!("listing-floor: cannot mount on {mount_point}: {e}");
        std::process::exit(1);
    }
}
