//! `switchyard` binary: parse the command line, then hand over to the library.

use clap::Parser;
use std::process::ExitCode;

/// mimalloc: the request path allocates many small, short-lived objects.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    switchyard::logging::init();
    switchyard::commands::run(switchyard::cli::Cli::parse())
}
