//! Where the filesystem's Redis is now, and the connections to it.
//!
//! A [`Link`] holds the connected [`Node`]: one multiplexed connection for commands, the client
//! that Pub/Sub connects with, and the fast block writer where the address allows one. On a
//! Redis Cluster the node is the whole cluster: its connection sends every command to the node
//! that serves its key and follows the cluster through resharding and failover by itself
//! (`MOVED`, `ASK`, a new slot map), a pipeline of keys in many slots goes out command by
//! command, all at once (see [`Conn`]), and Pub/Sub connects to any node (a cluster passes
//! every message to every node). A node
//! is never reconnected in place: when its connection breaks, or a Sentinel-managed node answers
//! that it is no longer the primary, the link finds the primary again (the same address for a
//! fixed one; the sentinels' answer otherwise, checked with `ROLE`) and every user moves to the
//! new node at its next attempt. A node that failed is never written to again, so a former
//! primary that comes back still calling itself primary (it does, for seconds, before the
//! sentinels demote it) gets nothing that would be lost when it is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, Route, RoutingInfo};
use redis::cluster_routing::{SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Arg, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, ServerError, Value};
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, ErrorKind};
use redis::{ServerErrorKind, TlsMode};

use crate::options::{describe, Place, RedisTarget, SentinelTarget};
use crate::wire::{BlockWriter, ClusterWriters, Serving};

/// How long connecting to one server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long one reply may take before its connection is held broken: within the I/O timeout
/// (a stalled Redis is waited for by retries), and never less than a slow script may need.
fn response_timeout(io_timeout: Duration) -> Duration {
    io_timeout.clamp(Duration::from_secs(5), Duration::from_secs(30))
}

