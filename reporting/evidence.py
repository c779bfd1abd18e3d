"""Evidence: the only input a report is built from.

The reporting package is independent of the vision stack. The service maps the explanation
session's zone descriptors and the classifier decision into these frozen dataclasses; nothing
else (no DICOM tag, file name or request text) can reach a prompt, because the prompt builder
accepts nothing but an :class:`Evidence`.

Zones follow the radiological convention of three horizontal zones per lung, named from the
patient's side (patient's right = image left on a PA/AP view).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

ZoneId = Literal["right_upper", "right_mid", "right_lower", "left_upper", "left_mid", "left_lower"]
Decision = Literal["finding", "no_finding"]
Language = Literal["en", "ru"]

ZONE_IDS: tuple[ZoneId, ...] = get_args(ZoneId)
LANGUAGES: tuple[Language, ...] = get_args(Language)

ZONE_NAMES: dict[Language, dict[ZoneId, str]] = {
    "en": {
        "right_upper": "right upper zone",
        "right_mid": "right mid zone",
        "right_lower": "right lower zone",
        "left_upper": "left upper zone",
        "left_mid": "left mid zone",
        "left_lower": "left lower zone",
    },
    "ru": {
        "right_upper": "правая верхняя зона",
        "right_mid": "правая средняя зона",
        "right_lower": "правая нижняя зона",
        "left_upper": "левая верхняя зона",
        "left_mid": "левая средняя зона",
        "left_lower": "левая нижняя зона",
    },
}


class EvidenceError(ValueError):
    """Evidence breaks its contract (unknown zone, value out of range, duplicate zone)."""


def _check_unit(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise EvidenceError(f"{name} must be a finite number")
    if not 0.0 <= float(value) <= 1.0:
        raise EvidenceError(f"{name} must lie in [0, 1], got {value}")


@dataclass(frozen=True)
class ZoneEvidence:
    """Explanation strength in one lung zone.

    intensity: mean Grad-CAM activation in the zone, normalised to [0, 1].
    lime_weight: LIME weight of the zone's superpixels (signed, unbounded) or None when LIME
        was skipped. fused: the combined descriptor in [0, 1] the explanation stage ranks by.
    """

    zone_id: ZoneId
    intensity: float
    lime_weight: float | None = None
    fused: float = 0.0

    def __post_init__(self) -> None:
        if self.zone_id not in ZONE_IDS:
            raise EvidenceError(f"unknown zone id: {self.zone_id!r}")
        _check_unit("intensity", self.intensity)
        _check_unit("fused", self.fused)
        if self.lime_weight is not None and not math.isfinite(self.lime_weight):
            raise EvidenceError("lime_weight must be finite")


@dataclass(frozen=True)
class Evidence:
    """Classifier decision plus zone descriptors for one radiograph.

    probability_finding: calibrated probability of a finding in [0, 1]; decision must agree
    with it and ``threshold`` (finding iff probability >= threshold). explanation_weak: the
    explanation stage judged the maps too weak/diffuse to localise anything; then no zone is
    "supported" and the report must not name zones. view: PA/AP/... or None.
    """

    decision: Decision
    probability_finding: float
    threshold: float
    zones: tuple[ZoneEvidence, ...]
    explanation_weak: bool = False
    view: str | None = None

    def __post_init__(self) -> None:
        if self.decision not in get_args(Decision):
            raise EvidenceError(f"unknown decision: {self.decision!r}")
        _check_unit("probability_finding", self.probability_finding)
        _check_unit("threshold", self.threshold)
        expected: Decision = (
            "finding" if self.probability_finding >= self.threshold else "no_finding"
        )
        if expected != self.decision:
            raise EvidenceError("decision disagrees with probability_finding and threshold")
        ids = [z.zone_id for z in self.zones]
        if len(set(ids)) != len(ids):
            raise EvidenceError("duplicate zone ids")
        if self.view is not None and (len(self.view) > 8 or not self.view.isalnum()):
            # The view label is the only free-text field; keep it to a short code so it
            # can never carry instructions into a prompt.
            raise EvidenceError("view must be a short alphanumeric code such as PA or AP")

    @property
    def confidence(self) -> float:
        """Probability of the decided class, in [0.5, 1] when threshold is 0.5."""
        p = self.probability_finding
        return p if self.decision == "finding" else 1.0 - p

    def supported_zones(self, min_intensity: float, max_zones: int = 6) -> tuple[ZoneEvidence, ...]:
        """Zones a report may name: intensity >= min_intensity, strongest first.

        Returns () when the explanation is weak: a weak map localises nothing.
        """
        if self.explanation_weak:
            return ()
        chosen = [z for z in self.zones if z.intensity >= min_intensity]
        chosen.sort(key=lambda z: (-z.intensity, ZONE_IDS.index(z.zone_id)))
        return tuple(chosen[:max_zones])
