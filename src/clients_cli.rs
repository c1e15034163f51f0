//! `switchyard clients`: client keys through the admin API
//! (`/admin/clients`), and what the command prints of them. `commands`
//! hands over the admin target; this module never reads the config.
#![allow(clippy::print_stdout)]

use crate::admin::client::{AdminTarget, ClientError};
use crate::admin::view::{paint, Table};
use crate::cli::{ClientAction, ClientLimits};
use crate::tenants::quota::grouped;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Map, Value};
use std::process::ExitCode;

/// The line printed under a key the gateway shows (create, rotate).
pub const SAVE_KEY: &str = "Save this key now; it will not be shown again.";

/// The largest token quota the API takes (10^15).
const MAX_TOKENS: u64 = 1_000_000_000_000_000;
/// The money quota's bounds, in USD.
const MIN_USD: f64 = 0.000_001;
const MAX_USD: f64 = 1_000_000.0;

/// A client name as one path segment (unreserved characters as they are).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// One `--quota` amount.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Tokens(u64),
    /// US dollars.
    Usd(f64),
}

/// One admin API call of the command: method, path, JSON body, and how
/// its answer is printed.
struct Call(
    &'static str,
    String,
    Option<Value>,
    fn(&Value, bool) -> String,
);

/// Runs `switchyard clients …` against `target` (no action: `list`);
/// `json` prints the API's answer as it is. A bad flag exits 2, an API
/// error 1 (with the API's message).
pub fn run(
    target: &AdminTarget,
    action: Option<ClientAction>,
    json: bool,
    colour: bool,
) -> ExitCode {
    let call = match plan(action.unwrap_or(ClientAction::List)) {
        Ok(c) => c,
        Err(why) => {
            eprintln!("switchyard: {why}");
            return ExitCode::from(2);
        }
    };
    let v = match answer(target, &call) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!("{}", (call.3)(&v, colour));
    }
    ExitCode::SUCCESS
}

/// The API call an action makes; `Err` for flags that do not parse.
fn plan(action: ClientAction) -> Result<Call, String> {
    let one = |name: &str| format!("/admin/clients/{}", utf8_percent_encode(name, SEGMENT));
    Ok(match action {
        ClientAction::List => Call("GET", "/admin/clients".into(), None, list_table),
        ClientAction::Create { name, limits, key } => {
            let mut body = fields(&limits, true)?;
            body.insert("name".into(), json!(name));
            if let Some(k) = key {
                body.insert("key".into(), json!(k));
            }
            let body = Some(Value::Object(body));
            Call("POST", "/admin/clients".into(), body, key_text)
        }
        ClientAction::Show { name } => Call("GET", one(&name), None, client_text),
        ClientAction::Update { name, limits } => {
            let body = fields(&limits, false)?;
            if body.is_empty() {
                return Err("clients update: nothing to change; give --models, --rpm, --tpm, --max-concurrent, --expires, --quota or --notes".into());
            }
            Call("PATCH", one(&name), Some(Value::Object(body)), updated_text)
        }
        ClientAction::Revoke { name } => Call("POST", one(&name) + "/revoke", None, revoked_text),
        ClientAction::Rotate { name } => Call("POST", one(&name) + "/rotate", None, key_text),
        ClientAction::Audit { limit } => {
            let path = format!("/admin/clients/audit?limit={limit}");
            Call("GET", path, None, audit_table)
        }
    })
}

/// The JSON fields `l` sets. With `creating`, a cleared value (`none`,
/// `--models all`) is left out rather than sent as `null`.
fn fields(l: &ClientLimits, creating: bool) -> Result<Map<String, Value>, String> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        if !(creating && v.is_null()) {
            m.insert(k.to_string(), v);
        }
    };
    if let Some(models) = &l.models {
        put("models", models_json(models)?);
    }
    for (key, flag, given) in [
        ("rpm", "--rpm", &l.rpm),
        ("tpm", "--tpm", &l.tpm),
        ("max_concurrent", "--max-concurrent", &l.max_concurrent),
    ] {
        if let Some(v) = given {
            put(key, limit(flag, v)?);
        }
    }
    if let Some(e) = &l.expires {
        put("expires", if e == "none" { Value::Null } else { json!(e) });
    }
    if !l.quotas.is_empty() {
        put("quotas", quotas_json(&l.quotas)?);
    }
    if let Some(n) = &l.notes {
        put("notes", json!(n));
    }
    Ok(m)
}

