"""Grounded answers through the official `openai` package, unmodified: the
`retrieval` extension goes in `extra_body`, and the citations come back in
the response's and the first stream chunk's extra fields.

Usage: openai_sdk_retrieval_check.py BASE_URL   (e.g. http://127.0.0.1:8080/v1)
"""

import json
import sys
import time
import urllib.request

from openai import OpenAI

MODEL = "smollm2-135m-instruct"
DOCUMENTS = [
    {"id": "refunds", "format": "markdown",
     "content": "# Refunds\n\nRefunds are paid back to the original card within fourteen days."},
    {"id": "shipping", "format": "markdown",
     "content": "# Shipping\n\nParcels leave the Rotterdam warehouse every weekday before noon."},
]


def call(base_url: str, method: str, path: str, body=None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base_url + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


def main(base_url: str) -> None:
    call(base_url, "POST", "/collections", {"name": "help"})
    job = call(base_url, "POST", "/collections/help/documents", {"documents": DOCUMENTS})
    for _ in range(600):
        job = call(base_url, "GET", f"/ingestion_jobs/{job['id']}")
        if job["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.1)
    assert job["status"] == "succeeded", job

    client = OpenAI(base_url=base_url, api_key="not-needed", max_retries=0)
    question = [{"role": "user", "content": "How long until my refund arrives?"}]
    retrieval = {"retrieval": {"collection": "help", "top_k": 1}}

    whole = client.chat.completions.create(
        model=MODEL, messages=question, max_tokens=16, temperature=0, extra_body=retrieval
    )
    citations = whole.model_extra["citations"]
    assert [c["document_id"] for c in citations] == ["refunds"], citations
    assert citations[0]["index"] == 1 and citations[0]["title"] == "Refunds", citations
    assert whole.choices[0].message.content, whole

    stream = client.chat.completions.create(
        model=MODEL, messages=question, max_tokens=16, stream=True, extra_body=retrieval
    )
    chunks = list(stream)
    first = chunks[0].model_extra.get("citations")
    assert first and first[0]["document_id"] == "refunds", chunks[0]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text, "no answer streamed"

    print("openai SDK retrieval checks passed")


if __name__ == "__main__":
    main(sys.argv[1])
