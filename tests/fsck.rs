//! `redisfs-fsck`: each kind of damage is named, repaired, and gone on a second run; a mount
//! killed during heavy writes leaves a filesystem that repairs to clean with every fsync'd
//! file intact.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::{tool, Mount, Redis};

/// Runs fsck; returns its exit code and everything it printed.
fn fsck(redis: &Redis, prefix: &str, extra: &[&str]) -> (i32, String) {
    let url = redis.url();
    let mut args = vec!["--redis", &url, "--prefix", prefix];
    args.extend_from_slice(extra);
    let out = tool("fsck", &args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    (out.status.code().unwrap_or(-1), text)
}

/// Builds the filesystem every case starts from.
fn base(redis: &Redis) {
    let m = Mount::new(redis, "base", &[]);
    fs::create_dir_all(m.join("dir/sub")).unwrap();
    fs::write(m.join("big"), common::random_bytes(300_000, 5)).unwrap();
    fs::write(m.join("dir/small"), b"small file").unwrap();
    fs::write(m.join("dir/sub/deep"), b"deep").unwrap();
    fs::write(m.join("empty"), b"").unwrap();
    fs::hard_link(m.join("dir/small"), m.join("small-link")).unwrap();
    std::os::unix::fs::symlink("dir/small", m.join("sym")).unwrap();
    m.unmount();
    let (code, text) = fsck(redis, "base", &[]);
    assert_eq!(code, 0, "a fresh filesystem is not clean:\n{text}");
}

fn ino_of(redis: &Redis, prefix: &str, path: &str) -> u64 {
    let m = Mount::new(redis, prefix, &["--read-only"]);
    fs::symlink_metadata(m.join(path)).unwrap().ino()
}

fn block_of(redis: &Redis, prefix: &str, ino: u64) -> String {
    let id: String = redis.cmd(&["HGET", &format!("{{{prefix}}}:m:{ino}"), "0"]);
    format!("{prefix}:b:{id}")
}

/// Damages a copy of the base filesystem, then checks: fsck names `kind` and exits 4;
/// --repair exits 1; a second run exits 0.
fn case(redis: &Redis, name: &str, kind: &str, extra: &[&str], damage: impl FnOnce(&str)) {
    common::tool_ok(
        "snapshot",
        &["--redis", &redis.url(), "--from", "base", "--to", name],
    );
    damage(name);
    let (code, text) = fsck(redis, name, extra);
    assert_eq!(code, 4, "{name}: damage not found:\n{text}");
    assert!(text.contains(kind), "{name}: '{kind}' not named:\n{text}");
    let mut repair = vec!["--repair"];
    repair.extend_from_slice(extra);
    let (code, text) = fsck(redis, name, &repair);
    assert_eq!(code, 1, "{name}: repair did not fix everything:\n{text}");
    let (code, text) = fsck(redis, name, extra);
    assert_eq!(code, 0, "{name}: not clean after repair:\n{text}");
}

fn patch_nlink(redis: &Redis, prefix: &str, ino: u64, nlink: u32) {
    patch_record(redis, prefix, ino, 2, &nlink.to_le_bytes());
}

/// Overwrites bytes of an inode's record from `offset`.
fn patch_record(redis: &Redis, prefix: &str, ino: u64, offset: usize, bytes: &[u8]) {
    let bucket = format!("{{{prefix}}}:i:{}", ino / 64);
    let field = (ino % 64).to_string();
    let mut conn = redis.conn();
    let mut record: Vec<u8> = redis::cmd("HGET")
        .arg(&bucket)
        .arg(&field)
        .query(&mut conn)
        .unwrap();
    record[offset..offset + bytes.len()].copy_from_slice(bytes);
    let _: () = redis::cmd("HSET")
        .arg(&bucket)
        .arg(&field)
        .arg(record)
        .query(&mut conn)
        .unwrap();
}

#[test]
fn every_kind_of_damage_is_found_and_repaired() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    base(&redis);
    let big = ino_of(&redis, "base", "big");
    let small = ino_of(&redis, "base", "dir/small");
    let dir = ino_of(&redis, "base", "dir");

    // The inode hash holding every inode, the root's too: rebuilt from what survives.
    case(&redis, "inodes", "missing_root", &[], |p| {
        redis.cmd::<()>(&["DEL", &format!("{{{p}}}:i:0")])
    });
    {
        let m = Mount::new(&redis, "inodes", &["--read-only"]);
        // Rebuilt files keep their bytes; their size is rounded up to whole blocks.
        let deep = fs::read(m.join("dir/sub/deep")).unwrap();
        assert!(
            deep.starts_with(b"deep") && deep[4..].iter().all(|&b| b == 0),
            "deep lost its bytes"
        );
        let big = fs::read(m.join("big")).unwrap();
        assert!(
            big[..300_000] == common::random_bytes(300_000, 5)[..],
            "big lost its bytes"
        );
    }

    case(&redis, "block", "missing_block", &[], |p| {
        redis.cmd::<()>(&["DEL", &block_of(&redis, p, big)]);
    });
    {
        let m = Mount::new(&redis, "block", &["--read-only"]);
        let data = fs::read(m.join("big")).unwrap();
        assert_eq!(data.len(), 300_000);
        assert!(
            data[..1000].iter().all(|&b| b == 0),
            "a lost block reads as zeros"
        );
        assert!(
            data[100_000..] == common::random_bytes(300_000, 5)[100_000..],
            "other blocks changed"
        );
    }

    case(&redis, "entry", "unreachable_inode", &[], |p| {
        redis.cmd::<()>(&["HDEL", &format!("{{{p}}}:d:1"), "big"]);
    });
    {
        let m = Mount::new(&redis, "entry", &["--read-only"]);
        let found = m.join(format!("lost+found/#{big}"));
        assert!(
            fs::read(found).unwrap() == common::random_bytes(300_000, 5),
            "lost+found copy differs"
        );
    }

    case(&redis, "links", "wrong_link_count", &[], |p| {
        patch_nlink(&redis, p, small, 7)
    });
    assert_eq!(
        fs::metadata(Mount::new(&redis, "links", &["--read-only"]).join("dir/small"))
            .unwrap()
            .nlink(),
        2
    );

    // An inode whose last link went but which nothing holds open, and was never deleted.
    case(&redis, "orphan", "unreclaimed_inode", &[], |p| {
        redis.cmd::<()>(&["HDEL", &format!("{{{p}}}:d:1"), "big"]);
        patch_nlink(&redis, p, big, 0);
    });
    assert!(redis
        .keys("orphan")
        .iter()
        .all(|k| k != &format!("{{orphan}}:m:{big}")));

    case(&redis, "leak", "leaked_blocks", &[], |p| {
        redis.cmd::<()>(&["SET", &format!("{p}:b:999999"), "\x00leak"])
    });

    case(
        &redis,
        "corrupt",
        "corrupt_block",
        &["--verify-data"],
        |p| {
            redis.cmd::<()>(&["SET", &block_of(&redis, p, big), "\x01not lz4 at all"]);
        },
    );
    let (code, _) = fsck(&redis, "corrupt", &[]);
    assert_eq!(code, 0);

    // A file's count of stored blocks (its st_blocks) disagrees with its map.
    case(&redis, "counted", "wrong_block_count", &[], |p| {
        patch_record(&redis, p, big, 52, &99u64.to_le_bytes())
    });

    // The byte counters: drifted, or absent (a filesystem made before them). Repaired, they
    // are what the mount that wrote the base kept.
    let counters = |p: &str| -> Vec<Option<u64>> {
        redis.cmd(&[
            "HMGET",
            &format!("{{{p}}}:stat"),
            "inodes",
            "blocks",
            "stored_bytes",
            "file_bytes",
        ])
    };
    let kept = counters("base");
    assert!(kept.iter().all(|c| c.is_some_and(|c| c > 0)), "{kept:?}");
    case(&redis, "drifted", "wrong_counters", &[], |p| {
        redis.cmd::<()>(&["HINCRBY", &format!("{{{p}}}:stat"), "stored_bytes", "1000"])
    });
    case(&redis, "older", "no stored_bytes", &[], |p| {
        redis.cmd::<()>(&[
            "HDEL",
            &format!("{{{p}}}:stat"),
            "stored_bytes",
            "file_bytes",
        ])
    });
    assert_eq!(counters("drifted"), kept);
    assert_eq!(counters("older"), kept);

    // A directory's entries stored as a set: the key goes, its children to lost+found.
    case(&redis, "typed", "wrong_type", &[], |p| {
        let key = format!("{{{p}}}:d:{dir}");
        redis.cmd::<()>(&["DEL", &key]);
        redis.cmd::<()>(&["SADD", &key, "x"]);
    });
    {
        let m = Mount::new(&redis, "typed", &["--read-only"]);
        // dir/sub went to lost+found; dir/small is still reachable through its other link.
        let found: Vec<_> = fs::read_dir(m.join("lost+found"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(fs::read(found[0].join("deep")).unwrap(), b"deep");
        assert_eq!(fs::read(m.join("small-link")).unwrap(), b"small file");
        assert_eq!(fs::metadata(m.join("small-link")).unwrap().nlink(), 1);
    }

    // A loop: `dir` loses its entry in the root and gains one inside its own subdirectory.
    let sub = ino_of(&redis, "base", "dir/sub");
    case(&redis, "loop", "unreachable_inode", &[], |p| {
        redis.cmd::<()>(&["HDEL", &format!("{{{p}}}:d:1"), "dir"]);
        redis.cmd::<()>(&[
            "HSET",
            &format!("{{{p}}}:d:{sub}"),
            "back",
            &format!("d{dir}"),
        ]);
    });
    {
        let m = Mount::new(&redis, "loop", &["--read-only"]);
        let found = m.join(format!("lost+found/#{dir}"));
        assert_eq!(fs::read(found.join("sub/deep")).unwrap(), b"deep");
        assert!(!found.join("sub/back").exists(), "the loop is still there");
    }

    // Repair is refused while the filesystem is mounted.
    let _mounted = Mount::new(&redis, "base", &[]);
    let (code, text) = fsck(&redis, "base", &["--repair"]);
    assert_eq!(code, 8, "{text}");
    assert!(text.contains("mounted"), "{text}");
}

#[test]
fn a_killed_mount_repairs_to_clean_with_fsynced_files_intact() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let mount = Mount::new(&redis, "skx", &["--session-timeout", "1"]);
    let root = mount.path.clone();
    let synced = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = {
        let synced = synced.clone();
        std::thread::spawn(move || {
            for i in 0.. {
                let data = common::random_bytes(50_000 + i * 997 % 200_000, i as u64);
                let path = root.join(format!("f{i}"));
                let Ok(mut f) = fs::File::create(&path) else {
                    return;
                };
                if f.write_all(&data).is_err() {
                    return;
                }
                if i % 3 == 0 {
                    // Unsynced, unclosed data stays in flight when the mount dies.
                    std::mem::forget(f);
                    continue;
                }
                if f.sync_all().is_err() {
                    return;
                }
                synced.lock().unwrap().push((format!("f{i}"), data));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    mount.kill();
    let _ = writer.join();
    let synced = synced.lock().unwrap().clone();
    assert!(synced.len() > 5, "the writer got nowhere");
    // The dead mount's session expires after its timeout.
    std::thread::sleep(Duration::from_millis(1500));
    let (code, text) = fsck(
        &redis,
        "skx",
        &["--repair", "--session-timeout", "1", "--verify-data"],
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("stale_session"), "{text}");
    eprintln!("{text}");
    let (code, text) = fsck(&redis, "skx", &["--verify-data"]);
    assert_eq!(code, 0, "{text}");
    let m = Mount::new(&redis, "skx", &["--read-only"]);
    for (name, data) in &synced {
        assert!(&fs::read(m.join(name)).unwrap() == data, "{name} changed");
    }
}
