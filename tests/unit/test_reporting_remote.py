"""RemoteOpenAIBackend against httpx.MockTransport, and the circuit breaker."""

from __future__ import annotations

import json

import httpx
import pytest

from reporting.circuit import CircuitBreaker
from reporting.errors import LLMTimeout, LLMUnavailable, ScoringUnsupported
from reporting.llm import GenerationParams, Message
from reporting.remote_backend import RemoteConfig, RemoteOpenAIBackend
from reporting.schema import REPORT_JSON_SCHEMA

MESSAGES = (Message("system", "s"), Message("user", "u"))
REPLY = {
    "choices": [{"message": {"content": '{"findings": "a"}'}, "finish_reason": "stop"}],
    "usage": {"completion_tokens": 7, "prompt_tokens": 30},
}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _backend(handler, clock: Clock | None = None, **cfg) -> RemoteOpenAIBackend:
    config = RemoteConfig(base_url="http://llm:8080", **cfg)
    return RemoteOpenAIBackend(
        config,
        transport=httpx.MockTransport(handler),
        sleep=lambda s: None,
        clock=clock or Clock(),
    )


def test_generate_sends_schema_and_sampling() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        assert request.url.path == "/v1/chat/completions"
        return httpx.Response(200, json=REPLY)

    result = _backend(handler).generate(MESSAGES, REPORT_JSON_SCHEMA, GenerationParams())
    assert result.text == '{"findings": "a"}' and result.tokens == 7 and result.prompt_tokens == 30
    body = seen[0]
    assert body["response_format"] == {"type": "json_object", "schema": REPORT_JSON_SCHEMA}
    assert body["temperature"] == 0.0 and body["seed"] == 1234
    assert body["messages"] == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
    ]


def test_transient_error_is_retried_once() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503) if len(calls) == 1 else httpx.Response(200, json=REPLY)

    backend = _backend(handler, max_retries=1)
    assert backend.generate(MESSAGES, None, GenerationParams()).tokens == 7
    assert len(calls) == 2
    assert backend.breaker.state().state == "closed"


def test_timeout_raises_llm_timeout_after_bounded_retries() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(LLMTimeout):
        _backend(handler, max_retries=2).generate(MESSAGES, None, GenerationParams())
    assert len(calls) == 3


def test_client_error_is_not_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(400, json={"error": "bad"})

    with pytest.raises(LLMUnavailable):
        _backend(handler, max_retries=3).generate(MESSAGES, None, GenerationParams())
    assert len(calls) == 1


def test_circuit_opens_fails_fast_and_recovers() -> None:
    clock = Clock()
    state = {"down": True, "calls": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        state["calls"] += 1
        if state["down"]:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json=REPLY)

    backend = _backend(handler, clock, max_retries=0, failure_threshold=2, reset_after=30)
    for _ in range(2):
        with pytest.raises(LLMUnavailable):
            backend.generate(MESSAGES, None, GenerationParams())
    assert state["calls"] == 2
    with pytest.raises(LLMUnavailable) as info:
        backend.generate(MESSAGES, None, GenerationParams())
    assert state["calls"] == 2  # failed fast, no request sent
    assert info.value.retry_after == pytest.approx(30)
    clock.now = 31.0
    state["down"] = False
    assert backend.generate(MESSAGES, None, GenerationParams()).tokens == 7
    assert backend.breaker.state().state == "closed"


def test_half_open_failure_reopens() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, reset_after=10, clock=clock)
    breaker.record_failure()
    assert breaker.state().state == "open"
    clock.now = 11
    breaker.before_call()  # the half-open trial
    with pytest.raises(LLMUnavailable):
        breaker.before_call()  # a second caller while the trial runs
    breaker.record_failure()
    assert breaker.state().state == "open"


def test_score_tokens_reads_echoed_logprobs() -> None:
    # Shaped like llama_cpp.server: special tokens echo as empty text (so text_offset does not
    # match our prompt string) and the generated token comes last.
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body["echo"] is True and request.url.path == "/v1/completions"
        assert body["prompt"].endswith("ab cd")
        lp = {
            "tokens": ["", "user", "\n", "u", "", "\n", "", "assistant", "\n", "ab", " cd", "!"],
            "text_offset": [0, 0, 4, 5, 6, 6, 7, 7, 16, 17, 19, 22],
            "token_logprobs": [None, -1, -1, -1, -1, -1, -1, -1, -1, -0.5, -1.5, -3.0],
        }
        usage = {"prompt_tokens": 11, "completion_tokens": 1}
        return httpx.Response(200, json={"choices": [{"text": "", "logprobs": lp}], "usage": usage})

    scores = _backend(handler).score_tokens(MESSAGES, "ab cd")
    assert scores.tokens == ("ab", " cd") and scores.offsets == (0, 2)
    assert scores.total == pytest.approx(-2.0)


def test_score_without_logprobs_is_unsupported() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": [{"text": "x"}]})

    with pytest.raises(ScoringUnsupported):
        _backend(handler).score_tokens(MESSAGES, "ab")
