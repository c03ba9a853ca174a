//! Failover: a filesystem on a primary that Redis Sentinel watches survives the primary's
//! death. The mount finds the new primary through the sentinels, an fsync'ing writer only
//! pauses, and every record it was told was synced is there afterwards, also when the old
//! primary comes back (empty, calling itself primary until the sentinels demote it).

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Link, Mount, Redis, Sentinels};

/// A primary, its replica (which reaches it through a link the test can cut) and three
/// sentinels watching them.
/// How long the sentinels leave a replica replicating through a link (see [`Watched::start`]).
const LINK_KEPT: Duration = Duration::from_secs(600);

struct Watched {
    primary: Redis,
    link: Link,
    replica: Redis,
    sentinels: Sentinels,
}

impl Watched {
    /// Starts them, the link adding `rtt` to every round trip, and waits until the replica
    /// is in sync: one that never finished its first sync (Redis waits 5 s for more replicas
    /// before sending its data) is not one the sentinels would promote.
    fn start(rtt: Duration) -> Watched {
        let primary = Redis::start();
        let link = primary.link_at_distance(rtt);
        let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &link.port.to_string()]);
        common::eventually("the replica to be in sync", Duration::from_secs(30), || {
            replica
                .cmd::<String>(&["INFO", "replication"])
                .contains("master_link_status:up")
        });
        // Sentinels rewire a replica that replicates from another address than the one they
        // know the primary by, `failover-timeout` after they found it: a replica behind a
        // link would bypass it a few seconds into the test. Until the primary dies, that
        // wait is longer than any test (see `Watched::fail_over`).
        let sentinels = Sentinels::start_configured(
            3,
            "fsprimary",
            primary.port(),
            1,
            &format!(
                "sentinel failover-timeout fsprimary {}",
                LINK_KEPT.as_millis()
            ),
        );
        Watched {
            primary,
            link,
            replica,
            sentinels,
        }
    }

    /// Kills the primary and holds it down until the sentinels promote the replica and settle
    /// on it, then starts it again, empty (primary by its own account until the sentinels
    /// demote it).
    fn fail_over(&self) {
        let replicating_from = self.replica.cmd::<String>(&["INFO", "replication"]);
        assert!(
            replicating_from.contains(&format!("master_port:{}\r\n", self.link.port)),
            "the replica no longer replicates through the link:\n{replicating_from}"
        );
        self.primary.kill_and_hold();
        // A failover that fails is tried again after twice this: back to the usual.
        self.sentinels.set(
            "failover-timeout",
            &common::SENTINEL_FAILOVER_TIMEOUT.as_millis().to_string(),
        );
        common::eventually(
            "the sentinels to promote the replica",
            Duration::from_secs(30),
            || self.sentinels.primary_port() == Some(self.replica.port()),
        );
        // Released before the sentinels settle, the old primary, empty, would be the replica
        // a second failover promotes (see `Sentinels::settled_on`): Sentinel's loss, not the
        // mount's, which then rightly finds its filesystem gone.
        common::eventually(
            "every sentinel to settle on the promoted replica",
            Duration::from_secs(30),
            || self.sentinels.settled_on(self.replica.port()),
        );
        self.primary.release();
    }
}

/// Mounts `prefix` through the sentinels.
fn mount_through(sentinels: &Sentinels, prefix: &str) -> Mount {
    let args: Vec<String> = [
        "--redis",
        &sentinels.url(),
        "--prefix",
        prefix,
        "--io-timeout",
        "60",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Mount::with_args(&args).unwrap_or_else(|r| panic!("mount failed ({:?}):\n{}", r.code, r.stderr))
}

/// The journal holds records 0.. in order, at least `acknowledged` of them.
fn assert_journal(path: &Path, acknowledged: u64) {
    let text = fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.len() as u64 >= acknowledged,
        "{} records, {acknowledged} were synced",
        lines.len()
    );
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(*line, format!("record {i:08}"), "line {i}");
    }
}

