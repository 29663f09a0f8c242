"""Conformance of an OpenAI-compatible endpoint, judged by the official OpenAI Python SDK.

Run by gauntlet's conformance suite: SDK_BASE_URL (…/v1), SDK_API_KEY, SDK_MODEL and
SDK_FAULTS=1 when the endpoint is the simulator (it then also checks that each simulated
error maps to the SDK's own exception type), SDK_CHARSET_MODEL when a model's replies can be
asked in other scripts (`sim_charset`: the SDK must decode multi-byte streams whole). Prints one JSON object: check name -> "ok" or
the reason it failed.
"""
import json
import os
import sys

import openai

base = os.environ["SDK_BASE_URL"]
key = os.environ.get("SDK_API_KEY") or "sk-none"
model = os.environ.get("SDK_MODEL", "sim-model")
faults = os.environ.get("SDK_FAULTS") == "1"
charset_model = os.environ.get("SDK_CHARSET_MODEL")
# What is checked is what the SDK makes of each reply, not how fast it comes: the bound is
# generous (a router busy with a whole run's cases answered a stream after more than 20 s).
client = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=60)
results = {}


def check(name, fn):
    try:
        fn()
        results[name] = "ok"
    except Exception as e:  # report, never crash: gauntlet reads the JSON
        results[name] = f"{type(e).__name__}: {e}"[:400]


def plain():
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "conformance check"}], max_tokens=8)
    assert r.choices[0].message.role == "assistant", r
    assert r.choices[0].message.content, r
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, r.usage


def stream():
    chunks = list(client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "conformance stream"}], max_tokens=8,
        stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text, "no streamed content"
    usage = [c.usage for c in chunks if c.usage]
    assert usage and usage[-1].completion_tokens > 0, "no usage chunk"


def legacy():
    r = client.completions.create(model=model, prompt="conformance legacy", max_tokens=4)
    assert r.choices[0].text, r


def models():
    ids = [m.id for m in client.models.list()]
    assert ids, "empty model list"


def charset_stream(charset):
    def run():
        chunks = list(client.chat.completions.create(
            model=charset_model, messages=[{"role": "user", "content": "conformance 路由 🚦 مرحبا"}],
            max_tokens=16, stream=True, extra_body={"sim_charset": charset}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text, "no streamed content"
        assert "\ufffd" not in text, f"U+FFFD (a broken character) in {text!r}"
        assert not text.isascii(), f"asked for {charset} text, got ASCII {text!r}"
    return run


def raises(expected, header):
    def run():
        try:
            client.with_options(timeout=3).chat.completions.create(
                model=model, messages=[{"role": "user", "content": "fault"}], extra_headers={"x-sim-fault": header})
        except expected:
            return
        except Exception as e:
            raise AssertionError(f"x-sim-fault {header}: expected {expected.__name__}, got {type(e).__name__}: {e}")
        raise AssertionError(f"x-sim-fault {header}: expected {expected.__name__}, got a reply")
    return run


check("chat", plain)
check("chat_stream", stream)
check("models", models)
if charset_model:
    for charset in ("cjk", "emoji", "rtl", "combining"):
        check(f"chat_stream_{charset}", charset_stream(charset))
if faults:
    check("legacy_completion", legacy)
    check("error_429_is_RateLimitError", raises(openai.RateLimitError, "429"))
    check("error_500_is_InternalServerError", raises(openai.InternalServerError, "500"))
    check("error_503_is_InternalServerError", raises(openai.InternalServerError, "503"))
    check("error_401_is_AuthenticationError", raises(openai.AuthenticationError, "401"))
    check("error_context_length_is_BadRequestError", raises(openai.BadRequestError, "context_length"))
    check("hang_is_APITimeoutError", raises(openai.APITimeoutError, "hang"))
    check("reset_is_APIConnectionError", raises(openai.APIConnectionError, "reset"))
json.dump(results, sys.stdout)
