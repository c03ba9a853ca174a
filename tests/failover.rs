//! Failover: a filesystem on a primary that Redis Sentinel watches survives the primary's
//! death. The mount finds the new primary through the sentinels, an fsync'ing writer only
//! pauses, and every record it was told was synced is there afterwards, also when the old
//! primary comes back (empty, calling itself primary until the sentinels demote it).

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Mount, Redis, Sentinels};

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
    let primary = Redis::start();
    // The replica is 40 ms from its primary: what the primary answered in its last 40 ms is
    // on the primary alone, unless the mount waited for the replica before answering.
    let far_primary = primary.port_at_distance(Duration::from_millis(40));
    let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &far_primary.to_string()]);
    // A replica that never finished its first sync (Redis waits 5 s for more replicas before
    // sending its data) is not one the sentinels would promote.
    common::eventually("the replica to be in sync", Duration::from_secs(30), || {
        replica
            .cmd::<String>(&["INFO", "replication"])
            .contains("master_link_status:up")
    });
    let sentinels = Sentinels::start(3, "fsprimary", &primary, 1);
    let m = mount_through(&sentinels, "skx");

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

    primary.kill_and_hold();
    let before = synced.load(Ordering::Acquire);
    common::eventually(
        "the sentinels to promote the replica",
        Duration::from_secs(30),
        || sentinels.primary_port() == Some(replica.port()),
    );
    // Back, empty, and primary by its own account until the sentinels make it a replica.
    primary.release();
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
    let again = mount_through(&sentinels, "skx");
    assert_journal(&again.join("journal"), acknowledged);
    // (The last create may have been answered but not sent when the first mount ended.)
    let kept = fs::read_dir(again.join("busy")).unwrap().count() as u64;
    assert!(kept + 1 >= made, "{kept} of {made} files");
    drop(again);
    common::assert_clean(&replica, "skx");
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
