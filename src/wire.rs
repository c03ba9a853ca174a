//! Block writes over connections of their own, speaking RESP directly.
//!
//! The general client copies a value three times on its way out (into the command, into the
//! pipeline, into its codec's buffer); for block data, most of what a sequential writer moves,
//! those copies were the mount's largest cost. Here each block goes from its buffer to the
//! socket (or, over TLS, to the encryption) in one vectored write. TCP and TLS over TCP are
//! spoken; other addresses (Unix sockets) keep the general client.

use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, ErrorKind, RedisError, RedisResult, ServerErrorKind};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::codec::Encoded;

/// Idle connections kept for the next batch.
const IDLE_CONNECTIONS: usize = 8;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A byte stream both ways: a TCP connection, or TLS over one.
trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// One connection for block writes, its replies read through a buffer.
type Connection = BufReader<Box<dyn Duplex>>;

/// A connection of the pool, and whether it carried writes that no replica has confirmed on it
/// yet (see [`BlockWriter::confirm`]).
struct Pooled {
    conn: Connection,
    unconfirmed: bool,
}

/// Writes blocks to one Redis server over a small pool of connections of its own.
pub struct BlockWriter {
    host: String,
    port: u16,
    /// For a TLS address: the client's TLS settings and the name the server must prove.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// AUTH and SELECT, sent on every new connection, and how many replies they draw.
    greeting: Vec<u8>,
    greeting_replies: usize,
    idle: Mutex<Vec<Pooled>>,
    reply_timeout: Duration,
    /// Whether writes are confirmed on their own connections (a cluster's: see
    /// [`BlockWriter::confirm`]); a single server's are confirmed on another.
    confirms: bool,
    /// Writes under way hold it shared; a confirmation holds it alone, so that every write
    /// answered before it began is on a connection it waits on.
    writing: tokio::sync::RwLock<()>,
    /// A connection that carried unconfirmed writes was lost: they cannot be confirmed.
    orphaned: std::sync::atomic::AtomicBool,
}

