//! `switchyard` binary: parse the command line, then hand over to the library.

use clap::Parser;
use std::process::ExitCode;
use switchyard::cli::{Cli, Command};
use switchyard::config::Config;

/// mimalloc: the request path allocates many small, short-lived objects.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            daemon,
            upgrade,
        } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("switchyard: config {} is invalid:\n{e}", config.display());
                    return ExitCode::from(2);
                }
            };
            let grace = cfg.server.grace_period;
            match switchyard::server::build(cfg, switchyard::server::RunFlags { daemon, upgrade }) {
                Ok(server) => {
                    switchyard::server::run(server, grace);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("switchyard: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                print!("{}", switchyard::summary::describe(&c));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("switchyard: config {} is invalid:\n{e}", config.display());
                ExitCode::from(2)
            }
        },
        Command::HashKey { key } => {
            let key = match key {
                Some(k) => k,
                None => {
                    let mut s = String::new();
                    if std::io::stdin().read_line(&mut s).is_err() {
                        eprintln!("switchyard: could not read a key from standard input");
                        return ExitCode::FAILURE;
                    }
                    s.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            println!("{}", switchyard::config::hash_key(&key));
            ExitCode::SUCCESS
        }
    }
}
