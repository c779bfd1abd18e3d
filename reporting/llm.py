"""The one interface every LLM backend implements, and its value types.

A backend turns chat messages into text (optionally constrained to a JSON schema) and scores
a fixed continuation under a prompt (sum of token log-probabilities, natural log). Backends
are synchronous and thread-safe; callers in an event loop run them in a worker thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    """One chat turn. ``fixed_chars``: how many leading characters of ``content`` are the
    same on every request (a report's "Facts:" header and the start of its decision line), so
    an in-process backend may keep them in its reusable prompt prefix; other backends ignore
    it."""

    role: Role
    content: str
    fixed_chars: int = 0


@dataclass(frozen=True)
class GenerationParams:
    """Sampling parameters. Defaults are deterministic: greedy decoding, fixed seed."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 1
    repeat_penalty: float = 1.1
    max_tokens: int = 320
    seed: int = 1234

    def as_dict(self) -> dict[str, float | int]:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repeat_penalty": self.repeat_penalty,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class GenerationResult:
    """Generated text plus accounting. tokens: completion tokens; seconds: wall time.

    cached_prompt_tokens: prompt tokens whose KV state was reused (not evaluated) this time;
    first_text_seconds: time to the first generated text (None when nothing was generated
    or the backend cannot tell).
    """

    text: str
    tokens: int
    prompt_tokens: int
    seconds: float
    finish_reason: str = "stop"
    cached_prompt_tokens: int = 0
    first_text_seconds: float | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class TokenScores:
    """Per-token log-probabilities of a continuation given a prompt.

    offsets[i] is the character offset in the continuation where token i starts (ascending,
    first is 0); logprobs[i] is its natural-log probability. Token boundaries come from the
    backend's tokenizer, so they are stable for one model and one prompt format.
    """

    tokens: tuple[str, ...]
    offsets: tuple[int, ...]
    logprobs: tuple[float, ...]

    @property
    def total(self) -> float:
        return float(sum(self.logprobs))


@dataclass(frozen=True)
class BackendInfo:
    """What a report's reproducibility block says about the LLM."""

    backend: str
    model: str
    model_sha256: str | None
    languages: frozenset[str]
    extra: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class LLMBackend(Protocol):
    """Chat generation with optional JSON-schema constraint, and continuation scoring."""

    @property
    def info(self) -> BackendInfo: ...

    def generate(
        self,
        messages: Sequence[Message],
        json_schema: Mapping[str, Any] | None,
        params: GenerationParams,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        checkpoint: str | None = None,
    ) -> GenerationResult:
        """Generate a reply; ``on_text`` receives the text as it is produced (in pieces
        whose concatenation is the result's text; a backend that cannot stream calls it once).

        ``checkpoint``: a prefix of the last message's content that a :meth:`prefill` may have
        read already (a backend that keeps KV state reuses it, and otherwise reads the prompt
        in the same two pieces, so the output does not depend on whether the prefill ran).

        Raises LLMUnavailable or LLMTimeout when the model cannot answer, and
        GenerationCancelled soon after ``cancel`` is set.
        """
        ...

    def prefill(self, messages: Sequence[Message], checkpoint: str) -> None:
        """Read ``messages`` up to ``checkpoint`` (a prefix of the last message's content)
        ahead of :meth:`generate`, e.g. while the explanations are still computed. A no-op
        for backends that cannot keep state between calls."""
        ...

    def score_tokens(self, messages: Sequence[Message], continuation: str) -> TokenScores:
        """Log-probabilities of ``continuation`` as the assistant's reply to ``messages``.

        Raises ScoringUnsupported when the backend cannot do it.
        """
        ...

    def close(self) -> None: ...


def score(backend: LLMBackend, messages: Sequence[Message], continuation: str) -> float:
    """Total log-probability (natural log, <= 0) of ``continuation`` given ``messages``."""
    return backend.score_tokens(messages, continuation).total
