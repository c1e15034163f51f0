//! One client cannot hurt another (round 2), through the real binary: a
//! path spelled another way is routed and checked like the plain one; a
//! client limited to some models reaches other paths only through its
//! `endpoints`; a 401/403 parks a key only when the key alone is refused; a
//! same-host reverse proxy does not make the internet local, nor does a
//! PROXY protocol preamble from a peer that is not trusted; the admin
//! listener and the dashboard's CORS rule refuse other host names.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::isolation::*;
use common::keys::{admin_keys, key_no, up_yaml};
use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::time::Duration;

#[test]
fn a_path_spelled_another_way_is_routed_and_checked_like_the_plain_one() {
    let mock = MockUpstream::start(echo);
    let gw = Gw::start(&format!(
        "clients:\n  - {{name: limited, key: {CLIENT}, models: ['gpt-4o*']}}\n  - {{name: files, key: {CLIENT}-files, models: ['gpt-4o*'], endpoints: ['/v1/files*']}}\n  - {{name: open, key: {OPEN}}}\n{}",
        one_upstream(&mock, "")
    ));
    let auth = format!("Authorization: Bearer {CLIENT}\r\n");
    let o1 = r#"{"model":"o1-pro","messages":[{"role":"user","content":"hi"}]}"#;
    for path in [
        "/v1/chat/%63ompletions",
        "/v1/chat/completion%73",
        "/v1/Chat/Completions",
        "/v1/chat/completions/",
        "/v1/%63hat/%43ompletions",
    ] {
        // no content type, or one that is not JSON: the body is still read
        for ct in ["", "Content-Type: text/plain\r\n"] {
            let answer = send(&gw, "POST", path, &format!("{auth}{ct}"), o1);
            assert_eq!(status(&answer), 403, "{path} {ct}: {answer}");
            assert!(answer.contains("model_not_allowed"), "{answer}");
        }
    }
    assert!(
        mock.requests().is_empty(),
        "o1-pro never reached the upstream"
    );
    let gpt = r#"{"model":"gpt-4o-mini","messages":[]}"#;
    let answer = send(&gw, "POST", "/v1/chat/%63ompletions", &auth, gpt);
    assert_eq!(status(&answer), 200, "{answer}");
    assert_eq!(mock.requests()[0].path, "/v1/chat/completions");
    // the access line is written just after the answer: wait for it (bounded)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while !gw.logs().contains("/v1/chat/completions model=gpt-4o-mini") {
        assert!(std::time::Instant::now() < deadline, "{}", gw.logs());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // paths that name no model: only through the client's `endpoints`
    mock.clear();
    let batch = r#"{"input_file_id":"file-1","endpoint":"/v1/chat/completions"}"#;
    let ct = "Content-Type: application/json\r\n";
    for (method, path, body) in [
        ("GET", "/v1/files", ""),
        ("POST", "/v1/batches", batch),
        ("GET", "/v1/%66iles/file-1/content", ""),
        // naming an allowed model does not open a path that runs another
        ("POST", "/v1/batches", gpt),
        ("POST", "/v1/fine_tuning/jobs", gpt),
        // an image endpoint runs the model it names: without one, the upstream's default
        ("POST", "/v1/images/generations", r#"{"prompt":"a cat"}"#),
    ] {
        let answer = send(&gw, method, path, &format!("{auth}{ct}"), body);
        assert_eq!(status(&answer), 403, "{method} {path}: {answer}");
        assert!(answer.contains("endpoint_not_allowed"), "{answer}");
    }
    assert!(mock.requests().is_empty());
    let image = r#"{"model":"gpt-4o-image","prompt":"a cat"}"#;
    let answer = send(
        &gw,
        "POST",
        "/v1/images/generations",
        &format!("{auth}{ct}"),
        image,
    );
    assert_eq!(status(&answer), 200, "{answer}");
    let o1_image = r#"{"model":"o1-image","prompt":"a cat"}"#;
    let answer = send(
        &gw,
        "POST",
        "/v1/images/generations",
        &format!("{auth}{ct}"),
        o1_image,
    );
    assert_eq!(status(&answer), 403, "{answer}: {}", gw.logs());
    let models = send(&gw, "GET", "/v1/MODELS", &auth, "");
    assert!(
        models.contains("\"object\":\"list\""),
        "answered here: {models}"
    );
    let went_up: Vec<String> = client_calls(&mock).into_iter().map(|r| r.path).collect();
    assert_eq!(
        went_up,
        ["/v1/images/generations"],
        "only the allowed image call went up"
    );
    mock.clear();
    let files = format!("Authorization: Bearer {CLIENT}-files\r\n");
    assert_eq!(status(&send(&gw, "GET", "/v1/files", &files, "")), 200);
    let answer = send(&gw, "POST", "/v1/batches", &format!("{files}{ct}"), batch);
    assert_eq!(status(&answer), 403, "{answer}: {}", gw.logs());
    let open = format!("Authorization: Bearer {OPEN}\r\n{ct}");
    assert_eq!(status(&send(&gw, "POST", "/v1/batches", &open, batch)), 200);
    let paths: Vec<_> = mock.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/v1/files", "/v1/batches"]);
}

/// Key `n` is refused for everything; the others refuse only the model
/// `secret-model` (403) and any call carrying a client organization (401).
fn picky(refused: &'static [usize]) -> impl Fn(&Request) -> Reply + Send + Sync {
    move |req: &Request| {
        if refused.contains(&key_no(req)) {
            return Reply::json(
                401,
                &json!({"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}),
            );
        }
        if req.method == "GET" && req.path.ends_with("/models") {
            return Reply::json(200, &json!({"object": "list", "data": []}));
        }
        if req
            .header("openai-organization")
            .is_some_and(|o| o != "org-gateway")
        {
            return Reply::json(
                401,
                &json!({"error": {"message": "mismatched organization", "code": "mismatched_organization"}}),
            );
        }
        if req.json()["model"] == "secret-model" {
            return Reply::json(
                403,
                &json!({"error": {"message": "You are not allowed to use this model", "code": "model_not_permitted"}}),
            );
        }
        ok_script(req)
    }
}

#[test]
fn a_request_the_provider_refuses_parks_no_key() {
    let mock = MockUpstream::start(picky(&[]));
    let gw = Gw::start(&format!(
        "upstreams:\n{}",
        up_yaml(
            &mock,
            "oa",
            3,
            "    organization: org-gateway\n    key_strategy: sticky\n"
        )
    ));
    for _ in 0..3 {
        let r = gw.post("/v1/chat/completions", &chat("secret-model"));
        assert_eq!(r.status(), 403, "the upstream's answer goes back");
        assert!(r.text().unwrap().contains("model_not_permitted"));
    }
    // an SDK with OPENAI_ORG_ID set sends its own organization: dropped
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("OpenAI-Organization", "org-client")
        .header("OpenAI-Project", "proj_client")
        .json(&chat("gpt-4o"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let keys = admin_keys(&gw);
    assert!(
        keys.iter().all(|k| k["state"] == "active"),
        "no key parked: {keys:?}"
    );
    let seen = mock.requests();
    let last = seen.last().unwrap();
    assert_eq!(last.header("openai-organization"), Some("org-gateway"));
    assert_eq!(last.header("openai-project"), None);
    let checks = seen.iter().filter(|r| r.method == "GET").count();
    assert_eq!(
        checks, 1,
        "one GET /models checked the key, then its verdict stood: {seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|r| r.method == "POST").count(),
        4,
        "the refused request was not tried on the other keys"
    );
    let log = gw.logs();
    assert!(
        log.contains("answered (the request is at fault: nothing parked)"),
        "{log}"
    );
}

#[test]
fn a_refused_key_is_parked_but_one_request_parks_one_key_at_most() {
    let mock = MockUpstream::start(picky(&[1]));
    let gw = Gw::start(&format!(
        "upstreams:\n{}",
        up_yaml(&mock, "oa", 3, "    key_strategy: sticky\n")
    ));
    // key 1 is refused alone (GET /models too): parked, the call moves on
    assert_eq!(gw.post("/v1/chat/completions", &chat("m")).status(), 200);
    let states: Vec<_> = admin_keys(&gw).iter().map(|k| k["state"].clone()).collect();
    assert_eq!(states, ["parked", "active", "active"]);

    // every key refused: the first is parked, the answer goes back
    let all = MockUpstream::start(picky(&[1, 2, 3]));
    let gw = Gw::start(&format!("upstreams:\n{}", up_yaml(&all, "oa", 3, "")));
    let r = gw.post("/v1/chat/completions", &chat("m"));
    assert_eq!(r.status(), 401);
    let parked = admin_keys(&gw)
        .iter()
        .filter(|k| k["state"] == "parked")
        .count();
    assert_eq!(parked, 1, "one request parks one key at most");
}

#[test]
fn a_same_host_proxy_does_not_make_the_internet_local() {
    let mock = MockUpstream::start(echo);
    let gw = Gw::with_admin_token(
        "admin-tok-isolation",
        &format!("metrics: {{path: /metrics}}\n{}", one_upstream(&mock, "")),
    );
    let body = r#"{"model":"m","messages":[]}"#;
    let ct = "Content-Type: application/json\r\n";
    assert_eq!(
        status(&send(&gw, "POST", "/v1/chat/completions", ct, body)),
        200
    );
    for forwarded in [
        // a value that is not text is a forwarding header all the same
        "X-Forwarded-For: \u{e9}\r\n",
        "X-Forwarded-For: 203.0.113.9\r\n",
        "X-Forwarded-For: 127.0.0.1\r\n",
        "Forwarded: for=127.0.0.1\r\n",
        "X-Real-IP: 127.0.0.1\r\n",
    ] {
        let answer = send(
            &gw,
            "POST",
            "/v1/chat/completions",
            &format!("{ct}{forwarded}"),
            body,
        );
        assert_eq!(status(&answer), 403, "{forwarded}: {answer}");
        assert!(answer.contains("loopback"), "{answer}");
    }
    // the API port's admin paths need the admin token once one is set
    for (method, path) in [
        ("GET", "/metrics"),
        ("POST", "/v1/tokens/rotate"),
        ("GET", "/v1/tokens/stats"),
    ] {
        assert_eq!(status(&send(&gw, method, path, "", "")), 403, "{path}");
        let token = "Authorization: Bearer admin-tok-isolation\r\n";
        assert_eq!(status(&send(&gw, method, path, token, "")), 200, "{path}");
    }
    assert_eq!(mock.requests().len(), 1, "no forwarded call reached it");

    // behind a trusted proxy: its word names the client
    let gw = Gw::start(&format!(
        "server: {{trusted_proxies: ['127.0.0.1'], allow_ips: ['10.0.0.0/8', '127.0.0.1'], deny_ips: ['10.6.0.0/16']}}\n{}",
        one_upstream(&mock, "")
    ));
    let via = |xff: &str| {
        send(
            &gw,
            "POST",
            "/v1/chat/completions",
            &format!("{ct}X-Forwarded-For: {xff}\r\n"),
            body,
        )
    };
    assert_eq!(
        status(&via("127.0.0.1")),
        200,
        "the proxy's own loopback call"
    );
    let far = via("10.1.2.3");
    assert_eq!(
        status(&far),
        403,
        "a proxied caller is never loopback: {far}"
    );
    assert!(far.contains("loopback"));
    for refused in ["203.0.113.9", "10.6.0.1", "unknown"] {
        let answer = via(refused);
        assert_eq!(status(&answer), 403, "{refused}: {answer}");
        assert!(
            answer.contains("address_not_allowed"),
            "{refused}: {answer}"
        );
    }
    let log = gw.logs();
    assert!(log.contains("ip=10.1.2.3 status=403"), "{log}");
}

#[test]
fn client_addresses_limit_a_client_behind_a_trusted_proxy() {
    let mock = MockUpstream::start(echo);
    let gw = Gw::start(&format!(
        "server: {{trusted_proxies: ['127.0.0.0/8']}}\nclients:\n  - {{name: office, key: {CLIENT}, allow_ips: ['198.51.100.0/24']}}\n{}",
        one_upstream(&mock, "")
    ));
    let headers = |xff: &str| {
        format!("Content-Type: application/json\r\nAuthorization: Bearer {CLIENT}\r\nX-Forwarded-For: {xff}\r\n")
    };
    let body = r#"{"model":"m","messages":[]}"#;
    let inside = send(
        &gw,
        "POST",
        "/v1/chat/completions",
        &headers("198.51.100.7, 127.0.0.2"),
        body,
    );
    assert_eq!(status(&inside), 200, "{inside}");
    let outside = send(
        &gw,
        "POST",
        "/v1/chat/completions",
        &headers("192.0.2.1"),
        body,
    );
    assert_eq!(status(&outside), 403, "{outside}");
    assert!(outside.contains("address_not_allowed"));
    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("x-forwarded-for"),
        None,
        "the upstream does not learn it"
    );
}

#[test]
fn the_admin_listener_and_the_dashboard_answer_their_own_names_only() {
    let mock = MockUpstream::start(echo);
    let gw = Gw::start(&one_upstream(&mock, ""));
    let admin = |host: &str| {
        raw(
            gw.admin_port,
            format!("GET /admin/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
            Duration::from_secs(5),
        )
    };
    let rebinding = admin(&format!("evil.example:{}", gw.admin_port));
    assert_eq!(status(&rebinding), 421, "{rebinding}");
    for ok in [
        format!("127.0.0.1:{}", gw.admin_port),
        format!("localhost:{}", gw.admin_port),
    ] {
        assert_eq!(status(&admin(&ok)), 200, "{ok}");
    }
    // the playground's CORS rule: the dashboard's origin on a loopback name only
    let api = |host: &str, origin: &str| {
        raw(
            gw.port,
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nContent-Type: application/json\r\nContent-Length: 27\r\nConnection: close\r\n\r\n{{\"model\":\"m\",\"messages\":[]}}"
            )
            .as_bytes(),
            Duration::from_secs(5),
        )
    };
    let evil = api(
        &format!("evil.example:{}", gw.port),
        &format!("http://evil.example:{}", gw.admin_port),
    );
    assert!(
        !evil
            .to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{evil}"
    );
    let own = api(
        &format!("127.0.0.1:{}", gw.port),
        &format!("http://127.0.0.1:{}", gw.admin_port),
    );
    assert!(
        own.to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{own}"
    );
}

/// A gateway whose listener reads PROXY protocol preambles (plain on
/// `port`, TLS on `tls_port`), trusting `trusted`.
fn preamble_gateway(mock: &MockUpstream, trusted: &str) -> (Gw, u16, u16, tempfile::TempDir) {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = common::tls::self_signed(certs.path());
    let (port, tls_port, admin_port) = (free_port(), free_port(), free_port());
    // a plain listener too: the harness waits for /health there
    let plain = free_port();
    let cfg = format!(
        "listen: ['127.0.0.1:{plain}', {{addr: '127.0.0.1:{port}', proxy_protocol: true}}, {{addr: '127.0.0.1:{tls_port}', proxy_protocol: true, tls: {{cert: '{}', key: '{}'}}}}]\n\
         admin: {{listen: '127.0.0.1:{admin_port}'}}\nserver: {{trusted_proxies: [{trusted}]}}\n{}",
        cert.display(),
        key.display(),
        one_upstream(mock, "")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.yaml");
    std::fs::write(&path, cfg).unwrap();
    let gw = Gw::spawn(&path, plain, admin_port, dir, &[]);
    (gw, port, tls_port, certs)
}

const CHAT: &str = r#"{"model":"m","messages":[]}"#;

fn chat_request(close: bool) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{CHAT}",
        CHAT.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
}

/// A v2 preamble naming `ip` (IPv4, TCP) as the client.
fn v2_preamble(ip: [u8; 4]) -> Vec<u8> {
    let mut p = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    p.extend_from_slice(&ip);
    p.extend_from_slice(&[127, 0, 0, 1, 0x15, 0xb3, 0x0f, 0xa0]);
    p
}

#[test]
fn a_proxy_protocol_preamble_names_the_client_when_its_peer_is_trusted() {
    let mock = MockUpstream::start(echo);
    let (gw, port, tls_port, certs) = preamble_gateway(&mock, "'127.0.0.1'");
    let send_raw = |bytes: Vec<u8>| raw(port, &bytes, Duration::from_secs(5));
    let v1 = |ip: &str| format!("PROXY TCP4 {ip} 127.0.0.1 5555 {port}\r\n").into_bytes();
    // a remote client behind the proxy is no loopback caller
    let far = send_raw([v1("203.0.113.7"), chat_request(true).into_bytes()].concat());
    assert_eq!(status(&far), 403, "{far}");
    assert!(far.contains("loopback"));
    let far2 = send_raw(
        [
            v2_preamble([198, 51, 100, 9]),
            chat_request(true).into_bytes(),
        ]
        .concat(),
    );
    assert_eq!(status(&far2), 403, "{far2}");
    // the loopback proxy's own loopback client is local
    let own = send_raw([v1("127.0.0.1"), chat_request(true).into_bytes()].concat());
    assert_eq!(status(&own), 200, "{own}");
    // a trusted proxy must say who the client is: no preamble, no answer
    assert_eq!(send_raw(chat_request(true).into_bytes()), "");
    // one preamble for a kept-alive connection's every request
    let two = [
        v1("127.0.0.1"),
        chat_request(false).into_bytes(),
        chat_request(true).into_bytes(),
    ]
    .concat();
    assert_eq!(send_raw(two).matches("HTTP/1.1 200").count(), 2);
    // garbage after the signature: closed without an answer
    assert_eq!(send_raw(b"PROXY TCP4 not an address\r\n".to_vec()), "");
    // over TLS: the preamble comes before the handshake
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(&v1("192.0.2.33")).unwrap();
    let mut ctx = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).unwrap();
    ctx.set_ca_file(certs.path().join("cert.pem")).unwrap();
    let mut tls = ctx.build().connect("localhost", tcp).unwrap();
    tls.write_all(chat_request(true).as_bytes()).unwrap();
    // read to the end (or to an EOF without close_notify: what came is kept)
    let mut bytes = Vec::new();
    let _ = tls.read_to_end(&mut bytes);
    let answer = String::from_utf8_lossy(&bytes);
    assert!(
        answer.starts_with("HTTP/1.1 403"),
        "{answer:?}: {}",
        gw.logs()
    );
    std::thread::sleep(Duration::from_millis(300));
    let log = gw.logs();
    for ip in ["ip=203.0.113.7 ", "ip=198.51.100.9 ", "ip=192.0.2.33 "] {
        assert!(log.contains(ip), "{ip}: {log}");
    }
    assert_eq!(mock.requests().len(), 3);
}

#[test]
fn a_preamble_from_a_peer_that_is_not_trusted_closes_the_connection() {
    let mock = MockUpstream::start(echo);
    let (_gw, port, _, _certs) = preamble_gateway(&mock, "'10.0.0.1'");
    let spoof = format!(
        "PROXY TCP4 127.0.0.1 127.0.0.1 5555 {port}\r\n{}",
        chat_request(true)
    );
    assert_eq!(raw(port, spoof.as_bytes(), Duration::from_secs(5)), "");
    let direct = raw(port, chat_request(true).as_bytes(), Duration::from_secs(5));
    assert_eq!(status(&direct), 200, "no preamble: a direct client");
    assert_eq!(mock.requests().len(), 1);
}
