//! The mount's command line as `mount(8)` and `/etc/fstab` write it, turned into `redisfs`'s
//! own options before they are parsed.
//!
//! `mount -t fuse.redisfs SOURCE DIR -o OPTIONS` runs the helper `mount.fuse.redisfs` (a link
//! to `redisfs`, see `scripts/install`) as `mount.fuse.redisfs SOURCE DIR [-sfnvrw] [-o
//! OPTIONS] [-t TYPE]`, and expects it to return once the filesystem is mounted. So, here:
//!
//! - a Redis URL before the mount point is `--redis URL` (any invocation);
//! - every long option of `redisfs` may be given as `-o name=value` (or `-o name` for a
//!   switch), with `_` for `-` as fstab writers like it (`io_timeout=30`); a `\,` in a value is
//!   a comma;
//! - options meant for `mount(8)`, boot and desktop tools (`_netdev`, `nofail`, `defaults`,
//!   `auto`, `noauto`, `user`, `user=…`, `users`, `nouser`, `owner`, `group`, `comment=…`, `x-…`) are
//!   consumed here: the kernel refuses what it does not know;
//! - the rest of `-o` (`allow_other`, `noatime`, `ro`, …) stays for the kernel (see
//!   `mount::fuse_options`);
//! - run under a `mount.*` name, the mount goes to the background once mounted (`--daemon`),
//!   and the flags `mount(8)` adds are understood (`-f` fakes: nothing is mounted).

use std::ffi::{OsStr, OsString};

use clap::CommandFactory;

use crate::error::Error;
use crate::options::MountArgs;

/// What to do with a command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    /// Mount with these arguments (the program's name first), in `redisfs`'s own syntax.
    Mount(Vec<OsString>),
    /// `mount -f`: pretend, mount nothing.
    Fake,
}

/// Options that mean something to `mount(8)`, to boot or to desktop tools, never to the
/// kernel or to redisfs.
fn for_user_space(option: &str) -> bool {
    matches!(
        option,
        "_netdev"
            | "nofail"
            | "defaults"
            | "auto"
            | "noauto"
            | "user"
            | "users"
            | "nouser"
            | "owner"
            | "group"
    ) || option.starts_with("x-")
        || option.starts_with("comment=")
        || option.starts_with("user=")
}

/// Turns `argv` (as the process got it) into [`Invocation`]; an option it cannot place is an
/// error naming it.
pub fn interpret(argv: Vec<OsString>) -> Result<Invocation, Error> {
    let mut given = argv.into_iter();
    let program = given.next().unwrap_or_else(|| "redisfs".into());
    let as_helper = std::path::Path::new(&program)
        .file_name()
        .and_then(OsStr::to_str)
        .is_some_and(|name| name.starts_with("mount."));
    let command = MountArgs::command();
    let mut out = vec![program];
    let mut option_lists: Vec<String> = Vec::new();
    let mut positionals: Vec<OsString> = Vec::new();
    while let Some(arg) = given.next() {
        let text = arg.to_str().unwrap_or("");
        if text == "--" {
            positionals.extend(given.by_ref());
            break;
        }
        if text == "-o" {
            let list = given
                .next()
                .ok_or_else(|| bad("-o needs a list of options"))?;
            option_lists.push(utf8(&list, "-o")?);
        } else if let Some(list) = text.strip_prefix("-o") {
            option_lists.push(list.to_string());
        } else if as_helper && matches!(text, "-s" | "-n" | "-v" | "-w") {
            // Sloppy, no mtab, verbose, read-write: nothing for a FUSE mount to do.
        } else if as_helper && text == "-f" {
            return Ok(Invocation::Fake);
        } else if as_helper && text == "-r" {
            option_lists.push("ro".into());
        } else if as_helper && text == "-t" {
            given.next();
        } else if as_helper && text == "-N" {
            return Err(bad("mount -N (another mount namespace) is not supported"));
        } else if let Some(long) = text.strip_prefix("--") {
            let takes_value =
                !long.contains('=') && long_option(&command, long).is_some_and(takes_value);
            out.push(arg);
            if takes_value {
                out.extend(given.next());
            }
        } else if text.starts_with('-') && text.len() > 1 {
            out.push(arg);
        } else {
            positionals.push(arg);
        }
    }
    let mut for_kernel = Vec::new();
    for list in &option_lists {
        for option in split_options(list) {
            if for_user_space(&option) {
                continue;
            }
            let (name, value) = match option.split_once('=') {
                Some((name, value)) => (name.to_string(), Some(value.to_string())),
                None => (option.clone(), None),
            };
            let Some(arg) = long_option(&command, &name.replace('_', "-")) else {
                for_kernel.push(option);
                continue;
            };
            let long = arg.get_long().expect("found by its long name");
            match value {
                Some(value) if takes_value(arg) => out.push(format!("--{long}={value}").into()),
                None if takes_value(arg) => {
                    return Err(bad(&format!("-o {name} needs a value ({name}=…)")));
                }
                Some(_) => return Err(bad(&format!("-o {name} is a switch and takes no value"))),
                None => out.push(format!("--{long}").into()),
            }
        }
    }
    if !for_kernel.is_empty() {
        out.push("-o".into());
        out.push(for_kernel.join(",").into());
    }
    if as_helper && !out.iter().any(|a| a == "-d" || a == "--daemon") {
        out.push("--daemon".into());
    }
    if positionals.len() == 2 {
        let source = positionals.remove(0);
        let text = utf8(&source, "the source")?;
        if text.contains("://") {
            out.push(format!("--redis={text}").into());
        } else if text != "none" && text != "redisfs" {
            return Err(bad(&format!(
                "'{text}' is not a Redis URL (redis://…, rediss://…, redis+unix://…); a mount's \
                 source is its Redis, or 'none' with -o redis=URL"
            )));
        }
    }
    // After "--": a mount point may start with '-'.
    if !positionals.is_empty() {
        out.push("--".into());
        out.extend(positionals);
    }
    Ok(Invocation::Mount(out))
}

