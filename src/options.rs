//! Command-line options: the Redis connection every binary shares, and the mount's own.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use crate::codec::Codec;
use crate::error::Error;

/// Default Redis host when neither `--redis` nor `--host` is given.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Default Redis port.
pub const DEFAULT_PORT: u16 = 6379;

/// Where Redis is and how to log in: flattened into every binary's options.
#[derive(Args, Clone, Debug, Default)]
pub struct ConnectionArgs {
    /// Redis URL: redis://[user[:password]@]host[:port][/db], rediss:// for TLS,
    /// redis://host:port,host:port.../0 for nodes of a Redis Cluster (any one node's URL
    /// finds the cluster too), redis+unix:///path/to/socket?db=N, or
    /// redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/MASTER[/db] for the
    /// primary that sentinels name (rediss+sentinel:// for TLS; sentinels' password from
    /// REDISFS_SENTINEL_PASSWORD). Overrides --host/--port/--db.
    #[arg(long, value_name = "URL", env = "REDISFS_URL", hide_env_values = true)]
    pub redis: Option<String>,
    /// Redis host [default: 127.0.0.1].
    #[arg(long, visible_alias = "redis-host", value_name = "HOST")]
    pub host: Option<String>,
    /// Redis port [default: 6379].
    #[arg(long, visible_alias = "redis-port", value_name = "PORT")]
    pub port: Option<u16>,
    /// Redis database number [default: 0].
    #[arg(long, visible_alias = "redis-db", value_name = "N")]
    pub db: Option<i64>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Certificates for a Redis reached over TLS (`rediss://`).
#[derive(Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// PEM file of the certificate authorities Redis's certificate must chain to (a private
    /// CA) [default: the system's CA store]. Implies TLS.
    #[arg(long, value_name = "FILE")]
    pub tls_ca_cert: Option<PathBuf>,
    /// PEM file of this client's certificate, for a Redis that asks for one
    /// (`tls-auth-clients`); needs --tls-key. Implies TLS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file of the private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// Whether any certificate was given.
    fn given(&self) -> bool {
        self.tls_ca_cert.is_some() || self.tls_cert.is_some()
    }

    /// The certificates, read; a file that cannot be read is an error naming it.
    fn certificates(&self) -> Result<redis::TlsCertificates, Error> {
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path).map_err(|e| Error::Local {
                path: format!("{what} {}", path.display()),
                reason: e.to_string(),
            })
        };
        let client_tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read(cert, "--tls-cert")?,
                client_key: read(key, "--tls-key")?,
            }),
            _ => None,
        };
        let root_cert = match &self.tls_ca_cert {
            Some(ca) => Some(read(ca, "--tls-ca-cert")?),
            None => None,
        };
        Ok(redis::TlsCertificates {
            client_tls,
            root_cert,
        })
    }
}

/// Where a Redis is found.
#[derive(Clone)]
pub enum Place {
    /// At these addresses (each may hold a password): one server, or any nodes of a Redis
    /// Cluster (its seeds: the client learns the rest from the first that answers).
    Addresses(Vec<ConnectionInfo>),
    /// Wherever the sentinels say its primary is.
    Sentinel(SentinelTarget),
}

/// A Redis whose primary sentinels name (`redis+sentinel://`).
#[derive(Clone)]
pub struct SentinelTarget {
    /// The sentinels' addresses.
    pub sentinels: Vec<ConnectionAddr>,
    /// The name the sentinels know the primary by.
    pub master: String,
    pub db: i64,
    /// Logging in to the primary.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Logging in to the sentinels (`REDISFS_SENTINEL_PASSWORD`).
    pub sentinel_password: Option<String>,
    /// TLS to the sentinels and the primary (`rediss+sentinel://`).
    pub tls: bool,
    /// Certificates of the TLS options.
    pub certificates: Option<redis::TlsCertificates>,
}

