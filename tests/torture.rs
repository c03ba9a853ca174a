//! The torture suite: concurrency and faults against real mounts, checked against a model of
//! what was acknowledged, each ending with a clean fsck.
//!
//! "Acknowledged" is what a program was told succeeded: a create that returned a descriptor,
//! a record whose `fsync` returned 0. After any fault of Redis itself (a stall, a crash and
//! restart, a full memory) every acknowledged change must be there, and nothing the failed
//! operations wrote may be left behind.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{tool, Mount, On, Place, Redis};

/// Runs fsck (checking block contents too) and asserts that it finds nothing.
fn assert_fsck_clean(url: &str, prefix: &str) {
    let out = tool(
        "fsck",
        &["--redis", url, "--prefix", prefix, "--verify-data"],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "fsck is not clean:\n{text}");
}

/// The record an appender writes as its `i`th line.
fn record(i: usize) -> String {
    format!("{i:08}\n")
}

/// Checks that `path` holds exactly records `0..count`, naming the first one that is wrong.
fn assert_records(path: &Path, count: usize) {
    let data = fs::read(path).expect("read the journal");
    let text = String::from_utf8_lossy(&data);
    for (i, line) in text.lines().enumerate() {
        assert_eq!(
            format!("{line}\n"),
            record(i),
            "record {i} of {} is wrong ({} bytes, {count} records expected)",
            path.display(),
            data.len()
        );
    }
    assert_eq!(data.len(), count * 9, "{}: records missing", path.display());
}

/// Appends `count` records to `path` with `O_APPEND`, each followed by `fsync`, while other
/// threads `stat` the file and list its directory with attributes (`ls -l`).
fn append_under_stat(path: &Path, count: usize) {
    let stop = AtomicBool::new(false);
    let dir = path.parent().expect("journal's directory").to_path_buf();
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let _ = fs::metadata(path);
                std::thread::sleep(Duration::from_micros(500));
            }
        });
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                for entry in fs::read_dir(&dir).expect("list").flatten() {
                    let _ = entry.metadata();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let mut journal = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open journal");
        for i in 0..count {
            journal.write_all(record(i).as_bytes()).expect("append");
            journal.sync_all().expect("fsync");
        }
        stop.store(true, Ordering::Relaxed);
    });
}

/// Opens (creating) the journal at `path` for appending. Tests open it before their fault
/// starts: an open that met the fault would be the fault's failure, not the journal's.
fn open_journal(path: &Path) -> fs::File {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open journal")
}

/// Appends records to `journal`, each followed by an `fsync` that must succeed, until `stop`;
/// counts them in `appended`.
fn append_until(mut journal: fs::File, stop: &AtomicBool, appended: &AtomicUsize) {
    while !stop.load(Ordering::Relaxed) {
        let i = appended.load(Ordering::Relaxed);
        journal.write_all(record(i).as_bytes()).expect("append");
        journal.sync_all().expect("fsync");
        appended.fetch_add(1, Ordering::Relaxed);
    }
}

/// Appends records to `journal` until `stop`, retrying each failed `fsync` (as a careful
/// program does) until it succeeds; returns how many records were written.
fn append_retrying(mut journal: fs::File, stop: &AtomicBool) -> usize {
    let mut written = 0;
    let mut failures = 0;
    while !stop.load(Ordering::Relaxed) {
        journal
            .write_all(record(written).as_bytes())
            .expect("append");
        written += 1;
        while journal.sync_all().is_err() {
            failures += 1;
            assert!(failures < 100, "fsync never succeeded after the stall");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    written
}

/// Asserts that the mount never dropped a change it had answered, unmounts it, and checks the
/// filesystem with fsck.
fn unmount_checked(m: Mount, redis: &Redis) {
    let log = m.log_text();
    assert!(
        !log.contains("they are lost") && !log.contains("lost block-map races"),
        "the mount dropped changes:\n{log}"
    );
    m.unmount();
    assert_fsck_clean(&redis.url(), "skx");
}

/// Caught: a `stat` answered from a record read before the last store replaced the size the
/// kernel knew, and the next `O_APPEND` write landed at the older end of file, overwriting
/// fsync'd records.
#[test]
fn fsynced_appends_survive_concurrent_stat_and_listing() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let m = Mount::new(&redis, "skx", &[]);
    // In a directory leased to the mount (its own) and in the shared root.
    fs::create_dir(m.join("own")).unwrap();
    for path in [m.join("own/journal"), m.join("journal")] {
        append_under_stat(&path, 3000);
        assert_records(&path, 3000);
    }
    m.unmount();
    let m = Mount::new(&redis, "skx", &[]);
    assert_records(&m.join("own/journal"), 3000);
    assert_records(&m.join("journal"), 3000);
    m.unmount();
    assert_fsck_clean(&redis.url(), "skx");
}

/// Caught: attributes read for a directory listing before a file's last store reached the
/// kernel after it, so a file written, fsync'd and closed read back as empty.
#[test]
fn files_read_back_whole_while_their_directory_is_listed() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let m = Mount::new(&redis, "skx", &[]);
    let other = Mount::new(&redis, "skx", &[]);
    fs::create_dir(other.join("shared")).unwrap();
    fs::create_dir(m.join("own")).unwrap();
    let stop = AtomicBool::new(false);
    let bad = Mutex::new(Vec::new());
    for dir in [m.join("own"), m.join("shared")] {
        std::thread::scope(|s| {
            let listers: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        let mut listings = 0;
                        while !stop.load(Ordering::Relaxed) {
                            for entry in fs::read_dir(&dir).expect("list").flatten() {
                                let _ = entry.metadata();
                            }
                            listings += 1;
                        }
                        listings
                    })
                })
                .collect();
            let (sent, written) = std::sync::mpsc::channel::<(PathBuf, Vec<u8>, Instant)>();
            let reader = s.spawn(|| {
                for (path, data, closed) in written {
                    let due = closed + Duration::from_millis(20);
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    let back = fs::read(&path).expect("read back");
                    if back != data {
                        bad.lock().unwrap().push(format!(
                            "{}: {} bytes read, {} written",
                            path.display(),
                            back.len(),
                            data.len()
                        ));
                    }
                }
            });
            for i in 0..1000 {
                let path = dir.join(format!("f{i}"));
                let data = common::random_bytes(1 + i * 7919 % 20_000, i as u64);
                let mut f = fs::File::create(&path).expect("create");
                f.write_all(&data).expect("write");
                f.sync_all().expect("fsync");
                drop(f);
                sent.send((path, data, Instant::now())).unwrap();
            }
            drop(sent);
            reader.join().unwrap();
            stop.store(true, Ordering::Relaxed);
            for lister in listers {
                assert!(lister.join().unwrap() > 0, "a lister never listed");
            }
            stop.store(false, Ordering::Relaxed);
        });
    }
    let bad = bad.into_inner().unwrap();
    assert!(
        bad.is_empty(),
        "{} files read back wrong: {bad:?}",
        bad.len()
    );
    m.unmount();
    other.unmount();
    assert_fsck_clean(&redis.url(), "skx");
}

