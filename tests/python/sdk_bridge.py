"""The openai Python SDK's Responses API through the gateway to a chat-only
upstream (no_responses: true; tests/dialects.rs): plain, streamed (events
and the SDK's helper), a function call, and what the bridge refuses.
Usage: sdk_bridge.py BASE_URL."""
import sys

import openai

client = openai.OpenAI(base_url=sys.argv[1], api_key="local", max_retries=0)

r = client.responses.create(model="m", instructions="Be brief.", input="hi")
assert r.object == "response" and r.status == "completed", r
assert r.output_text == "Hello from the mock", r.output_text
assert r.usage.input_tokens == 5 and r.usage.output_tokens == 3, r.usage

types, text = [], ""
for ev in client.responses.create(model="m", input="stream", stream=True):
    types.append(ev.type)
    if ev.type == "response.output_text.delta":
        text += ev.delta
assert text == "tok0 tok1 tok2 ", (text, types)
assert types[:2] == ["response.created", "response.in_progress"], types
assert types[-1] == "response.completed", types
with client.responses.stream(model="m", input="stream") as s:
    final = s.get_final_response()
assert final.output_text == "tok0 tok1 tok2 ", final
assert final.usage.output_tokens == 3, final.usage

tools = [{"type": "function", "name": "get_weather", "description": "Weather",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
r = client.responses.create(model="m", input="tool", tools=tools)
call = [o for o in r.output if o.type == "function_call"][0]
assert call.name == "get_weather" and call.arguments == '{"city":"Paris"}' and call.call_id == "call_w", call
# the next turn carries the call and its output
r = client.responses.create(model="m", tools=tools, input=[
    {"role": "user", "content": "tool"},
    {"type": "function_call", "call_id": "call_w", "name": "get_weather", "arguments": '{"city":"Paris"}'},
    {"type": "function_call_output", "call_id": "call_w", "output": "18C"}])
assert r.output_text == "It is 18C", r.output_text

try:
    client.responses.create(model="m", input="again", previous_response_id="resp_1")
    raise AssertionError("previous_response_id cannot be bridged")
except openai.BadRequestError as e:
    assert "previous_response_id" in str(e), e
print("sdk_bridge: ok")
