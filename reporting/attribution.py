"""Shapley attributions of a report to the descriptors in its prompt.

The LLM is a black box scored by the log-probability it assigns to a fixed report given the
prompt built from a subset S of descriptors ("players": each mentioned zone, the decision,
the confidence): v(S) = log p(report | prompt(S)). Shapley values split v(N) - v({}) among
the players. Because Shapley values are linear in v, the same subset evaluations give a
value per report token (v_t(S) = log p(token t | prompt(S), tokens < t)), which sum to the
per-section and whole-report values; a UI can colour each report token by the player that
raised its probability most.

Exact enumeration (2^n prompts) when n <= ``exact_max_players`` and 2^n <= ``budget``;
otherwise KernelSHAP with the efficiency constraint and about ``budget`` coalitions
(complete small/large sizes first, then paired samples with a fixed seed), so results are
reproducible.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from reporting.evidence import Evidence, Language, ZoneEvidence
from reporting.llm import LLMBackend, Message
from reporting.prompt import DEFAULT_TEMPLATE, PromptTemplate, build_messages, players_for
from reporting.schema import SECTION_NAMES, SectionName, Sections

Mask = tuple[bool, ...]


@dataclass(frozen=True)
class TokenAttribution:
    """One report token: [start, end) in ``ShapleyAttribution.text``, its section, and one
    Shapley value per player (nats of log-probability), in ``players`` order."""

    text: str
    start: int
    end: int
    section: SectionName | None
    values: tuple[float, ...]


@dataclass(frozen=True)
class ShapleyAttribution:
    players: tuple[str, ...]
    values: tuple[float, ...]
    section_values: dict[SectionName, tuple[float, ...]]
    tokens: tuple[TokenAttribution, ...]
    text: str
    method: Literal["exact", "kernel"]
    evaluations: int
    logprob_empty: float
    logprob_full: float
    seconds: float


def continuation_with_spans(sections: Sections) -> tuple[str, dict[SectionName, tuple[int, int]]]:
    """The report as the JSON the model writes, plus each section value's character span."""
    text, spans = "{", {}
    for i, name in enumerate(SECTION_NAMES):
        text += ("" if i == 0 else ", ") + json.dumps(name) + ": "
        value = json.dumps(sections.get(name), ensure_ascii=False)
        spans[name] = (len(text) + 1, len(text) + len(value) - 1)
        text += value
    return text + "}", spans


def _shapley_weight(size: int, n: int) -> float:
    return math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)


def exact_shapley(values: dict[Mask, npt.NDArray[np.float64]], n: int) -> npt.NDArray[np.float64]:
    """Exact Shapley values. values: every mask of length n -> float64 [T]. Returns [n, T]."""
    t = next(iter(values.values())).shape[0]
    phi = np.zeros((n, t))
    for mask, v in values.items():
        for i in range(n):
            if mask[i]:
                continue
            with_i = mask[:i] + (True,) + mask[i + 1 :]
            phi[i] += _shapley_weight(sum(mask), n) * (values[with_i] - v)
    return phi


