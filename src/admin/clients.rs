//! `/admin/clients`: run-time client keys (create, list, show, update,
//! revoke, rotate) and their audit list. The config file's clients are
//! listed too, read only. A change is stored first (the tenant store, or
//! the fleet's when there is one) and served at once on this instance; the
//! others read it within a second.

use super::reply::{json_error, json_reply, param};
use crate::state::State;
use crate::tenants::input::{self, FieldError, Taken};
use crate::tenants::view::{self, Spend};
use crate::tenants::{Audit, Registry, Tenant};
use http::Response;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Who asked for a change: the actor header and the caller's address.
pub struct Actor {
    pub name: String,
    pub address: String,
}

impl Actor {
    /// `x-switchyard-actor` (printable, at most 64 characters; `admin` without one).
    pub fn of(header: Option<&str>, address: String) -> Actor {
        let name: String = header
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
        let name = name.trim();
        Actor {
            name: if name.is_empty() {
                "admin".into()
            } else {
                name.to_string()
            },
            address,
        }
    }

    fn audit(&self, action: &str, client: &str, detail: String) -> Audit {
        Audit {
            ts_ms: crate::clock::now_ms(),
            actor: self.name.clone(),
            address: self.address.clone(),
            action: action.into(),
            client: client.into(),
            detail,
        }
    }
}

/// A change a web page may have sent: refused. A change must say its body
/// is JSON (a browser asks first before sending that to another site, and
/// the admin listener never agrees) and must not come from another site
/// (`Sec-Fetch-Site`). `None`: a read, or a change that may go on.
pub fn cross_site(method: &str, headers: &http::HeaderMap) -> Option<Response<Vec<u8>>> {
    if method == "GET" || method == "HEAD" {
        return None;
    }
    let text = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !matches!(text("sec-fetch-site"), "" | "same-origin" | "none") {
        return Some(json_error(
            403,
            "changes to clients are not taken from other sites",
            "cross_site",
        ));
    }
    let json = text("content-type")
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    (!json).then(|| {
        json_error(
            415,
            "a change to clients needs `content-type: application/json` (also without a body)",
            "unsupported_media_type",
        )
    })
}

/// Answers `/admin/clients…` (`None`: not one of its paths).
pub async fn answer(
    state: &State,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    actor: &Actor,
) -> Option<Response<Vec<u8>>> {
    let rest = path.strip_prefix("/admin/clients")?;
    let rest = match rest.strip_prefix('/') {
        Some(r) => r,
        None if rest.is_empty() => rest,
        // `/admin/clientsfoo` is no path of this API
        None => return None,
    };
    let (name, action) = match rest.split_once('/') {
        Some((n, a)) => (n, a),
        None => (rest, ""),
    };
    let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
    Some(match (method, name.as_ref(), action) {
        ("GET", "", "") => list(state).await,
        ("POST", "", "") => create(state, body, actor).await,
        ("GET", "audit", "") => audit(state, query).await,
        ("GET", n, "") => show(state, n).await,
        ("PATCH", n, "") => change(state, n, actor, Change::Update(body)).await,
        ("POST", n, "revoke") => change(state, n, actor, Change::Revoke).await,
        ("POST", n, "rotate") => change(state, n, actor, Change::Rotate).await,
        (_, _, "" | "revoke" | "rotate") => json_error(
            405,
            &format!("{method} is not supported on {path}"),
            "method_not_allowed",
        ),
        _ => json_error(
            404,
            "use /admin/clients, /admin/clients/{name}, …/revoke or …/rotate",
            "not_found",
        ),
    })
}

/// The 400 for a refused field.
fn refused(e: FieldError) -> Response<Vec<u8>> {
    json_reply(
        400,
        &json!({"error": {"message": e.message, "type": "invalid_request_error", "param": e.field, "code": "invalid_client"}}),
    )
}

fn not_found(name: &str) -> Response<Vec<u8>> {
    json_error(
        404,
        &format!("no client {name:?}; GET /admin/clients lists them"),
        "client_not_found",
    )
}

async fn list(state: &State) -> Response<Vec<u8>> {
    let spend = view::spends_cached().await;
    let snap = state.load();
    let tenants = state.tenants.list();
    let of = |n: &str| spend.get(n).copied().unwrap_or_default();
    let served = snap.config.clients.as_deref().unwrap_or_default();
    // each client's index once: a view per client, not a search per client
    let index: HashMap<&str, usize> = served
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let mut out: Vec<Value> = served
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.runtime)
        .map(|(i, c)| view::view_at(&snap, Some(i), &c.name, None, of(&c.name)))
        .collect();
    out.extend(tenants.iter().map(|t| {
        let i = index.get(t.name.as_str()).copied();
        view::view_at(&snap, i, &t.name, Some(t), of(&t.name))
    }));
    json_reply(200, &json!({"clients": out}))
}