/// A connection to the filesystem's Redis: to one server, or to a Redis Cluster.
#[derive(Clone)]
pub enum Conn {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Server(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => match key_by_key(cmd) {
                Some(parts) => Box::pin(counted_key_by_key(c.clone(), parts)),
                None => c.req_packed_command(cmd),
            },
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Server(c) => c.req_packed_commands(pipeline, offset, count),
            // A transaction's keys share a slot (its sender sees to it).
            Conn::Cluster(c) => match pipeline.is_transaction() {
                true => c.req_packed_commands(pipeline, offset, count),
                false => Box::pin(each_on_its_node(c.clone(), pipeline)),
            },
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Server(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// Sends `cmd` to the node at `address` of a cluster (`SCAN`, which walks one node's keys).
    pub async fn send_to(&mut self, cmd: &Cmd, address: &NodeAddress) -> RedisResult<Value> {
        match self {
            Conn::Server(c) => c.req_packed_command(cmd).await,
            Conn::Cluster(c) => {
                let route = SingleNodeRoutingInfo::ByAddress {
                    host: address.host.clone(),
                    port: address.port,
                };
                c.route_command(cmd.clone(), RoutingInfo::SingleNode(route))
                    .await
            }
        }
    }
}

/// Commands whose one key is their first argument: such commands of a pipeline are grouped by
/// the slot of their key.
const ONE_KEY_COMMANDS: [&str; 21] = [
    "GET", "SET", "STRLEN", "DUMP", "RESTORE", "TYPE", "PTTL", "PEXPIRE", "EXPIRE", "HGET", "HSET",
    "HSETNX", "HDEL", "HMGET", "HGETALL", "HLEN", "HINCRBY", "SADD", "SREM", "SCARD", "ZADD",
];

/// Commands of any number of keys that answer how many of them they found. The cluster client
/// splits one whose keys lie on several nodes by itself, and leaves out the part of a node its
/// map names but it holds no connection to (its map read again while that node was down, and
/// the node not yet failed over), answering the others' count as if it were the whole: a
/// `DEL` of blocks so "succeeded" while some were never deleted. Such a command is sent here
/// key by key instead, each to its node, and any part that fails fails the whole.
const COUNTING_COMMANDS: [&str; 4] = ["DEL", "UNLINK", "EXISTS", "TOUCH"];

/// Whether `name` is one of `commands`.
fn is_one_of(name: &[u8], commands: &[&str]) -> bool {
    (commands.iter()).any(|c| c.as_bytes().eq_ignore_ascii_case(name))
}

/// The key of a command that names one, as its first argument (see [`ONE_KEY_COMMANDS`]; a
/// command of [`COUNTING_COMMANDS`] given one key alone).
fn one_key(cmd: &Cmd) -> Option<&[u8]> {
    let mut args = cmd.args_iter();
    let (Some(Arg::Simple(name)), Some(Arg::Simple(key))) = (args.next(), args.next()) else {
        return None;
    };
    let alone = args.next().is_none();
    (is_one_of(name, &ONE_KEY_COMMANDS) || is_one_of(name, &COUNTING_COMMANDS) && alone)
        .then_some(key)
}

/// A command of [`COUNTING_COMMANDS`] on several keys, as one command per key.
fn key_by_key(cmd: &Cmd) -> Option<Pipeline> {
    let mut args = cmd.args_iter();
    let Some(Arg::Simple(name)) = args.next() else {
        return None;
    };
    if !is_one_of(name, &COUNTING_COMMANDS) || cmd.args_iter().count() <= 2 {
        return None;
    }
    let mut parts = redis::pipe();
    for key in args {
        let Arg::Simple(key) = key else {
            return None;
        };
        parts.add_command(redis::cmd(&String::from_utf8_lossy(name)).arg(key).clone());
    }
    Some(parts)
}

/// Sends the one-key commands `parts` (see [`key_by_key`]) each to its node and answers the
/// sum of their counts; fails if any part failed.
async fn counted_key_by_key(conn: ClusterConnection, parts: Pipeline) -> RedisResult<Value> {
    let mut total = 0;
    for reply in each_on_its_node(conn, &parts).await? {
        total += redis::from_redis_value::<i64>(reply.extract_error()?)?;
    }
    Ok(Value::Int(total))
}

/// Sends a pipeline whose keys lie in many slots of a cluster (blocks are spread over all of
/// them; a pipeline of one connection cannot cross slots): a run of one-key commands goes out
/// as one pipeline per slot, all at once, each to its node, so that commands on one key keep
/// their order; any other command (several keys, or none) waits for what came before it and
/// goes alone. A command's own error stays in its place among the replies, as in a pipeline.
async fn each_on_its_node(conn: ClusterConnection, pipeline: &Pipeline) -> RedisResult<Vec<Value>> {
    let commands: Vec<&Cmd> = pipeline.cmd_iter().collect();
    let mut replies: Vec<Value> = vec![Value::Nil; commands.len()];
    let mut next = 0;
    while next < commands.len() {
        let mut by_slot: HashMap<Route, Vec<usize>> = HashMap::new();
        while let Some(key) = commands.get(next).and_then(|c| one_key(c)) {
            let slot = Route::with_key(key, SlotAddr::Master);
            by_slot.entry(slot).or_default().push(next);
            next += 1;
        }
        if by_slot.is_empty() {
            replies[next] = one_at_a_time(&mut conn.clone(), &commands[next..=next])
                .await?
                .remove(0);
            next += 1;
            continue;
        }
        let sent = by_slot.into_iter().map(|(slot, indexes)| {
            let mut part = redis::pipe();
            for &i in &indexes {
                part.add_command(commands[i].clone());
            }
            let mut conn = conn.clone();
            let commands = &commands;
            async move {
                let count = indexes.len();
                let route = SingleNodeRoutingInfo::SpecificNode(slot);
                let values = match conn.route_pipeline(part, 0, count, route).await {
                    // A slot on its way to another node answers a pipeline of several of its
                    // keys in pieces (`ASK` for keys gone, `MOVED` at the target for those
                    // not there yet), which the client cannot redirect as one: one command at
                    // a time, each is.
                    Err(e) if count > 1 && is_redirect(&e) => {
                        let part: Vec<&Cmd> = indexes.iter().map(|&i| commands[i]).collect();
                        one_at_a_time(&mut conn, &part).await
                    }
                    other => other,
                };
                (indexes, values)
            }
        });
        for (indexes, values) in futures_util::future::join_all(sent).await {
            for (i, value) in indexes.into_iter().zip(values?) {
                replies[i] = value;
            }
        }
    }
    Ok(replies)
}

/// Sends `commands` one after another, each routed by the cluster client on its own; a
/// command's own error stays in its place among the replies, as in a pipeline.
async fn one_at_a_time(conn: &mut ClusterConnection, commands: &[&Cmd]) -> RedisResult<Vec<Value>> {
    let mut replies = Vec::new();
    for command in commands {
        let reply = conn.req_packed_command(command).await;
        replies.push(reply.or_else(|e| ServerError::try_from(e).map(Value::ServerError))?);
    }
    Ok(replies)
}

/// Whether `err` says the server is there and soon ready: loading its data (`LOADING`), or,
/// of a cluster, that a primary is down while a replica takes its place (`TRYAGAIN`).
fn is_soon_ready(err: &RedisError) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Server(ServerErrorKind::BusyLoading | ServerErrorKind::TryAgain)
    )
}