/// `--models gpt-*,o3*` as a list; `all` (alone) lifts the restriction (null).
fn models_json(models: &[String]) -> Result<Value, String> {
    let list: Vec<&str> = models
        .iter()
        .map(|m| m.trim())
        .filter(|m| !m.is_empty())
        .collect();
    match list.as_slice() {
        [] => Err("--models: give model globs (gpt-*,o3*), or `all`".into()),
        ["all"] => Ok(Value::Null),
        _ if list.contains(&"all") => Err("--models: `all` stands alone".into()),
        _ => Ok(json!(list)),
    }
}

/// `--rpm 60` → 60; `none` → null (clears the limit).
fn limit(flag: &str, v: &str) -> Result<Value, String> {
    if v == "none" {
        return Ok(Value::Null);
    }
    let digits = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    match v.parse::<u64>() {
        Ok(n) if digits && n >= 1 => Ok(json!(n)),
        _ => Err(format!("{flag} `{v}`: a whole number from 1, or `none`")),
    }
}

/// Parses one `--quota` strictly: `<number>tokens/<period>` (a whole
/// number from 1 to 10^15) or `<number>usd/<period>` (a decimal from
/// 0.000001 to 1000000), the period `day`, `week` or `month` (UTC).
pub fn parse_quota(s: &str) -> Result<(&'static str, Amount), String> {
    const FORM: &str = "expected <number>tokens/<day|week|month> or <number>usd/<day|week|month>, such as 100000tokens/day or 25usd/month";
    let bad = |why: &str| format!("--quota `{s}`: {why}");
    let (amount, per) = s.split_once('/').ok_or_else(|| bad(FORM))?;
    let per = match per {
        "day" => "day",
        "week" => "week",
        "month" => "month",
        _ => return Err(bad("the period must be day, week or month")),
    };
    if let Some(n) = amount.strip_suffix("tokens") {
        let digits = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
        match n.parse::<u64>() {
            Ok(t) if digits && (1..=MAX_TOKENS).contains(&t) => Ok((per, Amount::Tokens(t))),
            _ => Err(bad("tokens must be a whole number from 1 to 10^15")),
        }
    } else if let Some(n) = amount.strip_suffix("usd") {
        match decimal(n) {
            Some(x) if (MIN_USD..=MAX_USD).contains(&x) => Ok((per, Amount::Usd(x))),
            _ => Err(bad("usd must be a number from 0.000001 to 1000000")),
        }
    } else {
        Err(bad(FORM))
    }
}

/// `12`, `0.5`, `25.00`: digits with at most one `.` between digits.
fn decimal(n: &str) -> Option<f64> {
    let (whole, frac) = n.split_once('.').unwrap_or((n, "0"));
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if digits(whole) && digits(frac) {
        n.parse().ok()
    } else {
        None
    }
}

/// The `--quota` values as the API's `quotas`: one object per period
/// (tokens and usd of a period together), or null for a lone `none`.
fn quotas_json(given: &[String]) -> Result<Value, String> {
    if given.iter().any(|q| q == "none") {
        return if given.len() == 1 {
            Ok(Value::Null)
        } else {
            Err("--quota none stands alone (it removes every quota)".into())
        };
    }
    let mut slots: [(&str, Option<u64>, Option<f64>); 3] = [
        ("day", None, None),
        ("week", None, None),
        ("month", None, None),
    ];
    for q in given {
        let (per, amount) = parse_quota(q)?;
        let Some(slot) = slots.iter_mut().find(|s| s.0 == per) else {
            continue;
        };
        let (unit, taken) = match amount {
            Amount::Tokens(t) => ("tokens", slot.1.replace(t).is_some()),
            Amount::Usd(x) => ("usd", slot.2.replace(x).is_some()),
        };
        if taken {
            return Err(format!("--quota: two {unit} quotas per {per}; give one"));
        }
    }
    let list: Vec<Value> = slots
        .iter()
        .filter(|(_, t, u)| t.is_some() || u.is_some())
        .map(|(per, tokens, dollars)| {
            let mut o = Map::new();
            o.insert("per".into(), json!(per));
            if let Some(t) = tokens {
                o.insert("tokens".into(), json!(t));
            }
            if let Some(x) = dollars {
                o.insert("usd".into(), json!(x));
            }
            Value::Object(o)
        })
        .collect();
    Ok(Value::Array(list))
}

/// Who the audit names: `$USER` (printable ASCII, at most 64), else `cli`.
fn actor() -> String {
    let who: String = std::env::var("USER")
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_graphic)
        .take(64)
        .collect();
    if who.is_empty() {
        "cli".into()
    } else {
        who
    }
}

