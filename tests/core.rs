//! The mount's core driven directly, without FUSE: a change to a script or to `Core` can be
//! tested here where `/dev/fuse` is missing. Each test starts a private redis-server and one
//! or two cores of one filesystem, as two machines' mounts would be (`mount::Headless`: the
//! core a mount serves, following the other's changes and heartbeating), calls the
//! operations the kernel would send, and checks the filesystem with fsck after.

mod common;

use clap::Parser;
use common::{assert_clean, random_bytes, Redis};
use redisfs::attr::FileKind;
use redisfs::error::FsError;
use redisfs::fs::{Caller, NewInode};
use redisfs::mount::Headless;
use redisfs::options::MountArgs;

const ROOT: u64 = 1;
const PREFIX: &str = "core";

/// The caller of every operation: root, with the usual umask.
fn me() -> Caller {
    Caller {
        uid: 0,
        gid: 0,
        pid: std::process::id(),
        umask: 0o022,
    }
}

/// A core of the filesystem under [`PREFIX`] on `redis`.
async fn core(redis: &Redis) -> Headless {
    core_at(&redis.url()).await
}

/// A core of the filesystem under [`PREFIX`] on the Redis at `url`.
async fn core_at(url: &str) -> Headless {
    let args = ["redisfs", "/core-test", "--redis", url, "--prefix", PREFIX];
    Headless::start(&MountArgs::parse_from(args))
        .await
        .expect("core starts")
}

/// Runs `test` on a runtime shaped like a mount's (one worker).
fn on_runtime(test: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(test);
}

#[test]
fn data_written_through_one_core_reads_back_through_another() {
    if !common::redis_ready() {
        return;
    }
    let redis = Redis::start();
    on_runtime(async {
        let (a, b) = (core(&redis).await, core(&redis).await);
        let (attr, fh) = a.core.create(ROOT, b"f", 0o644, me(), true).await.unwrap();
        // Several blocks, written in pieces that straddle them, one piece written twice.
        let data = random_bytes(300_000, 7);
        for (at, piece) in [(0, 100_000), (100_000, 150_000), (250_000, 50_000)] {
            let bytes = &data[at..at + piece];
            a.core
                .write(fh, at as u64, bytes, false, me())
                .await
                .unwrap();
        }
        a.core
            .write(fh, 60_000, &data[60_000..70_000], false, me())
            .await
            .unwrap();
        a.core.flush(fh).await.unwrap();

        let found = b.core.lookup(ROOT, b"f").await.unwrap();
        assert_eq!((found.ino, found.size), (attr.ino, 300_000));
        let (fh_b, _) = b.core.open(found.ino, false).await.unwrap();
        assert_eq!(b.core.read(fh_b, 0, 400_000).await.unwrap(), data);
        assert_eq!(
            b.core.read(fh_b, 299_990, 100).await.unwrap(),
            &data[299_990..]
        );

        // A truncate on one core is the other's size and bytes at its next open.
        let cut = redisfs::meta::AttrChange {
            size: Some(70_000),
            ..Default::default()
        };
        b.core.setattr(found.ino, cut).await.unwrap();
        b.core.release(fh_b).await.unwrap();
        a.core.release(fh).await.unwrap();
        let (fh, _) = a.core.open(attr.ino, false).await.unwrap();
        assert_eq!(a.core.getattr(attr.ino).await.unwrap().size, 70_000);
        assert_eq!(a.core.read(fh, 0, 100_000).await.unwrap(), &data[..70_000]);
        a.core.release(fh).await.unwrap();
        a.stop().await;
        b.stop().await;
    });
    assert_clean(&redis, PREFIX);
}

#[test]
fn a_create_deferred_in_a_leased_directory_reaches_another_core_when_it_asks() {
    if !common::redis_ready() {
        return;
    }
    let redis = Redis::start();
    on_runtime(async {
        let (a, b) = (core(&redis).await, core(&redis).await);
        let dir = NewInode::new(FileKind::Dir, 0o755, 0, me());
        let (d, _) = a.core.make(ROOT, b"d", dir, false).await.unwrap();
        // A directory this core made is leased to it: the create is answered from memory.
        let (made, fh) = a
            .core
            .create_deferred(d.ino, b"x", 0o644, me())
            .expect("answered without Redis")
            .unwrap();
        a.core.write(fh, 0, b"hello", false, me()).await.unwrap();
        a.core.release(fh).await.unwrap();

        // The other core's look-up recalls the directory; the lease's holder hands it back
        // with its log sent, so the name is there, with its data.
        let found = b.core.lookup(d.ino, b"x").await.unwrap();
        assert_eq!((found.ino, found.size), (made.ino, 5));
        let (fh, _) = b.core.open(found.ino, false).await.unwrap();
        assert_eq!(b.core.read(fh, 0, 100).await.unwrap(), b"hello");
        b.core.release(fh).await.unwrap();
        a.stop().await;
        b.stop().await;
    });
    assert_clean(&redis, PREFIX);
}

