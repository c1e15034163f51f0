//! `switchyard` binary: parse the command line, then hand over to the library.

use clap::Parser;
use std::process::ExitCode;

/// mimalloc: the request path allocates many small, short-lived objects.
#[cfg(not(feature = "alloc-stats"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(feature = "alloc-stats")]
#[global_allocator]
static GLOBAL: switchyard::alloc_stats::Counting = switchyard::alloc_stats::Counting;

fn main() -> ExitCode {
    #[cfg(feature = "alloc-stats")]
    switchyard::alloc_stats::start();
    switchyard::commands::run(switchyard::cli::Cli::parse())
}
