//! The man pages in `man/` and the shell completions in `completions/` are generated from the
//! clap definitions of the six binaries. This test fails when they are stale; regenerate them
//! with `REDISFS_REGENERATE=1 cargo test --test generated`.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

fn commands() -> Vec<clap::Command> {
    vec![
        redisfs::options::MountArgs::command(),
        redisfs::snapshot::SnapshotArgs::command(),
        redisfs::dump::DumpArgs::command(),
        redisfs::dump::RestoreArgs::command(),
        redisfs::fsck::FsckArgs::command(),
        redisfs::admin::AdminArgs::command(),
    ]
}

/// `text` with roff's special characters escaped.
fn roff(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}

/// The synopsis of `cmd` (called `name`): every option with its value's name, then its
/// arguments; one line per subcommand for a command that has them.
fn synopsis(cmd: &clap::Command, name: &str) -> Vec<String> {
    if cmd.has_subcommands() {
        return cmd
            .get_subcommands()
            .filter(|sub| sub.get_name() != "help")
            .flat_map(|sub| synopsis(sub, &format!("{name} {}", sub.get_name())))
            .collect();
    }
    let value_name = |arg: &clap::Arg| {
        arg.get_value_names()
            .and_then(|names| names.first())
            .map(|n| n.to_string())
            .unwrap_or_else(|| arg.get_id().to_string().to_uppercase())
    };
    let mut line = format!("\\fB{}\\fR", roff(name));
    let mut arguments = String::new();
    for arg in cmd.get_arguments() {
        if arg.is_hide_set() || ["help", "version"].contains(&arg.get_id().as_str()) {
            continue;
        }
        if arg.is_positional() {
            let shown = format!("\\fI{}\\fR", roff(&value_name(arg)));
            arguments += &if arg.is_required_set() {
                format!(" {shown}")
            } else {
                format!(" [{shown}]")
            };
            continue;
        }
        let flag = match (arg.get_short(), arg.get_long()) {
            (Some(short), Some(long)) => format!("-{short}|--{long}"),
            (None, Some(long)) => format!("--{long}"),
            (Some(short), None) => format!("-{short}"),
            (None, None) => continue,
        };
        let value = if arg.get_action().takes_values() {
            format!(" \\fI{}\\fR", roff(&value_name(arg)))
        } else {
            String::new()
        };
        line += &format!(" [\\fB{}\\fR{value}]", roff(&flag));
    }
    let mut lines = vec![line + &arguments];
    if name == "redisfs" {
        // What `command_line.rs` reads before clap: the forms of mount(8) and fstab.
        lines.push(
            "\\fBredisfs\\fR [\\fIOPTIONS\\fR] \\fIURL\\fR \\fIMOUNTPOINT\\fR [\\fB\\-o\\fR \\fINAME\\fR=\\fIVALUE\\fR[,…]]".into(),
        );
        lines.push(
            "\\fBmount \\-t fuse.redisfs\\fR \\fIURL\\fR \\fIMOUNTPOINT\\fR \\fB\\-o\\fR \\fIprefix=NAME\\fR[,\\fIOPTION\\fR…]".into(),
        );
    }
    lines
}

/// What each binary reads from its environment.
const ENVIRONMENT: &[(&str, &str)] = &[
    ("REDISFS_URL", "The Redis URL, when --redis is not given."),
    (
        "REDISFS_PASSWORD, REDISCLI_AUTH",
        "The Redis password, when the URL has none (never printed or logged).",
    ),
    (
        "REDISFS_SENTINEL_PASSWORD",
        "The sentinels' password, for a redis+sentinel:// URL.",
    ),
    (
        "RUST_LOG",
        "The log level and filter (for example redisfs=debug).",
    ),
];

