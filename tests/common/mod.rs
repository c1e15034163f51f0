//! Test harness: starts the real `switchyard` binary on free ports with a
//! temporary config, in front of mock upstreams on 127.0.0.1.
#![allow(dead_code, unused_imports)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod browser;
pub mod isolation;
pub mod keys;
pub mod raw;
pub mod redis;
pub mod tls;
pub mod wire;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use switchyard::minihttp::{Fault, Reply, ReplyBody, Request};
pub use switchyard::mock::MockUpstream;

/// A port nothing listens on now, never one this test process was given
/// before: the kernel may hand a just-released port out again, and two
/// calls for one gateway (listen and admin) must not get the same.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub struct Gw {
    pub child: Option<Child>,
    pub port: u16,
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
    pub log: Arc<Mutex<String>>,
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_switchyard"))
}

impl Gw {
    /// Starts the gateway with `yaml` (listen/admin are added here) and waits for /health.
    pub fn start(yaml: &str) -> Gw {
        Self::start_env(yaml, &[])
    }

    pub fn start_env(yaml: &str, env: &[(&str, &str)]) -> Gw {
        let port = free_port();
        let admin_port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let cfg = format!(
            "listen: 127.0.0.1:{port}\nadmin: {{listen: '127.0.0.1:{admin_port}'}}\n{yaml}"
        );
        let path = dir.path().join("switchyard.yaml");
        std::fs::write(&path, cfg).unwrap();
        Self::spawn(&path, port, admin_port, dir, env)
    }

    /// Starts the gateway with `yaml` and an admin listener that needs `token`.
    pub fn with_admin_token(token: &str, yaml: &str) -> Gw {
        let (port, admin_port) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchyard.yaml");
        let cfg = format!("listen: 127.0.0.1:{port}\nadmin: {{listen: '127.0.0.1:{admin_port}', token: {token}}}\n{yaml}");
        std::fs::write(&path, cfg).unwrap();
        Self::spawn(&path, port, admin_port, dir, &[])
    }

