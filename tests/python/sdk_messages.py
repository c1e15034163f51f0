"""The official anthropic Python SDK against the gateway's Messages API,
served onto an OpenAI-compatible mock upstream. Usage:
sdk_messages.py BASE_URL KEY. The mock (tests/messages.rs) answers by the
last user text: "tool" asks for get_weather, a tool result gets the
weather sentence, "slow" streams in pieces, "busy" 429s, anything else
"Hello from the mock"."""
import sys

import anthropic

base, key = sys.argv[1], sys.argv[2]
client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
MODEL = "claude-test"

# plain
m = client.messages.create(
    model=MODEL, max_tokens=64, system="Be brief.",
    messages=[{"role": "user", "content": "hi"}],
)
assert m.type == "message" and m.role == "assistant", m
assert m.content[0].type == "text" and m.content[0].text == "Hello from the mock", m.content
assert m.stop_reason == "end_turn", m.stop_reason
assert m.usage.input_tokens == 5 and m.usage.output_tokens == 3, m.usage

# streamed: text as it comes, and the final message
with client.messages.stream(
    model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "slow"}]
) as s:
    pieces = list(s.text_stream)
    final = s.get_final_message()
assert len(pieces) >= 3 and "".join(pieces) == "tok0 tok1 tok2 tok3 ", pieces
assert final.content[0].text == "tok0 tok1 tok2 tok3 " and final.stop_reason == "end_turn", final
assert final.usage.output_tokens == 4, final.usage

# a tool-use round trip, streamed
tools = [{"name": "get_weather", "description": "Weather in a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
with client.messages.stream(
    model=MODEL, max_tokens=128, tools=tools, messages=[{"role": "user", "content": "tool"}]
) as s:
    asked = s.get_final_message()
assert asked.stop_reason == "tool_use", asked
use = [b for b in asked.content if b.type == "tool_use"][0]
assert use.name == "get_weather" and use.input == {"city": "Paris"}, use
answer = client.messages.create(
    model=MODEL, max_tokens=128, tools=tools,
    messages=[
        {"role": "user", "content": "tool"},
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in asked.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C, sunny"}]},
    ],
)
assert answer.content[0].text == "It is 18C and sunny in Paris.", answer

# count_tokens: an estimate, more than nothing
n = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "hello there"}])
assert n.input_tokens > 0, n

# errors, as the SDK's classes
try:
    anthropic.Anthropic(base_url=base, api_key="wrong-key-000000000", max_retries=0).messages.create(
        model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    raise SystemExit("no 401")
except anthropic.AuthenticationError as e:
    assert e.status_code == 401 and e.body["error"]["type"] == "authentication_error", e.body
try:
    client.messages.create(model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    raise SystemExit("no 404")
except anthropic.NotFoundError as e:
    assert e.body["error"]["type"] == "not_found_error", e.body
# before the 429 below cools the only key
try:
    client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "overloaded"}])
    raise SystemExit("no 529")
except anthropic.OverloadedError as e:
    assert e.status_code == 529 and e.body["error"]["type"] == "overloaded_error", e.body
try:
    client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "busy"}])
    raise SystemExit("no 429")
except anthropic.RateLimitError as e:
    assert e.response.headers.get("retry-after"), dict(e.response.headers)
try:
    client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": 5}])
    raise SystemExit("no 400")
except anthropic.BadRequestError as e:
    assert e.body["error"]["type"] == "invalid_request_error", e.body
print("sdk_messages: ok")