/// The long option `name` of the mount's command, by its name or an alias.
fn long_option<'a>(command: &'a clap::Command, name: &str) -> Option<&'a clap::Arg> {
    command.get_arguments().find(|arg| {
        arg.get_long() == Some(name)
            || arg
                .get_all_aliases()
                .is_some_and(|aliases| aliases.contains(&name))
    })
}

fn takes_value(arg: &clap::Arg) -> bool {
    arg.get_action().takes_values()
}

/// `list` split at commas not escaped as `\,`.
fn split_options(list: &str) -> Vec<String> {
    let mut options = vec![String::new()];
    let mut chars = list.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let escaped = chars.next().unwrap_or('\\');
                options.last_mut().expect("one option").push(escaped);
            }
            ',' => options.push(String::new()),
            c => options.last_mut().expect("one option").push(c),
        }
    }
    options
        .into_iter()
        .map(|o| o.trim().to_string())
        .filter(|o| !o.is_empty())
        .collect()
}

fn utf8(arg: &OsStr, what: &str) -> Result<String, Error> {
    arg.to_str()
        .map(str::to_string)
        .ok_or_else(|| bad(&format!("{what} is not valid UTF-8")))
}

fn bad(reason: &str) -> Error {
    Error::Setting(reason.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount_args(argv: &[&str]) -> Vec<String> {
        match interpret(argv.iter().map(OsString::from).collect()).unwrap() {
            Invocation::Mount(args) => args.into_iter().map(|a| a.into_string().unwrap()).collect(),
            Invocation::Fake => vec!["fake".into()],
        }
    }

    #[test]
    fn mount_8_and_fstab_lines_become_redisfs_options() {
        assert_eq!(
            mount_args(&[
                "/sbin/mount.fuse.redisfs",
                "redis://h:6379/0",
                "/mnt/x",
                "-o",
                "rw,prefix=x,_netdev,nofail,defaults,io_timeout=30,allow_other,x-systemd.automount,user=bob",
                "-n",
            ]),
            [
                "/sbin/mount.fuse.redisfs",
                "--prefix=x",
                "--io-timeout=30",
                "-o",
                "rw,allow_other",
                "--daemon",
                "--redis=redis://h:6379/0",
                "--",
                "/mnt/x",
            ]
        );
        assert_eq!(mount_args(&["mount.redisfs", "none", "/m", "-f"]), ["fake"]);
    }

    #[test]
    fn switches_values_and_escaped_commas() {
        assert_eq!(
            mount_args(&[
                "redisfs",
                "/m",
                "-oro,writeback",
                "--prefix",
                "p",
                "-o",
                "redis=redis://a\\,b/0"
            ]),
            [
                "redisfs",
                "--prefix",
                "p",
                "--read-only",
                "--writeback",
                "--redis=redis://a,b/0",
                "--",
                "/m"
            ]
        );
        let err = |argv: &[&str]| {
            interpret(argv.iter().map(OsString::from).collect())
                .unwrap_err()
                .to_string()
        };
        assert!(err(&["redisfs", "/m", "-o", "prefix"]).contains("-o prefix needs a value"));
        assert!(err(&["redisfs", "/m", "-o", "writeback=1"]).contains("switch"));
        assert!(err(&["redisfs", "host:6379", "/m"]).contains("'host:6379' is not a Redis URL"));
    }
}