#[test]
fn a_sentinel_failover_is_a_pause_that_loses_no_fsynced_record() {
    if !common::ready() {
        return;
    }
    // The replica is 40 ms from its primary: what the primary answered in its last 40 ms is
    // on the primary alone, unless the mount waited for the replica before answering.
    let watched = Watched::start(Duration::from_millis(40));
    let Watched {
        primary,
        replica,
        sentinels,
        ..
    } = &watched;
    let m = mount_through(sentinels, "skx");

    let journal = m.join("journal");
    let synced = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (journal, synced, stop) = (journal.clone(), synced.clone(), stop.clone());
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&journal)?;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                writeln!(f, "record {n:08}")?;
                f.sync_data()?;
                n += 1;
                synced.store(n, Ordering::Release);
            }
            Ok(())
        })
    };
    // Another program creates and lists files meanwhile: each request waits, none fails.
    let lister = {
        let (dir, stop) = (m.join("busy"), stop.clone());
        fs::create_dir(&dir).unwrap();
        std::thread::spawn(move || -> std::io::Result<u64> {
            let mut made = 0u64;
            while !stop.load(Ordering::Relaxed) {
                fs::write(dir.join(format!("f{made}")), b"x")?;
                made += 1;
                let listed = fs::read_dir(&dir)?.count() as u64;
                assert_eq!(listed, made, "the listing after f{made}");
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(made)
        })
    };
    let synced_at_least = |n: u64, why: &str| {
        common::eventually(why, Duration::from_secs(60), || {
            synced.load(Ordering::Acquire) >= n || writer.is_finished()
        });
    };
    synced_at_least(20, "the writer to sync 20 records");

    let before = synced.load(Ordering::Acquire);
    watched.fail_over();
    common::eventually(
        "the old primary to be demoted",
        Duration::from_secs(30),
        || primary.is_replica(),
    );
    synced_at_least(before + 20, "the writer to go on after the failover");
    stop.store(true, Ordering::Relaxed);
    writer
        .join()
        .unwrap()
        .expect("the writer saw no error through the failover");
    let made = lister
        .join()
        .unwrap()
        .expect("creates and listings saw no error through the failover");
    let acknowledged = synced.load(Ordering::Acquire);
    assert_journal(&journal, acknowledged);

    // A new mount, through the sentinels, reads what the new primary holds.
    drop(m);
    let again = mount_through(sentinels, "skx");
    assert_journal(&again.join("journal"), acknowledged);
    // (The last create may have been answered but not sent when the first mount ended.)
    let kept = fs::read_dir(again.join("busy")).unwrap().count() as u64;
    assert!(kept + 1 >= made, "{kept} of {made} files");
    drop(again);
    common::assert_clean(replica, "skx");
}

/// Files `dir/name0..` of `count`, each holding its own path (or empty).
fn make_files(dir: &Path, name: &str, count: usize, with_content: bool) {
    fs::create_dir(dir).unwrap();
    for i in 0..count {
        let path = dir.join(format!("{name}{i}"));
        let content = if with_content {
            path.to_string_lossy().into_owned()
        } else {
            String::new()
        };
        fs::write(&path, content).unwrap();
    }
}

