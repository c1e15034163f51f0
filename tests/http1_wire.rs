//! HTTP/1.1 on the API listener, byte for byte against the real binary:
//! understood calls and other requests on one connection, heads and bodies
//! in pieces, refused callers with and without their bodies sent, hostile
//! heads, and what the upstream saw.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::wire::*;
use common::*;
use std::io::Write;
use std::time::Duration;

const KEY: &str = "sk-client-lane-0123456789";

fn gateway(extra: &str) -> (MockUpstream, Gw) {
    let mock = MockUpstream::start(|req: &Request| stream_or_ok(req, 3));
    let gw = Gw::start(&format!(
        "{extra}upstreams: [{{name: mock, base_url: '{}/v1', keys: ['sk-up-aaaaaaaaaaaaaaaa1111']}}]\n",
        mock.url()
    ));
    (mock, gw)
}

/// Sends `req` on a new connection; the answer's head, or `""` when the
/// gateway closed without answering.
fn head_or_close(port: u16, req: &[u8]) -> String {
    use std::io::Read;
    let mut s = connect(port);
    // a refused request may be closed on before all of it was written
    let _ = s.write_all(req);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while find(&got, b"\r\n\r\n").is_none() {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn status(head: &str) -> u16 {
    head[9..12].parse().unwrap()
}

#[test]
fn lane_and_pingora_requests_share_one_connection() {
    let (mock, gw) = gateway("");
    let mut s = connect(gw.port);
    // the lane's, then Pingora's (the bytes the lane read are put back), then
    // the rest of the connection is Pingora's: a JSON call and a detached stream
    s.write_all(&request(JSON, "")).unwrap();
    let (head, body) = response(&mut s);
    assert_eq!(status(&head), 200, "{head}");
    assert!(body.contains("hi from mock"), "{body}");
    s.write_all(b"GET /health HTTP/1.1\r\nhost: gw\r\n\r\n")
        .unwrap();
    let (head, body) = response(&mut s);
    assert_eq!(status(&head), 200, "{head}");
    assert!(body.contains("ok"), "{body}");
    s.write_all(&request(JSON, "")).unwrap();
    let (head, _) = response(&mut s);
    assert_eq!(status(&head), 200, "{head}");
    s.write_all(&request(STREAM, "")).unwrap();
    let (head, body) = response(&mut s);
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(body.contains("data: [DONE]"), "{body}");
    s.write_all(&request(JSON, "")).unwrap();
    let (head, _) = response(&mut s);
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(mock.requests().len(), 4);
    let chat = [("route", "chat"), ("status", "2xx")];
    gw.assert_series("switchyard_requests_total", &chat, 4.0);
}

#[test]
fn a_head_and_body_sent_in_pieces_reach_the_upstream_whole() {
    let (mock, gw) = gateway("");
    let mut s = connect(gw.port);
    let req = request(JSON, "OpenAI-Organization: org-7\r\nCookie: secret=1\r\n");
    let cut = req.len() - JSON.len();
    for piece in [
        &req[..10],
        &req[10..cut - 3],
        &req[cut - 3..cut + 5],
        &req[cut + 5..],
    ] {
        s.write_all(piece).unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    let (head, _) = response(&mut s);
    assert_eq!(status(&head), 200, "{head}");
    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(&seen[0].body[..], JSON.as_bytes());
    assert_eq!(
        seen[0].header("openai-organization"),
        None,
        "the key's account is the gateway's, not the client's"
    );
    assert_eq!(seen[0].header("cookie"), None, "cookies stay here");
    assert_eq!(
        seen[0].header("authorization"),
        Some("Bearer sk-up-aaaaaaaaaaaaaaaa1111")
    );
    // the query goes along
    let with_query = String::from_utf8(request(JSON, "")).unwrap().replacen(
        "/v1/chat/completions",
        "/v1/chat/completions?api-version=2024-06-01",
        1,
    );
    s.write_all(with_query.as_bytes()).unwrap();
    let (head, _) = response(&mut s);
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(
        mock.requests()[1].path,
        "/v1/chat/completions?api-version=2024-06-01"
    );
}

#[test]
fn a_refused_caller_keeps_its_connection_only_when_its_body_was_sent() {
    let (mock, gw) = gateway(&format!("clients: [{{name: c, key: {KEY}}}]\n"));
    let mut s = connect(gw.port);
    s.write_all(&request(JSON, "authorization: Bearer wrong-key-123456\r\n"))
        .unwrap();
    let (head, body) = response(&mut s);
    assert_eq!(status(&head), 401, "{head}");
    assert!(head.contains("connection: keep-alive"), "{head}");
    assert!(body.contains("invalid_api_key"), "{body}");
    assert!(!body.contains("wrong-key"), "{body}");
    // the same connection serves the right key next
    s.write_all(&request(JSON, &format!("authorization: Bearer {KEY}\r\n")))
        .unwrap();
    let (head, _) = response(&mut s);
    assert_eq!(status(&head), 200, "{head}");
    // a refusal before a large body arrived: answered, then closed (the rest
    // of the body must not be read as the next request)
    let mut s = connect(gw.port);
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-length: 100000\r\n\r\n{\"model\":",
    )
    .unwrap();
    let (head, _) = response(&mut s);
    assert_eq!(status(&head), 401, "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(closed(&mut s));
    assert_eq!(mock.requests().len(), 1);
}

#[test]
fn a_client_that_leaves_mid_body_reaches_nobody() {
    let (mock, gw) = gateway("");
    let mut s = connect(gw.port);
    let req = request(JSON, "");
    s.write_all(&req[..req.len() - 10]).unwrap();
    drop(s);
    std::thread::sleep(Duration::from_millis(200));
    let mut s = connect(gw.port);
    s.write_all(&request(JSON, "")).unwrap();
    let (head, _) = response(&mut s);
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(mock.requests().len(), 1, "only the whole request went up");
}

#[test]
fn hostile_heads_get_an_answer_or_a_close_and_the_gateway_serves_on() {
    let (mock, gw) = gateway(&format!("clients: [{{name: c, key: {KEY}}}]\n"));
    let auth = format!("authorization: Bearer {KEY}\r\n");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // both framings: request smuggling, refused by Pingora
        (request(JSON, "transfer-encoding: chunked\r\n"), "4"),
        // two lengths
        (request(JSON, "content-length: 3\r\n"), "4"),
        // a NUL in a header value
        (request(JSON, &format!("{auth}x-evil: a\0b\r\n")), "4"),
        // a key that is not text
        (request(JSON, "authorization: Bearer \u{ff}\u{fe}\r\n"), "401"),
        // a head larger than the lane reads
        (request(JSON, &format!("{auth}x-big: {}\r\n", "a".repeat(20_000))), ""),
        // an absolute-form target
        (
            format!(
                "POST http://evil.example/v1/chat/completions HTTP/1.1\r\nhost: gw\r\n{auth}content-length: {}\r\n\r\n{JSON}",
                JSON.len()
            )
            .into_bytes(),
            "",
        ),
        // a path that only looks understood
        (
            String::from_utf8(request(JSON, &auth))
                .unwrap()
                .replacen("/v1/chat/completions", "/v1/chat/completions/..%2f", 1)
                .into_bytes(),
            "4",
        ),
    ];
    for (req, want) in cases {
        let out = head_or_close(gw.port, &req);
        let shown = String::from_utf8_lossy(&req[..req.len().min(120)]).into_owned();
        assert!(
            out.is_empty() || out.starts_with(&format!("HTTP/1.1 {want}")),
            "{shown:?} → {out}"
        );
        assert!(!out.contains(KEY), "{out}");
    }
    let seen: Vec<String> = mock.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        seen,
        ["/v1/chat/completions"],
        "only the large head (Pingora's) went up"
    );
    let mut s = connect(gw.port);
    s.write_all(&request(JSON, &auth)).unwrap();
    let (head, _) = response(&mut s);
    assert_eq!(status(&head), 200, "{head}");
}

#[test]
fn an_idle_kept_alive_connection_does_not_hold_up_a_shutdown() {
    let (_mock, mut gw) = gateway("server: {grace_period: 30s}\n");
    let mut s = connect(gw.port);
    s.write_all(&request(JSON, "")).unwrap();
    let (head, _) = response(&mut s);
    assert!(head.contains("connection: keep-alive"), "{head}");
    let sent = std::time::Instant::now();
    gw.signal(libc::SIGTERM);
    assert!(closed(&mut s), "the idle connection is closed");
    gw.wait_exit(Duration::from_secs(20))
        .expect("exits well before the 30s grace period");
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "{:?}",
        sent.elapsed()
    );
}

#[test]
fn an_https_listener_is_pingoras_for_json_calls_and_streams_alike() {
    let mock = MockUpstream::start(|req: &Request| stream_or_ok(req, 3));
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = common::tls::self_signed(dir.path());
    let (port, tls_port, admin_port) = (free_port(), free_port(), free_port());
    let path = dir.path().join("switchyard.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: ['127.0.0.1:{port}', {{addr: '127.0.0.1:{tls_port}', tls: {{cert: '{}', key: '{}'}}}}]\n\
             admin: {{listen: '127.0.0.1:{admin_port}'}}\n\
             upstreams: [{{name: mock, base_url: '{}/v1', keys: ['sk-up-aaaaaaaaaaaaaaaa1111']}}]\n",
            cert.display(),
            key.display(),
            mock.url()
        ),
    )
    .unwrap();
    let gw = Gw::spawn(&path, port, admin_port, tempfile::tempdir().unwrap(), &[]);
    let mut tls = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).unwrap();
    tls.set_ca_file(&cert).unwrap();
    let tcp = connect(tls_port);
    let mut s = tls.build().connect("localhost", tcp).unwrap();
    // one connection: JSON, a stream (taken out of Pingora's session), JSON again
    for body in [JSON, STREAM, JSON, STREAM] {
        s.write_all(&request(body, "")).unwrap();
        let (head, answer) = response(&mut s);
        assert_eq!(status(&head), 200, "{head}");
        assert!(head.contains("connection: keep-alive"), "{head}");
        if body == STREAM {
            assert!(answer.contains("data: [DONE]"), "{answer}");
        } else {
            assert!(answer.contains("hi from mock"), "{answer}");
        }
    }
    assert_eq!(mock.requests().len(), 4);
    drop(gw);
}

