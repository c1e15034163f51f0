// The official @anthropic-ai/sdk through the gateway to a kind: anthropic
// mock (tests/dialects.rs) answering with recorded Anthropic answers.
// Usage: node native.mjs BASE_URL KEY FIXTURES_DIR
import Anthropic from "@anthropic-ai/sdk";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

const [base, key, fixtures] = process.argv.slice(2);
const client = new Anthropic({ baseURL: base, apiKey: key, maxRetries: 0 });
const recorded = JSON.parse(readFileSync(`${fixtures}/json-thinking.json`, "utf8"));
const thinking = { type: "enabled", budget_tokens: 1024 };

const m = await client.messages.create({
  model: "claude-sonnet-4-5", max_tokens: 2048, thinking,
  messages: [{ role: "user", content: "How do I cross the street?" }],
});
assert.equal(m.content[0].type, "thinking");
assert.equal(m.content[0].signature, recorded.content[0].signature);
assert.equal(m.content[1].text, recorded.content[1].text);

const final = await client.messages.stream({
  model: "claude-sonnet-4-5", max_tokens: 2048, thinking,
  messages: [{ role: "user", content: "stream thinking" }],
}).finalMessage();
assert.deepEqual(final.content.map((b) => b.type), ["thinking", "text"]);
assert.ok(final.content[0].signature);

const tools = await client.messages.stream({
  model: "claude-sonnet-4-5", max_tokens: 1024, messages: [{ role: "user", content: "stream tools" }],
}).finalMessage();
const uses = tools.content.filter((b) => b.type === "tool_use");
assert.equal(uses.length, 2);
assert.equal(tools.stop_reason, "tool_use");
console.log("ok");
