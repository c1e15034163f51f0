//! The command line's commands and everything they print (the only module
//! that writes to standard output: tables and JSON for the operator).
#![allow(clippy::print_stdout)]

use crate::admin::client::AdminTarget;
use crate::cli::{AdminArgs, Cli, Command, KeyAction};
use crate::config::Config;
use std::process::ExitCode;

/// Runs one command line; the exit code says how it went.
pub fn run(cli: Cli) -> ExitCode {
    if !matches!(cli.command, Command::Serve { .. }) {
        crate::logging::init(&Default::default());
    }
    match cli.command {
        Command::Serve {
            config,
            daemon,
            upgrade,
        } => {
            let cfg = match Config::resolve(config.as_deref()) {
                Ok(c) => c,
                Err((from, e)) => {
                    eprintln!("switchyard: config {from} is invalid:\n{e}");
                    return ExitCode::from(2);
                }
            };
            crate::logging::init(&cfg.log);
            let grace = cfg.server.grace_period;
            let banner = crate::summary::banner(&cfg);
            if daemon {
                // Fork before any thread starts (demo server, state writer, signals):
                // threads do not survive a fork, so Pingora's own daemon mode is not used.
                if let Err(e) = crate::server::daemonize(&cfg) {
                    eprintln!("switchyard: {e}");
                    return ExitCode::FAILURE;
                }
            }
            match crate::server::build(cfg, crate::server::RunFlags { upgrade }) {
                Ok(server) => {
                    print!("{banner}");
                    crate::server::run(server, grace);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("switchyard: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { config } => match Config::resolve(config.as_deref()) {
            Ok(c) => {
                print!("{}", crate::summary::describe(&c));
                ExitCode::SUCCESS
            }
            Err((from, e)) => {
                eprintln!("switchyard: config {from} is invalid:\n{e}");
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
                        None => print!("{}", crate::admin::client::keys_table(&v)),
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
            println!("{}", crate::config::hash_key(&key));
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
