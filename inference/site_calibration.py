"""Site calibration files: a local temperature and operating points bound to one classifier.

Written by ``python -m training recalibrate`` (see :mod:`training.recalibrate`), read at
start-up when ``CXR_CALIBRATION_FILE`` is set. Format (JSON)::

    {
      "schema_version": 1, "kind": "site_calibration",
      "id": "st-marys-2026-12", "version": "2026-12-02T05:10:00Z",
      "model_sha256": "<the classifier's sha256>",
      "temperature": 1.31,
      "offset": -0.42,          # optional (default 0): sigmoid(logit / temperature + offset)
      "operating_points": {"adult": {...}, "pediatric": {...}},   # inference.operating schema
      "default_population": "adult",
      "fit": {... counts, confidence intervals, method ...}
    }

A file for another model (sha256 mismatch) raises :class:`ModelError`: start-up fails loudly
instead of applying thresholds fitted on different scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inference.errors import ModelError
from inference.operating import Calibration, OperatingPointError, parse_operating_points

KIND = "site_calibration"


def calibration_document(
    *,
    calibration_id: str,
    version: str,
    model_sha256: str,
    temperature: float,
    points: dict[str, Any],
    fit: dict[str, Any],
    offset: float = 0.0,
) -> dict[str, Any]:
    """The JSON document a site calibration file holds (``points``: OperatingPoints.as_dict())."""
    return {
        "schema_version": 1,
        "kind": KIND,
        "id": calibration_id,
        "version": version,
        "model_sha256": model_sha256,
        "temperature": temperature,
        "offset": offset,
        **points,
        "fit": fit,
    }


def parse_site_calibration(data: Any, model_sha256: str) -> Calibration:
    if not isinstance(data, dict) or data.get("schema_version") != 1 or data.get("kind") != KIND:
        raise ModelError("calibration file: not a schema-1 site_calibration document")
    if data.get("model_sha256") != model_sha256:
        raise ModelError(
            "calibration file was fitted for another classifier (model_sha256 mismatch): "
            "refusing to start"
        )
    temperature = data.get("temperature")
    if not isinstance(temperature, (int, float)) or not 0.05 <= float(temperature) <= 20:
        raise ModelError("calibration file: temperature missing or out of range")
    offset = data.get("offset", 0.0)
    if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not -10 <= offset <= 10:
        raise ModelError("calibration file: offset out of range (|offset| <= 10)")
    cal_id, version = data.get("id"), data.get("version")
    if not isinstance(cal_id, str) or not cal_id or not isinstance(version, str) or not version:
        raise ModelError("calibration file: id and version are required")
    if "operating_points" not in data:
        raise ModelError("calibration file: operating_points missing")
    try:
        points = parse_operating_points(data, 0.5)
    except OperatingPointError as exc:
        raise ModelError(f"calibration file: {exc}") from exc
    return Calibration(float(temperature), points, "site", cal_id, version, float(offset))


def load_site_calibration(path: Path, model_sha256: str) -> Calibration:
    """Read and verify ``path``; raise :class:`ModelError` on any problem."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError("calibration file: cannot read it") from exc
    return parse_site_calibration(data, model_sha256)
