//! `redisfs-admin` against live mounts: what it lists and reports (checked in its JSON),
//! what it changes, and what it refuses.

mod common;

use std::fs;
use std::os::unix::io::AsRawFd;

use common::{Mount, Redis};
use serde_json::Value;

/// Runs `redisfs-admin COMMAND --redis URL ARGS… --json`; returns its JSON.
fn admin_json(redis: &Redis, command: &str, args: &[&str]) -> Value {
    let url = redis.url();
    let mut all = vec![command, "--redis", &url, "--json"];
    all.extend(args);
    serde_json::from_str(&common::tool_ok("admin", &all)).expect("JSON")
}

/// Runs a `redisfs-admin` command that must be refused; returns its one line of stderr.
fn admin_refused(redis: &Redis, command: &str, args: &[&str]) -> String {
    let url = redis.url();
    let mut all = vec![command, "--redis", &url];
    all.extend(args);
    let out = common::tool("admin", &all);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert_eq!(said.lines().count(), 1, "one line: {said}");
    said
}

#[test]
fn list_status_config_and_destroy_against_live_mounts() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let a = Mount::new(&redis, "skx", &[]);
    let b = Mount::new(&redis, "skx", &["--no-metrics"]);
    Mount::new(&redis, "spare", &[]).unmount();
    // Something to report: a leased directory, a lock, an unlinked file held open.
    fs::create_dir(a.join("mine")).unwrap();
    fs::write(a.join("mine/f"), vec![1u8; 200_000]).unwrap();
    let locked = fs::File::create(a.join("locked")).unwrap();
    // SAFETY: flock on an open descriptor.
    assert_eq!(unsafe { libc::flock(locked.as_raw_fd(), libc::LOCK_EX) }, 0);
    let held = fs::File::create(a.join("held")).unwrap();
    fs::remove_file(a.join("held")).unwrap();

    let listed = admin_json(&redis, "list", &[]);
    let filesystems = listed["filesystems"].as_array().unwrap();
    let prefixes: Vec<&str> = filesystems
        .iter()
        .map(|f| f["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(prefixes, ["skx", "spare"], "{listed}");
    assert_eq!(filesystems[0]["live_mounts"], 2);
    assert_eq!(filesystems[1]["live_mounts"], 0);
    assert!(filesystems[0]["blocks"].as_u64().unwrap() >= 4, "{listed}");
    // 200,000 bytes of ones: their blocks take far less once compressed.
    let (file_bytes, stored_bytes) = (
        filesystems[0]["file_bytes"].as_u64().unwrap(),
        filesystems[0]["stored_bytes"].as_u64().unwrap(),
    );
    assert!(
        file_bytes >= 200_000 && stored_bytes > 0 && stored_bytes < file_bytes / 10,
        "{listed}"
    );

    let status = admin_json(&redis, "status", &["--prefix", "skx"]);
    assert_eq!(status["codec"], "lz4");
    assert_eq!(status["block_size"], 65472);
    assert!(status["inodes"].as_u64().unwrap() >= 5, "{status}");
    let mounts = status["mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 2, "{status}");
    let of = |m: &Mount| {
        mounts
            .iter()
            .find(|s| s["pid"] == m.pid())
            .unwrap_or_else(|| panic!("no session of pid {}: {status}", m.pid()))
            .clone()
    };
    let (sa, sb) = (of(&a), of(&b));
    assert_eq!(sa["mount_point"], a.path.to_str().unwrap());
    assert_eq!(sa["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(sa["live"], true);
    assert!(sa["heartbeat_age_ms"].as_u64().unwrap() < 30_000);
    assert!(
        sa["metrics"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{sa}"
    );
    assert_eq!(sb["metrics"], Value::Null, "--no-metrics records none");
    assert_eq!(
        (
            sa["leases"].as_u64(),
            sa["locked_inodes"].as_u64(),
            sa["held_inodes"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{sa}"
    );
    assert_eq!(
        (
            sb["leases"].as_u64(),
            sb["locked_inodes"].as_u64(),
            sb["held_inodes"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "{sb}"
    );
    drop((locked, held));

    // Settings: the codec may change (for blocks written by mounts started afterwards, the
    // old ones staying readable); the block size and ACLs may not.
    admin_json(
        &redis,
        "config",
        &["--prefix", "skx", "--compression", "zstd"],
    );
    let said = admin_refused(&redis, "config", &["--prefix", "skx", "--block-size", "4K"]);
    assert!(said.contains("block size cannot change"), "{said}");
    let said = admin_refused(&redis, "config", &["--prefix", "skx", "--acl", "off"]);
    assert!(said.contains("ACLs cannot be turned"), "{said}");
    drop(a);
    drop(b);
    // A creation option given for an existing filesystem is ignored, with a warning.
    let c = Mount::new(&redis, "skx", &["--compression", "lz4"]);
    let log = c.log_text();
    assert!(
        log.contains("ignored: --compression (it uses zstd"),
        "{log}"
    );
    fs::write(c.join("new"), vec![b'x'; 100_000]).unwrap();
    assert_eq!(fs::read(c.join("mine/f")).unwrap(), vec![1u8; 200_000]);
    assert_eq!(
        admin_json(&redis, "status", &["--prefix", "skx"])["codec"],
        "zstd"
    );
    // Each block's first byte names its codec: 1 for LZ4, 2 for zstd.
    let codecs = |path: &std::path::Path| -> Vec<u8> {
        let ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(path).unwrap());
        let ids: Vec<String> = redis.cmd(&["HVALS", &format!("{{skx}}:m:{ino}")]);
        assert!(!ids.is_empty(), "{} has blocks", path.display());
        ids.iter()
            .map(|id| redis.cmd::<Vec<u8>>(&["GET", &format!("skx:b:{id}")])[0])
            .collect()
    };
    assert!(codecs(&c.join("new")).iter().all(|&tag| tag == 2));
    assert!(codecs(&c.join("mine/f")).iter().all(|&tag| tag == 1));

    // Destroy: refused while mounted, then without --yes; then everything of it is gone and
    // nothing else.
    let said = admin_refused(&redis, "destroy", &["--prefix", "skx", "--yes"]);
    assert!(said.contains("is mounted"), "{said}");
    c.unmount();
    let said = admin_refused(&redis, "destroy", &["--prefix", "skx"]);
    assert!(said.contains("--yes"), "{said}");
    admin_json(&redis, "destroy", &["--prefix", "skx", "--yes"]);
    assert!(
        redis.keys("skx").is_empty(),
        "keys left: {:?}",
        redis.keys("skx")
    );
    let listed = admin_json(&redis, "list", &[]);
    assert_eq!(
        listed["filesystems"].as_array().unwrap().len(),
        1,
        "{listed}"
    );
    common::assert_clean(&redis, "spare");

    // A filesystem whose restore never finished is listed with its state and may be
    // destroyed; keys that only look like a filesystem's are neither.
    redis.cmd::<()>(&["HSET", "{spare}:meta", "state", "restoring"]);
    redis.cmd::<()>(&["HSET", "{foreign}:meta", "owner", "someone else"]);
    let listed = admin_json(&redis, "list", &[]);
    assert_eq!(listed["filesystems"][0]["state"], "restoring", "{listed}");
    assert_eq!(
        listed["filesystems"].as_array().unwrap().len(),
        1,
        "{listed}"
    );
    admin_json(&redis, "destroy", &["--prefix", "spare", "--yes"]);
    assert!(redis.keys("spare").is_empty());
    admin_refused(&redis, "destroy", &["--prefix", "foreign", "--yes"]);
    assert_eq!(redis.keys("foreign"), ["{foreign}:meta"]);
}

#[test]
fn stats_shows_a_mount_at_work() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let m = Mount::new(&redis, "skx", &[]);
    let url = redis.url();
    let mount_point = m.path.to_str().unwrap().to_string();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                fs::write(m.join(format!("f{}", i % 50)), vec![3u8; 300_000]).unwrap();
                i += 1;
            }
        });
        let args = [
            "stats",
            "--redis",
            &url,
            &mount_point,
            "--interval",
            "0.5",
            "--count",
            "3",
            "--json",
        ];
        let out = common::tool_ok("admin", &args);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        out
    });
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    let busiest = |field: &str| {
        lines
            .iter()
            .map(|l| l[field].as_f64().unwrap())
            .fold(0.0, f64::max)
    };
    assert!(busiest("requests_per_second") > 10.0, "{out}");
    assert!(busiest("written_mib_per_second") > 1.0, "{out}");
    assert!(busiest("round_trips_per_second") > 1.0, "{out}");

    Mount::new(&redis, "other", &[]).unmount();
    let said = admin_refused(&redis, "stats", &["--prefix", "other", "--count", "1"]);
    assert!(
        said.contains("'other' is not mounted on this machine"),
        "{said}"
    );
}

/// A filesystem of format 1 (its metadata under `skx:` rather than `{skx}:`) is refused with
/// the command that converts it; `upgrade` refuses while a mount lives, finishes an upgrade that
/// was interrupted, keeps every file and leaves nothing of the old names behind.
#[test]
fn upgrade_converts_a_format_1_filesystem_and_keeps_every_file() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let m = Mount::new(&redis, "skx", &[]);
    fs::create_dir_all(m.join("d/e")).unwrap();
    for i in 0..30 {
        fs::write(
            m.join(format!("d/f{i}")),
            common::random_bytes(100_000 + i, i as u64),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("d/f1", m.join("link")).unwrap();
    fs::hard_link(m.join("d/f2"), m.join("d/e/f2-again")).unwrap();
    let before = common::tree_listing(&m.path);
    m.unmount();
    // Format 1, as an earlier redisfs left it: the same keys without braces, version 1.
    for key in redis.keys("skx") {
        if let Some(rest) = key.strip_prefix("{skx}:") {
            redis.cmd::<()>(&["RENAME", &key, &format!("skx:{rest}")]);
        }
    }
    redis.cmd::<()>(&["HSET", "skx:meta", "version", "1"]);

    let url = redis.url();
    let refusal = Mount::with_args(&[
        "--redis".into(),
        url.clone(),
        "--prefix".into(),
        "skx".into(),
    ])
    .err()
    .expect("a format-1 filesystem is refused");
    assert!(
        refusal
            .stderr
            .contains("redisfs-admin upgrade --prefix skx"),
        "{}",
        refusal.stderr
    );
    // `list` shows it, with what to do (and not another program's key of such a name).
    redis.cmd::<()>(&["SET", "other:meta", "not a filesystem"]);
    let listed = admin_json(&redis, "list", &[]);
    let states: Vec<(&str, &str)> = (listed["filesystems"].as_array().unwrap().iter())
        .map(|f| (f["prefix"].as_str().unwrap(), f["state"].as_str().unwrap()))
        .collect();
    assert!(
        matches!(states[..], [("skx", state)] if state.contains("redisfs-admin upgrade --prefix skx")),
        "{listed}"
    );
    let fsck = common::tool("fsck", &["--redis", &url, "--prefix", "skx"]);
    assert!(
        String::from_utf8_lossy(&fsck.stderr).contains("redisfs-admin upgrade --prefix skx"),
        "{}",
        String::from_utf8_lossy(&fsck.stderr)
    );

    // A mount that heartbeat a moment ago holds it back.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    redis.cmd::<()>(&["ZADD", "skx:sessions", &now_ms, "77"]);
    let said = admin_refused(&redis, "upgrade", &["--prefix", "skx"]);
    assert!(said.contains("is mounted"), "{said}");
    redis.cmd::<()>(&["ZREM", "skx:sessions", "77"]);

    // An upgrade interrupted after its first renames.
    redis.cmd::<()>(&["HSET", "skx:meta", "state", "upgrading"]);
    redis.cmd::<()>(&["RENAME", "skx:i:0", "{skx}:i:0"]);
    let done = admin_json(&redis, "upgrade", &["--prefix", "skx"]);
    assert!(
        done["done"]
            .as_str()
            .unwrap()
            .contains("converted to format 2"),
        "{done}"
    );
    let again = admin_json(&redis, "upgrade", &["--prefix", "skx"]);
    assert_eq!(again["done"], "already in the current key layout");
    let keys = redis.keys("skx");
    assert!(
        keys.iter()
            .all(|k| k.starts_with("{skx}:") || k.starts_with("skx:b:")),
        "{keys:?}"
    );
    common::assert_clean(&redis, "skx");
    let after = Mount::new(&redis, "skx", &[]);
    assert_eq!(common::tree_listing(&after.path), before);
    fs::write(after.join("new"), b"written after the upgrade").unwrap();
    after.unmount();
    common::assert_clean(&redis, "skx");
}
