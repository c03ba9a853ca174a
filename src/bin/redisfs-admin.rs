//! `redisfs-admin`: see and manage the filesystems kept in a Redis.

use std::process::ExitCode;

use clap::Parser;
use redisfs::admin::{run, AdminArgs, AdminCommand};
use redisfs::tool;

fn main() -> ExitCode {
    let args = AdminArgs::parse();
    tool::init_logging();
    // `stats` prints its lines on stdout: its summary goes to stderr.
    let stdout_busy = matches!(args.command, AdminCommand::Stats { .. });
    tool::finish(
        "redisfs-admin",
        args.command.tool(),
        run(&args),
        stdout_busy,
    )
}