/// `template`'s settings (TLS, user, password) for the node of a cluster at `host:port`.
pub fn at_address(template: &ConnectionInfo, host: &str, port: u16) -> ConnectionInfo {
    let addr = match template.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.to_string(),
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host.to_string(), port),
    };
    template.clone().set_addr(addr)
}

/// Whether `err` sends a command to another node of a cluster (its slot moved, or is moving).
pub fn is_redirect(err: &RedisError) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Server(ServerErrorKind::Ask | ServerErrorKind::Moved)
    )
}

/// Where a node of a cluster listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddress {
    pub host: String,
    pub port: u16,
}

/// One node of a cluster, as `CLUSTER NODES` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ClusterNode {
    address: NodeAddress,
    primary: bool,
    /// Whether it serves, or is taking in, hash slots: a primary without any holds no keys
    /// (one whose slots went to its promoted replica, before the cluster holds it failed).
    has_slots: bool,
    /// The ranges of slots it serves (not those on their way in or out).
    slots: Vec<(u16, u16)>,
}

/// The nodes `CLUSTER NODES` lists, skipping lines it cannot read; a node that does not know
/// its own address yet (a cluster of one node never told it) is at `reached_at`.
fn cluster_nodes(text: &str, reached_at: &str) -> Vec<ClusterNode> {
    (text.lines())
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let (address, flags) = (fields.get(1)?, fields.get(2)?);
            let host_port = address.split(['@', ',']).next()?;
            let (host, port) = host_port.rsplit_once(':')?;
            let flags: Vec<&str> = flags.split(',').collect();
            let host = match host.is_empty() && flags.contains(&"myself") {
                true => reached_at,
                false => host,
            };
            Some(ClusterNode {
                address: NodeAddress {
                    host: host.trim_start_matches('[').trim_end_matches(']').into(),
                    port: port.parse().ok()?,
                },
                primary: flags.contains(&"master"),
                has_slots: fields.len() > 8,
                slots: (fields.iter().skip(8))
                    .filter_map(|range| match range.split_once('-') {
                        // (`[slot->-node]`, `[slot-<-node]`: on their way.)
                        _ if range.starts_with('[') => None,
                        Some((first, last)) => Some((first.parse().ok()?, last.parse().ok()?)),
                        None => range.parse().ok().map(|slot| (slot, slot)),
                    })
                    .collect(),
            })
        })
        .filter(|node| !node.address.host.is_empty() && node.address.port != 0)
        .collect()
}

/// What a cluster's primaries said of their replication (see [`Node::replication_now`]).
#[derive(Clone, Copy, Debug)]
pub struct ClusterReplication {
    /// A primary changed since the cluster was connected.
    pub failed_over: bool,
    /// Replicas linked to each primary: the fewest.
    pub replicas: u64,
}

/// The replication of a cluster's primaries, as each says it.
#[derive(Default)]
struct PrimariesNow {
    /// Their replication histories, sorted.
    histories: Vec<String>,
    /// The replicas linked to each: the fewest.
    fewest_replicas: u64,
}

/// One connected server, or the connected cluster.
pub struct Node {
    /// Counts the nodes a link has had, so that a failure reported late does not replace
    /// the node that replaced the one that failed.
    pub generation: u64,
    /// Commands, pipelines and scripts.
    pub conn: Conn,
    /// `WAIT`, which holds the connection it is sent on until replicas answer: apart, so
    /// that other requests do not wait behind it (on a cluster, the same: `WAIT` covers the
    /// writes of its own connection to each node).
    pub replication_conn: Conn,
    /// Replicas connected to the server (to each primary of a cluster, the fewest), as last
    /// asked.
    pub replicas: AtomicU64,
    /// Pub/Sub connects with the first of them that answers: the server's, or one for each
    /// node of a cluster known when it was connected.
    pub subscribers: Vec<Client>,
    /// Of a cluster, the replication histories of its primaries when it was connected (see
    /// [`Node::replication_now`]).
    histories: Vec<String>,
    /// Of a cluster, the host of its first seed.
    seed_host: String,
    /// Block writes without the general client's copies, where the address allows.
    pub writer: Option<BlockWriter>,
    /// Of a cluster, the same: one for each primary (see [`ClusterWriters`]).
    pub cluster_writers: Option<ClusterWriters>,
    /// The server's address, safe to print.
    pub address: String,
}

/// How the primary is found.
enum Locator {
    /// At fixed addresses: one server's, or nodes of a cluster.
    Addresses(Vec<ConnectionInfo>),
    /// By asking sentinels, which name it and check it with `ROLE`.
    Sentinel {
        sentinels: Box<tokio::sync::Mutex<SentinelClient>>,
        master: String,
    },
}

