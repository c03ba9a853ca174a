//! `redisfs-restore`: load a backup file or a local directory into an empty prefix.

use std::process::ExitCode;

use clap::Parser;
use redisfs::dump::{run_restore, RestoreArgs};
use redisfs::tool;

fn main() -> ExitCode {
    let args = RestoreArgs::parse();
    tool::init_logging();
    let stdout_busy = false;
    tool::finish(
        "redisfs-restore",
        &args.tool,
        run_restore(&args),
        stdout_busy,
    )
}
