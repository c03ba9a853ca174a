//! Several mounts of one filesystem (separate processes and mount points), as on several nodes.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::{cpath, Mount, On, Place, Redis};

/// How long a change may take to be seen elsewhere (it takes milliseconds; the deadline is
/// generous so that a slow machine does not fail the test).
const PROPAGATION: Duration = Duration::from_secs(10);

/// A Redis (a server or a cluster) and two mounts of one filesystem on it, or `None` where
/// tests cannot run.
fn two_mounts(on: On) -> Option<(Place, Mount, Mount)> {
    if !common::ready() {
        return None;
    }
    let redis = Place::start(on);
    let a = Mount::on(&redis, "skx", &[]);
    let b = Mount::on(&redis, "skx", &[]);
    Some((redis, a, b))
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    n.sort();
    n
}

/// A Redis and two mounts, A and B (mounted with `b_options`), of one filesystem, and a
/// directory `d` that A made and B sees, not leased to either (so shared from the start);
/// `None` where tests cannot run.
fn shared_directory(on: On, b_options: &[&str]) -> Option<(Place, Mount, Mount)> {
    if !common::ready() {
        return None;
    }
    let redis = Place::start(on);
    let a = Mount::on(&redis, "skx", &["--no-delegation"]);
    let b = Mount::on(&redis, "skx", b_options);
    fs::create_dir(a.join("d")).unwrap();
    common::eventually("mkdir", PROPAGATION, || b.join("d").is_dir());
    Some((redis, a, b))
}