async fn show(state: &State, name: &str) -> Response<Vec<u8>> {
    let spend = view::spends_cached()
        .await
        .get(name)
        .copied()
        .unwrap_or_default();
    let snap = state.load();
    let tenants = state.tenants.list();
    let tenant = tenants.iter().find(|t| t.name == name);
    if tenant.is_none() && !in_file(&snap, name) {
        return not_found(name);
    }
    json_reply(200, &view::client_view(&snap, name, tenant, spend))
}

async fn audit(state: &State, query: &str) -> Response<Vec<u8>> {
    let limit = param(query, "limit")
        .and_then(|l| l.parse::<u32>().ok())
        .unwrap_or(100)
        .clamp(1, 1000);
    let got = if crate::fleet::on() {
        crate::fleet::tenant_audit(limit).await
    } else {
        match state.tenants.db.get() {
            Some(db) => db.audit(limit),
            None => Ok(Vec::new()),
        }
    };
    match got {
        Ok(list) => {
            let rows: Vec<Value> = list
                .iter()
                .map(|a| {
                    json!({"ts": crate::clock::fmt_iso(a.ts_ms), "ts_ms": a.ts_ms, "actor": a.actor,
                           "address": a.address, "action": a.action, "client": a.client, "detail": a.detail})
                })
                .collect();
            json_reply(200, &json!({"audit": rows}))
        }
        Err(e) => json_error(
            503,
            &format!("the audit list cannot be read: {e}"),
            "store_unavailable",
        ),
    }
}

/// Whether `c` is the config file's client named `name`.
fn from_file(c: &crate::config::Client, name: &str) -> bool {
    !c.runtime && c.name == name
}

/// Whether the config file has a client named `name`.
fn in_file(snap: &crate::state::Snapshot, name: &str) -> bool {
    snap.config
        .clients
        .iter()
        .flatten()
        .any(|c| from_file(c, name))
}

/// Who holds which names and keys now: the config file's clients and every
/// run-time one (revoked included: their names stay theirs).
struct Holders<'a> {
    file: &'a [crate::config::Client],
    tenants: &'a [Tenant],
}

impl Taken for Holders<'_> {
    fn name(&self, name: &str) -> Option<&'static str> {
        if self.file.iter().any(|c| from_file(c, name)) {
            Some("in the config file")
        } else if self.tenants.iter().any(|t| t.name == name) {
            Some("made at run time")
        } else {
            None
        }
    }

    fn key(&self, hash: &[u8; 32]) -> bool {
        let hex = hex::encode(hash);
        self.file.iter().any(|c| &c.key_sha256 == hash)
            || self.tenants.iter().any(|t| t.key_sha256 == hex)
    }
}

async fn create(state: &State, body: &[u8], actor: &Actor) -> Response<Vec<u8>> {
    let build = |tenants: &[Tenant]| -> Result<Built, Refusal> {
        if tenants.len() >= crate::tenants::MAX_TENANTS {
            return Err(Box::new(json_error(
                409,
                "too many run-time clients (100000)",
                "too_many_clients",
            )));
        }
        let snap = state.load();
        let holders = Holders {
            file: snap.config.clients.as_deref().unwrap_or_default(),
            tenants,
        };
        let (tenant, key) = input::create(body, &holders, crate::clock::now_ms())
            .map_err(|e| Box::new(refused(e)))?;
        let audit = actor.audit("create", &tenant.name, summary(&tenant));
        Ok(Built {
            tenant,
            audit,
            old: None,
            key: Some(key),
        })
    };
    let built = match commit(state, build).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    log::info!(
        "clients: {} created client {:?} (key {})",
        actor.name,
        built.tenant.name,
        built.tenant.key_hint
    );
    let v = view::client_view(
        &state.load(),
        &built.tenant.name,
        Some(&built.tenant),
        Spend::default(),
    );
    json_reply(201, &json!({"client": v, "key": built.key}))
}

/// A new tenant's settings, for its audit record.
fn summary(t: &Tenant) -> String {
    let mut parts = Vec::new();
    if !t.models.is_empty() {
        parts.push(format!("models {:?}", t.models));
    }
    for (n, v) in [
        ("rpm", t.rpm.map(u64::from)),
        ("tpm", t.tpm),
        ("max_concurrent", t.max_concurrent.map(u64::from)),
    ] {
        if let Some(v) = v {
            parts.push(format!("{n} {v}"));
        }
    }
    if !t.quotas.is_empty() {
        parts.push(format!(
            "quotas {}",
            serde_json::to_string(&t.quotas).unwrap_or_default()
        ));
    }
    if let Some(e) = t.expires_ms {
        parts.push(format!("expires {}", crate::clock::fmt_iso(e)));
    }
    parts.push(format!("key {}", t.key_hint));
    parts.join("; ")
}

