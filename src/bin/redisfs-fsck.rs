//! `redisfs-fsck`: check a filesystem and, with `--repair`, fix it.

use std::process::ExitCode;

use clap::Parser;
use redisfs::fsck::{run, FsckArgs};
use redisfs::tool;

/// e2fsck's code for an operational error.
const OPERATIONAL_ERROR: u8 = 8;

fn main() -> ExitCode {
    let args = FsckArgs::parse();
    tool::init_logging();
    match run(&args) {
        Ok(report) => {
            tool::print_summary(&args.tool, &report, false);
            ExitCode::from(report.exit_code)
        }
        Err(e) => tool::fail("redisfs-fsck", &e, OPERATIONAL_ERROR),
    }
}
