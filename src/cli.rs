//! Command-line definitions (clap) only.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

pub const DEFAULT_CONFIG: &str = "conf/switchyard.yaml";

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A self-hosted gateway for OpenAI-compatible LLM APIs, on Pingora"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// Config file.
        #[arg(short, long, default_value = DEFAULT_CONFIG, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        /// Run in the background (Pingora daemon mode).
        #[arg(short, long)]
        daemon: bool,
        /// Take over the listening sockets of a running instance (Pingora graceful upgrade).
        #[arg(short, long)]
        upgrade: bool,
    },
    /// Validate a config file and print what it will do; exits non-zero on errors.
    Check {
        /// Config file.
        #[arg(short, long, default_value = DEFAULT_CONFIG, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
    },
    /// Print the SHA-256 form of a client key, for `clients[].key_sha256`.
    HashKey {
        /// The key; read from standard input when omitted.
        key: Option<String>,
    },
}
