//! `delay-link LISTEN_PORT TARGET_PORT RTT_MS` (both on 127.0.0.1): the link of the library
//! as a process, for `bench/run --rtt`.

use std::net::TcpListener;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, target, rtt_ms] = args.as_slice() else {
        eprintln!("usage: delay-link LISTEN_PORT TARGET_PORT RTT_MS");
        std::process::exit(2);
    };
    let (Ok(target), Ok(rtt_ms)) = (target.parse::<u16>(), rtt_ms.parse::<f64>()) else {
        eprintln!("delay-link: TARGET_PORT must be a port and RTT_MS a number of milliseconds");
        std::process::exit(2);
    };
    let listener = match TcpListener::bind(format!("127.0.0.1:{listen}")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("delay-link: cannot listen on 127.0.0.1:{listen}: {e}");
            std::process::exit(1);
        }
    };
    let rtt = Duration::from_secs_f64(rtt_ms.max(0.0) / 1000.0);
    delay_link::serve(listener, ([127, 0, 0, 1], target).into(), rtt);
}
