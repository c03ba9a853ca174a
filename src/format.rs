//! The filesystem's identity (`P:meta`): creating a filesystem, and checking one before use.

use std::collections::HashMap;

use crate::attr::{Attr, FileKind, Timestamp};
use crate::codec::Codec;
use crate::error::{Error, FsError};
use crate::meta::calls::{Call, Format};
use crate::meta::checked;
use crate::scripts::Scripts;
use crate::store::Store;

/// The newest format version this build reads and writes.
/// Version 2 put the metadata keys in braces (one hash slot on a cluster, see `src/keys.rs`);
/// `redisfs-admin upgrade` converts version 1.
pub const FORMAT_VERSION: u32 = 2;
/// Bytes a block leaves free in its Redis value: the tag byte, Redis's string header and the
/// protocol's line ending all fit, so a full block is exactly one allocator size class.
pub const VALUE_OVERHEAD: u64 = 64;

/// Size of one block's Redis value of a new filesystem, unless told otherwise.
pub const DEFAULT_VALUE_SIZE: u64 = 64 << 10;

/// The settings a filesystem was created with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsConfig {
    /// Data bytes per block.
    pub block_size: u32,
    /// Compression of new blocks.
    pub codec: Codec,
    /// The filesystem's unique id.
    pub uuid: String,
    /// Whether POSIX ACLs are kept and enforced.
    pub acl: bool,
}

/// Settings for a filesystem that does not exist yet.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// Size of one block's Redis value (data capacity is 64 bytes less).
    pub value_size: u64,
    /// Block compression.
    pub codec: Codec,
    /// Whether POSIX ACLs are kept and enforced.
    pub acl: bool,
}

impl CreateOptions {
    /// The data bytes per block these settings give, or why they are invalid.
    pub fn block_size(&self) -> Result<u32, Error> {
        if !(4096..=(64 << 20)).contains(&self.value_size) {
            return Err(Error::Setting(format!(
                "--block-size {} is outside 4K..64M",
                self.value_size
            )));
        }
        Ok((self.value_size - VALUE_OVERHEAD) as u32)
    }
}

/// Reads the filesystem under the store's prefix; creates it when the prefix is empty and
/// `create` is given. Refuses foreign keys, newer formats and unfinished restores.
pub async fn open(
    store: &Store,
    scripts: &Scripts,
    create: Option<&CreateOptions>,
) -> Result<FsConfig, Error> {
    let keys = &store.keys;
    let meta_key = keys.meta();
    let kind: String = store
        .cmd(redis::cmd("TYPE").arg(&meta_key))
        .await
        .map_err(store.failed("TYPE"))?;
    match kind.as_str() {
        "hash" => {}
        "none" => {
            refuse_format_1(store).await?;
            if let Some(example) = crate::scan::any_key(store).await? {
                return Err(Error::NotAFilesystem {
                    prefix: keys.prefix().to_string(),
                    example,
                });
            }
            let Some(create) = create else {
                return Err(Error::NoFilesystem {
                    prefix: keys.prefix().to_string(),
                });
            };
            format(store, scripts, create).await?;
        }
        other => {
            return Err(Error::CorruptKey {
                key: meta_key,
                reason: format!("expected a hash, found a {other}"),
            })
        }
    }
    read(store).await
}

/// The settings of the filesystem of `store`, which exists (its `meta` hash was found).
pub async fn read(store: &Store) -> Result<FsConfig, Error> {
    let meta_key = store.keys.meta();
    let meta: HashMap<String, String> = store
        .cmd(redis::cmd("HGETALL").arg(&meta_key))
        .await
        .map_err(store.failed("HGETALL"))?;
    if meta.is_empty() {
        refuse_format_1(store).await?;
        return Err(Error::NoFilesystem {
            prefix: store.keys.prefix().to_string(),
        });
    }
    parse_meta(store.keys.prefix(), &meta_key, &meta)
}

/// Refuses a filesystem still in the key layout of format 1, naming the command that
/// converts it.
async fn refuse_format_1(store: &Store) -> Result<(), Error> {
    let old_meta = store.keys.format_1(&store.keys.meta());
    // (A key of another program may have the name: only a hash of version 1 is one.)
    let version: Option<String> = match store
        .cmd(redis::cmd("HGET").arg(&old_meta).arg("version"))
        .await
    {
        Err(e) if e.code() == Some("WRONGTYPE") => None,
        other => other.map_err(store.failed("HGET"))?,
    };
    if version.as_deref() == Some("1") {
        return Err(Error::Format1 {
            prefix: store.keys.prefix().to_string(),
        });
    }
    Ok(())
}

