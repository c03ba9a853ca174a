//! `redisfs-admin`: see and manage the filesystems kept in a Redis.

use std::process::ExitCode;

use clap::Parser;
use redisfs::admin::{run, AdminArgs};
use redisfs::tool;

fn main() -> ExitCode {
    let args = AdminArgs::parse();
    tool::init_logging();
    tool::finish("redisfs-admin", args.command.tool(), run(&args), false)
}
