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
print("sdk_synth: ok")