/// The way to the filesystem's Redis, shared by every clone of a store.
pub struct Link {
    locator: Locator,
    node: RwLock<Arc<Node>>,
    /// One replacement at a time: the callers that saw one node fail wait for one new node.
    replacing: tokio::sync::Mutex<()>,
    /// The generation of the node now, for those who keep connections of their own
    /// (Pub/Sub) and must move with it.
    moved: tokio::sync::watch::Sender<u64>,
    config: AsyncConnectionConfig,
    io_timeout: Duration,
    /// The TLS options' certificates, for the block writer's connections.
    certificates: Option<redis::TlsCertificates>,
    /// When the last replacement failed, and why.
    last_failure: std::sync::Mutex<Option<(std::time::Instant, RedisError)>>,
}

/// How long the failure of a replacement stands for the callers that queued behind it.
const RETRY_REPLACEMENT: Duration = Duration::from_millis(100);

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why no primary was connected: as it is (for a mount starting, which reports it), and as a
/// running mount takes it (sentinels that name no primary yet, or name one that is not
/// primary yet: a failover under way, waited out like an unreachable Redis).
struct NotConnected {
    found: RedisError,
    while_running: RedisError,
}

impl From<RedisError> for NotConnected {
    fn from(err: RedisError) -> NotConnected {
        NotConnected {
            found: err.clone(),
            while_running: err,
        }
    }
}

impl Link {
    /// Finds and connects to the primary of `target`.
    pub async fn open(target: &RedisTarget, io_timeout: Duration) -> RedisResult<Link> {
        let locator = match &target.place {
            Place::Addresses(infos) => Locator::Addresses(infos.clone()),
            Place::Sentinel(s) => Locator::Sentinel {
                sentinels: Box::new(tokio::sync::Mutex::new(sentinel_client(s)?)),
                master: s.master.clone(),
            },
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response_timeout(io_timeout)));
        let certificates = target.certificates.clone();
        // A server loading its data (restarted, or a replica taking a full copy), or a
        // cluster with a primary down (a failover under way), is there and soon ready:
        // waited for, within the I/O timeout. Anything else is reported now.
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(50);
        let first = loop {
            match connect(&locator, &[], &config, io_timeout, certificates.as_ref(), 1).await {
                Ok(node) => break node,
                Err(e) if is_soon_ready(&e.found) && started.elapsed() < io_timeout => {
                    tracing::warn!("{}: {}; waiting", target.display, e.found);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e.found),
            }
        };
        Ok(Link {
            locator,
            certificates,
            node: RwLock::new(Arc::new(first)),
            replacing: tokio::sync::Mutex::new(()),
            moved: tokio::sync::watch::Sender::new(1),
            config,
            io_timeout,
            last_failure: std::sync::Mutex::new(None),
        })
    }

    /// The node to send to now.
    pub fn node(&self) -> Arc<Node> {
        self.node.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether `err`, from the node in use, means that node is not to be used again.
    pub fn is_lost(&self, err: &RedisError) -> bool {
        if err.is_unrecoverable_error() {
            return true;
        }
        // A cluster client can stay wedged in a recovery of its own: during a resharding,
        // one that went back to its seeds to refresh its slot map answered nothing more (two
        // timeouts of 30 s in a row; fsck run over and over during a resharding found it). A
        // new client starts again from the cluster as it is.
        if err.is_timeout() && self.node().is_cluster() {
            return true;
        }
        // A node the sentinels demoted, or one whose primary is gone: ask them again.
        matches!(self.locator, Locator::Sentinel { .. })
            && matches!(
                err.kind(),
                ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
            )
    }

    /// Replaces node `failed` (a generation) with the primary found now, unless another
    /// caller did already. An error means no primary could be reached yet: the caller waits
    /// and tries again, as for any unreachable Redis.
    pub async fn replace(&self, failed: u64) -> RedisResult<()> {
        let _one_at_a_time = self.replacing.lock().await;
        if self.node().generation != failed {
            return Ok(());
        }
        // Callers that queued behind an attempt that failed a moment ago share its error
        // instead of each trying in turn.
        let recent = lock(&self.last_failure).clone();
        if let Some((_, err)) = recent.filter(|(when, _)| when.elapsed() < RETRY_REPLACEMENT) {
            return Err(err);
        }
        // A cluster's nodes known now are seeds too: the ones given may be the ones that died.
        let old = self.node();
        let known: Vec<ConnectionInfo> = match old.is_cluster() {
            true => (old.subscribers.iter())
                .map(|c| c.get_connection_info().clone())
                .collect(),
            false => Vec::new(),
        };
        let next = match connect(
            &self.locator,
            &known,
            &self.config,
            self.io_timeout,
            self.certificates.as_ref(),
            failed + 1,
        )
        .await
        {
            Ok(next) => next,
            Err(e) => {
                let err = e.while_running;
                *lock(&self.last_failure) = Some((std::time::Instant::now(), err.clone()));
                return Err(err);
            }
        };
        let address = next.address.clone();
        *self.node.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        self.moved.send_replace(failed + 1);
        if matches!(self.locator, Locator::Sentinel { .. }) {
            tracing::warn!("the primary is now {address}");
        }
        Ok(())
    }

    /// Tells of every move to a new node.
    pub fn moves(&self) -> tokio::sync::watch::Receiver<u64> {
        self.moved.subscribe()
    }

    /// Whether the primary is found through sentinels.
    pub fn follows_sentinels(&self) -> bool {
        matches!(self.locator, Locator::Sentinel { .. })
    }

    /// Asks the sentinels where the primary is; moves there if it is not the node in use
    /// (a failover the node's connection did not notice: its server lives on as a replica).
    pub async fn check_primary(&self) -> RedisResult<()> {
        let Locator::Sentinel { sentinels, .. } = &self.locator else {
            return Ok(());
        };
        let primary = describe(
            sentinels
                .lock()
                .await
                .async_get_client()
                .await?
                .get_connection_info(),
        );
        let node = self.node();
        if primary != node.address {
            tracing::warn!(
                "the sentinels name {primary} as primary, not {}",
                node.address
            );
            self.replace(node.generation).await?;
        }
        Ok(())
    }
}

