//! What a running mount measures, served as Prometheus text on a loopback address
//! (`--metrics`, recorded in its session for `redisfs-admin`).
//!
//! One registry per process (a process serves one mount): the FUSE adapter times each request
//! ([`time_request!`]), the store each Redis round trip, and the gauges that describe the
//! mount's state now (bytes buffered, changes deferred) are read from the core at each scrape.
//! What is counted on every request is looked up once (a handle per operation and per cache
//! outcome), so a request costs atomic increments and one histogram observation.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::error::{Error, FsError};
use crate::fs::Core;

/// Where a mount serves its metrics unless told otherwise; taken, the next free port.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9567";
/// Ports tried after the default one when it is taken.
const PORTS_TRIED: u16 = 100;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabel {
    cache: &'static str,
    outcome: &'static str,
}

/// A cache whose look-ups are counted.
#[derive(Clone, Copy, Debug)]
pub enum Cache {
    /// Decoded blocks.
    Blocks = 0,
    /// Names (entries and known absences).
    Names = 1,
    /// Attributes.
    Attributes = 2,
}

/// The label of each [`Cache`], in its order.
const CACHES: [&str; 3] = ["blocks", "names", "attributes"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrnoLabel {
    errno: &'static str,
}

/// The process's measurements.
pub struct Metrics {
    registry: Registry,
    requests: Family<OperationLabel, Counter>,
    request_seconds: Family<OperationLabel, Histogram>,
    errors: Family<ErrnoLabel, Counter>,
    /// Per cache, its misses and hits.
    cache_lookups: [[Counter; 2]; 3],
    read_bytes: Counter,
    written_bytes: Counter,
    round_trips: Counter,
    round_trip_seconds: Histogram,
    buffered_bytes: Gauge,
    deferred_changes: Gauge,
    event_delivery_seconds: Histogram,
}

/// Latency buckets from 50 µs to about 1.6 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("redisfs");
        let requests = Family::<OperationLabel, Counter>::default();
        registry.register(
            "fuse_requests",
            "FUSE requests answered, by operation",
            requests.clone(),
        );
        let request_seconds =
            Family::<OperationLabel, Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "fuse_request_seconds",
            "Time from a FUSE request's arrival to its answer, by operation",
            request_seconds.clone(),
        );
        let errors = Family::<ErrnoLabel, Counter>::default();
        registry.register(
            "fuse_errors",
            "FUSE requests answered with an error, by errno",
            errors.clone(),
        );
        let lookups = Family::<CacheLabel, Counter>::default();
        registry.register(
            "cache_lookups",
            "Look-ups in the mount's caches (blocks, names, attributes), by outcome (hit, miss)",
            lookups.clone(),
        );
        let cache_lookups = CACHES.map(|cache| {
            ["miss", "hit"].map(|outcome| {
                lookups
                    .get_or_create(&CacheLabel { cache, outcome })
                    .clone()
            })
        });
        let read_bytes = Counter::default();
        registry.register(
            "read_bytes",
            "Bytes read by applications",
            read_bytes.clone(),
        );
        let written_bytes = Counter::default();
        registry.register(
            "written_bytes",
            "Bytes written by applications",
            written_bytes.clone(),
        );
        let round_trips = Counter::default();
        registry.register(
            "redis_round_trips",
            "Commands, pipelines and scripts sent to Redis (each attempt)",
            round_trips.clone(),
        );
        let round_trip_seconds = latency_histogram();
        registry.register(
            "redis_round_trip_seconds",
            "Time from sending a command, pipeline or script to Redis to its reply",
            round_trip_seconds.clone(),
        );
        let buffered_bytes = Gauge::default();
        registry.register(
            "buffered_bytes",
            "Written bytes held in memory, not yet stored in Redis",
            buffered_bytes.clone(),
        );
        let deferred_changes = Gauge::default();
        registry.register(
            "deferred_changes",
            "Creates and removals answered in leased directories, not yet sent to Redis",
            deferred_changes.clone(),
        );
        let event_delivery_seconds = latency_histogram();
        registry.register(
            "event_delivery_seconds",
            "Pub/Sub lag: time for a probe this mount publishes every 5 s to come back through \
             Redis, behind the change events published before it",
            event_delivery_seconds.clone(),
        );
        Metrics {
            registry,
            requests,
            request_seconds,
            errors,
            cache_lookups,
            read_bytes,
            written_bytes,
            round_trips,
            round_trip_seconds,
            buffered_bytes,
            deferred_changes,
            event_delivery_seconds,
        }
    }

    /// The counters of FUSE requests of `name`, for [`time_request!`] to keep.
    pub fn operation(&self, name: &'static str) -> Operation {
        let label = OperationLabel { operation: name };
        Operation {
            name,
            requests: self.requests.get_or_create(&label).clone(),
            seconds: self.request_seconds.get_or_create(&label).clone(),
        }
    }

    /// A look-up in `cache` that found what it looked for, or not.
    pub fn cache_lookup(&self, cache: Cache, hit: bool) {
        self.cache_lookups[cache as usize][usize::from(hit)].inc();
    }

    /// Bytes read by an application.
    pub fn read(&self, bytes: usize) {
        self.read_bytes.inc_by(bytes as u64);
    }

    /// Bytes written by an application.
    pub fn written(&self, bytes: usize) {
        self.written_bytes.inc_by(bytes as u64);
    }

    /// One round trip to Redis that took `took`.
    pub fn round_trip(&self, took: Duration) {
        self.round_trips.inc();
        self.round_trip_seconds.observe(took.as_secs_f64());
    }

    /// A probe came back through Pub/Sub after `took`.
    pub fn event_delivery(&self, took: Duration) {
        self.event_delivery_seconds.observe(took.as_secs_f64());
    }

    /// The metrics as Prometheus text, with the core's gauges as they are now.
    fn scrape(&self, core: &Core) -> String {
        let (buffered, deferred) = core.state_for_metrics();
        self.buffered_bytes.set(buffered as i64);
        self.deferred_changes.set(deferred as i64);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// The counters of one FUSE operation.
pub struct Operation {
    name: &'static str,
    requests: Counter,
    seconds: Histogram,
}

/// Starts timing a FUSE request of the operation named: the request counts when the timer
/// drops, after the answer. The operation's counters are looked up once per call site.
#[macro_export]
macro_rules! time_request {
    ($operation:literal) => {{
        static OPERATION: std::sync::OnceLock<$crate::metrics::Operation> =
            std::sync::OnceLock::new();
        $crate::metrics::RequestTimer::start(
            OPERATION.get_or_init(|| $crate::metrics::metrics().operation($operation)),
        )
    }};
}

/// Times one FUSE request (see [`time_request!`]); with `--debug`, logs it with its outcome
/// and latency.
pub struct RequestTimer {
    operation: &'static Operation,
    started: Instant,
    /// The error it was answered with, if any.
    errno: Option<&'static str>,
}

impl RequestTimer {
    /// Starts timing a request of `operation`.
    pub fn start(operation: &'static Operation) -> RequestTimer {
        RequestTimer {
            operation,
            started: Instant::now(),
            errno: None,
        }
    }

    /// The request is answered with `e`: counted by errno; the errno to answer with.
    pub fn failed(&mut self, e: FsError) -> fuser::Errno {
        let name = errno_name(e.errno());
        metrics()
            .errors
            .get_or_create(&ErrnoLabel { errno: name })
            .inc();
        self.errno = Some(name);
        fuser::Errno::from_i32(e.errno())
    }
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        self.operation.requests.inc();
        self.operation.seconds.observe(took.as_secs_f64());
        tracing::debug!(
            "{} {} in {} µs",
            self.operation.name,
            self.errno.unwrap_or("ok"),
            took.as_micros()
        );
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The symbolic name of `errno` (`ENOENT`), or `E<number>` for one not listed.
fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ERANGE => "ERANGE",
        libc::EDEADLK => "EDEADLK",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOLCK => "ENOLCK",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EINTR => "EINTR",
        _ => "other",
    }
}

