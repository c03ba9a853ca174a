//! Blocks: immutable values named by ids, fetched and stored in pipelines, cached by id.
//!
//! A block id never changes meaning, so cached blocks never go stale; only block maps do.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::codec::{self, Codec, Encoded};
use crate::error::FsError;
use crate::meta::redis_failure;
use crate::store::{Counter, Store};

/// Block ids reserved from Redis at a time, so that writers rarely wait for an id.
const ID_BATCH: u64 = 256;
/// Blocks per pipelined GET or SET round trip.
const PIPELINE_BLOCKS: usize = 32;

/// Blocks in a batch from which encoding moves off the runtime's worker.
const ENCODE_APART_BLOCKS: usize = 8;

/// A decoded block, shared between the cache and readers.
pub type Block = Bytes;

/// A block image being written, shared between a file's buffers and the store writing it.
pub type Image = Arc<Vec<u8>>;

/// An image handed to the cache as a block without copying it.
struct Written(Image);

impl AsRef<[u8]> for Written {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A least-recently-used cache of decoded blocks, bounded in bytes.
struct BlockCache {
    entries: HashMap<u64, (Block, u64)>,
    by_age: BTreeMap<u64, u64>,
    tick: u64,
    bytes: u64,
    limit: u64,
}

impl BlockCache {
    fn get(&mut self, id: u64) -> Option<Block> {
        let found = self.entries.get_mut(&id);
        crate::metrics::metrics().cache_lookup(crate::metrics::Cache::Blocks, found.is_some());
        let (block, age) = found?;
        self.by_age.remove(age);
        self.tick += 1;
        *age = self.tick;
        self.by_age.insert(self.tick, id);
        Some(block.clone())
    }

    fn insert(&mut self, id: u64, block: Block) {
        if self.limit == 0 || self.entries.contains_key(&id) {
            return;
        }
        self.tick += 1;
        self.bytes += block.len() as u64;
        self.entries.insert(id, (block, self.tick));
        self.by_age.insert(self.tick, id);
        while self.bytes > self.limit {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            if let Some((b, _)) = self.entries.remove(&oldest) {
                self.bytes -= b.len() as u64;
            }
        }
    }
}

/// Reads and writes the blocks of one filesystem.
pub struct BlockStore {
    store: Store,
    /// Data bytes per block.
    pub block_size: usize,
    codec: Codec,
    cache: Mutex<BlockCache>,
    /// The cache's bound, fixed at mount: read without taking the cache's lock.
    cache_bytes: u64,
    ids: tokio::sync::Mutex<(u64, u64)>,
    /// Blocks being fetched, with what their fetch's end wakes.
    loading: Mutex<HashMap<u64, Done>>,
}

impl BlockStore {
    /// A block store with a cache of `cache_bytes`.
    pub fn new(store: Store, block_size: u32, codec: Codec, cache_bytes: u64) -> BlockStore {
        BlockStore {
            block_size: block_size as usize,
            codec,
            cache: Mutex::new(BlockCache {
                entries: HashMap::new(),
                by_age: BTreeMap::new(),
                tick: 0,
                bytes: 0,
                limit: cache_bytes,
            }),
            cache_bytes,
            ids: tokio::sync::Mutex::new((0, 0)),
            loading: Mutex::new(HashMap::new()),
            store,
        }
    }

    /// Encodes a block image with the filesystem's codec, `None` for an all-zero one.
    pub fn encode(&self, image: &Image) -> Option<Encoded> {
        self.codec.encode_shared(image)
    }

    /// Encodes block images, `None` for all-zero ones (stored as holes). A large batch is
    /// encoded on a blocking thread: compressing megabytes must not stall the runtime's worker,
    /// which also drives the Redis connection for every other request.
    pub async fn encode_all(&self, images: &[Image]) -> Vec<Option<Encoded>> {
        let codec = self.codec;
        if images.len() < ENCODE_APART_BLOCKS {
            return encode_images(codec, images);
        }
        let owned = images.to_vec();
        tokio::task::spawn_blocking(move || encode_images(codec, &owned))
            .await
            .unwrap_or_else(|_| encode_images(codec, images))
    }

    /// Remembers a block this mount just wrote, so that reading it back costs nothing.
    pub fn remember(&self, id: u64, image: Image) {
        self.keep(id, Bytes::from_owner(Written(image)));
    }

