//! Directory delegation: creates and removals in a directory a mount created are answered
//! before Redis has them, yet every other mount, tool and crash sees a consistent filesystem.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{assert_clean, tool_ok, Mount, Redis};

/// How long a change in a shared directory may take to be seen elsewhere (its event takes
/// milliseconds; the deadline is generous for a loaded machine).
const PROPAGATION: Duration = Duration::from_secs(10);

/// Generous bound for things that take milliseconds, so that a slow machine does not fail.
const SOON: Duration = Duration::from_secs(10);

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    n.sort();
    n
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn another_mount_sees_creates_and_removals_at_once() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let a = Mount::new(&redis, "skx", &[]);
    let b = Mount::new(&redis, "skx", &[]);
    fs::create_dir(a.join("d")).unwrap();
    let mut expected = Vec::new();
    for i in 0..300 {
        let name = format!("f{i:03}");
        fs::write(a.join("d").join(&name), format!("content {i}")).unwrap();
        expected.push(name);
    }
    fs::create_dir(a.join("d/sub")).unwrap();
    fs::write(a.join("d/sub/inner"), b"inner").unwrap();
    expected.push("sub".into());
    let fifo = common::cpath(&a.join("d/fifo"));
    // SAFETY: a valid path.
    assert_eq!(
        unsafe { libc::mknod(fifo.as_ptr(), libc::S_IFIFO | 0o600, 0) },
        0
    );
    expected.push("fifo".into());

    // No waiting: the other mount's first look sees every change, and every file's bytes
    // (closes there did not wait for the stores; the recall did).
    assert_eq!(names(&b.join("d")), sorted(expected.clone()));
    for i in (0..300).rev() {
        assert_eq!(
            fs::read(b.join(format!("d/f{i:03}"))).unwrap(),
            format!("content {i}").as_bytes()
        );
    }
    assert_eq!(fs::read(b.join("d/sub/inner")).unwrap(), b"inner");
    assert_eq!(fs::metadata(b.join("d")).unwrap().nlink(), 3);
    assert!(fs::symlink_metadata(b.join("d/fifo"))
        .unwrap()
        .file_type()
        .is_file()
        .eq(&false));

    for i in 0..100 {
        fs::remove_file(a.join(format!("d/f{i:03}"))).unwrap();
        expected.retain(|n| n != &format!("f{i:03}"));
    }
    assert_eq!(names(&b.join("d")), sorted(expected.clone()));
    // `d` is shared now: each mount sees the other's changes in it, once their events arrive
    // (each knows every name of `d`, having made or listed it, and answers a name it has not
    // heard of as missing until then: README, consistency model).
    fs::write(b.join("d/from-b"), b"b").unwrap();
    common::eventually("B's file, on A", PROPAGATION, || {
        fs::read(a.join("d/from-b")).ok().as_deref() == Some(b"b".as_slice())
    });
    fs::write(a.join("d/from-a"), b"a").unwrap();
    common::eventually("A's file, on B", PROPAGATION, || {
        fs::read(b.join("d/from-a")).ok().as_deref() == Some(b"a".as_slice())
    });
    // A directory created in a leased one is leased too, and recalled on its own.
    fs::create_dir(a.join("d/sub/deeper")).unwrap();
    fs::write(a.join("d/sub/deeper/x"), b"x").unwrap();
    assert_eq!(names(&b.join("d/sub/deeper")), vec!["x".to_string()]);

    fs::remove_dir_all(a.join("d")).unwrap();
    // `d`'s own entry is in the root, which no mount leases: B hears of its removal by the
    // change event, and may still see it for the event's delay (README, consistency model).
    common::eventually("the removal of d, seen on B", PROPAGATION, || {
        !b.join("d").exists()
    });
    drop((a, b));
    assert_clean(&redis, "skx");
    assert_eq!(redis.cmd::<u64>(&["HLEN", "{skx}:lease"]), 0);
}

