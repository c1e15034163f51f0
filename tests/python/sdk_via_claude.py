"""The openai Python SDK through the gateway to a kind: anthropic mock
(tests/dialects.rs) answering with recorded Anthropic answers: plain text,
a streamed text, tool calls plain and streamed. Usage:
sdk_via_claude.py BASE_URL KEY FIXTURES_DIR."""
import json
import sys

import openai

base, key, fixtures = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
MODEL = "claude-sonnet-4-5"


def recorded(name):
    return json.load(open(f"{fixtures}/{name}"))


def ask(text, **kw):
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": text}], **kw)


# plain text
want = recorded("json-text.json")
r = ask("plain text")
assert r.choices[0].message.content == want["content"][0]["text"], r
assert r.choices[0].finish_reason == "stop"
assert r.usage.prompt_tokens >= want["usage"]["input_tokens"], r.usage
assert r.usage.completion_tokens == want["usage"]["output_tokens"], r.usage

# streamed text, with the usage chunk asked for
pieces, usage = [], None
for chunk in ask("stream text", stream=True, stream_options={"include_usage": True}):
    if chunk.usage:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            pieces.append(c.delta.content)
assert "".join(pieces).strip(), pieces
assert usage is not None and usage.completion_tokens > 0, usage

tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
          "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]
# tool calls, plain
want = recorded("json-tool-use.json")
r = ask("tools", tools=tools)
calls = r.choices[0].message.tool_calls
use = [b for b in want["content"] if b["type"] == "tool_use"][0]
assert r.choices[0].finish_reason == "tool_calls", r
assert calls[0].id == use["id"] and calls[0].function.name == use["name"], calls
assert json.loads(calls[0].function.arguments) == use["input"], calls

# tool calls, streamed: arguments cut mid-token, two calls
args, names = {}, {}
for chunk in ask("stream tools", tools=tools, stream=True):
    for c in chunk.choices:
        for t in c.delta.tool_calls or []:
            if t.function.name:
                names[t.index] = t.function.name
            args[t.index] = args.get(t.index, "") + (t.function.arguments or "")
assert len(names) == 2, names
assert all(isinstance(json.loads(a), dict) for a in args.values()), args
print("ok")
