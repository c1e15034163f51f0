"""The openai SDK streams from an upstream that cannot stream (no_stream: true):
the gateway replays the JSON answer as SSE. Usage: sdk_synth.py BASE_URL."""
import sys

import openai

client = openai.OpenAI(base_url=sys.argv[1], api_key="local", max_retries=0)

# plain iteration
text, finish = "", None
for chunk in client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True):
    assert chunk.object == "chat.completion.chunk"
    for c in chunk.choices:
        text += c.delta.content or ""
        finish = c.finish_reason or finish
assert text == "Hello there" and finish == "stop", (text, finish)

# the SDK's stream helper, with tool calls and usage
with client.chat.completions.stream(
    model="tools", messages=[{"role": "user", "content": "x"}], stream_options={"include_usage": True}
) as s:
    final = s.get_final_completion()
call = final.choices[0].message.tool_calls[0]
assert call.id == "call_1" and call.function.name == "get_weather", call
assert call.function.arguments == '{"city":"Paris"}', call.function.arguments
assert final.choices[0].finish_reason == "tool_calls"
assert final.usage is not None and final.usage.total_tokens == 8, final.usage
# the Responses API: every event a real stream has, and the SDK's helper
types, text = [], ""
for ev in client.responses.create(model="m", input="x", stream=True):
    types.append(ev.type)
    if ev.type == "response.output_text.delta":
        text += ev.delta
assert text == "Hello there", (text, types)
for t in ["response.created", "response.in_progress", "response.output_item.added",
          "response.content_part.added", "response.output_text.delta", "response.output_text.done",
          "response.content_part.done", "response.output_item.done", "response.completed"]:
    assert t in types, (t, types)
assert types.index("response.output_item.added") < types.index("response.output_text.delta") < types.index("response.completed")
with client.responses.stream(model="m", input="x") as s:
    final = s.get_final_response()
assert final.output_text == "Hello there" and final.status == "completed", final
args = [ev.arguments for ev in client.responses.create(model="tools", input="x", stream=True)
        if ev.type == "response.function_call_arguments.done"]
assert args == ['{"city":"Paris"}'], args
print("sdk_synth: ok")
