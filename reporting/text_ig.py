"""Integrated Gradients over the prompt tokens, for each sentence of a report.

Optional (needs torch, captum, transformers, gguf and accelerate): a differentiable copy of the
same model is loaded from the same GGUF file by transformers (weights dequantized to float32),
and for every report sentence s the target is log p(s | prompt, earlier report text), summed
over the sentence's tokens. Captum's LayerIntegratedGradients integrates along the straight
line from a baseline prompt (every non-special prompt token replaced by a neutral token, the
report unchanged) to the real prompt, in embedding space; a prompt token's attribution is the
sum over embedding dimensions. Completeness (attributions sum to f(prompt) - f(baseline)) is
reported per sentence as ``convergence_delta``.

Cost is high on CPU (n_steps forward+backward passes per sentence through a 135M-parameter
model), so this is a library function and a benchmark, not part of POST /report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reporting.attribution import continuation_with_spans
from reporting.chat_format import CHATML, ChatFormat
from reporting.grounding import split_sentences
from reporting.llm import Message
from reporting.schema import SECTION_NAMES, SectionName, Sections


@dataclass(frozen=True)
class PromptTokenAttribution:
    """One prompt token: [start, end) in ``IGResult.prompt``, the player whose text contains
    it (None for instructions), and its attribution (nats)."""

    text: str
    start: int
    end: int
    player: str | None
    value: float


@dataclass(frozen=True)
class SentenceAttribution:
    section: SectionName
    sentence: str
    start: int
    end: int
    logprob: float
    convergence_delta: float
    tokens: tuple[PromptTokenAttribution, ...]
    player_values: dict[str, float]


@dataclass(frozen=True)
class IGResult:
    prompt: str
    continuation: str
    sentences: tuple[SentenceAttribution, ...]
    n_steps: int
    seconds: float


def load_gguf_causal_lm(path: Path, n_threads: int = 1) -> tuple[Any, Any]:
    """(model, tokenizer) from a GGUF file via transformers; never touches the network."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(n_threads)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    model.eval()  # type: ignore[no-untyped-call]  # transformers leaves eval() unannotated
    return model, tokenizer


def _sentence_spans(sections: Sections) -> list[tuple[SectionName, str, int, int]]:
    """(section, sentence, start, end) with offsets into the JSON continuation."""
    text, spans = continuation_with_spans(sections)
    out = []
    for name in SECTION_NAMES:
        a, b = spans[name]
        cursor = a
        for sentence in split_sentences(sections.get(name)):
            encoded = json.dumps(sentence, ensure_ascii=False)[1:-1]
            start = text.find(encoded, cursor, b)
            if start < 0:
                continue
            out.append((name, sentence, start, start + len(encoded)))
            cursor = start + len(encoded)
    return out


class IntegratedGradientsExplainer:
    """IG attributions of report sentences to prompt tokens with a transformers model."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        chat_format: ChatFormat = CHATML,
        n_steps: int = 8,
        baseline_text: str = " ",
    ) -> None:
        self._model = model
        self._tok = tokenizer
        self._format = chat_format
        self._n_steps = n_steps
        ids = tokenizer(baseline_text, add_special_tokens=False)["input_ids"]
        self._baseline_id = int(ids[0])

    def _encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = self._tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]

    def explain(
        self,
        messages: Sequence[Message],
        sections: Sections,
        player_texts: Mapping[str, str] | None = None,
        max_sentences: int | None = None,
    ) -> IGResult:
        import torch
        from captum.attr import LayerIntegratedGradients

        started = time.perf_counter()
        prompt = self._format.render(messages)
        continuation, _ = continuation_with_spans(sections)
        p_ids, p_off = self._encode(prompt)
        c_ids, c_off = self._encode(continuation)
        special = set(self._tok.all_special_ids)
        player_spans = {
            k: (prompt.find(v), prompt.find(v) + len(v))
            for k, v in (player_texts or {}).items()
            if prompt.find(v) >= 0
        }
        ids = torch.tensor([p_ids + c_ids])
        base = torch.tensor([[t if t in special else self._baseline_id for t in p_ids] + c_ids])
        embeddings = self._model.get_input_embeddings()
        results = []
        n_p = len(p_ids)
        for section, sentence, start, end in _sentence_spans(sections)[:max_sentences]:
            idx = [j for j, (a, b) in enumerate(c_off) if a < end and b > start]
            if not idx:
                continue
            t0, t1 = n_p + idx[0], n_p + idx[-1] + 1
            forward = self._sentence_logprob(t0, t1)
            attr, delta = LayerIntegratedGradients(forward, embeddings).attribute(
                ids[:, :t1],
                baselines=base[:, :t1],
                n_steps=self._n_steps,
                internal_batch_size=1,
                return_convergence_delta=True,
            )
            per_token = attr.sum(dim=-1)[0, :n_p].detach().double().tolist()
            with torch.no_grad():
                logprob = float(forward(ids[:, :t1])[0])
            tokens = tuple(
                PromptTokenAttribution(
                    text=prompt[a:b],
                    start=a,
                    end=b,
                    player=next((k for k, (s, e) in player_spans.items() if s <= a < e), None),
                    value=float(v),
                )
                for (a, b), v in zip(p_off, per_token, strict=True)
            )
            players = {k: sum(t.value for t in tokens if t.player == k) for k in player_spans}
            results.append(
                SentenceAttribution(
                    section, sentence, start, end, logprob, float(delta[0]), tokens, players
                )
            )
        return IGResult(
            prompt, continuation, tuple(results), self._n_steps, time.perf_counter() - started
        )

    def _sentence_logprob(self, t0: int, t1: int) -> Any:
        """forward(input_ids int [B, T]) -> float [B]: sum of log p(token) over [t0, t1)."""
        import torch

        def forward(input_ids: Any) -> Any:
            logits = self._model(input_ids=input_ids).logits
            logp = torch.log_softmax(logits[:, t0 - 1 : t1 - 1].float(), dim=-1)
            target = input_ids[:, t0:t1].unsqueeze(-1)
            return logp.gather(-1, target).squeeze(-1).sum(-1)

        return forward
