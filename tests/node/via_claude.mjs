// The openai Node SDK through the gateway to a kind: anthropic mock
// (tests/dialects.rs): plain, streamed, tool calls.
// Usage: node via_claude.mjs BASE_URL KEY FIXTURES_DIR
import OpenAI from "openai";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

const [base, key, fixtures] = process.argv.slice(2);
const client = new OpenAI({ baseURL: base, apiKey: key, maxRetries: 0 });
const recorded = (n) => JSON.parse(readFileSync(`${fixtures}/${n}`, "utf8"));
const ask = (text, extra = {}) => client.chat.completions.create({
  model: "claude-sonnet-4-5", messages: [{ role: "user", content: text }], ...extra,
});

const r = await ask("plain text");
assert.equal(r.choices[0].message.content, recorded("json-text.json").content[0].text);

let text = "";
for await (const c of await ask("stream text", { stream: true })) {
  text += c.choices[0]?.delta?.content ?? "";
}
assert.ok(text.trim().length > 0);

const tools = [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: {} } } }];
const t = await ask("tools", { tools });
assert.equal(t.choices[0].finish_reason, "tool_calls");
const use = recorded("json-tool-use.json").content.find((b) => b.type === "tool_use");
assert.deepEqual(JSON.parse(t.choices[0].message.tool_calls[0].function.arguments), use.input);

const args = {};
for await (const c of await ask("stream tools", { tools, stream: true })) {
  for (const call of c.choices[0]?.delta?.tool_calls ?? []) {
    args[call.index] = (args[call.index] ?? "") + (call.function?.arguments ?? "");
  }
}
assert.equal(Object.keys(args).length, 2);
for (const a of Object.values(args)) assert.equal(typeof JSON.parse(a), "object");
console.log("ok");
