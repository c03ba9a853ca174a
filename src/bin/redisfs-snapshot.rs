//! `redisfs-snapshot`: copy a filesystem, at one point in time, to a new prefix.

use std::process::ExitCode;

use clap::Parser;
use redisfs::snapshot::{run, SnapshotArgs};
use redisfs::tool;

fn main() -> ExitCode {
    let args = SnapshotArgs::parse();
    tool::init_logging();
    let stdout_busy = false;
    tool::finish("redisfs-snapshot", &args.tool, run(&args), stdout_busy)
}
