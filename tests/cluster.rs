//! Redis Cluster: one filesystem spread over every primary of a cluster, metadata in one slot.

mod common;

use std::fs;

use common::{Cluster, Mount};

/// Keys of the filesystem under `prefix` that `node` holds.
fn keys_on(node: &common::Redis, prefix: &str) -> Vec<String> {
    node.keys(prefix)
}

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
        let keys = keys_on(node, "skx");
        assert!(
            keys.iter().any(|k| k.starts_with("skx:b:")),
            "blocks on the primary at {}",
            node.port()
        );
    }
    let with_metadata = (cluster.primaries().iter())
        .filter(|n| keys_on(n, "skx").iter().any(|k| k.starts_with("{skx}:")))
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