#[test]
fn deferred_changes_reach_redis_by_themselves_and_keep_program_order() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let a = Mount::new(&redis, "skx", &[]);
    fs::create_dir(a.join("d")).unwrap();
    let dir = fs::metadata(a.join("d")).unwrap().ino().to_string();
    assert_eq!(
        redis.cmd::<Option<String>>(&["HGET", "{skx}:lease", &dir]),
        Some("1".to_string()),
        "a new directory is leased to the mount that made it"
    );
    for i in 0..50 {
        fs::write(a.join(format!("d/{i}")), b"").unwrap();
    }
    // Nobody asks; the log goes out on its own within milliseconds.
    common::eventually("deferred creates in Redis", SOON, || {
        redis.cmd::<u64>(&["HLEN", &format!("{{skx}}:d:{dir}")]) == 50
    });

    // Operations that must see deferred ones (rename, link, rmdir, a data commit) do.
    fs::create_dir(a.join("d/e")).unwrap();
    fs::write(a.join("d/e/f"), b"moved").unwrap();
    fs::rename(a.join("d/e/f"), a.join("d/g")).unwrap();
    fs::hard_link(a.join("d/g"), a.join("d/h")).unwrap();
    fs::remove_dir(a.join("d/e")).unwrap();
    fs::remove_file(a.join("d/g")).unwrap();
    assert_eq!(fs::read(a.join("d/h")).unwrap(), b"moved");
    assert_eq!(fs::metadata(a.join("d/h")).unwrap().nlink(), 1);
    // A tree made and removed before anything was sent leaves nothing behind.
    fs::create_dir_all(a.join("d/t/u/v")).unwrap();
    for dir in ["d/t", "d/t/u", "d/t/u/v"] {
        fs::write(a.join(dir).join("file"), b"gone").unwrap();
    }
    fs::remove_dir_all(a.join("d/t")).unwrap();
    assert!(!a.join("d/t").exists());
    // A file written in a leased directory and moved out of it is readable elsewhere at once.
    let b = Mount::new(&redis, "skx", &[]);
    let data = common::random_bytes(300_000, 3);
    fs::write(a.join("d/out"), &data).unwrap();
    fs::rename(a.join("d/out"), a.join("out")).unwrap();
    assert_eq!(fs::read(b.join("out")).unwrap(), data);
    assert_eq!(fs::read(b.join("d/h")).unwrap(), b"moved");
    assert!(!b.join("d/e").exists() && !b.join("d/g").exists() && !b.join("d/t").exists());
    drop((a, b));
    assert_clean(&redis, "skx");
}

#[test]
fn a_file_reopened_right_after_its_close_reads_what_was_written() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let a = Mount::new(&redis, "skx", &[]);
    fs::create_dir(a.join("d")).unwrap();
    // The close does not wait for the store; the open that follows must not miss it.
    for i in 0..300u64 {
        let path = a.join(format!("d/{i}"));
        let f = fs::File::create(&path).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"data", (1 << 31) + i).unwrap();
        drop(f);
        let f = fs::File::open(&path).unwrap();
        let mut buf = [0u8; 4];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, (1 << 31) + i).unwrap();
        assert_eq!(&buf, b"data", "file {i}");
        assert_eq!(f.metadata().unwrap().len(), (1 << 31) + i + 4);
    }
}

#[test]
fn files_removed_while_open_stay_usable_and_leave_nothing_once_closed() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let a = Mount::new(&redis, "skx", &[]);
    fs::create_dir(a.join("d")).unwrap();
    let data = common::random_bytes(200_000, 7);
    // Written, removed while open (their removal is deferred and their closes are still to
    // come), then used through the descriptor: what was written is still there.
    let mut open = Vec::new();
    for i in 0..100 {
        let path = a.join(format!("d/{i}"));
        let mut f = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, &data).unwrap();
        fs::remove_file(&path).unwrap();
        open.push(f);
    }
    assert!(names(&a.join("d")).is_empty());
    for f in &open {
        let mut back = vec![0u8; data.len()];
        std::os::unix::fs::FileExt::read_exact_at(f, &mut back, 0).unwrap();
        assert!(back == data, "an unlinked open file lost its bytes");
        assert_eq!(f.metadata().unwrap().nlink(), 0);
    }
    let b = Mount::new(&redis, "skx", &[]);
    assert!(names(&b.join("d")).is_empty());
    drop(open);
    // Closed: nothing of them remains in Redis, and nothing was leaked.
    common::eventually("removed files reclaimed", SOON, || {
        !redis
            .keys("skx")
            .iter()
            .any(|k| k.starts_with("skx:b:") || k.starts_with("{skx}:m:"))
    });
    drop((a, b));
    assert_clean(&redis, "skx");
}