/// Creates files `dir/f<i>` until `stop`; returns the names whose create succeeded and how
/// many failed.
fn create_until(dir: &Path, stop: &AtomicBool) -> (BTreeSet<String>, usize) {
    let mut answered = BTreeSet::new();
    let mut failed = 0;
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let name = format!("f{i}");
        match fs::File::create(dir.join(&name)) {
            Ok(_) => {
                answered.insert(name);
            }
            Err(_) => {
                failed += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    (answered, failed)
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// Asserts that every name in `answered` is listed in `dir`.
fn assert_all_listed(dir: &Path, answered: &BTreeSet<String>) {
    let listed = names(dir);
    let lost: Vec<&String> = answered.difference(&listed).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged creates are gone from {}, e.g. {:?}",
        lost.len(),
        answered.len(),
        dir.display(),
        &lost[..lost.len().min(5)]
    );
}

/// Caught: a batch of deferred creates whose reply was lost in a stall was sent again as a
/// new request, found its own files (EEXIST), and the mount dropped the whole batch; its
/// lease then stayed recorded, and another mount's listing waited 180 s and failed.
#[test]
fn answered_creates_survive_a_redis_stall_longer_than_the_io_timeout() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let a = Mount::new(&redis, "skx", &["--io-timeout", "3"]);
    let b = Mount::new(&redis, "skx", &[]);
    let dir = a.join("leased");
    fs::create_dir(&dir).unwrap();
    fs::create_dir(b.join("shared")).unwrap();
    let journal = open_journal(&a.join("journal"));
    let stop = AtomicBool::new(false);
    let ((answered, failed), (shared, shared_failed), appended) = std::thread::scope(|s| {
        let creator = s.spawn(|| create_until(&dir, &stop));
        let shared = s.spawn(|| create_until(&a.join("shared"), &stop));
        let appender = s.spawn(|| append_retrying(journal, &stop));
        std::thread::sleep(Duration::from_millis(500));
        redis.stall(Duration::from_secs(10));
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        (
            creator.join().unwrap(),
            shared.join().unwrap(),
            appender.join().unwrap(),
        )
    });
    eprintln!(
        "acknowledged: {} creates in a leased directory ({failed} failed), {} in a shared one \
         ({shared_failed} failed), {appended} fsync'd records; one 10 s stall",
        answered.len(),
        shared.len()
    );
    assert!(answered.len() > 1000, "only {} creates", answered.len());
    assert_all_listed(&dir, &answered);
    let started = Instant::now();
    assert_all_listed(&b.join("leased"), &answered);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "another mount waited {:?} for the directory",
        started.elapsed()
    );
    assert_all_listed(&b.join("shared"), &shared);
    assert_records(&b.join("journal"), appended);
    b.unmount();
    unmount_checked(a, &redis);
}

/// A stall shorter than the I/O timeout is a pause: nothing fails, nothing is lost.
#[test]
fn a_stall_shorter_than_the_io_timeout_is_only_a_pause() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let m = Mount::new(&redis, "skx", &["--io-timeout", "15"]);
    let other = Mount::new(&redis, "skx", &[]);
    fs::create_dir(m.join("leased")).unwrap();
    fs::create_dir(other.join("shared")).unwrap();
    let journal = open_journal(&m.join("journal"));
    let stop = AtomicBool::new(false);
    let appended = AtomicUsize::new(0);
    let ((leased, leased_failed), (shared, shared_failed)) = std::thread::scope(|s| {
        let in_leased = s.spawn(|| create_until(&m.join("leased"), &stop));
        let in_shared = s.spawn(|| create_until(&m.join("shared"), &stop));
        s.spawn(|| append_until(journal, &stop, &appended));
        std::thread::sleep(Duration::from_millis(500));
        redis.stall(Duration::from_secs(4));
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        (in_leased.join().unwrap(), in_shared.join().unwrap())
    });
    eprintln!(
        "acknowledged: {} creates in a leased directory, {} in a shared one, {} fsync'd \
         records; one 4 s stall",
        leased.len(),
        shared.len(),
        appended.load(Ordering::Relaxed)
    );
    assert_eq!(
        leased_failed + shared_failed,
        0,
        "creates failed in a short stall"
    );
    assert_all_listed(&other.join("leased"), &leased);
    assert_all_listed(&other.join("shared"), &shared);
    assert_records(&other.join("journal"), appended.load(Ordering::Relaxed));
    m.unmount();
    other.unmount();
    assert_fsck_clean(&redis.url(), "skx");
}

