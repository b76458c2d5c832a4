"""The official `openai` package against a running Switchyard, unmodified.

Usage: openai_sdk_check.py BASE_URL   (e.g. http://127.0.0.1:8080/v1)
Exits non-zero with a message on the first mismatch.
"""

import sys

import openai
from openai import OpenAI

MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


def main(base_url: str) -> None:
    client = OpenAI(base_url=base_url, api_key="not-needed", max_retries=0)

    whole = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0)
    answer = whole.choices[0].message.content
    assert "Paris" in answer, f"unexpected answer {answer!r}"
    assert whole.object == "chat.completion"
    assert whole.choices[0].finish_reason == "stop"
    usage = whole.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage

    stream = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, streamed_usage, chunks = "", None, None, 0
    for chunk in stream:
        chunks += 1
        assert chunk.object == "chat.completion.chunk"
        if chunk.choices:
            choice = chunk.choices[0]
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        if chunk.usage is not None:
            streamed_usage = chunk.usage
    assert text == answer, f"stream {text!r} != whole {answer!r}"
    assert finish == "stop", finish
    assert streamed_usage is not None, "no usage chunk"
    assert streamed_usage.completion_tokens == usage.completion_tokens
    assert chunks >= 4, chunks

    limited = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me a long story."}],
        max_tokens=5,
        temperature=0,
    )
    assert limited.choices[0].finish_reason == "length"
    assert limited.usage.completion_tokens == 5

    ids = [model.id for model in client.models.list()]
    assert MODEL in ids, ids

    try:
        client.chat.completions.create(model="no-such-model", messages=QUESTION)
        raise AssertionError("an unknown model was served")
    except openai.NotFoundError as error:
        assert error.status_code == 404
        assert error.code == "model_not_found", error.body

    try:
        client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=7)
        raise AssertionError("temperature 7 was accepted")
    except openai.BadRequestError as error:
        assert error.status_code == 400
        assert error.param == "temperature", error.body

    vectors = client.embeddings.create(
        model="all-minilm-l6-v2",
        input=["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome."],
    )
    assert vectors.object == "list"
    assert [d.index for d in vectors.data] == [0, 1, 2]
    first, second, third = (d.embedding for d in vectors.data)
    assert len(first) == 384, len(first)
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))
    assert dot(first, second) > dot(first, third) + 0.5, (dot(first, second), dot(first, third))
    assert vectors.usage.prompt_tokens > 0

    # The SDK asks for base64 by default when numpy is around and decodes it;
    # ask for it explicitly so the path is always exercised.
    encoded = client.embeddings.create(
        model="all-minilm-l6-v2", input="A man is eating food.", encoding_format="base64"
    )
    raw = encoded.data[0].embedding
    if isinstance(raw, str):
        import base64
        import struct

        data = base64.b64decode(raw)
        raw = list(struct.unpack(f"<{len(data) // 4}f", data))
    assert len(raw) == 384
    assert max(abs(a - b) for a, b in zip(raw, first)) < 1e-5

    print("openai SDK checks passed")


if __name__ == "__main__":
    main(sys.argv[1])
