"""Remote OpenAI-compatible backend (llama.cpp's ``llama-server`` or ``llama_cpp.server``).

Transport seam: pass an ``httpx`` transport (``httpx.MockTransport`` in tests). Every call
goes through a circuit breaker; transient failures (connect errors, timeouts, 429, 5xx) are
retried a bounded number of times with linear backoff. Exhausted retries raise LLMTimeout or
LLMUnavailable (the service answers 503 with Retry-After). The client never follows
redirects and sends nothing but the structured prompt.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from reporting.chat_format import CHAT_FORMATS
from reporting.circuit import CircuitBreaker
from reporting.errors import (
    GenerationCancelled,
    LLMTimeout,
    LLMUnavailable,
    ScoringUnsupported,
)
from reporting.llm import BackendInfo, GenerationParams, GenerationResult, Message, TokenScores

_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RemoteConfig:
    """base_url: server root (``/v1/...`` is appended). timeout: seconds per attempt."""

    base_url: str
    model: str = "local"
    timeout: float = 30.0
    max_retries: int = 1
    backoff: float = 0.5
    api_key: str | None = None
    chat_format: str = "chatml"
    languages: frozenset[str] = frozenset({"en"})
    model_sha256: str | None = None
    failure_threshold: int = 3
    reset_after: float = 30.0
    extra_headers: Mapping[str, str] = field(default_factory=dict)


class RemoteOpenAIBackend:
    def __init__(
        self,
        config: RemoteConfig,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._sleep = sleep
        headers = dict(config.extra_headers)
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self._client = httpx.Client(
            base_url=config.base_url.rstrip("/"),
            timeout=config.timeout,
            transport=transport,
            headers=headers,
            follow_redirects=False,
        )
        self._breaker = CircuitBreaker(config.failure_threshold, config.reset_after, clock)

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    @property
    def info(self) -> BackendInfo:
        c = self._config
        return BackendInfo(
            backend="remote-openai",
            model=c.model,
            model_sha256=c.model_sha256,
            languages=c.languages,
            extra={"base_url": c.base_url, "chat_format": c.chat_format},
        )

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST with breaker + bounded retries; returns the decoded JSON body."""
        self._breaker.before_call()
        last: Exception | None = None
        for attempt in range(self._config.max_retries + 1):
            if attempt:
                self._sleep(self._config.backoff * attempt)
            try:
                response = self._client.post(path, json=payload)
            except httpx.TimeoutException as exc:
                last = LLMTimeout(f"LLM server timed out: {type(exc).__name__}")
                continue
            except httpx.TransportError as exc:
                last = LLMUnavailable(f"LLM server unreachable: {type(exc).__name__}")
                continue
            if response.status_code in _RETRYABLE_STATUS:
                last = LLMUnavailable(f"LLM server answered {response.status_code}")
                continue
            if response.status_code >= 400:
                # A client error will not heal on retry; it is not the server's health either.
                self._breaker.record_success()
                raise LLMUnavailable(f"LLM server rejected the request: {response.status_code}")
            try:
                body = response.json()
            except ValueError:
                last = LLMUnavailable("LLM server sent a body that is not JSON")
                continue
            self._breaker.record_success()
            return dict(body)
        self._breaker.record_failure()
        assert last is not None
        raise last

    def prefill(self, messages: Sequence[Message], checkpoint: str) -> None:
        """Nothing to do: the server's own prompt cache is its business."""

    def generate(
        self,
        messages: Sequence[Message],
        json_schema: Mapping[str, Any] | None,
        params: GenerationParams,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        checkpoint: str | None = None,
    ) -> GenerationResult:
        """Non-streaming: ``on_text`` receives the whole reply at once, and ``cancel`` is
        checked before the request and after it (an HTTP call cannot be stopped midway)."""
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled("cancelled before generation")
        payload: dict[str, Any] = {
            "model": self._config.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            **params.as_dict(),
        }
        if json_schema is not None:
            payload["response_format"] = {"type": "json_object", "schema": dict(json_schema)}
        start = time.perf_counter()
        body = self._post("/v1/chat/completions", payload)
        seconds = time.perf_counter() - start
        try:
            choice = body["choices"][0]
            text = str(choice["message"]["content"] or "")
        except (KeyError, IndexError, TypeError) as exc:
            raise LLMUnavailable("LLM server response lacks choices[0].message") from exc
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled("cancelled during generation")
        if on_text is not None and text:
            on_text(text)
        usage = body.get("usage") or {}
        return GenerationResult(
            text=text,
            tokens=int(usage.get("completion_tokens", 0)),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            seconds=seconds,
            finish_reason=str(choice.get("finish_reason") or "stop"),
        )

    def score_tokens(self, messages: Sequence[Message], continuation: str) -> TokenScores:
        """Needs a server that echoes prompt log-probabilities (``llama_cpp.server`` does).

        The echoed ``text_offset`` values cannot be trusted against our prompt string (the
        server renders special tokens such as ``<|im_start|>`` as empty text), so the
        continuation's tokens are found from the end: the generated token(s) are dropped and
        tokens are taken back until their text covers the continuation.
        """
        prompt = CHAT_FORMATS[self._config.chat_format].render(messages)
        payload = {
            "model": self._config.model,
            "prompt": prompt + continuation,
            "max_tokens": 1,
            "temperature": 0.0,
            "echo": True,
            "logprobs": 0,
        }
        body = self._post("/v1/completions", payload)
        try:
            lp = body["choices"][0]["logprobs"]
            tokens = [str(t) for t in lp["tokens"]]
            logprobs = list(lp["token_logprobs"])
        except (KeyError, IndexError, TypeError) as exc:
            raise ScoringUnsupported("server returned no prompt log-probabilities") from exc
        generated = int((body.get("usage") or {}).get("completion_tokens", 0))
        if generated:
            tokens, logprobs = tokens[:-generated], logprobs[:-generated]
        return _suffix_scores(tokens, logprobs, continuation)

    def close(self) -> None:
        self._client.close()


def _suffix_scores(
    tokens: list[str], logprobs: list[float | None], continuation: str
) -> TokenScores:
    """The trailing tokens whose text spells ``continuation``, with offsets into it."""
    covered, i = 0, len(tokens)
    while i > 0 and covered < len(continuation):
        i -= 1
        covered += len(tokens[i])
    tail = tokens[i:]
    if not "".join(tail).endswith(continuation) or any(x is None for x in logprobs[i:]):
        raise ScoringUnsupported("echoed tokens do not reproduce the continuation")
    offsets, pos = [], len(continuation) - covered
    for tok in tail:
        offsets.append(max(0, pos))
        pos += len(tok)
    return TokenScores(tuple(tail), tuple(offsets), tuple(float(x) for x in logprobs[i:]))  # type: ignore[arg-type]