impl BlockWriter {
    /// A writer for the server `info` names (over TLS: trusting the CA of `certificates`, or
    /// the system's, and showing its client certificate, as the general client does), or
    /// `None` for addresses it does not speak.
    pub fn new(
        info: &ConnectionInfo,
        io_timeout: Duration,
        certificates: Option<&redis::TlsCertificates>,
    ) -> Option<BlockWriter> {
        let (host, port, tls) = match info.addr() {
            ConnectionAddr::Tcp(host, port) => (host, port, None),
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                ..
            } => {
                let name = ServerName::try_from(host.clone()).ok()?;
                let connector = TlsConnector::from(tls_settings(certificates)?);
                (host, port, Some((connector, name)))
            }
            _ => return None,
        };
        let settings = info.redis_settings();
        let mut greeting = Vec::new();
        let mut greeting_replies = 0;
        if let Some(password) = settings.password() {
            let mut auth: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = settings.username() {
                auth.push(user.as_bytes());
            }
            auth.push(password.as_bytes());
            greeting.extend(command_header(&auth, None));
            greeting_replies += 1;
        }
        if settings.db() != 0 {
            let db = settings.db().to_string();
            greeting.extend(command_header(&[b"SELECT", db.as_bytes()], None));
            greeting_replies += 1;
        }
        Some(BlockWriter {
            host: host.clone(),
            port: *port,
            tls,
            greeting,
            greeting_replies,
            idle: Mutex::new(Vec::new()),
            reply_timeout: io_timeout.clamp(Duration::from_secs(5), Duration::from_secs(30)),
            confirms: false,
            writing: tokio::sync::RwLock::new(()),
            orphaned: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The same writer, its writes confirmed on their own connections (see
    /// [`BlockWriter::confirm`]).
    fn confirming(self) -> BlockWriter {
        BlockWriter {
            confirms: true,
            ..self
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Pooled>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores each block under its key, in one pipeline.
    pub async fn set(&self, blocks: &[(String, &Encoded)]) -> RedisResult<()> {
        let _writing = self.writing.read().await;
        let idle = self.idle().pop();
        let mut pooled = match idle {
            Some(pooled) => pooled,
            None => Pooled {
                conn: self.connect().await?,
                unconfirmed: false,
            },
        };
        let sent = tokio::time::timeout(self.reply_timeout, send_sets(&mut pooled.conn, blocks))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no reply to block writes"));
        let refusal = match sent {
            Ok(Ok(refusal)) => refusal,
            Ok(Err(e)) | Err(e) => {
                self.lose(&pooled);
                return Err(e.into());
            }
        };
        // Every reply was read: the connection is in step, whatever they said. One with
        // writes to confirm is kept, however many are idle.
        pooled.unconfirmed |= self.confirms;
        let mut idle = self.idle();
        if idle.len() < IDLE_CONNECTIONS || pooled.unconfirmed {
            idle.push(pooled);
        }
        match refusal {
            None => Ok(()),
            Some(reason) => Err(refused(reason)),
        }
    }

    /// Drops a connection that failed: writes it carried unconfirmed cannot be confirmed.
    fn lose(&self, pooled: &Pooled) {
        if pooled.unconfirmed {
            self.orphaned
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Waits up to `timeout` for a replica to have every write this writer had answered when
    /// it was called: `WAIT` on each connection that carried writes since its last
    /// confirmation (`WAIT` covers its own connection's writes; block writes wait meanwhile).
    /// Answers the fewest replicas that acknowledged, or `None` if nothing was left to
    /// confirm. Fails if a connection with unconfirmed writes was lost: its writes can only
    /// be stored again.
    pub async fn confirm(&self, timeout: Duration) -> RedisResult<Option<u64>> {
        let _alone = self.writing.write().await;
        let unconfirmed: Vec<Pooled> = {
            let mut idle = self.idle();
            let (unconfirmed, rest) = idle.drain(..).partition(|p| p.unconfirmed);
            *idle = rest;
            unconfirmed
        };
        if unconfirmed.is_empty() && !self.orphaned() {
            return Ok(None);
        }
        let limit = timeout + self.reply_timeout;
        let waits = unconfirmed.into_iter().map(|mut pooled| async move {
            let acknowledged = tokio::time::timeout(limit, wait(&mut pooled.conn, timeout)).await;
            (pooled, acknowledged)
        });
        let mut fewest = u64::MAX;
        for (mut pooled, acknowledged) in futures_util::future::join_all(waits).await {
            match acknowledged {
                Ok(Ok(count)) => {
                    fewest = fewest.min(count);
                    pooled.unconfirmed = count == 0;
                    self.idle().push(pooled);
                }
                _ => self.lose(&pooled),
            }
        }
        if self.orphaned() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "a connection that wrote blocks was lost before a replica confirmed them",
            )
            .into());
        }
        Ok(Some(fewest))
    }

    fn orphaned(&self) -> bool {
        self.orphaned.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn connect(&self) -> RedisResult<Connection> {
        let timed_out = |_| io::Error::new(io::ErrorKind::TimedOut, "connecting timed out");
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(timed_out)??;
        stream.set_nodelay(true)?;
        let stream: Box<dyn Duplex> = match &self.tls {
            Some((connector, name)) => Box::new(
                tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), stream))
                    .await
                    .map_err(timed_out)??,
            ),
            None => Box::new(stream),
        };
        let mut conn = BufReader::new(stream);
        if self.greeting_replies > 0 {
            let greeted = tokio::time::timeout(self.reply_timeout, self.greet(&mut conn))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no reply to AUTH"))??;
            if let Some(reason) = greeted {
                return Err(RedisError::from((
                    ErrorKind::AuthenticationFailed,
                    "a connection for block writes was refused",
                    reason,
                )));
            }
        }
        Ok(conn)
    }

    /// Sends `AUTH` and `SELECT` and reads their replies: the first refusal, if any.
    async fn greet(&self, conn: &mut Connection) -> io::Result<Option<String>> {
        conn.get_mut().write_all(&self.greeting).await?;
        conn.get_mut().flush().await?;
        let mut refusal = None;
        for _ in 0..self.greeting_replies {
            refusal = refusal.or(read_status(conn).await?);
        }
        Ok(refusal)
    }
}

/// Writes one SET per block in a single vectored write and reads every reply; returns the
/// first refusal, if any.
async fn send_sets(
    conn: &mut Connection,
    blocks: &[(String, &Encoded)],
) -> io::Result<Option<String>> {
    let headers: Vec<Vec<u8>> = blocks
        .iter()
        .map(|(key, value)| command_header(&[b"SET", key.as_bytes()], Some(value.stored_len())))
        .collect();
    let mut slices = Vec::with_capacity(blocks.len() * 4);
    for (header, (_, value)) in headers.iter().zip(blocks) {
        let (tag, body) = value.parts();
        slices.extend([
            IoSlice::new(header),
            IoSlice::new(tag),
            IoSlice::new(body),
            IoSlice::new(b"\r\n"),
        ]);
    }
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let written = conn.get_mut().write_vectored(rest).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, written);
    }
    // TLS keeps what it encrypted until flushed.
    conn.get_mut().flush().await?;
    let mut refusal = None;
    for _ in blocks {
        let reason = read_status(conn).await?;
        refusal = refusal.or(reason);
    }
    Ok(refusal)
}

