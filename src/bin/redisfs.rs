//! `redisfs`: mount a filesystem kept in Redis.

use std::process::ExitCode;

use clap::Parser;
use redisfs::tool;

fn main() -> ExitCode {
    let args = redisfs::options::MountArgs::parse();
    let mounted = redisfs::mount::init_logging(args.debug, args.log_file.as_deref())
        .and_then(|()| redisfs::mount::run(args));
    match mounted {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => tool::fail("redisfs", &e, 1),
    }
}
