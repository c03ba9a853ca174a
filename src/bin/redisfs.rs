//! `redisfs`: mount a filesystem kept in Redis (also `mount.fuse.redisfs`, for mount(8)).

use std::process::ExitCode;

use clap::Parser;
use redisfs::command_line::{self, Invocation};
use redisfs::options::MountArgs;
use redisfs::tool;

fn main() -> ExitCode {
    let command_line = match command_line::interpret(std::env::args_os().collect()) {
        Ok(Invocation::Mount(command_line)) => command_line,
        Ok(Invocation::Fake) => return ExitCode::SUCCESS,
        Err(e) => return tool::fail("redisfs", &e, 1),
    };
    let args = MountArgs::parse_from(&command_line);
    let mounted =
        redisfs::mount::init_logging(&args).and_then(|()| redisfs::mount::run(args, &command_line));
    match mounted {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => tool::fail("redisfs", &e, 1),
    }
}
