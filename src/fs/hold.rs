//! A mount's side of a freeze (see `src/freeze.rs`): store every buffer, hold every change
//! until the tool is done, and let writers wait rather than fail.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::error::FsError;
use crate::freeze;

use super::Core;

/// The longest a mount holds still for one request, should the tool and its lease vanish in a
/// way that leaves the key behind (it cannot: the key expires; this bounds a bug, not a case).
const LONGEST_HOLD: Duration = Duration::from_secs(600);

impl Core {
    /// Runs a change to the filesystem once no freeze holds it.
    pub async fn change<T>(
        &self,
        op: impl Future<Output = Result<T, FsError>>,
    ) -> Result<T, FsError> {
        let _open = self.gate.read().await;
        op.await
    }

    /// The gate for a change made on the spot, unless a freeze holds it (then the change
    /// must wait in a task, see [`Core::change`]).
    pub fn open_gate(&self) -> Option<tokio::sync::RwLockReadGuard<'_, ()>> {
        self.gate.try_read().ok()
    }

    /// Answers freeze requests, one at a time, for as long as the mount runs.
    pub(super) async fn holder(self: Arc<Self>, mut requests: mpsc::UnboundedReceiver<String>) {
        while let Some(token) = requests.recv().await {
            let store = &self.meta.store;
            // A request whose tool is already done (or gone) needs no answer.
            if self.settings.read_only || !freeze::still_held(store, &token).await {
                continue;
            }
            let _closed = self.gate.write().await;
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
            while started.elapsed() < LONGEST_HOLD && freeze::still_held(store, &token).await {
                let thawed = self.thawed.notified();
                let _ = tokio::time::timeout(Duration::from_millis(20), thawed).await;
            }
            tracing::debug!(
                "freeze {token}: held changes for {} ms",
                started.elapsed().as_millis()
            );
        }
    }
}