#[test]
fn a_snapshot_right_after_creates_holds_them() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let a = Mount::new(&redis, "skx", &[]);
    fs::create_dir(a.join("d")).unwrap();
    for i in 0..200 {
        fs::write(a.join(format!("d/{i}")), b"").unwrap();
    }
    tool_ok(
        "snapshot",
        &["--redis", &redis.url(), "--from", "skx", "--to", "copy"],
    );
    let copy = Mount::new(&redis, "copy", &["--read-only"]);
    assert_eq!(names(&copy.join("d")).len(), 200);
    assert!(
        !redis.keys("copy").iter().any(|k| k.contains("lease")),
        "leases belong to live mounts, not to copies"
    );
    drop(copy);
    drop(a);
    assert_clean(&redis, "copy");
}

#[test]
fn a_killed_mount_gives_its_directories_back_when_its_session_expires() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let a = Mount::new(&redis, "skx", &["--session-timeout", "2"]);
    let b = Mount::new(&redis, "skx", &["--session-timeout", "2"]);
    fs::create_dir(a.join("d")).unwrap();
    for i in 0..2000 {
        fs::write(a.join(format!("d/{i}")), b"").unwrap();
    }
    // Killed with changes possibly still in its log: what it had sent stays, the rest is lost,
    // and nothing is left half-done.
    a.kill();
    let asked = Instant::now();
    let seen = names(&b.join("d"));
    assert!(
        asked.elapsed() < SOON,
        "waited {:?} for a dead mount's directory",
        asked.elapsed()
    );
    let inodes: u64 = redis.cmd(&["HGET", "{skx}:stat", "inodes"]);
    assert_eq!(
        inodes,
        2 + seen.len() as u64,
        "root, d, and the files it lists"
    );
    for name in &seen {
        assert_eq!(fs::metadata(b.join("d").join(name)).unwrap().len(), 0);
    }
    fs::write(b.join("d/after"), b"b").unwrap();
    drop(b);
    assert_clean(&redis, "skx");
    assert_eq!(redis.cmd::<u64>(&["HLEN", "{skx}:lease"]), 0);
}

#[test]
fn without_delegation_every_create_is_in_redis_before_it_is_answered() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let a = Mount::new(&redis, "skx", &["--no-delegation"]);
    fs::create_dir(a.join("d")).unwrap();
    let dir = fs::metadata(a.join("d")).unwrap().ino();
    for i in 0..20 {
        fs::write(a.join(format!("d/{i}")), b"").unwrap();
        assert_eq!(
            redis.cmd::<u64>(&["HLEN", &format!("{{skx}}:d:{dir}")]),
            i + 1
        );
    }
    assert_eq!(redis.cmd::<u64>(&["HLEN", "{skx}:lease"]), 0);
}

/// A script that makes a file and lists the directory, again and again, sees each file it
/// made: whether a create is deferred or goes to Redis at once, the listing this mount last
/// took of a directory leased to it is not reused once a name was made there.
#[test]
fn every_file_made_is_in_the_next_listing() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let m = Mount::new(&redis, "skx", &[]);
    let dir = m.join("busy");
    fs::create_dir(&dir).unwrap();
    for made in 1..=100u64 {
        fs::write(dir.join(format!("f{made}")), b"x").unwrap();
        let listed = fs::read_dir(&dir).unwrap().count() as u64;
        assert_eq!(listed, made, "the listing after making f{made}");
        // As a script's next command would come: the deferred changes go meanwhile.
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(m);
    assert_clean(&redis, "skx");
}