/// Sends one call (with its JSON body, the actor and the admin token);
/// returns (status, body).
fn send(target: &AdminTarget, call: &Call) -> Result<(u16, String), ClientError> {
    let who = actor();
    // changes must say JSON, with a body or not (see admin::clients::cross_site)
    let headers = [
        ("x-switchyard-actor", who.as_str()),
        ("content-type", "application/json"),
    ];
    target.send(
        call.0,
        &call.1,
        call.2.as_ref().map(|b| b.to_string()),
        &headers,
    )
}

/// The call's JSON answer (200 or 201); anything else prints the API's
/// `error.message` and gives the exit code.
fn answer(target: &AdminTarget, call: &Call) -> Result<Value, ExitCode> {
    let sent = send(target, call);
    if matches!(sent, Ok((404, _))) && call.1 == "/admin/clients" {
        eprintln!("switchyard: this gateway has no /admin/clients (a version before run-time client keys?)");
        return Err(ExitCode::FAILURE);
    }
    crate::admin::client::json_answer(sent, &call.1, &[200, 201])
}

/// A value as a cell: `-` for none; control characters shown as `?`.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(x) if x.is_empty() => "-".into(),
        Value::String(x) => x
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect(),
        other => other.to_string(),
    }
}

/// `2026-12-02T14:03:12Z` → `2026-12-02 14:03:12`.
fn when(v: &Value) -> String {
    cell(v).replace('T', " ").replace('Z', "")
}

/// Dollars: four decimals under $1 (but zero), else two.
fn usd(x: f64) -> String {
    if x > 0.0 && x < 1.0 {
        format!("${x:.4}")
    } else {
        format!("${x:.2}")
    }
}

/// A spend figure (`-` when absent).
fn spend(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), usd)
}

/// A quota figure in its unit: tokens with separators, usd in dollars.
fn amount(unit: &str, v: &Value) -> String {
    match (unit, v.as_u64(), v.as_f64()) {
        ("usd", _, Some(x)) => usd(x),
        (_, Some(n), _) => grouped(n),
        (_, None, Some(x)) => grouped(x.max(0.0).round() as u64),
        _ => "-".into(),
    }
}

/// `rpm 60, tpm 100,000, concurrent 4`, or `-`.
fn limits_cell(c: &Value) -> String {
    let parts: Vec<String> = [
        ("rpm", "rpm"),
        ("tpm", "tpm"),
        ("max_concurrent", "concurrent"),
    ]
    .iter()
    .filter_map(|(k, label)| c[*k].as_u64().map(|n| format!("{label} {}", grouped(n))))
    .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// `1,234/100,000 tokens/day; $1.50/$25.00 usd/month`, or `-`.
fn quotas_cell(c: &Value) -> String {
    let parts: Vec<String> = c["quotas"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|q| {
            let unit = q["unit"].as_str().unwrap_or("");
            format!(
                "{}/{} {}/{}",
                amount(unit, &q["used"]),
                amount(unit, &q["limit"]),
                cell(&q["unit"]),
                cell(&q["per"])
            )
        })
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("; ")
    }
}

/// `switchyard clients` (`list`): one row per client, YAML ones first.
pub fn list_table(v: &Value, colour: bool) -> String {
    let Some(clients) = v["clients"].as_array().filter(|c| !c.is_empty()) else {
        return "no clients: only loopback callers are served (`switchyard clients create NAME` makes one)\n".into();
    };
    let mut t = Table::new(
        &[
            "NAME",
            "SOURCE",
            "STATUS",
            "LIMITS",
            "QUOTAS (USED/LIMIT)",
            "SPENT TODAY",
            "THIS MONTH",
            "EXPIRES (UTC)",
            "LAST SEEN (UTC)",
        ],
        &[5, 6],
        colour,
    );
    for c in clients {
        t.row(vec![
            cell(&c["name"]),
            cell(&c["source"]),
            cell(&c["status"]),
            limits_cell(c),
            quotas_cell(c),
            spend(&c["spend"]["today_usd"]),
            spend(&c["spend"]["month_usd"]),
            when(&c["expires"]),
            when(&c["last_seen"]),
        ]);
    }
    t.render()
}

/// A limit and its use now: `60 (3 now)`, `none (3 now)`.
fn limit_line(c: &Value, key: &str, used: &Value) -> String {
    let now = used.as_u64().map_or_else(|| "-".into(), grouped);
    match c[key].as_u64() {
        Some(n) => format!("{} ({now} now)", grouped(n)),
        None => format!("none ({now} now)"),
    }
}