fn getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid strings and buffer.
    let len = unsafe {
        libc::getxattr(
            cpath(p).as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

fn changes_on_one_mount_are_seen_on_the_others(on: On) {
    let Some((redis, a, b)) = two_mounts(on) else {
        return;
    };
    let c = Mount::on(&redis, "skx", &[]);
    let others = [&b, &c];
    // Each other mount first caches the current state, so that staleness would show.
    for m in others {
        assert!(names(&m.path).is_empty());
    }
    fs::write(a.join("f"), b"one").unwrap();
    for m in others {
        common::eventually("create", PROPAGATION, || names(&m.path) == ["f"]);
        assert_eq!(fs::read(m.join("f")).unwrap(), b"one");
    }
    fs::write(a.join("f"), b"second version").unwrap();
    for m in others {
        common::eventually("write", PROPAGATION, || {
            fs::read(m.join("f")).unwrap() == b"second version"
        });
    }
    fs::set_permissions(a.join("f"), fs::Permissions::from_mode(0o640)).unwrap();
    for m in others {
        common::eventually("chmod", PROPAGATION, || {
            fs::metadata(m.join("f")).unwrap().mode() & 0o777 == 0o640
        });
    }
    let name = std::ffi::CString::new("user.k").unwrap();
    // SAFETY: valid strings and buffer.
    unsafe {
        libc::setxattr(
            cpath(&a.join("f")).as_ptr(),
            name.as_ptr(),
            b"v".as_ptr().cast(),
            1,
            0,
        )
    };
    for m in others {
        common::eventually("setxattr", PROPAGATION, || {
            getxattr(&m.join("f"), "user.k") == Some(b"v".to_vec())
        });
    }
    fs::create_dir(a.join("d")).unwrap();
    fs::rename(a.join("f"), a.join("d/g")).unwrap();
    for m in others {
        common::eventually("rename", PROPAGATION, || {
            names(&m.path) == ["d"] && names(&m.join("d")) == ["g"]
        });
        assert_eq!(fs::read(m.join("d/g")).unwrap(), b"second version");
    }
    fs::remove_file(a.join("d/g")).unwrap();
    for m in others {
        common::eventually("unlink", PROPAGATION, || {
            names(&m.join("d")).is_empty() && !m.join("d/g").exists()
        });
    }
}

fn close_to_open_reads_the_new_bytes_even_with_old_pages_cached(on: On) {
    let Some((_redis, a, b)) = two_mounts(on) else {
        return;
    };
    fs::write(a.join("f"), b"version 0").unwrap();
    for round in 1..=30u32 {
        // B reads (and caches) the current version...
        let mut cached = String::new();
        fs::File::open(b.join("f"))
            .unwrap()
            .read_to_string(&mut cached)
            .unwrap();
        assert_eq!(cached, format!("version {}", round - 1));
        // ...A writes a longer one and closes; an open on B that follows sees it at once.
        let text = format!("version {round}{}", "!".repeat(round as usize));
        let mut f = fs::File::create(a.join("f")).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        drop(f);
        let mut now = String::new();
        fs::File::open(b.join("f"))
            .unwrap()
            .read_to_string(&mut now)
            .unwrap();
        assert_eq!(now, text, "round {round}");
        fs::write(a.join("f"), format!("version {round}")).unwrap();
    }
}

fn concurrent_writers_of_disjoint_ranges_lose_nothing(on: On) {
    let Some((redis, a, b)) = two_mounts(on) else {
        return;
    };
    const CHUNK: usize = 1000;
    const CHUNKS: usize = 600;
    fs::write(a.join("shared"), vec![0u8; CHUNK * CHUNKS]).unwrap();
    let writer = |path: std::path::PathBuf, parity: usize| {
        std::thread::spawn(move || {
            let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
            for i in (parity..CHUNKS).step_by(2) {
                f.write_all_at(&[b'a' + (i % 26) as u8; CHUNK], (i * CHUNK) as u64)
                    .unwrap();
                if i % 20 == parity {
                    f.sync_data().unwrap();
                }
            }
            f.sync_all().unwrap();
        })
    };
    let (ta, tb) = (writer(a.join("shared"), 0), writer(b.join("shared"), 1));
    ta.join().unwrap();
    tb.join().unwrap();
    let c = Mount::on(&redis, "skx", &[]);
    let data = fs::read(c.join("shared")).unwrap();
    assert_eq!(data.len(), CHUNK * CHUNKS);
    for i in 0..CHUNKS {
        let want = b'a' + (i % 26) as u8;
        assert!(
            data[i * CHUNK..(i + 1) * CHUNK].iter().all(|&x| x == want),
            "chunk {i} lost a write"
        );
    }
}

#[test]
fn a_killed_mounts_unlinked_open_files_are_reclaimed_by_a_live_one() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let a = Mount::new(&redis, "skx", &["--session-timeout", "2"]);
    let b = Mount::new(&redis, "skx", &["--session-timeout", "2"]);
    fs::write(a.join("ghost"), common::random_bytes(300_000, 1)).unwrap();
    let mut held = fs::File::open(a.join("ghost")).unwrap();
    fs::remove_file(a.join("ghost")).unwrap();
    let mut buf = [0u8; 10];
    held.read_exact(&mut buf).unwrap();
    assert_eq!(
        redis.cmd::<u64>(&["HGET", "{skx}:stat", "inodes"]),
        2,
        "root and the open orphan"
    );
    assert_eq!(redis.cmd::<u64>(&["ZCARD", "{skx}:sessions"]), 2);
    // A dies without closing; the kernel detaches its mount.
    std::mem::forget(held);
    a.kill();
    common::eventually("reclaim", PROPAGATION, || {
        redis.cmd::<u64>(&["HGET", "{skx}:stat", "inodes"]) == 1
    });
    assert_eq!(
        redis.cmd::<u64>(&["ZCARD", "{skx}:sessions"]),
        1,
        "the dead session is gone"
    );
    common::eventually("its blocks to be freed", PROPAGATION, || {
        !redis
            .keys("skx")
            .iter()
            .any(|k| k.starts_with("skx:b:") || k.starts_with("{skx}:m:"))
    });
    drop(b);
}

#[test]
fn a_mount_of_a_replica_is_read_only_and_follows_the_primary() {
    if !common::ready() {
        return;
    }
    let primary = Redis::start();
    let port = primary.port.to_string();
    let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &port]);
    let a = Mount::new(&primary, "skx", &[]);
    fs::write(a.join("before"), b"1").unwrap();
    common::eventually("replication", PROPAGATION, || {
        replica.keys("skx").contains(&"{skx}:meta".to_string())
    });
    let b = Mount::new(&replica, "skx", &[]);
    assert!(
        common::mount_options(&b.path).split(',').any(|o| o == "ro"),
        "{}",
        common::mount_options(&b.path)
    );
    common::eventually("existing file", PROPAGATION, || {
        fs::read(b.join("before")).is_ok_and(|d| d == b"1")
    });
    let erofs = fs::write(b.join("x"), b"").unwrap_err();
    assert_eq!(erofs.raw_os_error(), Some(libc::EROFS));
    assert_eq!(
        fs::create_dir(b.join("y")).unwrap_err().raw_os_error(),
        Some(libc::EROFS)
    );
    fs::write(a.join("after"), b"live").unwrap();
    common::eventually("a file created on the primary", PROPAGATION, || {
        fs::read(b.join("after")).is_ok_and(|d| d == b"live")
    });
    assert!(
        b.log_text().contains("replica"),
        "the mount says why it is read-only"
    );
}

