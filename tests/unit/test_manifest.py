from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from inference.manifest import ManifestError, load_manifest, parse_manifest


@pytest.fixture()
def good(tiny_weights: Path) -> dict[str, Any]:
    return json.loads((tiny_weights / "classifier.manifest.json").read_text())


def test_valid_manifest_parses(good: dict[str, Any]) -> None:
    m = parse_manifest(good)
    assert m.kind == "classifier" and m.input_spec.size == 224 and m.labels == ("finding",)
    assert m.temperature == 1.5 and m.threshold == 0.4


@pytest.mark.parametrize(
    "path,value",
    [
        (("schema_version",), 2),
        (("kind",), "detector"),
        (("sha256",), "abc"),
        (("file",), "../../etc/passwd"),
        (("file",), "model.pt"),
        (("input", "std"), [0.2, 0.0, 0.2]),
        (("input", "mean"), [0.5]),
        (("input", "size"), 4),
        (("outputs",), {"logit": "logit"}),
        (("labels",), []),
        (("threshold",), 1.5),
        (("temperature",), 0.0),
        (("extra",), "x"),
    ],
)
def test_contract_violations_are_refused(
    good: dict[str, Any], path: tuple[str, ...], value: Any
) -> None:
    bad = copy.deepcopy(good)
    target = bad
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ManifestError):
        parse_manifest(bad)


def test_unreadable_manifest(tmp_path: Path) -> None:
    p = tmp_path / "m.json"
    p.write_text("{not json")
    with pytest.raises(ManifestError):
        load_manifest(p)
