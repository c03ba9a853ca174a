//! `redisfs`: mount a filesystem kept in Redis.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = redisfs::options::MountArgs::parse();
    redisfs::mount::init_logging(args.debug, args.log_file.as_deref())?;
    redisfs::mount::run(args)?;
    Ok(())
}
