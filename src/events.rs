//! Change events between mounts.
//!
//! Every script that changes something publishes one message on `<prefix>:events` in the same
//! atomic step (see `src/lua/prelude.lua`): the session id of the mount that made the change,
//! then NUL-separated records. Each mount follows the channel and drops what it, and the
//! kernel, cached about what changed.
//!
//! How late events arrive is measured with probes: every few seconds a mount publishes the
//! time on `<prefix>:events:probes` and times the probe's return. The probe channel is
//! followed on the same connection as the events, so a probe waits behind the events published
//! before it, in Redis's output buffer and in the mount's queue, as a change's event would.

use std::ops::RangeInclusive;
use std::time::Duration;

use futures_util::StreamExt;

use crate::attr::{Attr, DIR_RECORD_LEN};
use crate::store::Store;

/// How often a mount times the delivery of events.
const PROBE_PERIOD: Duration = Duration::from_secs(5);

/// One change named by an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The attributes of an inode changed.
    Attr(u64),
    /// A directory's record changed, to this.
    Dir(Attr),
    /// The extended attributes of an inode changed.
    Xattrs(u64),
    /// An entry of a directory was added, removed or replaced.
    Entry(u64, Vec<u8>),
    /// Data of an inode changed: in blocks `lo..=hi`, or anywhere when `None`.
    Data(u64, Option<RangeInclusive<u64>>),
    /// A tool asks every mount to store its buffers and hold still (see `src/freeze.rs`).
    Freeze(String),
    /// The tool is done; held mounts may go on.
    Thaw,
    /// Another mount asks for a directory leased to this one (see `src/meta/deferred.rs`).
    Recall(u64),
}

/// Splits a message into the session that caused it and its changes; `None` if malformed.
/// Parts are separated by NUL bytes, but for a directory's record, which may hold NULs and
/// has a known length.
pub fn parse(message: &[u8]) -> Option<(u64, Vec<Change>)> {
    let num = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<u64>().ok();
    let (head, mut rest) = split_at_nul(message);
    let session = num(head)?;
    let mut changes = Vec::new();
    while let Some(rest_now) = rest {
        let (&kind, body) = rest_now.split_first()?;
        if kind == b'D' {
            let colon = body.iter().position(|&b| b == b':')?;
            let end = colon + 1 + DIR_RECORD_LEN;
            let record = Attr::decode(num(&body[..colon])?, body.get(colon + 1..end)?)?;
            changes.push(Change::Dir(record));
            rest = match body.get(end) {
                None => None,
                Some(0) => Some(&body[end + 1..]),
                Some(_) => return None,
            };
            continue;
        }
        let (part, next) = split_at_nul(body);
        rest = next;
        changes.push(match kind {
            b'a' => Change::Attr(num(part)?),
            b'x' => Change::Xattrs(num(part)?),
            b'e' => {
                let slash = part.iter().position(|&b| b == b'/')?;
                Change::Entry(num(&part[..slash])?, part[slash + 1..].to_vec())
            }
            b'd' => {
                let mut fields = part.split(|&b| b == b':');
                let ino = num(fields.next()?)?;
                match (fields.next(), fields.next()) {
                    (Some(lo), Some(hi)) => Change::Data(ino, Some(num(lo)?..=num(hi)?)),
                    _ => Change::Data(ino, None),
                }
            }
            b'F' => Change::Freeze(String::from_utf8(part.to_vec()).ok()?),
            b'T' => Change::Thaw,
            b'r' => Change::Recall(num(part)?),
            _ => return None,
        });
    }
    Some((session, changes))
}

/// The bytes before the first NUL, and those after it if there is one.
fn split_at_nul(bytes: &[u8]) -> (&[u8], Option<&[u8]>) {
    match bytes.iter().position(|&b| b == 0) {
        Some(at) => (&bytes[..at], Some(&bytes[at + 1..])),
        None => (bytes, None),
    }
}

/// What a mount does with the events of other mounts.
pub trait Listener: Send + Sync + 'static {
    /// A change made by another session.
    fn changed(&self, change: Change);
    /// The subscription was lost and is back: changes may have been missed.
    fn missed(&self);
}

/// Microseconds since the epoch, the unit of probes.
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// This mount's probe, published now: its token and the time.
fn probe(token: &str) -> String {
    format!("{token} {}", now_us())
}

/// How long ago the probe `payload` was sent, if it is one of `token`'s.
fn probe_trip(payload: &[u8], token: &str) -> Option<Duration> {
    let text = std::str::from_utf8(payload).ok()?;
    let (from, sent) = text.split_once(' ')?;
    let sent: u64 = sent.parse().ok().filter(|_| from == token)?;
    Some(Duration::from_micros(now_us().saturating_sub(sent)))
}

