"""Classifier pre -> predict -> post: calibrated finding probability and decision."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from inference.pixels import FloatImage
from inference.preprocess import batch_inputs
from inference.sessions import FloatArray, VerifiedModel

Decision = Literal["finding", "no_finding"]


@dataclass(frozen=True)
class ClassifierOutput:
    """Raw outputs for one image: the finding logit and the signed class-activation map.

    ``cam`` is float32 [h, w] (the head applied per position, divided by h*w); its sum plus
    the head bias equals ``logit``. Explanations derive Grad-CAM from it without a backward pass.
    """

    logit: float
    cam: FloatArray


@dataclass(frozen=True)
class Classification:
    probability_finding: float
    decision: Decision
    threshold: float
    temperature: float
    logit: float


def calibrated_probability(logit: float, temperature: float) -> float:
    """Temperature-scaled sigmoid, computed stably for large |logit|."""
    z = logit / temperature
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def decide(probability: float, threshold: float) -> Decision:
    return "finding" if probability >= threshold else "no_finding"


def run_classifier(model: VerifiedModel, images: list[FloatImage]) -> list[ClassifierOutput]:
    """One batched forward pass over grayscale [0, 1] images."""
    batch = batch_inputs(images, model.manifest.input_spec)
    out = model.run(batch, ("logit", "cam"))
    logits = out["logit"].reshape(len(images), -1)[:, 0]
    cams = out["cam"].reshape(len(images), *out["cam"].shape[-2:])
    return [ClassifierOutput(logit=float(logits[i]), cam=cams[i]) for i in range(len(images))]


def postprocess(output: ClassifierOutput, model: VerifiedModel) -> Classification:
    m = model.manifest
    p = calibrated_probability(output.logit, m.temperature)
    return Classification(
        probability_finding=p,
        decision=decide(p, m.threshold),
        threshold=m.threshold,
        temperature=m.temperature,
        logit=output.logit,
    )


def predict_probabilities(model: VerifiedModel, images: FloatArray) -> FloatArray:
    """Calibrated P(finding) for a stack of grayscale images float32 [N, H, W] in [0, 1]."""
    outs = run_classifier(model, list(images))
    t = model.manifest.temperature
    return np.asarray([calibrated_probability(o.logit, t) for o in outs], dtype=np.float32)
