//! `switchyard` binary: parse the command line, then hand over to the library.

use clap::Parser;
use std::process::ExitCode;
use switchyard::admin::client::AdminTarget;
use switchyard::cli::{AdminArgs, Cli, Command, KeyAction};
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
            if daemon {
                // Fork before any thread starts (demo server, state writer, signals):
                // threads do not survive a fork, so Pingora's own daemon mode is not used.
                if let Err(e) = switchyard::server::daemonize(&cfg) {
                    eprintln!("switchyard: cannot run in the background: {e}");
                    return ExitCode::FAILURE;
                }
            }
            match switchyard::server::build(cfg, switchyard::server::RunFlags { upgrade }) {
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
        Command::Keys { admin, action } => {
            let target = match admin_target(&admin) {
                Ok(t) => t,
                Err(code) => return code,
            };
            let (method, path) = match &action {
                None => ("GET", "/admin/keys".to_string()),
                Some(KeyAction::Enable { id }) => (
                    "POST",
                    format!("/admin/keys/{}/enable", id.replace('#', "%23")),
                ),
                Some(KeyAction::Disable { id }) => (
                    "POST",
                    format!("/admin/keys/{}/disable", id.replace('#', "%23")),
                ),
                Some(KeyAction::Reset { id }) => (
                    "POST",
                    format!("/admin/keys/{}/reset", id.replace('#', "%23")),
                ),
                Some(KeyAction::Rotate) => ("POST", "/admin/keys/rotate".to_string()),
            };
            match target.call(method, &path) {
                Ok((200, body)) => {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    match action {
                        None => print!("{}", switchyard::admin::client::keys_table(&v)),
                        Some(KeyAction::Rotate) => {
                            println!("{}", serde_json::to_string_pretty(&v).unwrap_or(body))
                        }
                        Some(_) => println!(
                            "{}: {}",
                            v["id"].as_str().unwrap_or("?"),
                            v["state"].as_str().unwrap_or("?")
                        ),
                    }
                    ExitCode::SUCCESS
                }
                Ok((status, body)) => {
                    eprintln!("switchyard: the gateway answered {status}: {body}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("switchyard: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Reload { admin } => {
            let target = match admin_target(&admin) {
                Ok(t) => t,
                Err(code) => return code,
            };
            match target.call("POST", "/admin/reload") {
                Ok((200, body)) => {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    println!("{}", v["message"].as_str().unwrap_or("reloaded"));
                    ExitCode::SUCCESS
                }
                Ok((_, body)) => {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    eprintln!(
                        "switchyard: {}",
                        v["error"]["message"].as_str().unwrap_or(&body)
                    );
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("switchyard: {e}");
                    ExitCode::FAILURE
                }
            }
        }
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

/// Where the admin API is: `--admin`/`--token`, else the config's `admin` section.
fn admin_target(a: &AdminArgs) -> Result<AdminTarget, ExitCode> {
    // a config that does not validate (say, the one a reload should reject) still names the admin listener
    let from_cfg = match Config::load(&a.config) {
        Ok(c) => AdminTarget::from_config(&c),
        Err(_) => AdminTarget::from_yaml_lenient(&a.config),
    };
    let addr = a
        .admin
        .clone()
        .or_else(|| from_cfg.as_ref().map(|t| t.addr.clone()))
        .unwrap_or_else(|| "127.0.0.1:4001".into());
    let token = a.token.clone().or_else(|| from_cfg.and_then(|t| t.token));
    Ok(AdminTarget {
        addr: addr
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string(),
        token,
    })
}
