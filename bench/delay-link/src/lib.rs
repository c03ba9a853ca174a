//! A TCP link that delays every byte by a fixed time each way: Redis "on another host" for
//! `bench/run --rtt` and for tests, on a kernel without netem.
//!
//! Each direction of each connection has two threads: one reads and stamps what it read with
//! its due time, the other sleeps until then (nanosleep: tens of microseconds of precision,
//! where event loops round to milliseconds) and writes it on. Bytes keep their order and stay
//! pipelined: a request sent while another is in flight is delayed by the same amount, not
//! queued behind it. Native threads move several GiB/s, so the link adds latency, not a
//! bandwidth limit of its own (a proxy in Python capped sequential reads near 700 MiB/s).

use std::io::{IoSlice, Read, Write};
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
///
/// The link shares the machine with both ends, so it spends as little as it can per byte:
/// buffers go back to the reader once written (no copy, no allocation per read), and
/// everything already due goes out in one vectored write.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration, cut: Arc<AtomicBool>) {
    let (due, arrivals) = mpsc::channel::<Arrival>();
    let (recycle, recycled) = mpsc::channel::<Vec<u8>>();
    thread::spawn(move || loop {
        let mut buf = recycled.try_recv().unwrap_or_else(|_| vec![0; CHUNK]);
        let len = from.read(&mut buf).unwrap_or(0);
        let at = Instant::now() + delay;
        if due.send(Arrival { at, buf, len }).is_err() || len == 0 {
            return;
        }
    });
    thread::spawn(move || {
        let mut ready: Vec<Arrival> = Vec::new();
        let mut next = arrivals.recv().ok();
        while let Some(first) = next.take() {
            if let Some(wait) = first.at.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            let mut eof = first.len == 0;
            ready.push(first);
            // Whatever else has come due meanwhile leaves with it.
            while !eof {
                match arrivals.try_recv() {
                    Ok(arrival) if arrival.at <= Instant::now() => {
                        eof = arrival.len == 0;
                        ready.push(arrival);
                    }
                    Ok(later) => {
                        next = Some(later);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let cut = cut.load(Ordering::Relaxed);
            if !cut && write_all(&mut to, &ready).is_err() {
                return;
            }
            if eof {
                if !cut {
                    let _ = to.shutdown(Shutdown::Write);
                }
                return;
            }
            for arrival in ready.drain(..) {
                let _ = recycle.send(arrival.buf);
            }
            if next.is_none() {
                next = arrivals.recv().ok();
            }
        }
    });
}

/// Bytes read from one end, due at the other at `at`: the first `len` of `buf` (none: the
/// end of the stream).
struct Arrival {
    at: Instant,
    buf: Vec<u8>,
    len: usize,
}

/// Writes the bytes of every arrival in order, in as few system calls as the socket allows.
fn write_all(to: &mut TcpStream, arrivals: &[Arrival]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice> = arrivals
        .iter()
        .map(|a| IoSlice::new(&a.buf[..a.len]))
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = to.write_vectored(rest)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}
