"""The service's shared vocabulary, defined once: decision labels, lung zones and model labels.

Only ``Literal`` types and constant tuples: importing this module loads no model runtime, so
the reporting package (independent of the vision stack) shares it with inference and explain
instead of keeping copies that could drift.
"""

from __future__ import annotations

from typing import Literal, get_args

BinaryDecision = Literal["finding", "no_finding"]
"""A side of the classifier's threshold; also what an explanation explains (its target)."""
Decision = Literal["finding", "no_finding", "indeterminate"]
"""A decision as answered: ``indeterminate`` inside the population's borderline band."""
BINARY_DECISIONS: tuple[BinaryDecision, ...] = get_args(BinaryDecision)

Population = Literal["adult", "pediatric"]
"""Whose operating point (threshold and borderline band) a decision was made at."""

CLASSIFIER_LABELS: tuple[str, ...] = ("finding",)
"""The classifier's one output, in order: the logit of P(finding)."""

SegmenterLabel = Literal["right_lung", "left_lung", "heart_mediastinum"]
SEGMENTER_LABELS: tuple[SegmenterLabel, ...] = get_args(SegmenterLabel)
"""Structures the segmenter must predict (a manifest may list more channels)."""

ZoneId = Literal["right_upper", "right_mid", "right_lower", "left_upper", "left_mid", "left_lower"]
"""Three horizontal zones per lung, named from the patient's side (patient's right = image
left on a PA/AP view)."""
ZONE_IDS: tuple[ZoneId, ...] = get_args(ZoneId)
