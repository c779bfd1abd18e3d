"""The input suitability gate: cheap rules first, then the learned score on the features.

Call order in a use case: :meth:`InputGate.precheck` right after decoding (no model has run),
then :meth:`InputGate.finish` with the classifier's gate features (``ClassifierOutput.pooled``:
``gate_features`` when the classifier has it, else pooled ``features``), before any model output
leaves the service. Either raises :class:`inference.errors.NotAChestRadiograph`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inference.intake import Radiograph
from inference.ood import FloatArray, OodModel
from inference.suitability import Flag, NotAChestRadiograph, RuleConfig, check_rules


@dataclass(frozen=True)
class InputQuality:
    """Soft observations on an accepted upload (answered normally, carried by responses)."""

    flags: tuple[Flag, ...] = ()
    ood_score: float | None = None
    ood_threshold: float | None = None
    nearest_variant: str | None = None


@dataclass(frozen=True)
class RuleFlags:
    """What :meth:`InputGate.precheck` found on an image that passed the rules."""

    flags: tuple[Flag, ...] = ()


@dataclass(frozen=True)
class InputGate:
    rules: RuleConfig = field(default_factory=RuleConfig)
    ood: OodModel | None = None

    @property
    def version(self) -> str:
        return f"rules+ood-{self.ood.version}" if self.ood is not None else "rules"

    def precheck(self, radiograph: Radiograph, view_index: int | None = None) -> RuleFlags:
        result = check_rules(
            radiograph.pixels, radiograph.colourfulness, self.rules, radiograph.source_size
        )
        if result.reason is not None:
            raise NotAChestRadiograph(result.reason, view_index)
        return RuleFlags(result.flags)

    def finish(
        self, pre: RuleFlags, pooled: FloatArray | None, view_index: int | None = None
    ) -> InputQuality:
        if self.ood is None or pooled is None:
            return InputQuality(flags=pre.flags)
        verdict = self.ood.assess(pooled)
        if verdict.rejected:
            raise NotAChestRadiograph("out_of_distribution", view_index)
        return InputQuality(
            flags=pre.flags + tuple(f for f in verdict.flags if f not in pre.flags),
            ood_score=round(verdict.score, 4),
            ood_threshold=round(verdict.threshold, 4),
            nearest_variant=verdict.nearest,
        )