    fn keep(&self, id: u64, block: Block) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, block);
    }

    /// `count` fresh block ids.
    pub async fn allocate(&self, count: usize) -> Result<Vec<u64>, FsError> {
        let mut range = self.ids.lock().await;
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            if range.0 == range.1 {
                let want = ID_BATCH.max((count - out.len()) as u64);
                let end = (self.store.reserve(Counter::Block, want))
                    .await
                    .map_err(|e| redis_failure("allocate block ids", &e))?;
                *range = (end - want + 1, end + 1);
            }
            out.push(range.0);
            range.0 += 1;
        }
        Ok(out)
    }

    /// Stores encoded blocks under their ids (see [`put`]); answers the node that has them.
    pub async fn put(&self, blocks: &[(u64, Encoded)]) -> Result<u64, FsError> {
        put(&self.store, blocks)
            .await
            .map_err(|e| redis_failure("write blocks", &e))
    }

    /// Deletes blocks that a store wrote but no map names (see [`discard`]).
    pub fn discard(&self, ids: Vec<u64>) {
        discard(&self.store, ids);
    }

    /// The most bytes the cache of blocks holds.
    pub fn cache_bytes(&self) -> u64 {
        self.cache_bytes
    }

    /// A block from the cache, if it is there.
    pub fn cached(&self, id: u64) -> Option<Block> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(id)
    }

    /// What a fetch of block `id` in flight wakes when it ends, `None` if none is.
    pub fn fetching(&self, id: u64) -> Option<Done> {
        let loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        loading.get(&id).cloned()
    }

    /// Fetches blocks by id (cache first, then pipelined GETs); `None` where a block is
    /// missing, which means the map that named it has changed since it was read.
    ///
    /// A block another task is already fetching (read-ahead, a concurrent read) is waited
    /// for rather than fetched twice.
    pub async fn get(&self, ids: &[u64]) -> Result<Vec<Option<Block>>, FsError> {
        let mut out: Vec<Option<Block>> = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            ids.iter().map(|&id| cache.get(id)).collect()
        };
        let missing: Vec<usize> = (0..ids.len()).filter(|&i| out[i].is_none()).collect();
        if missing.is_empty() {
            return Ok(out);
        }
        let (mine, theirs, loading) = self.claim(ids, &missing);
        let fetched = self.fetch(ids, &mine, &mut out).await;
        // Released before waiting on others: two tasks each waiting for the other's blocks
        // while holding their own would wait forever.
        drop(loading);
        fetched?;
        let mut after_wait = Vec::new();
        for (i, mut done) in theirs {
            // The fetcher drops its sender when it ends, however it ends.
            let _ = done.changed().await;
            match self.cached(ids[i]) {
                Some(block) => out[i] = Some(block),
                None => after_wait.push(i),
            }
        }
        // The other fetch failed, found nothing or its block was evicted: fetch it here.
        self.fetch(ids, &after_wait, &mut out).await?;
        Ok(out)
    }

    /// Splits the positions of `missing` ids into those this caller fetches (registered as
    /// loading until the returned guard drops) and those another task is fetching.
    fn claim(
        &self,
        ids: &[u64],
        missing: &[usize],
    ) -> (Vec<usize>, Vec<(usize, Done)>, Loading<'_>) {
        let (sender, receiver) = tokio::sync::watch::channel(());
        let mut loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        for &i in missing {
            match loading.get(&ids[i]) {
                Some(done) => theirs.push((i, done.clone())),
                None => {
                    loading.insert(ids[i], receiver.clone());
                    mine.push(i);
                }
            }
        }
        let claimed = mine.iter().map(|&i| ids[i]).collect();
        (
            mine,
            theirs,
            Loading {
                store: self,
                ids: claimed,
                _sender: sender,
            },
        )
    }

    /// GETs the blocks at positions `which` of `ids` into `out`, in pipelines.
    async fn fetch(
        &self,
        ids: &[u64],
        which: &[usize],
        out: &mut [Option<Block>],
    ) -> Result<(), FsError> {
        for chunk in which.chunks(PIPELINE_BLOCKS) {
            let mut pipe = redis::pipe();
            for &i in chunk {
                pipe.cmd("GET").arg(self.store.keys.block(ids[i]));
            }
            let values: Vec<Option<Vec<u8>>> = self
                .store
                .pipe(&pipe)
                .await
                .map_err(|e| redis_failure("read blocks", &e))?;
            for (&i, value) in chunk.iter().zip(values) {
                let Some(stored) = value else { continue };
                let block = codec::decode(stored, self.block_size).map_err(|e| {
                    tracing::error!("block {}: {e}", self.store.keys.block(ids[i]));
                    FsError::Io
                })?;
                self.keep(ids[i], block.clone());
                out[i] = Some(block);
            }
        }
        Ok(())
    }
}

fn encode_images(codec: Codec, images: &[Image]) -> Vec<Option<Encoded>> {
    images.iter().map(|img| codec.encode_shared(img)).collect()
}

/// Wakes the waiters of a fetch when dropped (its sender goes with it).
pub type Done = tokio::sync::watch::Receiver<()>;

/// Block ids one task is fetching; dropping it (done, failed or cancelled) releases them.
struct Loading<'a> {
    store: &'a BlockStore,
    ids: Vec<u64>,
    _sender: tokio::sync::watch::Sender<()>,
}

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        let mut loading = self.store.loading.lock().unwrap_or_else(|p| p.into_inner());
        for id in &self.ids {
            loading.remove(id);
        }
    }
}

