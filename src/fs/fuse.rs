//! The fuser adapter: every request that needs Redis moves its reply into a task on the
//! mount's runtime and answers from there, so FUSE threads never wait on the network.

use std::ffi::OsStr;
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileHandle, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLock, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tokio::sync::Semaphore;

use crate::attr::{Attr, FileKind, Timestamp};
use crate::error::FsError;
use crate::meta::{AttrChange, LockState, Stored, Usage};
use crate::metrics::{metrics, Cache, RequestTimer};
use crate::time_request;

use super::ops::attrs::XattrReply;
use super::ops::dirs::{stand_in, DirPage};
use super::ops::locks::Lock;
use super::ops::{Caller, NewInode, NAME_MAX};
use super::{lock, Core, WriteAnswer};

/// Requests served at once; more wait for a slot (bounding memory under a flood of writes).
const MAX_IN_FLIGHT: usize = 512;
/// Largest write the kernel sends in one request, and the read-ahead window asked for.
pub const MAX_WRITE: u32 = 1 << 20;
/// Unit of the block counts statfs reports.
const STATFS_UNIT: u64 = 4096;

/// A mounted filesystem as fuser sees it.
pub struct RedisFs {
    core: Arc<Core>,
    runtime: tokio::runtime::Handle,
    slots: Arc<Semaphore>,
}

/// A fuser reply that can carry a `T`.
trait Respond<T>: Send + 'static {
    fn answer(self, value: T, core: &Core);
    fn fail(self, err: Errno);
}

/// Implements [`Respond`] for a reply type: how it carries a value (every reply fails alike).
macro_rules! respond {
    ($reply:ty, $value:ty, |$this:ident, $v:pat_param, $core:pat_param| $answer:block) => {
        impl Respond<$value> for $reply {
            fn answer($this, $v: $value, $core: &Core) $answer
            fn fail(self, err: Errno) {
                self.error(err);
            }
        }
    };
}

respond!(ReplyAttr, Attr, |self, a, core| {
    self.attr(&core.settings.ttl, &a.to_fuser(core.block_size));
});

respond!(ReplyEntry, Attr, |self, a, core| {
    self.entry(
        &core.settings.ttl,
        &a.to_fuser(core.block_size),
        Generation(0),
    );
});

respond!(ReplyEmpty, (), |self, _, _| {
    self.ok();
});

respond!(ReplyData, Vec<u8>, |self, data, _| {
    self.data(&data);
});

respond!(ReplyWrite, u32, |self, n, _| {
    self.written(n);
});

respond!(ReplyOpen, (u64, bool), |self, (fh, keep_cache), _| {
    let flags = if keep_cache {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::empty()
    };
    self.opened(FileHandle(fh), flags);
});

respond!(ReplyCreate, (Attr, u64), |self, (a, fh), core| {
    self.created(
        &core.settings.ttl,
        &a.to_fuser(core.block_size),
        Generation(0),
        FileHandle(fh),
        FopenFlags::empty(),
    );
});

respond!(ReplyLock, LockState, |self, l, _| {
    self.locked(l.start, l.end.unwrap_or(i64::MAX as u64), l.kind, l.pid);
});

respond!(ReplyLseek, i64, |self, offset, _| {
    self.offset(offset);
});

respond!(ReplyXattr, XattrReply, |self, r, _| {
    match r {
        XattrReply::Size(n) => self.size(n),
        XattrReply::Data(d) => self.data(&d),
    }
});

respond!(ReplyStatfs, Usage, |self, u, core| {
    // A filesystem made before the byte counters shows the most its blocks may hold.
    let stored =
        (u.counters.stored_bytes).unwrap_or(u.counters.blocks * u64::from(core.block_size));
    let used = stored.div_ceil(STATFS_UNIT);
    let free = u.available / STATFS_UNIT;
    // Inodes cost about 150 bytes of Redis each: offer what the free memory would hold.
    let free_inodes = u.available / 150;
    self.statfs(
        used + free,
        free,
        free,
        u.counters.inodes + free_inodes,
        free_inodes,
        STATFS_UNIT as u32,
        NAME_MAX as u32,
        STATFS_UNIT as u32,
    );
});

fn time(t: TimeOrNow) -> Timestamp {
    match t {
        TimeOrNow::Now => Timestamp::now(),
        TimeOrNow::SpecificTime(s) => Timestamp::from_system(s),
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
        umask: 0,
    }
}