fn parse_meta(prefix: &str, key: &str, meta: &HashMap<String, String>) -> Result<FsConfig, Error> {
    let field = |name: &str| {
        meta.get(name).ok_or_else(|| Error::CorruptKey {
            key: key.to_string(),
            reason: format!("field '{name}' is missing"),
        })
    };
    let version = field("version")?;
    if version.parse::<u32>().ok() != Some(FORMAT_VERSION) {
        return Err(Error::FormatVersion {
            prefix: prefix.to_string(),
            found: version.clone(),
            supported: FORMAT_VERSION,
        });
    }
    let state = field("state")?;
    if state != "ready" {
        return Err(Error::Incomplete {
            prefix: prefix.to_string(),
            state: state.clone(),
        });
    }
    let block_size = field("block_size")?
        .parse::<u32>()
        .ok()
        .filter(|b| *b >= 1024)
        .ok_or_else(|| Error::CorruptKey {
            key: key.to_string(),
            reason: "block_size is not a number of at least 1024".into(),
        })?;
    let codec = field("codec")?
        .parse()
        .map_err(|reason| Error::CorruptKey {
            key: key.to_string(),
            reason,
        })?;
    // Filesystems made before the setting existed kept ACLs.
    let acl = match meta.get("acl").map(String::as_str) {
        None | Some("on") => true,
        Some("off") => false,
        Some(other) => {
            return Err(Error::CorruptKey {
                key: key.to_string(),
                reason: format!("acl is '{other}', not on or off"),
            })
        }
    };
    Ok(FsConfig {
        block_size,
        codec,
        uuid: field("uuid")?.clone(),
        acl,
    })
}

/// Claims an empty prefix for a filesystem being copied or restored into it: mounts and
/// tools refuse it until [`finish_copy`] marks it ready.
pub async fn mark_unfinished(store: &Store, state: &str) -> Result<(), Error> {
    let cmd = redis::cmd("HSET")
        .arg(store.keys.meta())
        .arg("version")
        .arg(FORMAT_VERSION)
        .arg("state")
        .arg(state)
        .clone();
    store
        .cmd::<()>(&cmd)
        .await
        .map_err(store.failed("marking the filesystem unfinished"))
}

/// Writes the settings of a copied or restored filesystem and marks it ready to mount.
pub async fn finish_copy(store: &Store, config: &FsConfig) -> Result<(), Error> {
    let cmd = redis::cmd("HSET")
        .arg(store.keys.meta())
        .arg("version")
        .arg(FORMAT_VERSION)
        .arg("block_size")
        .arg(config.block_size)
        .arg("codec")
        .arg(config.codec.name())
        .arg("uuid")
        .arg(&config.uuid)
        .arg("acl")
        .arg(on_off(config.acl))
        .arg("created")
        .arg(Timestamp::now().sec)
        .arg("state")
        .arg("ready")
        .clone();
    store
        .cmd::<()>(&cmd)
        .await
        .map_err(store.failed("marking the filesystem ready"))
}

async fn format(store: &Store, scripts: &Scripts, create: &CreateOptions) -> Result<(), Error> {
    let block_size = create.block_size()?;
    let now = Timestamp::now();
    // The root directory belongs to whoever creates the filesystem.
    // SAFETY: geteuid and getegid have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let mut root = Attr::new(FileKind::Dir, 0o755, uid, gid, now);
    root.ino = 1;
    root.parent = 1;
    let call = Format {
        version: FORMAT_VERSION,
        block_size,
        codec: create.codec.name(),
        uuid: new_uuid(),
        created: now.sec,
        root: &root,
        acl: on_off(create.acl),
    };
    let reply = store
        .script(Format::script(scripts), 0, &call.args())
        .await
        .map_err(store.failed("creating the filesystem"))?;
    // Another mount may have created it at the same moment: that is fine.
    match checked(reply).and_then(|reply| call.parse(reply)) {
        Ok(()) | Err(FsError::Exists) => {}
        Err(e) => {
            return Err(Error::CorruptKey {
                key: store.keys.meta(),
                reason: format!("unexpected reply while creating: {e}"),
            })
        }
    }
    tracing::info!(
        "created filesystem '{}' ({} byte blocks, {} compression, ACLs {})",
        store.keys.prefix(),
        block_size,
        create.codec.name(),
        on_off(create.acl)
    );
    Ok(())
}

/// How `P:meta` writes a switch.
fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

/// A random version-4 UUID.
pub fn new_uuid() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn meta_is_checked() {
        let good = [
            ("version", "2"),
            ("state", "ready"),
            ("block_size", "65472"),
            ("codec", "lz4"),
            ("uuid", "u"),
        ];
        assert_eq!(
            parse_meta("p", "p:meta", &meta(&good)).unwrap().block_size,
            65472
        );
        let mut newer = good;
        newer[0] = ("version", "3");
        assert!(matches!(
            parse_meta("p", "p:meta", &meta(&newer)),
            Err(Error::FormatVersion { .. })
        ));
        let mut restoring = good;
        restoring[1] = ("state", "restoring");
        assert!(matches!(
            parse_meta("p", "p:meta", &meta(&restoring)),
            Err(Error::Incomplete { .. })
        ));
        assert!(parse_meta("p", "p:meta", &meta(&good)).unwrap().acl);
        let mut without_acls = good.to_vec();
        without_acls.push(("acl", "off"));
        assert!(!parse_meta("p", "p:meta", &meta(&without_acls)).unwrap().acl);
        without_acls.push(("acl", "maybe"));
        assert!(parse_meta("p", "p:meta", &meta(&without_acls)).is_err());
        let err = parse_meta("p", "p:meta", &meta(&good[..2]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("p:meta") && err.contains("block_size"),
            "{err}"
        );
    }

    #[test]
    fn uuids_look_like_uuids() {
        let u = new_uuid();
        assert_eq!(u.len(), 36);
        assert_ne!(u, new_uuid());
    }
}
