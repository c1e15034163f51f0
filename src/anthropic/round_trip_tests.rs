//! Every recorded Anthropic answer, told to a chat client ([`chat_writer`],
//! [`chat_answer`]) and that chat told back to a Messages client
//! ([`writer`], [`answer`]), keeps its text, tool calls (names and
//! arguments) and stop reason. Thinking has no place in chat and is left
//! out of the comparison.

use super::chat_answer::to_completion;
use super::chat_writer::ChatWriter;
use super::writer::Writer;
use crate::forward::headers::{Reshape, Reshaped, X_SWITCHYARD_UPSTREAM};
use bytes::Bytes;
use serde_json::Value;
use std::path::PathBuf;

fn fixtures(ext: &str) -> Vec<PathBuf> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/anthropic-messages");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == ext) && !p.to_string_lossy().contains(".meta.")
        })
        .collect();
    out.sort();
    out
}

/// Runs `bytes` through `w` as a 200 SSE answer, cut every `split` bytes.
fn through(w: &mut dyn Reshape, bytes: &[u8], split: usize) -> Vec<u8> {
    let mut head = crate::forward::headers::head(http::StatusCode::OK, 4);
    head.headers.insert(
        http::header::CONTENT_TYPE,
        "text/event-stream".parse().unwrap(),
    );
    head.headers
        .insert(X_SWITCHYARD_UPSTREAM, "up".parse().unwrap());
    assert!(matches!(w.head(head, false), Reshaped::Head(..)));
    let mut out = Vec::new();
    let mut take = |r: Reshaped| {
        if let Reshaped::Body(b, _) = r {
            out.extend_from_slice(&b);
        }
    };
    for piece in bytes.chunks(split) {
        take(w.body(Some(Bytes::copy_from_slice(piece)), false));
    }
    take(w.body(None, true));
    out
}

/// A Messages stream's blocks (text, or a tool's name and raw input) and
/// its stop reason.
fn gather(sse: &[u8]) -> (Vec<(String, String)>, String) {
    let text = String::from_utf8_lossy(sse);
    let mut blocks: Vec<(u64, String, String)> = Vec::new();
    let mut stop = String::new();
    for data in text.lines().filter_map(|l| l.strip_prefix("data:")) {
        let Ok(v) = serde_json::from_str::<Value>(data.trim()) else {
            continue;
        };
        let i = v["index"].as_u64().unwrap_or(0);
        match v["type"].as_str().unwrap_or("") {
            "content_block_start" => {
                let b = &v["content_block"];
                match b["type"].as_str().unwrap_or("") {
                    "text" => blocks.push((i, "text".into(), String::new())),
                    "tool_use" => blocks.push((
                        i,
                        format!("tool {}", b["name"].as_str().unwrap_or("")),
                        String::new(),
                    )),
                    _ => {}
                }
            }
            "content_block_delta" => {
                let d = &v["delta"];
                let piece = d["text"]
                    .as_str()
                    .or(d["partial_json"].as_str())
                    .unwrap_or("");
                if let Some(b) = blocks.iter_mut().rev().find(|b| b.0 == i) {
                    b.2.push_str(piece);
                }
            }
            "message_delta" => stop = v["delta"]["stop_reason"].as_str().unwrap_or("").into(),
            _ => {}
        }
    }
    let blocks = blocks
        .into_iter()
        .filter(|b| !(b.1 == "text" && b.2.is_empty()))
        .map(|(_, kind, body)| {
            // tool input compared as JSON where it is JSON ({} and "" alike)
            let body =
                match serde_json::from_str::<Value>(if body.is_empty() { "{}" } else { &body }) {
                    Ok(v) if kind.starts_with("tool") => v.to_string(),
                    _ => body,
                };
            (kind, body)
        })
        .collect();
    (blocks, stop)
}

#[test]
fn every_recorded_stream_survives_chat_and_back() {
    let files = fixtures("sse");
    assert!(files.len() >= 10, "{files:?}");
    for path in files {
        let original = std::fs::read(&path).unwrap();
        let chat = through(&mut ChatWriter::new(true), &original, 61);
        let back = through(&mut Writer::new("m"), &chat, 13);
        let (want, got) = (gather(&original), gather(&back));
        assert!(!want.0.is_empty(), "{}", path.display());
        assert_eq!(
            got,
            want,
            "{}\nchat: {}",
            path.display(),
            String::from_utf8_lossy(&chat)
        );
    }
}

#[test]
fn every_recorded_answer_survives_chat_and_back() {
    let mut seen = 0;
    for path in fixtures("json") {
        let m: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        if m["type"] != "message" {
            continue; // errors and counts
        }
        seen += 1;
        let back = super::answer::to_message(&to_completion(&m), "m");
        let keep = |v: &Value| -> Vec<Value> {
            v["content"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|b| b["type"] == "text" || b["type"] == "tool_use")
                .map(|b| serde_json::json!([b["type"], b["text"], b["name"], b["input"], b["id"]]))
                .collect()
        };
        assert_eq!(keep(&back), keep(&m), "{}", path.display());
        assert_eq!(back["stop_reason"], m["stop_reason"], "{}", path.display());
        assert_eq!(
            back["usage"]["output_tokens"],
            m["usage"]["output_tokens"],
            "{}",
            path.display()
        );
    }
    assert!(seen >= 5, "{seen}");
}