/// Connects to the primary `locator` finds; the node is generation `generation`.
/// (`known`: more nodes of a cluster, learnt from it.)
async fn connect(
    locator: &Locator,
    known: &[ConnectionInfo],
    config: &AsyncConnectionConfig,
    io_timeout: Duration,
    certificates: Option<&redis::TlsCertificates>,
    generation: u64,
) -> Result<Node, NotConnected> {
    let client = match locator {
        Locator::Addresses(given) => {
            let seeds: Vec<ConnectionInfo> = given.iter().chain(known).cloned().collect();
            let (client, cluster) = first_answering(&seeds).await?;
            if cluster {
                return Ok(connect_cluster(&seeds, io_timeout, certificates, generation).await?);
            }
            if given.len() > 1 {
                return Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "several addresses name nodes of a Redis Cluster",
                    format!("{} is not one", describe(client.get_connection_info())),
                ))
                .into());
            }
            client
        }
        Locator::Sentinel { sentinels, master } => {
            let mut sentinels = sentinels.lock().await;
            sentinels
                .async_get_client()
                .await
                .map_err(|e| NotConnected {
                    while_running: RedisError::from((
                        ErrorKind::Io,
                        "no primary found",
                        format!("the sentinels of {master}: {e}"),
                    )),
                    found: e,
                })?
        }
    };
    let conn = client
        .get_multiplexed_async_connection_with_config(config)
        .await?;
    let replication_conn = client
        .get_multiplexed_async_connection_with_config(config)
        .await?;
    let info = client.get_connection_info();
    let address = describe(info);
    let node = Node {
        generation,
        conn: Conn::Server(conn),
        replication_conn: Conn::Server(replication_conn),
        replicas: AtomicU64::new(0),
        writer: BlockWriter::new(info, io_timeout, certificates),
        cluster_writers: None,
        address,
        subscribers: vec![client],
        histories: Vec::new(),
        seed_host: String::new(),
    };
    node.count_replicas().await?;
    Ok(node)
}

/// The client of the first of `seeds` that answers, and whether it is a node of a cluster.
async fn first_answering(seeds: &[ConnectionInfo]) -> RedisResult<(Client, bool)> {
    let mut failure = None;
    for seed in seeds {
        let client = Client::open(seed.clone())?;
        let asked = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("INFO")
                .arg("cluster")
                .query_async::<String>(&mut conn)
                .await
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, asked).await {
            Ok(Ok(info)) => return Ok((client, info.contains("cluster_enabled:1"))),
            Ok(Err(e)) => failure = Some(e),
            Err(_) => {
                failure = Some(RedisError::from((
                    ErrorKind::Io,
                    "no answer",
                    describe(seed),
                )))
            }
        }
        if seeds.len() > 1 {
            tracing::warn!(
                "{}: {}",
                describe(seed),
                failure.as_ref().map_or(String::new(), |e| e.to_string())
            );
        }
    }
    Err(failure.unwrap_or_else(|| RedisError::from((ErrorKind::InvalidClientConfig, "no address"))))
}

