//! Every filesystem operation and its error cases, on a real mount.

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::time::Duration;

use common::{check, cpath, Mount, Redis};

fn setup() -> Option<(Redis, Mount)> {
    if !common::ready() {
        return None;
    }
    let redis = Redis::start();
    let mount = Mount::new(&redis, "skx", &[]);
    Some((redis, mount))
}

fn errno_of(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

#[test]
fn files_directories_and_their_errors() {
    let Some((_r, m)) = setup() else { return };
    let f = m.join("a.txt");
    fs::write(&f, b"hello world").unwrap();
    assert_eq!(fs::read(&f).unwrap(), b"hello world");
    assert_eq!(fs::metadata(&f).unwrap().len(), 11);

    fs::create_dir(m.join("d")).unwrap();
    assert_eq!(
        errno_of(fs::create_dir(m.join("d")).unwrap_err()),
        libc::EEXIST
    );
    fs::write(m.join("d/inner"), b"x").unwrap();
    assert_eq!(
        errno_of(fs::remove_dir(m.join("d")).unwrap_err()),
        libc::ENOTEMPTY
    );
    assert_eq!(
        errno_of(fs::remove_file(m.join("d")).unwrap_err()),
        libc::EISDIR
    );
    assert_eq!(errno_of(fs::remove_dir(&f).unwrap_err()), libc::ENOTDIR);
    assert_eq!(
        errno_of(fs::read(m.join("missing")).unwrap_err()),
        libc::ENOENT
    );
    assert_eq!(
        errno_of(fs::write(m.join("a.txt/x"), b"").unwrap_err()),
        libc::ENOTDIR
    );
    let long = "n".repeat(256);
    assert_eq!(
        errno_of(fs::write(m.join(&long), b"").unwrap_err()),
        libc::ENAMETOOLONG
    );
    fs::write(m.join("n".repeat(255)), b"ok").unwrap();

    // Directory link counts: 2 + subdirectories.
    fs::create_dir(m.join("d/sub")).unwrap();
    assert_eq!(fs::metadata(m.join("d")).unwrap().nlink(), 3);
    fs::remove_dir(m.join("d/sub")).unwrap();
    assert_eq!(fs::metadata(m.join("d")).unwrap().nlink(), 2);
    fs::remove_file(m.join("d/inner")).unwrap();
    fs::remove_dir(m.join("d")).unwrap();
    assert!(!m.join("d").exists());

    let mut names: Vec<String> = fs::read_dir(&m.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["a.txt".to_string(), "n".repeat(255)]);
}

#[test]
fn links_symlinks_and_special_files() {
    let Some((_r, m)) = setup() else { return };
    fs::write(m.join("f"), b"data").unwrap();
    fs::hard_link(m.join("f"), m.join("g")).unwrap();
    assert_eq!(fs::metadata(m.join("f")).unwrap().nlink(), 2);
    assert_eq!(
        fs::metadata(m.join("f")).unwrap().ino(),
        fs::metadata(m.join("g")).unwrap().ino()
    );
    fs::remove_file(m.join("f")).unwrap();
    assert_eq!(fs::read(m.join("g")).unwrap(), b"data");
    assert_eq!(fs::metadata(m.join("g")).unwrap().nlink(), 1);
    fs::create_dir(m.join("dir")).unwrap();
    assert_eq!(
        errno_of(fs::hard_link(m.join("dir"), m.join("dir2")).unwrap_err()),
        libc::EPERM
    );

    let target = "some/where/".repeat(300);
    std::os::unix::fs::symlink(&target[..3000], m.join("long")).unwrap();
    assert_eq!(
        fs::read_link(m.join("long")).unwrap().to_str().unwrap(),
        &target[..3000]
    );
    std::os::unix::fs::symlink("g", m.join("s")).unwrap();
    assert_eq!(fs::read(m.join("s")).unwrap(), b"data");
    let meta = fs::symlink_metadata(m.join("s")).unwrap();
    assert!(meta.file_type().is_symlink());
    assert_eq!(meta.len(), 1);

    let mk = |name: &str, mode: u32, dev: u64| {
        // SAFETY: valid path and mode.
        check(unsafe { libc::mknod(cpath(&m.join(name)).as_ptr(), mode, dev) } as i64)
    };
    mk("fifo", libc::S_IFIFO | 0o640, 0).unwrap();
    mk("chr", libc::S_IFCHR | 0o600, libc::makedev(1, 3)).unwrap();
    mk("blk", libc::S_IFBLK | 0o600, libc::makedev(8, 1)).unwrap();
    let sock = std::os::unix::net::UnixListener::bind(m.join("sock")).unwrap();
    drop(sock);
    let ft = |n: &str| fs::symlink_metadata(m.join(n)).unwrap().file_type();
    assert!(ft("fifo").is_fifo());
    assert!(ft("chr").is_char_device());
    assert!(ft("blk").is_block_device());
    assert!(ft("sock").is_socket());
    assert_eq!(
        fs::metadata(m.join("chr")).unwrap().rdev(),
        libc::makedev(1, 3)
    );
    assert_eq!(
        fs::metadata(m.join("blk")).unwrap().rdev(),
        libc::makedev(8, 1)
    );
    assert_eq!(fs::metadata(m.join("fifo")).unwrap().mode() & 0o7777, 0o640);
}

#[test]
fn permissions_ownership_and_times() {
    let Some((_r, m)) = setup() else { return };
    let f = m.join("f");
    fs::write(&f, b"x").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o6755)).unwrap();
    assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7777, 0o6755);
    std::os::unix::fs::chown(&f, Some(1000), Some(1000)).unwrap();
    let meta = fs::metadata(&f).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
    assert_eq!(
        meta.mode() & 0o6000,
        0,
        "chown clears set-user-id and set-group-id"
    );

    // Nanosecond times, UTIME_OMIT and UTIME_NOW.
    let times = [
        libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 123_456_789,
        },
        libc::timespec {
            tv_sec: 1_500_000_000,
            tv_nsec: 987_654_321,
        },
    ];
    // SAFETY: valid path and two timespecs.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, cpath(&f).as_ptr(), times.as_ptr(), 0) } as i64)
        .unwrap();
    let meta = fs::metadata(&f).unwrap();
    assert_eq!(
        (meta.atime(), meta.atime_nsec()),
        (1_000_000_000, 123_456_789)
    );
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_500_000_000, 987_654_321)
    );
    let omit_now = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
    ];
    // SAFETY: as above.
    check(
        unsafe { libc::utimensat(libc::AT_FDCWD, cpath(&f).as_ptr(), omit_now.as_ptr(), 0) } as i64,
    )
    .unwrap();
    let meta = fs::metadata(&f).unwrap();
    assert_eq!(
        (meta.atime(), meta.atime_nsec()),
        (1_000_000_000, 123_456_789),
        "atime omitted"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((meta.mtime() - now).abs() < 5, "mtime set to now");

    // Writing updates mtime and ctime.
    let before = fs::metadata(&f).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .unwrap()
        .write_all(b"more")
        .unwrap();
    let after = fs::metadata(&f).unwrap();
    assert!((after.mtime(), after.mtime_nsec()) > (before.mtime(), before.mtime_nsec()));
    assert!((after.ctime(), after.ctime_nsec()) > (before.ctime(), before.ctime_nsec()));
}

