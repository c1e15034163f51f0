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
    use switchyard::cli::Cli;
    let mut cli = Cli::parse();
    // before any thread: the file sets environment variables
    if !cli.no_env_file {
        match switchyard::config::dotenv::load(cli.env_file.as_deref()) {
            // parsed again: flags that default from the environment see the file's
            Ok(true) => cli = Cli::parse(),
            Ok(false) => {}
            Err(e) => {
                eprintln!("switchyard: {e}");
                return ExitCode::from(2);
            }
        }
    }
    #[cfg(feature = "alloc-stats")]
    switchyard::alloc_stats::start();
    switchyard::commands::run(cli)
}