/// Follows the filesystem's events for as long as the runtime runs, reconnecting with
/// back-off; calls `listener` for every change not made by session `own`, and times probes.
pub async fn follow(store: Store, own: u64, listener: std::sync::Arc<dyn Listener>) {
    let channel = store.keys.events();
    let probes = store.keys.event_probes();
    let token = crate::format::new_uuid();
    let mut delay = Duration::from_millis(50);
    let mut first = true;
    let mut moves = store.link.moves();
    loop {
        moves.mark_unchanged();
        let subscribed = async {
            let mut pubsub = store.link.node().pubsub().await?;
            pubsub.subscribe(&[&channel, &probes]).await?;
            Ok::<_, redis::RedisError>(pubsub)
        }
        .await;
        let pubsub = match subscribed {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("subscribing to {channel}: {e}; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        if !first {
            tracing::info!("events of {channel} followed again; dropping caches");
            listener.missed();
        }
        first = false;
        delay = Duration::from_millis(50);
        let mut messages = pubsub.into_on_message();
        let mut tick = tokio::time::interval(PROBE_PERIOD);
        loop {
            let msg = tokio::select! {
                msg = messages.next() => msg,
                // The primary moved: follow it there (what was missed meanwhile is dropped).
                _ = moves.changed() => None,
                _ = tick.tick() => {
                    // Sent aside: the message loop never waits for Redis.
                    let (store, probes, payload) = (store.clone(), probes.clone(), probe(&token));
                    tokio::spawn(async move {
                        let publish = redis::cmd("PUBLISH").arg(&probes).arg(payload).clone();
                        if let Err(e) = store.cmd::<()>(&publish).await {
                            tracing::debug!("publishing an event probe: {e}");
                        }
                    });
                    continue;
                }
            };
            let Some(msg) = msg else { break };
            if msg.get_channel_name() == probes {
                if let Some(trip) = probe_trip(msg.get_payload_bytes(), &token) {
                    crate::metrics::metrics().event_delivery(trip);
                }
                continue;
            }
            match parse(msg.get_payload_bytes()) {
                Some((session, _)) if session == own => {}
                Some((_, changes)) => changes.into_iter().for_each(|c| listener.changed(c)),
                None => tracing::warn!("ignoring a malformed event on {channel}"),
            }
        }
        tracing::warn!("lost the subscription to {channel}; reconnecting");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::{FileKind, Timestamp};

    #[test]
    fn only_this_mounts_probes_are_timed() {
        let sent = probe("mine");
        let trip = probe_trip(sent.as_bytes(), "mine").expect("its own probe");
        assert!(trip < Duration::from_secs(1), "{trip:?}");
        assert_eq!(probe_trip(sent.as_bytes(), "another"), None);
        assert_eq!(probe_trip(b"mine soon", "mine"), None);
        assert_eq!(probe_trip(b"\xff", "mine"), None);
    }

    #[test]
    fn events_parse() {
        let (sid, changes) = parse(b"7\0a12\0e1/na me\0d12:0:3\0d9").unwrap();
        assert_eq!(sid, 7);
        assert_eq!(
            changes,
            vec![
                Change::Attr(12),
                Change::Entry(1, b"na me".to_vec()),
                Change::Data(12, Some(0..=3)),
                Change::Data(9, None)
            ]
        );
        assert_eq!(
            parse(b"0\0Fab-1").unwrap().1,
            vec![Change::Freeze("ab-1".into())]
        );
        assert_eq!(parse(b"3\0r42").unwrap().1, vec![Change::Recall(42)]);
        // A directory's record holds NUL bytes, and is followed by more parts or by nothing.
        let mut dir = Attr::new(FileKind::Dir, 0o755, 0, 0, Timestamp::default());
        dir.ino = 12;
        dir.version = 3;
        let mut message = b"4\0x9\0D12:".to_vec();
        message.extend_from_slice(&dir.encode());
        assert_eq!(
            parse(&message).unwrap().1,
            vec![Change::Xattrs(9), Change::Dir(dir)]
        );
        message.extend_from_slice(b"\0e12/n");
        assert_eq!(parse(&message).unwrap().1.len(), 3);
        assert_eq!(parse(&message[..message.len() - 10]), None, "cut short");
        assert_eq!(parse(b"x\0a1"), None);
        assert_eq!(parse(b"1\0q1"), None);
        assert_eq!(parse(b"1\0e5"), None);
    }
}