/// Sends `WAIT 1 <timeout>` and reads how many replicas acknowledged.
async fn wait(conn: &mut Connection, timeout: Duration) -> io::Result<u64> {
    let ms = timeout.as_millis().to_string();
    conn.get_mut()
        .write_all(&command_header(&[b"WAIT", b"1", ms.as_bytes()], None))
        .await?;
    conn.get_mut().flush().await?;
    let mut line = Vec::new();
    if conn.read_until(b'\n', &mut line).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let text = String::from_utf8_lossy(&line);
    (text
        .strip_prefix(':')
        .and_then(|n| n.trim_end().parse().ok()))
    .ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected reply to WAIT: {:?}", text.trim_end()),
        )
    })
}

/// The RESP encoding of a command's arguments, with room announced for one more argument of
/// `last_len` bytes that the caller writes itself.
fn command_header(args: &[&[u8]], last_len: Option<usize>) -> Vec<u8> {
    let count = args.len() + usize::from(last_len.is_some());
    let mut out = format!("*{count}\r\n").into_bytes();
    for arg in args {
        out.extend(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(len) = last_len {
        out.extend(format!("${len}\r\n").as_bytes());
    }
    out
}

/// Reads a status reply: `None` for `+...`, the message of an error reply. Anything else
/// means the connection is out of step.
async fn read_status(conn: &mut Connection) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    if conn.read_until(b'\n', &mut line).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let text = String::from_utf8_lossy(&line).trim_end().to_string();
    match line.first() {
        Some(b'+') => Ok(None),
        Some(b'-') => Ok(Some(text[1..].to_string())),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected reply to a block write: {text:?}"),
        )),
    }
}

/// The TLS settings of block writes: the CA of `certificates` (or the system's roots) and its
/// client certificate. `None` where they cannot be made: the general client, which reads the
/// same files, then says what is wrong with them.
fn tls_settings(
    certificates: Option<&redis::TlsCertificates>,
) -> Option<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    match certificates.and_then(|c| c.root_cert.as_deref()) {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots.add(cert.ok()?).ok()?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // A system certificate rustls cannot use is one the general client skips too.
                let _ = roots.add(cert);
            }
        }
    }
    let settings = rustls::ClientConfig::builder().with_root_certificates(roots);
    let settings = match certificates.and_then(|c| c.client_tls.as_ref()) {
        Some(client) => {
            let chain = CertificateDer::pem_slice_iter(&client.client_cert)
                .collect::<Result<Vec<_>, _>>()
                .ok()?;
            let key = PrivateKeyDer::from_pem_slice(&client.client_key).ok()?;
            settings.with_client_auth_cert(chain, key).ok()?
        }
        None => settings.with_no_client_auth(),
    };
    Some(Arc::new(settings))
}

/// A refused write: a server still loading its data is waited for, anything else is final.
fn refused(reason: String) -> RedisError {
    if reason.starts_with("LOADING") || reason.starts_with("TRYAGAIN") {
        return io::Error::new(io::ErrorKind::ConnectionRefused, reason).into();
    }
    // A node demoted, or one whose primary is gone, is to be replaced, as the general client's
    // errors say (see `Link::is_lost`).
    let kind = if reason.starts_with("READONLY") {
        ErrorKind::Server(ServerErrorKind::ReadOnly)
    } else if reason.starts_with("MASTERDOWN") {
        ErrorKind::Server(ServerErrorKind::MasterDown)
    } else if reason.starts_with("CLUSTERDOWN") {
        // A cluster between a primary's death and its replica's promotion: waited out.
        ErrorKind::Server(ServerErrorKind::ClusterDown)
    } else if reason.starts_with("MOVED") {
        // A cluster's slot served elsewhere now (see `ClusterWriters::set`).
        ErrorKind::Server(ServerErrorKind::Moved)
    } else if reason.starts_with("ASK") {
        ErrorKind::Server(ServerErrorKind::Ask)
    } else {
        ErrorKind::Extension
    };
    RedisError::from((kind, "Redis refused a block write", reason))
}

/// Block writes to a Redis Cluster: each block goes to the primary that serves its slot, over
/// that node's own [`BlockWriter`], all nodes at once. Blocks whose slot moved since the map
/// was read go the cluster client's way (which follows the move), and the map is read again.
pub struct ClusterWriters {
    map: Mutex<Arc<SlotMap>>,
    /// How a node is connected to: the first seed's settings (TLS, user, password).
    template: ConnectionInfo,
    io_timeout: Duration,
    certificates: Option<redis::TlsCertificates>,
}

/// The primary serving each slot, and a writer for every node written to so far (kept while
/// the cluster is connected, so that writes on them are confirmed after their slots moved).
#[derive(Default)]
struct SlotMap {
    owners: Vec<Option<usize>>,
    writers: Vec<((String, u16), Arc<BlockWriter>)>,
}