/// Binds the metrics listener: `wanted`, or [`DEFAULT_ADDRESS`] and the next free ports.
pub async fn bind(wanted: Option<SocketAddr>) -> Result<TcpListener, Error> {
    let failed = |addr: SocketAddr, e: std::io::Error| Error::System {
        context: format!("serving metrics on {addr}"),
        source: e,
    };
    if let Some(addr) = wanted {
        return TcpListener::bind(addr).await.map_err(|e| failed(addr, e));
    }
    let default: SocketAddr = DEFAULT_ADDRESS.parse().expect("a valid literal address");
    let mut last = None;
    for port in default.port()..default.port() + PORTS_TRIED {
        let addr = SocketAddr::new(default.ip(), port);
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(failed(addr, e)),
        }
    }
    Err(last.expect("at least one port tried"))
}

/// Answers every HTTP request on `listener` with the metrics, for as long as the mount runs.
pub async fn serve(listener: TcpListener, core: Arc<Core>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let core = core.clone();
        tokio::spawn(async move {
            // The request itself does not matter: every path is the metrics.
            let mut request = [0u8; 4096];
            let mut read = 0;
            while !request[..read].windows(4).any(|w| w == b"\r\n\r\n") && read < request.len() {
                match stream.read(&mut request[read..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => read += n,
                }
            }
            let body = metrics().scrape(&core);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}
