//! The command line's commands and everything they print (the only module
//! that writes to standard output: tables and JSON for the operator).
#![allow(clippy::print_stdout)]

use crate::admin::client::{query, AdminTarget};
use crate::admin::view;
use crate::cli::{AdminArgs, CacheAction, Cli, Command, KeyAction, StatsAction};
use crate::config::Config;
use serde_json::Value;
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
            for why in &cfg.env_ignored {
                log::warn!("environment variable not applied: {why}");
            }
            let grace = cfg.server.grace_period;
            let banner = crate::summary::banner(&cfg);
            let started = started_line(&cfg);
            // a bare connect would be a failed handshake on TLS and PROXY protocol listeners
            let plain: Vec<String> = cfg
                .listen
                .iter()
                .filter(|l| l.tls.is_none() && !l.proxy_protocol)
                .map(|l| l.addr.clone())
                .collect();
            if daemon {
                // Fork before any thread starts (demo server, state writer, signals):
                // threads do not survive a fork, so Pingora's own daemon mode is not used.
                let log = cfg.server.error_log.as_deref();
                if let Err(e) = crate::daemon::daemonize(log, &crate::server::pid_file(&cfg)) {
                    eprintln!("switchyard: {e}");
                    return ExitCode::FAILURE;
                }
            }
            match crate::server::build(cfg, crate::server::RunFlags { upgrade }) {
                Ok(server) => {
                    crate::daemon::ready_once_listening(plain);
                    log::info!("{started}");
                    print!("{banner}");
                    crate::server::run(server, grace);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    crate::daemon::failed(&e.to_string());
                    eprintln!("switchyard: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { config } => match Config::resolve(config.as_deref()) {
            Ok(c) => {
                print!("{}", crate::summary::describe(&c));
                match c.redis.as_ref().map(crate::fleet::check) {
                    Some(Err(e)) => {
                        eprintln!("switchyard: {e}");
                        return ExitCode::from(2);
                    }
                    Some(Ok(Some(why))) => println!(
                        "warning: state.redis is not reachable now ({why}); the gateway would start on its own key state and try again every second"
                    ),
                    _ => {}
                }
                ExitCode::SUCCESS
            }
            Err((from, e)) => {
                eprintln!("switchyard: config {from} is invalid:\n{e}");
                ExitCode::from(2)
            }
        },
        Command::Status { admin } => show(&admin, "/admin/status", view::status_text),
        Command::Usage { admin, by, since } => {
            let q = query(&[("by", Some(&by)), ("since", Some(&since))]);
            show(&admin, &format!("/admin/usage?{q}"), view::usage_table)
        }
        Command::Requests {
            admin,
            limit,
            client,
            status,
            model,
            since,
            until,
        } => {
            let limit = limit.to_string();
            let q = query(&[
                ("limit", Some(&limit)),
                ("client", client.as_deref()),
                ("status", status.as_deref()),
                ("model", model.as_deref()),
                ("since", since.as_deref()),
                ("until", until.as_deref()),
            ]);
            show(
                &admin,
                &format!("/admin/requests?{q}"),
                view::requests_table,
            )
        }
        Command::Probe {
            admin,
            model,
            all,
            upstream,
        } => probe(&admin, model.as_deref(), all, upstream.as_deref()),
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
                Some(KeyAction::Rotate { upstream }) => (
                    "POST",
                    format!(
                        "/admin/keys/rotate?{}",
                        query(&[("upstream", upstream.as_deref())])
                    ),
                ),
            };
            match target.call(method, &path) {
                Ok((200, body)) => {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    match action {
                        _ if admin.json => {
                            println!("{}", serde_json::to_string_pretty(&v).unwrap_or(body))
                        }
                        None => print!("{}", view::keys_table(&v, colour())),
                        Some(KeyAction::Rotate { .. }) => {
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
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    let msg = v["error"]["message"].as_str().unwrap_or(&body);
                    eprintln!("switchyard: the gateway answered {status}: {msg}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("switchyard: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Stats {
            admin,
            action: StatsAction::Reset,
        } => match admin_target(&admin).and_then(|t| fetch(&t, "POST", "/admin/stats/reset")) {
            Ok(_) => {
                println!("key counters reset");
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Cache { admin, action } => match action {
            None => show(&admin, "/admin/cache", view::cache_text),
            Some(CacheAction::Purge { model, client }) => {
                let q = query(&[("model", model.as_deref()), ("client", client.as_deref())]);
                let path = format!("/admin/cache/purge?{q}");
                match admin_target(&admin).and_then(|t| fetch(&t, "POST", &path)) {
                    Ok(v) => {
                        println!(
                            "purged {} cached answers",
                            v["purged"].as_u64().unwrap_or(0)
                        );
                        ExitCode::SUCCESS
                    }
                    Err(code) => code,
                }
            }
        },
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
        Command::Clients { admin, action } => match admin_target(&admin) {
            Ok(t) => crate::clients_cli::run(&t, action, admin.json, colour()),
            Err(code) => code,
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
            println!("{}", crate::config::hash_key(&key));
            ExitCode::SUCCESS
        }
    }
}

/// Where the admin API is: `--admin`/`--token`, else the config's `admin` section.
fn admin_target(a: &AdminArgs) -> Result<AdminTarget, ExitCode> {
    let named = a.config != std::path::Path::new(crate::cli::DEFAULT_CONFIG);
    if a.admin.is_none() && named && !a.config.exists() {
        // a config named on purpose that is not there: not a silent default
        eprintln!(
            "switchyard: cannot read config file {} (give --admin host:port, or a config that exists)",
            a.config.display()
        );
        return Err(ExitCode::FAILURE);
    }
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

/// Colours only for a terminal (and not under `NO_COLOR`).
fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// One admin API call whose answer must be a 200 with JSON; errors are printed.
fn fetch(target: &AdminTarget, method: &str, path: &str) -> Result<Value, ExitCode> {
    crate::admin::client::json_answer(target.call(method, path), path, &[200])
}

/// GETs `path` and prints it as a table (`render`) or, with `--json`, as JSON.
fn show(admin: &AdminArgs, path: &str, render: fn(&Value, bool) -> String) -> ExitCode {
    let v = match admin_target(admin).and_then(|t| fetch(&t, "GET", path)) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if admin.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!("{}", render(&v, colour()));
    }
    ExitCode::SUCCESS
}

/// `switchyard probe`: asks the gateway what to probe, probes each target
/// in turn behind a progress bar (on a terminal), prints the results.
fn probe(admin: &AdminArgs, model: Option<&str>, all: bool, upstream: Option<&str>) -> ExitCode {
    let target = match admin_target(admin) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let q = query(&[
        ("model", model),
        ("upstream", upstream),
        ("all", all.then_some("1")),
    ]);
    let list = match fetch(&target, "GET", &format!("/admin/probe/targets?{q}")) {
        Ok(v) => v["targets"].as_array().cloned().unwrap_or_default(),
        Err(code) => return code,
    };
    if list.is_empty() {
        eprintln!(
            "switchyard: nothing to probe (no upstream serves that model, or no model is listed)"
        );
        return ExitCode::FAILURE;
    }
    let bar = indicatif::ProgressBar::new(list.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut results = Vec::with_capacity(list.len());
    for t in &list {
        let (m, u, k) = (
            t["model"].as_str(),
            t["upstream"].as_str(),
            t["key"].as_str(),
        );
        bar.set_message(format!(
            "{} on {}",
            m.unwrap_or("?"),
            k.or(u).unwrap_or("?")
        ));
        let q = query(&[("model", m), ("upstream", u), ("key", k)]);
        match fetch(&target, "POST", &format!("/admin/probe?{q}")) {
            Ok(r) => results.push(r),
            Err(code) => {
                bar.abandon();
                return code;
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if admin.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&results).unwrap_or_default()
        );
    } else {
        print!("{}", view::probe_table(&results, colour()));
    }
    if results.iter().all(|r| r["result"] == "ok") {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The log's one line at start: version, API and admin addresses.
fn started_line(cfg: &Config) -> String {
    let api: Vec<&str> = cfg.listen.iter().map(|l| l.addr.as_str()).collect();
    format!(
        "switchyard {} started: API on {}; admin on {}",
        env!("CARGO_PKG_VERSION"),
        api.join(", "),
        cfg.admin.listen.as_deref().unwrap_or("none")
    )
}