#[test]
fn a_redis_restart_mid_workload_loses_nothing_and_fails_nothing() {
    if !common::ready() {
        return;
    }
    let mut redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let m = Mount::new(&redis, "skx", &[]);
    let dir = m.path.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (dir, stop) = (dir.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            let mut log = fs::File::create(dir.join("log")).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                fs::write(
                    dir.join(format!("file-{n:05}")),
                    common::random_bytes(20_000, n + 1),
                )
                .unwrap();
                writeln!(log, "record {n}").unwrap();
                log.sync_data().unwrap();
                n += 1;
            }
            n
        })
    };
    let lister = {
        let (dir, stop) = (dir.clone(), stop.clone());
        std::thread::spawn(move || {
            // Files are only added: a listing that shrinks would be a lost connection answered
            // with a partial or empty directory.
            let mut largest = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let count = fs::read_dir(&dir).unwrap().count();
                if count < largest {
                    // Let the mount's log show what happened before failing.
                    std::thread::sleep(Duration::from_millis(300));
                }
                assert!(
                    count >= largest,
                    "a listing shrank from {largest} to {count}"
                );
                largest = count;
            }
            largest
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    redis.restart();
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join();
    let listed = lister.join();
    assert!(
        written.is_ok() && listed.is_ok(),
        "errors during the restart; mount log:\n{}",
        m.log_text()
    );
    let written = written.unwrap_or_default();
    assert!(written > 5, "the workload ran ({written} files)");
    m.unmount();
    let m = Mount::new(&redis, "skx", &[]);
    for n in 0..written {
        assert_eq!(
            fs::read(m.join(format!("file-{n:05}"))).unwrap(),
            common::random_bytes(20_000, n + 1),
            "file {n}"
        );
    }
    let mut log = String::new();
    fs::File::open(m.join("log"))
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let expected: String = (0..written).map(|n| format!("record {n}\n")).collect();
    assert_eq!(log, expected);
}

fn names_created_elsewhere_appear_in_directories_this_mount_created(on: On) {
    let Some((_redis, a, b)) = two_mounts(on) else {
        return;
    };
    // A knows every name of a directory it created, and answers misses there itself.
    fs::create_dir(a.join("fresh")).unwrap();
    assert!(!a.join("fresh/x").exists());
    common::eventually("mkdir", PROPAGATION, || b.join("fresh").is_dir());
    fs::write(b.join("fresh/x"), b"from b").unwrap();
    common::eventually("a name made elsewhere", PROPAGATION, || {
        fs::read(a.join("fresh/x")).ok().as_deref() == Some(b"from b".as_slice())
    });
    // A's own removals and renames keep what it knows right.
    fs::write(a.join("fresh/y"), b"y").unwrap();
    fs::rename(a.join("fresh/y"), a.join("fresh/z")).unwrap();
    assert!(!a.join("fresh/y").exists());
    assert_eq!(fs::read(a.join("fresh/z")).unwrap(), b"y");
    fs::remove_file(a.join("fresh/z")).unwrap();
    assert!(!a.join("fresh/z").exists());
    common::eventually("removal", PROPAGATION, || !b.join("fresh/z").exists());
}

fn attributes_set_elsewhere_on_a_file_this_mount_created_appear(on: On) {
    let Some((_redis, a, b)) = two_mounts(on) else {
        return;
    };
    // B created the file, so it knows it has no extended attributes until told otherwise.
    fs::write(b.join("f"), b"x").unwrap();
    assert_eq!(getxattr(&b.join("f"), "user.k"), None);
    common::eventually("create", PROPAGATION, || a.join("f").exists());
    let n = std::ffi::CString::new("user.k").unwrap();
    // SAFETY: valid C strings and buffer.
    let r = unsafe {
        libc::setxattr(
            cpath(&a.join("f")).as_ptr(),
            n.as_ptr(),
            b"v".as_ptr().cast(),
            1,
            0,
        )
    };
    assert_eq!(r, 0);
    common::eventually("an attribute set elsewhere", PROPAGATION, || {
        getxattr(&b.join("f"), "user.k") == Some(b"v".to_vec())
    });
}

fn bytes_written_into_a_file_kept_open_reach_other_mounts_without_a_close(on: On) {
    let Some((_redis, a, b)) = two_mounts(on) else {
        return;
    };
    let mut log = fs::File::create(a.join("log")).unwrap();
    log.write_all(b"first line\n").unwrap();
    // No fsync, no close: the mount stores a partial block once it has waited a few seconds.
    common::eventually(
        "another mount reads what a writer still holding its file open wrote",
        PROPAGATION,
        || fs::read(b.join("log")).is_ok_and(|d| d == b"first line\n"),
    );
    log.write_all(b"second line\n").unwrap();
    common::eventually(
        "another mount reads a later write into the same partial block",
        PROPAGATION,
        || fs::read(b.join("log")).is_ok_and(|d| d == b"first line\nsecond line\n"),
    );
    drop(log);
}

/// A mount of a replica made while the replica is still getting its primary's data waits for
/// it (saying so) instead of finding no filesystem there.
#[test]
fn a_mount_of_a_replica_still_syncing_waits_for_its_data() {
    if !common::ready() {
        return;
    }
    // The primary starts sending its data 3 s after a replica asks for it.
    let primary = Redis::start_with(&[
        "--repl-diskless-sync",
        "yes",
        "--repl-diskless-sync-delay",
        "3",
    ]);
    let a = Mount::new(&primary, "skx", &[]);
    fs::write(a.join("before"), b"1").unwrap();
    let port = primary.port.to_string();
    let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &port]);
    let b = Mount::new(&replica, "skx", &["--io-timeout", "20"]);
    assert_eq!(fs::read(b.join("before")).unwrap(), b"1");
    assert!(
        b.log_text().contains("still syncing"),
        "the mount says what it waits for:\n{}",
        b.log_text()
    );
}

