//! HTTP/2 with TLS through the real binary: clients that speak h2 (curl
//! `--http2`, the openai SDK on an h2 transport) get streams event by event
//! and JSON answers; an upstream with `http2: true` carries many concurrent
//! calls on one connection; a reload serves a new certificate to new
//! connections; an idle h2 connection is closed after `timeouts.keepalive`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

const SIGHUP: i32 = 1;

/// A gateway with a TLS listener (self-signed for `localhost`) in front of
/// `mock`; returns it, its TLS port and the certificate's directory.
fn tls_gateway(upstream_yaml: &str) -> (Gw, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = common::tls::self_signed(dir.path());
    let (port, tls_port, admin_port) = (free_port(), free_port(), free_port());
    let tls = format!(
        "tls: {{cert: '{}', key: '{}'}}",
        cert.display(),
        key.display()
    );
    // `localhost` may be ::1 first: listen there too when it exists
    let v6 = std::net::TcpListener::bind(("::1", tls_port))
        .map(|_| format!(", {{addr: '[::1]:{tls_port}', {tls}}}"))
        .unwrap_or_default();
    let cfg = format!(
        "listen: ['127.0.0.1:{port}', {{addr: '127.0.0.1:{tls_port}', {tls}}}{v6}]\n\
         admin: {{listen: '127.0.0.1:{admin_port}'}}\n{upstream_yaml}"
    );
    let path = dir.path().join("switchyard.yaml");
    std::fs::write(&path, cfg).unwrap();
    let gw = Gw::spawn(&path, port, admin_port, tempfile::tempdir().unwrap(), &[]);
    (gw, tls_port, dir)
}

/// POSTs `body` with curl over `version` (`--http2`, `--http1.1`), trusting
/// `cert`; what came back, then `version=` and the HTTP version used.
fn curl(cert: &std::path::Path, version: &str, body: &str, url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-N", "--max-time", "20", "--cacert"])
        .arg(cert)
        .args([version, "-w", "\nversion=%{http_version}"])
        .args(["-H", "content-type: application/json", "-d", body, url])
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn curl_streams_and_calls_over_h2_with_tls() {
    let mock = MockUpstream::start(|req| stream_or_ok(req, 20));
    let (gw, tls_port, dir) = tls_gateway(&format!(
        "upstreams: [{{name: mock, base_url: '{}', keys: [sk-a]}}]\n",
        mock.url()
    ));
    let cert = dir.path().join("cert.pem");
    let url = format!("https://localhost:{tls_port}/v1/chat/completions");
    let stream = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let out = curl(&cert, "--http2", stream, &url);
    assert!(out.ends_with("version=2"), "{out}");
    let events: Vec<&str> = out.lines().filter(|l| l.starts_with("data: ")).collect();
    assert_eq!(events.len(), 20 + 3, "every event, then [DONE]: {out}");
    assert_eq!(events.last(), Some(&"data: [DONE]"));
    let json = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let out = curl(&cert, "--http2", json, &url);
    assert!(out.ends_with("version=2"), "{out}");
    assert!(out.contains("hi from mock"), "{out}");
    // HTTP/1.1 still works on the same listener
    let out = curl(&cert, "--http1.1", json, &url);
    assert!(out.ends_with("version=1.1"), "{out}");
    assert_eq!(mock.requests().len(), 3);
    drop(gw);
}

#[test]
fn the_openai_sdk_streams_over_h2() {
    let has_h2 = Command::new("python3")
        .args(["-c", "import openai, h2"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_h2,
        "needs the openai SDK and h2 (pip install openai h2; make test does it)"
    );
    let mock = MockUpstream::start(|req| stream_or_ok(req, 12));
    let (_gw, tls_port, dir) = tls_gateway(&format!(
        "upstreams: [{{name: mock, base_url: '{}', keys: [sk-a]}}]\n",
        mock.url()
    ));
    let base = format!("https://localhost:{tls_port}/v1");
    let cert = dir.path().join("cert.pem");
    run_python("sdk_h2.py", &[&base, cert.to_str().unwrap()]);
}

#[test]
fn an_idle_h2_connection_is_closed_after_keepalive() {
    let mock = MockUpstream::start(ok_script);
    let (_gw, tls_port, dir) = tls_gateway(&format!(
        "timeouts: {{keepalive: 2s}}\nupstreams: [{{name: mock, base_url: '{}/v1'}}]\n",
        mock.url()
    ));
    let cert = dir.path().join("cert.pem");
    let port = tls_port.to_string();
    run_python(
        "h2_idle.py",
        &["localhost", &port, cert.to_str().unwrap(), "2"],
    );
}

/// Established TCP connections to local `port` (from /proc/net/tcp).
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // local address, remote address, state 01 = ESTABLISHED
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "01"
        })
        .count()
}

