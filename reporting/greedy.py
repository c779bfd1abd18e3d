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

Drafting (``GreedyConfig.draft``, prompt-lookup decoding): a report mostly copies its fact
lines and the worked examples' phrases, so after each token the tokens that followed the
latest earlier occurrence of the last two tokens are guessed, read in one batch with logits
at every position, and kept for as long as each is what greedy decoding would have chosen
there (same penalty, same grammar); the KV cells of the first wrong guess and after are
dropped. The draft has a fixed length, chosen from what a batch costs on the CPU: llama.cpp
repacks Q4_K weights for a matrix product over 4 tokens at a time, so on one AVX-512 thread
reading 4 tokens cost 2.2 single steps while 2 and 3 cost 1.7 and 2.4, and 5, 6 and 7
cost 3.0, 3.6 and 4.4 (Qwen2.5-Coder-1.5B Q4_K_M: 196, 334, 473, 439, 590, 711, 869 ms for
1-7 tokens). Over 12 captured Qwen reports, always drafting 3 decoded 7.2 tokens/s in both
languages, where drafts that grew to 6 after kept ones and shrank after misses decoded
5.4-6.2, and no drafting 5.1 (bench/RESULTS.md). Each kept guess is the token greedy
decoding picks from the logits of that batch; llama.cpp's batched matrix products round
differently from single steps, so where two tokens are within ~0.3 logits of each other the
pick can differ from undrafted decoding (as it can when the prompt is read in other batches:
prefix reuse, read-ahead). Measured on Qwen2.5-Coder-1.5B: 1 of 6 reports differed from
undrafted decoding, and 3 of the evaluation's 40 between drafts of up to 6 and of 3
(bench/RESULTS.md).

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
    """draft: tokens drafted by prompt lookup and verified with the token before them in
    one batch (0 = one token at a time)."""

    max_tokens: int
    repeat_penalty: float = 1.0
    last_n: int = 64
    draft: int = 0


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


def lookup_draft(context: npt.NDArray[np.intc], n_draft: int, ngram: int = 2) -> list[int]:
    """Prompt-lookup drafting: the tokens that followed the latest earlier occurrence of the
    context's last ``ngram`` tokens (a report copies its fact lines and the examples' phrases,
    so the next words are usually already in the prompt). [] when there is none."""
    if n_draft <= 0 or len(context) <= ngram:
        return []
    tail = context[-ngram:]
    windows = np.lib.stride_tricks.sliding_window_view(context[:-1], ngram)
    hits = np.flatnonzero((windows == tail).all(axis=1))
    if len(hits) == 0:
        return []
    start = int(hits[-1]) + ngram
    return [int(t) for t in context[start : start + n_draft]]


