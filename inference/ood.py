"""Learned input gate: class-conditional Mahalanobis distance on pooled classifier activations.

Which output it scores is recorded in the gate manifest (``features_output``, a classifier
output role): ``gate_features`` (mean + std pooled activations of the frozen ImageNet lower
trunk, tail-recipe classifiers from 2.1.0: fine-tuning collapsed the trained layers' feature
space for non-radiographs) or ``features`` (average-pooled last block; gates fitted before
``features_output`` existed, which do not record it).

Fitted by ``python -m training gate`` (see :mod:`training.gate`) on training radiographs and on
generated variants of them (inverted, rotated 90/180/270, lateral-like half crops and, from
2.1.0, heavy collimation), as in
Lee et al., "A Simple Unified Framework for Detecting Out-of-Distribution Samples", NeurIPS 2018:
one mean per variant class, one tied covariance shrunk with Ledoit-Wolf. Stored low-rank: the
top ``k`` eigenvectors of the covariance exactly, the rest as one averaged eigenvalue.

* ``score`` = sqrt(min over classes of the squared distance / feature dimension): about 1 for
  radiographs like the training ones, large for anything else. Above ``threshold`` (the 99th
  percentile of upright validation radiographs) the upload is refused as out of distribution.
* The nearest class (posterior > ``flag_probability``) names a soft flag: ``inverted``,
  ``rotated``, ``lateral_view`` or ``heavy_collimation``; ``upright`` gives none.

Files (``weights/input_gate.manifest.json`` + ``input_gate.npz``) are bound to the classifier's
sha256: :func:`load_ood_model` refuses a gate fitted for another classifier. The arrays are read
with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from inference.errors import ModelError
from inference.suitability import Flag

FloatArray = npt.NDArray[np.float32]
CLASS_FLAGS: dict[str, Flag | None] = {
    "upright": None,
    "inverted": "inverted",
    "rot90": "rotated",
    "rot180": "rotated",
    "rot270": "rotated",
    "lateral_like": "lateral_view",
    "collimated": "heavy_collimation",  # gates fitted from 2.1.0 (frozen-feature score)
}
ARRAYS = ("means", "components", "eigenvalues", "residual_variance", "log_priors")


@dataclass(frozen=True)
class OodVerdict:
    score: float
    threshold: float
    nearest: str
    probability: float
    flags: tuple[Flag, ...]

    @property
    def rejected(self) -> bool:
        return not self.score <= self.threshold  # NaN is refused too


@dataclass(frozen=True)
class OodModel:
    """Arrays of the fitted gate; see the module docstring for the score."""

    classes: tuple[str, ...]
    means: FloatArray  # [m, C]
    components: FloatArray  # [k, C], orthonormal rows
    eigenvalues: FloatArray  # [k]
    residual_variance: float
    log_priors: FloatArray  # [m]
    threshold: float
    flag_probability: float = 0.5
    version: str = ""
    features_output: str = "features"
    """The classifier output role the gate was fitted on (see the module docstring)."""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def feature_dim(self) -> int:
        return int(self.means.shape[1])

    def __post_init__(self) -> None:
        # float64 copies once, not per request (the score is a few small matrix products).
        object.__setattr__(self, "_means64", self.means.astype(np.float64))
        object.__setattr__(self, "_proj64", np.ascontiguousarray(self.components.T, np.float64))
        object.__setattr__(self, "_eig64", self.eigenvalues.astype(np.float64))

    def distances(self, pooled: FloatArray) -> FloatArray:
        """Squared Mahalanobis distance of pooled features [N, C] to every class mean: [N, m]."""
        x = np.asarray(pooled, dtype=np.float64)
        d = x[:, None, :] - self._means64[None, :, :]  # type: ignore[attr-defined]  # [N, m, C]
        # einsum, not ``@``: a BLAS call here spun up OpenBLAS's thread pool next to ONNX
        # Runtime's and took 0.4-130 ms on 2 shared cores; the plain loop is ~1 ms every time.
        proj = np.einsum("nmc,ck->nmk", d, self._proj64)  # type: ignore[attr-defined]
        inside = (proj**2 / self._eig64).sum(-1)  # type: ignore[attr-defined]
        residual = np.maximum((d**2).sum(-1) - (proj**2).sum(-1), 0.0)
        out: FloatArray = (inside + residual / self.residual_variance).astype(np.float32)
        return out

    def scores(self, pooled: FloatArray) -> FloatArray:
        dist = self.distances(pooled)
        out: FloatArray = np.sqrt(dist.min(axis=1) / self.feature_dim).astype(np.float32)
        return out

    def assess(self, pooled: FloatArray) -> OodVerdict:
        """Verdict for one image's pooled features (float32 [C])."""
        dist = self.distances(np.asarray(pooled, dtype=np.float32).reshape(1, -1))[0]
        score = float(np.sqrt(dist.min() / self.feature_dim))
        logits = self.log_priors.astype(np.float64) - 0.5 * dist.astype(np.float64)
        post = np.exp(logits - logits.max())
        post /= post.sum()
        best = int(post.argmax())
        nearest = self.classes[best]
        flag = CLASS_FLAGS.get(nearest)
        flags: tuple[Flag, ...] = (
            (flag,) if flag is not None and post[best] > self.flag_probability else ()
        )
        return OodVerdict(score, self.threshold, nearest, float(post[best]), flags)