/// An answer instead of a change (boxed: it is large).
type Refusal = Box<Response<Vec<u8>>>;

/// A change made: the tenant after it, its audit record, the record it
/// replaces (none: a new one) and a new key to show once.
struct Built {
    tenant: Tenant,
    audit: Audit,
    old: Option<Tenant>,
    key: Option<String>,
}

/// Makes a change with `build` from the freshest list and stores it: on
/// one instance under the change lock, in a fleet only if the stored
/// record is still the one it was made from (else 409: retry). Then it is
/// served here at once; the fleet's other instances read it within a second.
async fn commit(
    state: &State,
    build: impl Fn(&[Tenant]) -> Result<Built, Refusal>,
) -> Result<Built, Refusal> {
    if crate::fleet::on() {
        let built = build(&state.tenants.list())?;
        let expected = built
            .old
            .as_ref()
            .and_then(|o| serde_json::to_string(o).ok());
        match crate::fleet::tenant_write(&built.tenant, &built.audit, expected.as_deref()).await {
            Ok(true) => {}
            Ok(false) if expected.is_none() => {
                return Err(Box::new(refused(FieldError {
                    field: "name".into(),
                    message: format!(
                        "name: a client named {:?} exists (made at run time)",
                        built.tenant.name
                    ),
                })))
            }
            Ok(false) => {
                crate::fleet::tenants_refresh(state).await;
                return Err(Box::new(json_error(
                    409,
                    &format!("client `{}` was changed meanwhile (on another instance); look again and retry", built.tenant.name),
                    "client_changed",
                )));
            }
            Err(e) => return Err(Box::new(json_error(503, &e, "store_unavailable"))),
        }
        crate::fleet::tenants_refresh(state).await;
        return Ok(built);
    }
    let _one_at_a_time = state.tenants.changing.lock();
    let list = state.tenants.list();
    let built = build(&list)?;
    let Some(db) = state.tenants.db.get() else {
        return Err(Box::new(json_error(
            503,
            "the tenant store is not open",
            "store_unavailable",
        )));
    };
    if let Err(e) = db.put(&built.tenant, &built.audit) {
        return Err(Box::new(json_error(
            503,
            &format!("the tenant store cannot be written: {e}"),
            "store_unavailable",
        )));
    }
    state.set_tenants(Registry::with(&list, built.tenant.clone()));
    Ok(built)
}

enum Change<'b> {
    Update(&'b [u8]),
    Revoke,
    Rotate,
}

async fn change(state: &State, name: &str, actor: &Actor, what: Change<'_>) -> Response<Vec<u8>> {
    let build = |tenants: &[Tenant]| -> Result<Built, Refusal> {
        let Some(old) = tenants.iter().find(|t| t.name == name) else {
            return Err(Box::new(if in_file(&state.load(), name) {
                json_error(
                    409,
                    &format!("client `{name}` comes from the config file: change it there"),
                    "read_only_client",
                )
            } else {
                not_found(name)
            }));
        };
        if !old.active() && !matches!(what, Change::Update(_)) {
            return Err(Box::new(json_error(
                409,
                &format!("client `{name}` is revoked"),
                "client_revoked",
            )));
        }
        let (tenant, action, detail, key) =
            changed(old, &what).map_err(|e| Box::new(refused(e)))?;
        Ok(Built {
            audit: actor.audit(action, name, detail),
            tenant,
            old: Some(old.clone()),
            key,
        })
    };
    let built = match commit(state, build).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    log::info!(
        "clients: {} did {} on client {name:?}: {}",
        actor.name,
        built.audit.action,
        built.audit.detail
    );
    let spend = view::spends_cached()
        .await
        .get(name)
        .copied()
        .unwrap_or_default();
    let v = view::client_view(&state.load(), name, Some(&built.tenant), spend);
    match built.key {
        Some(k) => json_reply(200, &json!({"client": v, "key": k})),
        None => json_reply(200, &v),
    }
}

/// `old` after `what`: the tenant, the action's name, what changed in
/// words, and a new key (rotate).
fn changed(
    old: &Tenant,
    what: &Change<'_>,
) -> Result<(Tenant, &'static str, String, Option<String>), FieldError> {
    let now = crate::clock::now_ms();
    let mut t = old.clone();
    t.updated_ms = now;
    Ok(match what {
        Change::Update(body) => {
            let (t, said) = input::update(old, body, now)?;
            (t, "update", said, None)
        }
        Change::Revoke => {
            t.revoked_ms = Some(now);
            (t, "revoke", format!("key {} revoked", old.key_hint), None)
        }
        Change::Rotate => {
            let k = crate::tenants::new_key();
            t.key_sha256 = crate::config::hash_key(&k);
            t.key_hint = crate::tenants::hint(&k);
            let said = format!("key {} → {}", old.key_hint, t.key_hint);
            (t, "rotate", said, Some(k))
        }
    })
}
