#!/usr/bin/env python3
"""The official `openai` Python client against the corestream embedding service.

Usage: python3 scripts/openai_client_check.py http://127.0.0.1:8080

`models.list()` lists the one served model.
With the client's defaults (it asks for base64 and decodes it itself), then with
encoding_format="float": same vectors, unit length, input order, usage counted; a single
string input; `dimensions` below the model's gives that many leading dimensions, unit length
again, and over it is a 400 (openai.BadRequestError); an
over-long input a 413 (openai.APIStatusError). Prints one JSON line at the end with the texts,
the decoded vectors and the model id, for serve/tests/service to compare with the unbatched
result. Exits non-zero on any mismatch.
"""
import json
import math
import sys

import openai
from openai import OpenAI

base = sys.argv[1].rstrip("/")
client = OpenAI(base_url=base + "/v1", api_key="not-needed", max_retries=0, timeout=60)
texts = [
    "A man is playing a guitar.",
    "Someone plays the guitar.",
    "The stock market fell sharply today.",
]

listed = client.models.list()
assert len(listed.data) == 1 and listed.data[0].object == "model", listed

default = client.embeddings.create(model="any-model", input=texts)  # base64 on the wire
floats = client.embeddings.create(model="any-model", input=texts, encoding_format="float")
assert default.object == "list", default.object
assert listed.data[0].id == default.model, (listed.data[0].id, default.model)
assert [d.index for d in default.data] == [0, 1, 2], [d.index for d in default.data]
assert all(d.object == "embedding" for d in default.data)
assert default.usage.prompt_tokens > 0 and default.usage.total_tokens == default.usage.prompt_tokens
dim = len(default.data[0].embedding)
for a, b in zip(default.data, floats.data):
    assert len(a.embedding) == len(b.embedding) == dim
    diff = max(abs(x - y) for x, y in zip(a.embedding, b.embedding))
    assert diff <= 1e-6, f"base64 vs float: {diff}"
    norm = math.sqrt(sum(x * x for x in a.embedding))
    assert abs(norm - 1.0) < 1e-4, norm

single = client.embeddings.create(model="any-model", input=texts[0])
assert len(single.data) == 1
diff = max(abs(x - y) for x, y in zip(single.data[0].embedding, default.data[0].embedding))
assert diff <= 1e-4, f"single vs batch: {diff}"

half = max(dim // 2, 1)
short = client.embeddings.create(model="any-model", input=texts[0], dimensions=half)
cut = default.data[0].embedding[:half]
scale = math.sqrt(sum(x * x for x in cut))
assert len(short.data[0].embedding) == half, len(short.data[0].embedding)
diff = max(abs(x - y / scale) for x, y in zip(short.data[0].embedding, cut))
assert diff <= 1e-4, f"dimensions={half}: {diff}"

try:
    client.embeddings.create(model="any-model", input=texts, dimensions=dim + 1)
    raise SystemExit("dimensions != model's was accepted")
except openai.BadRequestError as e:
    assert "dimensions" in str(e), str(e)

try:
    client.embeddings.create(model="any-model", input="word " * 5000)
    raise SystemExit("an over-long input was accepted")
except openai.APIStatusError as e:
    assert e.status_code == 413, e.status_code

print("openai", openai.__version__, "client: ok", file=sys.stderr)
print(json.dumps({
    "texts": texts,
    "embeddings": [d.embedding for d in default.data],
    "model": default.model,
}))
