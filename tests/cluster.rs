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

/// Runs a command on the cluster at `url`, sent to the node that serves its key.
fn cluster_cmd(url: &str, args: &[&str]) {
    let client = redis::cluster::ClusterClient::new(vec![url]).expect("cluster client");
    let mut conn = client.get_connection().expect("connect to the cluster");
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query::<()>(&mut conn).expect("cluster command");
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

    cluster_cmd(&url, &["SET", "copy:b:987654321", "\x00leak"]);
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