def kernel_masks(n: int, budget: int, seed: int) -> tuple[list[Mask], list[float]]:
    """Coalitions and their KernelSHAP weights (as in the reference ``shap`` implementation).

    Coalition sizes are taken in pairs (k, n-k), highest Shapley-kernel weight first
    (k = 1 first); a pair whose subsets all fit in the remaining budget is enumerated with the
    exact kernel weight, and the rest of the budget samples the remaining sizes in
    complementary pairs (antithetic sampling) with a fixed seed, sharing the remaining weight.
    The empty and full coalitions are not included (they enter as the constraint).
    """
    rng = np.random.default_rng(seed)
    remaining = max(0, budget - 2)
    masks: list[Mask] = []
    weights: list[float] = []
    sizes = list(range(1, n // 2 + 1))
    pair_weight = {k: (n - 1) / (k * (n - k)) * (1 if 2 * k == n else 2) for k in sizes}
    total = sum(pair_weight.values())
    for idx, k in enumerate(sizes):
        pair_sizes = {k, n - k}
        subsets = [
            tuple(i in on for i in range(n))
            for size in pair_sizes
            for on in map(set, itertools.combinations(range(n), size))
        ]
        if len(subsets) > remaining:
            left = sizes[idx:]
            p = np.array([pair_weight[j] for j in left])
            mass = float(p.sum()) / total
            draws = max(1, remaining // 2)
            for _ in range(draws):
                size = int(rng.choice(left, p=p / p.sum()))
                on = set(rng.choice(n, size=size, replace=False).tolist())
                mask = tuple(i in on for i in range(n))
                masks += [mask, tuple(not b for b in mask)]
                weights += [mass / (2 * draws)] * 2
            break
        per = pair_weight[k] / total / len(subsets)
        masks += subsets
        weights += [per] * len(subsets)
        remaining -= len(subsets)
    return masks, weights


def kernel_shap(
    values: dict[Mask, npt.NDArray[np.float64]],
    samples: Sequence[Mask],
    weights: Sequence[float],
    n: int,
) -> npt.NDArray[np.float64]:
    """Weighted KernelSHAP; sum(phi) = v(N) - v({}) enforced by eliminating the last player."""
    v0 = values[(False,) * n]
    delta = values[(True,) * n] - v0
    z = np.array(samples, dtype=np.float64)  # [m, n]
    y = np.stack([values[m] for m in samples]) - v0 - z[:, -1:] * delta  # [m, T]
    x = z[:, :-1] - z[:, -1:]
    sw = np.sqrt(np.asarray(weights, dtype=np.float64))[:, None]
    head, *_ = np.linalg.lstsq(x * sw, y * sw, rcond=None)  # [n-1, T]
    return np.vstack([head, delta - head.sum(axis=0, keepdims=True)])


class ShapleyExplainer:
    """Attributes a report to its prompt's descriptors with one backend's scorer."""

    def __init__(
        self,
        backend: LLMBackend,
        template: PromptTemplate = DEFAULT_TEMPLATE,
        exact_max_players: int = 8,
        budget: int = 256,
        seed: int = 0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._backend = backend
        self._template = template
        self._exact_max = exact_max_players
        self._budget = budget
        self._seed = seed
        self._clock = clock

    def _messages(
        self,
        evidence: Evidence,
        zones: tuple[ZoneEvidence, ...],
        language: Language,
        players: tuple[str, ...],
        mask: Mask,
    ) -> tuple[Message, ...]:
        keep = [p for p, on in zip(players, mask, strict=True) if on]
        return build_messages(evidence, zones, language, self._template, include=keep)

    def explain(
        self,
        evidence: Evidence,
        zones: tuple[ZoneEvidence, ...],
        language: Language,
        sections: Sections,
    ) -> ShapleyAttribution:
        """zones: the prompt zones the report was generated from (``Report.prompt_zones``);
        language: the generation language; sections: the text to attribute."""
        start = self._clock()
        players = players_for(evidence, zones)
        n = len(players)
        text, spans = continuation_with_spans(sections)
        exact = n <= self._exact_max and 2**n <= self._budget
        masks = list(itertools.product((False, True), repeat=n)) if exact else None
        samples, weights = ([], []) if exact else kernel_masks(n, self._budget, self._seed)
        needed = masks or [(False,) * n, (True,) * n, *samples]
        values: dict[Mask, npt.NDArray[np.float64]] = {}
        first = None
        for mask in needed:
            if mask in values:
                continue
            scores = self._backend.score_tokens(
                self._messages(evidence, zones, language, players, mask), text
            )
            first = first or scores
            if len(scores.logprobs) != len(first.logprobs):
                raise ValueError("continuation tokenised differently across prompts")
            values[mask] = np.asarray(scores.logprobs, dtype=np.float64)
        phi = exact_shapley(values, n) if exact else kernel_shap(values, samples, weights, n)
        assert first is not None
        ends = [*first.offsets[1:], len(text)]
        tokens = tuple(
            TokenAttribution(
                text=text[s:e],
                start=s,
                end=e,
                section=next((k for k, (a, b) in spans.items() if a <= s < b), None),
                values=tuple(float(x) for x in phi[:, j]),
            )
            for j, (s, e) in enumerate(zip(first.offsets, ends, strict=True))
        )
        section_values = {
            name: tuple(
                float(sum(t.values[i] for t in tokens if t.section == name)) for i in range(n)
            )
            for name in SECTION_NAMES
        }
        return ShapleyAttribution(
            players=players,
            values=tuple(float(x) for x in phi.sum(axis=1)),
            section_values=section_values,
            tokens=tokens,
            text=text,
            method="exact" if exact else "kernel",
            evaluations=len(values),
            logprob_empty=float(values[(False,) * n].sum()),
            logprob_full=float(values[(True,) * n].sum()),
            seconds=self._clock() - start,
        )
