"""Evidence: the only input a report is built from.

The reporting package is independent of the vision stack (it shares only the vocabulary of
:mod:`inference.vocabulary`: decision labels and zone ids, plain literals). The service maps
the explanation session's zone descriptors and the classifier decision into these frozen
dataclasses; nothing else (no DICOM tag, file name or request text) can reach a prompt,
because the prompt builder accepts nothing but an :class:`Evidence`.

Zones follow the radiological convention of three horizontal zones per lung, named from the
patient's side (patient's right = image left on a PA/AP view).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal, get_args

from inference.vocabulary import ZONE_IDS as ZONE_IDS  # re-exported
from inference.vocabulary import BinaryDecision, Population
from inference.vocabulary import ZoneId as ZoneId

Decision = BinaryDecision  # a report is written for one side of the threshold
Language = Literal["en", "ru"]

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


QUALITY_FLAG_NAMES: dict[Language, dict[str, str]] = {
    "en": {
        "heavy_collimation": "heavy collimation",
        "inverted": "inverted grey scale",
        "rotated": "rotated image",
        "lateral_view": "lateral view",
        "out_of_distribution": "unlike the training radiographs",
        "low_confidence_segmentation": "uncertain lung outlines",
    },
    "ru": {
        "heavy_collimation": "сильная коллимация",
        "inverted": "инвертированная шкала серого",
        "rotated": "повёрнутое изображение",
        "lateral_view": "боковая проекция",
        "out_of_distribution": "не похоже на обучающие рентгенограммы",
        "low_confidence_segmentation": "неуверенные контуры лёгких",
    },
}
_FLAG = re.compile(r"[a-z][a-z_]{0,39}")
CTR_UPPER_NORMAL = 0.5
# The measured CTR's error against human masks (bench/RESULTS.md, "Cardiothoracic ratio"):
# within this margin of 0.5 the size call could flip, so neither "normal" nor "enlarged" is said.
CTR_MARGIN = 0.03
# Grad-CAM and LIME "agree" on a zone when each scores it at least this much (their [0, 1]
# zone scores are normalised to each map's own peak, so one floor serves both).
AGREEMENT_MIN = 0.25


def flag_name(flag: str, language: Language) -> str:
    """Display name of a quality flag (unknown flags: the identifier with spaces)."""
    return QUALITY_FLAG_NAMES[language].get(flag, flag.replace("_", " "))


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

    intensity: the zone's score in [0, 1] the report ranks and names zones by (the fused
        Grad-CAM/LIME descriptor when LIME ran, else the Grad-CAM mean).
    lime_weight: LIME intensity of the zone (>= 0) or None when LIME was skipped.
    fused: the combined descriptor in [0, 1] the explanation stage ranks by.
    gradcam: mean lung-restricted Grad-CAM in the zone, [0, 1], or None.
    """

    def agreed(self, min_intensity: float) -> bool:
        """Grad-CAM and LIME both point at this zone (each >= ``min_intensity``)."""
        return (
            self.gradcam is not None
            and self.lime_weight is not None
            and self.gradcam >= min_intensity
            and self.lime_weight >= min_intensity
        )

    zone_id: ZoneId
    intensity: float
    lime_weight: float | None = None
    fused: float = 0.0
    gradcam: float | None = None

    def __post_init__(self) -> None:
        if self.zone_id not in ZONE_IDS:
            raise EvidenceError(f"unknown zone id: {self.zone_id!r}")
        _check_unit("intensity", self.intensity)
        _check_unit("fused", self.fused)
        if self.gradcam is not None:
            _check_unit("gradcam", self.gradcam)
        if self.lime_weight is not None and not math.isfinite(self.lime_weight):
            raise EvidenceError("lime_weight must be finite")


