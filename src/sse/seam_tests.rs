use super::*;
use proptest::prelude::*;

fn chunk(id: &str, content: &str, finish: Option<&str>) -> Value {
    json!({"id": id, "object": "chat.completion.chunk", "created": 7, "model": "m",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]})
}

fn role(id: &str) -> Value {
    json!({"id": id, "created": 9, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]})
}

fn first(pieces: &[&str]) -> Seam {
    let mut s = Seam::new(Api::Chat, 1, 1 << 20).unwrap();
    s.observe(&role("orig").to_string());
    for p in pieces {
        s.observe(&chunk("orig", p, None).to_string());
    }
    s
}

/// Joins `events` in `mode`: the text the client gets, and the events sent.
fn join_all(
    s: &mut Seam,
    mode: Mode,
    events: Vec<Value>,
) -> Result<(String, Vec<Value>), &'static str> {
    s.begin(mode);
    let mut out = Vec::new();
    for e in events {
        s.join(e, &mut out)?;
    }
    let text = out
        .iter()
        .map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    Ok((text, out))
}

#[test]
fn the_first_attempt_is_observed() {
    let s = first(&["Hel", "lo"]);
    assert_eq!(s.sent_len(), 5);
    assert!(s.resumable());
    assert_eq!(s.mode(), None);
}

#[test]
fn tool_calls_choices_and_a_finish_end_continuability() {
    let mut s = first(&["a"]);
    s.observe(r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0}]}}]}"#);
    assert_eq!(s.why_not(), Some("the answer calls a tool"));
    let mut s = first(&["a"]);
    s.observe(r#"{"choices":[{"index":1,"delta":{"content":"x"}}]}"#);
    assert!(!s.resumable());
    let mut s = first(&["a"]);
    s.observe(&chunk("orig", "", Some("stop")).to_string());
    assert_eq!(s.why_not(), Some("the answer had finished"));
    let mut s = first(&["a"]);
    s.observe(r#"{"choices":[{"index":0,"delta":{"reasoning_content":"hmm"}}]}"#);
    assert!(!s.resumable());
    // nulls and empty strings are text-only still
    let mut s = first(&["a"]);
    s.observe(r#"{"choices":[{"index":0,"delta":{"content":"b","tool_calls":null,"refusal":null,"reasoning_content":""}}]}"#);
    assert!(s.resumable());
    assert_eq!(s.sent_len(), 2);
    assert!(Seam::new(Api::Chat, 2, 100).is_none());
    assert!(Seam::new(Api::Responses, 1, 100).is_none());
    assert!(Seam::new(Api::Chat, 1, 0).is_none());
}

#[test]
fn the_buffer_cap_turns_continuation_off_and_frees_the_text() {
    let mut s = Seam::new(Api::Chat, 1, 8).unwrap();
    s.observe(&chunk("a", "12345", None).to_string());
    assert!(s.resumable());
    s.observe(&chunk("a", "6789", None).to_string());
    assert_eq!(
        s.why_not(),
        Some("the answer outgrew the continuation buffer")
    );
    assert_eq!(s.sent_len(), 0);
}

#[test]
fn a_restart_forwards_only_what_goes_beyond_with_the_original_id() {
    let mut s = first(&["Hello, ", "wor"]);
    let (text, out) = join_all(
        &mut s,
        Mode::Restart,
        vec![
            role("new"),
            chunk("new", "Hello", None),
            chunk("new", ", world", None),
            chunk("new", "!", None),
            chunk("new", "", Some("stop")),
        ],
    )
    .unwrap();
    assert_eq!(text, "ld!");
    assert!(out.iter().all(|v| v["id"] == "orig" && v["created"] == 9));
    assert_eq!(out.last().unwrap()["choices"][0]["finish_reason"], "stop");
    assert!(!s.resumable(), "finished");
}

#[test]
fn a_restart_that_differs_or_ends_short_is_refused() {
    let mut s = first(&["Hello"]);
    assert_eq!(
        join_all(&mut s, Mode::Restart, vec![chunk("n", "Help", None)]).unwrap_err(),
        "the new answer differs from the text already sent"
    );
    let mut s = first(&["Hello"]);
    assert_eq!(
        join_all(
            &mut s,
            Mode::Restart,
            vec![chunk("n", "He", None), chunk("n", "", Some("stop"))]
        )
        .unwrap_err(),
        "the new answer ends before the text already sent"
    );
    let mut s = first(&["Hello"]);
    let tool = json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0}]}}]});
    assert!(join_all(&mut s, Mode::Restart, vec![tool]).is_err());
}

#[test]
fn a_prefill_continuation_is_forwarded_whole_even_when_it_starts_like_the_text() {
    let mut s = first(&["Hello"]);
    // "H" matches the start of "Hello" but the next piece shows a real continuation
    let (text, _) = join_all(
        &mut s,
        Mode::Prefill,
        vec![
            role("n"),
            chunk("n", "H", None),
            chunk("n", "! Bye", None),
            chunk("n", "", Some("stop")),
        ],
    )
    .unwrap();
    assert_eq!(text, "H! Bye");
    assert_eq!(s.sent_len(), "HelloH! Bye".len());
}

