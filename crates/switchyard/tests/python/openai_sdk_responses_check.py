"""The official `openai` package against Switchyard's Responses API, unmodified.

Usage: openai_sdk_responses_check.py BASE_URL
The server runs the responses test configuration (see tests/responses.rs):
`remote`, an OpenAI-format stand-in that echoes the last user message (and
calls the first tool it is offered), and `smollm2-135m-instruct`, the local
model.
"""

import json
import sys

import openai
from openai import OpenAI
from pydantic import BaseModel


class Capital(BaseModel):
    country: str
    capital: str


def main(base_url: str) -> None:
    client = OpenAI(base_url=base_url, api_key="not-needed", max_retries=0)

    # A whole response, then a second turn that continues it: the stand-in
    # echoes the newest user text, and the history is Switchyard's to keep.
    first = client.responses.create(model="remote", input="My name is Ada.", instructions="Be brief.")
    assert first.status == "completed", first
    assert first.output_text == "echo: My name is Ada.", first.output_text
    assert first.id.startswith("resp_"), first.id
    assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0, first.usage
    second = client.responses.create(
        model="remote", input="What is my name?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id, second
    assert second.output_text == "echo: What is my name?", second.output_text

    # Stored: retrieved as served, its input listed (history included).
    again = client.responses.retrieve(second.id)
    assert again.output_text == second.output_text, again
    items = client.responses.input_items.list(second.id, order="asc")
    texts = [item.content[0].text for item in items.data if item.type == "message"]
    assert texts == ["My name is Ada.", "echo: My name is Ada.", "What is my name?"], texts

    # Streamed, with the SDK's stream helper: text deltas add up to the
    # final response, which is stored.
    with client.responses.stream(model="remote", input="Stream this please") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "echo: Stream this please", deltas
    assert final.output_text == "echo: Stream this please", final
    assert client.responses.retrieve(final.id).output_text == final.output_text

    # `stream=True`: the raw events, numbered in order.
    events = list(client.responses.create(model="remote", input="Raw events", stream=True))
    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"], types
    assert types[-1] == "response.completed", types
    assert [event.sequence_number for event in events] == list(range(len(events)))

    # Function tools round trip: the stand-in calls the first tool offered;
    # the output goes back as an item of the next turn.
    tools = [{
        "type": "function",
        "name": "lookup",
        "description": "Looks a word up.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    }]
    called = client.responses.create(model="remote", input="define gateway", tools=tools)
    calls = [item for item in called.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "lookup", called.output
    assert json.loads(calls[0].arguments) == {"query": "define gateway"}, calls[0].arguments
    answered = client.responses.create(
        model="remote",
        previous_response_id=called.id,
        tools=tools,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "a door for models"}],
    )
    assert answered.output_text == "tool said: a door for models", answered.output_text

    # Structured output parsed by the SDK, on the local model (a grammar
    # keeps its answer to the schema). Greedy: sampled, the small model
    # sometimes rambles inside a string until the token limit cuts the JSON.
    parsed = client.responses.parse(
        model="smollm2-135m-instruct",
        input="Give the capital of France.",
        text_format=Capital,
        max_output_tokens=60,
        temperature=0,
    )
    assert isinstance(parsed.output_parsed, Capital), parsed

    # Deleted: gone for retrieve and for continuing.
    deleted = client.responses.delete(first.id)
    try:
        client.responses.retrieve(first.id)
        raise AssertionError("a deleted response was found")
    except openai.NotFoundError as error:
        assert error.status_code == 404, error
    try:
        client.responses.create(model="remote", input="again", previous_response_id=first.id)
        raise AssertionError("a deleted response was continued")
    except openai.NotFoundError as error:
        assert error.code == "previous_response_not_found", error.body
    del deleted

    # A conversation: items first, then responses created in it read them
    # and add their own.
    conversation = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "Remember: the code is 42."}],
        metadata={"topic": "codes"},
    )
    assert conversation.id.startswith("conv_"), conversation
    assert conversation.metadata == {"topic": "codes"}, conversation
    reply = client.responses.create(model="remote", input="What is the code?", conversation=conversation.id)
    assert reply.conversation.id == conversation.id, reply
    listed = client.conversations.items.list(conversation.id, order="asc")
    texts = [item.content[0].text for item in listed.data]
    assert texts == ["Remember: the code is 42.", "What is the code?", "echo: What is the code?"], texts
    added = client.conversations.items.create(
        conversation.id, items=[{"type": "message", "role": "user", "content": "One more thing."}]
    )
    note = added.data[0]
    assert client.conversations.items.retrieve(note.id, conversation_id=conversation.id).id == note.id
    client.conversations.items.delete(note.id, conversation_id=conversation.id)
    updated = client.conversations.update(conversation.id, metadata={"topic": "changed"})
    assert updated.metadata == {"topic": "changed"}, updated
    assert client.conversations.retrieve(conversation.id).metadata == {"topic": "changed"}
    client.conversations.delete(conversation.id)
    try:
        client.conversations.retrieve(conversation.id)
        raise AssertionError("a deleted conversation was found")
    except openai.NotFoundError:
        pass

    # Mistakes name their field.
    try:
        client.responses.create(model="remote", input="x", tools=[{"type": "web_search"}])
        raise AssertionError("an unserved tool type was accepted")
    except openai.BadRequestError as error:
        assert error.param == "tools[0].type", error.body

    print("openai SDK responses checks passed")


if __name__ == "__main__":
    main(sys.argv[1])
