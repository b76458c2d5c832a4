"""The official `openai` package asking the local model for structured output.

Usage: openai_sdk_structured_check.py BASE_URL
The server serves the default local model (SmolLM2-135M-Instruct), whose
answers Switchyard keeps to a grammar built from `response_format`.
"""

import concurrent.futures
import json
import sys

import jsonschema
import openai
from openai import OpenAI
from pydantic import BaseModel

MODEL = "smollm2-135m-instruct"

# Nested objects, an array, enums, integers, booleans, required fields;
# strings are bounded so that a sampled answer cannot run on forever.
PLACE = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "kind": {"enum": ["city", "river", "mountain"]},
        "population": {"type": "integer", "minimum": 0},
        "tags": {
            "type": "array",
            "items": {"type": "string", "maxLength": 20},
            "maxItems": 3,
        },
        "location": {
            "type": "object",
            "properties": {
                "country": {"type": "string", "maxLength": 40},
                "coastal": {"type": "boolean"},
                "climate": {"enum": ["cold", "mild", "hot"]},
            },
            "required": ["country", "coastal", "climate"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "kind", "population", "tags", "location"],
    "additionalProperties": False,
}

QUESTIONS = [
    "Describe Paris.",
    "Describe the river Nile.",
    "Describe Mount Everest.",
    "Describe Oslo.",
    "Describe the Danube.",
]


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather of a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 30},
                    "unit": {"enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The local time in a time zone",
            "parameters": {
                "type": "object",
                "properties": {"zone": {"type": "string", "maxLength": 30}},
                "required": ["zone"],
                "additionalProperties": False,
            },
        },
    },
]


class Capital(BaseModel):
    country: str
    capital: str


def sampled_place(client: OpenAI, index: int) -> str:
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]}],
        temperature=0.8,
        max_tokens=400,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "place", "strict": True, "schema": PLACE},
        },
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "stop", (choice.finish_reason, choice.message.content)
    return choice.message.content


def main(base_url: str) -> None:
    client = OpenAI(base_url=base_url, api_key="not-needed", max_retries=0)

    # 50 sampled answers, four at a time: every one parses and validates.
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda i: sampled_place(client, i), range(50)))
    for text in answers:
        jsonschema.validate(json.loads(text), PLACE)
    assert len(set(answers)) > 1, "temperature 0.8 sampled one answer 50 times"

    # tool_choice "required" with two tools on a model whose template has
    # no tools: every answer is one valid call of one of them.
    parameters = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for index in range(20):
        answer = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": ["Weather in Oslo?", "Time in Tokyo?"][index % 2]}],
            tools=TOOLS,
            tool_choice="required",
            temperature=0.8,
            max_tokens=120,
        )
        choice = answer.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        calls = choice.message.tool_calls
        assert len(calls) == 1, calls
        schema = parameters[calls[0].function.name]
        jsonschema.validate(json.loads(calls[0].function.arguments), schema)

    # The SDK's own structured-output helper: a pydantic model becomes a
    # strict schema, the answer comes back parsed.
    parsed = client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        response_format=Capital,
        temperature=0,
        max_tokens=100,
    )
    capital = parsed.choices[0].message.parsed
    assert isinstance(capital, Capital), parsed
    assert "Paris" in capital.capital, capital

    # JSON mode: any object, streamed as well.
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Give me a JSON object about a cat."}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=200,
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert isinstance(json.loads(text), dict), text

    try:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "x"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "broken", "schema": {"$ref": "#/$defs/missing"}},
            },
        )
        raise AssertionError("an unusable schema was accepted")
    except openai.BadRequestError as error:
        assert error.status_code == 400, error
        assert error.param == "response_format.json_schema.schema", error.body

    print("openai SDK structured output checks passed")


if __name__ == "__main__":
    main(sys.argv[1])
