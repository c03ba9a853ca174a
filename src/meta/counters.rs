//! The filesystem's counters (`P:stat`), kept by the scripts as they change it and read by
//! statfs, the tools and fsck, which counts them again and corrects them.

use crate::error::Error;
use crate::keys::Keys;
use crate::store::Store;

/// Filesystem-wide counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Inodes in use.
    pub inodes: u64,
    /// Block-map entries (blocks named by files, or waiting to be freed).
    pub blocks: u64,
    /// Bytes the blocks take as Redis values (after compression). `None` for a filesystem
    /// made before this counter, until redisfs-fsck counts it.
    pub stored_bytes: Option<u64>,
    /// The regular files' sizes, summed (holes included). `None` as for `stored_bytes`.
    pub file_bytes: Option<u64>,
}

/// The fields of `P:stat`, in the order of [`Counters::values`].
const FIELDS: [&str; 4] = ["inodes", "blocks", "stored_bytes", "file_bytes"];

impl Counters {
    /// Adds the command that reads the counters to `pipe`; its reply goes to [`Counters::parse`].
    pub fn ask(pipe: &mut redis::Pipeline, keys: &Keys) {
        pipe.cmd("HMGET").arg(keys.stat()).arg(&FIELDS[..]);
    }

    /// The counters from the reply of [`Counters::ask`]'s command.
    pub fn parse(values: Vec<Option<u64>>) -> Counters {
        let value = |i: usize| values.get(i).copied().flatten();
        Counters {
            inodes: value(0).unwrap_or(0),
            blocks: value(1).unwrap_or(0),
            stored_bytes: value(2),
            file_bytes: value(3),
        }
    }

    /// Reads the counters of the filesystem of `store`.
    pub async fn read(store: &Store) -> Result<Counters, Error> {
        let mut pipe = redis::pipe();
        Counters::ask(&mut pipe, &store.keys);
        let (values,): (Vec<Option<u64>>,) =
            store.pipe(&pipe).await.map_err(store.failed("HMGET"))?;
        Ok(Counters::parse(values))
    }

    /// The command that writes these counters (all four: the byte counters are known here).
    pub fn write(&self, keys: &Keys) -> redis::Cmd {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(keys.stat());
        for (field, value) in FIELDS.iter().zip(self.values()) {
            cmd.arg(field).arg(value.unwrap_or(0));
        }
        cmd
    }

    fn values(&self) -> [Option<u64>; 4] {
        [
            Some(self.inodes),
            Some(self.blocks),
            self.stored_bytes,
            self.file_bytes,
        ]
    }
}

impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = FIELDS
            .iter()
            .zip(self.values())
            .map(|(field, value)| match value {
                Some(v) => format!("{field} {v}"),
                None => format!("no {field}"),
            });
        write!(f, "{}", shown.collect::<Vec<_>>().join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_of_an_older_filesystem_have_no_byte_counts() {
        let old = Counters::parse(vec![Some(3), Some(7), None, None]);
        assert_eq!((old.inodes, old.blocks), (3, 7));
        assert_eq!((old.stored_bytes, old.file_bytes), (None, None));
        assert_eq!(
            old.to_string(),
            "inodes 3, blocks 7, no stored_bytes, no file_bytes"
        );
    }
}
