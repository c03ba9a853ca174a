//! What survives an unmount, what stays inside a prefix, and what a restricted Redis user can do.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{check, cpath, Mount, Redis};
use sha2::{Digest, Sha256};

/// Everything a user can observe of a tree, by relative path.
fn observe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let content = if meta.is_file() {
                format!("{:x}", Sha256::digest(fs::read(&path).unwrap()))
            } else if meta.file_type().is_symlink() {
                fs::read_link(&path).unwrap().to_string_lossy().into_owned()
            } else {
                String::new()
            };
            let mut xattrs = vec![0u8; 4096];
            // SAFETY: valid path and buffer.
            let n = unsafe {
                libc::llistxattr(
                    cpath(&path).as_ptr(),
                    xattrs.as_mut_ptr().cast(),
                    xattrs.len(),
                )
            };
            xattrs.truncate(n.max(0) as usize);
            let mut names: Vec<&[u8]> = xattrs
                .split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .collect();
            names.sort();
            let xattr_values: Vec<String> = names
                .iter()
                .map(|name| {
                    let name_c = std::ffi::CString::new(*name).unwrap();
                    let mut v = vec![0u8; 1024];
                    // SAFETY: valid strings and buffer.
                    let n = unsafe {
                        libc::lgetxattr(
                            cpath(&path).as_ptr(),
                            name_c.as_ptr(),
                            v.as_mut_ptr().cast(),
                            v.len(),
                        )
                    };
                    v.truncate(n.max(0) as usize);
                    format!("{}={:?}", String::from_utf8_lossy(name), v)
                })
                .collect();
            out.insert(
                rel,
                format!(
                    "mode={:o} uid={} gid={} size={} nlink={} rdev={} ino={} atime={}.{} mtime={}.{} ctime={}.{} content={} xattrs={:?}",
                    meta.mode(),
                    meta.uid(),
                    meta.gid(),
                    meta.size(),
                    meta.nlink(),
                    meta.rdev(),
                    meta.ino(),
                    meta.atime(),
                    meta.atime_nsec(),
                    meta.mtime(),
                    meta.mtime_nsec(),
                    meta.ctime(),
                    meta.ctime_nsec(),
                    content,
                    xattr_values
                ),
            );
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    out
}

fn build_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::write(root.join("a/file"), common::text_bytes(300_000)).unwrap();
    fs::write(root.join("a/b/random"), common::random_bytes(1_000_000, 11)).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::hard_link(root.join("a/file"), root.join("a/b/c/hardlink")).unwrap();
    std::os::unix::fs::symlink("../file", root.join("a/b/link")).unwrap();
    // SAFETY: valid paths.
    unsafe {
        libc::mknod(cpath(&root.join("fifo")).as_ptr(), libc::S_IFIFO | 0o600, 0);
        libc::mknod(
            cpath(&root.join("dev")).as_ptr(),
            libc::S_IFCHR | 0o640,
            libc::makedev(4, 64),
        );
    }
    fs::set_permissions(root.join("a/b"), fs::Permissions::from_mode(0o1750)).unwrap();
    std::os::unix::fs::chown(root.join("a/file"), Some(1234), Some(5678)).unwrap();
    let name = std::ffi::CString::new("user.note").unwrap();
    // SAFETY: valid strings and buffer.
    check(unsafe {
        libc::setxattr(
            cpath(&root.join("a/file")).as_ptr(),
            name.as_ptr(),
            b"kept".as_ptr().cast(),
            4,
            0,
        )
    } as i64)
    .unwrap();
    let times = [
        libc::timespec {
            tv_sec: 123_456_789,
            tv_nsec: 111_222_333,
        },
        libc::timespec {
            tv_sec: 987_654_321,
            tv_nsec: 444_555_666,
        },
    ];
    // SAFETY: valid path and times.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            cpath(&root.join("empty")).as_ptr(),
            times.as_ptr(),
            0,
        )
    } as i64)
    .unwrap();
}

/// Mount options under which reading the tree to compare it changes nothing compared: without
/// them, the reads would write access times (relatime).
const UNOBSERVED: &[&str] = &["-o", "noatime"];

#[test]
fn unmount_and_remount_keep_everything() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let m = Mount::new(&redis, "skx", UNOBSERVED);
    build_tree(&m.path);
    let before = observe(&m.path);
    assert_eq!(before.len(), 10);
    m.unmount();
    let m = Mount::new(&redis, "skx", UNOBSERVED);
    assert_eq!(observe(&m.path), before);
}

#[test]
fn data_survives_a_redis_restart_with_persistence() {
    if !common::ready() {
        return;
    }
    let mut redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let m = Mount::new(&redis, "skx", UNOBSERVED);
    build_tree(&m.path);
    let before = observe(&m.path);
    m.unmount();
    redis.restart();
    let m = Mount::new(&redis, "skx", UNOBSERVED);
    assert_eq!(observe(&m.path), before);
}

