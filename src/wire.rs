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

/// Writes blocks to one Redis server over a small pool of connections of its own.
pub struct BlockWriter {
    host: String,
    port: u16,
    /// For a TLS address: the client's TLS settings and the name the server must prove.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// AUTH and SELECT, sent on every new connection, and how many replies they draw.
    greeting: Vec<u8>,
    greeting_replies: usize,
    idle: Mutex<Vec<Connection>>,
    reply_timeout: Duration,
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
        })
    }

    /// Stores each block under its key, in one pipeline.
    pub async fn set(&self, blocks: &[(String, &Encoded)]) -> RedisResult<()> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        let refusal = tokio::time::timeout(self.reply_timeout, send_sets(&mut conn, blocks))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no reply to block writes"))??;
        // Every reply was read: the connection is in step, whatever they said.
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_CONNECTIONS {
            idle.push(conn);
        }
        match refusal {
            None => Ok(()),
            Some(reason) => Err(refused(reason)),
        }
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
    } else {
        ErrorKind::Extension
    };
    RedisError::from((kind, "Redis refused a block write", reason))
}
