"""Model manifests: the contract that travels with every ONNX file in ``weights/``.

A manifest is a JSON file (``<name>.manifest.json``) next to its model. It is parsed strictly:
unknown ``kind`` values, missing keys or wrong types raise :class:`ManifestError`, so a model
whose contract is unclear never serves. Example (classifier)::

    {
      "schema_version": 1,
      "name": "cxr-classifier", "kind": "classifier", "version": "1.0.0",
      "file": "classifier.onnx", "sha256": "<64 hex>",
      "input": {"name": "image", "size": 224, "channels": 3,
                "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
      "outputs": {"logit": "logit", "features": "features"},
      "labels": ["finding"],
      "temperature": 1.0, "threshold": 0.5,
      "operating_points": {"adult": {"threshold": 0.5, "band": [0.4, 0.6]},
                           "pediatric": {"threshold": 0.5, "band": [0.4, 0.6]}},
      "default_population": "adult",
      "extra": {...free-form: metrics, data sources, training command, seed...}
    }

``outputs`` maps a role the service needs to the graph's output name. Classifier roles:
``logit`` (float32 [N, 1], the finding logit before temperature), ``features`` (float32
[N, C, h, w], last convolutional block, input of global-average-pool + linear head) and
``cam`` (float32 [N, 1, h, w]: head weights applied to ``features`` / (h*w), so that
``cam.sum((2, 3)) + bias == logit``). Segmenter roles: ``logits`` (float32 [N, K, S, S],
independent sigmoid channels in ``labels`` order).

``operating_points`` and ``default_population`` are optional (see :mod:`inference.operating`);
without them every population decides at ``threshold`` with no borderline band.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from inference.operating import OperatingPointError, OperatingPoints, parse_operating_points
from inference.preprocess import InputSpec

ModelKind = Literal["classifier", "segmenter"]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
REQUIRED_OUTPUTS: dict[str, frozenset[str]] = {
    "classifier": frozenset({"logit", "features", "cam"}),
    "segmenter": frozenset({"logits"}),
}


class ManifestError(ValueError):
    """A manifest is missing, unreadable or breaks the contract."""


@dataclass(frozen=True)
class ModelManifest:
    name: str
    kind: ModelKind
    version: str
    file: str
    sha256: str
    input_name: str
    input_spec: InputSpec
    outputs: dict[str, str]
    labels: tuple[str, ...]
    temperature: float = 1.0
    threshold: float = 0.5
    extra: dict[str, Any] = field(default_factory=dict)
    operating_points: OperatingPoints | None = None

    @property
    def operating(self) -> OperatingPoints:
        """Operating points, the legacy single threshold when the manifest has none."""
        return self.operating_points or parse_operating_points({}, self.threshold)


def _require(data: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in data:
        raise ManifestError(f"manifest key missing: {key}")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ManifestError(f"manifest key has the wrong type: {key}")
    return value


def _floats(values: Any, key: str) -> tuple[float, ...]:
    if not isinstance(values, list) or not values:
        raise ManifestError(f"manifest key must be a non-empty list: {key}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ManifestError(f"manifest key must hold numbers: {key}")
    return tuple(float(v) for v in values)


def parse_manifest(data: dict[str, Any]) -> ModelManifest:
    """Validate a decoded manifest and build the typed contract."""
    if data.get("schema_version") != 1:
        raise ManifestError("unsupported manifest schema_version")
    kind = _require(data, "kind", str)
    if kind not in REQUIRED_OUTPUTS:
        raise ManifestError("unknown model kind")
    sha = _require(data, "sha256", str)
    if not _SHA256.match(sha):
        raise ManifestError("sha256 must be 64 lowercase hex digits")
    file = _require(data, "file", str)
    if Path(file).name != file or not file.endswith(".onnx"):
        # The model file must sit next to its manifest: no paths, no traversal, ONNX only.
        raise ManifestError("file must be a bare *.onnx file name")
    inp = _require(data, "input", dict)
    channels = int(_require(inp, "channels", int))
    spec = InputSpec(
        size=int(_require(inp, "size", int)),
        mean=_floats(inp.get("mean"), "input.mean"),
        std=_floats(inp.get("std"), "input.std"),
        channels=channels,
    )
    if len(spec.mean) != channels or len(spec.std) != channels or min(spec.std) <= 0:
        raise ManifestError("input mean/std must have one positive entry per channel")
    if not 16 <= spec.size <= 2048:
        raise ManifestError("input size out of range")
    outputs = _require(data, "outputs", dict)
    missing = REQUIRED_OUTPUTS[kind] - outputs.keys()
    if missing:
        raise ManifestError(f"outputs missing roles: {sorted(missing)}")
    labels = _require(data, "labels", list)
    if not labels or not all(isinstance(x, str) for x in labels):
        raise ManifestError("labels must be a non-empty list of strings")
    temperature = float(data.get("temperature", 1.0))
    threshold = float(data.get("threshold", 0.5))
    if not 0.05 <= temperature <= 20 or not 0.0 < threshold < 1.0:
        raise ManifestError("temperature or threshold out of range")
    extra = data.get("extra", {})
    if not isinstance(extra, dict):
        raise ManifestError("extra must be an object")
    try:
        operating = parse_operating_points(data, threshold)
    except OperatingPointError as exc:
        raise ManifestError(str(exc)) from exc
    return ModelManifest(
        name=_require(data, "name", str),
        kind=kind,
        version=_require(data, "version", str),
        file=file,
        sha256=sha,
        input_name=_require(inp, "name", str),
        input_spec=spec,
        outputs={str(k): str(v) for k, v in outputs.items()},
        labels=tuple(labels),
        temperature=temperature,
        threshold=threshold,
        extra=extra,
        operating_points=operating,
    )


def load_manifest(path: Path) -> ModelManifest:
    """Read and validate ``path`` (a ``*.manifest.json``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"cannot read manifest {path.name}") from exc
    if not isinstance(data, dict):
        raise ManifestError("manifest must be a JSON object")
    return parse_manifest(data)