#[test]
fn truncate_up_and_down_reads_zeros() {
    let Some((_r, m)) = setup() else { return };
    let f = m.join("t");
    let data = common::random_bytes(200_000, 7);
    fs::write(&f, &data).unwrap();
    let file = fs::OpenOptions::new().write(true).open(&f).unwrap();
    file.set_len(70_000).unwrap();
    assert_eq!(fs::read(&f).unwrap(), &data[..70_000]);
    file.set_len(300_000).unwrap();
    let back = fs::read(&f).unwrap();
    assert_eq!(back.len(), 300_000);
    assert_eq!(&back[..70_000], &data[..70_000]);
    assert!(
        back[70_000..].iter().all(|&b| b == 0),
        "bytes past an old end read as zeros"
    );
    file.set_len(0).unwrap();
    assert_eq!(fs::read(&f).unwrap().len(), 0);
    drop(file);
    // O_TRUNC on open.
    fs::write(&f, b"abc").unwrap();
    fs::write(&f, b"d").unwrap();
    assert_eq!(fs::read(&f).unwrap(), b"d");
}

fn renameat2(from: &std::path::Path, to: &std::path::Path, flags: u32) -> Result<i64, i32> {
    // SAFETY: valid paths; renameat2 through syscall since not every libc wraps it.
    check(unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            cpath(from).as_ptr(),
            libc::AT_FDCWD,
            cpath(to).as_ptr(),
            flags,
        )
    })
}

