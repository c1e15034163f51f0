"""Checks the gateway's stream→JSON aggregation against the openai SDK's own
stream accumulator (ChatCompletionStreamState), for every recorded fixture.
Usage: sdk_aggregate.py BASE_URL FIXTURE_DIR (the mock replays the fixture named by `model`)."""
import json
import pathlib
import sys

import openai
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

base, fixtures = sys.argv[1], pathlib.Path(sys.argv[2])
client = openai.OpenAI(base_url=base, api_key="local", max_retries=0)


def sdk_final(path):
    state = ChatCompletionStreamState()
    for block in path.read_text().split("\n\n"):
        block = block.strip()
        if not block.startswith("data: ") or block == "data: [DONE]":
            continue
        state.handle_chunk(ChatCompletionChunk.model_validate(json.loads(block[6:])))
    return state.current_completion_snapshot


checked = 0
for path in sorted(fixtures.glob("*.sse")):
    want = sdk_final(path)
    got = client.chat.completions.create(model=path.stem, messages=[{"role": "user", "content": "x"}])
    assert got.id == want.id and got.model == want.model and got.created == want.created, path.name
    assert got.system_fingerprint == want.system_fingerprint, path.name
    assert len(got.choices) == len(want.choices), path.name
    for g, w in zip(sorted(got.choices, key=lambda c: c.index), sorted(want.choices, key=lambda c: c.index)):
        assert g.finish_reason == w.finish_reason, (path.name, g.finish_reason, w.finish_reason)
        assert g.message.role == w.message.role, path.name
        assert g.message.content == w.message.content, (path.name, g.message.content, w.message.content)
        assert (g.message.refusal or None) == (w.message.refusal or None), (path.name, g.message.refusal, w.message.refusal)
        gt = [(t.id, t.type, t.function.name, t.function.arguments) for t in g.message.tool_calls or []]
        wt = [(t.id, t.type, t.function.name, t.function.arguments) for t in w.message.tool_calls or []]
        assert gt == wt, (path.name, gt, wt)
        glp = g.logprobs.model_dump() if g.logprobs else None
        wlp = w.logprobs.model_dump() if w.logprobs else None
        if wlp:
            assert glp["content"] == wlp["content"], path.name
            assert (glp.get("refusal") or None) == (wlp.get("refusal") or None), path.name
    if want.usage is not None:
        assert got.usage.model_dump() == want.usage.model_dump(), path.name
    checked += 1
assert checked == 12, checked
print(f"sdk_aggregate: {checked} fixtures match the SDK accumulator")
