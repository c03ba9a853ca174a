//! Redis Cluster: what a mount and the tools do when pointed at a node of one.

mod common;

use common::{Cluster, Mount};

/// Until redisfs spreads a filesystem over a cluster, a cluster node's URL is refused in one
/// line that says why, before anything is written (not a `MOVED` or a script's cross-slot
/// error halfway through making a filesystem).
#[test]
fn a_cluster_node_is_refused_in_one_line_that_says_so() {
    if !common::ready() {
        return;
    }
    let cluster = Cluster::start(3, 0);
    let url = cluster.url();
    let args: Vec<String> = ["--redis", &url, "--prefix", "skx"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let Err(refused) = Mount::with_args(&args) else {
        panic!("mounted a cluster node");
    };
    let text = refused.stderr.trim();
    assert_eq!(refused.code, Some(1), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("Redis Cluster")
            && text.contains(&format!("127.0.0.1:{}", cluster.nodes[0].port)),
        "{text}"
    );
    let out = common::tool("fsck", &["--redis", &url, "--prefix", "skx"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.trim().lines().count() == 1 && text.contains("Redis Cluster"),
        "{text}"
    );
    for node in &cluster.nodes {
        assert!(
            node.keys("skx").is_empty(),
            "nothing written on {}",
            node.port
        );
    }
}