/// A file open on one mount that another removes (unlink, or a rename over it) stays readable
/// there, whole, with caches dropped, until its last close there, which deletes it; a mount
/// that dies with it open lets it go when its session expires. fsck is clean all along.
#[test]
fn a_file_removed_elsewhere_stays_readable_where_it_is_open() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let a = Mount::new(&redis, "skx", &["--session-timeout", "2"]);
    let b = Mount::new(&redis, "skx", &["--session-timeout", "2"]);
    let inodes = || redis.cmd::<u64>(&["HGET", "{skx}:stat", "inodes"]);
    let data = common::random_bytes(3_000_000, 7);
    for (name, how) in [("unlinked", "unlink"), ("replaced", "rename")] {
        fs::write(a.join(name), &data).unwrap();
        let mut open_on_b = fs::File::open(b.join(name)).unwrap();
        if how == "unlink" {
            fs::remove_file(a.join(name)).unwrap();
        } else {
            fs::write(a.join("newer"), b"newer").unwrap();
            fs::rename(a.join("newer"), a.join(name)).unwrap();
        }
        fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        let mut back = Vec::new();
        open_on_b.read_to_end(&mut back).unwrap();
        assert!(
            back == data,
            "{how}: the open file on the other mount lost its data"
        );
        assert_eq!(open_on_b.metadata().unwrap().nlink(), 0, "{how}");
        let url = redis.url();
        common::tool_ok("fsck", &["--redis", &url, "--prefix", "skx"]);
        let before = inodes();
        drop(open_on_b);
        common::eventually("the last close deletes it", PROPAGATION, || {
            inodes() == before - 1
        });
    }
    // A file created and kept open on the mount that created its directory (a create no other
    // mount saw until the unlink there recalled the directory).
    fs::create_dir(b.join("mine")).unwrap();
    let mut born = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(b.join("mine/born"))
        .unwrap();
    born.write_all(&data).unwrap();
    born.sync_all().unwrap();
    fs::remove_file(a.join("mine/born")).unwrap();
    fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
    let mut back = vec![0u8; data.len()];
    born.read_exact_at(&mut back, 0).unwrap();
    assert!(
        back == data,
        "a file created in a leased directory lost its data"
    );
    // Kept in Redis, not only in this mount's caches: its last close deletes it.
    let before = inodes();
    drop(born);
    common::eventually("the last close deletes it", PROPAGATION, || {
        inodes() == before - 1
    });
    // A mount that dies with the file open: it goes when that mount's session expires.
    fs::write(a.join("ghost"), &data).unwrap();
    let open_on_b = fs::File::open(b.join("ghost")).unwrap();
    fs::remove_file(a.join("ghost")).unwrap();
    let before = inodes();
    std::mem::forget(open_on_b);
    b.kill();
    common::eventually("the dead mount's open file goes", PROPAGATION, || {
        inodes() == before - 1
    });
    a.unmount();
    let url = redis.url();
    common::tool_ok("fsck", &["--redis", &url, "--prefix", "skx"]);
    assert!(
        !redis.keys("skx").iter().any(|k| k.contains(":open")),
        "no open registrations left"
    );
}