#[test]
fn a_filesystem_in_another_database_stays_there() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let args = vec![
        "--redis".to_string(),
        format!("redis://127.0.0.1:{}/3", redis.port),
    ];
    let data = common::random_bytes(3_000_000, 5);
    let m = Mount::with_args(&args).unwrap_or_else(|r| panic!("{}", r.stderr));
    fs::write(m.join("big"), &data).unwrap();
    m.unmount();
    assert!(redis.keys("skx").is_empty(), "database 0 was written to");
    let mut conn = redis.conn();
    let blocks: Vec<String> = redis::cmd("SELECT")
        .arg(3)
        .query::<()>(&mut conn)
        .and_then(|()| redis::cmd("KEYS").arg("skx:b:*").query(&mut conn))
        .unwrap();
    assert!(blocks.len() >= 45, "{} blocks in database 3", blocks.len());
    let m = Mount::with_args(&args).unwrap_or_else(|r| panic!("{}", r.stderr));
    assert!(
        fs::read(m.join("big")).unwrap() == data,
        "the file came back changed"
    );
}

#[test]
fn prefixes_never_see_each_other() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let a = Mount::new(&redis, "skx", &[]);
    let b = Mount::new(&redis, "skx2", &[]);
    build_tree(&a.path);
    fs::write(b.join("only-in-skx2"), b"2").unwrap();
    assert!(!a.join("only-in-skx2").exists());
    assert!(!b.join("a").exists());
    let names: Vec<String> = fs::read_dir(&b.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["only-in-skx2"]);
    let skx2_keys = redis.keys("skx2");
    // Emptying skx leaves skx2 untouched, key for key.
    fs::remove_dir_all(a.join("a")).unwrap();
    for name in ["empty", "fifo", "dev"] {
        fs::remove_file(a.join(name)).unwrap();
    }
    a.unmount();
    assert_eq!(redis.keys("skx2"), skx2_keys);
    assert_eq!(fs::read(b.join("only-in-skx2")).unwrap(), b"2");
    assert!(
        redis
            .keys("skx")
            .iter()
            .all(|k| k.starts_with("{skx}:") || k.starts_with("skx:")),
        "skx's scan pattern never matches skx2"
    );
    assert!(
        !redis
            .keys("skx")
            .iter()
            .any(|k| k.starts_with("skx:b:") || k.starts_with("{skx}:m:")),
        "deleted files leave no blocks or maps"
    );
}

/// The commands a mount needs, for a user confined to its prefix.
const COMMANDS: &str = "+ping +hello +auth +select +client|setname +info +time +type +pexpire +scan +exists \
     +get +set +del +incr +incrby +strlen +hget +hset +hdel +hgetall +hmget +hkeys +hvals +hlen +hexists \
     +hincrby +hscan +hrandfield +hsetnx +sadd +srem +smembers +srandmember +zadd +zrem +zscore +zrange +zrangebyscore \
     +rename +evalsha +eval +script|load +multi +exec \
     +publish +subscribe +unsubscribe +wait +role";

#[test]
fn a_user_confined_to_the_prefix_can_run_the_whole_flow() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let setup: Vec<String> =
        format!("ACL SETUSER fs on >s3cret resetkeys ~{{skx}}:* ~skx:* resetchannels &{{skx}}:* -@all {COMMANDS}")
            .split(' ')
            .map(String::from)
            .collect();
    let setup_refs: Vec<&str> = setup.iter().map(String::as_str).collect();
    let _: String = redis.cmd(&setup_refs);
    let _: () = redis.cmd(&["SET", "outside", "untouched"]);
    let url = format!("redis://fs@127.0.0.1:{}/", redis.port);
    let args = |extra: &[&str]| -> Vec<String> {
        ["--redis", &url, "--prefix", "skx"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mnt");
    fs::create_dir(&path).unwrap();
    let m = Mount::at(dir, path, &args(&[]), &[("REDISFS_PASSWORD", "s3cret")])
        .unwrap_or_else(|r| panic!("{}", r.stderr));
    build_tree(&m.path);
    let before = observe(&m.path);
    fs::rename(m.join("a/file"), m.join("moved")).unwrap();
    fs::remove_file(m.join("moved")).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(m.join("a/b/random"))
        .unwrap()
        .set_len(10)
        .unwrap();
    // SAFETY: zeroed statvfs is a valid out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path.
    check(unsafe { libc::statvfs(cpath(&m.path).as_ptr(), &mut st) } as i64).unwrap();
    assert!(
        !m.log_text().contains("s3cret"),
        "the password is never logged"
    );
    m.unmount();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mnt");
    fs::create_dir(&path).unwrap();
    let m = Mount::at(dir, path, &args(&[]), &[("REDISCLI_AUTH", "s3cret")])
        .unwrap_or_else(|r| panic!("{}", r.stderr));
    assert_eq!(fs::read(m.join("a/b/random")).unwrap().len(), 10);
    assert_eq!(observe(&m.path).len(), before.len() - 1);
    m.unmount();
    assert_eq!(
        redis.cmd::<u64>(&["ZCARD", "{skx}:sessions"]),
        0,
        "each unmount ended its own session"
    );
    // What the removal and the truncation freed left Redis: the user may delete blocks.
    assert_eq!(redis.cmd::<u64>(&["HLEN", "{skx}:garbage"]), 0);
    common::assert_clean(&redis, "skx");
    let _: String = redis.cmd(&["GET", "outside"]);
    assert_eq!(redis.cmd::<String>(&["GET", "outside"]), "untouched");
}