/// Caught: a store whose reply was lost in a stall had committed after all; the next store
/// lost the block-map race to it and, for a file this mount created, re-read its map as all
/// holes each time, failing `fsync` with EIO ("16 lost block-map races") for stored data.
#[test]
fn fsync_after_a_stall_longer_than_the_io_timeout_stores_everything_once() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let m = Mount::new(&redis, "skx", &["--io-timeout", "1"]);
    let path = m.join("journal");
    let journal = open_journal(&path);
    let stop = AtomicBool::new(false);
    let written = std::thread::scope(|s| {
        let writer = s.spawn(|| append_retrying(journal, &stop));
        std::thread::sleep(Duration::from_millis(300));
        redis.stall(Duration::from_secs(7));
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap()
    });
    eprintln!("{written} records appended, each fsync'd; one 7 s stall");
    assert_records(&path, written);
    unmount_checked(m, &redis);
}

/// Redis killed and restarted from its AOF while a mount creates and appends: every
/// acknowledged create and fsync'd record is there afterwards.
#[test]
fn a_redis_crash_and_restart_keeps_every_acknowledged_change() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let m = Mount::new(&redis, "skx", &["--io-timeout", "30"]);
    let other = Mount::new(&redis, "skx", &["--io-timeout", "30"]);
    fs::create_dir(m.join("leased")).unwrap();
    fs::create_dir(other.join("shared")).unwrap();
    let journal = open_journal(&m.join("journal"));
    let stop = AtomicBool::new(false);
    let appended = AtomicUsize::new(0);
    let ((leased, leased_failed), (shared, shared_failed), chunks) = std::thread::scope(|s| {
        let in_leased = s.spawn(|| create_until(&m.join("leased"), &stop));
        let in_shared = s.spawn(|| create_until(&m.join("shared"), &stop));
        s.spawn(|| append_until(journal, &stop, &appended));
        let writer = s.spawn(|| {
            let mut f = fs::File::create(m.join("data")).unwrap();
            let mut chunks = 0;
            while !stop.load(Ordering::Relaxed) {
                f.write_all(&common::random_bytes(CHUNK, chunks as u64))
                    .expect("write");
                f.sync_all().expect("fsync across a Redis restart");
                chunks += 1;
            }
            chunks
        });
        for _ in 0..2 {
            std::thread::sleep(Duration::from_millis(700));
            redis.crash();
        }
        std::thread::sleep(Duration::from_millis(700));
        stop.store(true, Ordering::Relaxed);
        (
            in_leased.join().unwrap(),
            in_shared.join().unwrap(),
            writer.join().unwrap(),
        )
    });
    eprintln!(
        "acknowledged: {} creates in a leased directory, {} in a shared one, {} fsync'd \
         records, {chunks} fsync'd chunks of 300 KB; two crashes and restarts",
        leased.len(),
        shared.len(),
        appended.load(Ordering::Relaxed)
    );
    assert_eq!(
        leased_failed + shared_failed,
        0,
        "creates failed across a restart"
    );
    m.unmount();
    other.unmount();
    let m = Mount::new(&redis, "skx", &[]);
    assert_all_listed(&m.join("leased"), &leased);
    assert_all_listed(&m.join("shared"), &shared);
    assert_records(&m.join("journal"), appended.load(Ordering::Relaxed));
    let data = fs::read(m.join("data")).unwrap();
    assert_eq!(data.len(), chunks * CHUNK);
    for (i, chunk) in data.chunks(CHUNK).enumerate() {
        assert!(
            chunk == common::random_bytes(CHUNK, i as u64),
            "chunk {i} differs"
        );
    }
    m.unmount();
    assert_fsck_clean(&redis.url(), "skx");
}

/// Caught: a small write's blocks go with its commit in one `MULTI` transaction, and a Redis
/// that restarted and was still loading its data refused the queued commands (`LOADING`);
/// the aborted transaction (`EXECABORT`) was taken for a final failure and the `fsync` failed
/// with `EIO` instead of waiting for the load, as every other request does.
#[test]
fn fsync_waits_for_a_restarted_redis_loading_its_data() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start_with(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--enable-debug-command",
        "yes",
    ]);
    // Keys of another application, enough that loading them takes a while after a restart.
    let _: () = redis.cmd(&["DEBUG", "POPULATE", "3000000", "other-application", "64"]);
    let _: () = redis.cmd(&["BGREWRITEAOF"]);
    common::eventually("the AOF rewrite", Duration::from_secs(60), || {
        let info: String = redis.cmd(&["INFO", "persistence"]);
        info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0")
    });
    let m = Mount::new(&redis, "skx", &["--io-timeout", "60"]);
    let journal = open_journal(&m.join("journal"));
    let stop = AtomicBool::new(false);
    let appended = AtomicUsize::new(0);
    let loading_seen = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let appender = s.spawn(|| append_until(journal, &stop, &appended));
        std::thread::sleep(Duration::from_millis(300));
        redis.crash();
        let before = appended.load(Ordering::Relaxed);
        common::eventually("appends after the restart", Duration::from_secs(30), || {
            appended.load(Ordering::Relaxed) > before + 20 || appender.is_finished()
        });
        m.log_text().contains("loading the dataset")
    });
    assert!(
        loading_seen,
        "the restarted Redis was never seen loading: the test proves nothing"
    );
    eprintln!(
        "{} records appended, each fsync'd, across a restart",
        appended.load(Ordering::Relaxed)
    );
    assert_records(&m.join("journal"), appended.load(Ordering::Relaxed));
    unmount_checked(m, &redis);
}