/// A listing tells a mount which entries have no extended attributes (so `ls -l` asks Redis
/// nothing for them); one set afterwards on another mount is seen all the same.
fn xattrs_set_elsewhere_after_a_listing_are_seen(on: On) {
    let Some((_redis, a, b)) = two_mounts(on) else {
        return;
    };
    fs::create_dir(b.join("d")).unwrap();
    for i in 0..50 {
        fs::write(b.join(format!("d/f{i}")), b"").unwrap();
    }
    // Listed with attributes on A, as `ls -l` does, asking for an attribute of each.
    for e in fs::read_dir(a.join("d")).unwrap() {
        let p = e.unwrap().path();
        fs::symlink_metadata(&p).unwrap();
        assert_eq!(getxattr(&p, "user.tag"), None);
    }
    let target = b.join("d/f10");
    let c = cpath(&target);
    // SAFETY: valid path, name and value.
    let set =
        unsafe { libc::setxattr(c.as_ptr(), c"user.tag".as_ptr(), b"v".as_ptr().cast(), 1, 0) };
    assert_eq!(set, 0, "{}", std::io::Error::last_os_error());
    common::eventually(
        "the attribute on the mount that listed",
        PROPAGATION,
        || getxattr(&a.join("d/f10"), "user.tag").as_deref() == Some(&b"v"[..]),
    );
}

