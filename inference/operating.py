"""Operating points: how a calibrated probability becomes a decision, per patient population.

The classifier manifest may carry (schema defined here, parsed strictly)::

    "operating_points": {
      "adult":     {"threshold": 0.62, "band": [0.52, 0.72], "basis": "free text"},
      "pediatric": {"threshold": 0.80, "band": [0.70, 0.88]}
    },
    "default_population": "adult"

``threshold`` is on ``sigmoid(logit / temperature)``. ``band`` is the borderline interval
``[lo, hi]`` with ``lo <= threshold <= hi``: a probability in ``[lo, hi)`` is answered
``indeterminate``, below ``lo`` ``no_finding``, at or above ``hi`` ``finding``. A zero-width band
(``lo == hi == threshold``) reproduces the plain threshold decision. Manifests without
``operating_points`` (schema before December 2026) get one zero-width point per population at
their ``threshold``, so they keep deciding exactly as before.

A site calibration file (``training.recalibrate``) uses the same ``operating_points`` shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

# The decision vocabulary is defined once, in inference.vocabulary; re-exported here.
from inference.vocabulary import BinaryDecision as BinaryDecision
from inference.vocabulary import Decision as Decision
from inference.vocabulary import Population as Population

POPULATIONS: tuple[Population, ...] = get_args(Population)
PEDIATRIC_BELOW_YEARS = 18.0


class OperatingPointError(ValueError):
    """An operating-point block is malformed (manifest or calibration file)."""


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    band: tuple[float, float]
    basis: str = ""

    def __post_init__(self) -> None:
        lo, hi = self.band
        if not 0.0 < self.threshold < 1.0:
            raise OperatingPointError("threshold must lie in (0, 1)")
        if not 0.0 < lo <= self.threshold <= hi < 1.0:
            raise OperatingPointError("band must satisfy 0 < lo <= threshold <= hi < 1")

    def decide(self, probability: float) -> Decision:
        lo, hi = self.band
        if lo == hi:
            return "finding" if probability >= self.threshold else "no_finding"
        if probability >= hi:
            return "finding"
        if probability < lo:
            return "no_finding"
        return "indeterminate"

    def binary(self, probability: float) -> BinaryDecision:
        """The side of the threshold, ignoring the band (what explanations explain)."""
        return "finding" if probability >= self.threshold else "no_finding"


@dataclass(frozen=True)
class OperatingPoints:
    adult: OperatingPoint
    pediatric: OperatingPoint
    default_population: Population = "adult"

    def for_population(self, population: Population) -> OperatingPoint:
        return self.adult if population == "adult" else self.pediatric

    def as_dict(self) -> dict[str, Any]:
        return {
            "operating_points": {
                name: {
                    "threshold": p.threshold,
                    "band": list(p.band),
                    **({"basis": p.basis} if p.basis else {}),
                }
                for name, p in (("adult", self.adult), ("pediatric", self.pediatric))
            },
            "default_population": self.default_population,
        }


def _number(value: Any, what: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise OperatingPointError(f"{what} must be a number")
    return float(value)


def _point(data: Any, name: str) -> OperatingPoint:
    if not isinstance(data, Mapping):
        raise OperatingPointError(f"operating_points.{name} must be an object")
    threshold = _number(data.get("threshold"), f"operating_points.{name}.threshold")
    band = data.get("band", [threshold, threshold])
    if not isinstance(band, list) or len(band) != 2:
        raise OperatingPointError(f"operating_points.{name}.band must be [lo, hi]")
    basis = data.get("basis", "")
    if not isinstance(basis, str):
        raise OperatingPointError(f"operating_points.{name}.basis must be a string")
    lo, hi = (_number(v, f"operating_points.{name}.band") for v in band)
    return OperatingPoint(threshold=threshold, band=(lo, hi), basis=basis)


def parse_operating_points(data: Mapping[str, Any], fallback_threshold: float) -> OperatingPoints:
    """Read ``operating_points`` / ``default_population`` from a manifest or calibration file."""
    block = data.get("operating_points")
    default = data.get("default_population", "adult")
    if default not in POPULATIONS:
        raise OperatingPointError("default_population must be adult or pediatric")
    if block is None:
        legacy = OperatingPoint(fallback_threshold, (fallback_threshold, fallback_threshold))
        return OperatingPoints(legacy, legacy, default)
    if not isinstance(block, Mapping) or set(block) != set(POPULATIONS):
        raise OperatingPointError("operating_points must have exactly adult and pediatric")
    return OperatingPoints(
        _point(block["adult"], "adult"), _point(block["pediatric"], "pediatric"), default
    )


def population_for_age(age_years: float | None) -> Population | None:
    """adult / pediatric from an age in years (None when unknown)."""
    if age_years is None:
        return None
    return "pediatric" if age_years < PEDIATRIC_BELOW_YEARS else "adult"


def choose_population(
    requested: Population | None, age_years: float | None, default: Population
) -> tuple[Population, str]:
    """Population and where it came from: query parameter > DICOM PatientAge > default."""
    if requested is not None:
        return requested, "request"
    from_age = population_for_age(age_years)
    if from_age is not None:
        return from_age, "dicom_age"
    return default, "default"


@dataclass(frozen=True)
class Calibration:
    """What turns a logit into a decision: temperature (and offset) plus operating points, and
    their origin.

    ``source`` is ``manifest`` (shipped with the model) or ``site`` (a local recalibration file,
    ``training.recalibrate``); ``id`` and ``version`` name it in /version and every response.
    """

    temperature: float
    points: OperatingPoints
    source: Literal["manifest", "site"] = "manifest"
    id: str = ""
    version: str = ""
    # sigmoid(logit / temperature + offset): a site's recalibration may also shift the logit
    # (Platt scaling) when its prevalence differs from the training mix; shipped models use 0
    offset: float = 0.0
