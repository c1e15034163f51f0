//! The real `openai` Python SDK as a client of the real binary (`pip install openai`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;

#[test]
fn openai_python_sdk_against_the_demo_upstream() {
    let gw = Gw::default_config();
    run_python("sdk_demo.py", &[&gw.url("/v1")]);
}