/// A mount that knows every name of a directory (it made it, or listed it) answers a look-up
/// of a missing name there itself, so a create costs one round trip, even while other mounts
/// create in it. A name it has not heard of yet (another mount's create whose event is still
/// on its way; here an entry written with no event at all) is still opened by a plain
/// `open(O_CREAT)`, and refused by `O_EXCL`: never `EEXIST` for a create-or-open.
fn o_creat_opens_a_name_this_mount_has_not_heard_of_yet(on: On) {
    let Some((redis, a, b)) = shared_directory(on, &[]) else {
        return;
    };
    fs::write(a.join("d/theirs"), b"made elsewhere").unwrap();
    let dir = fs::metadata(a.join("d")).unwrap().ino();
    let entries = format!("{{skx}}:d:{dir}");
    // `name` names the same inode as "theirs", written behind every mount's back.
    let write_unheard = |name: &str| {
        let entry: Vec<u8> = redis.cmd(&["HGET", &entries, "theirs"]);
        redis::cmd("HSET")
            .arg(&entries)
            .arg(name)
            .arg(entry)
            .exec(&mut redis.conn())
            .unwrap();
    };
    let o_creat_opens = |name: &str| {
        let mut opened = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(a.join("d").join(name))
            .expect("O_CREAT opens the name that exists");
        let mut seen = String::new();
        opened.read_to_string(&mut seen).unwrap();
        assert_eq!(seen, "made elsewhere");
        let exclusive = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(a.join("d").join(name));
        assert_eq!(
            exclusive.map(drop).map_err(|e| e.raw_os_error()),
            Err(Some(libc::EEXIST))
        );
    };
    write_unheard("unheard");
    o_creat_opens("unheard");
    // The same once another mount created there too (A heard of that, and still knows the
    // directory's other names).
    fs::write(b.join("d/from-b"), b"b").unwrap();
    common::eventually("a name made elsewhere", PROPAGATION, || {
        a.join("d/from-b").exists()
    });
    write_unheard("unheard-too");
    o_creat_opens("unheard-too");
    // New names in the shared directory, from both mounts at once, all land.
    std::thread::scope(|s| {
        for (m, tag) in [(&a, "a"), (&b, "b")] {
            s.spawn(move || {
                for i in 0..200 {
                    fs::write(m.join(format!("d/{tag}{i}")), tag).unwrap();
                }
            });
        }
    });
    common::eventually("every create, on both mounts", PROPAGATION, || {
        names(&a.join("d")).len() == 404 && names(&b.join("d")).len() == 404
    });
}

/// Lists the commands mounts send to Redis (not those scripts run inside, nor heartbeats, nor
/// the background deletion of freed blocks), through `MONITOR`.
struct Monitor {
    lines: std::sync::mpsc::Receiver<String>,
    marks: redis::Connection,
}

impl Monitor {
    fn start(redis: &Place) -> Monitor {
        let mut watch = redis.conn();
        watch
            .send_packed_command(&redis::cmd("MONITOR").get_packed_command())
            .unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // The first reply is MONITOR's OK; each one after, a command run.
            while let Ok(reply) = watch.recv_response() {
                if let redis::Value::SimpleString(line) = reply {
                    if send.send(line).is_err() {
                        break;
                    }
                }
            }
        });
        let mut monitor = Monitor {
            lines,
            marks: redis.conn(),
        };
        monitor.commands_during(|| {});
        monitor
    }

    /// The commands sent by clients while `work` ran.
    fn commands_during(&mut self, work: impl FnOnce()) -> Vec<String> {
        let mark = |m: &mut Monitor, name: &str| {
            let _: String = redis::cmd("ECHO").arg(name).query(&mut m.marks).unwrap();
        };
        mark(self, "work-begins");
        work();
        mark(self, "work-ends");
        let mut sent = Vec::new();
        let mut inside = false;
        for line in self.lines.iter() {
            if line.contains("\"work-begins\"") {
                inside = true;
            } else if line.contains("\"work-ends\"") {
                break;
            } else if inside
                && !line.contains(" lua]")
                && !line.contains(":sessions\"")
                && !line.contains(":garbage\"")
            {
                sent.push(line);
            }
        }
        sent
    }
}

/// A create in a directory another mount creates in costs one round trip: the other mount's
/// change brings the directory's new record, so neither the kernel's look at the directory
/// nor the create's own (its mode, group and default ACL) needs Redis. What each mount then
/// says of the directory is the newest: its own create at once, the other's soon.
#[test]
fn a_create_in_a_shared_directory_costs_one_round_trip() {
    let Some((redis, a, b)) = shared_directory(On::Server, &[]) else {
        return;
    };
    // B has listed it (as a user who looked first), so it knows which names are free there.
    assert!(names(&b.join("d")).is_empty());
    let seen = |m: &Mount| {
        let d = fs::metadata(m.join("d")).unwrap();
        (
            d.nlink(),
            d.mtime(),
            d.mtime_nsec(),
            d.ctime(),
            d.ctime_nsec(),
        )
    };
    let mut monitor = Monitor::start(&redis);
    for i in 0..10 {
        // A changes the directory (its link count, times); B hears of it, but does not look.
        fs::create_dir(a.join(format!("d/sub{i}"))).unwrap();
        common::eventually("a name made elsewhere", PROPAGATION, || {
            b.join(format!("d/sub{i}")).is_dir()
        });
        // The previous round's close reaches Redis after close(2) returned: not in this
        // window (no mount has a file open then).
        common::eventually("earlier closes in Redis", PROPAGATION, || {
            !redis.keys("skx").iter().any(|k| k.ends_with(":open"))
        });
        let began = std::time::SystemTime::now();
        let mut created = None;
        let sent = monitor.commands_during(|| {
            created = Some(fs::File::create(b.join(format!("d/b{i}"))).unwrap());
        });
        // (Its close is answered at once; Redis hears of it after.)
        drop(created);
        // (The first create also reads the directory's default ACL.)
        if i > 0 {
            assert_eq!(
                sent.len(),
                1,
                "create {i} in a shared directory sent {sent:#?}"
            );
        }
        let on_b = fs::metadata(b.join("d")).unwrap();
        assert!(
            on_b.modified().unwrap() >= began,
            "B's own create shows at once"
        );
        assert_eq!(on_b.nlink(), 3 + i, "A's subdirectories count on B");
        common::eventually("both mounts agree on the directory", PROPAGATION, || {
            seen(&a) == seen(&b)
        });
    }
}

