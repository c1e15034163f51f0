//! `switchyard check`, `hash-key` and the admin commands' config lookup
//! through the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::bin;
use std::process::Command;

fn check(yaml: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.yaml");
    std::fs::write(&p, yaml).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["check", "-c"]).arg(&p).env_remove("GITHUB_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn check_prints_a_summary_without_keys() {
    let yaml = "listen: 0.0.0.0:4000\nclients: [{name: t, key: '${CK}'}]\nupstreams:\n  - name: github\n    base_url: https://models.github.ai/inference\n    keys: ['${GH1}', '${GH2:-ghp_fallbackfallbackfallback}']\n    models: ['openai/*']\n    model_map: {gpt-4o-mini: openai/gpt-4o-mini}\n";
    let (code, out, err) = check(
        yaml,
        &[
            ("GH1", "ghp_secretsecretsecretZZZZ"),
            ("CK", "client-secret-value"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0.0.0.0:4000"));
    assert!(out.contains("github") && out.contains("keys: 2"));
    assert!(out.contains("gpt-4o-mini") && out.contains("openai/*"));
    assert!(!out.contains("ghp_") && !out.contains("client-secret-value") && !out.contains("ZZZZ"));
}

#[test]
fn check_names_the_yaml_path_of_every_error() {
    let (code, _, err) = check(
        "upstreams:\n  - name: a\n    base_url: http://x\n    keyz: []\n",
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("upstreams[0]") && err.contains("keyz"),
        "{err}"
    );

    let (code, _, err) = check(
        "upstreams:\n  - {name: a, base_url: 'http://x', keys: ['${GITHUB_TOKEN}']}\n",
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("upstreams[0].keys[0]") && err.contains("GITHUB_TOKEN"),
        "{err}"
    );

    for bad in ["next tuesday", "2027-13-40T00:00:00Z", ""] {
        let (code, _, err) = check(
            &format!("clients: [{{name: c, key: k-123456789, expires: '{bad}'}}]\nupstreams: [{{name: d, kind: demo}}]\n"),
            &[],
        );
        assert_eq!(code, 2, "{bad}");
        assert!(
            err.contains("clients[0].expires") && err.contains("RFC 3339"),
            "{err}"
        );
    }

    let (code, _, err) = check(
        "timeouts: {connect: soon}\nupstreams: [{name: d, kind: demo}]\n",
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("timeouts.connect") && err.contains("soon"),
        "{err}"
    );

    let (code, _, err) = check(
        "limits: {queue: 100001, tpm: 0, model_min_interval: 2h}\nupstreams: [{name: d, kind: demo, key_strategy: sticky, max_concurrent: 0, keys: [{key: abc, weight: 2, max_concurrent: 0}]}]\nmodels: {fallbacks: {gpt-4o: [nowhere-model]}, catalog: {m: {context: 10, max_output: 20}}}\nstate: {redis: 'ftp://127.0.0.1'}\n",
        &[],
    );
    assert_eq!(code, 2);
    for path in [
        "limits.queue:",
        "limits.tpm:",
        "limits.model_min_interval:",
        "upstreams[0].max_concurrent:",
        "upstreams[0].keys[0].max_concurrent:",
        "models.catalog.m.max_output:",
    ] {
        assert!(err.contains(path), "{path}: {err}");
    }
    assert!(err.contains("state.redis.url:"), "{err}");
    assert!(
        err.contains("upstreams[0].keys: weights only apply"),
        "{err}"
    );
    assert!(err.contains("models.fallbacks.gpt-4o[0]"), "{err}");

    let (code, _, err) = check(
        "upstreams: [{name: a, base_url: 'ftp://x'}, {name: a, kind: demo}]\n",
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("upstreams[0].base_url") && err.contains("upstreams[1].name"),
        "{err}"
    );
}

#[test]
fn an_endless_duration_is_a_config_error_not_a_panic() {
    let (code, _, err) = check(
        "timeouts: {total: 99999999999999999999d}\nupstreams: [{name: d, kind: demo}]\n",
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("timeouts.total") && err.contains("at most 3650d"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn two_upstreams_serving_every_model_are_a_warning() {
    let both = "upstreams:\n  - {name: openai, base_url: 'https://api.openai.com/v1'}\n  - {name: vllm, base_url: 'http://127.0.0.1:8000/v1'}\n";
    let (code, out, err) = check(both, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("warning: upstreams openai, vllm all serve every model"),
        "{out}"
    );
    assert!(out.contains("balanced by weight"), "{out}");
    let apart = "upstreams:\n  - {name: openai, base_url: 'https://api.openai.com/v1', models: ['gpt-*']}\n  - {name: vllm, base_url: 'http://127.0.0.1:8000/v1'}\n";
    let (_, out, _) = check(apart, &[]);
    assert!(!out.contains("warning:"), "{out}");
}

#[test]
fn a_named_config_that_is_missing_is_an_error_not_a_default() {
    let out = Command::new(bin())
        .args(["status", "-c", "/nonexistent/switchyard.yaml"])
        .env_remove("SWITCHYARD_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read config file /nonexistent/switchyard.yaml"),
        "{err}"
    );
}

#[test]
fn shipped_configs_pass_check() {
    let root = env!("CARGO_MANIFEST_DIR");
    for entry in std::fs::read_dir(format!("{root}/conf")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            let out = Command::new(bin())
                .args(["check", "-c"])
                .arg(&p)
                .env("OPENAI_API_KEY", "sk-test-aaaaaaaaaaaaaaaa")
                .env("GITHUB_TOKEN", "ghp_test_aaaaaaaaaaaaaaaa")
                .env("GEMINI_API_KEY", "gemini-test-aaaaaaaaaaaaaaaa")
                .env("AZURE_OPENAI_KEY", "azure-test-aaaaaaaaaaaaaaaa")
                .env("AZURE_OPENAI_RESOURCE", "my-resource")
                .env("ANTHROPIC_API_KEY", "sk-ant-test-aaaaaaaaaaaaaaaa")
                .env("REDIS_PASSWORD", "redis-test-password")
                .env("SWITCHYARD_CLIENT_KEY", "client-test-key")
                .env("SWITCHYARD_ADMIN_TOKEN", "admin-test-token")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn hash_key_prints_sha256() {
    let out = Command::new(bin())
        .args(["hash-key", "abc"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
