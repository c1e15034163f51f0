//! A run-time client's record and its audit records, and how tenants
//! become the snapshot's clients.

use crate::config::quota::RawQuota;
use crate::config::Client;
use serde::{Deserialize, Serialize};

/// Most run-time clients kept (revoked ones included).
pub const MAX_TENANTS: usize = 100_000;

/// A run-time client as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    pub name: String,
    /// SHA-256 of the key, hex.
    pub key_sha256: String,
    /// `…Xq9f`: the key's last four characters, to tell keys apart.
    pub key_hint: String,
    #[serde(default)]
    pub models: Vec<String>,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    pub max_concurrent: Option<u32>,
    pub expires_ms: Option<u64>,
    #[serde(default)]
    pub quotas: Vec<RawQuota>,
    #[serde(default)]
    pub notes: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub revoked_ms: Option<u64>,
}

/// One change, as the audit list shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Audit {
    pub ts_ms: u64,
    /// Who asked (`x-switchyard-actor`, sanitised; `admin` without one).
    pub actor: String,
    /// The admin caller's address.
    pub address: String,
    /// `create`, `update`, `revoke` or `rotate`.
    pub action: String,
    pub client: String,
    /// What changed (`rpm 60 → 120`); never a key.
    pub detail: String,
}

impl Tenant {
    pub fn active(&self) -> bool {
        self.revoked_ms.is_none()
    }

    /// The key's hash as bytes (`None`: a stored hash that is not one).
    fn hash(&self) -> Option<[u8; 32]> {
        let b = hex::decode(&self.key_sha256).ok()?;
        b.try_into().ok()
    }

    /// This tenant as a client of the snapshot (`None`: revoked, or a
    /// stored record that no longer checks out).
    pub fn client(&self) -> Option<Client> {
        if !self.active() {
            return None;
        }
        let quotas = crate::config::quota::parse("quotas", &self.quotas).ok()?;
        Some(Client {
            name: self.name.clone(),
            key_sha256: self.hash()?,
            models: self.models.clone(),
            endpoints: Vec::new(),
            allow_ips: Default::default(),
            expires: self
                .expires_ms
                .map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)),
            rpm: self.rpm,
            tpm: self.tpm,
            max_concurrent: self.max_concurrent,
            quotas,
            runtime: true,
        })
    }
}

/// A new client key: `sy-` and 64 hex digits (256 random bits from the OS).
pub fn new_key() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("sy-{}", hex::encode(bytes))
}

/// `…` and the key's last four characters.
pub fn hint(key: &str) -> String {
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

/// The client list of a snapshot: the config file's clients (`file`: its
/// `clients:` section, if it has one), then the active tenants whose names
/// and keys do not clash with them (`None`: no section and no tenant,
/// revoked ones included, so only loopback callers are served).
pub fn merged(file: Option<&[Client]>, tenants: &[Tenant]) -> Option<Vec<Client>> {
    let mut out: Vec<Client> = file
        .into_iter()
        .flatten()
        .filter(|c| !c.runtime)
        .cloned()
        .collect();
    let file_count = out.len();
    for t in tenants {
        let Some(c) = t.client() else { continue };
        let clash = out[..file_count]
            .iter()
            .any(|f| f.name == c.name || f.key_sha256 == c.key_sha256);
        if clash {
            log::warn!(
                "clients: run-time client {:?} clashes with a client of the config file (name or key) and is not served",
                c.name
            );
            continue;
        }
        out.push(c);
    }
    // once clients were made at run time (revoked ones too), keys are
    // needed: revoking the last one does not open the gateway to loopback
    // (and `clients: []` in the file admits no one, as before)
    (file.is_some() || !tenants.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_strong_and_hinted() {
        let a = new_key();
        assert!(a.starts_with("sy-") && a.len() == 67, "{a}");
        assert_ne!(a, new_key());
        assert_eq!(hint("sy-abcdef"), "…cdef");
    }
}
