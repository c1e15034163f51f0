//! The real `openai` Python SDK as a client of the real binary (`pip install openai`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use std::process::Command;

fn python_has_openai() -> bool {
    Command::new("python3")
        .args(["-c", "import openai"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a script from tests/python against `base_url`; panics with its output on failure.
pub fn run_python(script: &str, base_url: &str) {
    assert!(
        python_has_openai(),
        "the openai Python SDK is needed for this test: pip install openai (make test does it)"
    );
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let out = Command::new("python3")
        .arg(&path)
        .arg(base_url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn openai_python_sdk_against_the_demo_upstream() {
    let gw = Gw::default_config();
    run_python("sdk_demo.py", &gw.url("/v1"));
}