    /// Runs a config file as it is; `port`/`admin_port` are where it listens.
    pub fn spawn(
        path: &std::path::Path,
        port: u16,
        admin_port: u16,
        dir: tempfile::TempDir,
        env: &[(&str, &str)],
    ) -> Gw {
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "-c"]).arg(path);
        Self::launch(cmd, port, admin_port, dir, env)
    }

    /// Runs `serve` with no config file, in an empty directory, with `env`
    /// (the quick start); it listens on `port` and `admin_port`.
    pub fn env_only(port: u16, admin_port: u16, env: &[(&str, &str)]) -> Gw {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .current_dir(dir.path())
            .env_remove("SWITCHYARD_CONFIG");
        Self::launch(cmd, port, admin_port, dir, env)
    }

    /// Runs `serve` with `args`, in `dir` (which may hold a `.env`), with
    /// none of the old proxies' variables from the test's environment.
    pub fn serve_in(dir: tempfile::TempDir, args: &[&str], port: u16, admin_port: u16) -> Gw {
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .args(args)
            .current_dir(dir.path())
            .env_remove("SWITCHYARD_CONFIG")
            .env_remove("SWITCHYARD_ADMIN_LISTEN");
        Self::launch(cmd, port, admin_port, dir, &[])
    }

    fn launch(
        mut cmd: Command,
        port: u16,
        admin_port: u16,
        dir: tempfile::TempDir,
        env: &[(&str, &str)],
    ) -> Gw {
        cmd.env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // the old proxies' variables change a config: none from the test's own environment
        for k in switchyard::config::env::VARS {
            cmd.env_remove(k);
        }
        for n in 1..=100 {
            cmd.env_remove(format!("GITHUB_TOKEN{n}"));
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start switchyard");
        let log = Arc::new(Mutex::new(String::new()));
        // standard output (the start banner) and error (logs) into one log
        let outputs: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for mut out in outputs {
            let l2 = log.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = out.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    l2.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let gw = Gw {
            child: Some(child),
            port,
            admin_port,
            dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client().get(gw.url("/health")).send() {
                if r.status() == 200
                    && client()
                        .get(gw.admin("/health"))
                        .send()
                        .is_ok_and(|r| r.status() == 200)
                {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not come up:\n{}",
                gw.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        gw
    }

    /// The shipped default config (conf/switchyard.yaml, demo upstream) on free ports.
    pub fn default_config() -> Gw {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/switchyard.yaml");
        let (port, aport) = (free_port(), free_port());
        let (l, a) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{aport}"));
        Self::spawn(
            &path,
            port,
            aport,
            tempfile::tempdir().unwrap(),
            &[("SWITCHYARD_LISTEN", &l), ("SWITCHYARD_ADMIN_LISTEN", &a)],
        )
    }

    /// The Prometheus text of the admin listener's /metrics.
    pub fn metrics(&self) -> String {
        client()
            .get(self.admin("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    /// The metrics text once `ok` holds for it (they are counted as a request
    /// is logged, just after its last byte went out), or after 3 s as it is.
    pub fn metrics_when(&self, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let text = self.metrics();
            if ok(&text) || start.elapsed() > Duration::from_secs(3) {
                return text;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits for the series `name{labels}` to reach `n`, then asserts it is
    /// exactly `n` (nothing counted twice).
    pub fn assert_series(&self, name: &str, labels: &[(&str, &str)], n: f64) {
        let m = self.metrics_when(|m| series(m, name, labels) >= n);
        assert_eq!(series(&m, name, labels), n, "{m}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// The JSON answer of an admin API `GET`.
    pub fn admin_json(&self, path: &str) -> serde_json::Value {
        client()
            .get(self.admin(path))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    #[allow(unsafe_code)]
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits up to `limit` for exit; returns how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        let child = self.child.as_mut().unwrap();
        while start.elapsed() < limit {
            if child.try_wait().unwrap().is_some() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::blocking::Response {
        client().post(self.url(path)).json(body).send().unwrap()
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The value of the series whose line starts with `name{` and holds every
/// `label="value"` pair in `labels` (0 when there is none).
pub fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn chat(model: &str) -> serde_json::Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

/// Mock script: a stream of `chunks` text chunks for `stream: true`, else
/// [`ok_script`]'s completion.
pub fn stream_or_ok(req: &Request, chunks: usize) -> Reply {
    if req.json()["stream"] == serde_json::json!(true) {
        Reply::sse(
            switchyard::mock::chat_stream_events("m", chunks, false),
            Duration::ZERO,
        )
    } else {
        ok_script(req)
    }
}

/// Mock script that answers every chat call with a fixed completion.
pub fn ok_script(req: &Request) -> Reply {
    let model = req.json()["model"].as_str().unwrap_or("").to_string();
    Reply::json(
        200,
        &switchyard::mock::chat_completion(&model, "hi from mock"),
    )
}

/// Sends `request` as it is to 127.0.0.1:`port` and returns what came back
/// until the connection closed or `wait` passed without data.
pub fn raw(port: u16, request: &[u8], wait: Duration) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs a script from tests/python with `args` (the real openai Python SDK
/// against the real binary); panics with its output on failure.
pub fn run_python(script: &str, args: &[&str]) {
    let has_sdk = Command::new("python3")
        .args(["-c", "import openai"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_sdk,
        "the openai Python SDK is needed for this test: pip install openai (make test does it)"
    );
    run_client("python3", "tests/python", script, args);
}

/// Runs a script from tests/node with `args` (the Node client SDKs, which
/// `scripts/deps.sh test` installs there); its standard output.
pub fn run_node(script: &str, args: &[&str]) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/@anthropic-ai/sdk").exists(),
        "tests/node's SDKs are needed: scripts/deps.sh test (npm ci in tests/node)"
    );
    run_client("node", "tests/node", script, args)
}

/// Runs `program` on `dir/script` with `args`; panics with its output on
/// failure, else returns its standard output.
fn run_client(program: &str, dir: &str, script: &str, args: &[&str]) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(dir)
        .join(script);
    let out = Command::new(program)
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a CLI command against `gw`'s admin listener (no `.env`, no
/// colours): (success, standard output, standard error).
pub fn cli(gw: &Gw, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(args)
        .arg("--admin")
        .arg(format!("127.0.0.1:{}", gw.admin_port))
        .arg("--no-env-file")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `id`s of a `GET /v1/models` answer, in order.
pub fn model_ids(list: &serde_json::Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// What reached `mock` for clients: every request but the gateway's own
/// `GET /v1/models` (it asks an upstream routed by glob for its model list
/// once a listing is wanted, as a 404's "Available models" is).
pub fn client_calls(mock: &MockUpstream) -> Vec<Request> {
    mock.requests()
        .into_iter()
        .filter(|r| !(r.method == "GET" && r.path == "/v1/models"))
        .collect()
}

/// A chat call for `model` as the client with `key` (none: no key); its status.
pub fn chat_status(gw: &Gw, key: Option<&str>, model: &str) -> u16 {
    let mut r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat(model));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    r.send().unwrap().status().as_u16()
}