/// A directory another mount filled is listed with its entries' attributes in one round trip
/// (as `ls -l` lists: names, `lstat` and ACL of each), and the listing is whole and current.
#[test]
fn a_small_directory_is_listed_with_its_attributes_in_one_round_trip() {
    // (B without access times, whose write would be a command of its own.)
    let Some((redis, a, b)) = shared_directory(On::Server, &["-o", "noatime"]) else {
        return;
    };
    for i in 0..300 {
        // (Sized without data, so that no store of A's lands while B lists.)
        let f = fs::File::create(a.join(format!("d/f{i}"))).unwrap();
        f.set_len(i).unwrap();
    }
    fs::create_dir(a.join("d/sub")).unwrap();
    // (Redis learns the listing's script at its first use.)
    assert_eq!(names(&b.join("")), ["d"]);
    let mut monitor = Monitor::start(&redis);
    let mut listed = Vec::new();
    let sent = monitor.commands_during(|| {
        for e in fs::read_dir(b.join("d")).unwrap() {
            let e = e.unwrap();
            let meta = fs::symlink_metadata(e.path()).unwrap();
            assert_eq!(getxattr(&e.path(), "system.posix_acl_access"), None);
            listed.push((
                e.file_name().into_string().unwrap(),
                meta.len(),
                meta.is_dir(),
            ));
        }
    });
    assert_eq!(
        sent.len(),
        1,
        "listing a directory of 301 entries sent {sent:#?}"
    );
    listed.sort();
    let mut expected: Vec<(String, u64, bool)> =
        (0..300).map(|i| (format!("f{i}"), i, false)).collect();
    expected.push((
        "sub".into(),
        fs::metadata(a.join("d/sub")).unwrap().len(),
        true,
    ));
    expected.sort();
    assert_eq!(listed, expected);
}