#[test]
fn rename_in_all_its_forms() {
    let Some((_r, m)) = setup() else { return };
    fs::write(m.join("a"), b"A").unwrap();
    fs::write(m.join("b"), b"B").unwrap();
    fs::create_dir_all(m.join("x/y")).unwrap();
    fs::create_dir(m.join("empty")).unwrap();
    fs::create_dir(m.join("full")).unwrap();
    fs::write(m.join("full/f"), b"").unwrap();

    // Replace a file; the replaced inode is gone.
    let dir_before = fs::metadata(&m.path).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::rename(m.join("a"), m.join("b")).unwrap();
    assert_eq!(fs::read(m.join("b")).unwrap(), b"A");
    assert!(!m.join("a").exists());
    let dir_after = fs::metadata(&m.path).unwrap();
    assert!(
        (dir_after.mtime(), dir_after.mtime_nsec()) > (dir_before.mtime(), dir_before.mtime_nsec())
    );

    // Directories: replace an empty one, refuse a full one, refuse a file.
    fs::rename(m.join("x"), m.join("empty")).unwrap();
    assert!(m.join("empty/y").is_dir());
    fs::create_dir(m.join("x")).unwrap();
    assert_eq!(
        errno_of(fs::rename(m.join("x"), m.join("full")).unwrap_err()),
        libc::ENOTEMPTY
    );
    assert_eq!(
        errno_of(fs::rename(m.join("x"), m.join("b")).unwrap_err()),
        libc::ENOTDIR
    );
    assert_eq!(
        errno_of(fs::rename(m.join("b"), m.join("x")).unwrap_err()),
        libc::EISDIR
    );
    // Into itself.
    assert_eq!(
        errno_of(fs::rename(m.join("empty"), m.join("empty/y/z")).unwrap_err()),
        libc::EINVAL
    );

    // Across directories, with link counts following.
    fs::rename(m.join("empty/y"), m.join("full/y")).unwrap();
    assert_eq!(fs::metadata(m.join("empty")).unwrap().nlink(), 2);
    assert_eq!(fs::metadata(m.join("full")).unwrap().nlink(), 3);
    fs::rename(m.join("b"), m.join("full/b")).unwrap();
    assert_eq!(fs::read(m.join("full/b")).unwrap(), b"A");

    // RENAME_NOREPLACE and RENAME_EXCHANGE.
    fs::write(m.join("p"), b"P").unwrap();
    fs::write(m.join("q"), b"Q").unwrap();
    assert_eq!(
        renameat2(&m.join("p"), &m.join("q"), libc::RENAME_NOREPLACE),
        Err(libc::EEXIST)
    );
    renameat2(&m.join("p"), &m.join("new"), libc::RENAME_NOREPLACE).unwrap();
    renameat2(&m.join("new"), &m.join("q"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read(m.join("q")).unwrap(), b"P");
    assert_eq!(fs::read(m.join("new")).unwrap(), b"Q");
    assert_eq!(
        renameat2(&m.join("new"), &m.join("nothing"), libc::RENAME_EXCHANGE),
        Err(libc::ENOENT)
    );
    // Exchange a file with a directory across parents.
    renameat2(&m.join("q"), &m.join("full/y"), libc::RENAME_EXCHANGE).unwrap();
    assert!(m.join("q").is_dir() && m.join("full/y").is_file());
    assert_eq!(fs::metadata(m.join("full")).unwrap().nlink(), 2);

    // ctime of the moved inode changes.
    let before = fs::metadata(m.join("new")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::rename(m.join("new"), m.join("renamed")).unwrap();
    let after = fs::metadata(m.join("renamed")).unwrap();
    assert!((after.ctime(), after.ctime_nsec()) > (before.ctime(), before.ctime_nsec()));
}

fn setxattr(p: &std::path::Path, name: &str, value: &[u8], flags: i32) -> Result<i64, i32> {
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid strings and buffer.
    check(unsafe {
        libc::setxattr(
            cpath(p).as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    } as i64)
}

fn getxattr(p: &std::path::Path, name: &str) -> Result<Vec<u8>, i32> {
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 70_000];
    // SAFETY: valid strings and buffer.
    let len = check(unsafe {
        libc::getxattr(
            cpath(p).as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    } as i64)?;
    buf.truncate(len as usize);
    Ok(buf)
}

fn listxattr(p: &std::path::Path) -> Vec<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid path and buffer.
    let len =
        check(
            unsafe { libc::listxattr(cpath(p).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
                as i64,
        )
        .unwrap();
    let mut names: Vec<String> = buf[..len as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn extended_attributes() {
    let Some((_r, m)) = setup() else { return };
    let f = m.join("f");
    fs::write(&f, b"").unwrap();
    setxattr(&f, "user.a", b"1", 0).unwrap();
    setxattr(&f, "user.b", &[0, 255, 7], 0).unwrap();
    assert_eq!(getxattr(&f, "user.a").unwrap(), b"1");
    assert_eq!(getxattr(&f, "user.b").unwrap(), vec![0, 255, 7]);
    assert_eq!(
        setxattr(&f, "user.a", b"2", libc::XATTR_CREATE),
        Err(libc::EEXIST)
    );
    assert_eq!(
        setxattr(&f, "user.c", b"2", libc::XATTR_REPLACE),
        Err(libc::ENODATA)
    );
    setxattr(&f, "user.a", b"22", libc::XATTR_REPLACE).unwrap();
    assert_eq!(getxattr(&f, "user.a").unwrap(), b"22");
    assert_eq!(listxattr(&f), vec!["user.a", "user.b"]);
    let big = vec![7u8; 65536];
    setxattr(&f, "user.big", &big, 0).unwrap();
    assert_eq!(getxattr(&f, "user.big").unwrap(), big);
    assert_eq!(getxattr(&f, "user.none"), Err(libc::ENODATA));
    let n = std::ffi::CString::new("user.a").unwrap();
    // SAFETY: valid strings.
    check(unsafe { libc::removexattr(cpath(&f).as_ptr(), n.as_ptr()) } as i64).unwrap();
    assert_eq!(getxattr(&f, "user.a"), Err(libc::ENODATA));
    // SAFETY: as above.
    assert_eq!(
        check(unsafe { libc::removexattr(cpath(&f).as_ptr(), n.as_ptr()) } as i64),
        Err(libc::ENODATA)
    );
    // Small buffer: ERANGE.
    let name = std::ffi::CString::new("user.big").unwrap();
    let mut small = [0u8; 10];
    // SAFETY: valid buffer of its length.
    let r = unsafe {
        libc::getxattr(
            cpath(&f).as_ptr(),
            name.as_ptr(),
            small.as_mut_ptr().cast(),
            small.len(),
        )
    };
    assert_eq!(check(r as i64), Err(libc::ERANGE));
}

#[test]
fn statfs_reports_real_figures() {
    let Some((_r, m)) = setup() else { return };
    fs::write(m.join("f"), common::random_bytes(1 << 20, 3)).unwrap();
    // SAFETY: zeroed statvfs is a valid out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out-parameter.
    check(unsafe { libc::statvfs(cpath(&m.path).as_ptr(), &mut st) } as i64).unwrap();
    assert!(st.f_blocks > 0 && st.f_bavail > 0 && st.f_bavail <= st.f_blocks);
    let used = (st.f_blocks - st.f_bfree) * st.f_frsize;
    assert!(used >= 1 << 20, "1 MiB written shows as used ({used})");
    assert!(st.f_files > st.f_ffree && st.f_ffree > 0);
    assert_eq!(st.f_namemax, 255);
}

fn statvfs(path: &std::path::Path) -> libc::statvfs {
    // SAFETY: zeroed statvfs is a valid out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out-parameter.
    check(unsafe { libc::statvfs(cpath(path).as_ptr(), &mut st) } as i64).unwrap();
    st
}

/// The bytes the filesystem's blocks take in Redis, as Redis counts them.
fn bytes_in_blocks(r: &Redis, prefix: &str) -> u64 {
    let blocks = format!("{prefix}:b:");
    r.keys(prefix)
        .iter()
        .filter(|k| k.starts_with(&blocks))
        .map(|k| r.cmd::<u64>(&["STRLEN", k]))
        .sum()
}

/// What `redisfs-admin status --json` says of the filesystem's usage.
fn usage_by_admin(r: &Redis, prefix: &str) -> (u64, u64) {
    let out = common::tool_ok(
        "admin",
        &["status", "--redis", &r.url(), "--prefix", prefix, "--json"],
    );
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let field = |name: &str| {
        status[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} in {out}"))
    };
    (field("file_bytes"), field("stored_bytes"))
}

#[test]
fn df_counts_the_bytes_stored_and_offers_what_redis_has_left() {
    if !common::ready() {
        return;
    }
    let r = Redis::start_with(&["--maxmemory", "768mb"]);
    let m = Mount::new(&r, "skx", &["--compression", "zstd"]);
    let expect = |files: &[(String, u64)], why: &str| {
        let logical: u64 = files.iter().map(|(_, size)| size).sum();
        common::eventually(why, Duration::from_secs(20), || {
            let stored = bytes_in_blocks(&r, "skx");
            let st = statvfs(&m.path);
            let used = (st.f_blocks - st.f_bfree) * st.f_frsize;
            used == stored.div_ceil(4096) * 4096 && usage_by_admin(&r, "skx") == (logical, stored)
        });
        for (name, size) in files {
            assert_eq!(fs::metadata(m.join(name)).unwrap().len(), *size, "{name}");
        }
    };
    // Small files take what they hold, not a block each; text takes what it compresses to.
    let mut files: Vec<(String, u64)> = Vec::new();
    fs::create_dir(m.join("small")).unwrap();
    for i in 0..100 {
        let name = format!("small/{i}");
        fs::write(m.join(&name), common::random_bytes(1000, i)).unwrap();
        files.push((name, 1000));
    }
    fs::write(m.join("random"), common::random_bytes(3 << 20, 7)).unwrap();
    fs::write(m.join("text"), common::text_bytes(8 << 20)).unwrap();
    // Over 512 blocks: freed in the background when removed.
    fs::write(m.join("big"), common::random_bytes(40 << 20, 8)).unwrap();
    files.extend([
        ("random".into(), 3 << 20),
        ("text".into(), 8 << 20),
        ("big".into(), 40 << 20),
    ]);
    let stored = bytes_in_blocks(&r, "skx");
    assert!(
        stored < (100 * 1000 + (3 << 20) + (8 << 20) / 2 + (40 << 20)) + (1 << 20),
        "stored {stored}"
    );
    expect(&files, "df and admin show the bytes written");

    // Overwrites, truncation (inside a block and to nothing), an extension with a hole,
    // removals.
    let mut text = fs::OpenOptions::new()
        .write(true)
        .open(m.join("text"))
        .unwrap();
    text.seek(SeekFrom::Start(1 << 20)).unwrap();
    text.write_all(&common::random_bytes(2 << 20, 9)).unwrap();
    text.sync_all().unwrap();
    drop(text);
    let new_sizes = [("random", 100_000), ("small/0", 0), ("small/1", 5 << 20)];
    for (name, size) in new_sizes {
        fs::File::options()
            .write(true)
            .open(m.join(name))
            .unwrap()
            .set_len(size)
            .unwrap();
    }
    for i in 50..100 {
        fs::remove_file(m.join(format!("small/{i}"))).unwrap();
    }
    fs::remove_file(m.join("big")).unwrap();
    files.retain(|(n, _)| n != "big" && !(50..100).any(|i| *n == format!("small/{i}")));
    for (name, size) in files.iter_mut() {
        if let Some((_, new)) = new_sizes.iter().find(|(changed, _)| changed == name) {
            *size = *new;
        }
    }
    expect(
        &files,
        "df and admin follow overwrites, truncation and removal",
    );

    // Free space is what Redis may still use, under its maxmemory.
    let st = statvfs(&m.path);
    let available = st.f_bavail * st.f_frsize;
    let room = (768u64 << 20) - r.used_memory();
    assert!(
        available <= 768 << 20 && available.abs_diff(room) < 16 << 20,
        "available {available}, Redis has {room} left"
    );
    drop(m);
    common::assert_clean(&r, "skx");
}

#[test]
fn unlinked_open_file_stays_usable_until_closed() {
    let Some((r, m)) = setup() else { return };
    let f = m.join("ghost");
    fs::write(&f, b"still here").unwrap();
    let mut handle = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&f)
        .unwrap();
    fs::remove_file(&f).unwrap();
    assert!(!f.exists());
    let mut s = String::new();
    handle.read_to_string(&mut s).unwrap();
    assert_eq!(s, "still here");
    handle.write_all(b" and more").unwrap();
    handle.seek(SeekFrom::Start(0)).unwrap();
    s.clear();
    handle.read_to_string(&mut s).unwrap();
    assert_eq!(s, "still here and more");
    handle.sync_all().unwrap();
    let inodes = |r: &Redis| r.cmd::<u64>(&["HGET", "{skx}:stat", "inodes"]);
    assert_eq!(inodes(&r), 2, "root and the open orphan");
    drop(handle);
    for _ in 0..100 {
        if inodes(&r) == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(inodes(&r), 1, "the last close deleted the orphan");
    // Its blocks leave Redis a moment after (deleted in the background, see docs/design.md).
    common::eventually("its blocks to be gone", Duration::from_secs(5), || {
        r.keys("skx")
            .iter()
            .all(|k| !k.starts_with("skx:b:") && !k.starts_with("{skx}:m:"))
    });
}

#[test]
fn removed_files_and_directories_are_deleted_and_racing_opens_see_whole_files() {
    let Some((r, m)) = setup() else { return };
    let f = m.join("f");
    fs::create_dir(m.join("sub")).unwrap();
    fs::write(m.join("sub/x"), b"x").unwrap();
    fs::write(&f, common::random_bytes(300_000, 4)).unwrap();
    fs::remove_file(m.join("sub/x")).unwrap();
    fs::remove_dir(m.join("sub")).unwrap();
    fs::remove_file(&f).unwrap();
    // The removal deletes the inode, its block map and its blocks (itself, or at the release
    // the kernel sends after close(2) returns, if that comes later).
    let inodes = || r.cmd::<u64>(&["HGET", "{skx}:stat", "inodes"]);
    for _ in 0..100 {
        if inodes() == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(inodes(), 1);
    let left = || -> Vec<String> {
        r.keys("skx")
            .into_iter()
            .filter(|k| {
                ["skx:b:", "{skx}:m:", "{skx}:d:"]
                    .iter()
                    .any(|p| k.starts_with(p))
                    || k.ends_with(":held")
            })
            .collect()
    };
    // Blocks leave Redis a moment after the removal (deleted in the background).
    common::eventually("nothing of them to be left", Duration::from_secs(5), || {
        left().is_empty()
    });

    // Opens racing removals get a whole generation of the file or ENOENT, never a handle on an
    // inode deleted under it. Each generation is written under another name and renamed into
    // place after the removal, so no reader can see one half written.
    let generation = |n: u32| format!("generation {n:06} ").repeat(4000).into_bytes();
    fs::write(&f, generation(0)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (f, stop) = (f.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut whole = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match fs::read(&f) {
                    Ok(bytes) => {
                        let n = std::str::from_utf8(bytes.get(11..17).unwrap_or_default())
                            .ok()
                            .and_then(|n| n.parse().ok());
                        let want = n.map(generation).unwrap_or_default();
                        let first_difference = bytes.iter().zip(&want).position(|(a, b)| a != b);
                        assert!(
                            bytes == want,
                            "not a whole generation: {} bytes, generation {n:?}, first \
                             difference at {first_difference:?}: {:?}",
                            bytes.len(),
                            String::from_utf8_lossy(&bytes[first_difference.unwrap_or(0)..][..40])
                        );
                        whole += 1;
                    }
                    Err(e) => assert_eq!(errno_of(e), libc::ENOENT),
                }
            }
            whole
        })
    };
    let next = m.join("next");
    for n in 1..=300 {
        fs::write(&next, generation(n)).unwrap();
        fs::remove_file(&f).unwrap();
        fs::rename(&next, &f).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let whole = reader.join().unwrap();
    assert!(whole > 0, "the reader saw the file at least once");
    assert_eq!(fs::read(&f).unwrap(), generation(300));
    for _ in 0..100 {
        if inodes() == 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        inodes(),
        2,
        "root and the last generation: every removed one was deleted"
    );
}

#[test]
fn fallocate_holes_seek_and_copy_range() {
    let Some((_r, m)) = setup() else { return };
    let f = m.join("f");
    let data = common::random_bytes(600_000, 9);
    fs::write(&f, &data).unwrap();
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&f)
        .unwrap();
    let fd = file.as_raw_fd();
    // Punch a hole spanning whole blocks and partial edges.
    // SAFETY: valid fd.
    check(unsafe {
        libc::fallocate(
            fd,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            100_000,
            300_000,
        )
    } as i64)
    .unwrap();
    let back = fs::read(&f).unwrap();
    assert_eq!(back.len(), 600_000);
    assert_eq!(&back[..100_000], &data[..100_000]);
    assert!(back[100_000..400_000].iter().all(|&b| b == 0));
    assert_eq!(&back[400_000..], &data[400_000..]);
    // SEEK_HOLE finds the punched whole blocks; SEEK_DATA skips them. Both answer at page
    // multiples inside the hole, as programs copying in 4 KiB steps expect.
    // SAFETY: valid fd.
    let hole = unsafe { libc::lseek(fd, 0, libc::SEEK_HOLE) };
    assert!((100_000..400_000).contains(&hole), "hole at {hole}");
    // SAFETY: valid fd.
    let data_at = unsafe { libc::lseek(fd, hole, libc::SEEK_DATA) };
    assert!(data_at > hole && data_at <= 400_000, "data at {data_at}");
    assert_eq!((hole % 4096, data_at % 4096), (0, 0), "{hole}..{data_at}");
    assert!(back[hole as usize..data_at as usize]
        .iter()
        .all(|&b| b == 0));
    // SAFETY: valid fd.
    assert_eq!(
        check(unsafe { libc::lseek(fd, 700_000, libc::SEEK_DATA) }),
        Err(libc::ENXIO)
    );
    // Preallocation grows the size; KEEP_SIZE does not.
    // SAFETY: valid fd.
    check(unsafe { libc::fallocate(fd, 0, 600_000, 100_000) } as i64).unwrap();
    assert_eq!(fs::metadata(&f).unwrap().len(), 700_000);
    // SAFETY: valid fd.
    check(unsafe { libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 700_000, 100_000) } as i64)
        .unwrap();
    assert_eq!(fs::metadata(&f).unwrap().len(), 700_000);

    // copy_file_range within the filesystem.
    let out = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .read(true)
        .open(m.join("copy"))
        .unwrap();
    let (mut off_in, mut off_out) = (0i64, 0i64);
    let mut left = 700_000usize;
    while left > 0 {
        // SAFETY: valid fds and offsets.
        let n = check(unsafe {
            libc::copy_file_range(fd, &mut off_in, out.as_raw_fd(), &mut off_out, left, 0)
        } as i64)
        .unwrap();
        assert!(n > 0);
        left -= n as usize;
    }
    drop(out);
    assert_eq!(fs::read(m.join("copy")).unwrap(), fs::read(&f).unwrap());
}

#[test]
fn access_checks_mode_bits() {
    let Some((_r, m)) = setup() else { return };
    let f = m.join("f");
    fs::write(&f, b"").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    // SAFETY: valid path.
    assert_eq!(
        check(unsafe { libc::access(cpath(&f).as_ptr(), libc::R_OK | libc::W_OK) } as i64),
        Ok(0)
    );
    // SAFETY: valid path.
    assert_eq!(
        check(unsafe { libc::access(cpath(&f).as_ptr(), libc::X_OK) } as i64),
        Err(libc::EACCES)
    );
    // SAFETY: valid path.
    assert_eq!(
        check(unsafe { libc::access(cpath(&m.join("none")).as_ptr(), libc::F_OK) } as i64),
        Err(libc::ENOENT)
    );
}

#[test]
fn many_entries_list_completely() {
    let Some((_r, m)) = setup() else { return };
    for i in 0..3000 {
        fs::write(m.join(format!("file-{i:05}")), b"").unwrap();
    }
    let mut n = 0;
    for e in fs::read_dir(&m.path).unwrap() {
        let e = e.unwrap();
        assert!(e.file_type().unwrap().is_file());
        n += 1;
    }
    assert_eq!(n, 3000);
}

/// A directory too big for one reply is read in pieces (`HSCAN`): every entry present
/// throughout the listing comes exactly once, with its size, even while another mount adds
/// and removes names there (Redis's scan may return an entry twice when the directory's
/// table is resized meanwhile; the mount keeps each name once).
#[test]
fn a_directory_read_in_pieces_lists_each_entry_once_while_it_changes() {
    let Some((r, m)) = setup() else { return };
    const FILES: u64 = 25_000;
    fs::create_dir(m.join("big")).unwrap();
    for i in 0..FILES {
        let f = fs::File::create(m.join(format!("big/f{i}"))).unwrap();
        f.set_len(i % 5).unwrap();
    }
    let other = Mount::new(&r, "skx", &[]);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                fs::write(m.join(format!("big/churn{i}")), b"").unwrap();
                if i >= 50 {
                    fs::remove_file(m.join(format!("big/churn{}", i - 50))).unwrap();
                }
                i += 1;
            }
        });
        for round in 0..3 {
            let mut seen: Vec<(String, u64)> = fs::read_dir(other.join("big"))
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| e.file_name().to_string_lossy().starts_with('f'))
                .map(|e| {
                    let name = e.file_name().into_string().unwrap();
                    (name, e.metadata().unwrap().len())
                })
                .collect();
            seen.sort();
            let before = seen.len();
            seen.dedup_by(|a, b| a.0 == b.0);
            assert_eq!(before, seen.len(), "round {round}: an entry came twice");
            assert_eq!(seen.len() as u64, FILES, "round {round}: every entry");
            for (name, len) in &seen {
                let i: u64 = name[1..].parse().unwrap();
                assert_eq!(*len, i % 5, "round {round}: {name}");
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

/// A listing several chunks long, read on a mount that did not make it (its attributes come
/// from Redis a chunk at a time, read ahead and let go behind the reader): every entry once,
/// with its own size, and the same entries again after seeking back to an early position.
#[test]
fn a_big_listing_read_elsewhere_is_whole_and_can_be_read_again() {
    let Some((r, m)) = setup() else { return };
    const FILES: usize = 9_000;
    for i in 0..FILES {
        let f = fs::File::create(m.join(format!("f{i}"))).unwrap();
        f.set_len((i % 7) as u64).unwrap();
    }
    let other = Mount::new(&r, "skx", &[]);
    let dir = cpath(&other.path);
    // SAFETY: a valid path; the stream is used only here and closed at the end.
    let stream = unsafe { libc::opendir(dir.as_ptr()) };
    assert!(!stream.is_null());
    let next = || {
        // SAFETY: `stream` is open; the entry is read before the next call.
        let entry = unsafe { libc::readdir(stream) };
        // SAFETY: as above, a NUL-terminated name.
        (!entry.is_null()).then(|| unsafe {
            std::ffi::CStr::from_ptr((*entry).d_name.as_ptr())
                .to_string_lossy()
                .into_owned()
        })
    };
    let mut names = Vec::new();
    let mut mark = None;
    while let Some(name) = next() {
        names.push(name);
        if names.len() == 100 {
            // SAFETY: `stream` is open.
            mark = Some(unsafe { libc::telldir(stream) });
        }
    }
    let mut sorted: Vec<&String> = names.iter().filter(|n| n.starts_with('f')).collect();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), FILES, "every entry, once");
    assert_eq!(names.len(), FILES + 2);
    // SAFETY: `stream` is open and `mark` came from it.
    unsafe { libc::seekdir(stream, mark.unwrap()) };
    let again: Vec<String> = std::iter::from_fn(next).collect();
    assert_eq!(again, names[100..], "the same entries after seeking back");
    // SAFETY: open, and not used after.
    unsafe { libc::closedir(stream) };
    for i in (0..FILES).step_by(97) {
        let size = fs::symlink_metadata(other.join(format!("f{i}")))
            .unwrap()
            .len();
        assert_eq!(size, (i % 7) as u64, "f{i}");
    }
}

/// Caught: an entry whose inode record does not decode was left out of listings (`ls -la`
/// exited 0 without it). It is listed, and its `stat` fails with EIO, as reading it does; so
/// is an entry whose own value does not decode.
#[test]
fn entries_that_cannot_be_read_are_listed_and_fail_with_eio() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let m = Mount::new(&redis, "skx", &[]);
    for name in ["a", "broken", "c"] {
        fs::write(m.join(name), name).unwrap();
    }
    let ino = fs::metadata(m.join("broken")).unwrap().ino();
    m.unmount();
    let bucket = format!("{{skx}}:i:{}", ino / 64);
    let field = (ino % 64).to_string();
    redis.cmd::<()>(&["HSET", &bucket, &field, "not a record"]);
    redis.cmd::<()>(&["HSET", "{skx}:d:1", "garbled", "?"]);

    let m = Mount::new(&redis, "skx", &[]);
    let mut names: Vec<String> = fs::read_dir(&m.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "broken", "c", "garbled"]);
    for bad in ["broken", "garbled"] {
        let err = fs::symlink_metadata(m.join(bad)).expect_err(bad);
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{bad}: {err}");
    }
    assert_eq!(fs::read(m.join("a")).unwrap(), b"a");
    let ls = std::process::Command::new("ls")
        .arg("-la")
        .arg(&m.path)
        .output()
        .unwrap();
    assert!(
        !ls.status.success(),
        "ls -la succeeded with unreadable entries"
    );
    let stderr = String::from_utf8_lossy(&ls.stderr);
    assert!(
        stderr.contains("broken") && stderr.contains("garbled"),
        "{stderr}"
    );
    m.unmount();
}

