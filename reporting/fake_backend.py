"""A scripted, deterministic backend for tests: it records every prompt it is given.

Scoring is a transparent toy model: a continuation word that also occurs in the prompt's last
turn (the facts) gets log-probability ``-0.1``, any other word ``-2.0``. That makes attributions
testable: a zone named in the report is credited to the descriptor that put the zone's words in
the prompt."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reporting.errors import GenerationCancelled, LLMTimeout, LLMUnavailable
from reporting.llm import BackendInfo, GenerationParams, GenerationResult, Message, TokenScores

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)

Responder = Callable[[Sequence[Message], Mapping[str, Any] | None], str]


class FakeBackend:
    """Returns ``reply`` (a string or a function of the messages) for every generation.

    ``fail`` makes every call raise (``"unavailable"`` or ``"timeout"``). ``delay_s`` paces
    the streamed words (to test what happens while a generation is running). ``prompts`` holds
    every message list seen by generate or score, in order, for assertions.
    """

    def __init__(
        self,
        reply: str | Responder,
        languages: frozenset[str] = frozenset({"en"}),
        fail: str | None = None,
        delay_s: float = 0.0,
    ) -> None:
        self._reply = reply
        self._delay_s = delay_s
        self.completed = 0  # generations that ran to the end
        self.cancelled = 0  # generations stopped by their cancel flag
        self._languages = languages
        self._fail = fail
        self._lock = threading.Lock()
        self.prompts: list[tuple[Message, ...]] = []
        self.schemas: list[Mapping[str, Any] | None] = []
        self.params: list[GenerationParams] = []
        self.checkpoints: list[str | None] = []
        self.prefills: list[tuple[tuple[Message, ...], str]] = []

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(
            backend="fake", model="fake", model_sha256=None, languages=self._languages
        )

    def _maybe_fail(self) -> None:
        if self._fail == "unavailable":
            raise LLMUnavailable("fake backend is down", retry_after=7)
        if self._fail == "timeout":
            raise LLMTimeout("fake backend timed out", retry_after=3)

    def prefill(self, messages: Sequence[Message], checkpoint: str) -> None:
        """Records the call (tests check what was read ahead, and when)."""
        if not messages[-1].content.startswith(checkpoint):
            raise ValueError("the checkpoint must start the last message")
        with self._lock:
            self.prefills.append((tuple(messages), checkpoint))

    def generate(
        self,
        messages: Sequence[Message],
        json_schema: Mapping[str, Any] | None,
        params: GenerationParams,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        checkpoint: str | None = None,
    ) -> GenerationResult:
        """Streams the reply word by word (``delay_s`` apart) and honours ``cancel``."""
        with self._lock:
            self.prompts.append(tuple(messages))
            self.checkpoints.append(checkpoint)
            self.schemas.append(json_schema)
            self.params.append(params)
        self._maybe_fail()
        text = self._reply if isinstance(self._reply, str) else self._reply(messages, json_schema)
        pieces = re.findall(r"\S+\s*|\s+", text)
        for piece in pieces:
            if cancel is not None and cancel.is_set():
                with self._lock:
                    self.cancelled += 1
                raise GenerationCancelled("fake generation cancelled")
            if self._delay_s:
                time.sleep(self._delay_s)
            if on_text is not None:
                on_text(piece)
        with self._lock:
            self.completed += 1
        n = len(_WORD.findall(text))
        return GenerationResult(text=text, tokens=n, prompt_tokens=0, seconds=0.001)

    def score_tokens(self, messages: Sequence[Message], continuation: str) -> TokenScores:
        with self._lock:
            self.prompts.append(tuple(messages))
        self._maybe_fail()
        # Only the last turn varies between attribution coalitions (the system turn and the
        # worked examples are fixed), so only its words count.
        prompt_words = {w.lower() for w in _WORD.findall(messages[-1].content)}
        tokens, offsets, logprobs = [], [], []
        for match in _WORD.finditer(continuation):
            tokens.append(match.group())
            offsets.append(match.start())
            logprobs.append(-0.1 if match.group().lower() in prompt_words else -2.0)
        return TokenScores(tuple(tokens), tuple(offsets), tuple(logprobs))

    def close(self) -> None:
        return None
