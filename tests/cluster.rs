//! Redis Cluster: one filesystem spread over every primary of a cluster, metadata in one slot.

mod common;

use std::fs;

use common::{Cluster, Mount};

/// A mount given one node's URL finds the whole cluster: files written there are read back
/// whole after a remount through another node, their blocks lie on every primary, the
/// metadata on one, another mount sees the changes, and fsck finds the filesystem clean.
#[test]
fn a_filesystem_spreads_its_blocks_over_every_primary_of_a_cluster() {
    if !common::ready() {
        return;
    }
    let cluster = Cluster::start(3, 0);
    let m = Mount::at_url(&cluster.url(), "skx", &[]);
    let other = Mount::at_url(&cluster.nodes[1].url(), "skx", &[]);
    fs::create_dir(m.join("d")).unwrap();
    let mut written = Vec::new();
    for i in 0..8u64 {
        let data = common::random_bytes(1_500_000 + i as usize * 1000, i);
        fs::write(m.join(format!("d/f{i}")), &data).unwrap();
        written.push(data);
    }
    fs::write(m.join("small"), b"a small file").unwrap();
    // The other mount sees the new files and their bytes.
    assert_eq!(fs::read(other.join("small")).unwrap(), b"a small file");
    assert_eq!(fs::read(other.join("d/f3")).unwrap(), written[3]);
    fs::write(other.join("small"), b"changed elsewhere").unwrap();
    common::eventually(
        "the change seen by the first mount",
        std::time::Duration::from_secs(5),
        || fs::read(m.join("small")).is_ok_and(|d| d == b"changed elsewhere"),
    );
    m.unmount();
    other.unmount();

    for node in cluster.primaries() {
        let keys = node.keys("skx");
        assert!(
            keys.iter().any(|k| k.starts_with("skx:b:")),
            "blocks on the primary at {}",
            node.port()
        );
    }
    let with_metadata = (cluster.primaries().iter())
        .filter(|n| n.keys("skx").iter().any(|k| k.starts_with("{skx}:")))
        .count();
    assert_eq!(with_metadata, 1, "the metadata lies on one primary");

    let again = Mount::at_url(&cluster.seeds_url(), "skx", &[]);
    for (i, data) in written.iter().enumerate() {
        assert_eq!(
            &fs::read(again.join(format!("d/f{i}"))).unwrap(),
            data,
            "f{i}"
        );
    }
    again.unmount();
    common::assert_clean_at(&cluster.url(), "skx");
}

