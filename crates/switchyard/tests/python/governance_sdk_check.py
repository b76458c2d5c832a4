"""The official SDKs against a gateway with keys on: a key works, a wrong
key is an AuthenticationError, a model outside the key's list is a
PermissionDeniedError, and a spent rate limit is a RateLimitError, each the
SDK's own exception class, as applications catch them.

usage: governance_sdk_check.py BASE_URL KEY   (the key: rpm 2, model "priced")
"""

import sys

import anthropic
import openai

base, key = sys.argv[1], sys.argv[2]

client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
answer = client.chat.completions.create(
    model="priced", messages=[{"role": "user", "content": "hello"}]
)
assert answer.choices[0].message.content, answer

try:
    openai.OpenAI(base_url=f"{base}/v1", api_key="sy-key_0123456789abcdef.nope", max_retries=0).chat.completions.create(
        model="priced", messages=[{"role": "user", "content": "hello"}]
    )
    raise SystemExit("a wrong key was accepted")
except openai.AuthenticationError as error:
    assert error.status_code == 401
    assert error.code == "invalid_api_key", error.body

try:
    client.chat.completions.create(model="other", messages=[{"role": "user", "content": "hello"}])
    raise SystemExit("a model outside the key's list was served")
except openai.PermissionDeniedError as error:
    assert error.status_code == 403

claude_style = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
message = claude_style.messages.create(
    model="priced", max_tokens=16, messages=[{"role": "user", "content": "hello"}]
)
assert message.content[0].text, message

try:
    anthropic.Anthropic(base_url=base, api_key="sy-key_0123456789abcdef.nope", max_retries=0).messages.create(
        model="priced", max_tokens=16, messages=[{"role": "user", "content": "hello"}]
    )
    raise SystemExit("a wrong key was accepted")
except anthropic.AuthenticationError as error:
    assert error.status_code == 401

# Two requests made; the third in the minute is refused.
try:
    client.chat.completions.create(model="priced", messages=[{"role": "user", "content": "hello"}])
    raise SystemExit("the rate limit did not hold")
except openai.RateLimitError as error:
    assert error.status_code == 429
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert int(error.response.headers["retry-after"]) > 0

print("governance SDK checks passed")