class _Decoder:
    """The state of one greedy generation: the grammar, the tokens so far and the llama.cpp
    context (its token bookkeeping kept as ``Llama.eval`` keeps it,
    so the backend's prefix reuse sees a consistent cache). The JSON scaffold's position
    stays in :func:`greedy_tokens`."""

    def __init__(
        self,
        llama_cpp: Any,
        llm: Any,
        config: GreedyConfig,
        stop_ids: Collection[int],
        checker: GrammarChecker | None,
    ) -> None:
        self.api, self.llm, self.config = llama_cpp, llm, config
        self.stop_ids = stop_ids
        self.checker = checker
        self.n_vocab = int(llm.n_vocab())
        self.generated: list[int] = []

    def logits(self, index: int = -1) -> npt.NDArray[np.float32]:
        raw = self.api.llama_get_logits_ith(self.llm._ctx.ctx, index)
        return np.ctypeslib.as_array(raw, shape=(self.n_vocab,)).copy()

    def choose(self, logits: npt.NDArray[np.float32]) -> int | None:
        """The greedy token after penalty and grammar; None when the grammar allows none."""
        logits = logits.copy()  # may be chosen from again after a rejected draft
        penalise(logits, self.generated[-self.config.last_n :], self.config.repeat_penalty)
        token = int(np.argmax(logits))
        if self.checker is not None and not self.checker.accepts(token, float(logits[token])):
            return self.checker.best(logits)
        return token

    def is_stop(self, token: int) -> bool:
        return token in self.stop_ids or bool(
            self.api.llama_vocab_is_eog(self.llm._model.vocab, token)
        )

    def accept(self, token: int) -> None:
        if self.checker is not None:
            self.checker.accept(token)
        self.generated.append(token)

    def eval_all(self, tokens: list[int]) -> list[npt.NDArray[np.float32]]:
        """Read ``tokens`` as one batch and return the logits after each of them (a draft's
        verification: one batch costs about half as much per token as single steps)."""
        llm = self.llm
        if len(tokens) == 1:
            llm.eval(tokens)
            return [self.logits()]
        llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
        n_past = llm.n_tokens
        llm._batch.set_batch(batch=tokens, n_past=n_past, logits_all=True)
        llm._ctx.decode(llm._batch)
        llm.input_ids[n_past : n_past + len(tokens)] = tokens
        llm.n_tokens = n_past + len(tokens)
        return [self.logits(i) for i in range(len(tokens))]

    def draft(self, token: int) -> list[int]:
        """Up to ``config.draft`` guesses after ``token`` (fewer near ``max_tokens`` or the
        context's end; none when the last two tokens did not occur before)."""
        room = self.config.max_tokens - len(self.generated)
        if self.config.draft <= 0 or room <= 0:
            return []
        context = np.append(self.llm.input_ids[: self.llm.n_tokens], np.intc(token))
        return lookup_draft(context, min(self.config.draft, room))


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
    as tokens like the rest; with ``config.draft`` tokens are drafted from the context and
    verified in one batch (module docstring). The scaffold leaves the sections as plain
    greedy decoding under the grammar writes them; drafting does too, up to llama.cpp's
    batch rounding on near-ties (module docstring)."""
    checker = (
        GrammarChecker(llama_cpp, llm._model.vocab, grammar, int(llm.n_vocab()))
        if grammar is not None
        else None
    )
    d = _Decoder(llama_cpp, llm, config, stop_ids, checker)
    section, escaped = 0, False

    def closes(token: int) -> tuple[bytes, int | None, bool]:
        piece = bytes(llm.detokenize([token]))
        if scaffold is None:
            return piece, None, escaped
        return (piece, *closing_quote(piece, escaped))

    try:
        opening: list[int] = []
        if scaffold is not None:
            forced = _forced(llm, scaffold.opening().encode(), checker)
            if forced is None:
                return "grammar"
            if len(forced) > config.max_tokens:
                return "length"  # max_tokens is also the room left in the context
            opening = forced
        llm.eval([*prompt_tail, *opening])
        for t in opening:
            d.generated.append(t)
            yield t
        logits = d.logits()
        while len(d.generated) < config.max_tokens:
            token = d.choose(logits)
            if token is None:
                return "grammar"
            if d.is_stop(token):
                return "stop"
            piece, cut, after = closes(token)
            if scaffold is not None and cut is not None:
                # the value ends in this token: read its text up to the quote and the
                # fixed JSON after it instead of decoding that JSON token by token
                pending = _forced(llm, piece[:cut] + scaffold.after(section).encode(), checker)
                section += 1
                if not pending:
                    return "grammar"
                last = section == len(scaffold.keys)
                if not last and len(d.generated) + len(pending) > config.max_tokens:
                    return "length"  # the next key would not fit in the context
                for t in pending:
                    d.generated.append(t)
                    yield t
                if last:
                    return "stop"  # the object is complete: nothing left to decode
                llm.eval(pending)
                logits = d.logits()
                escaped = False
                continue
            escaped = after
            d.accept(token)
            yield token
            draft = d.draft(token)
            rows = d.eval_all([token, *draft])
            logits, kept = rows[0], 0
            for guess in draft:
                if d.choose(logits) != guess or d.is_stop(guess):
                    break
                _, cut, after = closes(guess)
                if cut is not None:
                    break  # the scaffold takes over from here
                escaped = after
                d.accept(guess)
                yield guess
                kept += 1
                logits = rows[kept]
            llm.n_tokens -= len(draft) - kept  # forget the rejected tail's KV cells
        return "length"
    finally:
        if checker is not None:
            checker.close()
