"""The official `openai` package drives Switchyard's own tools, unmodified.

Usage: openai_sdk_tools_check.py BASE_URL
The server runs the tools test configuration (see tests/tools.rs): `calc`,
a stand-in scripted to call the calculator on 2^100 + 1 and then answer
with the result, and `plain`, which calls the first tool it is offered.
"""

import json
import sys

from openai import OpenAI

EXACT = "1267650600228229401496703205377"
MASTER = "sy-master-tools-test-0123456789"


def main(base_url: str) -> None:
    client = OpenAI(base_url=base_url, api_key=MASTER, max_retries=0)
    switchyard_calculator = {"type": "switchyard", "name": "calculator"}

    # A Switchyard tool: the SDK passes the entry through; the loop runs it.
    whole = client.chat.completions.create(
        model="calc",
        messages=[{"role": "user", "content": "What is 2^100 + 1?"}],
        tools=[switchyard_calculator],
    )
    assert EXACT in whole.choices[0].message.content, whole
    assert whole.choices[0].finish_reason == "stop", whole

    streamed = client.chat.completions.create(
        model="calc",
        messages=[{"role": "user", "content": "What is 2^100 + 1?"}],
        tools=[switchyard_calculator],
        stream=True,
        stream_options={"include_usage": True},
    )
    text = ""
    usage = None
    for chunk in streamed:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    assert EXACT in text, text
    assert usage is not None and usage.prompt_tokens > 0, usage

    # The client's own function tool still comes back to the client, and
    # its result goes up on the next turn as before.
    lookup = {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
    }
    asked = client.chat.completions.create(
        model="plain",
        messages=[{"role": "user", "content": "Find the code"}],
        tools=[lookup, switchyard_calculator],
    )
    call = asked.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup", asked
    assert json.loads(call.function.arguments) == {"query": "Find the code"}
    answered = client.chat.completions.create(
        model="plain",
        messages=[
            {"role": "user", "content": "Find the code"},
            asked.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "4711"},
        ],
        tools=[lookup, switchyard_calculator],
    )
    assert answered.choices[0].message.content == "tool said: 4711", answered

    # The Responses API streams the calls Switchyard runs as items, in
    # OpenAI's shape for server-run (MCP) tools, which the SDK types.
    kinds = []
    final = None
    with client.responses.stream(
        model="calc", input="What is 2^100 + 1?", tools=[switchyard_calculator]
    ) as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_response()
    expected = [
        "response.output_item.added",
        "response.mcp_call.in_progress",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.completed",
        "response.output_item.done",
    ]
    start = kinds.index("response.mcp_call.in_progress") - 1
    assert kinds[start : start + len(expected)] == expected, kinds
    call, message = final.output[0], final.output[1]
    assert call.type == "mcp_call" and call.server_label == "switchyard", call
    assert call.name == "calculator" and EXACT in call.output, call
    assert call.status == "completed", call
    assert EXACT in message.content[0].text, final
    assert EXACT in final.output_text, final
    print("TOOLS OK")


if __name__ == "__main__":
    main(sys.argv[1])