#[test]
fn the_lane_and_pingora_relay_the_same_upstream_headers() {
    let mock = MockUpstream::start(|req: &Request| {
        let mut r = ok_script(req);
        r.headers.extend(
            [
                ("X-Request-Id", "req-123"),
                ("X-RateLimit-Remaining-Requests", "99"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "keep-alive"),
                ("Upgrade", "h2c"),
                ("Trailer", "x-t"),
                ("X-Upstream-Active", "999"),
                ("x-switchyard-upstream", "spoofed"),
                ("Access-Control-Allow-Origin", "*"),
                ("Access-Control-Expose-Headers", "x-secret"),
                ("Vary", "Accept-Encoding"),
                ("Date", "Mon, 01 Jan 1990 00:00:00 GMT"),
            ]
            .map(|(n, v)| (n.to_string(), v.to_string())),
        );
        r
    });
    let gw = Gw::start(&format!(
        "cors: {{origins: ['https://chat.example.com']}}\nupstreams: [{{name: mock, base_url: '{}/v1', keys: ['sk-up-aaaaaaaaaaaaaaaa1111']}}]\n",
        mock.url()
    ));
    let origin = "origin: https://chat.example.com\r\n";
    let mut s = connect(gw.port);
    // the lane's (a length-framed body), then Pingora's (the same body chunked)
    s.write_all(&request(JSON, origin)).unwrap();
    let (lane, lane_body) = response(&mut s);
    let chunked = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n{origin}transfer-encoding: chunked\r\n\r\n{:x}\r\n{JSON}\r\n0\r\n\r\n",
        JSON.len()
    );
    s.write_all(chunked.as_bytes()).unwrap();
    let (pingora, pingora_body) = response(&mut s);
    assert_eq!(mock.requests().len(), 2);
    assert!(lane_body.contains("hi from mock") && pingora_body.contains("hi from mock"));
    // the header lines as a sorted list, without the ones each writer sets its own way
    let lines = |h: &str| -> Vec<String> {
        let own = [
            "date:",
            "connection:",
            "x-upstream-active:",
            "x-upstream-queue:",
        ];
        let mut v: Vec<String> = h
            .lines()
            .skip(1)
            .filter(|l| !l.is_empty() && !own.iter().any(|o| l.starts_with(o)))
            .map(String::from)
            .collect();
        v.sort();
        v
    };
    assert_eq!(lines(&lane), lines(&pingora), "{lane}\n{pingora}");
    for head in [&lane, &pingora] {
        for want in [
            "x-request-id: req-123",
            "access-control-allow-origin: https://chat.example.com\r\n",
            "x-switchyard-upstream: mock\r\n",
            "vary: accept-encoding",
            "vary: origin",
        ] {
            assert!(head.contains(want), "{want}: {head}");
        }
        for gone in [
            // the pooled key's limits are not the client's
            "x-ratelimit-remaining-requests: 99",
            "keep-alive: ",
            "proxy-connection",
            "upgrade",
            "trailer",
            "999",
            "spoofed",
            "origin: *",
            "x-secret",
            "1990",
        ] {
            assert!(!head.contains(gone), "{gone}: {head}");
        }
        assert_eq!(head.matches("\r\ndate: ").count(), 1, "{head}");
        assert_eq!(head.matches("\r\nx-upstream-active: ").count(), 1, "{head}");
    }
}
