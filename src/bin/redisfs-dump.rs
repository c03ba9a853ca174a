//! `redisfs-dump`: write a filesystem to a portable backup file or a local directory.

use std::process::ExitCode;

use clap::Parser;
use redisfs::dump::{run_dump, DumpArgs};
use redisfs::tool;

fn main() -> ExitCode {
    let args = DumpArgs::parse();
    tool::init_logging();
    let stdout_busy = args.file.as_deref() == Some(std::path::Path::new("-"));
    tool::finish("redisfs-dump", &args.tool, run_dump(&args), stdout_busy)
}