#[test]
fn renames_and_removals_through_the_core_leave_nothing_behind() {
    if !common::redis_ready() {
        return;
    }
    let redis = Redis::start();
    on_runtime(async {
        let (a, b) = (core(&redis).await, core(&redis).await);
        let (kept, fh) = a
            .core
            .create(ROOT, b"kept", 0o644, me(), true)
            .await
            .unwrap();
        a.core
            .write(fh, 0, &random_bytes(200_000, 1), false, me())
            .await
            .unwrap();
        a.core.release(fh).await.unwrap();
        a.core
            .rename(ROOT, b"kept", ROOT, b"moved", 0, me())
            .await
            .unwrap();
        assert_eq!(b.core.lookup(ROOT, b"kept").await, Err(FsError::NotFound));
        assert_eq!(b.core.lookup(ROOT, b"moved").await.unwrap().ino, kept.ino);

        // Removed on one core while open on the other: the data stays until the last close.
        let (fh, _) = b.core.open(kept.ino, false).await.unwrap();
        a.core.remove(ROOT, b"moved", false).await.unwrap();
        assert_eq!(b.core.read(fh, 0, 10).await.unwrap().len(), 10);
        b.core.release(fh).await.unwrap();
        a.stop().await;
        b.stop().await;
    });
    assert_clean(&redis, PREFIX);
    let left: Vec<String> = redis
        .keys(PREFIX)
        .into_iter()
        .filter(|k| k.starts_with(&format!("{PREFIX}:b:")))
        .collect();
    assert!(left.is_empty(), "blocks of a removed file stayed: {left:?}");
}

/// A synchronous operation sends the deferred log first (what this mount answered reaches
/// Redis in order), and a recalled directory is handed back after the log: neither may wait
/// for changes appended after it started, which a busy mount appends as fast as it sends.
#[test]
fn a_flood_of_deferred_creates_holds_up_neither_a_create_elsewhere_nor_a_recall() {
    if !common::redis_ready() {
        return;
    }
    let redis = Redis::start();
    on_runtime(async {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        use std::time::Duration;

        // Redis a network away: a batch's round trip is longer than the flooders take to
        // append a batch's worth of changes.
        let a = core_at(&redis.url_at_distance(Duration::from_millis(20))).await;
        let b = core(&redis).await;
        let dir = NewInode::new(FileKind::Dir, 0o755, 0, me());
        let (flooded, _) = a.core.make(ROOT, b"flooded", dir, false).await.unwrap();
        let (quiet, _) = a.core.make(ROOT, b"quiet", dir, false).await.unwrap();
        let (x, fh) = a
            .core
            .create_deferred(quiet.ino, b"x", 0o644, me())
            .expect("answered without Redis")
            .unwrap();
        a.core.release(fh).await.unwrap();
        // Creates in a directory this core made are answered from memory and sent in
        // batches. Flooders keep that log topped up for as long as the test lets them.
        let stop = Arc::new(AtomicBool::new(false));
        let made = Arc::new(AtomicU64::new(0));
        let flooders: Vec<_> = (0..4)
            .map(|n| {
                let (core, stop, made) = (a.core.clone(), stop.clone(), made.clone());
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let name = format!("f{n}-{i}");
                        let created =
                            match core.create_deferred(flooded.ino, name.as_bytes(), 0o644, me()) {
                                Some(created) => created,
                                None => {
                                    core.create(flooded.ino, name.as_bytes(), 0o644, me(), true)
                                        .await
                                }
                            };
                        core.release(created.unwrap().1).await.unwrap();
                        made.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;

        // A create in a directory that is not leased goes to Redis, after the log as it
        // stood: changes appended after it started must not keep it waiting. Nor may they
        // keep another core waiting for a directory it recalls.
        let deadline = Duration::from_secs(20);
        let (other, recalled) = tokio::join!(
            tokio::time::timeout(
                deadline,
                a.core.create(ROOT, b"elsewhere", 0o644, me(), true)
            ),
            tokio::time::timeout(deadline, b.core.lookup(quiet.ino, b"x")),
        );
        let during = made.load(Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        for flooder in flooders {
            flooder.await.unwrap();
        }
        let (_, fh) = other
            .expect("a create elsewhere finished while the flood went on (it waited 20 s)")
            .unwrap();
        a.core.release(fh).await.unwrap();
        let found = recalled
            .expect("another core's look-up finished while the flood went on (it waited 20 s)")
            .unwrap();
        assert_eq!(found.ino, x.ino);
        assert!(during > 0, "the flood made files");
        a.stop().await;
        b.stop().await;
    });
    assert_clean(&redis, PREFIX);
}