/// The caller of a create, whose `umask` applies unless the directory has a default ACL.
fn creator(req: &Request, umask: u32) -> Caller {
    Caller {
        umask,
        ..caller(req)
    }
}

impl RedisFs {
    /// The adapter for `core`, running its tasks on `runtime`.
    pub fn new(core: Arc<Core>, runtime: tokio::runtime::Handle) -> RedisFs {
        RedisFs {
            core,
            runtime,
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// Runs `op` on the runtime and answers `reply` with its outcome (then `timer` counts
    /// the request).
    fn serve<T, R, F, Fut>(&self, timer: RequestTimer, reply: R, op: F)
    where
        T: Send + 'static,
        R: Respond<T>,
        F: FnOnce(Arc<Core>) -> Fut,
        Fut: Future<Output = Result<T, FsError>> + Send + 'static,
    {
        let core = self.core.clone();
        let work = op(core.clone());
        let slots = self.slots.clone();
        self.core.spawn(&self.runtime, async move {
            let mut timer = timer;
            let _slot = slots.acquire_owned().await;
            match work.await {
                Ok(v) => reply.answer(v, &core),
                Err(e) => reply.fail(timer.failed(e)),
            }
            drop(timer);
        });
    }
}

impl RedisFs {
    /// Answers on the FUSE thread, with what this mount already knows.
    fn answer_now<T, R: Respond<T>>(
        &self,
        mut timer: RequestTimer,
        reply: R,
        result: Result<T, FsError>,
    ) {
        match result {
            Ok(v) => reply.answer(v, &self.core),
            Err(e) => reply.fail(timer.failed(e)),
        }
        drop(timer);
    }

    /// Like [`RedisFs::serve`], for an operation that changes the filesystem or stores
    /// buffered data: it waits while a snapshot holds the filesystem still.
    fn serve_change<T, R, F, Fut>(&self, timer: RequestTimer, reply: R, op: F)
    where
        T: Send + 'static,
        R: Respond<T>,
        F: FnOnce(Arc<Core>) -> Fut,
        Fut: Future<Output = Result<T, FsError>> + Send + 'static,
    {
        self.serve(timer, reply, move |c| {
            let work = op(c.clone());
            async move { c.freeze.pass(work).await }
        });
    }

    /// Takes or releases `asked` through `fh`; with `sleep`, waiting until the asking thread
    /// (from the request: the lock's own pid names its process, or nothing for an OFD lock)
    /// is signalled.
    fn take_lock(
        &self,
        timer: RequestTimer,
        req: &Request,
        asked: Lock,
        fh: FileHandle,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let wait = sleep.then_some(req.pid());
        self.serve(timer, reply, move |c| async move {
            c.setlk(asked, fh.0, wait).await
        });
    }
}

fn bytes(name: &OsStr) -> Vec<u8> {
    name.as_bytes().to_vec()
}

/// Answers a readdirplus with as much of `page` as the kernel's buffer takes.
fn answer_dir_page(core: &Core, mut reply: ReplyDirectoryPlus, page: DirPage) {
    for (i, e, stored) in page {
        let (attr, ttl) = match stored {
            Stored::Attr(attr) => (attr, core.settings.ttl),
            // (`dir_page` leaves out entries whose inode vanished since the listing.)
            Stored::Missing => continue,
            // Listed, never dropped; its look-up and stat fail with EIO.
            Stored::Corrupt => (stand_in(e.ino, e.kind), Duration::ZERO),
        };
        let full = reply.add(
            INodeNo(e.ino),
            i as u64 + 1,
            OsStr::from_bytes(&e.name),
            &ttl,
            &attr.to_fuser(core.block_size),
            Generation(0),
        );
        if full {
            break;
        }
    }
    reply.ok();
}

impl fuser::Filesystem for RedisFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Export support: file handles (name_to_handle_at, an NFS export of the mount) stay
        // valid after the kernel forgets the inode, which it then looks up again by number.
        let mut wanted = InitFlags::FUSE_EXPORT_SUPPORT
            // The kernel passes each create's mode unmasked with the umask beside it: a
            // directory's default ACL replaces the umask (see acl.rs).
            | InitFlags::FUSE_DONT_MASK
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_ASYNC_DIO;
        if self.core.settings.acl {
            // The kernel enforces POSIX ACLs.
            wanted |= InitFlags::FUSE_POSIX_ACL;
        }
        if !self.core.settings.read_only {
            // Locks live in Redis and a read-only mount (maybe of a replica) cannot write
            // them: there the kernel keeps locks local.
            wanted |= InitFlags::FUSE_POSIX_LOCKS | InitFlags::FUSE_FLOCK_LOCKS;
            if self.core.settings.writeback {
                wanted |= InitFlags::FUSE_WRITEBACK_CACHE;
            }
        }
        for flag in wanted.iter() {
            if config.add_capabilities(flag).is_err() {
                tracing::debug!("kernel lacks {flag:?}");
            }
        }
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(MAX_WRITE);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let timer = time_request!("lookup");
        let known = self.core.lookup_cached(parent.0, name.as_bytes());
        metrics().cache_lookup(Cache::Names, known.is_some());
        if let Some(known) = known {
            return self.answer_now(timer, reply, known);
        }
        let name = bytes(name);
        self.serve(timer, reply, move |c| async move {
            c.lookup(parent.0, &name).await
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let timer = time_request!("getattr");
        let known = self.core.getattr_cached(ino.0);
        metrics().cache_lookup(Cache::Attributes, known.is_some());
        if let Some(attr) = known {
            return self.answer_now(timer, reply, Ok(attr));
        }
        self.serve(timer, reply, move |c| async move { c.getattr(ino.0).await });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let timer = time_request!("setattr");
        let change = AttrChange {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
            ctime: ctime.map(Timestamp::from_system),
            accessed: None,
        };
        let truncating = size.is_some().then(|| caller(req));
        self.serve_change(timer, reply, move |c| async move {
            let attr = c.setattr(ino.0, change).await?;
            match truncating {
                Some(by) => c.drop_set_id_bits(attr, by).await,
                None => Ok(attr),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let timer = time_request!("readlink");
        self.serve(
            timer,
            reply,
            move |c| async move { c.readlink(ino.0).await },
        );
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let mut timer = time_request!("mknod");
        let (name, who) = (bytes(name), creator(req, umask));
        let Some(kind) = FileKind::from_mode(mode) else {
            return reply.error(timer.failed(FsError::Invalid));
        };
        if let Some(done) =
            self.core
                .make_deferred(parent.0, &name, NewInode::new(kind, mode, rdev, who))
        {
            return self.answer_now(timer, reply, done);
        }
        self.serve_change(timer, reply, move |c| async move {
            c.make(parent.0, &name, NewInode::new(kind, mode, rdev, who), false)
                .await
                .map(|(attr, _)| attr)
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let timer = time_request!("mkdir");
        let (name, who) = (bytes(name), creator(req, umask));
        if let Some(done) =
            self.core
                .make_deferred(parent.0, &name, NewInode::new(FileKind::Dir, mode, 0, who))
        {
            return self.answer_now(timer, reply, done);
        }
        self.serve_change(timer, reply, move |c| async move {
            c.make(
                parent.0,
                &name,
                NewInode::new(FileKind::Dir, mode, 0, who),
                false,
            )
            .await
            .map(|(attr, _)| attr)
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let timer = time_request!("unlink");
        let name = bytes(name);
        if let Some(done) = self.core.remove_deferred(parent.0, &name, false) {
            return self.answer_now(timer, reply, done);
        }
        self.serve_change(timer, reply, move |c| async move {
            c.remove(parent.0, &name, false).await
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let timer = time_request!("rmdir");
        let name = bytes(name);
        if let Some(done) = self.core.remove_deferred(parent.0, &name, true) {
            return self.answer_now(timer, reply, done);
        }
        self.serve_change(timer, reply, move |c| async move {
            c.remove(parent.0, &name, true).await
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let timer = time_request!("symlink");
        let (name, target, who) = (bytes(link_name), bytes(target.as_os_str()), caller(req));
        self.serve_change(timer, reply, move |c| async move {
            c.make(parent.0, &name, NewInode::symlink(&target, who), false)
                .await
                .map(|(attr, _)| attr)
        });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let timer = time_request!("rename");
        let (name, newname) = (bytes(name), bytes(newname));
        let who = caller(req);
        self.serve_change(timer, reply, move |c| async move {
            c.rename(parent.0, &name, newparent.0, &newname, flags.bits(), who)
                .await
        });
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let timer = time_request!("link");
        let name = bytes(newname);
        self.serve_change(timer, reply, move |c| async move {
            c.link(ino.0, newparent.0, &name).await
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let timer = time_request!("open");
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        let read = flags.acc_mode() != OpenAccMode::O_WRONLY;
        let runtime = self.runtime.clone();
        self.serve(timer, reply, move |c| async move {
            let opened = c.open(ino.0, write).await?;
            // Reads of pages the kernel caches never reach the mount: an open for reading
            // counts as the access.
            if let Some(file) = c.file(opened.0).ok().filter(|_| read) {
                c.accessed(&file.state().attr, &runtime);
            }
            Ok(opened)
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let timer = time_request!("read");
        if let Ok(file) = self.core.file(fh.0) {
            self.core.accessed(&file.state().attr, &self.runtime);
            if let Some(data) = self.core.read_cached(&file, offset, size, &self.runtime) {
                metrics().read(data.len());
                return self.answer_now(timer, reply, Ok(data));
            }
        }
        self.serve(timer, reply, move |c| async move {
            let data = c.read(fh.0, offset, size).await?;
            metrics().read(data.len());
            Ok(data)
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut timer = time_request!("write");
        // With its writeback cache the kernel keeps the size and places appends itself.
        let append = flags.0 & libc::O_APPEND != 0 && !self.core.settings.writeback;
        let (written, by) = (data.len() as u32, caller(req));
        match self
            .core
            .write_now(fh.0, ino.0, offset, data, append, &by, &self.runtime)
        {
            Ok(WriteAnswer::Now) => {
                metrics().written(data.len());
                reply.written(written);
            }
            Ok(WriteAnswer::AfterStore(file, only_full)) => {
                self.serve_change(timer, reply, move |c| async move {
                    c.flush_file(&file, only_full).await?;
                    metrics().written(written as usize);
                    Ok(written)
                });
            }
            Ok(WriteAnswer::InTask) => {
                let data = data.to_vec();
                self.serve_change(timer, reply, move |c| async move {
                    let written = c.write(fh.0, offset, &data, append, by).await?;
                    metrics().written(written as usize);
                    Ok(written)
                });
            }
            Err(e) => reply.error(timer.failed(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let timer = time_request!("flush");
        if let Some(done) = self.core.flush_at_once(fh.0, ino.0, lock_owner.0) {
            return self.answer_now(timer, reply, done);
        }
        // close(2) drops the process's fcntl locks on the file.
        let unlock = self
            .core
            .locks
            .begin_release(ino.0, None, Some(lock_owner.0));
        self.serve(timer, reply, move |c| async move {
            let unlocked = c.finish_release(unlock).await;
            c.freeze.pass(c.flush(fh.0)).await.and(unlocked)
        });
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let timer = time_request!("release");
        let owner = lock_owner.map(|o| o.0);
        if let Some(done) = self.core.release_at_once(fh.0, ino.0, owner) {
            return self.answer_now(timer, reply, done);
        }
        // The last close of an open file description drops its flock and OFD locks; taken
        // out here, as the request is read (see `LockTable`). Unlocked outside a freeze's hold,
        // as locks are taken: lock requests on the file wait for this.
        let unlock = self.core.locks.begin_release(ino.0, Some(fh.0), owner);
        self.serve(timer, reply, move |c| async move {
            let unlocked = c.finish_release(unlock).await;
            c.freeze.pass(c.release(fh.0)).await.and(unlocked)
        });
    }

    fn getlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let timer = time_request!("getlk");
        let asked = Lock::asked(ino.0, lock_owner.0, (start, end), typ, pid);
        self.serve(timer, reply, move |c| async move { c.getlk(asked).await });
    }

    fn setlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let timer = time_request!("setlk");
        let asked = Lock::asked(ino.0, lock_owner.0, (start, end), typ, pid);
        self.take_lock(timer, req, asked, fh, sleep, reply);
    }

    fn flock(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let timer = time_request!("flock");
        let asked = Lock::flock(ino.0, lock_owner.0, typ, pid);
        self.take_lock(timer, req, asked, fh, sleep, reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let timer = time_request!("fsync");
        self.serve_change(timer, reply, move |c| async move { c.flush(fh.0).await });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let timer = time_request!("opendir");
        // Opened to be listed: the access is counted here.
        if let Some(attr) = self.core.getattr_cached(ino.0) {
            self.core.accessed(&attr, &self.runtime);
            let fh = self.core.opendir(ino.0, attr);
            return self.answer_now(timer, reply, Ok((fh, false)));
        }
        let runtime = self.runtime.clone();
        self.serve(timer, reply, move |c| async move {
            let attr = c.getattr(ino.0).await?;
            c.accessed(&attr, &runtime);
            Ok((c.opendir(ino.0, attr), false))
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let timer = time_request!("readdir");
        let core = self.core.clone();
        let slots = self.slots.clone();
        self.core.spawn(&self.runtime, async move {
            let mut timer = timer;
            let _slot = slots.acquire_owned().await;
            let handle = match core.dir_listed_to(fh.0, offset as usize).await {
                Ok(h) => h,
                Err(e) => return reply.error(timer.failed(e)),
            };
            let mut reply = reply;
            let h = lock(&handle);
            for (i, e) in h.entries.iter().enumerate().skip(offset as usize) {
                if reply.add(
                    INodeNo(e.ino),
                    i as u64 + 1,
                    e.kind.to_fuser(),
                    OsStr::from_bytes(&e.name),
                ) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let mut timer = time_request!("readdirplus");
        let fast = {
            // (Reading ahead starts tasks.)
            let _in_runtime = self.runtime.enter();
            self.core.dir_page_now(fh.0, offset as usize)
        };
        match fast {
            Some(Ok(page)) => return answer_dir_page(&self.core, reply, page),
            Some(Err(e)) => return reply.error(timer.failed(e)),
            None => {}
        }
        let core = self.core.clone();
        let slots = self.slots.clone();
        self.core.spawn(&self.runtime, async move {
            let mut timer = timer;
            let _slot = slots.acquire_owned().await;
            match core.dir_page(fh.0, offset as usize).await {
                Ok(page) => answer_dir_page(&core, reply, page),
                Err(e) => reply.error(timer.failed(e)),
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _timer = time_request!("releasedir");
        self.core.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let timer = time_request!("fsyncdir");
        self.serve(
            timer,
            reply,
            move |c| async move { c.sync_entries(fh.0).await },
        );
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let timer = time_request!("statfs");
        self.serve(timer, reply, move |c| async move { c.usage().await });
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let timer = time_request!("setxattr");
        let (name, value) = (bytes(name), value.to_vec());
        self.serve_change(timer, reply, move |c| async move {
            c.setxattr(ino.0, &name, &value, flags).await
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let mut timer = time_request!("getxattr");
        if let Err(e) = self.core.check_xattr_name(name.as_bytes()) {
            return reply.error(timer.failed(e));
        }
        if self.core.xattr_known_absent(ino.0) {
            return reply.error(timer.failed(FsError::NoData));
        }
        let name = bytes(name);
        self.serve(timer, reply, move |c| async move {
            c.getxattr(ino.0, &name, size).await
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let timer = time_request!("listxattr");
        self.serve(timer, reply, move |c| async move {
            c.listxattr(ino.0, size).await
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let timer = time_request!("removexattr");
        let name = bytes(name);
        self.serve_change(timer, reply, move |c| async move {
            c.removexattr(ino.0, &name).await
        });
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let timer = time_request!("access");
        let who = caller(req);
        self.serve(timer, reply, move |c| async move {
            c.access(ino.0, mask.bits(), who).await
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let timer = time_request!("create");
        let (name, who) = (bytes(name), creator(req, umask));
        if let Some(done) = self.core.create_deferred(parent.0, &name, mode, who) {
            return self.answer_now(timer, reply, done);
        }
        let exclusive = flags & libc::O_EXCL != 0;
        self.serve_change(timer, reply, move |c| async move {
            c.create(parent.0, &name, mode, who, exclusive).await
        });
    }

    fn tmpfile(
        &self,
        req: &Request,
        parent: INodeNo,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let timer = time_request!("tmpfile");
        let who = creator(req, umask);
        self.serve_change(timer, reply, move |c| async move {
            c.tmpfile(parent.0, mode, who).await
        });
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let timer = time_request!("fallocate");
        let by = caller(req);
        self.serve_change(timer, reply, move |c| async move {
            c.fallocate(fh.0, offset, length, mode, by).await
        });
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let timer = time_request!("lseek");
        self.serve(timer, reply, move |c| async move {
            c.lseek(fh.0, offset, whence).await
        });
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let timer = time_request!("copy_file_range");
        self.serve_change(timer, reply, move |c| async move {
            c.copy_range(fh_in.0, offset_in, fh_out.0, offset_out, len)
                .await
        });
    }
}