/// Bytes per write of the crash test's data writer (not a multiple of the block size).
const CHUNK: usize = 300_000;

/// Writes `path` until Redis says it is full; returns the error.
/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn write_until_full(path: &Path) -> std::io::Error {
    // The create itself may be what finds Redis full (other threads create files meanwhile).
    let mut f = match fs::File::create(path) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let chunk = common::random_bytes(1 << 20, 7);
    for _ in 0..10_000 {
        if let Err(e) = f.write_all(&chunk).and_then(|_| f.sync_all()) {
            return e;
        }
    }
    panic!("Redis never filled up");
}

/// Caught: blocks stored before a commit that Redis then refused for want of memory were left
/// behind, named by no file (fsck: orphan blocks).
#[test]
fn a_full_redis_answers_enospc_and_leaks_nothing() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start_with(&["--maxmemory", "40mb", "--maxmemory-policy", "noeviction"]);
    // Short session timeouts: a full Redis must not make a live mount look dead.
    let m = Mount::new(&redis, "skx", &["--session-timeout", "3"]);
    let other = Mount::new(&redis, "skx", &["--session-timeout", "3"]);
    fs::create_dir(m.join("leased")).unwrap();
    fs::create_dir(other.join("shared")).unwrap();
    for round in 0..3 {
        let stop = AtomicBool::new(false);
        let ((leased, leased_failed), (shared, shared_failed)) = std::thread::scope(|s| {
            // The creators stop however this closure ends: a failed assertion must fail the
            // test, not leave the scope waiting for them.
            let _stops = StopOnDrop(&stop);
            let in_leased = s.spawn(|| create_until(&m.join("leased"), &stop));
            let in_shared = s.spawn(|| create_until(&m.join("shared"), &stop));
            let err = write_until_full(&m.join(format!("big{round}")));
            assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
            let err = write_until_full(&m.join(format!("more{round}")));
            assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
            // Creates go on against the full Redis, longer than the session timeout.
            std::thread::sleep(Duration::from_secs(4));
            stop.store(true, Ordering::Relaxed);
            (in_leased.join().unwrap(), in_shared.join().unwrap())
        });
        eprintln!(
            "round {round}: acknowledged {} creates in a leased directory ({leased_failed} \
             refused), {} in a shared one ({shared_failed} refused)",
            leased.len(),
            shared.len()
        );
        for (dir, answered) in [("leased", &leased), ("shared", &shared)] {
            assert_all_listed(&other.join(dir), answered);
            for name in answered {
                fs::remove_file(m.join(dir).join(name)).unwrap();
            }
        }
        for name in [format!("big{round}"), format!("more{round}")] {
            // (Not there if its create was what found Redis full.)
            match fs::remove_file(m.join(&name)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("{name}: {e}"),
                _ => {}
            }
        }
    }
    for mount in [&m, &other] {
        assert!(
            !mount.log_text().contains("stopped heartbeating"),
            "a live mount was taken for dead:\n{}",
            mount.log_text()
        );
    }
    other.unmount();
    // Room again: writes work.
    fs::write(m.join("after"), b"room again").unwrap();
    assert_eq!(fs::read(m.join("after")).unwrap(), b"room again");
    unmount_checked(m, &redis);
}

/// Two, then three mounts rename, link, unlink and create overlapping names in one directory;
/// all of them then agree on its contents, every link count matches the names, and fsck is
/// clean.
fn mounts_renaming_linking_and_unlinking_overlapping_names_agree(on: On) {
    if !common::ready() {
        return;
    }
    for count in [2, 3] {
        overlapping_names(on, count);
    }
}

/// `count` mounts of one filesystem, each making 1,500 random changes to twelve shared names.
fn overlapping_names(on: On, count: usize) {
    let redis = Place::start(on);
    let mounts: Vec<Mount> = (0..count).map(|_| Mount::on(&redis, "skx", &[])).collect();
    fs::create_dir(mounts[0].join("arena")).unwrap();
    std::thread::scope(|s| {
        for (k, m) in mounts.iter().enumerate() {
            let dir = m.join("arena");
            s.spawn(move || {
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ k as u64;
                for step in 0..1500 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let a = dir.join(format!("n{}", x % 12));
                    let b = dir.join(format!("n{}", (x >> 8) % 12));
                    // Failures (a name another mount just took away) are expected.
                    let _ = match (x >> 16) % 5 {
                        0 => fs::write(&a, format!("{k}:{step}")),
                        1 => fs::rename(&a, &b),
                        2 => fs::hard_link(&a, &b),
                        3 => fs::remove_file(&a),
                        _ => fs::read(&a).map(drop),
                    };
                }
            });
        }
    });
    // Every mount sees the same names, and every file's link count matches them.
    let listings: Vec<Vec<(String, u64, u64)>> = mounts
        .iter()
        .map(|m| {
            let mut l: Vec<(String, u64, u64)> = fs::read_dir(m.join("arena"))
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let meta = fs::symlink_metadata(e.path()).unwrap();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        meta.ino(),
                        meta.nlink(),
                    )
                })
                .collect();
            l.sort();
            l
        })
        .collect();
    for other in &listings[1..] {
        assert_eq!(&listings[0], other, "mounts disagree");
    }
    for (name, ino, nlink) in &listings[0] {
        let names = listings[0].iter().filter(|(_, i, _)| i == ino).count() as u64;
        assert_eq!(*nlink, names, "{name}: link count against names");
    }
    for m in mounts {
        m.unmount();
    }
    assert_fsck_clean(&redis.url(), "skx");
}

