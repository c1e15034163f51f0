"""The openai SDK against a gateway whose response cache holds a JSON answer:
a streamed repeat (paced replay) parses with the same text, and with usage
when asked. Usage: sdk_cache.py BASE_URL KEY MODEL EXPECTED_TEXT."""
import sys

import openai

base, key, model, expected = sys.argv[1:5]
client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
messages = [{"role": "user", "content": "cache me"}]

raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, stream=True)
assert raw.headers.get("x-switchyard-cache") == "hit", dict(raw.headers)
text, finish = "", None
for chunk in raw.parse():
    assert chunk.object == "chat.completion.chunk"
    for c in chunk.choices:
        text += c.delta.content or ""
        finish = c.finish_reason or finish
assert text == expected and finish == "stop", (text, finish)

with client.chat.completions.stream(
    model=model, messages=messages, stream_options={"include_usage": True}
) as s:
    final = s.get_final_completion()
assert final.choices[0].message.content == expected, final
assert final.usage is not None and final.usage.total_tokens > 0, final.usage
print("sdk_cache: ok")