#[test]
fn a_prefill_the_target_ignored_is_joined_like_a_restart() {
    let mut s = first(&["Hello", " there"]);
    let (text, _) = join_all(
        &mut s,
        Mode::Prefill,
        vec![
            chunk("n", "Hello", None),
            chunk("n", " there", None),
            chunk("n", ", friend", None),
        ],
    )
    .unwrap();
    assert_eq!(text, ", friend");
}

#[test]
fn a_long_echo_that_then_differs_is_refused() {
    let sent: Vec<String> = (0..100).map(|i| format!("w{i} ")).collect();
    let refs: Vec<&str> = sent.iter().map(String::as_str).collect();
    let mut s = first(&refs);
    let mut again: Vec<Value> = sent[..80].iter().map(|p| chunk("n", p, None)).collect();
    again.push(chunk("n", "different", None));
    assert!(join_all(&mut s, Mode::Prefill, again).is_err());
}

#[test]
fn the_request_is_shaped_for_each_mode() {
    let s = first(&["Par", "tial"]);
    let mut body =
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100});
    assert!(s.shape_request(&mut body, Mode::Prefill));
    assert_eq!(
        body["messages"][1],
        json!({"role": "assistant", "content": "Partial"})
    );
    assert_eq!(body["max_tokens"], 98);
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    let mut body = json!({"model": "m", "messages": [], "stream_options": "junk"});
    assert!(s.shape_request(&mut body, Mode::Restart));
    assert_eq!(body["messages"], json!([]));
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert!(!s.shape_request(&mut json!({"messages": "not a list"}), Mode::Prefill));
    assert!(!s.shape_request(&mut json!([1]), Mode::Restart));

    let mut c = Seam::new(Api::Completions, 1, 1000).unwrap();
    c.observe(r#"{"id":"c","choices":[{"index":0,"text":" upon"}]}"#);
    let mut body = json!({"prompt": "Once"});
    assert!(c.shape_request(&mut body, Mode::Prefill));
    assert_eq!(body["prompt"], "Once upon");
    assert!(!c.shape_request(&mut json!({"prompt": ["Once"]}), Mode::Prefill));
}

#[test]
fn usage_counts_every_attempt() {
    // 8 bytes sent by a first attempt that broke; a prefill finishes it
    let mut s = first(&["12345678"]);
    s.begin(Mode::Prefill);
    let mut out = Vec::new();
    s.join(chunk("n", "9", Some("stop")), &mut out).unwrap();
    let mut usage = json!({"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13});
    s.add_earlier_usage(&mut usage);
    // first attempt: prompt 12 - 2 (the prefill's estimate) = 10, 8 bytes ≈ 2 tokens
    assert_eq!(
        usage,
        json!({"prompt_tokens": 22, "completion_tokens": 3, "total_tokens": 25})
    );
    // a refused prefill attempt (no events) costs nothing
    let mut s = first(&["1234"]);
    s.begin(Mode::Prefill);
    s.begin(Mode::Restart);
    s.join(chunk("n", "1234", None), &mut out).unwrap();
    let mut usage = json!({"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12});
    s.add_earlier_usage(&mut usage);
    assert_eq!(
        usage,
        json!({"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23})
    );
}

/// Splits `text` into pieces at the given cut points (on char boundaries).
fn split(text: &str, cuts: &[usize]) -> Vec<String> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|c| c % (text.len() + 1))
        .filter(|c| text.is_char_boundary(*c))
        .collect();
    at.push(0);
    at.push(text.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2)
        .map(|w| text[w[0]..w[1]].to_string())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Any break point and any split of the restarted answer: the client ends
    /// with the whole answer exactly once.
    #[test]
    fn restart_gives_the_whole_answer_once(
        answer in "[a-zé ]{1,60}",
        brk in 0usize..60,
        cuts1 in proptest::collection::vec(0usize..64, 0..8),
        cuts2 in proptest::collection::vec(0usize..64, 0..8),
    ) {
        let first_pieces = split(&answer, &cuts1);
        let mut sent = String::new();
        let mut s = Seam::new(Api::Chat, 1, 1 << 20).unwrap();
        for p in first_pieces.iter().take(brk % (first_pieces.len() + 1)) {
            s.observe(&chunk("o", p, None).to_string());
            sent.push_str(p);
        }
        let mut again: Vec<Value> = split(&answer, &cuts2).iter().map(|p| chunk("n", p, None)).collect();
        again.push(chunk("n", "", Some("stop")));
        for mode in [Mode::Restart, Mode::Prefill] {
            let mut s2 = Seam::new(Api::Chat, 1, 1 << 20).unwrap();
            s2.observe(&chunk("o", &sent, None).to_string());
            let (text, _) = join_all(&mut s2, mode, again.clone()).unwrap();
            prop_assert_eq!(format!("{sent}{text}"), answer.clone());
        }
        let (text, _) = join_all(&mut s, Mode::Restart, again).unwrap();
        prop_assert_eq!(format!("{sent}{text}"), answer);
    }
}