/// A mount killed with SIGKILL mid-run: what it fsync'd is there, its session expires, and
/// after fsck's repair (orphaned blocks of stores it never committed) the filesystem is
/// clean; another mount worked on throughout.
#[test]
fn a_mount_killed_mid_run_loses_only_what_it_never_acknowledged() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let victim = Mount::new(&redis, "skx", &["--session-timeout", "2"]);
    let survivor = Mount::new(&redis, "skx", &["--session-timeout", "2"]);
    fs::create_dir(victim.join("v")).unwrap();
    fs::create_dir(survivor.join("s")).unwrap();
    let synced = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let (vdir, sdir) = (victim.join("v"), survivor.join("s"));
    let survivor_files = std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0.. {
                let data = common::random_bytes(1 + i * 4099 % 300_000, i as u64);
                let path = vdir.join(format!("f{i}"));
                let Ok(mut f) = fs::File::create(&path) else {
                    return;
                };
                if f.write_all(&data).and_then(|_| f.sync_all()).is_err() {
                    return;
                }
                synced.lock().unwrap().push((format!("f{i}"), data));
            }
        });
        let worker = s.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                fs::write(sdir.join(format!("g{n}")), n.to_string()).expect("survivor write");
                n += 1;
            }
            n
        });
        std::thread::sleep(Duration::from_secs(2));
        victim.kill();
        std::thread::sleep(Duration::from_secs(5));
        stop.store(true, Ordering::Relaxed);
        worker.join().unwrap()
    });
    let synced = synced.into_inner().unwrap();
    eprintln!(
        "{} files fsync'd by the killed mount, {survivor_files} written by the survivor",
        synced.len()
    );
    assert!(synced.len() > 5, "the victim got nowhere");
    for (name, data) in &synced {
        let back = fs::read(survivor.join("v").join(name)).expect("fsync'd file");
        assert!(back == *data, "{name}: fsync'd bytes differ");
    }
    for n in 0..survivor_files {
        assert_eq!(
            fs::read_to_string(survivor.join(format!("s/g{n}"))).unwrap(),
            n.to_string()
        );
    }
    survivor.unmount();
    let url = redis.url();
    let repair = tool(
        "fsck",
        &[
            "--redis",
            &url,
            "--prefix",
            "skx",
            "--repair",
            "--verify-data",
        ],
    );
    assert!(
        matches!(repair.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&repair.stderr)
    );
    assert_fsck_clean(&redis.url(), "skx");
}

/// Caught: the kernel places an `O_APPEND` write at the end of file it knows, which another
/// mount's appends had moved: two mounts appending in turn overwrote each other's records.
/// Appends land at the end the mount knows, after an open (close-to-open) or after the other
/// mount's change event, on a descriptor kept open.
fn two_mounts_appending_in_turn_keep_every_record(on: On) {
    if !common::ready() {
        return;
    }
    let redis = Place::start(on);
    let a = Mount::on(&redis, "skx", &[]);
    let b = Mount::on(&redis, "skx", &[]);
    for i in 0..400 {
        let m = if i % 2 == 0 { &a } else { &b };
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.join("journal"))
            .unwrap();
        f.write_all(record(i).as_bytes()).unwrap();
        f.sync_all().unwrap();
    }
    assert_records(&a.join("journal"), 400);
    assert_records(&b.join("journal"), 400);
    // One mount keeps its descriptor open: what it learns of the other's appends (their
    // events) moves the end it appends at.
    let mut kept = fs::OpenOptions::new()
        .append(true)
        .open(a.join("journal"))
        .unwrap();
    for i in 400..500 {
        if i % 2 == 0 {
            kept.write_all(record(i).as_bytes()).unwrap();
            kept.sync_all().unwrap();
        } else {
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(b.join("journal"))
                .unwrap();
            f.write_all(record(i).as_bytes()).unwrap();
            drop(f);
        }
        // Time for the change event to reach the other mount (a millisecond or two when idle).
        std::thread::sleep(Duration::from_millis(150));
    }
    drop(kept);
    assert_records(&a.join("journal"), 500);
    assert_records(&b.join("journal"), 500);
    a.unmount();
    b.unmount();
    assert_fsck_clean(&redis.url(), "skx");
}

