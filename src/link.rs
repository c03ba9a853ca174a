//! Where the filesystem's Redis is now, and the connections to it.
//!
//! A [`Link`] holds the connected [`Node`]: one multiplexed connection for commands, the client
//! that Pub/Sub connects with, and the fast block writer where the address allows one. A node
//! is never reconnected in place: when its connection breaks, or a Sentinel-managed node answers
//! that it is no longer the primary, the link finds the primary again (the same address for a
//! fixed one; the sentinels' answer otherwise, checked with `ROLE`) and every user moves to the
//! new node at its next attempt. A node that failed is never written to again, so a former
//! primary that comes back still calling itself primary (it does, for seconds, before the
//! sentinels demote it) gets nothing that would be lost when it is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, Client, ConnectionInfo, ErrorKind, RedisError, RedisResult};
use redis::{ServerErrorKind, TlsMode};

use crate::options::{describe, Place, RedisTarget, SentinelTarget};
use crate::wire::BlockWriter;

/// How long connecting to one server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// One connected server.
pub struct Node {
    /// Counts the nodes a link has had, so that a failure reported late does not replace
    /// the node that replaced the one that failed.
    pub generation: u64,
    /// Commands, pipelines and scripts.
    pub conn: MultiplexedConnection,
    /// `WAIT`, which holds the connection it is sent on until replicas answer: apart, so
    /// that other requests do not wait behind it.
    pub replication_conn: MultiplexedConnection,
    /// Replicas connected to the server, as last asked (`INFO replication`).
    pub replicas: AtomicU64,
    /// Pub/Sub connects with it.
    pub client: Client,
    /// Block writes without the general client's copies, where the address allows.
    pub writer: Option<BlockWriter>,
    /// The server's address, safe to print.
    pub address: String,
}

/// How the primary is found.
enum Locator {
    /// At one address.
    Fixed(ConnectionInfo),
    /// By asking sentinels, which name it and check it with `ROLE`.
    Sentinel {
        sentinels: tokio::sync::Mutex<SentinelClient>,
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
            Place::Fixed(info) => Locator::Fixed(info.clone()),
            Place::Sentinel(s) => Locator::Sentinel {
                sentinels: tokio::sync::Mutex::new(sentinel_client(s)?),
                master: s.master.clone(),
            },
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(
                io_timeout.clamp(Duration::from_secs(5), Duration::from_secs(30)),
            ));
        let certificates = target.certificates.clone();
        let first = connect(&locator, &config, io_timeout, certificates.as_ref(), 1)
            .await
            .map_err(|e| e.found)?;
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
        let next = match connect(
            &self.locator,
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
async fn connect(
    locator: &Locator,
    config: &AsyncConnectionConfig,
    io_timeout: Duration,
    certificates: Option<&redis::TlsCertificates>,
    generation: u64,
) -> Result<Node, NotConnected> {
    let client = match locator {
        Locator::Fixed(info) => Client::open(info.clone())?,
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
        conn,
        replication_conn,
        replicas: AtomicU64::new(0),
        writer: BlockWriter::new(info, io_timeout, certificates),
        address,
        client,
    };
    node.count_replicas().await?;
    Ok(node)
}

impl Node {
    /// Asks the server how many replicas it has now.
    pub async fn count_replicas(&self) -> RedisResult<u64> {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut self.conn.clone())
            .await?;
        let count = crate::server::ServerInfo::parse(&info).replicas;
        self.replicas.store(count, Ordering::Relaxed);
        Ok(count)
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