def pool_features(features: FloatArray) -> FloatArray:
    """Global average pool: float32 [N, C, h, w] -> [N, C]."""
    pooled: FloatArray = np.asarray(features, dtype=np.float32).mean(axis=(2, 3))
    return pooled


def save_ood_model(model: OodModel, manifest_path: Path, classifier_sha256: str) -> None:
    """Write ``<name>.npz`` and its manifest (bound to ``classifier_sha256``)."""
    npz_path = manifest_path.with_name(manifest_path.name.replace(".manifest.json", ".npz"))
    arrays = {
        "means": model.means.astype(np.float32),
        "components": model.components.astype(np.float32),
        "eigenvalues": model.eigenvalues.astype(np.float32),
        "residual_variance": np.asarray([model.residual_variance], dtype=np.float32),
        "log_priors": model.log_priors.astype(np.float32),
    }
    with npz_path.open("wb") as fh:
        np.savez(fh, allow_pickle=False, **arrays)
    manifest = {
        "schema_version": 1,
        "kind": "input_gate",
        "version": model.version,
        "file": npz_path.name,
        "sha256": hashlib.sha256(npz_path.read_bytes()).hexdigest(),
        "classifier_sha256": classifier_sha256,
        "features_output": model.features_output,
        "classes": list(model.classes),
        "threshold": model.threshold,
        "flag_probability": model.flag_probability,
        **model.meta,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError("input gate: cannot read its manifest") from exc
    if not isinstance(data, dict) or data.get("schema_version") != 1:
        raise ModelError("input gate: unsupported manifest")
    if data.get("kind") != "input_gate":
        raise ModelError("input gate: manifest is not of kind 'input_gate'")
    return data


def _read_arrays(path: Path, sha256: str) -> dict[str, FloatArray]:
    if path.is_symlink() or not path.is_file():
        raise ModelError("input gate: array file missing or not a regular file")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ModelError("input gate: sha256 mismatch, refusing to load")
    import io

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: np.asarray(npz[k], dtype=np.float32) for k in ARRAYS}
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError("input gate: array file is malformed") from exc


def load_ood_model(
    manifest_path: Path,
    classifier_sha256: str,
    feature_dim: int,
    features_output: str = "features",
) -> OodModel:
    """Load and verify a fitted gate; raise :class:`ModelError` on any mismatch.

    ``features_output``: the classifier output role the service will feed it (a manifest
    without the key was fitted on ``features``).
    """
    meta = _read_manifest(manifest_path)
    if meta.get("classifier_sha256") != classifier_sha256:
        raise ModelError(
            "input gate was fitted for another classifier (sha256 mismatch): "
            "re-run `python -m training gate`"
        )
    fitted_on = meta.get("features_output", "features")
    if fitted_on != features_output:
        raise ModelError(
            f"input gate was fitted on the classifier output {fitted_on!r}, "
            f"the service scores {features_output!r}: re-run `python -m training gate`"
        )
    file = str(meta.get("file", ""))
    if Path(file).name != file or not file.endswith(".npz"):
        raise ModelError("input gate: file must be a bare *.npz name")
    arrays = _read_arrays(manifest_path.parent / file, str(meta.get("sha256", "")))
    classes = tuple(str(c) for c in meta.get("classes", []))
    means, comps = arrays["means"], arrays["components"]
    ok = (
        means.ndim == 2
        and means.shape == (len(classes), feature_dim)
        and comps.ndim == 2
        and comps.shape[1] == feature_dim
        and arrays["eigenvalues"].shape == (comps.shape[0],)
        and arrays["log_priors"].shape == (len(classes),)
        and "upright" in classes
        and set(classes) <= CLASS_FLAGS.keys()
    )
    if not ok:
        raise ModelError("input gate: arrays do not match the classifier's feature size")
    values = (arrays["eigenvalues"], arrays["residual_variance"])
    if not all(np.isfinite(v).all() and (v > 0).all() for v in values):
        raise ModelError("input gate: non-positive or non-finite variances")
    threshold = meta.get("threshold")
    if not isinstance(threshold, (int, float)) or not threshold > 0:
        raise ModelError("input gate: threshold missing")
    return OodModel(
        classes=classes,
        means=means,
        components=comps,
        eigenvalues=arrays["eigenvalues"],
        residual_variance=float(arrays["residual_variance"][0]),
        log_priors=arrays["log_priors"],
        threshold=float(threshold),
        flag_probability=float(meta.get("flag_probability", 0.5)),
        version=str(meta.get("version", "")),
        features_output=str(fitted_on),
        meta={k: v for k, v in meta.items() if k in ("metrics", "fitted")},
    )