/// What `touch`, `chmod`, `chown` and `tar` do to what they just made (a mode, an owner,
/// times) rides with its creation while that waits in the log: with Redis stopped, such
/// changes of new files, directories and special files in a leased directory are answered
/// (where any change through Redis fails after `--io-timeout`), and once Redis is back every
/// mount sees exactly them, as if each had gone through Redis.
#[test]
fn attributes_set_on_what_was_just_made_ride_with_its_creation() {
    use std::os::unix::fs::{chown, PermissionsExt};
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let a = Mount::new(&redis, "skx", &["--io-timeout", "2"]);
    let dir = a.join("d");
    fs::create_dir(&dir).unwrap();
    let times = |secs: u64| {
        fs::FileTimes::new()
            .set_accessed(std::time::UNIX_EPOCH + Duration::from_secs(secs))
            .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(secs + 1))
    };
    let contents: Vec<Vec<u8>> = (0..20)
        .map(|i| common::random_bytes(10_000 + i, i as u64))
        .collect();
    // Redis stays stopped well past the `--io-timeout`: what needs it fails meanwhile.
    let mut through_redis = Ok(());
    with_the_log_held(&redis, &dir, Duration::from_secs(10), || {
        for i in 0..20u32 {
            // touch -d: create, then set both times on the open file.
            let file = fs::File::create(dir.join(format!("f{i}"))).unwrap();
            file.set_times(times(1_000_000 + u64::from(i))).unwrap();
            file.set_permissions(fs::Permissions::from_mode(0o600 + i))
                .unwrap();
            drop(file);
            chown(dir.join(format!("f{i}")), Some(1000 + i), Some(2000 + i)).unwrap();
        }
        // tar x: create, write, set the times, the owner and the mode, close; then the next.
        for (i, data) in contents.iter().enumerate() {
            let mut file = fs::File::create(dir.join(format!("g{i}"))).unwrap();
            std::io::Write::write_all(&mut file, data).unwrap();
            file.set_times(times(2_000_000)).unwrap();
            std::os::unix::fs::fchown(&file, Some(3), Some(4)).unwrap();
            file.set_permissions(fs::Permissions::from_mode(0o640))
                .unwrap();
        }
        let sub = dir.join("sub");
        fs::create_dir(&sub).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o2750)).unwrap();
        chown(&sub, Some(7), Some(8)).unwrap();
        let fifo = common::cpath(&dir.join("fifo"));
        // SAFETY: a valid path.
        assert_eq!(
            unsafe { libc::mknod(fifo.as_ptr(), libc::S_IFIFO | 0o644, 0) },
            0
        );
        fs::set_permissions(dir.join("fifo"), fs::Permissions::from_mode(0o4600)).unwrap();
        through_redis = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
    });
    assert_eq!(
        through_redis.map_err(|e| e.raw_os_error()),
        Err(Some(libc::EIO)),
        "a chmod of a directory whose creation Redis had, during the stop"
    );

    let expect = |m: &Mount| {
        for i in 0..20u32 {
            let meta = fs::metadata(m.join(format!("d/f{i}"))).unwrap();
            let what = format!("d/f{i} on {}", m.join("").display());
            assert_eq!(meta.mode(), libc::S_IFREG | (0o600 + i), "{what}");
            assert_eq!((meta.uid(), meta.gid()), (1000 + i, 2000 + i), "{what}");
            let secs = 1_000_000 + i64::from(i);
            assert_eq!((meta.atime(), meta.mtime()), (secs, secs + 1), "{what}");
            assert!(meta.ctime() > secs + 1, "{what}: ctime {}", meta.ctime());
        }
        for (i, data) in contents.iter().enumerate() {
            let path = m.join(format!("d/g{i}"));
            let meta = fs::metadata(&path).unwrap();
            assert_eq!(meta.mode(), libc::S_IFREG | 0o640, "d/g{i}");
            assert_eq!((meta.uid(), meta.gid()), (3, 4), "d/g{i}");
            // (Reading it moves its access time: relatime, the access time being older.)
            assert_eq!(meta.mtime(), 2_000_001, "d/g{i}");
            assert_eq!(&fs::read(&path).unwrap(), data, "d/g{i}'s bytes");
        }
        let sub = fs::metadata(m.join("d/sub")).unwrap();
        assert_eq!(sub.mode(), libc::S_IFDIR | 0o2750);
        assert_eq!((sub.uid(), sub.gid()), (7, 8));
        let fifo = fs::symlink_metadata(m.join("d/fifo")).unwrap();
        assert_eq!(fifo.mode(), libc::S_IFIFO | 0o4600);
    };
    expect(&a);
    let b = Mount::new(&redis, "skx", &[]);
    expect(&b);
    drop((a, b));
    let fresh = Mount::new(&redis, "skx", &[]);
    expect(&fresh);
    drop(fresh);
    assert_clean(&redis, "skx");
}