/// `truncate` and `ftruncate` that change a file's size mark its mtime as well as its ctime,
/// as POSIX asks and local filesystems do (only ctime moved).
#[test]
fn truncates_that_change_the_size_update_mtime() {
    use std::os::unix::fs::MetadataExt;
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let m = Mount::new(&redis, "skx", &[]);
    let path = m.join("f");
    fs::write(&path, b"hello world").unwrap();
    let long_ago = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    let set_old = || {
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mtime(), 1_000_000_000);
    };
    set_old();
    let c = cpath(&path);
    // SAFETY: a valid C string.
    check(i64::from(unsafe { libc::truncate(c.as_ptr(), 5) })).unwrap();
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 5);
    assert!(meta.mtime() > 1_000_000_000, "truncate left mtime");
    set_old();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(2)
        .unwrap();
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 2);
    assert!(meta.mtime() > 1_000_000_000, "ftruncate left mtime");
    m.unmount();
}

/// `fallocate` of more than Redis has room for fails with ENOSPC, as on a full disk (it
/// succeeded, promising room that was not there); a range that fits is preallocated.
#[test]
fn fallocate_beyond_the_free_memory_is_refused() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start_with(&["--maxmemory", "64mb", "--maxmemory-policy", "noeviction"]);
    let m = Mount::new(&redis, "skx", &[]);
    let f = fs::File::create(m.join("f")).unwrap();
    // SAFETY: a valid descriptor.
    let big = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 1 << 30) };
    let err = std::io::Error::last_os_error();
    assert_eq!(big, -1, "1 GiB preallocated in a 64 MiB Redis");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    // SAFETY: as above.
    let small = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 1 << 20) };
    assert_eq!(small, 0, "{}", std::io::Error::last_os_error());
    assert_eq!(f.metadata().unwrap().len(), 1 << 20);
    drop(f);
    m.unmount();
}

