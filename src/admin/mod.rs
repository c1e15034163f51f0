//! The admin listener: `/health`, `/metrics` (Prometheus text). When
//! `admin.token` is set, everything but `/health` needs `Authorization: Bearer <token>`.

use crate::state::State;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

pub struct AdminApp {
    pub state: Arc<State>,
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn json_error(status: u16, message: &str, code: &str) -> Response<Vec<u8>> {
    let body = serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}});
    reply(status, "application/json", body.to_string().into_bytes())
}

/// Does the request carry the admin token (when one is configured)?
fn authorized(token: Option<&str>, header: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    let Some(presented) = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
    else {
        return false;
    };
    // constant-time compare
    presented.len() == token.len()
        && presented
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let snap = self.state.load();
        let path = session.req_header().uri.path().to_string();
        if path == "/health" {
            return reply(200, "application/json", b"{\"status\":\"ok\"}".to_vec());
        }
        let auth = session
            .req_header()
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if !authorized(snap.config.admin.token.as_deref(), auth) {
            return json_error(
                401,
                "This admin endpoint needs `Authorization: Bearer <admin.token>`.",
                "invalid_admin_token",
            );
        }
        match path.as_str() {
            "/metrics" => reply(
                200,
                "text/plain; version=0.0.4",
                crate::metrics::render().into_bytes(),
            ),
            _ => json_error(
                404,
                &format!("Unknown admin path {path}. Try /health or /metrics."),
                "not_found",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_check() {
        assert!(super::authorized(None, None));
        assert!(super::authorized(Some("t0k"), Some("Bearer t0k")));
        assert!(!super::authorized(Some("t0k"), Some("Bearer t0x")));
        assert!(!super::authorized(Some("t0k"), None));
    }
}
