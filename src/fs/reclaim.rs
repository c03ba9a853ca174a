//! The reclaimer: files this mount is done with (last close, or last link gone while held
//! here) are handed to it, and it sends them to Redis in batches, which ends their registered
//! opens and deletes those no longer linked nor open anywhere.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::meta::{Closed, Meta};

/// Files sent to Redis in one call at most.
const BATCH: usize = 256;

/// The queue of files this mount is done with.
pub struct Reclaimer {
    queue: mpsc::UnboundedSender<Closed>,
    /// Handed over and not yet sent.
    pending: AtomicUsize,
}

impl Reclaimer {
    /// An empty queue, and its receiving end (for [`Reclaimer::run`]).
    pub fn new() -> (Reclaimer, mpsc::UnboundedReceiver<Closed>) {
        let (queue, received) = mpsc::unbounded_channel();
        let reclaimer = Reclaimer {
            queue,
            pending: AtomicUsize::new(0),
        };
        (reclaimer, received)
    }

    /// Queues a file this mount is done with.
    pub fn hand_over(&self, done: Closed) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.queue.send(done).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Waits (at most `patience`) until everything queued was sent: the session's end must
    /// come after them, or they would write keys of a session gone.
    pub async fn all_sent(&self, patience: Duration) {
        let deadline = tokio::time::Instant::now() + patience;
        while self.pending.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sends queued files in batches until the queue closes.
    pub async fn run(&self, meta: &Meta, mut queue: mpsc::UnboundedReceiver<Closed>) {
        while let Some(first) = queue.recv().await {
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match queue.try_recv() {
                    Ok(done) => batch.push(done),
                    Err(_) => break,
                }
            }
            if let Err(e) = meta.reclaim(&batch).await {
                tracing::warn!(
                    "ending {} opens and holds of files failed ({e}); the files stay until \
                     this mount's session ends, or for fsck",
                    batch.len()
                );
            }
            self.pending.fetch_sub(batch.len(), Ordering::AcqRel);
        }
    }
}