/// Every file `made` by [`make_files`] (with content) holds its own path under `root`.
fn assert_files(root: &Path, made: &[(&str, &str, usize)]) {
    for (dir, name, count) in made {
        for i in 0..*count {
            let rel = format!("{dir}/{name}{i}");
            let got = fs::read_to_string(root.join(&rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
            assert!(got.ends_with(&rel), "{rel} holds {got:?}");
        }
    }
}

/// A primary that dies before its replica heard of the inode numbers, block ids and ranges of
/// them it handed out leaves mounts holding numbers the new primary never counted: the new
/// primary must not hand them out again. Mount A takes numbers while the primary's link to its
/// replica is cut, the primary dies, the replica is promoted, and then A (with what it still
/// holds) and a new mount B (with what the new primary counts) make files and write data: no
/// file may end up with another's inode or blocks.
#[test]
fn numbers_a_dead_primary_handed_out_are_never_handed_out_again() {
    if !common::ready() {
        return;
    }
    let w = Watched::start(Duration::ZERO);
    let a = mount_through(&w.sentinels, "skx");
    common::eventually(
        "the mount to reserve its first inode numbers",
        Duration::from_secs(10),
        || {
            w.primary
                .cmd::<Option<u64>>(&["GET", "{skx}:next:ino"])
                .unwrap_or(0)
                > 1
        },
    );
    // The file written during the cut exists before it (what becomes of a file made during
    // the cut is another test's question).
    fs::File::create(a.join("x1")).unwrap().sync_all().unwrap();
    // Everything so far is on the replica; nothing from now on will be.
    let mut conn = w.primary.conn();
    let _: () = redis::cmd("SET")
        .arg("sync-mark")
        .arg(1)
        .query(&mut conn)
        .unwrap();
    let reached: u64 = redis::cmd("WAIT")
        .arg(1)
        .arg(10_000)
        .query(&mut conn)
        .unwrap();
    assert_eq!(reached, 1, "the replica acknowledged");
    w.link.cut();

    // More creates than one reservation of inode numbers holds, and a first write: a range
    // of inode numbers and one of block ids, both known to the primary alone.
    make_files(&a.join("lost"), "e", 1100, false);
    let first = common::random_bytes(3 << 20, 1);
    let writer = {
        let (path, data) = (a.join("x1"), first.clone());
        std::thread::spawn(move || write_and_close(&path, &data))
    };
    common::eventually(
        "the primary to hand out block ids",
        Duration::from_secs(10),
        || {
            w.primary
                .cmd::<Option<u64>>(&["GET", "{skx}:next:blk"])
                .is_some_and(|n| n > 0)
        },
    );

    w.fail_over();
    writer
        .join()
        .unwrap()
        .expect("the write closed across the failover");

    // A goes on with the numbers it holds; B starts from what the new primary counts.
    make_files(&a.join("a2"), "g", 30, true);
    let second = common::random_bytes(3 << 20, 2);
    fs::write(a.join("x2"), &second).unwrap();
    let b = mount_through(&w.sentinels, "skx");
    make_files(&b.join("b1"), "h", 1100, true);
    let third = common::random_bytes(3 << 20, 3);
    fs::write(b.join("y"), &third).unwrap();
    let a_log = a.log_text();
    drop(a);
    drop(b);

    let c = mount_through(&w.sentinels, "skx");
    assert_files(&c.join(""), &[("a2", "g", 30), ("b1", "h", 1100)]);
    for (name, data) in [("x1", &first), ("x2", &second), ("y", &third)] {
        let read = fs::read(c.join(name)).unwrap();
        let first_difference = read.iter().zip(data.iter()).position(|(a, b)| a != b);
        assert!(
            read == *data,
            "{name} as written: {} bytes read of {}, first difference at {first_difference:?}\n{}",
            read.len(),
            data.len(),
            a_log
        );
    }
    drop(c);
    common::assert_clean(&w.replica, "skx");
}

#[test]
fn sentinels_that_know_no_such_primary_are_named_in_one_line() {
    if !common::ready() {
        return;
    }
    let primary = Redis::start();
    let sentinels = Sentinels::start(1, "known", &primary, 0);
    let url = sentinels.url().replace("/known", "/unknown");
    let args: Vec<String> = ["--redis", &url, "--prefix", "skx"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let Err(refused) = Mount::with_args(&args) else {
        panic!("mounted without a primary");
    };
    let text = refused.stderr.trim();
    assert_eq!(refused.code, Some(1), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("unknown") && text.contains("redis+sentinel://"),
        "{text}"
    );
}

/// A file made while the primary's link to its replica is cut exists on the primary alone: when
/// that primary dies, its `fsync` cannot have kept it, and must say so (`EIO`), with data
/// written to it or without; so must an `fsyncdir` of the directory the files were made in,
/// and the `fsync` of a file whose truncation the primary had alone.
#[test]
fn an_fsync_or_fsyncdir_that_a_failover_took_the_files_from_fails() {
    if !common::ready() {
        return;
    }
    let w = Watched::start(Duration::ZERO);
    let a = mount_through(&w.sentinels, "skx");
    fs::create_dir(a.join("d")).unwrap();
    fs::write(a.join("t"), common::random_bytes(10_000, 2)).unwrap();
    fs::File::open(a.join("d")).unwrap().sync_all().unwrap();
    let dir_key = format!("{{skx}}:d:{}", fs::metadata(a.join("d")).unwrap().ino());
    w.link.cut();
    // Every change is made (and answered by the primary) before the failover, only the
    // `fsync`s wait; and the files are created before the directory's `fsync` begins: the
    // kernel holds a directory's lock through it, and would hold back a create in it.
    let fsync_new_file = |name: &str, size: usize| {
        let mut f = fs::File::create(a.join("d").join(name)).unwrap();
        f.write_all(&common::random_bytes(size, 1)).unwrap();
        std::thread::spawn(move || f.sync_all())
    };
    let written = fsync_new_file("written", 100_000);
    let empty = fsync_new_file("empty", 0);
    let listed = {
        let handle = fs::File::open(a.join("d")).unwrap();
        fs::write(a.join("d/unsynced"), b"").unwrap();
        std::thread::spawn(move || handle.sync_all())
    };
    let truncated = {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(a.join("t"))
            .unwrap();
        f.set_len(10).unwrap();
        std::thread::spawn(move || f.sync_all())
    };
    common::eventually(
        "the primary to have the three files",
        Duration::from_secs(10),
        || w.primary.cmd::<u64>(&["HLEN", &dir_key]) == 3,
    );
    w.fail_over();
    for (name, fsynced) in [
        ("written", written),
        ("empty", empty),
        ("d", listed),
        ("t", truncated),
    ] {
        let err = fsynced.join().unwrap().expect_err(name);
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{name}: {err}");
    }
    drop(a);
    let again = mount_through(&w.sentinels, "skx");
    assert_eq!(fs::read_dir(again.join("d")).unwrap().count(), 0);
    drop(again);
    common::assert_clean(&w.replica, "skx");
}

/// `fsync`s of several threads at once share their waits for the replica: a `WAIT` that began
/// after a thread's `fsync` was asked for covers it, so one round trip to the replica serves
/// every `fsync` that came in while the one before was under way.
#[test]
fn concurrent_fsyncs_share_their_waits_for_the_replica() {
    if !common::ready() {
        return;
    }
    let primary = Redis::start();
    let far_primary = primary.port_at_distance(Duration::from_millis(20));
    let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &far_primary.to_string()]);
    common::eventually("the replica to be in sync", Duration::from_secs(30), || {
        replica
            .cmd::<String>(&["INFO", "replication"])
            .contains("master_link_status:up")
    });
    let m = Mount::new(&primary, "skx", &[]);
    let _: () = primary.cmd(&["CONFIG", "RESETSTAT"]);
    let (threads, each) = (8, 25);
    let writers: Vec<_> = (0..threads)
        .map(|t| {
            let path = m.join(format!("journal{t}"));
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut f = fs::File::create(path)?;
                for i in 0..each {
                    writeln!(f, "record {i:08}")?;
                    f.sync_data()?;
                }
                Ok(())
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap().expect("every fsync succeeded");
    }
    let stats: String = primary.cmd(&["INFO", "commandstats"]);
    let waits: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_wait:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .expect("WAIT counted");
    let fsyncs = threads * each;
    eprintln!("{waits} WAITs for {fsyncs} fsyncs of {threads} threads");
    assert!(
        waits * 2 <= fsyncs,
        "{waits} WAITs for {fsyncs} fsyncs of {threads} threads"
    );
    for t in 0..threads {
        assert_journal(&m.join(format!("journal{t}")), each);
    }
}

/// Writes `data` into the existing empty file `path` (no truncation: a change of attributes
/// lost in a failover fails the close, see
/// `an_fsync_or_fsyncdir_that_a_failover_took_the_files_from_fails`)
/// and closes it, with the close's own error (which `fs::write` drops).
fn write_and_close(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    let mut file = fs::OpenOptions::new().write(true).open(path)?;
    file.write_all(data)?;
    // SAFETY: closing the descriptor this function owns, once.
    match unsafe { libc::close(file.into_raw_fd()) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}