/// Runs fsck on the cluster at `url`: its exit code and what it printed.
fn fsck(url: &str, prefix: &str, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["--redis", url, "--prefix", prefix];
    args.extend(extra);
    let out = common::tool("fsck", &args);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// A filesystem larger than any one node may hold (`maxmemory` 48 MiB each, 100 MB of
/// incompressible data): written whole, read back whole after a remount; `df` counts every
/// primary's memory.
#[test]
fn a_filesystem_larger_than_any_node_fits_in_the_cluster() {
    if !common::ready() {
        return;
    }
    let cluster = Cluster::start_with(3, 0, &["--maxmemory", "48mb"]);
    let m = Mount::at_url(&cluster.url(), "skx", &[]);
    let total = statvfs_bytes(&m.join(""));
    assert!(total > 120 << 20, "df counts every primary: {total} bytes");
    for i in 0..10u64 {
        fs::write(m.join(format!("f{i}")), common::random_bytes(10_000_000, i)).unwrap();
    }
    m.unmount();
    for node in cluster.primaries() {
        let used: u64 = node.used_memory();
        assert!(used < 48 << 20, "{} uses {used} bytes", node.port());
    }
    let again = Mount::at_url(&cluster.url(), "skx", &[]);
    for i in 0..10u64 {
        let read = fs::read(again.join(format!("f{i}"))).unwrap();
        assert!(read == common::random_bytes(10_000_000, i), "f{i} differs");
    }
    again.unmount();
    common::assert_clean_at(&cluster.url(), "skx");
}

/// The size of the filesystem at `path`, as `df` shows it.
fn statvfs_bytes(path: &std::path::Path) -> u64 {
    let c = common::cpath(path);
    // SAFETY: a valid C string and a zeroed struct for the kernel to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0, "statvfs");
    st.f_blocks * st.f_frsize
}

/// The migration path and the tools on a cluster: a dump of a filesystem on one server is
/// restored into a cluster, snapshotted there (keys copied across slots), listed, checked
/// (a block no map names, on whichever node it lies, is found and removed), mounted from both
/// prefixes with every file as it was, and dumped back out to a single server.
#[test]
fn a_standalone_dump_restores_into_a_cluster_where_every_tool_works() {
    if !common::ready() {
        return;
    }
    let server = common::Redis::start();
    let m = Mount::new(&server, "skx", &[]);
    fs::create_dir_all(m.join("docs/deep")).unwrap();
    for i in 0..20u64 {
        let data = common::random_bytes(i as usize * 37_000, i);
        fs::write(m.join(format!("docs/deep/f{i}")), data).unwrap();
    }
    fs::write(m.join("docs/note"), b"hello").unwrap();
    std::os::unix::fs::symlink("docs/note", m.join("link")).unwrap();
    fs::hard_link(m.join("docs/note"), m.join("hard")).unwrap();
    common::set_xattr(&m.join("docs/note"), "user.colour", b"blue");
    let expected = common::tree_listing(&m.join(""));
    m.unmount();
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("fs.rfs.gz");
    let dump = dump.to_str().unwrap();
    common::tool_ok("dump", &["--redis", &server.url(), "--prefix", "skx", dump]);

    let cluster = Cluster::start(3, 0);
    let url = cluster.url();
    common::tool_ok("restore", &["--redis", &url, "--prefix", "skx", dump]);
    common::assert_clean_at(&url, "skx");
    common::tool_ok(
        "snapshot",
        &["--redis", &url, "--from", "skx", "--to", "copy"],
    );
    common::assert_clean_at(&url, "copy");
    let listed = common::tool_ok("admin", &["list", "--redis", &url]);
    assert!(
        listed.contains("skx") && listed.contains("copy"),
        "{listed}"
    );

    cluster.cmd::<()>(&["SET", "copy:b:987654321", "\x00leak"]);
    let (code, text) = fsck(&url, "copy", &[]);
    assert_eq!(code, Some(4), "the stray block not found:\n{text}");
    assert!(text.contains("leaked_blocks"), "{text}");
    let (code, text) = fsck(&url, "copy", &["--repair"]);
    assert_eq!(code, Some(1), "not repaired:\n{text}");
    common::assert_clean_at(&url, "copy");

    for prefix in ["skx", "copy"] {
        let mounted = Mount::at_url(&url, prefix, &[]);
        assert_eq!(
            common::tree_listing(&mounted.join("")),
            expected,
            "{prefix}"
        );
        mounted.unmount();
    }

    let back = dir.path().join("back.rfs");
    let back = back.to_str().unwrap();
    common::tool_ok("dump", &["--redis", &url, "--prefix", "copy", back]);
    let other = common::Redis::start();
    common::tool_ok(
        "restore",
        &["--redis", &other.url(), "--prefix", "back", back],
    );
    let mounted = Mount::new(&other, "back", &[]);
    assert_eq!(common::tree_listing(&mounted.join("")), expected);
    mounted.unmount();
}

/// The primary that holds `prefix`'s metadata.
fn metadata_primary<'a>(cluster: &'a Cluster, prefix: &str) -> &'a common::Redis {
    let braced = format!("{{{prefix}}}:");
    (cluster.primaries().into_iter())
        .find(|n| n.keys(prefix).iter().any(|k| k.starts_with(&braced)))
        .expect("a primary with the metadata")
}

/// Journal record `i`: its number on a line of its own.
fn record(i: usize) -> String {
    format!("{i:08}\n")
}

