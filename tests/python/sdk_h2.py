"""The real `openai` Python SDK on an HTTP/2 transport (httpx with h2)
against a running Switchyard's TLS listener, in front of the mock upstream.
Usage: python3 sdk_h2.py BASE_URL CA_FILE. Exits non-zero on failure."""
import ssl
import sys

import openai

try:  # the SDK's own transport: httpx2 in newer releases, httpx before
    import httpx2 as httpx
except ImportError:
    import httpx

base, ca = sys.argv[1], sys.argv[2]
http = httpx.Client(http2=True, verify=ssl.create_default_context(cafile=ca))
client = openai.OpenAI(base_url=base, api_key="unused-locally", http_client=http, max_retries=0)
messages = [{"role": "user", "content": "hi"}]

r = client.chat.completions.create(model="m", messages=messages)
assert r.choices[0].message.content == "hi from mock", r

text, finish = "", None
for chunk in client.chat.completions.create(model="m", messages=messages, stream=True):
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
assert text == "".join(f"tok{i} " for i in range(12)), text
assert finish == "stop", finish

# the same client's calls went over h2
resp = http.post(base + "/chat/completions", json={"model": "m", "messages": messages})
assert resp.status_code == 200, resp.text
assert resp.http_version == "HTTP/2", resp.http_version
print("ok")
