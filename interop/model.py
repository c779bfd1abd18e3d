"""What the builders take: plain frozen dataclasses, filled by the service from its outcomes.

Nothing here carries patient data: identifiers come only from :class:`interop.source.SourceImage`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

BoolMask = npt.NDArray[np.bool_]
RgbImage = npt.NDArray[np.uint8]  # [H, W, 3]


@dataclass(frozen=True)
class Algorithm:
    """One model: what DICOM calls the algorithm identification and FHIR the Device."""

    name: str
    version: str
    sha256: str


@dataclass(frozen=True)
class ZoneFinding:
    """Evidence of the explanations in one lung zone; scores in [0, 1], None when not computed."""

    zone_id: str
    name: str  # in the report language
    gradcam: float | None
    lime: float | None
    fused: float


@dataclass(frozen=True)
class Findings:
    """The classifier's answer and the explanation evidence a report was built from."""

    decision: str  # "finding" | "no_finding" (other values are written as given)
    probability_finding: float
    threshold: float
    zones: tuple[ZoneFinding, ...] = ()
    ctr: float | None = None  # cardiothoracic ratio, when the service measured it
    explanation_weak: bool = False


@dataclass(frozen=True)
class ReportText:
    """The report's three sections in its language, and which LLM wrote them."""

    language: str  # "en" | "ru"
    findings: str
    interpretation: str
    recommendations: str
    llm: Algorithm | None = None


@dataclass(frozen=True)
class Segment:
    """One segmented structure at the source image's size."""

    name: str
    mask: BoolMask
    provenance: str  # "predicted" | "derived"


@dataclass(frozen=True)
class Analysis:
    """Everything one call produced, as the builders need it."""

    algorithms: tuple[Algorithm, ...]  # classifier first, then segmenter
    findings: Findings | None = None
    report: ReportText | None = None
    segments: tuple[Segment, ...] = ()
    overlay: RgbImage | None = None  # Grad-CAM overlay at the source image's size