/// Port of a sentinel given without one.
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// A resolved Redis address, with a form that is safe to print.
#[derive(Clone)]
pub struct RedisTarget {
    /// Where to connect (may hold a password).
    pub place: Place,
    /// The address without credentials, for messages and logs.
    pub display: String,
    /// Whether the user named a server (otherwise a private one may be started).
    pub explicit: bool,
    /// The certificates of the TLS options, for connections made outside the client (the
    /// block writer's).
    pub certificates: Option<redis::TlsCertificates>,
}

impl std::fmt::Debug for RedisTarget {
    // Credentials stay out of debug output, as they do of `display`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisTarget({})", self.display)
    }
}

impl RedisTarget {
    /// The database number selected.
    pub fn db(&self) -> i64 {
        match &self.place {
            Place::Addresses(infos) => infos.first().map_or(0, |i| i.redis_settings().db()),
            Place::Sentinel(target) => target.db,
        }
    }
}

impl ConnectionArgs {
    /// Resolves the options and the `REDISFS_PASSWORD` / `REDISCLI_AUTH` environment into an
    /// address; a bad URL is an error naming it.
    pub fn target(&self) -> Result<RedisTarget, Error> {
        let explicit =
            self.redis.is_some() || self.host.is_some() || self.port.is_some() || self.db.is_some();
        if let Some(url) = &self.redis {
            if let Some(target) = sentinel_url(url) {
                let mut target = target.map_err(|reason| Error::BadAddress {
                    address: redact_url(url),
                    reason,
                })?;
                target.password = target.password.or_else(password_from_env);
                target.sentinel_password = std::env::var("REDISFS_SENTINEL_PASSWORD")
                    .ok()
                    .filter(|p| !p.is_empty());
                if self.tls.given() {
                    if !target.tls {
                        return Err(Error::BadAddress {
                            address: redact_url(url),
                            reason:
                                "--tls-ca-cert and --tls-cert need a rediss+sentinel:// URL (TLS)"
                                    .into(),
                        });
                    }
                    target.certificates = Some(self.tls.certificates()?);
                }
                return Ok(RedisTarget {
                    display: describe_sentinels(&target),
                    certificates: target.certificates.clone(),
                    place: Place::Sentinel(target),
                    explicit,
                });
            }
        }
        let certificates = match self.tls.given() {
            true => Some(self.tls.certificates()?),
            false => None,
        };
        let infos = match &self.redis {
            Some(url) => (seed_urls(url).iter())
                .map(|seed| {
                    let info =
                        seed.as_str()
                            .into_connection_info()
                            .map_err(|e| Error::BadAddress {
                                address: redact_url(url),
                                reason: e.to_string(),
                            })?;
                    finish(info, certificates.clone())
                })
                .collect::<Result<Vec<_>, Error>>()?,
            None => {
                let host = self.host.as_deref().unwrap_or(DEFAULT_HOST).to_string();
                let port = self.port.unwrap_or(DEFAULT_PORT);
                let addr = if self.tls.given() {
                    ConnectionAddr::TcpTls {
                        host: host.clone(),
                        port,
                        insecure: false,
                        tls_params: None,
                    }
                } else {
                    ConnectionAddr::Tcp(host.clone(), port)
                };
                let info = addr.into_connection_info().map_err(|e| Error::BadAddress {
                    address: format!("{host}:{port}"),
                    reason: e.to_string(),
                })?;
                let settings = info.redis_settings().clone().set_db(self.db.unwrap_or(0));
                vec![finish(
                    info.set_redis_settings(settings),
                    certificates.clone(),
                )?]
            }
        };
        Ok(RedisTarget {
            display: describe_all(&infos),
            place: Place::Addresses(infos),
            explicit,
            certificates,
        })
    }
}