/// Connects to the Redis Cluster `seeds` are nodes of (it has database 0 alone).
async fn connect_cluster(
    seeds: &[ConnectionInfo],
    io_timeout: Duration,
    certificates: Option<&redis::TlsCertificates>,
    generation: u64,
) -> RedisResult<Node> {
    if let Some(seed) = seeds.iter().find(|s| s.redis_settings().db() != 0) {
        return Err(RedisError::from((
            ErrorKind::InvalidClientConfig,
            "a Redis Cluster has database 0 alone",
            describe(seed),
        )));
    }
    let conn = cluster_client(seeds, io_timeout, certificates).await?;
    let seed_host = match seeds[0].addr() {
        ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => host.clone(),
        _ => String::new(),
    };
    let first = &seeds[0];
    let nodes: Vec<ConnectionInfo> = (nodes_seen(conn.clone(), &seed_host).await?.iter())
        .map(|n| at_address(first, &n.address.host, n.address.port))
        .collect();
    // Every node is a seed of the client kept: the ones given may be the ones that die, and
    // the client goes back to its seeds when it has lost every connection.
    let unknown: Vec<ConnectionInfo> = (nodes.iter())
        .filter(|n| !seeds.iter().any(|s| s.addr() == n.addr()))
        .cloned()
        .collect();
    let conn = match unknown.is_empty() {
        true => conn,
        false => {
            let all: Vec<ConnectionInfo> = seeds.iter().chain(&unknown).cloned().collect();
            cluster_client(&all, io_timeout, certificates).await?
        }
    };
    // A client made while a failover is under way may hold a map of slots naming the primary
    // that failed, and wait on it long after the cluster has moved on (its requests to every
    // other primary skip it silently): such a client is not taken, and is asked for again.
    let nodes_now = nodes_seen(conn.clone(), &seed_host).await?;
    for primary in nodes_now.iter().filter(|n| n.primary && n.has_slots) {
        let ping = Conn::Cluster(conn.clone())
            .send_to(&redis::cmd("PING"), &primary.address)
            .await
            .and_then(Value::extract_error);
        if let Err(e) = ping {
            // (Waited for while it may come back: not when it refuses us for good.)
            let gone_for_now =
                crate::store::is_transient(&e) || e.kind() == ErrorKind::ClusterConnectionNotFound;
            let kind = match gone_for_now {
                true => ErrorKind::Server(ServerErrorKind::TryAgain),
                false => ErrorKind::Io,
            };
            return Err(RedisError::from((
                kind,
                "a primary of the cluster did not answer",
                format!("{}:{}: {e}", primary.address.host, primary.address.port),
            )));
        }
    }
    let cluster_writers =
        ClusterWriters::new(&serving(&nodes_now), &seeds[0], io_timeout, certificates);
    let mut node = Node {
        generation,
        replication_conn: Conn::Cluster(conn.clone()),
        conn: Conn::Cluster(conn),
        replicas: AtomicU64::new(0),
        writer: None,
        cluster_writers,
        address: describe_cluster(seeds),
        subscribers: nodes
            .into_iter()
            .map(Client::open)
            .collect::<RedisResult<_>>()?,
        histories: Vec::new(),
        seed_host,
    };
    node.histories = node.primaries_now().await?.histories;
    node.count_replicas().await?;
    Ok(node)
}

/// The slots each primary of `nodes` serves, for [`ClusterWriters`].
fn serving(nodes: &[ClusterNode]) -> Serving {
    (nodes.iter().filter(|n| n.primary))
        .map(|n| ((n.address.host.clone(), n.address.port), n.slots.clone()))
        .collect()
}

/// How often the cluster client tries a request again by itself (see [`cluster_client`]).
const CLIENT_RETRIES: u32 = 8;

/// A client of the Redis Cluster of `seeds`, connected.
async fn cluster_client(
    seeds: &[ConnectionInfo],
    io_timeout: Duration,
    certificates: Option<&redis::TlsCertificates>,
) -> RedisResult<ClusterConnection> {
    // The client's own retries are for redirects, which it follows at once; a cluster that
    // cannot serve a request yet (`TRYAGAIN` while a slot moves, a failover) is waited out
    // by the caller's retries within `--io-timeout`, not by the client's back-off (by
    // default up to 16 tries with waits growing to 11 minutes: a resharding stalled a
    // request for longer than any timeout).
    let mut builder = ClusterClientBuilder::new(seeds.to_vec())
        .retries(CLIENT_RETRIES)
        .min_retry_wait(10)
        .max_retry_wait(500)
        .connection_timeout(CONNECT_TIMEOUT)
        .tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true))
        .response_timeout(response_timeout(io_timeout));
    if let Some(certificates) = certificates {
        builder = builder.certs(certificates.clone());
    }
    builder.build()?.get_async_connection().await
}

