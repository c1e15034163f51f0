"""The official anthropic Python SDK through the gateway to a kind:
anthropic mock upstream (tests/dialects.rs), which answers with recorded
Anthropic answers: the thinking answer, the thinking stream, and a tool-use
stream. Usage: sdk_native.py BASE_URL KEY FIXTURES_DIR."""
import json
import sys

import anthropic

base, key, fixtures = sys.argv[1], sys.argv[2], sys.argv[3]
client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
recorded = json.load(open(f"{fixtures}/json-thinking.json"))

# plain: thinking with its signature, as recorded
m = client.messages.create(
    model="claude-sonnet-4-5", max_tokens=2048,
    thinking={"type": "enabled", "budget_tokens": 1024},
    messages=[{"role": "user", "content": "How do I cross the street?"}],
)
assert m.content[0].type == "thinking", m.content
assert m.content[0].signature == recorded["content"][0]["signature"]
assert m.content[0].thinking == recorded["content"][0]["thinking"]
assert m.content[1].text == recorded["content"][1]["text"]

# streamed: thinking, its signature, then text
with client.messages.stream(
    model="claude-sonnet-4-5", max_tokens=2048,
    thinking={"type": "enabled", "budget_tokens": 1024},
    messages=[{"role": "user", "content": "stream thinking"}],
) as s:
    final = s.get_final_message()
kinds = [b.type for b in final.content]
assert kinds == ["thinking", "text"], kinds
assert final.content[0].signature, "the signature_delta arrived"
assert final.stop_reason == "end_turn", final.stop_reason

# streamed tool use: two calls, arguments cut mid-token
with client.messages.stream(
    model="claude-sonnet-4-5", max_tokens=1024,
    messages=[{"role": "user", "content": "stream tools"}],
) as s:
    final = s.get_final_message()
uses = [b for b in final.content if b.type == "tool_use"]
assert len(uses) == 2 and all(isinstance(u.input, dict) and u.input for u in uses), uses
assert final.stop_reason == "tool_use"
print("ok")
