// The official @anthropic-ai/sdk against the gateway's Messages API, served
// onto an OpenAI-compatible mock (the same mock as sdk_messages.py).
// Usage: node messages.mjs BASE_URL KEY
import Anthropic from "@anthropic-ai/sdk";
import assert from "node:assert/strict";

const [base, key] = process.argv.slice(2);
const client = new Anthropic({ baseURL: base, apiKey: key, maxRetries: 0 });
const model = "claude-test";

const m = await client.messages.create({
  model, max_tokens: 64, system: "Be brief.", messages: [{ role: "user", content: "hi" }],
});
assert.equal(m.content[0].text, "Hello from the mock");
assert.equal(m.stop_reason, "end_turn");

const stream = client.messages.stream({ model, max_tokens: 64, messages: [{ role: "user", content: "slow" }] });
const pieces = [];
stream.on("text", (t) => pieces.push(t));
const final = await stream.finalMessage();
assert.ok(pieces.length >= 3, String(pieces.length));
assert.equal(pieces.join(""), "tok0 tok1 tok2 tok3 ");
assert.equal(final.content[0].text, "tok0 tok1 tok2 tok3 ");

const tools = [{ name: "get_weather", description: "Weather in a city",
  input_schema: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } }];
const asked = await client.messages.stream({ model, max_tokens: 128, tools, messages: [{ role: "user", content: "tool" }] }).finalMessage();
assert.equal(asked.stop_reason, "tool_use");
const use = asked.content.find((b) => b.type === "tool_use");
assert.deepEqual(use.input, { city: "Paris" });
const answer = await client.messages.create({ model, max_tokens: 128, tools, messages: [
  { role: "user", content: "tool" },
  { role: "assistant", content: asked.content },
  { role: "user", content: [{ type: "tool_result", tool_use_id: use.id, content: "18C, sunny" }] },
] });
assert.equal(answer.content[0].text, "It is 18C and sunny in Paris.");

const n = await client.messages.countTokens({ model, messages: [{ role: "user", content: "hello there" }] });
assert.ok(n.input_tokens > 0);

await assert.rejects(
  new Anthropic({ baseURL: base, apiKey: "wrong-key-000000000", maxRetries: 0 }).messages.create({
    model, max_tokens: 8, messages: [{ role: "user", content: "hi" }] }),
  (e) => e instanceof Anthropic.AuthenticationError && e.status === 401,
);
await assert.rejects(
  client.messages.create({ model: "no-such-model", max_tokens: 8, messages: [{ role: "user", content: "hi" }] }),
  (e) => e instanceof Anthropic.NotFoundError && e.error.error.type === "not_found_error",
);
// before the 429 below cools the only key
await assert.rejects(
  client.messages.create({ model, max_tokens: 8, messages: [{ role: "user", content: "overloaded" }] }),
  (e) => e instanceof Anthropic.OverloadedError && e.status === 529 && e.error?.error?.type === "overloaded_error",
);
await assert.rejects(
  client.messages.create({ model, max_tokens: 8, messages: [{ role: "user", content: "busy" }] }),
  (e) => e instanceof Anthropic.RateLimitError && e.headers.get("retry-after") !== null,
);
console.log("node messages: ok");