/// `clients show`: one client, then its quotas.
pub fn client_text(c: &Value, colour: bool) -> String {
    let models = match c["models"].as_array() {
        Some(m) if !m.is_empty() => m.iter().map(cell).collect::<Vec<_>>().join(", "),
        _ => "all".into(),
    };
    let status = cell(&c["status"]);
    let hue = match status.as_str() {
        "active" => Some("32"),
        "revoked" | "expired" => Some("31"),
        _ => None,
    };
    let source = if c["read_only"] == true {
        format!(
            "{} (read-only: change it in the config file)",
            cell(&c["source"])
        )
    } else {
        cell(&c["source"])
    };
    let u = &c["usage"];
    let mut out = format!(
        "name        {}\nsource      {source}\nstatus      {}\nkey         {}\nmodels      {models}\nrpm         {}\ntpm         {}\nconcurrent  {}\nexpires     {}\ncreated     {}\nrevoked     {}\nlast seen   {}\nspent       {} today, {} this month\nnotes       {}\n",
        cell(&c["name"]),
        paint(&status, hue, colour),
        cell(&c["key_hint"]),
        limit_line(c, "rpm", &u["rpm_used"]),
        limit_line(c, "tpm", &u["tpm_used"]),
        limit_line(c, "max_concurrent", &u["in_flight"]),
        when(&c["expires"]),
        when(&c["created"]),
        when(&c["revoked"]),
        when(&c["last_seen"]),
        spend(&c["spend"]["today_usd"]),
        spend(&c["spend"]["month_usd"]),
        cell(&c["notes"]),
    );
    out.push_str(&quota_table(c, colour));
    out
}

/// A client's quotas: used, reserved by calls in flight, limit, left, reset.
fn quota_table(c: &Value, colour: bool) -> String {
    let Some(quotas) = c["quotas"].as_array().filter(|q| !q.is_empty()) else {
        return "quotas      none\n".into();
    };
    let mut t = Table::new(
        &["QUOTA", "USED", "RESERVED", "LIMIT", "LEFT", "RESETS (UTC)"],
        &[1, 2, 3, 4],
        colour,
    );
    for q in quotas {
        let unit = q["unit"].as_str().unwrap_or("");
        t.row(vec![
            format!("{}/{}", cell(&q["unit"]), cell(&q["per"])),
            amount(unit, &q["used"]),
            amount(unit, &q["reserved"]),
            amount(unit, &q["limit"]),
            amount(unit, &q["left"]),
            when(&q["resets"]),
        ]);
    }
    format!("\n{}", t.render())
}

/// `clients create` and `rotate`: the key, once, then the client.
pub fn key_text(v: &Value, colour: bool) -> String {
    format!(
        "key for {}:\n{}\n{}\n\n{}",
        cell(&v["client"]["name"]),
        cell(&v["key"]),
        paint(SAVE_KEY, Some("1"), colour),
        client_text(&v["client"], colour)
    )
}

/// `clients update`: the client as it is now.
pub fn updated_text(c: &Value, colour: bool) -> String {
    format!("updated {}\n\n{}", cell(&c["name"]), client_text(c, colour))
}

/// `clients revoke`: one line.
pub fn revoked_text(c: &Value, _colour: bool) -> String {
    match c["status"].as_str() {
        Some("revoked") => format!("{}: revoked; its key no longer works\n", cell(&c["name"])),
        _ => format!("{}: {}\n", cell(&c["name"]), cell(&c["status"])),
    }
}