/// `st_blocks` counts what is stored: a sparse file's holes take nothing (a 10 GiB truncate
/// reported 20,971,520 blocks), so `du`, `cp --sparse` and `tar -S` see them.
#[test]
fn st_blocks_counts_stored_data_and_not_holes() {
    let Some((r, m)) = setup() else { return };
    let f = m.join("sparse");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&f)
        .unwrap();
    file.set_len(10 << 30).unwrap();
    assert_eq!(
        fs::metadata(&f).unwrap().blocks(),
        0,
        "a hole takes no room"
    );
    let data = common::random_bytes(100_000, 3);
    let fd = file.as_raw_fd();
    // SAFETY: valid fd and buffer.
    check(unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), 5 << 30) } as i64).unwrap();
    file.sync_all().unwrap();
    let blocks = fs::metadata(&f).unwrap().blocks();
    assert!(
        (200..=512).contains(&blocks),
        "100,000 bytes written: {blocks} blocks of 512 bytes"
    );
    let du = std::process::Command::new("du")
        .arg("-k")
        .arg(&f)
        .output()
        .unwrap();
    let kib: u64 = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(kib < 1024, "du says {kib} KiB for 100,000 bytes in 10 GiB");
    // A dense file counts at least its size.
    fs::write(m.join("dense"), &data).unwrap();
    assert!(fs::metadata(m.join("dense")).unwrap().blocks() * 512 >= 100_000);
    // Punching the data out and cutting the file free what they drop.
    // SAFETY: valid fd.
    check(unsafe {
        libc::fallocate(
            fd,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            5 << 30,
            1 << 20,
        )
    } as i64)
    .unwrap();
    assert_eq!(fs::metadata(&f).unwrap().blocks(), 0, "punched out");
    let dense = fs::OpenOptions::new()
        .write(true)
        .open(m.join("dense"))
        .unwrap();
    dense.set_len(0).unwrap();
    assert_eq!(
        fs::metadata(m.join("dense")).unwrap().blocks(),
        0,
        "cut to 0"
    );
    drop((file, dense));
    m.unmount();
    common::tool_ok("fsck", &["--redis", &r.url(), "--prefix", "skx"]);
}