/// `tar x` sets each directory's times, owner and mode after its contents. A directory made
/// here in a directory leased here is one no other mount can have seen: those changes join the
/// deferred log behind its contents and cost no round trip. One another mount may have seen
/// (moved, or whose parent another mount looked into; made in a shared directory, as `d`
/// here, see the test above) changes through Redis.
#[test]
fn a_directory_no_other_mount_has_seen_changes_its_attributes_without_redis() {
    use std::os::unix::fs::{chown, PermissionsExt};
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let a = Mount::new(&redis, "skx", &["--io-timeout", "2"]);
    let b = Mount::new(&redis, "skx", &[]);
    fs::create_dir_all(a.join("m/moved")).unwrap();
    fs::rename(a.join("m/moved"), a.join("moved")).unwrap();
    let (dir, looked_into) = (a.join("d"), a.join("e"));
    fs::create_dir(&dir).unwrap();
    fs::create_dir(&looked_into).unwrap();
    fs::create_dir(looked_into.join("seen")).unwrap();
    // Another mount sees `moved` where it went, and looks into `e`.
    assert!(fs::metadata(b.join("moved")).unwrap().is_dir());
    assert_eq!(fs::read_dir(b.join("e")).unwrap().count(), 1);
    let times = |secs: u64| {
        fs::FileTimes::new()
            .set_accessed(std::time::UNIX_EPOCH + Duration::from_secs(secs))
            .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(secs + 1))
    };
    // Changed through descriptors opened (and their attributes read) before Redis stops: only
    // the change itself needs Redis.
    let seen: Vec<(fs::File, &str)> = ["moved", "e/seen"]
        .into_iter()
        .map(|name| (fs::File::open(a.join(name)).unwrap(), name))
        .inspect(|(file, _)| assert!(file.metadata().unwrap().is_dir()))
        .collect();
    let mut through_redis = Vec::new();
    let stop = Instant::now();
    // Redis stays stopped past the `--io-timeout` of the first change that needs it (the
    // second, waiting behind it, fails with it).
    with_the_log_held(&redis, &dir, Duration::from_secs(10), || {
        for top in 0..3u32 {
            let t = dir.join(format!("t{top}"));
            fs::create_dir_all(t.join("sub")).unwrap();
            for i in 0..5 {
                fs::File::create(t.join(format!("sub/f{i}"))).unwrap();
            }
            for (depth, d) in [t.join("sub"), t].iter().enumerate() {
                let n = top * 2 + depth as u32;
                fs::File::open(d)
                    .unwrap()
                    .set_times(times(1_000_000 + u64::from(n)))
                    .unwrap();
                chown(d, Some(100 + n), Some(200 + n)).unwrap();
                fs::set_permissions(d, fs::Permissions::from_mode(0o2700 + n)).unwrap();
            }
        }
        for (file, name) in &seen {
            let started = Instant::now();
            let chmod = file.set_permissions(fs::Permissions::from_mode(0o700));
            let what = format!(
                "chmod of {name} {:?} into the stop, answered in {:?}",
                started - stop,
                started.elapsed()
            );
            through_redis.push((what, chmod.map_err(|e| e.raw_os_error())));
        }
    });
    drop(seen);
    for (what, chmod) in through_redis {
        assert_eq!(chmod, Err(Some(libc::EIO)), "{what}");
    }
    let expect = |m: &Mount| {
        for top in 0..3u32 {
            for (depth, d) in [format!("d/t{top}/sub"), format!("d/t{top}")]
                .iter()
                .enumerate()
            {
                let n = top * 2 + depth as u32;
                let meta = fs::metadata(m.join(d)).unwrap();
                let what = format!("{d} on {}", m.join("").display());
                assert_eq!(meta.mode(), libc::S_IFDIR | (0o2700 + n), "{what}");
                assert_eq!((meta.uid(), meta.gid()), (100 + n, 200 + n), "{what}");
                let secs = 1_000_000 + i64::from(n);
                assert_eq!((meta.atime(), meta.mtime()), (secs, secs + 1), "{what}");
                assert_eq!(meta.nlink(), 2 + depth as u64, "{what}");
            }
        }
    };
    expect(&a);
    expect(&b);
    drop((a, b));
    let fresh = Mount::new(&redis, "skx", &[]);
    expect(&fresh);
    // (Last: a listing is an access, which moves these access times, older than a day.)
    for top in 0..3u32 {
        let listed = fs::read_dir(fresh.join(format!("d/t{top}/sub"))).unwrap();
        assert_eq!(listed.count(), 5, "d/t{top}/sub");
    }
    drop(fresh);
    assert_clean(&redis, "skx");
}

