//! The CLI's client for a running gateway's admin listener (loopback, plain
//! HTTP), on `ureq`.

use std::time::Duration;

/// Why a call to the admin API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the admin listener at {addr}: {source} (is the gateway running?)")]
    Unreachable {
        addr: String,
        source: std::io::Error,
    },
    #[error("talking to the admin listener: {0}")]
    Http(#[from] ureq::Error),
}

/// Where the admin API is and how to authenticate.
pub struct AdminTarget {
    /// `host:port`
    pub addr: String,
    pub token: Option<String>,
}

impl AdminTarget {
    /// From a config's `admin` section; `0.0.0.0`/`[::]` become loopback.
    pub fn from_config(cfg: &crate::config::Config) -> Option<AdminTarget> {
        let listen = cfg.admin.listen.clone()?;
        let addr = listen
            .replace("0.0.0.0:", "127.0.0.1:")
            .replace("[::]:", "[::1]:");
        Some(AdminTarget {
            addr,
            token: cfg.admin.token.clone(),
        })
    }

    /// Only the `admin` section of a config file, even when the rest does not validate.
    pub fn from_yaml_lenient(path: &std::path::Path) -> Option<AdminTarget> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut v: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
        let mut admin = v.get_mut("admin")?.clone();
        let mut errors = Vec::new();
        crate::config::expand::expand_tree(
            &mut admin,
            "admin",
            &|k| std::env::var(k).ok(),
            &mut errors,
        );
        let listen = admin
            .get("listen")
            .and_then(|l| l.as_str())
            .unwrap_or("127.0.0.1:4001");
        let addr = listen
            .replace("0.0.0.0:", "127.0.0.1:")
            .replace("[::]:", "[::1]:");
        let token = admin
            .get("token")
            .and_then(|t| t.as_str())
            .map(str::to_string);
        Some(AdminTarget { addr, token })
    }

    /// Sends a request; returns (status, body).
    pub fn call(&self, method: &str, path: &str) -> Result<(u16, String), ClientError> {
        self.send(method, path, None, &[])
    }

    /// Sends a request with `body` (JSON) and `headers`; returns (status, body).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, String), ClientError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let sent = match body {
            Some(b) => req.body(b).map(|r| agent.run(r)),
            None => req.body(()).map(|r| agent.run(r)),
        };
        let mut resp = sent
            .map_err(|e| ClientError::Http(ureq::Error::Http(e)))?
            .map_err(|e| match e {
                ureq::Error::Io(source) => ClientError::Unreachable {
                    addr: self.addr.clone(),
                    source,
                },
                ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                    ClientError::Unreachable {
                        addr: self.addr.clone(),
                        source: std::io::Error::other(e.to_string()),
                    }
                }
                e => ClientError::Http(e),
            })?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string()?;
        Ok((status, body))
    }
}

/// An admin API answer the CLI reads as JSON: a status among `ok` gives
/// its body parsed; anything else is printed (the API's `error.message`
/// with the status, or why the call failed) and gives the exit code.
pub fn json_answer(
    sent: Result<(u16, String), ClientError>,
    path: &str,
    ok: &[u16],
) -> Result<serde_json::Value, std::process::ExitCode> {
    let failed = |why: String| {
        eprintln!("switchyard: {why}");
        std::process::ExitCode::FAILURE
    };
    match sent {
        Ok((status, body)) if ok.contains(&status) => serde_json::from_str(&body)
            .map_err(|_| failed(format!("the gateway's answer to {path} is not JSON"))),
        Ok((status, body)) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let msg = v["error"]["message"].as_str().unwrap_or(&body);
            Err(failed(format!("the gateway answered {status}: {msg}")))
        }
        Err(e) => Err(failed(e.to_string())),
    }
}

/// `name=value&…` with each value percent-encoded; `None` values are left out.
pub fn query(pairs: &[(&str, Option<&str>)]) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC))))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            super::query(&[
                ("model", Some("a/b c#1")),
                ("all", None),
                ("k", Some("x&y=z"))
            ]),
            "model=a%2Fb%20c%231&k=x%26y%3Dz"
        );
    }
}
