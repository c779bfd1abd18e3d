"""Greedy decoding under a grammar, with the grammar checked lazily (llama.cpp low-level API).

Why: llama-cpp-python's sampler chain applies the JSON grammar to every candidate of the
vocabulary at every step. Qwen2.5 has 151,936 tokens, so on one CPU thread that check cost
about a quarter of each decoding step (4.5 against 6.2 tokens/s; bench/RESULTS.md). With greedy
decoding only the best token matters: if the grammar accepts the best token, it is also the
best grammatical token, so the full check is needed only when the grammar rejects it (at
structural points of the JSON, a few times per report). The result is the same token sequence
as the chain (repetition penalty, then grammar, then greedy), ties aside.

The repetition penalty is llama.cpp's: each distinct token among the last ``last_n``
generated tokens has its logit divided by the penalty when positive, multiplied when not
(prompt tokens are not in the window, as in llama-cpp-python's chain).
"""

from __future__ import annotations

import ctypes
from collections.abc import Collection, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class GreedyConfig:
    max_tokens: int
    repeat_penalty: float = 1.0
    last_n: int = 64


class GrammarChecker:
    """A llama.cpp grammar sampler used as an oracle: does it accept this token next?"""

    def __init__(self, llama_cpp: Any, vocab: Any, grammar: Any, n_vocab: int) -> None:
        self._api = llama_cpp
        self._sampler = llama_cpp.llama_sampler_init_grammar(
            vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")
        )
        if not self._sampler:
            raise ValueError("llama.cpp refused the grammar")
        self._one = (llama_cpp.llama_token_data * 1)()
        self._all = (llama_cpp.llama_token_data * n_vocab)()
        self._all_view = np.ctypeslib.as_array(self._all)
        self._all_view["id"] = np.arange(n_vocab, dtype=np.int32)

    def _apply(self, data: Any, size: int) -> None:
        array = self._api.llama_token_data_array(data=data, size=size, selected=-1, sorted=False)
        self._api.llama_sampler_apply(self._sampler, ctypes.byref(array))

    def accepts(self, token: int, logit: float) -> bool:
        self._one[0].id, self._one[0].logit, self._one[0].p = token, logit, 0.0
        self._apply(self._one, 1)
        return bool(np.isfinite(self._one[0].logit))

    def best(self, logits: npt.NDArray[np.float32]) -> int | None:
        """The highest-scoring token the grammar allows, or None when it allows none."""
        view = self._all_view
        view["id"] = np.arange(len(view), dtype=np.int32)  # the sampler may reorder
        view["logit"] = logits
        view["p"] = 0.0
        self._apply(self._all, len(view))
        allowed = view["logit"]
        i = int(np.argmax(allowed))
        return int(view["id"][i]) if np.isfinite(allowed[i]) else None

    def accept(self, token: int) -> None:
        self._api.llama_sampler_accept(self._sampler, token)

    def close(self) -> None:
        if self._sampler:
            self._api.llama_sampler_free(self._sampler)
            self._sampler = None


def penalise(logits: npt.NDArray[np.float32], recent: list[int], penalty: float) -> None:
    """llama.cpp's repetition penalty, in place (see the module docstring)."""
    if penalty == 1.0 or not recent:
        return
    ids = np.unique(np.asarray(recent, dtype=np.int64))
    values = logits[ids]
    logits[ids] = np.where(values <= 0, values * penalty, values / penalty)


def greedy_tokens(
    llama_cpp: Any,
    llm: Any,
    prompt_tail: list[int],
    config: GreedyConfig,
    stop_ids: Collection[int],
    grammar: Any | None = None,
) -> Generator[int, None, str]:
    """Evaluate ``prompt_tail`` after ``llm``'s current KV state, then yield the greedy
    continuation token by token (stop tokens are not yielded). The generator's
    ``StopIteration.value`` is the finish reason: "stop", "length" or "grammar" (no token
    was allowed)."""
    n_vocab = int(llm.n_vocab())
    checker = (
        GrammarChecker(llama_cpp, llm._model.vocab, grammar, n_vocab)
        if grammar is not None
        else None
    )
    generated: list[int] = []
    try:
        llm.eval(prompt_tail)
        while len(generated) < config.max_tokens:
            raw = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
            logits = np.ctypeslib.as_array(raw, shape=(n_vocab,)).copy()
            penalise(logits, generated[-config.last_n :], config.repeat_penalty)
            token = int(np.argmax(logits))
            if checker is not None and not checker.accepts(token, float(logits[token])):
                allowed = checker.best(logits)
                if allowed is None:
                    return "grammar"
                token = allowed
            if token in stop_ids or llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                return "stop"
            if checker is not None:
                checker.accept(token)
            generated.append(token)
            yield token
            llm.eval([token])
        return "length"
    finally:
        if checker is not None:
            checker.close()