/// One URL per address of a URL naming several (`redis://h1:6379,h2:6380/0`, a cluster's
/// seeds), each with the URL's scheme, credentials, database and options.
fn seed_urls(url: &str) -> Vec<String> {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return vec![url.to_string()];
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let (credentials, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    if !hosts.contains(',') {
        return vec![url.to_string()];
    }
    let scheme = &url[..scheme_end];
    (hosts.split(','))
        .map(|host| format!("{scheme}{credentials}{host}{path}"))
        .collect()
}

/// Completes the connection settings of one address: the password from the environment where
/// the URL gave none, TCP without delays, the TLS options' certificates.
fn finish(
    mut info: ConnectionInfo,
    certificates: Option<redis::TlsCertificates>,
) -> Result<ConnectionInfo, Error> {
    if info.redis_settings().password().is_none() {
        if let Some(password) = password_from_env() {
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
    }
    // Requests overlap on one connection (a close's bookkeeping and the next create):
    // with Nagle's algorithm the second waited for the first's reply to bring the ACK, a
    // whole round trip more on any network but loopback.
    let info = info.set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    with_certificates(info, certificates)
}

/// Addresses in URL form with no credentials: several as one URL with the hosts listed.
fn describe_all(infos: &[ConnectionInfo]) -> String {
    let host_port = |info: &ConnectionInfo| match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            Some(host_and_port(host, *port))
        }
        _ => None,
    };
    let Some(first) = infos.first() else {
        return String::new();
    };
    let one = describe(first);
    let hosts: Option<Vec<String>> = infos.iter().map(host_port).collect();
    match (hosts, host_port(first)) {
        (Some(hosts), Some(first_host)) if hosts.len() > 1 => {
            one.replacen(&first_host, &hosts.join(","), 1)
        }
        _ => one,
    }
}

/// The password of `REDISFS_PASSWORD`, or of `REDISCLI_AUTH` as redis-cli reads it.
fn password_from_env() -> Option<String> {
    std::env::var("REDISFS_PASSWORD")
        .or_else(|_| std::env::var("REDISCLI_AUTH"))
        .ok()
        .filter(|p| !p.is_empty())
}

/// Reads `redis+sentinel://[user[:password]@]host[:port][,host[:port]…]/MASTER[/db]` (and
/// `rediss+sentinel://`); `None` for other URLs, the reason for a bad one.
fn sentinel_url(url: &str) -> Option<Result<SentinelTarget, String>> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
        (false, rest)
    } else {
        (true, url.strip_prefix("rediss+sentinel://")?)
    };
    Some(parse_sentinel_url(tls, rest))
}

fn parse_sentinel_url(tls: bool, rest: &str) -> Result<SentinelTarget, String> {
    // (Errors never show the user name or password, which may be what did not decode.)
    let decode = |s: &str, what: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|d| d.into_owned())
            .map_err(|_| format!("the {what} is not valid UTF-8 once decoded"))
    };
    // The credentials end at the last '@' (a '/' in a password that should have been written
    // %2F must not cut them short); the sentinels at the first '/' after them.
    let (user_info, rest) = match rest.rsplit_once('@') {
        Some((user_info, rest)) => (Some(user_info), rest),
        None => (None, rest),
    };
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (username, password) = match user_info.map(|u| u.split_once(':').unwrap_or((u, ""))) {
        None => (None, None),
        Some((user, password)) => (
            Some(decode(user, "user name")?).filter(|u| !u.is_empty()),
            Some(decode(password, "password")?).filter(|p| !p.is_empty()),
        ),
    };
    let mut sentinels = Vec::new();
    for host_port in hosts.split(',') {
        // An IPv6 address is written in brackets: `[::1]:26379`.
        let (host, port) = match host_port.strip_prefix('[') {
            Some(bracketed) => bracketed
                .split_once(']')
                .map(|(host, after)| (host, after.strip_prefix(':')))
                .ok_or_else(|| format!("'{host_port}' lacks its ']'"))?,
            None => match host_port.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            },
        };
        let port = match port {
            None => DEFAULT_SENTINEL_PORT,
            Some(port) => port
                .parse()
                .map_err(|_| format!("'{port}' is not a port number"))?,
        };
        if host.is_empty() {
            return Err("a sentinel's host is empty".into());
        }
        sentinels.push(if tls {
            ConnectionAddr::TcpTls {
                host: host.to_string(),
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.to_string(), port)
        });
    }
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let master = decode(
        segments
            .next()
            .ok_or("no master name after the sentinels (…/MASTER[/db])")?,
        "master name",
    )?;
    let db = match segments.next() {
        None => 0,
        Some(db) => db
            .parse()
            .map_err(|_| format!("'{db}' is not a database number"))?,
    };
    if let Some(extra) = segments.next() {
        return Err(format!("unexpected '{extra}' after the database number"));
    }
    Ok(SentinelTarget {
        sentinels,
        master,
        db,
        username,
        password,
        sentinel_password: None,
        tls,
        certificates: None,
    })
}

