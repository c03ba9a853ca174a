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

/// Every generated file: its path in the repository and its content.
fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for mut cmd in commands() {
        let name = cmd.get_name().to_string();
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone())
            .render(&mut page)
            .expect("render man page");
        out.push((root.join(format!("man/{name}.1")), page));
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