/// Runs `script` with `sh` as user `uid` and group `gid` (no supplementary groups), in `dir`;
/// returns whether it succeeded.
fn as_user(uid: u32, gid: u32, dir: &std::path::Path, script: &str) -> bool {
    let out = std::process::Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .args(["sh", "-c", script])
        .current_dir(dir)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!("{script}: {}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.success()
}

/// Group of the set-group-ID directories below, which the acting user is not in.
const SHARED_GROUP: u32 = 4321;
/// The acting user and its own group.
const USER: (u32, u32) = (65534, 65534);

/// In a set-group-ID directory new entries take its group and new directories its bit, on the
/// mount that created the directory (where creates are deferred) and on another.
#[test]
fn setgid_directories_pass_on_their_group() {
    let Some((r, a)) = setup() else { return };
    let b = Mount::new(&r, "skx", &[]);
    fs::create_dir(a.join("shared")).unwrap();
    std::os::unix::fs::chown(a.join("shared"), Some(0), Some(SHARED_GROUP)).unwrap();
    fs::set_permissions(a.join("shared"), fs::Permissions::from_mode(0o2777)).unwrap();
    for (m, tag) in [(&a, "a"), (&b, "b")] {
        let dir = m.join("shared");
        let (uid, gid) = USER;
        assert!(as_user(
            uid,
            gid,
            &dir,
            &format!("touch f{tag} && mkdir d{tag}")
        ));
        fs::create_dir(dir.join(format!("root{tag}"))).unwrap();
        for name in [format!("f{tag}"), format!("d{tag}"), format!("root{tag}")] {
            let meta = fs::metadata(dir.join(&name)).unwrap();
            assert_eq!(
                meta.gid(),
                SHARED_GROUP,
                "{tag}: {name} has the creator's group"
            );
            let sgid = meta.mode() & libc::S_ISGID != 0;
            assert_eq!(sgid, meta.is_dir(), "{tag}: {name} mode {:o}", meta.mode());
        }
        assert_eq!(
            fs::metadata(dir.join(format!("f{tag}"))).unwrap().uid(),
            uid
        );
    }
    // What another mount reads from Redis agrees.
    let meta = fs::metadata(b.join("shared/da")).unwrap();
    assert_eq!(
        (meta.gid(), meta.mode() & libc::S_ISGID),
        (SHARED_GROUP, libc::S_ISGID)
    );
}

/// A change of a file's data by a user without CAP_FSETID clears set-user-ID, and set-group-ID
/// when group-execute is set or the user is outside the file's group, as on ext4: writes,
/// `fallocate` (allocation, punch-hole, zero-range) and truncates alike.
#[test]
fn data_changes_by_others_clear_set_id_bits() {
    let Some((_r, m)) = setup() else { return };
    let (uid, gid) = USER;
    let changes = [
        "fallocate -l 8192 f",
        "fallocate -p -o 0 -l 4096 f",
        "fallocate -z -o 0 -l 4096 f",
        "printf x | dd of=f conv=notrunc status=none",
        "truncate -s 100 f",
    ];
    // (mode, group, mode left): outside the group, set-group-ID goes even without
    // group-execute; inside it, it stays unless group-execute is set.
    let cases = [
        (0o2767, SHARED_GROUP, 0o767),
        (0o6666, SHARED_GROUP, 0o666),
        (0o6777, SHARED_GROUP, 0o777),
        (0o2767, gid, 0o2767),
        (0o2777, gid, 0o777),
    ];
    for change in changes {
        for (mode, group, left) in cases {
            let f = m.join("f");
            fs::write(&f, vec![1u8; 5000]).unwrap();
            std::os::unix::fs::chown(&f, Some(0), Some(group)).unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode(mode)).unwrap();
            assert!(as_user(uid, gid, &m.join(""), change), "{change}");
            let now = fs::metadata(&f).unwrap().mode() & 0o7777;
            assert_eq!(
                now, left,
                "{change} on {mode:o} (group {group}) left {now:o}"
            );
            fs::remove_file(&f).unwrap();
        }
    }
}

/// A directory open while a rename replaces it (or a removal takes it) still answers `fstat`,
/// with no link left, once the kernel's cached attributes are gone.
#[test]
fn an_open_directory_replaced_by_a_rename_still_answers_fstat() {
    let Some((_r, m)) = setup() else { return };
    for (victim, how) in [("replaced", "rename"), ("removed", "rmdir")] {
        fs::create_dir(m.join(victim)).unwrap();
        let dir = fs::File::open(m.join(victim)).unwrap();
        if how == "rename" {
            fs::create_dir(m.join("other")).unwrap();
            fs::rename(m.join("other"), m.join(victim)).unwrap();
        } else {
            fs::remove_dir(m.join(victim)).unwrap();
        }
        fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
        // Past the kernel's attribute timeout, fstat asks the mount.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let meta = dir
            .metadata()
            .unwrap_or_else(|e| panic!("{how}: fstat: {e}"));
        assert!(meta.is_dir());
        assert_eq!(meta.nlink(), 0, "{how}");
        drop(dir);
        let _ = fs::remove_dir(m.join(victim));
    }
}

