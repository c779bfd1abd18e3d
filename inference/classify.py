"""Classifier pre -> predict -> post: calibrated finding probability and decision.

The decision vocabulary (:data:`inference.operating.Decision`) includes ``indeterminate`` for a
probability inside the population's borderline band.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from inference.ood import pool_features
from inference.operating import BinaryDecision, Calibration, Decision, Population
from inference.pixels import FloatImage
from inference.preprocess import batch_inputs
from inference.sessions import FloatArray, VerifiedModel

__all__ = ["BinaryDecision", "Decision", "Population"]


@dataclass(frozen=True)
class ClassifierOutput:
    """Raw outputs for one image: the finding logit and the signed class-activation map.

    ``cam`` is float32 [h, w] (the head applied per position, divided by h*w); its sum plus
    the head bias equals ``logit``. Explanations derive Grad-CAM from it without a backward pass.
    """

    logit: float
    cam: FloatArray
    pooled: FloatArray | None = None
    """The input gate's features (float32 [D]): the ``gate_features`` output when the graph
    has one (pooled activations of the frozen lower trunk), else globally average-pooled
    ``features`` (older classifiers); see :func:`gate_role`."""


@dataclass(frozen=True)
class Classification:
    probability_finding: float
    decision: Decision
    threshold: float
    temperature: float
    logit: float
    band: tuple[float, float] = (0.5, 0.5)
    population: Population = "adult"
    population_source: str = "default"
    calibration_source: str = "manifest"
    calibration_id: str = ""
    calibration_version: str = ""
    offset: float = 0.0

    @property
    def side(self) -> BinaryDecision:
        """The side of the threshold, band ignored (the class explanations explain)."""
        return "finding" if self.probability_finding >= self.threshold else "no_finding"


def calibrated_probability(logit: float, temperature: float, offset: float = 0.0) -> float:
    """sigmoid(logit / temperature + offset), computed stably for large |logit|."""
    z = logit / temperature + offset
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def decide(probability: float, threshold: float) -> BinaryDecision:
    return "finding" if probability >= threshold else "no_finding"


GATE_ROLE = "gate_features"
"""Optional classifier output role: the input gate's features, float32 [N, D], already pooled
(tail-recipe classifiers from 2.1.0: mean + std of the frozen lower trunk's activations)."""


def gate_role(model: VerifiedModel) -> str:
    """The output role the input gate scores: ``gate_features`` when the manifest names one,
    else ``features`` (classifiers exported before it existed, average-pooled here)."""
    return GATE_ROLE if GATE_ROLE in model.manifest.outputs else "features"


def gate_inputs(model: VerifiedModel, out: dict[str, FloatArray]) -> FloatArray:
    """Gate features [N, D] from a run that fetched :func:`gate_role`'s output."""
    role = gate_role(model)
    if role == "features":
        return pool_features(out["features"])
    return np.asarray(out[role], dtype=np.float32).reshape(out[role].shape[0], -1)


def run_classifier(
    model: VerifiedModel, images: list[FloatImage], with_features: bool = True
) -> list[ClassifierOutput]:
    """One batched forward pass over grayscale [0, 1] images (gate features when asked)."""
    batch = batch_inputs(images, model.manifest.input_spec)
    roles = ("logit", "cam", gate_role(model)) if with_features else ("logit", "cam")
    out = model.run(batch, roles)
    logits = out["logit"].reshape(len(images), -1)[:, 0]
    cams = out["cam"].reshape(len(images), *out["cam"].shape[-2:])
    pooled = gate_inputs(model, out) if with_features else None
    return [
        ClassifierOutput(
            logit=float(logits[i]), cam=cams[i], pooled=None if pooled is None else pooled[i]
        )
        for i in range(len(images))
    ]


def manifest_calibration(model: VerifiedModel) -> Calibration:
    """The calibration shipped in the model's manifest."""
    m = model.manifest
    return Calibration(m.temperature, m.operating, "manifest", m.name, m.version)


def postprocess(
    output: ClassifierOutput,
    calibration: Calibration,
    population: Population | None = None,
    population_source: str = "default",
) -> Classification:
    """Temperature, then the population's operating point (its default population if None)."""
    pop = population or calibration.points.default_population
    point = calibration.points.for_population(pop)
    p = calibrated_probability(output.logit, calibration.temperature, calibration.offset)
    return Classification(
        probability_finding=p,
        decision=point.decide(p),
        threshold=point.threshold,
        temperature=calibration.temperature,
        logit=output.logit,
        band=point.band,
        population=pop,
        population_source=population_source if population is not None else "default",
        calibration_source=calibration.source,
        calibration_id=calibration.id,
        calibration_version=calibration.version,
        offset=calibration.offset,
    )


def predict_probabilities(
    model: VerifiedModel,
    images: FloatArray,
    temperature: float | None = None,
    offset: float = 0.0,
) -> FloatArray:
    """Calibrated P(finding) for a stack of grayscale images float32 [N, H, W] in [0, 1]."""
    outs = run_classifier(model, list(images), with_features=False)
    t = model.manifest.temperature if temperature is None else temperature
    return np.asarray([calibrated_probability(o.logit, t, offset) for o in outs], dtype=np.float32)