@dataclass(frozen=True)
class Measurements:
    """Measured anatomy from the segmentation masks (all unitless ratios).

    ctr: cardiothoracic ratio = widest horizontal extent of the heart/mediastinum mask / widest
        internal thoracic width between the lung masks' outer borders (None when not
        measurable). ctr_reliable: the masks passed the plausibility checks and the view is
        not AP (AP magnifies the heart); ctr_notes: why not, as short identifiers.
    right_lung_share / left_lung_share: each lung's share of the total lung mask area in
    [0, 1] (None without both lungs); lung_ratio: right / left area.
    view_pa: the film is known to be a PA projection. Only then may a CTR above 0.5 call the
    heart enlarged: an AP film magnifies the heart, and most uploads do not say their
    projection (on the adult no-finding test films, unknown projection, a third measured
    0.53 or more).
    """

    ctr: float | None
    ctr_reliable: bool
    ctr_notes: tuple[str, ...] = ()
    right_lung_share: float | None = None
    left_lung_share: float | None = None
    lung_ratio: float | None = None
    view_pa: bool = False

    def __post_init__(self) -> None:
        for name in ("ctr", "right_lung_share", "left_lung_share"):
            value = getattr(self, name)
            if value is not None:
                _check_unit(name, value)
        if self.lung_ratio is not None and not (
            math.isfinite(self.lung_ratio) and self.lung_ratio > 0
        ):
            raise EvidenceError("lung_ratio must be a positive finite number")
        if any(not _FLAG.fullmatch(n) for n in self.ctr_notes):
            raise EvidenceError("ctr_notes must be short snake_case identifiers")
        if self.ctr is None and self.ctr_reliable:
            raise EvidenceError("a missing CTR cannot be reliable")

    @property
    def heart_normal(self) -> bool | None:
        """True / False when a reliable CTR is clearly below / above 0.5 (by ``CTR_MARGIN``);
        None when it is unreliable, missing or too close to 0.5 to call."""
        if self.ctr is None or not self.ctr_reliable:
            return None
        if self.ctr < CTR_UPPER_NORMAL - CTR_MARGIN:
            return True
        if self.ctr >= CTR_UPPER_NORMAL + CTR_MARGIN and self.view_pa:
            return False
        return None

    @property
    def ctr_close(self) -> bool:
        """A reliable CTR within ``CTR_MARGIN`` of 0.5 on either side: too close to call."""
        return (
            self.ctr is not None
            and self.ctr_reliable
            and CTR_UPPER_NORMAL - CTR_MARGIN <= self.ctr < CTR_UPPER_NORMAL + CTR_MARGIN
        )

    @property
    def projection_unknown_high(self) -> bool:
        """A reliable CTR clearly above 0.5 that is not called because the film is not known
        to be PA (see ``view_pa``)."""
        return (
            self.ctr is not None
            and self.ctr_reliable
            and not self.view_pa
            and self.ctr >= CTR_UPPER_NORMAL + CTR_MARGIN
        )


@dataclass(frozen=True)
class Evidence:
    """Classifier decision plus zone descriptors for one radiograph.

    probability_finding: calibrated probability of a finding in [0, 1]; decision must agree
    with it and ``threshold`` (finding iff probability >= threshold: the side of the threshold
    the explanations explain). explanation_weak: the explanation stage judged the maps too
    weak/diffuse to localise anything; then no zone is "supported" and the report must not name
    zones. view: PA/AP/... or None. band: the borderline interval [lo, hi] around the threshold
    (a probability in [lo, hi) is "indeterminate"); None = no band. quality_flags: soft
    observations of the input gate (the image was still analysed); unsuitable: reasons the
    image cannot be analysed at all (the report then says so and nothing else).
    measurements: CTR and lung areas, or None when not measured.
    population: whose operating point ``threshold`` is (adults or children), None = not said;
    population_assumed: it is the service's default, not taken from the patient's age (the
    report says so: a child's film read at the adult threshold must not look deliberate).
    """

    decision: Decision
    probability_finding: float
    threshold: float
    zones: tuple[ZoneEvidence, ...]
    explanation_weak: bool = False
    view: str | None = None
    band: tuple[float, float] | None = None
    quality_flags: tuple[str, ...] = ()
    unsuitable: tuple[str, ...] = ()
    measurements: Measurements | None = None
    population: Population | None = None
    population_assumed: bool = False

    def __post_init__(self) -> None:
        if self.band is not None:
            lo, hi = self.band
            _check_unit("band", lo)
            _check_unit("band", hi)
            if not lo <= self.threshold <= hi:
                raise EvidenceError("band must satisfy lo <= threshold <= hi")
        for flag in (*self.quality_flags, *self.unsuitable):
            if not _FLAG.fullmatch(flag):
                # Flags reach the prompt: identifiers only, never free text.
                raise EvidenceError("quality flags must be short snake_case identifiers")
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

    @property
    def indeterminate(self) -> bool:
        """The probability lies inside the borderline band."""
        if self.band is None or self.band[0] == self.band[1]:
            return False
        return self.band[0] <= self.probability_finding < self.band[1]

    @property
    def decision_band(self) -> Literal["finding", "no_finding", "indeterminate"]:
        return "indeterminate" if self.indeterminate else self.decision

    def agreed_zones(self, min_intensity: float) -> tuple[ZoneEvidence, ...]:
        """Supported zones on which Grad-CAM and LIME agree (empty when the map is weak)."""
        return tuple(z for z in self.supported_zones(min_intensity) if z.agreed(AGREEMENT_MIN))

    def supported_zones(self, min_intensity: float, max_zones: int = 6) -> tuple[ZoneEvidence, ...]:
        """Zones a report may name: intensity >= min_intensity, strongest first.

        Returns () when the explanation is weak: a weak map localises nothing.
        """
        if self.explanation_weak:
            return ()
        chosen = [z for z in self.zones if z.intensity >= min_intensity]
        chosen.sort(key=lambda z: (-z.intensity, ZONE_IDS.index(z.zone_id)))
        return tuple(chosen[:max_zones])