/// Sets a path's access time to `sec` (and leaves its modification time).
fn set_atime(p: &std::path::Path, sec: i64) {
    let times = [
        libc::timespec {
            tv_sec: sec,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    ];
    // SAFETY: a valid path and two timespecs.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, cpath(p).as_ptr(), times.as_ptr(), 0) } as i64)
        .unwrap();
}

fn atime_of(p: &std::path::Path) -> i64 {
    fs::metadata(p).unwrap().atime()
}

/// Reads update access times as the mount option says: `relatime` (the default) when the
/// access time is older than the last change (or a day old), `strictatime` on every read,
/// `noatime` never; listing a directory counts as reading it. Another mount sees the times.
#[test]
fn reads_update_access_times_as_the_mount_option_says() {
    let Some((r, m)) = setup() else { return };
    let other = Mount::new(&r, "skx", &[]);
    let strict = Mount::new(&r, "skx", &["-o", "strictatime"]);
    let never = Mount::new(&r, "skx", &["-o", "noatime"]);
    let long_ago = 1_000_000_000;
    let f = m.join("f");
    fs::write(&f, b"some bytes").unwrap();
    fs::create_dir(m.join("d")).unwrap();
    fs::write(m.join("d/inside"), b"").unwrap();
    let ctime = fs::metadata(&f).unwrap().ctime_nsec();
    for p in [f.clone(), m.join("d")] {
        set_atime(&p, long_ago);
    }
    let changed = fs::metadata(&f).unwrap().ctime_nsec();
    // relatime: the access time is older than the last change, so a read writes it.
    assert_eq!(fs::read(&f).unwrap(), b"some bytes");
    let _ = fs::read_dir(m.join("d")).unwrap().count();
    for p in [f.clone(), m.join("d")] {
        common::eventually("relatime access time", Duration::from_secs(5), || {
            atime_of(&p) > long_ago
        });
    }
    assert_eq!(
        fs::metadata(&f).unwrap().ctime_nsec(),
        changed,
        "an access is not a change (ctime {ctime} then {changed})"
    );
    common::eventually(
        "the access time on another mount",
        Duration::from_secs(5),
        || atime_of(&other.join("f")) > long_ago,
    );
    // ... and then not again: it is newer than the last change.
    let read_at = atime_of(&f);
    std::thread::sleep(Duration::from_millis(1100));
    fs::read(&f).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(atime_of(&f), read_at, "relatime wrote a second access time");
    // strictatime: every read.
    fs::read(strict.join("f")).unwrap();
    common::eventually("strictatime access time", Duration::from_secs(5), || {
        atime_of(&strict.join("f")) > read_at
    });
    // noatime: never.
    set_atime(&f, long_ago);
    fs::read(never.join("f")).unwrap();
    let _ = fs::read_dir(never.join("d")).unwrap().count();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        atime_of(&never.join("f")),
        long_ago,
        "noatime wrote an access time"
    );
}

/// `struct file_handle` with room for any handle.
#[repr(C)]
struct FileHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; 128],
}

fn handle_of(p: &std::path::Path) -> FileHandle {
    let mut handle = FileHandle {
        handle_bytes: 128,
        handle_type: 0,
        f_handle: [0; 128],
    };
    let mut mount_id = 0i32;
    // SAFETY: a valid path, a handle buffer of the size it declares, a valid int.
    check(unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            cpath(p).as_ptr(),
            &mut handle as *mut FileHandle,
            &mut mount_id as *mut i32,
            0,
        )
    })
    .unwrap();
    handle
}

fn open_by_handle(mount: &fs::File, handle: &FileHandle) -> Result<fs::File, i32> {
    // SAFETY: a valid descriptor and a handle filled by name_to_handle_at.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            handle as *const FileHandle,
            libc::O_RDONLY,
        )
    })?;
    // SAFETY: a descriptor just opened and owned by nobody else.
    Ok(unsafe { <fs::File as std::os::unix::io::FromRawFd>::from_raw_fd(fd as i32) })
}

/// File handles (what an NFS export of the mount hands out) open files and directories after
/// the kernel has forgotten them; a removed file's handle is stale.
#[test]
fn file_handles_outlive_the_kernels_caches() {
    let Some((_r, m)) = setup() else { return };
    fs::create_dir(m.join("d")).unwrap();
    fs::write(m.join("d/f"), b"by handle").unwrap();
    fs::write(m.join("gone"), b"").unwrap();
    let (dir, file, gone) = (
        handle_of(&m.join("d")),
        handle_of(&m.join("d/f")),
        handle_of(&m.join("gone")),
    );
    fs::remove_file(m.join("gone")).unwrap();
    fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
    let root = fs::File::open(&m.path).unwrap();
    let mut f = open_by_handle(&root, &file).unwrap();
    let mut text = String::new();
    f.read_to_string(&mut text).unwrap();
    assert_eq!(text, "by handle");
    assert!(open_by_handle(&root, &dir)
        .unwrap()
        .metadata()
        .unwrap()
        .is_dir());
    assert_eq!(open_by_handle(&root, &gone).err(), Some(libc::ESTALE));
}

/// overlayfs (what containers run on) takes a directory here as its upper layer: deleting a
/// lower file through it leaves a whiteout (RENAME_WHITEOUT, a character device 0:0).
#[test]
fn overlayfs_runs_on_an_upper_directory_here() {
    let Some((_r, m)) = setup() else { return };
    let lower = tempfile::tempdir().unwrap();
    fs::write(lower.path().join("from-lower"), b"lower").unwrap();
    fs::write(lower.path().join("renamed"), b"lower").unwrap();
    for d in ["upper", "work", "merged"] {
        fs::create_dir(m.join(d)).unwrap();
    }
    let merged = m.join("merged");
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.path().display(),
        m.join("upper").display(),
        m.join("work").display()
    );
    let mounted = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &options])
        .arg(&merged)
        .output()
        .unwrap();
    assert!(
        mounted.status.success(),
        "{}",
        String::from_utf8_lossy(&mounted.stderr)
    );
    let result = std::panic::catch_unwind(|| {
        fs::remove_file(merged.join("from-lower")).unwrap();
        fs::rename(merged.join("renamed"), merged.join("moved")).unwrap();
        fs::write(merged.join("new"), b"upper").unwrap();
        let mut names: Vec<String> = fs::read_dir(&merged)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["moved", "new"]);
        assert_eq!(fs::read(merged.join("moved")).unwrap(), b"lower");
    });
    let _ = std::process::Command::new("umount").arg(&merged).status();
    result.unwrap();
    let whiteout = fs::symlink_metadata(m.join("upper/from-lower")).unwrap();
    assert!(
        whiteout.file_type().is_char_device() && whiteout.rdev() == 0,
        "{whiteout:?}"
    );
}