/// The nodes of a cluster as the node `conn` asks sees them (see [`cluster_nodes`]).
async fn nodes_seen(
    mut conn: impl redis::aio::ConnectionLike + Send,
    reached_at: &str,
) -> RedisResult<Vec<ClusterNode>> {
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await?;
    Ok(cluster_nodes(&text, reached_at))
}

/// A cluster's address for messages: its seeds.
fn describe_cluster(seeds: &[ConnectionInfo]) -> String {
    let listed: Vec<String> = seeds.iter().map(describe).collect();
    format!("the Redis Cluster of {}", listed.join(", "))
}

impl Node {
    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    /// Asks how many replicas the server has now (each primary of a cluster: the fewest).
    pub async fn count_replicas(&self) -> RedisResult<u64> {
        let count = match self.is_cluster() {
            true => self.primaries_now().await?.fewest_replicas,
            false => {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut self.conn.clone())
                    .await?;
                crate::server::ServerInfo::parse(&info).replicas
            }
        };
        self.replicas.store(count, Ordering::Relaxed);
        Ok(count)
    }

    /// Of a cluster, what its primaries say of their replication now: whether one changed
    /// since the cluster was connected, a replica promoted, or a primary restarted, begins a
    /// new replication history (`master_replid`), and the writes its predecessor had not
    /// passed on are gone; and how many replicas each has (the count is kept). A cluster's
    /// connection follows failovers by itself, unseen; a mount asks this before it confirms
    /// a replica has its writes, and takes a change for a move to a new node. Each primary
    /// counts the replicas linked to it, even while they load its data: the cluster's own
    /// list of nodes may not name a new replica yet.
    pub async fn replication_now(&self) -> RedisResult<ClusterReplication> {
        let now = self.primaries_now().await?;
        self.replicas.store(now.fewest_replicas, Ordering::Relaxed);
        Ok(ClusterReplication {
            failed_over: now.histories != self.histories,
            replicas: now.fewest_replicas,
        })
    }

    /// `INFO replication` of every primary of a cluster (of none, for one server). (One the
    /// client holds no connection to is left out: the histories then differ, and the caller
    /// takes that for a move, which is checked, rather than miss one.)
    async fn primaries_now(&self) -> RedisResult<PrimariesNow> {
        let Conn::Cluster(conn) = &self.conn else {
            return Ok(PrimariesNow::default());
        };
        let every_primary = RoutingInfo::MultiNode((
            MultipleNodeRoutingInfo::AllMasters,
            Some(ResponsePolicy::Special),
        ));
        let info = redis::cmd("INFO").arg("replication").clone();
        let replies = conn.clone().route_command(info, every_primary).await?;
        let Value::Map(replies) = replies else {
            return Err(RedisError::from((
                ErrorKind::Parse,
                "INFO of every primary",
                format!("{replies:?}"),
            )));
        };
        let mut now = PrimariesNow {
            fewest_replicas: u64::MAX,
            ..PrimariesNow::default()
        };
        for (_, reply) in replies {
            let text: String = redis::from_redis_value(reply.extract_error()?)?;
            let info = crate::server::ServerInfo::parse(&text);
            now.histories.push(info.replication_id);
            now.fewest_replicas = now.fewest_replicas.min(info.replicas);
        }
        now.histories.sort();
        if now.histories.is_empty() {
            now.fewest_replicas = 0;
        }
        Ok(now)
    }

    /// The primaries of a cluster that hold keys now (none for one server: it is its own).
    /// One the cluster holds failed but with slots still is named: what it holds cannot be
    /// reached, and asking it fails (until the cluster moves its slots, or this view learns
    /// of a move), rather than its keys being passed over.
    pub async fn primaries(&self) -> RedisResult<Vec<NodeAddress>> {
        if !self.is_cluster() {
            return Ok(Vec::new());
        }
        let nodes = self.cluster_nodes().await?;
        Ok((nodes.into_iter())
            .filter(|n| n.primary && n.has_slots)
            .map(|n| n.address)
            .collect())
    }

    /// Waits up to `timeout` for replicas to have the blocks a cluster's block writers wrote
    /// (see [`ClusterWriters::confirm`]); `None` where nothing was left to confirm.
    pub async fn confirm_block_writes(&self, timeout: Duration) -> RedisResult<Option<u64>> {
        match &self.cluster_writers {
            Some(writers) => writers.confirm(timeout).await,
            None => Ok(None),
        }
    }

    /// Reads again which primary serves each slot, for the block writers (after one said a
    /// slot moved).
    pub async fn reread_slots(&self) -> RedisResult<()> {
        if let Some(writers) = &self.cluster_writers {
            writers.update(&serving(&self.cluster_nodes().await?));
        }
        Ok(())
    }

    /// The nodes of the cluster, as one of them sees them now.
    async fn cluster_nodes(&self) -> RedisResult<Vec<ClusterNode>> {
        nodes_seen(self.conn.clone(), &self.seed_host).await
    }

    /// A Pub/Sub connection to the server, or to the first node of a cluster that answers.
    pub async fn pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        let mut failure = None;
        for client in &self.subscribers {
            match client.get_async_pubsub().await {
                Ok(pubsub) => return Ok(pubsub),
                Err(e) => failure = Some(e),
            }
        }
        Err(failure.unwrap_or_else(|| RedisError::from((ErrorKind::Io, "no node to subscribe on"))))
    }
}

