//! A kept answer to a streaming client: the stream synthesized from its
//! JSON (`sse::synth`), at once (`replay: instant`) or with its content cut
//! and timed as the original stream's events were (`replay: paced`; pauses
//! capped at 1 s each, 30 s in all).

use crate::routes::Api;
use serde_json::Value;

/// The longest a paced replay takes in all (ms).
const MAX_TOTAL_MS: u32 = 30_000;

/// The stream for answer `v`: (pause in ms before it, SSE text) pieces.
/// `pace` (non-empty) asks for the original timing.
pub fn events(api: Api, v: &Value, include_usage: bool, pace: &[(u32, u32)]) -> Vec<(u32, String)> {
    let text = match api {
        Api::Completions => crate::sse::synth::completion(v, include_usage),
        _ => crate::sse::synth::chat(v, include_usage),
    };
    // paced: one chat choice without logprobs (a piece carries no more
    // than its text; completions' events carry the finish reason)
    let one_choice = v["choices"].as_array().is_some_and(|c| c.len() == 1);
    let plain = v["choices"][0]["logprobs"].is_null();
    if pace.is_empty() || !one_choice || !plain || api != Api::Chat {
        return vec![(0, text)];
    }
    let mut out = Vec::new();
    let mut budget = MAX_TOTAL_MS;
    for ev in text.split_inclusive("\n\n") {
        match cut(ev, pace, &mut budget) {
            Some(pieces) => out.extend(pieces),
            None => out.push((0, ev.to_string())),
        }
    }
    out
}

/// The content event `ev` cut into the original events' lengths, each
/// after its pause; `None` for any other event.
fn cut(ev: &str, pace: &[(u32, u32)], budget: &mut u32) -> Option<Vec<(u32, String)>> {
    let mut v: Value = serde_json::from_str(ev.strip_prefix("data: ")?.trim_end()).ok()?;
    let (field, text) = ["content", "text"].iter().find_map(|f| {
        let delta = if *f == "text" {
            &v["choices"][0]
        } else {
            &v["choices"][0]["delta"]
        };
        delta[*f]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(|t| (*f, t.to_string()))
    })?;
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut at = 0usize;
    for (i, &(n, gap)) in pace.iter().enumerate() {
        if at >= chars.len() {
            break;
        }
        let last = i + 1 == pace.len();
        let end = if last {
            chars.len()
        } else {
            (at + n as usize).min(chars.len())
        };
        let piece: String = chars[at..end].iter().collect();
        at = end;
        let slot = if field == "text" {
            &mut v["choices"][0]["text"]
        } else {
            &mut v["choices"][0]["delta"]["content"]
        };
        *slot = Value::String(piece);
        let pause = gap.min(*budget);
        *budget -= pause;
        out.push((pause, format!("data: {v}\n\n")));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn instant_is_one_piece_and_paced_follows_the_original_cuts() {
        let v = json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello world"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}});
        let instant = events(Api::Chat, &v, true, &[]);
        assert_eq!(instant.len(), 1);
        assert!(instant[0].1.contains("Hello world") && instant[0].1.ends_with("data: [DONE]\n\n"));
        let paced = events(Api::Chat, &v, false, &[(5, 0), (1, 40), (3, 2000)]);
        let text: String = paced
            .iter()
            .filter_map(|(_, e)| {
                serde_json::from_str::<Value>(e.strip_prefix("data: ")?.trim()).ok()
            })
            .filter_map(|e| {
                e["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(text, "Hello world");
        let pauses: Vec<u32> = paced.iter().map(|p| p.0).filter(|p| *p > 0).collect();
        assert_eq!(
            pauses,
            [40, 2000],
            "each pause as recorded (capped when recorded)"
        );
        assert!(paced.last().unwrap().1.contains("[DONE]"));
        assert!(
            !paced.iter().any(|(_, e)| e.contains("usage")),
            "usage only when asked"
        );
    }
}