/// Deletes blocks that a store wrote but no map names (its commit was refused, or never sent,
/// or never ran), in the background and until Redis takes it: nothing a failed store wrote
/// stays behind.
pub fn discard(store: &Store, ids: Vec<u64>) {
    if ids.is_empty() {
        return;
    }
    let target = store.clone();
    store.clean_up_later(async move {
        let mut wait = Duration::from_millis(100);
        while let Err(e) = delete(&target, &ids).await {
            if crate::store::is_filesystem_gone(&e) {
                let keys: Vec<String> = ids.iter().map(|&id| target.keys.block(id)).collect();
                if let Err(e) = target.delete_strays(&keys).await {
                    tracing::warn!(
                        "deleting {} blocks stored as the filesystem left: {e}",
                        ids.len()
                    );
                }
                return;
            }
            tracing::warn!("deleting {} unneeded blocks: {e}; trying again", ids.len());
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    });
}

/// Stores encoded blocks under their ids, in pipelines: through the node's block writer where
/// it has one, the general client otherwise. Setting a block again is harmless, so a pipeline
/// cut short by a lost connection is simply sent again. Answers the node (its generation) that
/// has them all: when the primary changed part-way, everything is stored again on the new one.
pub async fn put(store: &Store, blocks: &[(u64, Encoded)]) -> redis::RedisResult<u64> {
    if blocks.is_empty() {
        // Nothing to store is on every node.
        return Ok(store.link.node().generation);
    }
    loop {
        let mut nodes = Vec::new();
        for chunk in blocks.chunks(PIPELINE_BLOCKS) {
            let named: Vec<(String, &Encoded)> = chunk
                .iter()
                .map(|(id, data)| (store.keys.block(*id), data))
                .collect();
            let named = &named;
            let node = store
                .retry_on_node(|node| async move {
                    let through_client = match (&node.writer, &node.cluster_writers) {
                        (Some(writer), _) => {
                            writer.set(named).await?;
                            Vec::new()
                        }
                        (None, Some(writers)) => writers.set(named).await?,
                        (None, None) => named.clone(),
                    };
                    if !through_client.is_empty() {
                        let mut pipe = redis::pipe();
                        for (key, data) in &through_client {
                            pipe.cmd("SET").arg(key).arg(*data).ignore();
                        }
                        pipe.query_async::<()>(&mut node.conn.clone()).await?;
                    }
                    // Blocks a node sent elsewhere: their slots moved.
                    if node.cluster_writers.is_some() && !through_client.is_empty() {
                        node.reread_slots().await?;
                    }
                    Ok(node.generation)
                })
                .await?;
            nodes.push(node);
        }
        let first = nodes.first().copied().unwrap_or(0);
        if nodes.iter().all(|&n| n == first) {
            return Ok(first);
        }
    }
}

/// What the blocks `ids` take in Redis (0 for one that is gone), in one pipeline.
pub async fn lengths(store: &Store, ids: &[u64]) -> redis::RedisResult<Vec<u64>> {
    let mut pipe = redis::pipe();
    for &id in ids {
        pipe.cmd("STRLEN").arg(store.keys.block(id));
    }
    store.pipe(&pipe).await
}

/// Copies block `from` to the new id `to`: in Redis where both lie on one server, through
/// this process on a cluster (they may lie on two nodes, where `COPY` cannot go).
pub async fn copy(store: &Store, from: u64, to: u64) -> redis::RedisResult<()> {
    let (from, to) = (store.keys.block(from), store.keys.block(to));
    if !store.link.node().is_cluster() {
        return store
            .cmd::<()>(redis::cmd("COPY").arg(&from).arg(&to))
            .await;
    }
    let data: Option<Vec<u8>> = store.cmd(redis::cmd("GET").arg(&from)).await?;
    match data {
        Some(data) => store.cmd::<()>(redis::cmd("SET").arg(&to).arg(data)).await,
        None => Ok(()),
    }
}

/// Deletes the blocks `ids`.
pub async fn delete(store: &Store, ids: &[u64]) -> redis::RedisResult<()> {
    let mut del = redis::cmd("DEL");
    for &id in ids {
        del.arg(store.keys.block(id));
    }
    store.cmd::<i64>(&del).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_evicts_least_recently_used() {
        let mut cache = BlockCache {
            entries: HashMap::new(),
            by_age: BTreeMap::new(),
            tick: 0,
            bytes: 0,
            limit: 30,
        };
        for id in 0..3 {
            cache.insert(id, Bytes::from(vec![0; 10]));
        }
        assert!(cache.get(0).is_some());
        cache.insert(3, Bytes::from(vec![0; 10]));
        assert!(cache.get(1).is_none(), "1 was the least recently used");
        assert!(cache.get(0).is_some() && cache.get(2).is_some() && cache.get(3).is_some());
        assert_eq!(cache.bytes, 30);
    }
}
