//! Plain directory trees as dump records: importing a local tree without FUSE
//! (`redisfs-restore --from-dir`) and exporting a filesystem to one (`redisfs-dump --to-dir`).

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::records::{
    Bytes, ContentHash, Data, EntryRecord, FileEnd, Header, Inode, Record, DUMP_VERSION, MAGIC,
};
use crate::attr::FileKind;
use crate::error::Error;

fn local(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Local {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn cpath(path: &Path) -> Result<CString, Error> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| local(path, "the path holds a NUL byte"))
}

/// The extended attributes of `path` (not following symlinks).
fn read_xattrs(path: &Path) -> Result<Vec<(Bytes, Bytes)>, Error> {
    let c = cpath(path)?;
    let mut names = vec![0u8; 64 * 1024];
    // SAFETY: valid C string and buffer of the given length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOTSUP) => Ok(Vec::new()),
            _ => Err(local(path, format!("listing extended attributes: {err}"))),
        };
    }
    let mut out = Vec::new();
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        let cname = CString::new(name).map_err(|_| local(path, "bad xattr name"))?;
        let mut value = vec![0u8; 64 * 1024];
        // SAFETY: valid C strings and buffer.
        let len = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if len < 0 {
            return Err(local(
                path,
                format!(
                    "reading xattr {}: {}",
                    String::from_utf8_lossy(name),
                    std::io::Error::last_os_error()
                ),
            ));
        }
        value.truncate(len as usize);
        out.push((Bytes(name.to_vec()), Bytes(value)));
    }
    out.sort_by(|a, b| a.0 .0.cmp(&b.0 .0));
    Ok(out)
}

fn inode_of(path: &Path, ino: u64, meta: &std::fs::Metadata) -> Result<Inode, Error> {
    let kind = FileKind::from_mode(meta.mode()).ok_or_else(|| local(path, "unknown file type"))?;
    let (nlink, target, size) = match kind {
        FileKind::Dir => {
            let subdirs = std::fs::read_dir(path)
                .map_err(|e| local(path, e))?
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                })
                .count() as u32;
            (2 + subdirs, None, 0)
        }
        FileKind::Symlink => {
            let target = std::fs::read_link(path).map_err(|e| local(path, e))?;
            let bytes = target.as_os_str().as_bytes().to_vec();
            (1, Some(Bytes(bytes.clone())), bytes.len() as u64)
        }
        FileKind::File => (meta.nlink() as u32, None, meta.size()),
        _ => (meta.nlink() as u32, None, 0),
    };
    Ok(Inode {
        ino,
        mode: meta.mode(),
        nlink,
        uid: meta.uid(),
        gid: meta.gid(),
        size,
        atime: (meta.atime(), meta.atime_nsec() as u32),
        mtime: (meta.mtime(), meta.mtime_nsec() as u32),
        ctime: (meta.ctime(), meta.ctime_nsec() as u32),
        rdev: meta.rdev() as u32,
        target,
        xattrs: read_xattrs(path)?,
    })
}

/// Reads the tree under `root` as dump records (header first, no trailer), handing each to
/// `send`. Hard links within the tree stay links; all-zero blocks become holes.
pub fn read_tree(
    root: &Path,
    block_size: u32,
    settings: &crate::format::CreateOptions,
    send: &mut dyn FnMut(Record) -> Result<(), Error>,
) -> Result<(), Error> {
    let root_meta = std::fs::metadata(root).map_err(|e| local(root, e))?;
    if !root_meta.is_dir() {
        return Err(local(root, "is not a directory"));
    }
    send(Record::Header(Header {
        magic: MAGIC.into(),
        version: DUMP_VERSION,
        block_size,
        codec: settings.codec.name().into(),
        source: root.display().to_string(),
        created: crate::attr::Timestamp::now().sec,
        writer: env!("CARGO_PKG_VERSION").into(),
        acl: settings.acl,
    }))?;
    send(Record::Inode(inode_of(root, 1, &root_meta)?))?;
    let mut next_ino = 1u64;
    // Directory inode numbers by depth, and inodes with several links by (device, inode).
    let mut parents: Vec<u64> = vec![1];
    let mut linked: HashMap<(u64, u64), u64> = HashMap::new();
    let walk = walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name();
    for item in walk {
        let item = item.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            local(&path, e)
        })?;
        let path = item.path();
        let meta = item.metadata().map_err(|e| local(path, e))?;
        parents.truncate(item.depth());
        let parent = *parents
            .last()
            .ok_or_else(|| local(path, "walked above the root"))?;
        let kind =
            FileKind::from_mode(meta.mode()).ok_or_else(|| local(path, "unknown file type"))?;
        let first_link = kind == FileKind::Dir
            || meta.nlink() < 2
            || !linked.contains_key(&(meta.dev(), meta.ino()));
        let ino = if first_link {
            next_ino += 1;
            if kind != FileKind::Dir && meta.nlink() > 1 {
                linked.insert((meta.dev(), meta.ino()), next_ino);
            }
            next_ino
        } else {
            linked[&(meta.dev(), meta.ino())]
        };
        send(Record::Entry(EntryRecord {
            parent,
            name: Bytes(item.file_name().as_bytes().to_vec()),
            ino,
            kind: kind.letter(),
        }))?;
        if kind == FileKind::Dir {
            parents.push(ino);
        }
        if !first_link {
            continue;
        }
        send(Record::Inode(inode_of(path, ino, &meta)?))?;
        if kind == FileKind::File {
            read_file(path, ino, block_size, send)?;
        }
    }
    Ok(())
}

