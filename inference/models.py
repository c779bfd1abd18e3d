"""Typed models that carry their role's contract: :class:`Classifier` and :class:`Segmenter`.

A :class:`~inference.sessions.VerifiedModel` proves the artifact is the one its manifest names
(sha256) and that the graph has the manifest's input and output names. These subclasses add
what their *role* needs, checked when the object is built (statically from the graph's
declared shapes) and at :meth:`load` (one probe run, for dimensions the graph leaves
symbolic): a model with the wrong contract never becomes ready, and callers stop reaching into
manifests to learn labels or shapes.

Classifier contract: input float32 [N, C, S, S]; ``logit`` float32 [N, 1]; ``features``
float32 [N, F, h, w] with a fixed F (the input gate's feature size); ``cam`` float32
[N, 1, h, w] on the same grid as ``features``; labels exactly :data:`CLASSIFIER_LABELS`;
optionally ``gate_features`` float32 [N, D] with a fixed D (the input gate's features when
present, see :func:`inference.classify.gate_role`).
Segmenter contract: input float32 [N, C, S, S]; ``logits`` float32 [N, K, H, W] with K equal to
the number of labels, which include every :data:`SEGMENTER_LABELS` entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from inference.anatomy import Anatomy, segment
from inference.classify import (
    GATE_ROLE,
    ClassifierOutput,
    gate_role,
    manifest_calibration,
    predict_probabilities,
    run_classifier,
)
from inference.errors import ModelError
from inference.operating import Calibration
from inference.pixels import FloatImage
from inference.sessions import FloatArray, RuntimeOptions, VerifiedModel, load_verified_model
from inference.vocabulary import CLASSIFIER_LABELS, SEGMENTER_LABELS

Shape = list[int | str | None]


def _declared(model: VerifiedModel, role: str) -> tuple[Shape, str]:
    """Declared shape and element type of the graph output that plays ``role``."""
    name = model.manifest.outputs[role]
    out = next(o for o in model.session.get_outputs() if o.name == name)
    return list(out.shape), str(out.type)


def _refuse(model: VerifiedModel, what: str) -> ModelError:
    return ModelError(f"{model.manifest.name}: {what}")


def _check_float_rank(model: VerifiedModel, role: str, rank: int) -> Shape:
    shape, dtype = _declared(model, role)
    if dtype != "tensor(float)":
        raise _refuse(model, f"output '{role}' must be float32")
    if len(shape) != rank:
        raise _refuse(model, f"output '{role}' must have rank {rank}")
    return shape


def _fixed(dim: int | str | None) -> int | None:
    return dim if isinstance(dim, int) else None


def _probe(model: VerifiedModel, roles: tuple[str, ...]) -> dict[str, FloatArray]:
    """One run on a mid-grey image: the shapes the graph really produces."""
    spec = model.manifest.input_spec
    batch = np.full((1, spec.channels, spec.size, spec.size), 0.5, dtype=np.float32)
    try:
        return model.run(batch, roles)
    except Exception as exc:  # ORT raises its own untyped errors on shape mismatches
        raise _refuse(model, "the graph does not run on its declared input") from exc


@dataclass(frozen=True)
class _RoleModel(VerifiedModel):
    """A verified model whose role contract is checked when built and by one probe run."""

    @classmethod
    def load(cls, manifest_path: Path, options: RuntimeOptions) -> Self:
        """Verify the artifact, then its role contract, including one probe run."""
        model = cls.of(load_verified_model(manifest_path, options))
        model.probe()
        return model

    @classmethod
    def of(cls, model: VerifiedModel) -> Self:
        return cls(manifest=model.manifest, session=model.session, providers=model.providers)

    def probe(self) -> None:
        """Check the dimensions only a run can show (the graph leaves them symbolic)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Classifier(_RoleModel):
    """The finding classifier (see the module docstring for its contract)."""

    def __post_init__(self) -> None:
        if self.manifest.kind != "classifier":
            raise _refuse(self, "manifest is not of kind 'classifier'")
        if self.manifest.labels != CLASSIFIER_LABELS:
            raise _refuse(self, f"classifier labels must be {list(CLASSIFIER_LABELS)}")
        logit = _check_float_rank(self, "logit", 2)
        features = _check_float_rank(self, "features", 4)
        cam = _check_float_rank(self, "cam", 4)
        if _fixed(logit[1]) not in (None, 1):
            raise _refuse(self, "output 'logit' must be [N, 1]")
        if _fixed(features[1]) is None:
            raise _refuse(self, "output 'features' must have a fixed channel count")
        if _fixed(cam[1]) not in (None, 1):
            raise _refuse(self, "output 'cam' must have one channel")
        for f, c in zip(features[2:], cam[2:], strict=True):
            if _fixed(f) is not None and _fixed(c) is not None and f != c:
                raise _refuse(self, "outputs 'cam' and 'features' must share their grid")
        if self.gate_role == GATE_ROLE:
            gate = _check_float_rank(self, GATE_ROLE, 2)
            if _fixed(gate[1]) is None:
                raise _refuse(self, f"output '{GATE_ROLE}' must have a fixed size")

    def probe(self) -> None:
        roles = ("logit", "features", "cam") + ((GATE_ROLE,) if self.gate_role == GATE_ROLE else ())
        out = _probe(self, roles)
        logit, features, cam = out["logit"], out["features"], out["cam"]
        if logit.shape != (1, 1):
            raise _refuse(self, "output 'logit' must be [N, 1]")
        if cam.ndim != 4 or cam.shape[1] != 1 or cam.shape[2:] != features.shape[2:]:
            raise _refuse(self, "output 'cam' must be [N, 1, h, w] on the features' grid")
        if features.shape[1] != self.feature_dim:
            raise _refuse(self, "output 'features' has another channel count than declared")
        if GATE_ROLE in out and out[GATE_ROLE].shape != (1, self.gate_feature_dim):
            raise _refuse(self, f"output '{GATE_ROLE}' has another size than declared")

    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    @property
    def feature_dim(self) -> int:
        """F of ``features`` [N, F, h, w]: the size of the input gate's pooled features."""
        dim = _fixed(_declared(self, "features")[0][1])
        assert dim is not None  # checked in __post_init__
        return dim

    @property
    def gate_role(self) -> str:
        """The output the input gate scores (``gate_features``, else ``features``)."""
        return gate_role(self)

    @property
    def gate_feature_dim(self) -> int:
        """D of the input gate's features: ``gate_features`` [N, D], else F of ``features``."""
        if self.gate_role != GATE_ROLE:
            return self.feature_dim
        dim = _fixed(_declared(self, GATE_ROLE)[0][1])
        assert dim is not None  # checked in __post_init__
        return dim

    @property
    def calibration(self) -> Calibration:
        """Temperature and operating points shipped in the manifest."""
        return manifest_calibration(self)

    def predict(
        self, images: list[FloatImage], with_features: bool = True
    ) -> list[ClassifierOutput]:
        """Logit and CAM (and pooled features) for grayscale float32 [H, W] images in [0, 1]."""
        return run_classifier(self, images, with_features)

    def probabilities(
        self, images: FloatArray, temperature: float | None = None, offset: float = 0.0
    ) -> FloatArray:
        """Calibrated P(finding), float32 [N], for float32 [N, H, W] images in [0, 1]."""
        return predict_probabilities(self, images, temperature, offset)


@dataclass(frozen=True)
class Segmenter(_RoleModel):
    """The chest segmenter (see the module docstring for its contract)."""

    def __post_init__(self) -> None:
        if self.manifest.kind != "segmenter":
            raise _refuse(self, "manifest is not of kind 'segmenter'")
        missing = [x for x in SEGMENTER_LABELS if x not in self.manifest.labels]
        if missing:
            raise _refuse(self, f"segmenter labels must include {list(SEGMENTER_LABELS)}")
        logits = _check_float_rank(self, "logits", 4)
        if _fixed(logits[1]) not in (None, len(self.labels)):
            raise _refuse(self, "output 'logits' must have one channel per label")

    def probe(self) -> None:
        logits = _probe(self, ("logits",))["logits"]
        # Shipped exports leave K symbolic (a Resize output), so only a run can tell.
        if logits.ndim != 4 or logits.shape[1] != len(self.labels):
            raise _refuse(self, "output 'logits' must have one channel per label")

    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    def segment(self, image: FloatImage) -> Anatomy:
        """Structures of one grayscale float32 [H, W] radiograph in [0, 1], at its own size."""
        return segment(self, image)
