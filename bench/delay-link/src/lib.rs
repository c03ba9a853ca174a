//! A TCP link that delays every byte by a fixed time each way: Redis "on another host" for
//! `bench/run --rtt` and for tests, on a kernel without netem.
//!
//! Each direction of each connection has two threads: one reads and stamps what it read with
//! its due time, the other sleeps until then (nanosleep: tens of microseconds of precision,
//! where event loops round to milliseconds) and writes it on. Bytes keep their order and stay
//! pipelined: a request sent while another is in flight is delayed by the same amount, not
//! queued behind it. Native threads move several GiB/s, so the link adds latency, not a
//! bandwidth limit of its own (a proxy in Python capped sequential reads near 700 MiB/s).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// Most bytes moved per read.
const CHUNK: usize = 1 << 20;

/// Accepts connections on `listener` for as long as the process runs, linking each to
/// `target` with `rtt` added to every round trip (half each way).
pub fn serve(listener: TcpListener, target: SocketAddr, rtt: Duration) {
    serve_until_cut(listener, target, rtt, Arc::new(AtomicBool::new(false)));
}

/// [`serve`], except that once `cut` is set every byte in either direction is dropped, while
/// the connections stay open: a network partition, as neither end learns of it.
pub fn serve_until_cut(
    listener: TcpListener,
    target: SocketAddr,
    rtt: Duration,
    cut: Arc<AtomicBool>,
) {
    let delay = rtt / 2;
    for client in listener.incoming().flatten() {
        let Ok(server) = TcpStream::connect(target) else {
            continue;
        };
        for s in [&client, &server] {
            let _ = s.set_nodelay(true);
        }
        let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        pump(client, server2, delay, cut.clone());
        pump(server, client2, delay, cut.clone());
    }
}

/// Moves what `from` sends to `to`, each byte `delay` after it arrived, until `cut`.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration, cut: Arc<AtomicBool>) {
    let (due, arrivals) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buf = vec![0; CHUNK];
        loop {
            let n = from.read(&mut buf).unwrap_or(0);
            if due
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
                || n == 0
            {
                return;
            }
        }
    });
    thread::spawn(move || {
        for (at, data) in arrivals {
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            if cut.load(Ordering::Relaxed) {
                continue;
            }
            if data.is_empty() {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            if to.write_all(&data).is_err() {
                return;
            }
        }
    });
}