/// Caught: a change asked for while Redis was stalled failed with EIO once `--io-timeout`
/// passed, and then took effect anyway when Redis came back (the request was still queued on
/// the connection). An error must be true: a request the mount gave up on refuses to run.
#[test]
fn a_change_that_failed_in_a_stall_never_takes_effect_later() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::io::AsRawFd;
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let m = Mount::new(&redis, "skx", &["--io-timeout", "2"]);
    let path = m.join("file");
    fs::write(&path, b"data").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let file = fs::File::open(&path).unwrap();
    let pid = redis.pause();
    let started = Instant::now();
    // SAFETY: a valid descriptor.
    let chmod = unsafe { libc::fchmod(file.as_raw_fd(), 0o600) };
    let chmod_err = std::io::Error::last_os_error();
    let (name, value) = (c"user.k", b"v");
    // SAFETY: a valid descriptor, C string and buffer.
    let setxattr = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    let setxattr_err = std::io::Error::last_os_error();
    let waited = started.elapsed();
    redis.resume(pid);
    assert_eq!(chmod, -1, "chmod succeeded in a stall");
    assert_eq!(chmod_err.raw_os_error(), Some(libc::EIO), "{chmod_err}");
    assert_eq!(setxattr, -1, "setxattr succeeded in a stall");
    assert_eq!(
        setxattr_err.raw_os_error(),
        Some(libc::EIO),
        "{setxattr_err}"
    );
    eprintln!("two changes failed after {waited:?}");
    // Redis works through what was queued; nothing of it may change the file now.
    std::thread::sleep(Duration::from_secs(1));
    drop(file);
    m.unmount();
    let m = Mount::new(&redis, "skx", &[]);
    let meta = fs::metadata(m.join("file")).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o644,
        "the failed chmod took effect"
    );
    assert!(
        common::xattrs(&m.join("file")).is_empty(),
        "the failed setxattr took effect"
    );
    unmount_checked(m, &redis);
}

/// A mount cut off for longer than the session timeout (here: stopped with SIGSTOP while
/// another mount expires its session) may lose the changes it had not sent, as a crash would,
/// but says so, defers nothing more, and never makes other mounts wait for its directories.
#[test]
fn a_mount_whose_session_expired_says_what_it_lost_and_blocks_no_one() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let a = Mount::new(&redis, "skx", &["--session-timeout", "1"]);
    let b = Mount::new(&redis, "skx", &["--session-timeout", "1"]);
    let dir = a.join("leased");
    fs::create_dir(&dir).unwrap();
    // Creates answered from memory, then the mount is stopped before it can send them all.
    for i in 0..200 {
        fs::File::create(dir.join(format!("f{i}"))).unwrap();
    }
    // SAFETY: kill with the pid of our own child.
    unsafe { libc::kill(a.pid(), libc::SIGSTOP) };
    common::eventually(
        "the other mount expires the stopped one",
        Duration::from_secs(20),
        || b.log_text().contains("stopped heartbeating"),
    );
    // SAFETY: as above.
    unsafe { libc::kill(a.pid(), libc::SIGCONT) };
    common::eventually(
        "the stopped mount learns that its session expired",
        Duration::from_secs(10),
        || a.log_text().contains("expired its session"),
    );
    let started = Instant::now();
    let seen = names(&b.join("leased"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "another mount waited {:?} for the directory",
        started.elapsed()
    );
    // What reached Redis is a prefix of what was created, in order.
    for i in 0..seen.len() {
        assert!(seen.contains(&format!("f{i}")), "f{i} missing of {seen:?}");
    }
    // The mount goes on, through Redis, and every mount sees its new files.
    fs::File::create(dir.join("after")).unwrap();
    assert!(names(&b.join("leased")).contains("after"));
    eprintln!(
        "{} of 200 creates had reached Redis when the mount was stopped",
        seen.len()
    );
    a.unmount();
    b.unmount();
    assert_fsck_clean(&redis.url(), "skx");
}

/// Caught (in review): a readdirplus reply whose window of entries had all vanished since the
/// listing was read came back empty, which the kernel takes as the end of the directory, and
/// hid the entries after it. Another mount removes all but one of 1,000 files while this one
/// is part way through listing them: the survivor is still listed.
#[test]
fn a_listing_goes_on_past_entries_removed_while_it_runs() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let a = Mount::new(&redis, "skx", &[]);
    let b = Mount::new(&redis, "skx", &[]);
    fs::create_dir(b.join("d")).unwrap();
    for i in 0..1000 {
        fs::write(b.join(format!("d/f{i}")), b"x").unwrap();
    }
    let mut listing = fs::read_dir(a.join("d")).unwrap();
    let first = {
        let entry = listing.next().expect("an entry").unwrap();
        // A look-up in between makes the kernel ask for attributes with the next entries
        // too (readdirplus), as `ls -l` does.
        let _ = entry.metadata();
        entry.file_name()
    };
    let survivor = if first == "f999" { "f998" } else { "f999" };
    for i in 0..1000 {
        let name = format!("f{i}");
        if name != survivor {
            fs::remove_file(b.join("d").join(&name)).unwrap();
        }
    }
    // Time for the removals' events to reach the listing mount.
    std::thread::sleep(Duration::from_millis(300));
    let rest: Vec<String> = listing
        .map(|e| {
            let e = e.unwrap();
            let _ = e.metadata();
            e.file_name().to_string_lossy().into_owned()
        })
        .collect();
    assert!(
        rest.iter().any(|n| n == survivor) || first == survivor,
        "{survivor} is missing from the rest of the listing ({} names)",
        rest.len()
    );
    a.unmount();
    b.unmount();
    assert_fsck_clean(&redis.url(), "skx");
}