/// How `name` ends, by exit status.
fn exit_status(name: &str) -> &'static [(&'static str, &'static str)] {
    match name {
        "redisfs-fsck" => &[
            ("0", "The filesystem is clean."),
            ("1", "Problems were found and all repaired."),
            ("4", "Problems were found and are left (run with --repair)."),
            (
                "8",
                "The check could not run (an error, said in one line on stderr).",
            ),
            ("2", "The command line was wrong."),
        ],
        _ => &[
            ("0", "Success."),
            ("1", "An error, said in one line on stderr."),
            ("2", "The command line was wrong."),
        ],
    }
}

/// Files `name` uses, and examples of its use beyond those of its help.
fn files_and_examples(name: &str) -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    match name {
        "redisfs" => vec![
            (
                "FILES",
                vec![
                    ("/sbin/mount.fuse.redisfs", "The mount(8) helper, a link to redisfs (scripts/install)."),
                    ("/etc/fstab", "Mounts at boot, for example: redis://db:6379/0 /mnt/home fuse.redisfs prefix=home,_netdev,nofail 0 0"),
                    ("/var/log/redisfs/PREFIX.log", "The log of a mount in the background, as root (PREFIX.log in the state directory otherwise)."),
                    ("/var/lib/redisfs", "The data of a private redis-server, as root ($XDG_STATE_HOME/redisfs otherwise)."),
                ],
            ),
            (
                "EXAMPLES",
                vec![
                    ("redisfs --redis redis://db:6379/0 --prefix home /mnt/home", "Mount in the foreground."),
                    ("redisfs redis://db:6379/0 /mnt/home -o prefix=home,io_timeout=30 -d", "The same in mount(8)'s form, in the background."),
                    ("mount -t fuse.redisfs redis://db:6379/0 /mnt/home -o prefix=home", "Through mount(8); umount /mnt/home ends it."),
                ],
            ),
        ],
        _ => Vec::new(),
    }
}

/// A man page: clap's sections with a synopsis naming each option's value, then the
/// environment, the exit status and, where a binary has them, files and examples.
fn man_page(cmd: &clap::Command) -> Vec<u8> {
    let name = cmd.get_name().to_string();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut page = Vec::new();
    man.render_title(&mut page).unwrap();
    man.render_name_section(&mut page).unwrap();
    page.extend(b".SH SYNOPSIS\n");
    page.extend(synopsis(cmd, &name).join("\n.br\n").into_bytes());
    page.extend(b"\n");
    man.render_description_section(&mut page).unwrap();
    man.render_options_section(&mut page).unwrap();
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut page).unwrap();
    }
    if cmd.get_after_help().is_some() || cmd.get_after_long_help().is_some() {
        man.render_extra_section(&mut page).unwrap();
    }
    let mut section = |title: &str, items: &[(&str, &str)]| {
        page.extend(format!(".SH {title}\n").into_bytes());
        for (term, text) in items {
            page.extend(format!(".TP\n\\fB{}\\fR\n{}\n", roff(term), roff(text)).into_bytes());
        }
    };
    section("ENVIRONMENT", ENVIRONMENT);
    section("EXIT STATUS", exit_status(&name));
    for (title, items) in files_and_examples(&name) {
        section(title, &items);
    }
    man.render_version_section(&mut page).unwrap();
    page
}

/// Every generated file: its path in the repository and its content.
fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for mut cmd in commands() {
        let name = cmd.get_name().to_string();
        out.push((root.join(format!("man/{name}.1")), man_page(&cmd)));
        for (shell, file) in [
            (Shell::Bash, format!("{name}.bash")),
            (Shell::Zsh, format!("_{name}")),
            (Shell::Fish, format!("{name}.fish")),
        ] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, &name, &mut script);
            out.push((root.join("completions").join(file), script));
        }
    }
    out
}

#[test]
fn man_pages_and_completions_are_current() {
    let regenerate = std::env::var_os("REDISFS_REGENERATE").is_some();
    let mut stale = Vec::new();
    for (path, content) in generated() {
        if regenerate {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &content).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(content.as_slice()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files (run `REDISFS_REGENERATE=1 cargo test --test generated`): {stale:?}"
    );
}