fn read_file(
    path: &Path,
    ino: u64,
    block_size: u32,
    send: &mut dyn FnMut(Record) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut file = File::open(path).map_err(|e| local(path, e))?;
    let mut hash = ContentHash::default();
    let mut buf = vec![0u8; block_size as usize];
    let mut index = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(local(path, e)),
            }
        }
        if filled == 0 {
            break;
        }
        let used = buf[..filled]
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |p| p + 1);
        if used > 0 {
            hash.add(index, &buf[..used]);
            send(Record::Data(Data {
                ino,
                index,
                bytes: Bytes(buf[..used].to_vec()),
            }))?;
        }
        index += 1;
        if filled < buf.len() {
            break;
        }
    }
    send(Record::FileEnd(FileEnd {
        ino,
        sha256: Bytes(hash.finish()),
    }))
}

/// Builds a local tree from dump records: the inverse of [`read_tree`].
pub struct TreeWriter {
    root: PathBuf,
    block_size: u64,
    directories: HashMap<u64, PathBuf>,
    linked: HashMap<u64, PathBuf>,
    pending: Option<(PathBuf, u64)>,
    file: Option<(File, PathBuf, Inode)>,
    /// Directories' attributes, applied last (writing inside a directory changes its times).
    finish_dirs: Vec<(PathBuf, Inode)>,
}

impl TreeWriter {
    /// Writes into `root`, which must be missing or empty.
    pub fn new(root: &Path, block_size: u32) -> Result<TreeWriter, Error> {
        match std::fs::read_dir(root) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(local(
                        root,
                        "is not empty; export into an empty or new directory",
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(root).map_err(|e| local(root, e))?
            }
            Err(e) => return Err(local(root, e)),
        }
        Ok(TreeWriter {
            root: root.to_path_buf(),
            block_size: u64::from(block_size),
            directories: HashMap::from([(1, root.to_path_buf())]),
            linked: HashMap::new(),
            pending: None,
            file: None,
            finish_dirs: Vec::new(),
        })
    }

    /// Applies one record.
    pub fn add(&mut self, record: Record) -> Result<(), Error> {
        match record {
            Record::Entry(e) => {
                if !super::records::valid_name(&e.name.0) {
                    let shown = String::from_utf8_lossy(&e.name.0).into_owned();
                    return Err(local(
                        &self.root,
                        format!("refusing the entry name {shown:?}"),
                    ));
                }
                let dir = self.directories.get(&e.parent).ok_or_else(|| {
                    local(
                        &self.root,
                        format!("entry in unknown directory {}", e.parent),
                    )
                })?;
                let path = dir.join(std::ffi::OsStr::from_bytes(&e.name.0));
                if let Some(first) = self.linked.get(&e.ino) {
                    std::fs::hard_link(first, &path).map_err(|err| local(&path, err))?;
                } else {
                    self.pending = Some((path, e.ino));
                }
            }
            Record::Inode(inode) if inode.ino == 1 => {
                self.finish_dirs.push((self.root.clone(), inode))
            }
            Record::Inode(inode) => self.create(inode)?,
            Record::Data(d) => {
                let (file, path, _) = self
                    .file
                    .as_ref()
                    .ok_or_else(|| local(&self.root, "data outside a file"))?;
                file.write_all_at(&d.bytes.0, d.index * self.block_size)
                    .map_err(|e| local(path, e))?;
            }
            Record::FileEnd(_) => {
                if let Some((file, path, inode)) = self.file.take() {
                    file.set_len(inode.size).map_err(|e| local(&path, e))?;
                    drop(file);
                    apply(&path, &inode, false)?;
                }
            }
            Record::Header(_) | Record::Trailer(_) => {}
        }
        Ok(())
    }