/// The primaries of a cluster and the slot ranges each serves (see `Node::serving`).
pub type Serving = Vec<((String, u16), Vec<(u16, u16)>)>;

impl ClusterWriters {
    /// Writers for the cluster whose primaries serve `serving`, connected as `template` is
    /// (`None` for addresses a writer does not speak).
    pub fn new(
        serving: &Serving,
        template: &ConnectionInfo,
        io_timeout: Duration,
        certificates: Option<&redis::TlsCertificates>,
    ) -> Option<ClusterWriters> {
        BlockWriter::new(template, io_timeout, certificates)?;
        let writers = ClusterWriters {
            map: Mutex::new(Arc::default()),
            template: template.clone(),
            io_timeout,
            certificates: certificates.cloned(),
        };
        writers.update(serving);
        Some(writers)
    }

    /// Takes `serving` as the map of slots, keeping the writers of nodes known before.
    pub fn update(&self, serving: &Serving) {
        let old = self.map().clone();
        let mut map = SlotMap {
            owners: vec![None; SLOTS],
            writers: old.writers.clone(),
        };
        for (address, ranges) in serving {
            let index = match map.writers.iter().position(|(a, _)| a == address) {
                Some(index) => index,
                None => {
                    let info = crate::link::at_address(&self.template, &address.0, address.1);
                    let Some(writer) =
                        BlockWriter::new(&info, self.io_timeout, self.certificates.as_ref())
                    else {
                        continue;
                    };
                    map.writers
                        .push((address.clone(), Arc::new(writer.confirming())));
                    map.writers.len() - 1
                }
            };
            for &(first, last) in ranges {
                for slot in first..=last.min(SLOTS as u16 - 1) {
                    map.owners[slot as usize] = Some(index);
                }
            }
        }
        *self.map.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(map);
    }

    fn map(&self) -> Arc<SlotMap> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stores each block under its key, each node's in one pipeline, all at once. Answers the
    /// blocks a node sent elsewhere (their slot moved): they are to go the cluster client's
    /// way, and the map to be read again.
    pub async fn set<'a>(
        &self,
        blocks: &[(String, &'a Encoded)],
    ) -> RedisResult<Vec<(String, &'a Encoded)>> {
        let map = self.map();
        let mut by_node: Vec<Vec<(String, &Encoded)>> = vec![Vec::new(); map.writers.len()];
        let mut elsewhere = Vec::new();
        for (key, data) in blocks {
            match map.owners[slot_of(key.as_bytes()) as usize] {
                Some(index) => by_node[index].push((key.clone(), *data)),
                None => elsewhere.push((key.clone(), *data)),
            }
        }
        let sent = (map.writers.iter().zip(&by_node))
            .filter(|(_, part)| !part.is_empty())
            .map(|((_, writer), part)| async move { (part, writer.set(part).await) });
        for (part, outcome) in futures_util::future::join_all(sent).await {
            match outcome {
                Ok(()) => {}
                // (Setting a block again is harmless: the whole part goes again.)
                Err(e) if crate::link::is_redirect(&e) => elsewhere.extend(part.iter().cloned()),
                Err(e) => return Err(e),
            }
        }
        Ok(elsewhere)
    }

    /// Waits up to `timeout` for a replica of every node written to to have its writes (see
    /// [`BlockWriter::confirm`]): the fewest replicas that acknowledged, `None` if nothing was
    /// left to confirm.
    pub async fn confirm(&self, timeout: Duration) -> RedisResult<Option<u64>> {
        let map = self.map();
        let waits = (map.writers.iter()).map(|(_, writer)| writer.confirm(timeout));
        let mut fewest: Option<u64> = None;
        for confirmed in futures_util::future::join_all(waits).await {
            if let Some(count) = confirmed? {
                fewest = Some(fewest.map_or(count, |f| f.min(count)));
            }
        }
        Ok(fewest)
    }
}

/// Hash slots of a Redis Cluster.
const SLOTS: usize = 16384;

/// The hash slot of `key`, by Redis Cluster's rule: the CRC16 of its first `{tag}` if that
/// is not empty, of the whole key otherwise.
pub fn slot_of(key: &[u8]) -> u16 {
    let tag = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tag.unwrap_or(key)) % SLOTS as u16
}

#[cfg(test)]
mod tests {
    use super::slot_of;

    #[test]
    fn slots_follow_redis_cluster_rules() {
        // As `CLUSTER KEYSLOT` answers.
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"somekey"), 11058);
        assert_eq!(slot_of(b"{foo}.bar"), 12182);
        assert_eq!(slot_of(b"x{foo}{bar}"), 12182);
        // An empty tag does not count: the whole key is hashed.
        assert_ne!(slot_of(b"{}foo"), slot_of(b"foo"));
    }
}