/// `kill -9` of the primary that holds the metadata (and blocks), the one node the mount was
/// given, while a writer appends records with an `fsync` after each and another writes large
/// chunks: the cluster promotes its replica, the writers pause and go on without an error, and
/// every fsync'd record and chunk is there, read through a new mount; fsck finds the
/// filesystem clean.
#[test]
fn fsynced_writes_survive_the_loss_of_the_metadata_primary() {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;
    if !common::ready() {
        return;
    }
    let cluster = Cluster::start(3, 1);
    Mount::at_url(&cluster.url(), "skx", &[]).unmount();
    let victim = metadata_primary(&cluster, "skx");
    // Given the victim's address alone: the mount must learn the others from the cluster.
    let m = Mount::at_url(&victim.url(), "skx", &["--io-timeout", "30"]);
    let mut journal = fs::File::create(m.join("journal")).unwrap();
    let mut data = fs::File::create(m.join("data")).unwrap();
    let stop = AtomicBool::new(false);
    let (appended, chunks) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        let appender = s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let i = appended.load(Ordering::Relaxed);
                journal.write_all(record(i).as_bytes()).expect("append");
                journal.sync_all().expect("fsync across the failover");
                appended.fetch_add(1, Ordering::Relaxed);
            }
        });
        let writer = s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let i = chunks.load(Ordering::Relaxed);
                data.write_all(&common::random_bytes(CHUNK, i as u64))
                    .expect("write");
                data.sync_all()
                    .expect("fsync of a chunk across the failover");
                chunks.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Killed once both files are fsync'd: before, their creates may be on the victim
        // alone, and the failover rightly takes them (an fsync then fails with EIO).
        common::eventually(
            "fsyncs before the failover",
            Duration::from_secs(30),
            || {
                appended.load(Ordering::Relaxed) >= 5 && chunks.load(Ordering::Relaxed) >= 2
                    || appender.is_finished()
                    || writer.is_finished()
            },
        );
        victim.kill_and_hold();
        common::eventually("a replica promoted", Duration::from_secs(30), || {
            cluster
                .nodes
                .iter()
                .filter(|n| n.port() != victim.port())
                .all(|n| {
                    n.cmd::<String>(&["CLUSTER", "INFO"])
                        .contains("cluster_state:ok")
                })
        });
        let before = appended.load(Ordering::Relaxed);
        common::eventually(
            "appends after the failover",
            Duration::from_secs(30),
            || appended.load(Ordering::Relaxed) > before + 20 || appender.is_finished(),
        );
        stop.store(true, Ordering::Relaxed);
        appender.join().unwrap();
        writer.join().unwrap();
    });
    drop((journal, data));
    let (appended, chunks) = (appended.into_inner(), chunks.into_inner());
    eprintln!("{appended} records and {chunks} chunks fsync'd across the failover");
    m.unmount();
    let again = Mount::at_url(&cluster.seeds_url(), "skx", &[]);
    let text = fs::read_to_string(again.join("journal")).unwrap();
    let expected: String = (0..appended).map(record).collect();
    assert!(
        text.starts_with(&expected),
        "{appended} fsync'd records, read back {} bytes",
        text.len()
    );
    let read = fs::read(again.join("data")).unwrap();
    assert!(
        read.len() >= chunks * CHUNK,
        "{} of {} bytes",
        read.len(),
        chunks * CHUNK
    );
    for (i, chunk) in read.chunks(CHUNK).take(chunks).enumerate() {
        assert!(
            chunk == common::random_bytes(CHUNK, i as u64),
            "chunk {i} differs"
        );
    }
    again.unmount();
    victim.release();
    common::assert_clean_at(&cluster.seeds_url(), "skx");
}

/// Bytes per write of the chunk writer (not a multiple of the block size).
const CHUNK: usize = 300_000;

/// A write the metadata's primary answered (the mount stored it by itself, unasked) but never
/// passed on, its replica stopped, is lost with that primary; the fsync after the failover
/// stores it again on the promoted replica and succeeds, and the blocks the lost commit had
/// stored on the other primaries leave Redis: fsck finds nothing leaked.
#[test]
fn blocks_of_a_commit_lost_with_its_primary_do_not_leak() {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    use std::time::Duration;
    if !common::ready() {
        return;
    }
    let cluster = Cluster::start(3, 1);
    let m = Mount::at_url(&cluster.seeds_url(), "skx", &[]);
    let before = common::random_bytes(2_000_000, 1);
    fs::write(m.join("f"), &before).unwrap();
    let victim = metadata_primary(&cluster, "skx");
    let map = format!("{{skx}}:m:{}", fs::metadata(m.join("f")).unwrap().ino());
    let first_block = |node: &common::Redis| node.cmd::<String>(&["HGET", &map, "0"]);
    let first_before = first_block(victim);
    let replica = replica_of(&cluster, victim);
    let stopped = replica.pause();
    // What the primary sends its stopped replica from now on waits behind more than the
    // kernel's socket buffers hold, in the primary's own memory, and dies with it.
    let ballast = vec![b'x'; 64 << 20];
    let () = redis::cmd("SET")
        .arg("ballast{skx}")
        .arg(&ballast)
        .query(&mut victim.conn())
        .unwrap();
    // Stored by the mount's own write-back and answered by the primary alone.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(m.join("f"))
        .unwrap();
    let after = common::random_bytes(1_000_000, 2);
    f.write_all(&after).unwrap();
    common::eventually("the write stored", Duration::from_secs(20), || {
        first_block(victim) != first_before
    });
    victim.kill_and_hold();
    replica.resume(stopped);
    let _: String = replica.cmd(&["CLUSTER", "FAILOVER", "TAKEOVER"]);
    common::eventually("the replica promoted", Duration::from_secs(30), || {
        (cluster.nodes.iter())
            .filter(|n| n.port() != victim.port())
            .all(|n| {
                n.cmd::<String>(&["CLUSTER", "INFO"])
                    .contains("cluster_state:ok")
            })
    });
    f.sync_all()
        .expect("fsync after the failover stores the write again");
    drop(f);
    let mut expected = after.clone();
    expected.extend_from_slice(&before[after.len()..]);
    assert!(
        fs::read(m.join("f")).unwrap() == expected,
        "f holds the write"
    );
    m.unmount();
    common::assert_clean_at(&cluster.seeds_url(), "skx");
}

