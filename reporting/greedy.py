"""Greedy decoding under a grammar, with the grammar checked lazily (llama.cpp low-level API).

Why: llama-cpp-python's sampler chain applies the JSON grammar to every candidate of the
vocabulary at every step. Qwen2.5 has 151,936 tokens, so on one CPU thread that check cost
about a quarter of each decoding step (4.5 against 6.2 tokens/s; bench/RESULTS.md). With greedy
decoding only the best token matters: if the grammar accepts the best token, it is also the
best grammatical token, so the full check is needed only when the grammar rejects it (at
structural points of the JSON, a few times per report). The result is the same token sequence
as the chain (repetition penalty, then grammar, then greedy), ties aside.

With a :class:`JsonScaffold` (a report: an object of string values whose keys come in a
fixed order), the JSON around the values is not decoded at all: the opening ``{"findings": "``
is read with the prompt, and when the model closes a value the separator to the next key
(``", "interpretation": "``) is read as one batch, or, after the last value, decoding ends.
Those ~15 tokens would otherwise cost a full decoding step each (a step is ~2.5x the per-token
cost of reading a batch on one CPU thread), and the model has no choice in them anyway.

The repetition penalty is llama.cpp's: each distinct token among the last ``last_n``
generated tokens has its logit divided by the penalty when positive, multiplied when not
(prompt tokens are not in the window, as in llama-cpp-python's chain).
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Collection, Generator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class JsonScaffold:
    """The fixed text of a JSON object of non-empty strings with these keys, in this order
    (``json.dumps`` separators), around the values the model writes."""

    keys: tuple[str, ...]

    def opening(self) -> str:
        return "{" + json.dumps(self.keys[0]) + ': "'

    def after(self, index: int) -> str:
        """What follows the value of ``keys[index]``: the next key, or the object's end."""
        if index + 1 < len(self.keys):
            return '", ' + json.dumps(self.keys[index + 1]) + ': "'
        return '"}'


def scaffold_for(schema: Mapping[str, Any] | None) -> JsonScaffold | None:
    """A scaffold for ``schema`` when its JSON text is fixed but for the values: an object of
    required string properties, nothing else allowed (the order is the properties' order,
    which llama.cpp's schema grammar also imposes); None otherwise."""
    if schema is None or schema.get("type") != "object":
        return None
    props = schema.get("properties") or {}
    keys = tuple(props)
    if (
        not keys
        or schema.get("additionalProperties") is not False
        or list(schema.get("required") or []) != list(keys)
        or any(props[k].get("type") != "string" for k in keys)
    ):
        return None
    return JsonScaffold(keys)


def closing_quote(piece: bytes, escaped: bool) -> tuple[int | None, bool]:
    """Where ``piece`` (bytes of a token inside a JSON string) closes the string, if it does,
    and whether it ends inside an escape (a backslash carried to the next token)."""
    for i, byte in enumerate(piece):
        if escaped:
            escaped = False
        elif byte == 0x5C:  # backslash
            escaped = True
        elif byte == 0x22:  # quote
            return i, False
    return None, escaped


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


def _forced(llm: Any, text: bytes, checker: GrammarChecker | None) -> list[int] | None:
    """``text``'s tokens, fed to the grammar; None if the grammar refuses one (then the caller
    stops: the grammar's state is no longer the text's)."""
    tokens = [int(t) for t in llm.tokenize(text, add_bos=False, special=False)]
    for t in tokens:
        if checker is not None:
            if not checker.accepts(t, 0.0):
                return None
            checker.accept(t)
    return tokens


def greedy_tokens(
    llama_cpp: Any,
    llm: Any,
    prompt_tail: list[int],
    config: GreedyConfig,
    stop_ids: Collection[int],
    grammar: Any | None = None,
    scaffold: JsonScaffold | None = None,
) -> Generator[int, None, str]:
    """Evaluate ``prompt_tail`` after ``llm``'s current KV state, then yield the greedy
    continuation token by token (stop tokens are not yielded). The generator's
    ``StopIteration.value`` is the finish reason: "stop", "length" or "grammar" (no token
    was allowed). With ``scaffold`` the JSON structure is read, not decoded, and is yielded
    as tokens like the rest (module docstring)."""
    n_vocab = int(llm.n_vocab())
    checker = (
        GrammarChecker(llama_cpp, llm._model.vocab, grammar, n_vocab)
        if grammar is not None
        else None
    )
    generated: list[int] = []
    section, escaped = 0, False
    try:
        pending: list[int] = []
        if scaffold is not None:
            opening = _forced(llm, scaffold.opening().encode(), checker)
            if opening is None:
                return "grammar"
            if len(opening) > config.max_tokens:
                return "length"  # max_tokens is also the room left in the context
            pending = opening
        llm.eval([*prompt_tail, *pending])
        for t in pending:
            generated.append(t)
            yield t
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
            if scaffold is not None:
                piece = bytes(llm.detokenize([token]))
                cut, escaped = closing_quote(piece, escaped)
                if cut is not None:
                    # the value ends in this token: read its text up to the quote and the
                    # fixed JSON after it instead of decoding that JSON token by token
                    text = piece[:cut] + scaffold.after(section).encode()
                    pending = _forced(llm, text, checker) or []
                    section += 1
                    if not pending:
                        return "grammar"
                    if section < len(scaffold.keys) and (
                        len(generated) + len(pending) > config.max_tokens
                    ):
                        return "length"  # the next key would not fit in the context
                    for t in pending:
                        generated.append(t)
                        yield t
                    if section == len(scaffold.keys):
                        return "stop"  # the object is complete: nothing left to decode
                    llm.eval(pending)
                    continue
            if checker is not None:
                checker.accept(token)
            generated.append(token)
            yield token
            llm.eval([token])
        return "length"
    finally:
        if checker is not None:
            checker.close()