fn sh(script: &str, dir: &std::path::Path) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// POSIX ACLs, set with setfacl and read with getfacl as a user would: enforced by the kernel
/// (on another mount too), shown in the mode's group bits as the mask, rewritten by chmod, and
/// inherited from a directory's default ACL in place of the umask.
#[test]
fn posix_acls_are_kept_enforced_and_inherited() {
    let Some((r, m)) = setup() else { return };
    let other = Mount::new(&r, "skx", &[]);
    let (uid, gid) = USER;
    let root = m.join("");
    sh(
        "echo secret > f && chmod 600 f && setfacl -m u:65534:rw f",
        &root,
    );
    assert!(sh("getfacl -c f", &root).contains("user:nobody:rw-"));
    assert_eq!(
        fs::metadata(m.join("f")).unwrap().mode() & 0o777,
        0o660,
        "mask as group bits"
    );
    for mount in [&m, &other] {
        assert!(as_user(
            uid,
            gid,
            &mount.join(""),
            "cat f >/dev/null && echo more >> f"
        ));
    }
    // chmod takes write from the mask, so from the named user.
    sh("chmod 640 f", &root);
    assert!(sh("getfacl -c f", &root).contains("mask::r--"));
    assert!(
        !as_user(uid, gid, &root, "echo more >> f"),
        "the mask was not applied"
    );
    assert!(as_user(uid, gid, &root, "cat f >/dev/null"));
    // Removing the ACL leaves the bits; a file without one refuses the user.
    sh("setfacl -b f && chmod 600 f", &root);
    assert!(!as_user(uid, gid, &root, "cat f"));
    let left = sh("getfacl -c f", &root);
    assert_eq!(left.lines().filter(|l| !l.is_empty()).count(), 3, "{left}");
    // A directory's default ACL is inherited (the umask is not applied then).
    sh(
        "mkdir d && setfacl -d -m u:65534:rwx d && setfacl -m u:65534:rwx d",
        &root,
    );
    sh("umask 077 && touch d/file && mkdir d/sub", &root);
    let inherited = sh("getfacl -c d/file", &root);
    assert!(
        inherited.contains("user:nobody:rwx") && inherited.contains("mask::rw-"),
        "{inherited}"
    );
    assert!(sh("getfacl -c d/sub", &root).contains("default:user:nobody:rwx"));
    assert!(as_user(
        uid,
        gid,
        &root,
        "echo x > d/file && touch d/sub/mine"
    ));
    // Without a default ACL the umask applies as before.
    sh("umask 077 && touch plain", &root);
    assert_eq!(fs::metadata(m.join("plain")).unwrap().mode() & 0o777, 0o600);
}

/// SELinux labels are not kept (SELinux labels a FUSE mount as a whole): asking for one is
/// `EOPNOTSUPP`, which `ls -l` takes as "no labels here" and stops asking every file. The
/// rest of the security namespace is kept.
#[test]
fn selinux_labels_are_not_kept_and_other_security_attributes_are() {
    let Some((_r, m)) = setup() else { return };
    let f = m.join("f");
    fs::write(&f, b"").unwrap();
    assert_eq!(getxattr(&f, "security.selinux"), Err(libc::EOPNOTSUPP));
    assert_eq!(
        setxattr(&f, "security.selinux", b"system_u:object_r:tmp_t:s0", 0),
        Err(libc::EOPNOTSUPP)
    );
    setxattr(&f, "security.kept", b"1", 0).unwrap();
    assert_eq!(getxattr(&f, "security.kept").unwrap(), b"1");
    assert_eq!(listxattr(&f), vec!["security.kept"]);
}

/// A filesystem created with `--acl off` keeps no ACLs, as one of JuiceFS's by default:
/// `setfacl` is refused, `getfacl` shows the mode bits, the umask applies, and the setting
/// goes with the filesystem into a snapshot and through a dump and restore.
#[test]
fn a_filesystem_made_without_acls_refuses_them_everywhere() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let url = redis.url();
    let m = Mount::new(&redis, "plain", &["--acl", "off"]);
    let root = m.join("");
    sh("echo x > f && chmod 640 f && mkdir d", &root);
    let refused = std::process::Command::new("setfacl")
        .args(["-m", "u:65534:rw", "f"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("not supported"),
        "{refused:?}"
    );
    assert!(sh("getfacl -c f", &root).contains("group::r--"));
    assert_eq!(
        getxattr(&m.join("f"), "system.posix_acl_access"),
        Err(libc::EOPNOTSUPP)
    );
    sh("umask 077 && touch d/g", &root);
    assert_eq!(fs::metadata(m.join("d/g")).unwrap().mode() & 0o777, 0o600);
    m.unmount();
    assert_eq!(redis.cmd::<String>(&["HGET", "{plain}:meta", "acl"]), "off");
    common::tool_ok(
        "snapshot",
        &["--redis", &url, "--from", "plain", "--to", "copy"],
    );
    assert_eq!(redis.cmd::<String>(&["HGET", "{copy}:meta", "acl"]), "off");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain.rfs");
    common::tool_ok(
        "dump",
        &["--redis", &url, "--prefix", "plain", file.to_str().unwrap()],
    );
    common::tool_ok(
        "restore",
        &["--redis", &url, "--prefix", "back", file.to_str().unwrap()],
    );
    assert_eq!(redis.cmd::<String>(&["HGET", "{back}:meta", "acl"]), "off");
    // A mount's --acl is for new filesystems only: the restored one keeps its setting.
    let back = Mount::new(&redis, "back", &["--acl", "on"]);
    assert_eq!(
        getxattr(&back.join("f"), "system.posix_acl_access"),
        Err(libc::EOPNOTSUPP)
    );
    // Filesystems made before the setting existed keep ACLs.
    let old = Mount::new(&redis, "old", &[]);
    fs::write(old.join("f"), b"").unwrap();
    old.unmount();
    redis.cmd::<()>(&["HDEL", "{old}:meta", "acl"]);
    let old = Mount::new(&redis, "old", &["--acl", "off"]);
    sh("setfacl -m u:65534:r f", &old.join(""));
}

/// `O_TMPFILE` makes an unnamed file: readable and writable, with no link, gone at its last
/// close, unless `linkat` names it first (how programs publish a file whole).
#[test]
fn o_tmpfile_files_are_unnamed_until_linked() {
    let Some((r, m)) = setup() else { return };
    let inodes = || r.cmd::<u64>(&["HGET", "{skx}:stat", "inodes"]);
    let before = inodes();
    let open_tmp = || {
        // SAFETY: a valid path.
        let fd = check(unsafe {
            libc::open(
                cpath(&m.path).as_ptr(),
                libc::O_TMPFILE | libc::O_RDWR,
                0o640,
            )
        } as i64)
        .unwrap_or_else(|e| panic!("O_TMPFILE: errno {e}"));
        // SAFETY: a descriptor just opened and owned by nobody else.
        unsafe { <fs::File as std::os::unix::io::FromRawFd>::from_raw_fd(fd as i32) }
    };
    let mut scratch = open_tmp();
    scratch.write_all(b"scratch").unwrap();
    scratch.seek(SeekFrom::Start(0)).unwrap();
    let mut text = String::new();
    scratch.read_to_string(&mut text).unwrap();
    assert_eq!(text, "scratch");
    assert_eq!(scratch.metadata().unwrap().nlink(), 0);
    assert!(fs::read_dir(&m.path).unwrap().next().is_none(), "no name");
    assert_eq!(inodes(), before + 1);
    drop(scratch);
    common::eventually(
        "an unnamed file goes at its last close",
        Duration::from_secs(10),
        || inodes() == before,
    );
    // Written whole, then named.
    let mut published = open_tmp();
    published.write_all(b"whole").unwrap();
    let fd_path = format!("/proc/self/fd/{}", published.as_raw_fd());
    // SAFETY: valid paths.
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            cpath(std::path::Path::new(&fd_path)).as_ptr(),
            libc::AT_FDCWD,
            cpath(&m.join("published")).as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    } as i64)
    .unwrap();
    drop(published);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fs::read(m.join("published")).unwrap(), b"whole");
    assert_eq!(fs::metadata(m.join("published")).unwrap().nlink(), 1);
    m.unmount();
    common::tool_ok("fsck", &["--redis", &r.url(), "--prefix", "skx"]);
}