/// A directory made here and then removed through Redis (its count of entries unknown, as
/// after a symlink made in it) may still be open: a `fchmod` of it then must not put into the
/// log a change Redis would refuse, with every change of the batch it rides in.
#[test]
fn a_change_of_a_directory_removed_while_open_costs_no_other_change() {
    use std::os::unix::fs::PermissionsExt;
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let a = Mount::new(&redis, "skx", &[]);
    let dir = a.join("p");
    fs::create_dir(&dir).unwrap();
    fs::create_dir(dir.join("gone")).unwrap();
    std::os::unix::fs::symlink("x", dir.join("gone/link")).unwrap();
    fs::remove_file(dir.join("gone/link")).unwrap();
    let open = fs::File::open(dir.join("gone")).unwrap();
    fs::remove_dir(dir.join("gone")).unwrap();
    let _ = open.metadata();
    let _ = open.set_permissions(fs::Permissions::from_mode(0o700));
    drop(open);
    for i in 0..20 {
        fs::File::create(dir.join(format!("after-{i}"))).unwrap();
    }
    let b = Mount::new(&redis, "skx", &[]);
    let mut names: Vec<String> = fs::read_dir(b.join("p"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("after-{i}")).collect();
    expected.sort();
    assert_eq!(names, expected, "what another mount sees in p");
    drop((a, b));
    assert_clean(&redis, "skx");
}

/// Runs `body` while this mount's deferred log is held: Redis stopped, its first batch sent
/// and unanswered, every later change waiting behind it; Redis runs again `resume_after` into
/// `body` (what waits for it meanwhile succeeds where that is shorter than the mount's
/// `--io-timeout`, and fails with `EIO` where it is longer).
fn with_the_log_held(redis: &Redis, dir: &Path, resume_after: Duration, body: impl FnOnce()) {
    static HELD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let held = HELD.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let stopped = redis.pause();
    fs::File::create_new(dir.join(format!("first-of-held-log-{held}"))).unwrap();
    // The sender takes the first change within milliseconds: a second is plenty.
    std::thread::sleep(Duration::from_secs(1));
    let resumer = std::thread::spawn(move || {
        std::thread::sleep(resume_after);
        // SAFETY: kill with the test server's pid.
        unsafe { libc::kill(stopped, libc::SIGCONT) };
    });
    body();
    resumer.join().unwrap();
}

/// A change of a new inode that later changes in the log also touch (a child made in a new
/// directory moves its times and link count; a removal its links) cannot ride with the
/// creation, which they would be applied over: it goes through Redis, in order, and what
/// every mount sees is what the one that made the change answered.
#[test]
fn a_change_that_later_changes_would_undo_goes_through_redis_in_order() {
    use std::os::unix::fs::PermissionsExt;
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let a = Mount::new(&redis, "skx", &["--io-timeout", "10"]);
    let dir = a.join("d");
    fs::create_dir(&dir).unwrap();
    let times = fs::FileTimes::new()
        .set_accessed(std::time::UNIX_EPOCH + Duration::from_secs(1_000))
        .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_001));
    with_the_log_held(&redis, &dir, Duration::from_secs(2), || {
        // cp -a of a directory: its contents, then its times.
        fs::create_dir(dir.join("copied")).unwrap();
        fs::File::create(dir.join("copied/inside")).unwrap();
        let copied = fs::File::open(dir.join("copied")).unwrap();
        copied.set_times(times).unwrap();
    });
    let seen = fs::metadata(dir.join("copied")).unwrap();
    assert_eq!(seen.mtime(), 1_001, "what the mount that set it says");
    with_the_log_held(&redis, &dir, Duration::from_secs(2), || {
        // A file made, opened, removed while open, then changed through its descriptor.
        let path = dir.join("held");
        let file = fs::File::create(&path).unwrap();
        fs::remove_file(&path).unwrap();
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .unwrap();
        let meta = file.metadata().unwrap();
        assert_eq!(meta.nlink(), 0, "a removed file's links after a chmod");
        assert_eq!(meta.mode() & 0o777, 0o600);
    });
    let b = Mount::new(&redis, "skx", &[]);
    let there = fs::metadata(b.join("d/copied")).unwrap();
    assert_eq!(there.mtime(), 1_001, "what another mount sees");
    assert_eq!(there.atime(), 1_000);
    drop((a, b));
    assert_clean(&redis, "skx");
}

