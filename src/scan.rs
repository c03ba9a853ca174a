//! Walking the keys of a filesystem with SCAN (never KEYS, which blocks Redis), in batches.
//!
//! The patterns always come from [`crate::keys::Keys::scan_patterns`] or name one kind of key
//! under them, so a walk never sees a key outside the filesystem; the one exception lists the
//! filesystems of a server ([`Scan::every_filesystem`]).

use crate::error::Error;
use crate::link::NodeAddress;
use crate::store::Store;

/// Keys asked for per SCAN call.
const SCAN_COUNT: u64 = 1000;

/// A walk over the keys matching a pattern. Keys that exist for the whole walk are returned
/// at least once (SCAN may return a key twice; callers that count deduplicate).
pub struct Scan<'a> {
    store: &'a Store,
    /// The patterns to walk.
    patterns: Vec<String>,
    /// Each pattern on each primary (SCAN walks the keys of one node), still to walk, the
    /// current one last; listed when the walk begins.
    walks: Option<Vec<(String, Option<NodeAddress>)>>,
    cursor: u64,
}

impl<'a> Scan<'a> {
    /// A walk over every key of the store's filesystem.
    pub fn all(store: &'a Store) -> Scan<'a> {
        let [metadata, spread] = store.keys.scan_patterns();
        Scan {
            store,
            patterns: vec![spread, metadata],
            walks: None,
            cursor: 0,
        }
    }

    /// A walk over the `meta` key of every filesystem on the server (`redisfs-admin list`):
    /// the only walk outside one prefix, and it only reads.
    pub fn every_filesystem(store: &'a Store) -> Scan<'a> {
        Scan::matching(store, crate::keys::every_meta_key())
    }

    /// A walk over the keys matching `pattern`.
    pub fn matching(store: &'a Store, pattern: String) -> Scan<'a> {
        Scan {
            store,
            patterns: vec![pattern],
            walks: None,
            cursor: 0,
        }
    }

    /// The next batch of key names; `None` once the walk is over.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<Vec<u8>>>, Error> {
        if self.walks.is_none() {
            let nodes =
                (self.store.primaries().await).map_err(self.store.failed("CLUSTER NODES"))?;
            let walks = (self.patterns.iter())
                .flat_map(|pattern| nodes.iter().map(|node| (pattern.clone(), node.clone())))
                .collect();
            self.walks = Some(walks);
        }
        let walks = self.walks.get_or_insert_default();
        while let Some((pattern, node)) = walks.last() {
            let scan = redis::cmd("SCAN")
                .arg(self.cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .clone();
            let answer = match node {
                Some(address) => self.store.cmd_on(&scan, address).await,
                None => self.store.cmd(&scan).await,
            };
            let (next, keys): (u64, Vec<Vec<u8>>) = answer.map_err(self.store.failed("SCAN"))?;
            self.cursor = next;
            if next == 0 {
                walks.pop();
            }
            if !keys.is_empty() {
                return Ok(Some(keys));
            }
        }
        Ok(None)
    }
}

/// The first key found of the store's filesystem, if any.
pub async fn any_key(store: &Store) -> Result<Option<String>, Error> {
    let mut scan = Scan::all(store);
    Ok(scan
        .next_batch()
        .await?
        .and_then(|keys| keys.into_iter().next())
        .map(|k| String::from_utf8_lossy(&k).into_owned()))
}

/// Deletes every key of the store's filesystem (UNLINK, in batches); returns how many.
pub async fn delete_all(store: &Store) -> Result<u64, Error> {
    let mut scan = Scan::all(store);
    let mut deleted = 0;
    while let Some(keys) = scan.next_batch().await? {
        let n: u64 = store
            .cmd(redis::cmd("UNLINK").arg(&keys))
            .await
            .map_err(store.failed("UNLINK"))?;
        deleted += n;
    }
    Ok(deleted)
}