/// Inode numbers and block ids past 10^14 (where counters reach after a move to the clock's
/// floor, see `src/lua/reserve.lua`) name the same files everywhere: Lua writes a number that
/// large as `1e+14` unless told otherwise, and a key or entry built so would name nothing.
#[test]
fn numbers_past_ten_to_the_fourteenth_name_the_same_files_everywhere() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    Mount::new(&redis, "skx", &[]).unmount();
    let far = "1000000000000000";
    redis.cmd::<()>(&["SET", "{skx}:next:ino", far]);
    redis.cmd::<()>(&["SET", "{skx}:next:blk", far]);
    let (a, b) = (
        Mount::new(&redis, "skx", &[]),
        Mount::new(&redis, "skx", &[]),
    );
    // A directory made here (leased: its creates are deferred), files in it and in the root
    // (created synchronously), data in blocks, a link, a symlink, a rename, an xattr, a removal.
    fs::create_dir(a.join("d")).unwrap();
    for i in 0..20 {
        fs::write(a.join(format!("d/f{i}")), common::random_bytes(70_000, i)).unwrap();
    }
    fs::write(a.join("top"), b"in the root").unwrap();
    fs::create_dir(a.join("d/sub")).unwrap();
    fs::hard_link(a.join("d/f1"), a.join("d/sub/f1-link")).unwrap();
    std::os::unix::fs::symlink("../f2", a.join("d/sub/to-f2")).unwrap();
    fs::rename(a.join("d/f3"), a.join("moved")).unwrap();
    fs::remove_file(a.join("d/f4")).unwrap();
    let f5 = cpath(&a.join("d/f5"));
    // SAFETY: valid C strings and buffer.
    let set = unsafe {
        libc::setxattr(
            f5.as_ptr(),
            c"user.mark".as_ptr(),
            b"far".as_ptr().cast(),
            3,
            0,
        )
    };
    assert_eq!(set, 0, "setxattr");
    let ino = fs::metadata(a.join("top")).unwrap().ino();
    assert!(ino > 1_000_000_000_000_000, "top has inode {ino}");
    let seen_here = common::tree_listing(&a.path);
    common::eventually("the other mount sees the same tree", PROPAGATION, || {
        common::tree_listing(&b.path) == seen_here
    });
    assert_eq!(
        fs::read(b.join("d/sub/to-f2")).unwrap(),
        common::random_bytes(70_000, 2)
    );
    a.unmount();
    b.unmount();
    common::assert_clean(&redis, "skx");
    let again = Mount::new(&redis, "skx", &[]);
    assert_eq!(common::tree_listing(&again.path), seen_here);
}

/// Blocks no file names any more leave Redis a moment after the change that freed them, each
/// deleted once and its bytes taken from the count once, though every mount deletes what it
/// finds queued: two mounts overwrite and delete files at once, then nothing is left queued,
/// no block is left over, and the count of stored bytes is what the blocks take.
fn freed_blocks_leave_redis_once_whichever_mount_deletes_them(on: On) {
    let Some((redis, a, b)) = two_mounts(on) else {
        return;
    };
    for i in 0..40u64 {
        fs::write(a.join(format!("f{i}")), common::random_bytes(150_000, i)).unwrap();
    }
    let overwrite = {
        let root = a.path.clone();
        std::thread::spawn(move || {
            for i in (0..40u64).step_by(2) {
                fs::write(
                    root.join(format!("f{i}")),
                    common::random_bytes(90_000, i + 100),
                )
                .unwrap();
            }
        })
    };
    for i in (1..40u64).step_by(2) {
        fs::remove_file(b.join(format!("f{i}"))).unwrap();
    }
    overwrite.join().unwrap();
    let stored = |r: &Place| -> (u64, u64) {
        let blocks = r
            .keys("skx")
            .into_iter()
            .filter(|k| k.starts_with("skx:b:"));
        let total: u64 = blocks.map(|k| r.cmd::<u64>(&["STRLEN", &k])).sum();
        (total, r.cmd::<u64>(&["HGET", "{skx}:stat", "stored_bytes"]))
    };
    common::eventually("the freed blocks to be deleted", PROPAGATION, || {
        redis.cmd::<u64>(&["HLEN", "{skx}:garbage"]) == 0
    });
    let (in_blocks, counted) = stored(&redis);
    assert_eq!(
        counted, in_blocks,
        "stored_bytes against the blocks' lengths"
    );
    assert!(
        (20 * 90_000..20 * 100_000).contains(&in_blocks),
        "{in_blocks}"
    );
    a.unmount();
    b.unmount();
    common::assert_clean_at(&redis.url(), "skx");
}

common::on_a_server_and_on_a_cluster!(
    changes_on_one_mount_are_seen_on_the_others,
    close_to_open_reads_the_new_bytes_even_with_old_pages_cached,
    concurrent_writers_of_disjoint_ranges_lose_nothing,
    names_created_elsewhere_appear_in_directories_this_mount_created,
    attributes_set_elsewhere_on_a_file_this_mount_created_appear,
    bytes_written_into_a_file_kept_open_reach_other_mounts_without_a_close,
    xattrs_set_elsewhere_after_a_listing_are_seen,
    o_creat_opens_a_name_this_mount_has_not_heard_of_yet,
    freed_blocks_leave_redis_once_whichever_mount_deletes_them,
);
