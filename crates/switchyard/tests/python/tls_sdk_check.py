"""The official `openai` and `anthropic` packages against Switchyard over HTTPS.

Usage: tls_sdk_check.py BASE_URL CA_PEM [CLIENT_CERT_PEM CLIENT_KEY_PEM]

The server's certificate is trusted through CA_PEM only (a test CA). With a
client certificate, the check also makes sure a client without one is refused
(the server requires mutual TLS then).
Exits non-zero with a message on the first mismatch.
"""

import ssl
import sys

import anthropic
import openai

MODEL = "chat"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def context(ca: str, cert: str | None, key: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def main(base_url: str, ca: str, cert: str | None, key: str | None) -> None:
    http = openai.DefaultHttpxClient(verify=context(ca, cert, key))
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="not-needed", max_retries=0, http_client=http)
    answer = client.chat.completions.create(model=MODEL, messages=QUESTION)
    assert answer.choices[0].message.content, answer
    streamed = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(model=MODEL, messages=QUESTION, stream=True)
        if chunk.choices
    )
    assert streamed == answer.choices[0].message.content, (streamed, answer)

    claude = anthropic.Anthropic(
        base_url=base_url, api_key="not-needed", max_retries=0,
        http_client=anthropic.DefaultHttpxClient(verify=context(ca, cert, key)),
    )
    message = claude.messages.create(model=MODEL, max_tokens=32, messages=QUESTION)
    assert message.content and message.content[0].text, message

    if cert:
        # The same CA trusted, no certificate shown: refused at the handshake.
        bare = openai.OpenAI(
            base_url=f"{base_url}/v1", api_key="not-needed", max_retries=0,
            http_client=openai.DefaultHttpxClient(verify=context(ca, None, None)),
        )
        try:
            bare.chat.completions.create(model=MODEL, messages=QUESTION)
        except openai.APIConnectionError:
            pass
        else:
            raise AssertionError("a client without a certificate was served")
    print("tls sdk check passed")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], args[1], args[2] if len(args) > 2 else None, args[3] if len(args) > 3 else None)