/// A directory too big for one reply is listed in pieces, its first pages answered while the
/// rest is read, each piece's entries taking the next positions. Another mount grows it past
/// the size at which Redis doubles its table (HSCAN may then return an entry twice), making
/// and removing files, while a mount 20 ms away lists it again and again: every listing names
/// each file present throughout, and no name twice.
#[test]
fn a_listing_in_pieces_names_each_file_once_while_another_mount_grows_the_directory() {
    if !common::ready() {
        return;
    }
    const BASE: usize = 30_000;
    // Enough for the directory to pass 32,768 entries, where Redis doubles its table.
    const MOST_ADDED: usize = 20_000;
    let redis = Redis::start();
    let a = Mount::new(&redis, "skx", &[]);
    fs::create_dir(a.join("d")).unwrap();
    for i in 0..BASE {
        fs::File::create(a.join(format!("d/f{i}"))).unwrap();
    }
    let far = Mount::at_url(
        &redis.url_at_distance(Duration::from_millis(20)),
        "skx",
        &[],
    );
    let listings = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let made = std::thread::scope(|s| {
        let changes = s.spawn(|| {
            // One file of every two made is removed again: the directory grows meanwhile.
            let mut made = 0;
            while made < MOST_ADDED && (made < 6_000 || listings.load(Ordering::Relaxed) < 3) {
                fs::File::create(a.join(format!("d/n{made}"))).unwrap();
                if made % 2 == 1 {
                    fs::remove_file(a.join(format!("d/n{}", made - 1))).unwrap();
                }
                made += 1;
            }
            done.store(true, Ordering::Relaxed);
            made
        });
        while !done.load(Ordering::Relaxed) {
            let mut seen = BTreeSet::new();
            let mut twice = Vec::new();
            for entry in fs::read_dir(far.join("d")).unwrap() {
                let entry = entry.unwrap();
                // A stat in between makes the kernel ask for attributes with the next
                // entries (readdirplus), as `ls -l` does.
                let _ = entry.metadata();
                let name = entry.file_name().into_string().unwrap();
                if !seen.insert(name.clone()) {
                    twice.push(name);
                }
            }
            let n = listings.fetch_add(1, Ordering::Relaxed);
            assert!(twice.is_empty(), "listing {n} named twice: {twice:?}");
            let missing: Vec<String> = (0..BASE)
                .map(|i| format!("f{i}"))
                .filter(|name| !seen.contains(name))
                .collect();
            assert!(
                missing.is_empty(),
                "listing {n} left out {} files present throughout, first {:?}",
                missing.len(),
                missing.first()
            );
        }
        changes.join().unwrap()
    });
    assert!(
        listings.into_inner() > 0,
        "no listing ran while the directory changed"
    );
    let names = fs::read_dir(far.join("d")).unwrap().count();
    assert_eq!(names, BASE + made.div_ceil(2));
    far.unmount();
    a.unmount();
    assert_fsck_clean(&redis.url(), "skx");
}

/// A listing in pieces whose Redis stops answering part way reports the failure to the read
/// that needs what was lost, and the next reads go on where the listing was, once Redis is
/// back: every file once over the whole stream, none twice (the resumed scan reads the pieces
/// again from the first, keeping the names listed where they are).
#[test]
fn a_listing_in_pieces_goes_on_after_redis_stalls_part_way() {
    if !common::ready() {
        return;
    }
    const FILES: usize = 25_000;
    let redis = Redis::start();
    let a = Mount::new(&redis, "skx", &[]);
    fs::create_dir(a.join("d")).unwrap();
    for i in 0..FILES {
        fs::File::create(a.join(format!("d/f{i}"))).unwrap();
    }
    a.unmount();
    let far = Mount::at_url(
        &redis.url_at_distance(Duration::from_millis(100)),
        "skx",
        &["--io-timeout", "2"],
    );
    let dir = common::cpath(&far.join("d"));
    // SAFETY: a valid path; the stream is used only here and closed at the end.
    let stream = unsafe { libc::opendir(dir.as_ptr()) };
    assert!(!stream.is_null());
    // (std's `ReadDir` ends at the first error; the stream itself goes on.)
    let next = || -> Option<Result<String, i32>> {
        // SAFETY: resets errno, which readdir sets only on failure.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `stream` is open; the entry is read before the next call.
        let entry = unsafe { libc::readdir(stream) };
        if entry.is_null() {
            // SAFETY: errno of this thread.
            let errno = unsafe { *libc::__errno_location() };
            return (errno != 0).then_some(Err(errno));
        }
        // SAFETY: as above, a NUL-terminated name.
        let name = unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) };
        Some(Ok(name.to_string_lossy().into_owned()))
    };
    let mut seen = BTreeSet::new();
    seen.insert(next().expect("an entry").expect("the first entry"));
    // The first piece is in; the rest of the listing, and the entries' attributes, are not.
    let paused = redis.pause();
    let mut failures = Vec::new();
    while let Some(read) = next() {
        match read {
            Ok(name) => assert!(seen.insert(name.clone()), "{name} listed twice"),
            Err(errno) => {
                failures.push(errno);
                assert!(
                    failures.len() < 10,
                    "the listing keeps failing: {failures:?}"
                );
                redis.resume(paused);
            }
        }
    }
    redis.resume(paused);
    // SAFETY: open, and not used after.
    unsafe { libc::closedir(stream) };
    assert!(
        !failures.is_empty(),
        "the listing never waited for the stalled Redis"
    );
    assert!(failures.iter().all(|&e| e == libc::EIO), "{failures:?}");
    let files = seen.iter().filter(|n| n.starts_with('f')).count();
    assert_eq!(files, FILES, "every file once over the whole listing");
    far.unmount();
    assert_fsck_clean(&redis.url(), "skx");
}

common::on_a_server_and_on_a_cluster!(
    mounts_renaming_linking_and_unlinking_overlapping_names_agree,
    two_mounts_appending_in_turn_keep_every_record,
);