    fn create(&mut self, inode: Inode) -> Result<(), Error> {
        let (path, _) = self
            .pending
            .take()
            .filter(|(_, ino)| *ino == inode.ino)
            .ok_or_else(|| local(&self.root, format!("inode {} without an entry", inode.ino)))?;
        let kind =
            FileKind::from_mode(inode.mode).ok_or_else(|| local(&path, "unknown file type"))?;
        match kind {
            FileKind::Dir => {
                std::fs::create_dir(&path).map_err(|e| local(&path, e))?;
                self.directories.insert(inode.ino, path.clone());
            }
            FileKind::File => {
                let file = File::create(&path).map_err(|e| local(&path, e))?;
                if inode.nlink > 1 {
                    self.linked.insert(inode.ino, path.clone());
                }
                self.file = Some((file, path, inode));
                return Ok(());
            }
            FileKind::Symlink => {
                let target = inode
                    .target
                    .as_ref()
                    .map(|t| t.0.clone())
                    .unwrap_or_default();
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &path)
                    .map_err(|e| local(&path, e))?;
            }
            _ => {
                let c = cpath(&path)?;
                // SAFETY: valid C string.
                if unsafe { libc::mknod(c.as_ptr(), inode.mode, u64::from(inode.rdev)) } != 0 {
                    return Err(local(&path, std::io::Error::last_os_error()));
                }
            }
        }
        if inode.nlink > 1 && kind != FileKind::Dir {
            self.linked.insert(inode.ino, path.clone());
        }
        if kind == FileKind::Dir {
            self.finish_dirs.push((path, inode));
            Ok(())
        } else {
            apply(&path, &inode, kind == FileKind::Symlink)
        }
    }

    /// Applies the directories' attributes, deepest first.
    pub fn finish(mut self) -> Result<(), Error> {
        while let Some((path, inode)) = self.finish_dirs.pop() {
            apply(&path, &inode, false)?;
        }
        Ok(())
    }
}

/// Sets extended attributes, owner, mode and times, in the order that keeps each.
fn apply(path: &Path, inode: &Inode, symlink: bool) -> Result<(), Error> {
    let c = cpath(path)?;
    for (name, value) in &inode.xattrs {
        let n = CString::new(name.0.clone()).map_err(|_| local(path, "bad xattr name"))?;
        // SAFETY: valid C strings and buffer.
        let r = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                n.as_ptr(),
                value.0.as_ptr().cast(),
                value.0.len(),
                0,
            )
        };
        if r != 0 {
            return Err(local(
                path,
                format!("setting xattr: {}", std::io::Error::last_os_error()),
            ));
        }
    }
    // SAFETY: valid C string.
    if unsafe { libc::lchown(c.as_ptr(), inode.uid, inode.gid) } != 0 {
        return Err(local(
            path,
            format!("chown: {}", std::io::Error::last_os_error()),
        ));
    }
    // SAFETY: valid C string; chmod after chown, which clears set-id bits.
    if !symlink && unsafe { libc::chmod(c.as_ptr(), inode.mode & 0o7777) } != 0 {
        return Err(local(
            path,
            format!("chmod: {}", std::io::Error::last_os_error()),
        ));
    }
    let times = [
        libc::timespec {
            tv_sec: inode.atime.0,
            tv_nsec: i64::from(inode.atime.1),
        },
        libc::timespec {
            tv_sec: inode.mtime.0,
            tv_nsec: i64::from(inode.mtime.1),
        },
    ];
    // SAFETY: valid C string and two timespecs.
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(local(
            path,
            format!("setting times: {}", std::io::Error::last_os_error()),
        ));
    }
    Ok(())
}
