//! A mount's side of a freeze (see `src/freeze.rs`): when a snapshot or dump tool asks, the
//! mount stores every buffer and lets no change through until the tool is done; writers wait
//! rather than fail.
//!
//! Every change passes the [`FreezeGate`] (shared); answering a freeze closes it (alone).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify, RwLock, RwLockReadGuard};

use crate::error::FsError;
use crate::freeze;

use super::Core;

/// The longest a mount stays frozen for one request, should the tool and its lease vanish in
/// a way that leaves the key behind (it cannot: the key expires; this bounds a bug, not a
/// case).
const LONGEST_FREEZE: Duration = Duration::from_secs(600);

/// The gate changes pass unless a freeze closed it.
pub struct FreezeGate {
    gate: RwLock<()>,
    /// Freeze requests of tools, answered one at a time.
    requests: mpsc::UnboundedSender<String>,
    /// Woken when a tool ends a freeze.
    thawed: Notify,
}

impl FreezeGate {
    /// An open gate, and the receiving end of its requests (for [`Core::answer_freezes`]).
    pub fn new() -> (FreezeGate, mpsc::UnboundedReceiver<String>) {
        let (requests, received) = mpsc::unbounded_channel();
        let gate = FreezeGate {
            gate: RwLock::new(()),
            requests,
            thawed: Notify::new(),
        };
        (gate, received)
    }

    /// Runs a change to the filesystem once no freeze holds it.
    pub async fn pass<T>(
        &self,
        op: impl Future<Output = Result<T, FsError>>,
    ) -> Result<T, FsError> {
        let _open = self.gate.read().await;
        op.await
    }

    /// Passage for a change made on the spot, unless a freeze holds the gate (the change must
    /// then wait in a task, see [`FreezeGate::pass`]).
    pub fn try_pass(&self) -> Option<RwLockReadGuard<'_, ()>> {
        self.gate.try_read().ok()
    }

    /// A tool asked for a freeze (its token).
    pub fn requested(&self, token: String) {
        let _ = self.requests.send(token);
    }

    /// A tool ended its freeze.
    pub fn thawed(&self) {
        self.thawed.notify_waiters();
    }
}

impl Core {
    /// Answers freeze requests, one at a time, for as long as the mount runs.
    pub(super) async fn answer_freezes(
        self: Arc<Self>,
        mut requests: mpsc::UnboundedReceiver<String>,
    ) {
        while let Some(token) = requests.recv().await {
            let store = &self.meta.store;
            // A request whose tool is already done (or gone) needs no answer.
            if self.settings.read_only || !freeze::still_held(store, &token).await {
                continue;
            }
            let _closed = self.freeze.gate.write().await;
            let started = Instant::now();
            if let Err(e) = self.flush_all().await {
                tracing::error!(
                    "freeze: buffered data could not be stored ({e}); the copy lacks it"
                );
            }
            if let Err(e) = freeze::answer(store, self.meta.session, &token).await {
                tracing::warn!("freeze: could not answer the tool: {e}");
            }
            tracing::debug!("freeze {token}: buffers stored, holding changes");
            while started.elapsed() < LONGEST_FREEZE && freeze::still_held(store, &token).await {
                let thawed = self.freeze.thawed.notified();
                let _ = tokio::time::timeout(Duration::from_millis(20), thawed).await;
            }
            tracing::debug!(
                "freeze {token}: held changes for {} ms",
                started.elapsed().as_millis()
            );
        }
    }
}
