"""The real `openai` Python SDK against a running Switchyard on its default
(demo) config. Usage: python3 sdk_demo.py BASE_URL. Exits non-zero on failure."""
import sys

import openai

base = sys.argv[1]
client = openai.OpenAI(base_url=base, api_key="unused-locally", max_retries=0)

# plain JSON
r = client.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "ping"}]
)
assert r.object == "chat.completion", r
assert r.choices[0].message.role == "assistant"
assert r.choices[0].message.content.endswith("You said: ping"), r.choices[0].message.content
assert r.choices[0].finish_reason == "stop"
assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

# streaming, with usage
text, finish, usage = "", None, None
stream = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "ping"}],
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage
    for c in chunk.choices:
        text += c.delta.content or ""
        finish = c.finish_reason or finish
assert text == r.choices[0].message.content, (text, r.choices[0].message.content)
assert finish == "stop" and usage is not None and usage.completion_tokens > 0

# the SDK's own stream accumulator agrees
with client.chat.completions.stream(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "ping"}]
) as s:
    final = s.get_final_completion()
assert final.choices[0].message.content == r.choices[0].message.content

# embeddings (the SDK asks for base64 and decodes it)
e = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
assert len(e.data) == 2 and len(e.data[0].embedding) == 8
assert abs(sum(x * x for x in e.data[0].embedding) - 1.0) < 1e-3

# legacy completions
c = client.completions.create(model="demo-chat", prompt="Say hi", max_tokens=3)
assert c.choices[0].finish_reason == "length" and len(c.choices[0].text.split()) == 3

# models
ids = [m.id for m in client.models.list()]
assert "gpt-4o-mini" in ids, ids

# errors come back as the SDK's typed exceptions
try:
    client.chat.completions.create(model="no-such-model", messages=[])
    raise SystemExit("expected NotFoundError")
except openai.NotFoundError as err:
    assert err.status_code == 404 and "gpt-4o-mini" in str(err)

print("sdk_demo: all checks passed")