/// `clients audit`: newest first.
pub fn audit_table(v: &Value, colour: bool) -> String {
    let Some(entries) = v["audit"].as_array().filter(|a| !a.is_empty()) else {
        return "no changes to clients recorded\n".into();
    };
    let mut t = Table::new(
        &[
            "TIME (UTC)",
            "ACTOR",
            "ADDRESS",
            "ACTION",
            "CLIENT",
            "DETAIL",
        ],
        &[],
        colour,
    );
    for a in entries {
        t.row(vec![
            when(&a["ts"]),
            cell(&a["actor"]),
            cell(&a["address"]),
            cell(&a["action"]),
            cell(&a["client"]),
            cell(&a["detail"]),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_parse_strictly() {
        assert_eq!(
            parse_quota("100000tokens/day"),
            Ok(("day", Amount::Tokens(100_000)))
        );
        assert_eq!(parse_quota("25usd/month"), Ok(("month", Amount::Usd(25.0))));
        assert_eq!(parse_quota("0.5usd/week"), Ok(("week", Amount::Usd(0.5))));
        assert_eq!(
            parse_quota("1000000000000000tokens/week"),
            Ok(("week", Amount::Tokens(MAX_TOKENS)))
        );
        // comma-separated (the first is empty)
        let bad = ",100000,100000tokens,100000tokens/,100000tokens/year,100000tokens/Day,100000 tokens/day,100k tokens/day,100ktokens/day,1.5tokens/day,0tokens/day,-5tokens/day,+5tokens/day,1000000000000001tokens/day,tokens/day,25USD/month,$25/month,25usd/month/x,usd/month,.5usd/day,5.usd/day,1e3usd/day,infusd/day,0usd/day,0.0000001usd/day,1000001usd/day,-1usd/day,25dollars/month";
        for bad in bad.split(',') {
            let e = parse_quota(bad).expect_err(bad);
            assert!(e.starts_with("--quota `"), "{bad}: {e}");
        }
        let e = parse_quota("5tokens/year").unwrap_err();
        assert!(e.contains("day, week or month"), "{e}");
        let e = parse_quota("1.5tokens/day").unwrap_err();
        assert!(e.contains("whole number"), "{e}");
        let e = parse_quota("lots").unwrap_err();
        assert!(e.contains("100000tokens/day"), "{e}");
    }

    #[test]
    fn quotas_merge_by_period() {
        let q = |v: &[&str]| quotas_json(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            q(&["25usd/month", "100000tokens/day", "5usd/day"]).unwrap(),
            json!([{"per": "day", "tokens": 100000, "usd": 5.0}, {"per": "month", "usd": 25.0}])
        );
        assert_eq!(q(&["none"]).unwrap(), Value::Null);
        assert!(q(&["none", "5usd/day"]).is_err());
        let e = q(&["5usd/day", "6usd/day"]).unwrap_err();
        assert!(e.contains("two usd quotas per day"), "{e}");
    }

    #[test]
    fn limits_clear_on_update_and_drop_on_create() {
        let l = ClientLimits {
            models: Some(vec!["gpt-*".into(), " o3*".into()]),
            rpm: Some("60".into()),
            tpm: Some("none".into()),
            quotas: vec!["none".into()],
            ..Default::default()
        };
        let update = Value::Object(fields(&l, false).unwrap());
        assert_eq!(
            update,
            json!({"models": ["gpt-*", "o3*"], "rpm": 60, "tpm": null, "quotas": null})
        );
        let create = Value::Object(fields(&l, true).unwrap());
        assert_eq!(create, json!({"models": ["gpt-*", "o3*"], "rpm": 60}));
        let all = ClientLimits {
            models: Some(vec!["all".into()]),
            ..Default::default()
        };
        assert_eq!(
            Value::Object(fields(&all, false).unwrap()),
            json!({"models": null})
        );
        for bad in ["0", "-1", "1.5", "ten", ""] {
            assert!(limit("--rpm", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plans_name_the_right_calls() {
        let (name, limits) = ("team a/1".to_string(), ClientLimits::default());
        let p = plan(ClientAction::Revoke { name }).unwrap();
        assert_eq!(p.0, "POST");
        assert_eq!(p.1, "/admin/clients/team%20a%2F1/revoke");
        let p = plan(ClientAction::Audit { limit: 5 }).unwrap();
        assert_eq!(p.1, "/admin/clients/audit?limit=5");
        let name = "x".to_string();
        assert!(plan(ClientAction::Update { name, limits }).is_err());
    }

    #[test]
    fn tables_print_missing_and_hostile_values() {
        let v = json!({"clients": [
            {"name": "alpha", "source": "config", "status": "active", "rpm": 60,
             "quotas": [{"per": "day", "unit": "tokens", "limit": 100000, "used": 1234}],
             "spend": {"today_usd": 0.0123, "month_usd": 1.5}},
            {"name": "evil\u{1b}[2J", "source": "runtime", "status": "revoked"}
        ]});
        let out = list_table(&v, false);
        assert!(out.contains("1,234/100,000 tokens/day"), "{out}");
        assert!(out.contains("$0.0123") && out.contains("$1.50"), "{out}");
        assert!(out.contains("evil?[2J") && !out.contains('\u{1b}'), "{out}");
        let made = key_text(&json!({"key": "sy-abc", "client": {"name": "b"}}), false);
        assert_eq!(made.matches("sy-abc").count(), 1, "{made}");
        assert!(made.contains(SAVE_KEY), "{made}");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(999), "999");
    }
}