/// A sentinel target in URL form with no credentials.
fn describe_sentinels(target: &SentinelTarget) -> String {
    let hosts: Vec<String> = (target.sentinels.iter())
        .map(|addr| match addr {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                host_and_port(host, *port)
            }
            other => format!("{other:?}"),
        })
        .collect();
    let user = target
        .username
        .as_ref()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    format!(
        "{}://{user}{}/{}/{}",
        if target.tls {
            "rediss+sentinel"
        } else {
            "redis+sentinel"
        },
        hosts.join(","),
        target.master,
        target.db
    )
}

/// `info` with the certificates of the TLS options, if any were given (they need a TLS
/// address).
fn with_certificates(
    info: ConnectionInfo,
    certificates: Option<redis::TlsCertificates>,
) -> Result<ConnectionInfo, Error> {
    let Some(certificates) = certificates else {
        return Ok(info);
    };
    let refused = |reason: String| Error::BadAddress {
        address: describe(&info),
        reason,
    };
    if !matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
        return Err(refused(
            "--tls-ca-cert and --tls-cert need a rediss:// URL (TLS)".into(),
        ));
    }
    let client = redis::Client::build_with_tls(info.clone(), certificates)
        .map_err(|e| refused(format!("TLS certificates: {e}")))?;
    Ok(client.get_connection_info().clone())
}

/// Replaces the password of every Redis URL on this process's command line, as `ps` and
/// `/proc/<pid>/cmdline` show it to every user, with `x`s (the arguments were parsed already).
/// Where the kernel does not let a process write its own memory, says so and goes on.
pub fn hide_passwords_from_process_list() {
    if let Err(e) = overwrite_passwords_in_command_line() {
        tracing::warn!("could not hide the Redis password from the process list: {e}");
    }
}

fn overwrite_passwords_in_command_line() -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let cmdline = std::fs::read("/proc/self/cmdline")?;
    let secrets: Vec<(usize, usize)> = cmdline
        .split(|&b| b == 0)
        .scan(0, |at, arg| {
            let start = *at;
            *at += arg.len() + 1;
            Some(password_in(arg).map(|(from, to)| (start + from, to - from)))
        })
        .flatten()
        .collect();
    if secrets.is_empty() {
        return Ok(());
    }
    // Field 48 of /proc/self/stat (the 46th after the command's closing parenthesis) is where
    // the arguments start in this process's memory.
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let arg_start: u64 = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(45))
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| std::io::Error::other("no argument address in /proc/self/stat"))?;
    let mut memory = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/mem")?;
    for (offset, len) in secrets {
        memory.seek(SeekFrom::Start(arg_start + offset as u64))?;
        memory.write_all(&vec![b'x'; len])?;
    }
    Ok(())
}

/// Where the password of a URL in `arg` lies (`scheme://user:PASSWORD@host…`), if it has one.
fn password_in(arg: &[u8]) -> Option<(usize, usize)> {
    let authority_start = arg.windows(3).position(|w| w == b"://")? + 3;
    let authority_len = arg[authority_start..]
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(arg.len() - authority_start);
    let authority = &arg[authority_start..authority_start + authority_len];
    let user_info = &authority[..authority.iter().rposition(|&b| b == b'@')?];
    let colon = user_info.iter().position(|&b| b == b':')?;
    (colon + 1 < user_info.len()).then(|| {
        (
            authority_start + colon + 1,
            authority_start + user_info.len(),
        )
    })
}

