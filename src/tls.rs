//! TLS on the API listeners (`listen[].tls: {cert, key}`): HTTP/2 and
//! HTTP/1.1 by ALPN, and a certificate read from its files again on every
//! reload (SIGHUP, `/admin/reload`). Each handshake takes the certificate
//! loaded last: connections already open keep theirs, new ones get the new.

use arc_swap::ArcSwap;
use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{TlsAccept, TlsAcceptCallbacks};
use pingora::protocols::tls::TlsRef;
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::x509::X509;
use std::sync::{Arc, OnceLock};

/// A certificate chain and its key, as last read.
struct Loaded {
    chain: Vec<X509>,
    key: PKey<Private>,
}

/// One listener's certificate files and what was last read from them.
pub struct Certificate {
    cert_path: String,
    key_path: String,
    current: ArcSwap<Loaded>,
}

/// Every listener's certificate, for [`reload_all`].
static LOADED: OnceLock<Mutex<Vec<Arc<Certificate>>>> = OnceLock::new();

fn read(cert_path: &str, key_path: &str) -> Result<Loaded, String> {
    let pem = std::fs::read(cert_path).map_err(|e| format!("{cert_path}: {e}"))?;
    let chain = X509::stack_from_pem(&pem).map_err(|e| format!("{cert_path}: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{cert_path}: no certificate in it"));
    }
    let pem = std::fs::read(key_path).map_err(|e| format!("{key_path}: {e}"))?;
    let key = PKey::private_key_from_pem(&pem).map_err(|e| format!("{key_path}: {e}"))?;
    let leaf_key = chain[0]
        .public_key()
        .map_err(|e| format!("{cert_path}: {e}"))?;
    if !leaf_key.public_eq(&key) {
        return Err(format!("{key_path} is not the key of {cert_path}"));
    }
    Ok(Loaded { chain, key })
}

impl Certificate {
    /// Reads the files once (the listener does not start without them).
    pub fn load(cert_path: &str, key_path: &str) -> Result<Arc<Certificate>, String> {
        let cert = Arc::new(Certificate {
            current: ArcSwap::from_pointee(read(cert_path, key_path)?),
            cert_path: cert_path.to_string(),
            key_path: key_path.to_string(),
        });
        LOADED.get_or_init(Mutex::default).lock().push(cert.clone());
        Ok(cert)
    }

    /// Pingora's settings for a listener with this certificate: h2 preferred,
    /// http/1.1 allowed.
    pub fn settings(self: &Arc<Self>) -> Result<TlsSettings, String> {
        let callbacks: TlsAcceptCallbacks = Box::new(Handshake(self.clone()));
        let mut settings = TlsSettings::with_callbacks(callbacks).map_err(|e| e.to_string())?;
        settings.enable_h2();
        Ok(settings)
    }

    fn reload(&self) -> Result<(), String> {
        self.current
            .store(Arc::new(read(&self.cert_path, &self.key_path)?));
        Ok(())
    }
}

/// Reads every listener's certificate again; one that cannot be read keeps
/// the one it had (logged).
pub fn reload_all() {
    let Some(all) = LOADED.get() else { return };
    for cert in all.lock().iter() {
        match cert.reload() {
            Ok(()) => log::info!("TLS certificate {} reloaded", cert.cert_path),
            Err(e) => log::error!("TLS certificate not reloaded, the previous one serves on: {e}"),
        }
    }
}

/// Gives each handshake the certificate loaded last.
struct Handshake(Arc<Certificate>);

#[async_trait]
impl TlsAccept for Handshake {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        use pingora::tls::ext;
        let loaded = self.0.current.load();
        let Some((leaf, rest)) = loaded.chain.split_first() else {
            return;
        };
        let ok = ext::ssl_use_certificate(ssl, leaf).is_ok()
            && rest.iter().all(|c| ext::ssl_add_chain_cert(ssl, c).is_ok())
            && ext::ssl_use_private_key(ssl, &loaded.key).is_ok();
        if !ok {
            log::error!(
                "TLS handshake: certificate {} was not usable",
                self.0.cert_path
            );
        }
    }
}
