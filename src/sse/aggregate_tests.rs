//! Aggregation rules (AGGREGATION.md) checked against recorded and built streams.
use super::*;
use crate::sse::parse_all;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/openai-chat-streams")
            .join(name),
    )
    .unwrap()
}

fn aggregate(data: &[u8]) -> Result<Value, AggregateError> {
    let mut agg = ChatAggregator::new();
    for ev in parse_all(data) {
        if ev.is_done() {
            break;
        }
        agg.push(&serde_json::from_str(&ev.data).unwrap())?;
    }
    agg.finish()
}

fn chunks(list: &[Value]) -> Result<Value, AggregateError> {
    let mut agg = ChatAggregator::new();
    for c in list {
        agg.push(c)?;
    }
    agg.finish()
}

#[test]
fn plain_text_with_usage() {
    let v = aggregate(&fixture("e2aad469b71d.sse")).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["total_tokens"].as_i64().unwrap() > 0);
    assert!(v["system_fingerprint"].is_string());
    assert!(v.get("obfuscation").is_none());
}

#[test]
fn three_interleaved_choices() {
    let v = aggregate(&fixture("a491adda08c3.sse")).unwrap();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["message"]["role"], "assistant");
        assert!(!c["message"]["content"].as_str().unwrap().is_empty());
    }
}

#[test]
fn refusal_keeps_content_null() {
    let v = aggregate(&fixture("173417d55340.sse")).unwrap();
    let m = &v["choices"][0]["message"];
    assert!(m["content"].is_null());
    assert!(m["refusal"].as_str().unwrap().len() > 5);
}

#[test]
fn parallel_tool_calls() {
    let v = aggregate(&fixture("f82268f2fefd.sse")).unwrap();
    let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    for c in calls {
        assert!(c["id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(c["type"], "function");
        serde_json::from_str::<Value>(c["function"]["arguments"].as_str().unwrap()).unwrap();
    }
    assert!(v["choices"][0]["message"]["content"].is_null());
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
}

#[test]
fn logprobs_extend() {
    let data = fixture("83b060bae42e.sse");
    let n_chunks_with_lp = parse_all(&data)
        .iter()
        .filter(|e| !e.is_done())
        .map(|e| serde_json::from_str::<Value>(&e.data).unwrap())
        .map(|v| {
            v["choices"][0]["logprobs"]["content"]
                .as_array()
                .map_or(0, |a| a.len())
        })
        .sum::<usize>();
    let v = aggregate(&data).unwrap();
    assert_eq!(
        v["choices"][0]["logprobs"]["content"]
            .as_array()
            .unwrap()
            .len(),
        n_chunks_with_lp
    );
}

#[test]
fn repeated_role_is_replaced_not_concatenated() {
    let v = chunks(&[
        json!({"id": "a", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "He"}}]}),
        json!({"id": "a", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "llo"}, "finish_reason": "stop"}]}),
    ])
    .unwrap();
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello");
}

#[test]
fn tool_index_one_before_zero_and_empty_lists() {
    let v = chunks(&[
        json!({"choices": [{"index": 0, "delta": {"tool_calls": []}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "b", "arguments": "{\"y\""}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "a", "arguments": "{}"}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "function": {"arguments": ":2}"}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"function": {"arguments": ""}}]}, "finish_reason": "tool_calls"}]}),
    ])
    .unwrap();
    let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["id"], "call_a");
    assert_eq!(calls[1]["id"], "call_b");
    assert_eq!(calls[1]["function"]["arguments"], "{\"y\":2}");
    assert_eq!(calls[1]["type"], "function", "type defaults to function");
}

#[test]
fn negative_and_missing_tool_index() {
    let v = chunks(&[
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": -1, "id": "c", "function": {"name": "f", "arguments": "{"}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"function": {"arguments": "}"}}]}, "finish_reason": "tool_calls"}]}),
    ])
    .unwrap();
    let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["function"]["arguments"], "{}");
}

#[test]
fn missing_finish_reason_is_truncated() {
    let e =
        chunks(&[json!({"choices": [{"index": 0, "delta": {"content": "partial"}}]})]).unwrap_err();
    assert!(matches!(e, AggregateError::Truncated(_)));
    assert!(matches!(
        chunks(&[]).unwrap_err(),
        AggregateError::Truncated(_)
    ));
    // the recorded stream cut before its finish chunk
    let data = fixture("e2aad469b71d.sse");
    let text = String::from_utf8(data).unwrap();
    let cut = &text[..text.find("\"finish_reason\":\"stop\"").unwrap()];
    let cut = &cut[..cut.rfind("\n\n").unwrap() + 2];
    assert!(matches!(
        aggregate(cut.as_bytes()).unwrap_err(),
        AggregateError::Truncated(_)
    ));
}

