"""The official `anthropic` package against Switchyard's /v1/messages, unmodified.

Usage: anthropic_sdk_check.py BASE_URL   (e.g. http://127.0.0.1:8080)
Exits non-zero with a message on the first mismatch.
"""

import sys

import anthropic

MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
# Current SDKs no longer take sampling parameters as arguments; the API still
# accepts them, so they travel in the body.
GREEDY = {"temperature": 0}


def main(base_url: str) -> None:
    client = anthropic.Anthropic(base_url=base_url, api_key="not-needed", max_retries=0)

    message = client.messages.create(
        model=MODEL, max_tokens=32, messages=QUESTION, extra_body=GREEDY,
        system="You are a helpful assistant.",
    )
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.id.startswith("msg_")
    text = "".join(block.text for block in message.content if block.type == "text")
    assert "Paris" in text, f"unexpected answer {text!r}"
    assert message.stop_reason == "end_turn", message.stop_reason
    assert message.usage.input_tokens > 10 and message.usage.output_tokens > 0, message.usage

    streamed = ""
    event_types = []
    with client.messages.stream(
        model=MODEL, max_tokens=32, messages=QUESTION, extra_body=GREEDY,
        system="You are a helpful assistant.",
    ) as stream:
        for event in stream:
            event_types.append(event.type)
        final = stream.get_final_message()
    streamed = "".join(block.text for block in final.content if block.type == "text")
    assert streamed == text, f"stream {streamed!r} != whole {text!r}"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == message.usage.output_tokens, final.usage
    # The same prompt again: the local engine reused its KV state, and
    # Anthropic's usage counts that as cache reads beside the rest.
    cached = final.usage.cache_read_input_tokens or 0
    assert cached > 10, final.usage
    assert final.usage.input_tokens + cached == message.usage.input_tokens, final.usage
    assert event_types[0] == "message_start", event_types
    assert "content_block_delta" in event_types or "text" in event_types, event_types
    assert event_types[-1] == "message_stop", event_types

    limited = client.messages.create(
        model=MODEL, max_tokens=5, extra_body=GREEDY,
        messages=[{"role": "user", "content": "Tell me a long story."}],
    )
    assert limited.stop_reason == "max_tokens", limited.stop_reason
    assert limited.usage.output_tokens == 5

    try:
        client.messages.create(model="no-such-model", max_tokens=5, messages=QUESTION)
        raise AssertionError("an unknown model was served")
    except anthropic.NotFoundError as error:
        assert error.status_code == 404
        assert error.body["type"] == "error", error.body
        assert error.body["error"]["type"] == "not_found_error", error.body

    try:
        client.messages.create(
            model=MODEL, max_tokens=5, messages=QUESTION, extra_body={"temperature": 1.5}
        )
        raise AssertionError("temperature 1.5 was accepted")
    except anthropic.BadRequestError as error:
        assert error.body["error"]["type"] == "invalid_request_error", error.body

    print("anthropic SDK checks passed")


if __name__ == "__main__":
    main(sys.argv[1])