/// A listing's records of subdirectories whose own changes still wait in the log (children
/// made in them) are older than what the mount knows: `ls -l` right after `mkdir -p` shows
/// what the mount knows, not them.
#[test]
fn a_listing_shows_new_subdirectories_as_the_mount_knows_them() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let a = Mount::new(&redis, "skx", &["--io-timeout", "10"]);
    let dir = a.join("d");
    fs::create_dir(&dir).unwrap();
    with_the_log_held(&redis, &dir, Duration::from_secs(2), || {
        fs::create_dir_all(dir.join("sub/deeper")).unwrap();
        let listed: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(listed.len(), 2, "{listed:?}");
    });
    assert_eq!(fs::metadata(dir.join("sub")).unwrap().nlink(), 3);
    drop(a);
    assert_clean(&redis, "skx");
}

/// A listing too big for one round trip reads its entries' records a chunk at a time; a
/// directory among them that another mount holds (its changes may not be in Redis yet) is
/// recalled before its record is read, so the lister sees what its holder answered.
#[test]
fn a_big_listing_recalls_the_directories_among_its_entries_that_another_mount_holds() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let a = Mount::new(&redis, "skx", &[]);
    let b = Mount::new(&redis, "skx", &[]);
    fs::create_dir(a.join("big")).unwrap();
    // More than one chunk of records (2,048 entries with `.` and `..`); `sub`, made last,
    // has the highest inode and is read in the second chunk.
    for i in 0..2_100 {
        fs::File::create_new(a.join(format!("big/f{i:04}"))).unwrap();
    }
    fs::create_dir(b.join("big/sub")).unwrap();
    for i in 0..5 {
        fs::create_dir(b.join(format!("big/sub/c{i}"))).unwrap();
    }
    let sub = fs::metadata(b.join("big/sub")).unwrap().ino().to_string();
    let lease = || redis.cmd::<Option<String>>(&["HGET", "{skx}:lease", &sub]);
    assert!(
        lease().is_some(),
        "a new directory is leased to the mount that made it"
    );
    // A mount that knows none of the entries lists them with their attributes (readdirplus).
    let c = Mount::new(&redis, "skx", &[]);
    let listed: Vec<(String, fs::Metadata)> = fs::read_dir(c.join("big"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().into_string().unwrap(), e.metadata().unwrap())
        })
        .collect();
    assert_eq!(listed.len(), 2_101);
    let (_, seen) = listed.iter().find(|(name, _)| name == "sub").unwrap();
    assert!(seen.is_dir());
    assert_eq!(
        seen.nlink(),
        7,
        "sub's links as the mount that made them answered"
    );
    assert_eq!(
        lease(),
        None,
        "the listing recalled the directory from its holder"
    );
    assert!(listed
        .iter()
        .filter(|(name, _)| name != "sub")
        .all(|(_, m)| m.is_file() && m.len() == 0));
    drop((a, b, c));
    assert_clean(&redis, "skx");
}
