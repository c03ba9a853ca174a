//! `redisfs-snapshot`: point-in-time copies of a live filesystem, and its refusals.

mod common;

use std::fs;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{tool, tool_ok, tree_listing, Mount, Redis};

/// Bytes per numbered record the writer appends.
const RECORD: usize = 64;

fn record(i: usize) -> Vec<u8> {
    let mut r = format!("record {i:08} ").into_bytes();
    r.resize(RECORD - 1, b'.');
    r.push(b'\n');
    r
}

/// Checks that a snapshot holds a gap-free prefix of the writer's sequence (record i, then
/// file i, written under a temporary name and renamed into place): whole records 0..n,
/// files 0..m with m == n or m == n - 1, each file complete.
fn check_prefix(m: &Mount) -> (usize, usize) {
    let log = fs::read(m.join("log")).unwrap_or_default();
    assert_eq!(
        log.len() % RECORD,
        0,
        "torn record: log is {} bytes",
        log.len()
    );
    let n = log.len() / RECORD;
    for (i, chunk) in log.chunks(RECORD).enumerate() {
        assert_eq!(chunk, record(i).as_slice(), "record {i} is wrong");
    }
    let mut files: Vec<usize> = fs::read_dir(m.join("files"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| !name.starts_with('.'))
        .map(|name| name.parse().unwrap())
        .collect();
    files.sort();
    let count = files.len();
    assert_eq!(files, (0..count).collect::<Vec<_>>(), "files have a gap");
    for i in 0..count {
        assert_eq!(
            fs::read(m.join(format!("files/{i}"))).unwrap(),
            format!("file {i}\n").into_bytes(),
            "file {i} is torn"
        );
    }
    assert!(
        count == n || count + 1 == n,
        "records {n} and files {count} are not one prefix of the sequence"
    );
    (n, count)
}

#[test]
fn snapshots_of_a_busy_filesystem_are_points_in_time() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let url = redis.url();
    let source = Mount::new(&redis, "skx", &[]);
    fs::create_dir(source.join("files")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (dir, stop) = (source.path.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("log"))
                .unwrap();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                log.write_all(&record(i)).unwrap();
                let partial = dir.join(format!("files/.{i}"));
                fs::write(&partial, format!("file {i}\n")).unwrap();
                fs::rename(&partial, dir.join(format!("files/{i}"))).unwrap();
                i += 1;
            }
            i
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut sizes = Vec::new();
    for k in 0..5 {
        let to = format!("snap{k}");
        let summary = tool_ok(
            "snapshot",
            &["--redis", &url, "--from", "skx", "--to", &to, "--json"],
        );
        let report: serde_json::Value = serde_json::from_str(&summary).unwrap();
        assert_eq!(report["hold"]["mounts"], 1, "{summary}");
        assert_eq!(
            report["hold"]["silent"].as_array().map(Vec::len),
            Some(0),
            "{summary}"
        );
        std::thread::sleep(Duration::from_millis(200));
        let copy = Mount::new(&redis, &to, &["--read-only"]);
        sizes.push(check_prefix(&copy));
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(sizes.windows(2).all(|w| w[0].0 <= w[1].0), "{sizes:?}");
    assert!(
        sizes[4].0 > 0 && written > sizes[4].0,
        "{sizes:?} of {written}"
    );

    // At rest, a copy equals its source, attribute for attribute and byte for byte.
    tool_ok(
        "snapshot",
        &["--redis", &url, "--from", "skx", "--to", "final"],
    );
    let copy = Mount::new(&redis, "final", &[]);
    assert_eq!(tree_listing(&copy.path), tree_listing(&source.path));
    // And it is a filesystem of its own.
    fs::write(copy.join("only-in-copy"), b"x").unwrap();
    assert!(!source.join("only-in-copy").exists());
}

#[test]
fn snapshots_refuse_what_they_must_not_touch() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let url = redis.url();
    {
        let m = Mount::new(&redis, "skx", &[]);
        fs::write(m.join("a"), b"alpha").unwrap();
        m.unmount();
    }
    redis.cmd::<()>(&["SET", "{other}:x", "1"]);
    redis.cmd::<()>(&["SET", "skx2:keep", "1"]);

    let refused = |args: &[&str], needle: &str| {
        let out = tool("snapshot", args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    };
    refused(
        &["--redis", &url, "--from", "skx", "--to", "other"],
        "not empty",
    );
    refused(
        &["--redis", &url, "--from", "other", "--to", "c"],
        "not a redisfs filesystem",
    );
    refused(
        &["--redis", &url, "--from", "nothing", "--to", "c"],
        "no filesystem",
    );
    refused(
        &["--redis", &url, "--from", "skx", "--to", "skx"],
        "same filesystem",
    );
    // `skx:old` would overlap the keys of `skx`.
    refused(
        &["--redis", &url, "--from", "skx", "--to", "skx:old"],
        "without ':'",
    );
    refused(
        &["--redis", "http://x", "--from", "skx", "--to", "c"],
        "http://x",
    );

    // --replace empties the target first; keys of other prefixes are untouched.
    tool_ok(
        "snapshot",
        &[
            "--redis",
            &url,
            "--from",
            "skx",
            "--to",
            "other",
            "--replace",
        ],
    );
    assert!(redis.keys("other").iter().all(|k| k != "{other}:x"));
    assert_eq!(redis.cmd::<String>(&["GET", "skx2:keep"]), "1");
    let copy = Mount::new(&redis, "other", &["--read-only"]);
    assert_eq!(fs::read(copy.join("a")).unwrap(), b"alpha");
}

#[test]
fn snapshots_go_to_another_server_with_dump_and_restore() {
    if !common::ready() {
        return;
    }
    let (here, there) = (Redis::start(), Redis::start());
    let source = Mount::new(&here, "skx", &[]);
    fs::write(source.join("big"), common::random_bytes(3 << 20, 7)).unwrap();
    fs::create_dir(source.join("d")).unwrap();
    std::os::unix::fs::symlink("../big", source.join("d/link")).unwrap();
    let summary = tool_ok(
        "snapshot",
        &[
            "--redis",
            &here.url(),
            "--from",
            "skx",
            "--to",
            "away",
            "--to-redis",
            &there.url(),
        ],
    );
    assert!(summary.contains("DUMP/RESTORE"), "{summary}");
    let copy = Mount::new(&there, "away", &["--read-only"]);
    assert_eq!(tree_listing(&copy.path), tree_listing(&source.path));
}
