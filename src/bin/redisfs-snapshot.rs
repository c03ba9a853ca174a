//! `redisfs-snapshot`: copy a filesystem, at one point in time, to a new prefix.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = redisfs::snapshot::SnapshotArgs::parse();
    redisfs::tool::init_logging();
    let report = redisfs::snapshot::run(&args)?;
    redisfs::tool::print_summary(&args.tool, &report);
    Ok(())
}