/// The node that replicates `primary`.
fn replica_of<'a>(cluster: &'a Cluster, primary: &common::Redis) -> &'a common::Redis {
    let of_primary = format!("master_port:{}\r\n", primary.port());
    (cluster.nodes.iter())
        .find(|n| {
            n.cmd::<String>(&["INFO", "replication"])
                .contains(&of_primary)
        })
        .expect("a replica of the primary")
}

/// Resharding under a workload: every slot of a primary that holds blocks but no metadata
/// moves to another primary with `redis-cli --cluster reshard` while a mount creates, writes,
/// fsyncs and reads back files; nothing fails, every file holds what was written, and fsck
/// finds the filesystem clean. (No script touches a block, so their slots move freely; for
/// the metadata's slot see `moving_the_metadata_slot_under_a_workload_loses_nothing`.)
#[test]
fn resharding_the_slots_of_blocks_under_a_workload_loses_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    if !common::ready() {
        return;
    }
    let cluster = Cluster::start(3, 0);
    let m = Mount::at_url(&cluster.url(), "skx", &[]);
    fs::create_dir(m.join("work")).unwrap();
    let holder = metadata_primary(&cluster, "skx").port();
    let others: Vec<&common::Redis> = (cluster.primaries().into_iter())
        .filter(|n| n.port() != holder)
        .collect();
    let (source, target) = (others[0], others[1]);
    let slots_of_source = 16384 / 3;
    let stop = AtomicBool::new(false);
    let made = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            let mut made = 0u64;
            while !stop.load(Ordering::Relaxed) || made < 50 {
                let path = m.join(format!("work/f{made}"));
                let data = common::random_bytes(20_000 + (made as usize % 7) * 70_000, made);
                let mut f = fs::File::create(&path).expect("create during resharding");
                std::io::Write::write_all(&mut f, &data).expect("write during resharding");
                f.sync_all().expect("fsync during resharding");
                drop(f);
                let back = made / 2;
                let again = fs::read(m.join(format!("work/f{back}"))).expect("read");
                let want = common::random_bytes(20_000 + (back as usize % 7) * 70_000, back);
                assert!(
                    again == want,
                    "f{back} read back different during resharding"
                );
                made += 1;
            }
            made
        });
        std::thread::sleep(Duration::from_millis(300));
        reshard(source, target, slots_of_source);
        stop.store(true, Ordering::Relaxed);
        worker.join().unwrap()
    });
    assert!(
        source.keys("skx").is_empty(),
        "the source primary still holds keys of the filesystem"
    );
    eprintln!("{made} files made while {slots_of_source} slots moved");
    m.unmount();
    // (The source, left without slots, becomes a replica of the target and loads its data a
    // while: every node is a seed.)
    let again = Mount::at_url(&cluster.seeds_url(), "skx", &[]);
    for i in 0..made {
        let read = fs::read(again.join(format!("work/f{i}"))).unwrap();
        let want = common::random_bytes(20_000 + (i as usize % 7) * 70_000, i);
        assert!(read == want, "f{i} differs after resharding");
    }
    again.unmount();
    common::assert_clean_at(&cluster.seeds_url(), "skx");
}