/// `host:port`, an IPv6 address in brackets.
fn host_and_port(host: &str, port: u16) -> String {
    match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    }
}

/// An address in URL form with no credentials.
pub fn describe(info: &ConnectionInfo) -> String {
    let db = info.redis_settings().db();
    let user = info
        .redis_settings()
        .username()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => {
            format!("redis://{user}{}/{db}", host_and_port(host, *port))
        }
        ConnectionAddr::TcpTls { host, port, .. } => {
            format!("rediss://{user}{}/{db}", host_and_port(host, *port))
        }
        ConnectionAddr::Unix(path) => format!("redis+unix://{user}{}?db={db}", path.display()),
        other => format!("{other:?}"),
    }
}

/// A URL as typed, with any password replaced, for error messages about unparsable URLs.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Parses sizes such as `65536`, `64K`, `1M`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits.parse().map_err(|_| format!("'{s}' is not a size"))?;
    let mult = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(format!("'{s}': unknown unit (use K, M or G)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// A switch: `on` or `off` (both offered to shell completion).
pub fn on_off() -> impl clap::builder::TypedValueParser<Value = bool> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["on", "off"]).map(|v| v == "on")
}

pub(crate) fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("'{s}' is not a number of seconds"))
}

/// `redisfs`: mount a filesystem kept in Redis.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "redisfs",
    version,
    about = "Mount a POSIX filesystem kept entirely in Redis",
    long_about = "Mount a POSIX filesystem kept entirely in Redis. Every file, directory and \
                  attribute lives in Redis under a key prefix, so any number of machines can mount \
                  the same filesystem. The first mount of an empty prefix creates the filesystem.\n\n\
                  With no Redis options and nothing listening on 127.0.0.1:6379, a private \
                  redis-server (with AOF persistence) is started for the mount and stopped at unmount.\n\n\
                  As mount(8) and /etc/fstab write it, the Redis URL may come before the mount point \
                  and every option may be given as -o NAME=VALUE (or -o NAME for a switch, '_' for \
                  '-'): redisfs redis://host:6379/0 /mnt/x -o prefix=x,io_timeout=30. Options for \
                  mount(8) and boot (_netdev, nofail, defaults, auto, noauto, user, x-systemd.*) \
                  are accepted and ignored. Installed as mount.fuse.redisfs (scripts/install), it \
                  serves `mount -t fuse.redisfs` and fstab lines, in the background."
)]
pub struct MountArgs {
    /// Directory to mount on.
    #[arg(value_name = "MOUNTPOINT", required_unless_present = "mount")]
    pub mountpoint: Option<PathBuf>,
    /// Directory to mount on (alternative to the positional argument).
    #[arg(long = "mount", value_name = "DIR", conflicts_with = "mountpoint")]
    pub mount: Option<PathBuf>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Key prefix of the filesystem (no ':'); many filesystems can share one Redis.
    #[arg(long, default_value = "skx", value_name = "NAME")]
    pub prefix: String,
    /// Mount read-only: every write fails with EROFS.
    #[arg(long, visible_alias = "ro")]
    pub read_only: bool,
    /// Block size of a new filesystem: the size of one Redis value; a block holds 64 bytes
    /// less than this so that a value fits its allocator size class exactly [default: 64K].
    /// An existing filesystem keeps its own (a different one is warned about).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub block_size: Option<u64>,
    /// Compression of a new filesystem's blocks: none, lz4, zstd or zlib [default: lz4]. An
    /// existing filesystem keeps its own (see redisfs-admin config).
    #[arg(long, value_name = "CODEC")]
    pub compression: Option<Codec>,
    /// Whether a new filesystem keeps and enforces POSIX ACLs [default: on]. Without them
    /// `ls -l` and friends cost a round trip per file less (they ask every file for its ACL).
    #[arg(long, value_parser = on_off(), value_name = "on|off", action = clap::ArgAction::Set)]
    pub acl: Option<bool>,
    /// Mount options, comma separated: any option above as NAME=VALUE or NAME, and the
    /// kernel's (allow_other, default_permissions, ro, relatime (the default), strictatime,
    /// noatime, nosuid, nodev, noexec, …).
    #[arg(short = 'o', value_name = "OPTIONS", action = clap::ArgAction::Append)]
    pub options: Vec<String>,
    /// Return once the filesystem is mounted and keep serving it in the background (logging
    /// to --log-file).
    #[arg(short = 'd', long)]
    pub daemon: bool,
    /// Log every operation (tracing at debug level).
    #[arg(long)]
    pub debug: bool,
    /// Write logs to FILE instead of stderr [default with --daemon: /var/log/redisfs/PREFIX.log
    /// as root, else PREFIX.log in the state directory (see --state-dir)].
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// How long an operation waits for a lost Redis to come back before failing with EIO.
    #[arg(long, default_value = "60", value_parser = parse_seconds, value_name = "SECONDS")]
    pub io_timeout: Duration,
    /// A mount silent for this long is dead: its locks are released, the unlinked files it
    /// held open are deleted and the directories leased to it are given back.
    #[arg(long, default_value = "30", value_parser = parse_seconds, value_name = "SECONDS")]
    pub session_timeout: Duration,
    /// Memory for cached blocks.
    #[arg(long, default_value = "256M", value_parser = parse_size, value_name = "SIZE")]
    pub cache_size: u64,
    /// Memory for written bytes not yet stored, across all files. Whole blocks are stored as
    /// soon as they fill; partial ones wait (up to 5 seconds, or until close or fsync), so
    /// that random writes into one block are stored once.
    #[arg(long, default_value = "512M", value_parser = parse_size, value_name = "SIZE")]
    pub write_buffer: u64,
    /// Let the kernel cache writes and file sizes (faster small writes). Only for a filesystem
    /// mounted once: with it the kernel ignores size and time changes made by other mounts to
    /// files it caches.
    #[arg(long)]
    pub writeback: bool,
    /// Have every create and removal in Redis before it is answered. By default a directory
    /// this mount creates is leased to it until another mount looks into it, and creates and
    /// removals in it are answered at once and sent within 20 ms (a crash loses those 20 ms,
    /// as a local disk loses what it had not written).
    #[arg(long)]
    pub no_delegation: bool,
    /// Mount even if Redis may evict keys (maxmemory-policy allkeys-*), which destroys files.
    #[arg(long)]
    pub force: bool,
    /// Serve Prometheus metrics on ADDR [default: 127.0.0.1:9567, or the next free port].
    #[arg(long, value_name = "ADDR", conflicts_with = "no_metrics")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Serve no metrics.
    #[arg(long)]
    pub no_metrics: bool,
    /// Directory for the private redis-server's data [default: /var/lib/redisfs as root,
    /// else $XDG_STATE_HOME/redisfs].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl MountArgs {
    /// The mount point, whichever way it was given.
    pub fn mount_point(&self) -> PathBuf {
        self.mountpoint
            .clone()
            .or_else(|| self.mount.clone())
            .unwrap_or_default()
    }

