//! Access times. The kernel leaves a FUSE file's atime to the filesystem, and serves reads of
//! cached pages without asking it, so an access is counted where the mount sees one: an open
//! for reading, a read that reaches the mount, a listing of a directory. Whether it is
//! written follows the mount's policy (`-o relatime`, the default; `strictatime`; `noatime`).
//! The write goes in the background, one at a time per inode, and leaves ctime alone.

use std::collections::HashSet;
use std::sync::Arc;

use crate::attr::{Attr, Timestamp};
use crate::error::FsError;
use crate::meta::AttrChange;

use super::{lock, Core};

/// When reads update a file's access time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AtimePolicy {
    /// When the access time is not after the last change (data or status), or is a day old:
    /// what `mutt` and `tmpwatch` need, at most one write a day per file read.
    #[default]
    Relatime,
    /// On every access (at most one write a second per file).
    Strict,
    /// Never.
    Never,
}

/// How old an access time `relatime` lets stand.
const RELATIME_AGE_SEC: i64 = 24 * 3600;

impl AtimePolicy {
    /// The policy a mount option names (`atime` is the kernel's default, relatime).
    pub fn from_option(option: &str) -> Option<AtimePolicy> {
        Some(match option {
            "relatime" | "atime" => AtimePolicy::Relatime,
            "strictatime" => AtimePolicy::Strict,
            "noatime" => AtimePolicy::Never,
            _ => return None,
        })
    }

    /// Whether an access at `now` to an inode with attributes `attr` is written.
    pub fn is_due(self, attr: &Attr, now: Timestamp) -> bool {
        match self {
            AtimePolicy::Never => false,
            AtimePolicy::Strict => now.sec > attr.atime.sec,
            AtimePolicy::Relatime => {
                attr.atime <= attr.mtime
                    || attr.atime <= attr.ctime
                    || now.sec - attr.atime.sec >= RELATIME_AGE_SEC
            }
        }
    }
}

/// Inodes whose access time is being written.
#[derive(Default)]
pub struct AccessWrites(std::sync::Mutex<HashSet<u64>>);

impl Core {
    /// Counts an access to `attr`'s inode: writes its access time in the background (on
    /// `runtime`) if the policy says so and no write of it is under way.
    pub fn accessed(self: &Arc<Self>, attr: &Attr, runtime: &tokio::runtime::Handle) {
        let now = Timestamp::now();
        if self.settings.read_only
            || !self.settings.atime.is_due(attr, now)
            || !lock(&self.access_writes.0).insert(attr.ino)
        {
            return;
        }
        let core = self.clone();
        let (ino, seen) = (attr.ino, attr.atime);
        self.spawn(runtime, async move {
            let change = AttrChange {
                atime: Some(now),
                accessed: Some(seen),
                ..Default::default()
            };
            match core.freeze.pass(core.write_access_time(ino, change)).await {
                Ok(()) => {}
                // An access time is not worth more: the next access tries again.
                Err(e) => tracing::debug!("inode {ino}: access time not written ({e})"),
            }
            lock(&core.access_writes.0).remove(&ino);
        });
    }

    /// Writes an access time. Only the access time is taken from the reply: this runs beside
    /// the file's other changes (a truncate, a store), and a record read before them would
    /// undo them in what the mount knows.
    async fn write_access_time(&self, ino: u64, change: AttrChange) -> Result<(), FsError> {
        self.writable()?;
        let (attr, _) = self
            .meta
            .setattr(ino, &change, self.block_size, None, None)
            .await?;
        self.cache.forget_attr(ino);
        if let Some(f) = self.open.get(ino) {
            let mut st = f.state();
            // Redis's, even if older: an access that found another time there left it.
            st.attr.atime = attr.atime;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::FileKind;

    fn at(sec: i64) -> Timestamp {
        Timestamp { sec, nsec: 0 }
    }

    #[test]
    fn relatime_writes_after_a_change_or_once_a_day() {
        let mut attr = Attr::new(FileKind::File, 0o644, 0, 0, at(1000));
        let p = AtimePolicy::Relatime;
        assert!(p.is_due(&attr, at(1001)), "never read since it was written");
        attr.atime = at(1001);
        assert!(!p.is_due(&attr, at(1002)), "read after the last change");
        assert!(p.is_due(&attr, at(1001 + RELATIME_AGE_SEC)), "a day old");
        attr.mtime = at(1005);
        assert!(p.is_due(&attr, at(1006)), "changed since it was read");
        assert!(!AtimePolicy::Never.is_due(&attr, at(1006)));
        assert!(AtimePolicy::Strict.is_due(&attr, at(1006)));
        attr.atime = at(1006);
        assert!(
            !AtimePolicy::Strict.is_due(&attr, at(1006)),
            "at most once a second"
        );
    }
}