/// Moves `slots` slots from `source` to `target` with `redis-cli --cluster reshard`.
fn reshard(source: &common::Redis, target: &common::Redis, slots: usize) {
    let id = |n: &common::Redis| n.cmd::<String>(&["CLUSTER", "MYID"]);
    let out = std::process::Command::new("redis-cli")
        .args([
            "--cluster",
            "reshard",
            &format!("127.0.0.1:{}", source.port()),
        ])
        .args(["--cluster-from", &id(source), "--cluster-to", &id(target)])
        .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
        .output()
        .expect("run redis-cli --cluster reshard");
    assert!(
        out.status.success(),
        "reshard: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// fsck while the slots of blocks move between primaries: a block that moves from a node the
/// walk has not reached to one it has passed is still found (asked for by its name), so every
/// check finds the filesystem clean.
#[test]
fn fsck_during_a_resharding_finds_every_block() {
    use std::sync::atomic::{AtomicBool, Ordering};
    if !common::ready() {
        return;
    }
    let cluster = Cluster::start(3, 0);
    let m = Mount::at_url(&cluster.url(), "skx", &[]);
    for i in 0..40u64 {
        fs::write(m.join(format!("f{i}")), common::random_bytes(300_000, i)).unwrap();
    }
    m.unmount();
    let holder = metadata_primary(&cluster, "skx").port();
    let others: Vec<&common::Redis> = (cluster.primaries().into_iter())
        .filter(|n| n.port() != holder)
        .collect();
    let moved = AtomicBool::new(false);
    let checks = std::thread::scope(|s| {
        let mover = s.spawn(|| {
            // (Half: a primary left with no slot becomes a replica of the one that took them.)
            reshard(others[0], others[1], 16384 / 6);
            moved.store(true, Ordering::Relaxed);
        });
        let mut checks = 0;
        while !moved.load(Ordering::Relaxed) {
            common::assert_clean_at(&cluster.seeds_url(), "skx");
            checks += 1;
        }
        mover.join().unwrap();
        checks
    });
    eprintln!("{checks} checks while slots moved");
    assert!(checks > 0);
}

/// Caught: a tool given a node that was loading its data (restarted, or turned into a replica
/// by a resharding) failed at once, "cannot connect: LOADING". It waits for it, within its
/// I/O timeout, as for any Redis briefly away.
#[test]
fn a_tool_given_a_node_loading_its_data_waits_for_it() {
    if !common::ready() {
        return;
    }
    let cluster = Cluster::start_with(3, 0, &["--enable-debug-command", "yes"]);
    let m = Mount::at_url(&cluster.url(), "skx", &[]);
    for i in 0..60u64 {
        fs::write(m.join(format!("f{i}")), common::random_bytes(100_000, i)).unwrap();
    }
    m.unmount();
    let node = &cluster.nodes[0];
    // Loading its keys again takes the node about two seconds.
    let keys = node.cmd::<u64>(&["DBSIZE"]).max(1);
    let per_key_us = (2_000_000 / keys).to_string();
    let _: () = node.cmd(&["CONFIG", "SET", "key-load-delay", &per_key_us]);
    let _: () = node.cmd(&[
        "CONFIG",
        "SET",
        "loading-process-events-interval-bytes",
        "1024",
    ]);
    let mut conn = node.conn();
    let reload = std::thread::spawn(move || {
        redis::cmd("DEBUG")
            .arg("RELOAD")
            .query::<()>(&mut conn)
            .expect("DEBUG RELOAD")
    });
    common::eventually(
        "the node to be loading",
        std::time::Duration::from_secs(10),
        || {
            let ping: redis::RedisResult<String> = redis::cmd("PING").query(&mut node.conn());
            ping.is_err_and(|e| {
                e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
            })
        },
    );
    common::assert_clean_at(&node.url(), "skx");
    reload.join().unwrap();
}

/// `fsync` returns only once a replica of every primary its file's blocks went to has them:
/// blocks go to each primary over connections of their own, and the wait for replicas is
/// sent on those (a `WAIT` on the general connection answers at once for a primary it wrote
/// nothing to lately).
#[test]
fn fsync_waits_for_the_replica_of_every_primary_its_blocks_went_to() {
    use std::io::Write;
    use std::time::Duration;
    if !common::ready() {
        return;
    }
    let cluster = Cluster::start(3, 1);
    let m = Mount::at_url(&cluster.url(), "skx", &[]);
    fs::write(m.join("first"), b"made").unwrap();
    let holder = metadata_primary(&cluster, "skx").port();
    let other = (cluster.primaries().into_iter())
        .find(|n| n.port() != holder)
        .expect("a primary without the metadata");
    let replica = replica_of(&cluster, other);
    let stopped = replica.pause();
    let path = m.join("data");
    let fsynced = std::thread::spawn(move || -> std::io::Result<()> {
        let mut f = fs::File::create(path)?;
        // 32 blocks: some lie on every primary.
        f.write_all(&common::random_bytes(2 << 20, 7))?;
        f.sync_all()
    });
    std::thread::sleep(Duration::from_secs(3));
    let waited = !fsynced.is_finished();
    replica.resume(stopped);
    let outcome = fsynced.join().unwrap();
    assert!(
        waited,
        "fsync returned while a replica lacked blocks of the file"
    );
    outcome.expect("fsync once the replica answers");
    assert_eq!(
        fs::read(m.join("data")).unwrap(),
        common::random_bytes(2 << 20, 7)
    );
    m.unmount();
    common::assert_clean_at(&cluster.seeds_url(), "skx");
}

/// A primary that refuses writes for a while (here `NOREPLICAS`) only delays the deletion of
/// the blocks a removal freed there: the queue lets go of them once they are gone, never
/// before, and fsck finds the filesystem clean.
#[test]
fn blocks_a_node_refused_to_delete_go_once_it_takes_writes() {
    use std::time::Duration;
    if !common::ready() {
        return;
    }
    let cluster = Cluster::start(3, 0);
    let m = Mount::at_url(&cluster.url(), "skx", &[]);
    // 32 blocks: some lie on every primary.
    fs::write(m.join("doomed"), common::random_bytes(2 << 20, 3)).unwrap();
    let holder = metadata_primary(&cluster, "skx").port();
    let refusing = (cluster.primaries().into_iter())
        .find(|n| n.port() != holder)
        .expect("a primary without the metadata");
    let blocks = || {
        (cluster.nodes.iter())
            .flat_map(|n| n.keys("skx"))
            .filter(|k| k.starts_with("skx:b:"))
            .count()
    };
    assert!(blocks() >= 32);
    // A primary without a replica refuses writes (NOREPLICAS), deletions included.
    let _: () = refusing.cmd(&["CONFIG", "SET", "min-replicas-to-write", "1"]);
    fs::remove_file(m.join("doomed")).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let _: () = refusing.cmd(&["CONFIG", "SET", "min-replicas-to-write", "0"]);
    common::eventually(
        "every block of the removed file deleted",
        Duration::from_secs(20),
        || blocks() == 0,
    );
    m.unmount();
    common::assert_clean_at(&cluster.seeds_url(), "skx");
}

/// Blocks removals free while the primary holding some of them fails over go once its replica
/// takes over: the deletion of a batch spread over every primary fails while one of them is
/// gone, or while the mount's view of the cluster names a primary it holds no connection to
/// (never "succeeds" with that part left out, letting the queue drop them), and is done again
/// on the promoted replica. Files are removed one by one from the kill until after the
/// promotion, with an fsync of another file now and then; no block is left behind and fsck finds the
/// filesystem clean.
#[test]
fn blocks_freed_while_their_primary_fails_over_go_from_its_successor() {
    use std::time::Duration;
    if !common::ready() {
        return;
    }
    const FILES: usize = 80;
    let cluster = Cluster::start(3, 1);
    let m = Mount::at_url(&cluster.seeds_url(), "skx", &["--io-timeout", "30"]);
    // Blocks on the primaries, but for a dead one.
    let blocks = |dead: u16| {
        (cluster.nodes.iter())
            .filter(|n| n.port() != dead && !n.is_replica())
            .flat_map(|n| n.keys("skx"))
            .filter(|k| k.starts_with("skx:b:"))
            .count()
    };
    // Four blocks each, on any primary; fsync'd, so that the replicas have them.
    let write = |name: &str, seed: u64| {
        let f = fs::File::create(m.join(name)).unwrap();
        std::io::Write::write_all(&mut &f, &common::random_bytes(256 << 10, seed)).unwrap();
        f.sync_all().unwrap();
    };
    for i in 0..FILES {
        write(&format!("doomed-{i}"), i as u64);
    }
    assert!(blocks(0) >= 4 * FILES);
    let holder = metadata_primary(&cluster, "skx").port();
    let victim = (cluster.primaries().into_iter())
        .find(|n| n.port() != holder)
        .expect("a primary without the metadata");
    victim.kill_and_hold();
    // The metadata's primary takes each removal; the victim's share of each deletion has
    // nowhere to go until its replica is promoted.
    for i in 0..FILES {
        fs::remove_file(m.join(format!("doomed-{i}"))).unwrap();
        if i % 10 == 0 {
            write("kept", i as u64);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    fs::remove_file(m.join("kept")).unwrap();
    common::eventually("a replica promoted", Duration::from_secs(30), || {
        (cluster.nodes.iter())
            .filter(|n| n.port() != victim.port())
            .all(|n| {
                n.cmd::<String>(&["CLUSTER", "INFO"])
                    .contains("cluster_state:ok")
            })
    });
    common::eventually(
        "every block of the removed files deleted",
        Duration::from_secs(30),
        || blocks(victim.port()) == 0,
    );
    m.unmount();
    common::assert_clean_at(&cluster.seeds_url(), "skx");
    victim.release();
}

/// A deletion over keys of several primaries, one of them dead, fails (and is tried again by
/// its caller) rather than "succeeding" with the dead one's part left out: the cluster client
/// splits such a command by node itself, and silently drops the part of a node its map still
/// names but it holds no connection to (after a refresh of its map while that node was down),
/// which let the garbage queue forget blocks that were never deleted.
#[test]
fn a_deletion_spanning_a_dead_primary_fails_rather_than_leave_its_keys() {
    use std::time::Duration;
    if !common::redis_ready() {
        return;
    }
    // Without full coverage the other primaries go on serving their slots; the victim comes
    // back with its keys.
    let cluster = Cluster::start_with(
        3,
        0,
        &[
            "--cluster-require-full-coverage",
            "no",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let target = redisfs::options::ConnectionArgs {
        redis: Some(cluster.url()),
        ..Default::default()
    }
    .target()
    .unwrap();
    let store = (runtime.block_on(redisfs::tool::connect(&target, "t", Duration::from_secs(3))))
        .expect("connects");
    let keys: Vec<String> = (0..30).map(|i| format!("t:b:{i}")).collect();
    let set = |key: &String| runtime.block_on(store.cmd::<()>(redis::cmd("SET").arg(key).arg(1)));
    keys.iter().for_each(|k| set(k).unwrap());
    let slot_of = |key: &str| cluster.nodes[0].cmd::<i64>(&["CLUSTER", "KEYSLOT", key]);
    let owner = |slot: i64| {
        (cluster.primaries().into_iter())
            .find(|n| {
                n.cmd::<String>(&["CLUSTER", "NODES"]).lines().any(|line| {
                    line.contains("myself")
                        && line
                            .split(' ')
                            .skip(8)
                            .any(|range| match range.split_once('-') {
                                Some((a, b)) => {
                                    (a.parse().unwrap()..=b.parse().unwrap()).contains(&slot)
                                }
                                None => range.parse() == Ok(slot),
                            })
                })
            })
            .expect("the slot's primary")
    };
    let victim = owner(slot_of(&keys[0]));
    let (mover, taker) = {
        let others: Vec<_> = (cluster.primaries().into_iter())
            .filter(|n| n.port() != victim.port())
            .collect();
        (others[0], others[1])
    };
    let probe = (0..)
        .map(|i| format!("probe-{i}"))
        .find(|k| owner(slot_of(k)).port() == mover.port())
        .unwrap();
    victim.kill_and_hold();
    common::eventually("the victim marked failed", Duration::from_secs(30), || {
        mover
            .cmd::<String>(&["CLUSTER", "NODES"])
            .contains("master,fail ")
    });
    // An empty slot handed from one live primary to the other: asked there, the client is
    // told MOVED and reads the cluster's map again, which names the dead primary still.
    let slot = slot_of(&probe).to_string();
    let taker_id: String = taker.cmd(&["CLUSTER", "MYID"]);
    for node in [taker, mover] {
        let () = node.cmd(&["CLUSTER", "SETSLOT", &slot, "NODE", &taker_id]);
    }
    let _ = runtime.block_on(store.cmd::<Option<String>>(redis::cmd("GET").arg(&probe)));
    let mut delete = redis::cmd("DEL");
    delete.arg(&keys);
    let deleted = runtime.block_on(store.cmd::<i64>(&delete));
    assert!(
        deleted.is_err(),
        "DEL over a dead primary's keys answered {deleted:?}"
    );
    victim.release();
    assert!(
        !victim.keys("t").is_empty(),
        "the victim is back with its keys"
    );
    // As the garbage queue's deleter does, tried again until it succeeds.
    common::eventually(
        "a DEL once the primary is back",
        Duration::from_secs(30),
        || runtime.block_on(store.cmd::<i64>(&delete)).is_ok(),
    );
    let left: Vec<String> = (cluster.nodes.iter()).flat_map(|n| n.keys("t")).collect();
    assert!(left.is_empty(), "keys left: {left:?}");
}

/// A mount, or a tool, started while a primary of the cluster is dead and its replica not yet
/// promoted waits for the promotion (within `--io-timeout`) instead of failing at once: the
/// file written before reads back whole and fsck, run in the same gap, finds the filesystem
/// clean.
#[test]
fn a_mount_started_during_a_failover_waits_for_the_promoted_replica() {
    if !common::ready() {
        return;
    }
    let cluster = Cluster::start(3, 1);
    let m = Mount::at_url(&cluster.seeds_url(), "skx", &[]);
    let data = common::random_bytes(1 << 20, 5);
    let f = fs::File::create(m.join("f")).unwrap();
    std::io::Write::write_all(&mut &f, &data).unwrap();
    f.sync_all().unwrap();
    drop(f);
    m.unmount();
    let victim = metadata_primary(&cluster, "skx");
    victim.kill_and_hold();
    let (code, out) = fsck(&cluster.seeds_url(), "skx", &["--io-timeout", "30"]);
    assert_eq!(code, Some(0), "fsck during the failover:\n{out}");
    let m = Mount::at_url(&cluster.seeds_url(), "skx", &["--io-timeout", "30"]);
    assert!(fs::read(m.join("f")).unwrap() == data, "f reads back whole");
    m.unmount();
    victim.release();
    common::assert_clean_at(&cluster.seeds_url(), "skx");
}

/// The metadata's slot moved to another primary under a workload, key by key as `redis-cli
/// --cluster reshard` moves it (`SETSLOT IMPORTING`/`MIGRATING`, `MIGRATE` in small batches,
/// `SETSLOT NODE`): no script runs while the slot is half moved (it would see the keys already
/// gone as missing, and write beside them), the workload pauses and goes on without an error,
/// every file holds what was written, and fsck finds the filesystem clean.
#[test]
fn moving_the_metadata_slot_under_a_workload_loses_nothing() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;
    if !common::ready() {
        return;
    }
    let cluster = Cluster::start(3, 0);
    let m = Mount::at_url(&cluster.seeds_url(), "skx", &["--io-timeout", "60"]);
    let source = metadata_primary(&cluster, "skx");
    let target = (cluster.primaries().into_iter())
        .find(|n| n.port() != source.port())
        .expect("another primary");
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let content = |i: usize| format!("file {i}\n").repeat(i % 7 + 1);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let (m, stop, done) = (&m, &stop, &done);
                s.spawn(move || {
                    let dir = m.join(format!("w{w}"));
                    fs::create_dir(&dir).unwrap();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let f = dir.join(format!("new-{i}"));
                        fs::write(&f, content(i)).expect("create and write");
                        fs::File::open(&f).unwrap().sync_all().expect("fsync");
                        fs::rename(&f, dir.join(format!("f-{i}"))).expect("rename");
                        if i % 5 == 4 {
                            fs::remove_file(dir.join(format!("f-{}", i - 2))).expect("unlink");
                        }
                        fs::read_dir(&dir).unwrap().count();
                        i += 1;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    i
                })
            })
            .collect();
        common::eventually("work before the move", Duration::from_secs(30), || {
            done.load(Ordering::Relaxed) >= 40
        });
        let slot = source
            .cmd::<i64>(&["CLUSTER", "KEYSLOT", "{skx}"])
            .to_string();
        let (source_id, target_id): (String, String) = (
            source.cmd(&["CLUSTER", "MYID"]),
            target.cmd(&["CLUSTER", "MYID"]),
        );
        let () = target.cmd(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &source_id]);
        let () = source.cmd(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &target_id]);
        let port = target.port().to_string();
        loop {
            let keys: Vec<String> = source.cmd(&["CLUSTER", "GETKEYSINSLOT", &slot, "5"]);
            if keys.is_empty() {
                break;
            }
            let mut migrate = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            migrate.extend(keys.iter().map(String::as_str));
            let () = source.cmd(&migrate);
            std::thread::sleep(Duration::from_millis(20));
        }
        for node in cluster.primaries() {
            let () = node.cmd(&["CLUSTER", "SETSLOT", &slot, "NODE", &target_id]);
        }
        let moved = done.load(Ordering::Relaxed);
        common::eventually("work after the move", Duration::from_secs(60), || {
            done.load(Ordering::Relaxed) >= moved + 40
        });
        stop.store(true, Ordering::Relaxed);
        for (w, worker) in workers.into_iter().enumerate() {
            let made = worker
                .join()
                .expect("the workload went on without an error");
            for i in 0..made {
                let path = m.join(format!("w{w}/f-{i}"));
                let removed = i % 5 == 2 && i + 2 < made;
                match fs::read_to_string(&path) {
                    Ok(text) => assert!(!removed && text == content(i), "{}", path.display()),
                    Err(e) => assert!(removed, "{}: {e}", path.display()),
                }
            }
        }
    });
    m.unmount();
    common::assert_clean_at(&cluster.seeds_url(), "skx");
}