#[test]
fn usage_with_null_choices_and_azure_filter_chunk() {
    let v = chunks(&[
        json!({"id": "", "object": "", "created": 0, "model": "", "choices": [], "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {"hate": {"filtered": false}}}]}),
        json!({"id": "x", "object": "chat.completion.chunk", "created": 5, "model": "gpt-4o", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "content_filter_results": {"hate": {"filtered": false}}}]}),
        json!({"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "obfuscation": "abc", "system_fingerprint": "fp1"}),
        json!({"id": "x", "choices": null, "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}, "system_fingerprint": "fp2"}),
    ])
    .unwrap();
    assert_eq!(
        (v["id"].as_str(), v["created"].as_i64(), v["model"].as_str()),
        (Some("x"), Some(5), Some("gpt-4o"))
    );
    assert_eq!(v["usage"]["total_tokens"], 2);
    assert_eq!(v["system_fingerprint"], "fp2", "last non-null wins");
    assert!(v.get("obfuscation").is_none());
    assert_eq!(v["prompt_filter_results"].as_array().unwrap().len(), 1);
    assert!(v["choices"][0]["content_filter_results"].is_object());
    assert_eq!(v["choices"].as_array().unwrap().len(), 1);
}

#[test]
fn function_call_audio_reasoning() {
    let v = chunks(&[
        json!({"choices": [{"index": 0, "delta": {"role": "assistant", "function_call": {"name": "f", "arguments": "{\"a\""}, "reasoning_content": "think "}}]}),
        json!({"choices": [{"index": 0, "delta": {"function_call": {"arguments": ":1}"}, "reasoning_content": "hard", "audio": {"id": "au_1", "data": "AAA", "transcript": "he"}}}]}),
        json!({"choices": [{"index": 0, "delta": {"audio": {"data": "BBB", "transcript": "llo", "expires_at": 9}}, "finish_reason": "function_call"}]}),
    ])
    .unwrap();
    let m = &v["choices"][0]["message"];
    assert_eq!(
        m["function_call"],
        json!({"name": "f", "arguments": "{\"a\":1}"})
    );
    assert_eq!(m["reasoning_content"], "think hard");
    assert_eq!(
        m["audio"],
        json!({"id": "au_1", "data": "AAABBB", "transcript": "hello", "expires_at": 9})
    );
    assert!(m["content"].is_null());
}

#[test]
fn logprobs_null_later_does_not_reset() {
    let v = chunks(&[
        json!({"choices": [{"index": 0, "delta": {"content": "a"}, "logprobs": {"content": [{"token": "a"}], "refusal": null}}]}),
        json!({"choices": [{"index": 0, "delta": {"content": "b"}, "logprobs": null}]}),
        json!({"choices": [{"index": 0, "delta": {"content": "c"}, "logprobs": {"content": [{"token": "c"}]}, "finish_reason": "stop"}]}),
    ])
    .unwrap();
    assert_eq!(
        v["choices"][0]["logprobs"]["content"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn every_fixture_aggregates() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openai-chat-streams");
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "sse") {
            let v = aggregate(&std::fs::read(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert_eq!(v["object"], "chat.completion", "{}", p.display());
        }
    }
}

#[test]
fn completions_merge() {
    let mut a = CompletionAggregator::new();
    a.push(&json!({"id": "c", "object": "text_completion", "created": 1, "model": "m", "choices": [{"index": 0, "text": "Hel", "logprobs": {"tokens": ["Hel"], "token_logprobs": [-0.1], "top_logprobs": [{}], "text_offset": [0]}, "finish_reason": null}]})).unwrap();
    a.push(&json!({"id": "c", "choices": [{"index": 0, "text": "lo", "logprobs": {"tokens": ["lo"], "token_logprobs": [-0.2], "top_logprobs": [{}], "text_offset": [3]}, "finish_reason": "length"}]})).unwrap();
    a.push(&json!({"id": "c", "choices": [], "usage": {"total_tokens": 3}}))
        .unwrap();
    let v = a.finish().unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "Hello");
    assert_eq!(v["choices"][0]["logprobs"]["tokens"], json!(["Hel", "lo"]));
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["total_tokens"], 3);
}

#[test]
fn responses_final_object_and_rebuilt_output() {
    let mut a = ResponsesAggregator::new();
    a.push(None, &json!({"type": "response.created", "response": {"id": "r", "status": "in_progress", "output": []}})).unwrap();
    a.push(
        None,
        &json!({"type": "response.output_item.done", "output_index": 1, "item": {"id": "b"}}),
    )
    .unwrap();
    a.push(
        None,
        &json!({"type": "response.output_item.done", "output_index": 0, "item": {"id": "a"}}),
    )
    .unwrap();
    a.push(
        Some("response.completed"),
        &json!({"response": {"id": "r", "status": "completed", "output": []}}),
    )
    .unwrap();
    let v = a.finish().unwrap();
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"], json!([{"id": "a"}, {"id": "b"}]));
    let mut b = ResponsesAggregator::new();
    assert!(b
        .push(
            None,
            &json!({"type": "error", "code": "insufficient_quota", "message": "no"})
        )
        .is_err());
    assert!(ResponsesAggregator::new().finish().is_err());
}

#[test]
fn empty_content_next_to_tool_calls_or_a_refusal_is_null() {
    let head = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"});
    let chunk = |delta: Value, finish: Value| {
        let mut c = head.clone();
        c["choices"] = json!([{"index": 0, "delta": delta, "finish_reason": finish}]);
        c
    };
    let tool = chunks(&[
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": ""}), Value::Null),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
    ])
    .unwrap();
    assert!(tool["choices"][0]["message"]["content"].is_null(), "{tool}");
    assert_eq!(
        tool["choices"][0]["message"]["tool_calls"][0]["id"],
        "call_1"
    );
    let refusal = chunks(&[
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"refusal": "I can't help with that."}), Value::Null),
        chunk(json!({}), json!("stop")),
    ])
    .unwrap();
    assert!(
        refusal["choices"][0]["message"]["content"].is_null(),
        "{refusal}"
    );
    // an empty answer without tool calls keeps its ""
    let empty = chunks(&[
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({}), json!("stop")),
    ])
    .unwrap();
    assert_eq!(empty["choices"][0]["message"]["content"], "");
}
