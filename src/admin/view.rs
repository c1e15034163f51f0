//! What the CLI prints of the admin API's answers: aligned tables, coloured
//! only when standard output is a terminal. Pure functions of the JSON, so
//! they are tested without a terminal.

use serde_json::Value;

/// A table whose columns are as wide as their widest cell. Cells are plain
/// text; a column's colour is chosen per cell by [`Table::paint`].
pub struct Table {
    head: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    /// Right-aligned (numeric) columns.
    right: Vec<bool>,
    colour: bool,
}

impl Table {
    pub fn new(head: &[&'static str], right: &[usize], colour: bool) -> Table {
        Table {
            right: (0..head.len()).map(|i| right.contains(&i)).collect(),
            head: head.to_vec(),
            rows: Vec::new(),
            colour,
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, columns two spaces apart.
    pub fn render(&self) -> String {
        let n = self.head.len();
        let mut w: Vec<usize> = self.head.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        let line = |cells: Vec<(String, Option<&str>)>, out: &mut String| {
            let mut l = String::new();
            for (i, (c, col)) in cells.into_iter().enumerate().take(n) {
                let pad = w[i].saturating_sub(c.chars().count());
                let last = i + 1 == n;
                let cell = paint(&c, col, self.colour);
                if self.right[i] {
                    l.push_str(&" ".repeat(pad));
                    l.push_str(&cell);
                } else {
                    l.push_str(&cell);
                    if !last {
                        l.push_str(&" ".repeat(pad));
                    }
                }
                if !last {
                    l.push_str("  ");
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(
            self.head
                .iter()
                .map(|h| (h.to_string(), Some(BOLD)))
                .collect(),
            &mut out,
        );
        for r in &self.rows {
            line(
                r.iter().map(|c| (c.clone(), state_colour(c))).collect(),
                &mut out,
            );
        }
        out
    }
}

const BOLD: &str = "1";
const GREEN: &str = "32";
const YELLOW: &str = "33";
const RED: &str = "31";

/// The colour of a cell that names a state or result, if it does.
fn state_colour(cell: &str) -> Option<&'static str> {
    match cell {
        "active" | "ok" | "up" => Some(GREEN),
        "cooling" | "rate_limited" | "trial" => Some(YELLOW),
        "parked" | "rejected" | "error" | "unreachable" | "down" => Some(RED),
        _ => None,
    }
}

/// `text` in ANSI colour `code` when `on`.
pub fn paint(text: &str, code: Option<&str>, on: bool) -> String {
    match code {
        Some(c) if on => format!("\x1b[{c}m{text}\x1b[0m"),
        _ => text.to_string(),
    }
}

/// A value as a cell: `-` for none; control characters (a hostile
/// upstream's error text could hold terminal escapes) shown as `?`.
fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(x) if x.is_empty() => "-".into(),
        Value::String(x) => x
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.1}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// `2026-12-02T14:03:12Z` → `2026-12-02 14:03:12`.
fn time(v: &Value) -> String {
    s(v).replace('T', " ").replace('Z', "")
}

fn uptime(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    match (d, h) {
        (0, 0) => format!("{m}m {}s", secs % 60),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `switchyard status`.
pub fn status_text(v: &Value, colour: bool) -> String {
    let listen: Vec<String> = v["listen"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            let scheme = if l["tls"] == true { "https" } else { "http" };
            format!("{scheme}://{}", s(&l["addr"]))
        })
        .collect();
    let k = &v["keys"];
    let mut out = format!(
        "switchyard {} (pid {}), up {}\nAPI        {}\nadmin      {}\nnow        {:.1} requests/s, {} in flight, {} upstream calls open, {} queued{}\nkeys       {} total: {} active, {} cooling, {} parked\n\n",
        s(&v["version"]),
        s(&v["pid"]),
        uptime(v["uptime_seconds"].as_u64().unwrap_or(0)),
        listen.join(", "),
        s(&v["admin_listen"]),
        v["requests_per_second"].as_f64().unwrap_or(0.0),
        s(&v["in_flight"]),
        s(&v["upstream_active"]),
        s(&v["queue_waiting"]),
        v["queue_limit"]
            .as_u64()
            .map_or(String::new(), |q| format!(" (queue holds {q})")),
        s(&k["total"]),
        s(&k["active"]),
        s(&k["cooling"]),
        s(&k["parked"]),
    );
    let mut t = Table::new(
        &[
            "UPSTREAM", "HEALTH", "KEYS", "ACTIVE", "COOLING", "PARKED", "REASON",
        ],
        &[2, 3, 4, 5],
        colour,
    );
    for u in v["upstreams"].as_array().into_iter().flatten() {
        let k = &u["keys"];
        t.row(vec![
            s(&u["name"]),
            s(&u["health"]),
            s(&k["total"]),
            s(&k["active"]),
            s(&k["cooling"]),
            s(&k["parked"]),
            s(&u["reason"]),
        ]);
    }
    out.push_str(&t.render());
    if let Some(fleet) = v["fleet"].as_array() {
        out.push_str(&fleet_table(fleet, colour));
    }
    out
}

/// The fleet's instances (`status` with `state.redis`); a missing one is marked.
fn fleet_table(fleet: &[Value], colour: bool) -> String {
    let mut t = Table::new(
        &[
            "INSTANCE",
            "STATE",
            "VERSION",
            "HOST",
            "API",
            "UP",
            "REQ/S",
            "IN FLIGHT",
            "LAST SEEN (UTC)",
        ],
        &[6, 7],
        colour,
    );
    for i in fleet {
        let me = if i["this"] == true { " (this)" } else { "" };
        t.row(vec![
            format!("{}{me}", s(&i["id"])),
            s(&i["state"]),
            s(&i["version"]),
            s(&i["host"]),
            s(&i["api"]),
            uptime(i["uptime_seconds"].as_u64().unwrap_or(0)),
            s(&i["requests_per_second"]),
            s(&i["in_flight"]),
            time(&i["last_seen"]),
        ]);
    }
    format!(
        "\nfleet (state.redis): {} instance(s)\n{}",
        fleet.len(),
        t.render()
    )
}

/// `switchyard keys`.
pub fn keys_table(v: &Value, colour: bool) -> String {
    let mut t = Table::new(
        &[
            "KEY",
            "UPSTREAM",
            "STATE",
            "UNTIL (UTC)",
            "REQS",
            "FAILS",
            "429s",
            "LAST USED (UTC)",
            "REASON",
        ],
        &[4, 5, 6],
        colour,
    );
    for k in v["keys"].as_array().into_iter().flatten() {
        let mut reason = if k["reason"].is_string() {
            s(&k["reason"])
        } else {
            String::new()
        };
        if k["scope_model"].is_string() {
            reason = format!("{reason} [model {}]", s(&k["scope_model"]));
        }
        t.row(vec![
            s(&k["id"]),
            s(&k["upstream"]),
            s(&k["state"]),
            time(&k["until"]),
            s(&k["requests"]),
            s(&k["failures"]),
            s(&k["rate_limited"]),
            time(&k["last_used"]),
            reason.trim().to_string(),
        ]);
    }
    let mut out = t.render();
    out.push_str(&format!(
        "{} keys: {} active, {} cooling, {} parked\n",
        v["total"], v["active"], v["cooling"], v["parked"]
    ));
    out
}

/// `switchyard usage`.
pub fn usage_table(v: &Value, colour: bool) -> String {
    let by = v["by"].as_str().unwrap_or("model");
    let head: &'static str = match by {
        "client" => "CLIENT",
        "key" => "KEY",
        "upstream" => "UPSTREAM",
        "day" => "DAY",
        _ => "MODEL",
    };
    let mut t = Table::new(
        &[
            head,
            "REQUESTS",
            "TOKENS IN",
            "TOKENS OUT",
            "ERRORS",
            "ESTIMATED",
            "AVG MS",
            "COST USD",
        ],
        &[1, 2, 3, 4, 5, 6, 7],
        colour,
    );
    for r in v["rows"].as_array().into_iter().flatten() {
        t.row(vec![
            s(&r[by]),
            s(&r["requests"]),
            s(&r["tokens_in"]),
            s(&r["tokens_out"]),
            s(&r["errors"]),
            s(&r["estimated"]),
            s(&r["avg_latency_ms"]),
            usd(&r["cost_usd"]),
        ]);
    }
    let scope = match (v["scope"].as_str(), v["instances"].as_u64()) {
        (Some("fleet"), Some(n)) => format!(", the fleet ({n} instances)"),
        (_, _) if v["fleet_down"] == true => {
            ", this instance only (the fleet's store is down)".to_string()
        }
        _ => String::new(),
    };
    format!("since {}{scope}\n{}", time(&v["since"]), t.render())
}

/// Dollars to the microdollar (`-`: none).
fn usd(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |d| format!("{d:.6}"))
}

/// `switchyard cache`.
pub fn cache_text(v: &Value, _colour: bool) -> String {
    if v["enabled"] != true {
        return "the response cache is off (no cache: section)\n".into();
    }
    let n = |k: &str| v[k].as_u64().map_or("-".to_string(), |x| x.to_string());
    format!(
        "store {}, scope {}, ttl {}, models {}\nhits {}, misses {}, stored {}, tokens saved {}\nentries {}, bytes {} (of {})\n",
        v["store"].as_str().unwrap_or("?"),
        v["scope"].as_str().unwrap_or("?"),
        v["ttl"].as_str().unwrap_or("?"),
        v["models"].as_array().map_or(String::new(), |m| m
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", ")),
        n("hits"),
        n("misses"),
        n("stored"),
        n("tokens_saved"),
        n("entries"),
        n("bytes"),
        n("max_bytes"),
    )
}

/// `switchyard requests`.
pub fn requests_table(v: &Value, colour: bool) -> String {
    let mut t = Table::new(
        &[
            "TIME (UTC)",
            "CLIENT",
            "MODEL",
            "UPSTREAM",
            "KEY",
            "STATUS",
            "TRIES",
            "MS",
            "TTFT",
            "TOKENS",
            "ERROR",
        ],
        &[5, 6, 7, 8],
        colour,
    );
    for r in v["requests"].as_array().into_iter().flatten() {
        let model = match (r["model"].as_str(), r["served_model"].as_str()) {
            (Some(a), Some(b)) if a != b && !b.is_empty() => format!("{a} → {b}"),
            _ => s(&r["model"]),
        };
        let est = if r["estimated"] == true { "*" } else { "" };
        t.row(vec![
            time(&r["time"]),
            s(&r["client"]),
            model,
            s(&r["upstream"]),
            s(&r["key"]),
            s(&r["status"]),
            s(&r["attempts"]),
            s(&r["latency_ms"]),
            r["ttft_ms"]
                .as_f64()
                .map_or("-".into(), |t| format!("{t:.1}")),
            format!("{}/{}{est}", s(&r["tokens_in"]), s(&r["tokens_out"])),
            s(&r["error"]),
        ]);
    }
    t.render()
}

/// `switchyard probe`: one row per probe.
pub fn probe_table(results: &[Value], colour: bool) -> String {
    let mut t = Table::new(
        &[
            "MODEL",
            "UPSTREAM",
            "KEY",
            "RESULT",
            "STATUS",
            "MS",
            "UNTIL (UTC)",
            "DETAIL",
        ],
        &[4, 5],
        colour,
    );
    for r in results {
        t.row(vec![
            s(&r["model"]),
            s(&r["upstream"]),
            s(&r["key"]),
            s(&r["result"]),
            s(&r["status"]),
            s(&r["latency_ms"]),
            time(&r["until"]),
            s(&r["message"]).chars().take(100).collect(),
        ]);
    }
    let ok = results.iter().filter(|r| r["result"] == "ok").count();
    format!("{}{ok} of {} work\n", t.render(), results.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_align_and_colour_only_when_asked() {
        let mut t = Table::new(&["A", "NUM"], &[1], false);
        t.row(vec!["longer".into(), "7".into()]);
        t.row(vec!["x".into(), "1234".into()]);
        assert_eq!(t.render(), "A        NUM\nlonger     7\nx       1234\n");
        let mut c = Table::new(&["STATE"], &[], true);
        c.row(vec!["parked".into()]);
        assert!(c.render().contains("\x1b[31mparked\x1b[0m"));
        assert!(!t.render().contains('\x1b'));
    }

    #[test]
    fn hostile_and_missing_values_print() {
        let v = json!({"keys": [{"id": null, "state": 7, "reason": "a\u{1b}[2J"}], "total": 1});
        let out = keys_table(&v, false);
        assert!(out.contains("1 keys"));
        assert!(!out.contains('\u{1b}'), "{out}");
        assert_eq!(status_text(&json!({}), false).lines().count(), 7);
        assert!(probe_table(&[json!({"result": "ok"})], false).contains("1 of 1 work"));
        assert!(usage_table(&json!({"by": "model", "rows": "junk"}), false).contains("MODEL"));
    }
}