#[test]
fn an_h2_upstream_carries_a_hundred_concurrent_calls_on_one_connection() {
    // the far gateway is the h2 upstream: TLS, h2 by ALPN, in front of a slow mock
    let mock = MockUpstream::start(|req| {
        let mut r = ok_script(req);
        r.delay = Duration::from_millis(1500);
        r
    });
    let (far, far_tls, dir) = tls_gateway(&format!(
        "upstreams: [{{name: mock, base_url: '{}', keys: [sk-a]}}]\n",
        mock.url()
    ));
    let cert = dir.path().join("cert.pem");
    let near = Gw::start(&format!(
        "upstreams: [{{name: far, base_url: 'https://localhost:{far_tls}/v1', keys: [sk-far-0123456789], \
         http2: true, tls: {{ca_file: '{}'}}}}]\n",
        cert.display()
    ));
    // one call opens the connection; the next hundred share it
    assert_eq!(near.post("/v1/chat/completions", &chat("m")).status(), 200);
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let url = near.url("/v1/chat/completions");
            std::thread::spawn(move || {
                client()
                    .post(url)
                    .json(&chat("m"))
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let open = connections_to(far_tls);
    let statuses: Vec<u16> = calls.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(open, 1, "100 calls in flight took {open} connections");
    assert_eq!(mock.requests().len(), 101);
    drop(far);
}

#[test]
fn a_reload_serves_a_new_certificate_to_new_connections() {
    let (gw, tls_port, dir) = tls_gateway("upstreams: [{name: demo, kind: demo}]\n");
    let cert = dir.path().join("cert.pem");
    let fingerprint = |cert_file: &std::path::Path| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo | openssl s_client -connect 127.0.0.1:{tls_port} -servername localhost 2>/dev/null | openssl x509 -noout -fingerprint -sha256; \
                 openssl x509 -noout -fingerprint -sha256 -in {}",
                cert_file.display()
            ))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        assert_eq!(lines.len(), 2, "{text}");
        (lines[0].clone(), lines[1].clone())
    };
    let (served, on_disk) = fingerprint(&cert);
    assert_eq!(served, on_disk);
    // a renewed certificate, then a reload
    let renewed = tempfile::tempdir().unwrap();
    let (new_cert, new_key) = common::tls::self_signed(renewed.path());
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, dir.path().join("key.pem")).unwrap();
    gw.signal(SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    let (served, on_disk) = fingerprint(&cert);
    assert_eq!(served, on_disk, "the renewed certificate is served");
    assert!(gw.logs().contains("TLS certificate"), "{}", gw.logs());
    // a key that is not the certificate's: refused, the last good pair serves on
    let stray = tempfile::tempdir().unwrap();
    let (_, stray_key) = common::tls::self_signed(stray.path());
    std::fs::copy(&stray_key, dir.path().join("key.pem")).unwrap();
    gw.signal(SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    let (served, on_disk) = fingerprint(&cert);
    assert_eq!(
        served, on_disk,
        "handshakes still work with the last good pair"
    );
    assert!(gw.logs().contains("is not the key of"), "{}", gw.logs());
}