    /// The individual `-o` options.
    pub fn mount_options(&self) -> impl Iterator<Item = &str> {
        self.options
            .iter()
            .flat_map(|o| o.split(','))
            .map(str::trim)
            .filter(|o| !o.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn passwords_never_show() {
        let args = ConnectionArgs {
            redis: Some("redis://bob:s3cret@example:7000/2".into()),
            ..Default::default()
        };
        let target = args.target().unwrap();
        assert!(!target.display.contains("s3cret"));
        assert_eq!(target.display, "redis://bob@example:7000/2");
        assert!(!redact_url("redis://bob:s3cret@h").contains("s3cret"));
        let arg = b"--redis=redis://bob:s3cret@example:7000/2";
        let (from, to) = password_in(arg).unwrap();
        assert_eq!(&arg[from..to], b"s3cret");
        assert_eq!(password_in(b"redis://:pw@h/0").map(|(f, t)| t - f), Some(2));
        assert_eq!(password_in(b"redis://bob@h:1/0"), None);
        assert_eq!(password_in(b"redis://h:6379/0"), None);
        assert_eq!(password_in(b"/mnt/point"), None);
    }

    #[test]
    fn bad_urls_are_named_errors() {
        let args = ConnectionArgs {
            redis: Some("http://nope".into()),
            ..Default::default()
        };
        let err = args.target().unwrap_err().to_string();
        assert!(err.contains("http://nope"), "{err}");
    }
    #[test]
    fn a_url_may_name_several_nodes_of_a_cluster() {
        let args = ConnectionArgs {
            redis: Some("redis://app:s%40cret@h1:7000,h2:7001,[::1]:7002/0".into()),
            ..Default::default()
        };
        let t = args.target().unwrap();
        assert_eq!(t.display, "redis://app@h1:7000,h2:7001,[::1]:7002/0");
        let Place::Addresses(seeds) = &t.place else {
            panic!("not addresses")
        };
        assert_eq!(seeds.len(), 3);
        for seed in seeds {
            assert_eq!(seed.redis_settings().password(), Some("s@cret"));
            assert_eq!(seed.redis_settings().username(), Some("app"));
        }
        assert!(matches!(seeds[2].addr(), ConnectionAddr::Tcp(h, 7002) if h == "::1"));
        let one = ConnectionArgs {
            redis: Some("redis://h1:7000/2".into()),
            ..Default::default()
        };
        assert_eq!(one.target().unwrap().display, "redis://h1:7000/2");
        let bad = ConnectionArgs {
            redis: Some("redis://h1:7000,h2:x/0".into()),
            ..Default::default()
        };
        assert!(bad.target().is_err());
    }

    #[test]
    fn sentinel_urls_name_sentinels_a_primary_and_a_database() {
        let target = |url: &str| {
            let args = ConnectionArgs {
                redis: Some(url.into()),
                ..Default::default()
            };
            args.target().map_err(|e| e.to_string())
        };
        let t = target("redis+sentinel://app:s%40cret@h1:26380,h2,[::1]:26381/main/3").unwrap();
        assert_eq!(
            t.display,
            "redis+sentinel://app@h1:26380,h2:26379,[::1]:26381/main/3"
        );
        let Place::Sentinel(s) = &t.place else {
            panic!("not a sentinel target")
        };
        assert_eq!((s.master.as_str(), s.db, s.tls), ("main", 3, false));
        assert_eq!(s.password.as_deref(), Some("s@cret"));
        assert_eq!(t.db(), 3);
        let tls = target("rediss+sentinel://h1/main").unwrap();
        assert_eq!(tls.display, "rediss+sentinel://h1:26379/main/0");
        for (bad, reason) in [
            ("redis+sentinel://h1:26379", "no master name"),
            (
                "redis+sentinel://h1:port/main",
                "'port' is not a port number",
            ),
            ("redis+sentinel://,h2/main", "host is empty"),
            ("redis+sentinel://[::1/main", "lacks its ']'"),
            ("redis+sentinel://h1/main/x", "'x' is not a database number"),
            ("redis+sentinel://h1/main/0/more", "unexpected 'more'"),
        ] {
            let err = target(bad).unwrap_err();
            assert!(err.contains(reason) && !err.contains('\n'), "{bad}: {err}");
        }
        for leaky in [
            "redis+sentinel://u:hunter2@h1:x/main",
            "redis+sentinel://u:hun/ter2@h1/main",
            "redis+sentinel://u:hunter2%ff@h1/main",
        ] {
            let said = target(leaky).map(|t| t.display).unwrap_or_else(|e| e);
            assert!(!said.contains("hunter") && !said.contains("ter2"), "{said}");
        }
    }
}