/// A client of the sentinels of `target`, finding its primary.
fn sentinel_client(target: &SentinelTarget) -> RedisResult<SentinelClient> {
    let mut builder = SentinelClientBuilder::new(
        target.sentinels.clone(),
        &target.master,
        SentinelServerType::Master,
    )?
    .set_client_to_redis_db(target.db)
    .set_client_to_redis_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    if let Some(user) = &target.username {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = &target.password {
        builder = builder.set_client_to_redis_password(password);
    }
    if let Some(password) = &target.sentinel_password {
        builder = builder.set_client_to_sentinel_password(password);
    }
    if target.tls {
        builder = builder
            .set_client_to_redis_tls_mode(TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(TlsMode::Secure);
        if let Some(certificates) = &target.certificates {
            builder = builder
                .set_client_to_redis_certificates(certificates.clone())
                .set_client_to_sentinel_certificates(certificates.clone());
        }
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_of_one_key_are_told_from_others() {
        assert_eq!(one_key(redis::cmd("get").arg("k")), Some(&b"k"[..]));
        assert_eq!(
            one_key(redis::cmd("HSET").arg("h").arg("f").arg(1)),
            Some(&b"h"[..])
        );
        assert_eq!(one_key(redis::cmd("DEL").arg("a").arg("b")), None);
        assert_eq!(one_key(redis::cmd("del").arg("a")), Some(&b"a"[..]));
        assert!(key_by_key(redis::cmd("DEL").arg("a")).is_none());
        assert!(key_by_key(redis::cmd("GET").arg("a")).is_none());
        let parts = key_by_key(redis::cmd("UNLINK").arg("a").arg("b")).expect("split");
        let keys: Vec<Option<&[u8]>> = parts.cmd_iter().map(one_key).collect();
        assert_eq!(keys, [Some(&b"a"[..]), Some(&b"b"[..])]);
        assert_eq!(one_key(&redis::cmd("INFO")), None);
        assert_eq!(
            one_key(redis::cmd("EVALSHA").arg("x").arg(1).arg("k")),
            None
        );
    }

    #[test]
    fn cluster_nodes_lists_addresses_and_primaries_with_slots() {
        let text = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001,node-b master,fail - 0 0 2 disconnected
c3 [::1]:7002@17002 slave a1 0 0 1 connected
e5 127.0.0.1:7003@17003 master - 0 0 3 connected [77-<-a1]
d4 :0@0 master,noaddr - 0 0 0 disconnected
garbage
";
        let nodes = cluster_nodes(text, "seed");
        assert_eq!(nodes.len(), 4);
        let alone = cluster_nodes(
            "a1 :7000@17000 myself,master - 0 0 0 connected 0-16383",
            "h",
        );
        assert_eq!(alone[0].address.host, "h");
        assert!(nodes[0].primary);
        assert_eq!(
            nodes[0].address,
            NodeAddress {
                host: "127.0.0.1".into(),
                port: 7000
            }
        );
        assert!(nodes[1].primary && !nodes[1].has_slots);
        assert!(
            nodes[0].has_slots && nodes[3].has_slots,
            "serving and importing"
        );
        assert_eq!(nodes[2].address.host, "::1");
        assert!(!nodes[2].primary);
        assert_eq!(nodes[0].slots, vec![(0, 5460)]);
        assert!(
            nodes[3].slots.is_empty(),
            "slots on their way in are not served yet"
        );
        let scattered = cluster_nodes("f6 h:1@2 master - 0 0 4 connected 3 7-9 [10->-a1]", "h");
        assert_eq!(scattered[0].slots, vec![(3, 3), (7, 9)]);
    }
}