/// Noticed: a mount whose Redis lost the filesystem under it (restarted without persistence,
/// flushed) went on as if nothing had happened, and once another mount made a new filesystem
/// there under the same prefix, the old one's open files wrote into the new one's inodes. A
/// mount checks, with every change and every read of a file's blocks, that the filesystem in
/// Redis is still the one it mounted: everything fails with `EIO` and a line saying why, no
/// read answers zeros for lost data, and the new filesystem stays untouched and clean.
#[test]
fn a_mount_whose_filesystem_vanished_from_redis_touches_nothing_there() {
    use std::io::{Read, Seek, SeekFrom, Write};
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    // Written through another mount, so that none of it is in the old one's page cache.
    let writer = Mount::new(&redis, "skx", &[]);
    fs::write(writer.join("a"), common::random_bytes(32 << 20, 9)).unwrap();
    writer.unmount();
    let old = Mount::new(&redis, "skx", &[]);
    fs::create_dir(old.join("d")).unwrap();
    let mut open = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(old.join("a"))
        .unwrap();
    let mut first = vec![0; 4096];
    open.read_exact(&mut first).unwrap();
    let mut small_file = fs::File::create(old.join("s")).unwrap();
    small_file.write_all(&[7; 100]).unwrap();
    small_file.sync_all().unwrap();
    let () = redis.cmd(&["FLUSHALL"]);
    let is_eio =
        |r: &std::io::Result<()>| matches!(r, Err(e) if e.raw_os_error() == Some(libc::EIO));
    // First a small write: its block goes with its commit in one transaction.
    let small = (small_file.seek(SeekFrom::Start(10)))
        .and_then(|_| small_file.write_all(b"small"))
        .and_then(|()| small_file.sync_all());
    assert!(
        is_eio(&small),
        "a small write after the loss answered {small:?}"
    );
    assert!(
        is_eio(&fs::write(old.join("b"), b"b")),
        "a create after the loss"
    );
    let mut rest = vec![0; 256 << 10];
    let read = (open.seek(SeekFrom::Start(30 << 20))).and_then(|_| open.read_exact(&mut rest));
    assert!(
        matches!(&read, Err(e) if e.raw_os_error() == Some(libc::EIO)),
        "a read of lost blocks answered {read:?}"
    );
    // Nothing stays behind (the block stored with the failed commit is deleted) ...
    common::eventually("an empty Redis", Duration::from_secs(10), || {
        redis.cmd::<i64>(&["DBSIZE"]) == 0
    });
    // ... and another mount makes a new filesystem there: the old one's open file must not
    // reach it.
    let new = Mount::new(&redis, "skx", &[]);
    fs::write(new.join("n"), b"new").unwrap();
    let wrote = open
        .seek(SeekFrom::Start(0))
        .and_then(|_| open.write_all(b"stale"))
        .and_then(|()| open.sync_all());
    assert!(
        is_eio(&wrote),
        "a write through the old mount answered {wrote:?}"
    );
    assert!(
        is_eio(&fs::create_dir(old.join("e"))),
        "a mkdir after the loss"
    );
    drop((open, small_file));
    assert!(
        old.log_text().contains("no longer in Redis"),
        "the old mount says why:\n{}",
        old.log_text()
    );
    let listed: BTreeSet<String> = names(&new.join(""));
    assert_eq!(listed, BTreeSet::from(["n".to_string()]));
    assert_eq!(fs::read(new.join("n")).unwrap(), b"new");
    new.unmount();
    old.unmount();
    assert_fsck_clean(&redis.url(), "skx");
}

/// A filesystem made under a prefix whose filesystem Redis lost hands out block ids past every
/// one the lost filesystem had: a mount of the lost one may still send a block under an id it
/// had reserved before it notices the loss, and that must not be a block of the new one.
#[test]
fn a_new_filesystem_never_hands_out_the_block_ids_of_a_lost_one() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let block_ids = || -> Vec<u64> {
        (redis.keys("skx").iter())
            .filter_map(|k| k.strip_prefix("skx:b:")?.parse().ok())
            .collect()
    };
    let old = Mount::new(&redis, "skx", &[]);
    fs::write(old.join("f"), common::random_bytes(1 << 20, 1)).unwrap();
    old.unmount();
    let lost = block_ids();
    assert!(!lost.is_empty());
    let () = redis.cmd(&["FLUSHALL"]);
    let new = Mount::new(&redis, "skx", &[]);
    fs::write(new.join("g"), common::random_bytes(1 << 20, 2)).unwrap();
    new.unmount();
    let (highest_lost, lowest_new) = (lost.iter().max(), block_ids().into_iter().min());
    assert!(
        lowest_new > highest_lost.copied(),
        "new block ids from {lowest_new:?}, lost ones up to {highest_lost:?}"
    );
    // So do the blocks of a filesystem restored there from a dump.
    let dump = tempfile::tempdir().unwrap().keep().join("fs.rfs");
    let url = redis.url();
    let dumped = common::tool(
        "dump",
        &["--redis", &url, "--prefix", "skx", dump.to_str().unwrap()],
    );
    assert!(dumped.status.success(), "{dumped:?}");
    let lost = block_ids();
    let () = redis.cmd(&["FLUSHALL"]);
    let restored = common::tool(
        "restore",
        &["--redis", &url, "--prefix", "skx", dump.to_str().unwrap()],
    );
    assert!(restored.status.success(), "{restored:?}");
    let (highest_lost, lowest_new) = (lost.iter().max(), block_ids().into_iter().min());
    assert!(
        lowest_new > highest_lost.copied(),
        "restored block ids from {lowest_new:?}, lost ones up to {highest_lost:?}"
    );
    let _ = fs::remove_dir_all(dump.parent().unwrap());
    assert_fsck_clean(&url, "skx");
}
