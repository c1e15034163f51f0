//! A local HTTPS upstream: TLS in front of a plain mock upstream, with a
//! certificate for `localhost` made by the `openssl` command for each test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use openssl::ssl::{Ssl, SslAcceptor, SslFiletype, SslMethod};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;

pub struct TlsFront {
    pub port: u16,
    /// The self-signed certificate (also the CA to trust).
    pub cert: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsFront {
    /// TLS on 127.0.0.1 (and [::1] when it exists) forwarding to `backend`.
    pub fn start(backend: SocketAddr) -> TlsFront {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path());
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        b.set_private_key_file(&key, SslFiletype::PEM).unwrap();
        b.set_certificate_chain_file(&cert).unwrap();
        let acceptor = Arc::new(b.build());
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        let v6 = std::net::TcpListener::bind(("::1", port)).ok();
        for l in std::iter::once(v4).chain(v6) {
            l.set_nonblocking(true).unwrap();
            let acceptor = acceptor.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let l = tokio::net::TcpListener::from_std(l).unwrap();
                    while let Ok((tcp, _)) = l.accept().await {
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            let ssl = Ssl::new(acceptor.context()).unwrap();
                            let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
                            if Pin::new(&mut tls).accept().await.is_err() {
                                return; // e.g. the gateway refused our certificate
                            }
                            if let Ok(mut up) = tokio::net::TcpStream::connect(backend).await {
                                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                            }
                        });
                    }
                });
            });
        }
        TlsFront {
            port,
            cert,
            _dir: dir,
        }
    }
}

/// A self-signed certificate for `localhost` and its key, made in `dir` by
/// the `openssl` command: `(cert.pem, key.pem)`.
pub fn self_signed(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command (scripts/deps.sh test installs it)");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    (cert, key)
}
