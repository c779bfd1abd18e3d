"""``python -m training reexport`` (training.pipeline.reexport_classifier) on a tiny checkpoint:
the re-exported graph gains ``gate_features`` only when its logits match the recorded ones."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from training import pipeline
from training.__main__ import main
from training.export import export_classifier

CUT = 2


class TinyNet(nn.Module):
    """EfficientNet-shaped (``features`` blocks + ``classifier`` = dropout, Linear(C, 1))."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 4, 3, stride=4, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(4, 6, 3, stride=4, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU()),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.0), nn.Linear(8, 1))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def run_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """work/ (cache + checkpoint + recorded logits) and weights/ (2.0-style export, manifest)."""
    monkeypatch.setattr(pipeline, "build_classifier", lambda init: TinyNet())
    torch.manual_seed(0)
    work, weights = tmp_path / "runs", tmp_path / "weights"
    cache, ckpt = work / "cache", work / "classifier"
    for d in (cache, ckpt, weights):
        d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(cache / "cls224.npy", rng.random((8, 224, 224), dtype=np.float32))
    with (cache / "images.csv").open("w", newline="") as fh:
        fields = ["image", "label", "source", "findings", "age_group", "split"]
        writer = csv.DictWriter(fh, fieldnames=fields + ["cls_index", "duplicate_of"])
        writer.writeheader()
        for i in range(8):
            split = ("val", "test")[i % 2]
            writer.writerow(
                {"image": f"i{i}.png", "label": i % 3 % 2, "source": "nih", "findings": ""}
                | {"age_group": "adult", "split": split, "cls_index": i, "duplicate_of": ""}
            )
    model = TinyNet().eval()
    torch.save(model.state_dict(), ckpt / "classifier.pt")
    export_classifier(model, weights / "classifier.onnx")  # the release before gate_features
    arrays = np.load(cache / "cls224.npy", mmap_mode="r")
    recorded = {
        s: pipeline.onnx_logits(weights / "classifier.onnx", arrays, np.arange(i, 8, 2))
        for i, s in enumerate(("val", "test"))
    }
    np.savez(ckpt / "classifier_logits.npz", val=recorded["val"], test=recorded["test"])
    manifest = {
        "file": "classifier.onnx",
        "sha256": _sha(weights / "classifier.onnx"),
        "outputs": {"logit": "logit", "features": "features", "cam": "cam"},
        "temperature": 1.3,
        "extra": {"init": "lite0", "training_config": {"cut": CUT}},
    }
    (weights / "classifier.manifest.json").write_text(json.dumps(manifest))
    return work, weights


def _reexport(work: Path, weights: Path) -> int:
    return main(["reexport", "--work", str(work), "--weights", str(weights), "--threads", "1"])


def test_reexport_adds_gate_features_with_identical_logits(run_dirs: tuple[Path, Path]) -> None:
    import onnxruntime as ort

    work, weights = run_dirs
    assert _reexport(work, weights) == 0
    manifest = json.loads((weights / "classifier.manifest.json").read_text())
    assert manifest["outputs"]["gate_features"] == "gate_features"
    assert manifest["sha256"] == _sha(weights / "classifier.onnx")
    export = manifest["extra"]["export"]
    assert export["gate_cut"] == CUT and max(export["logit_parity_max_abs"].values()) < 1e-5
    assert manifest["temperature"] == 1.3  # calibration untouched
    session = ort.InferenceSession(str(weights / "classifier.onnx"))
    names = [o.name for o in session.get_outputs()]
    assert names == ["logit", "features", "cam", "gate_features"]
    gate = session.run(["gate_features"], {"image": np.zeros((1, 3, 224, 224), np.float32)})[0]
    assert gate.shape == (1, 2 * 6)  # mean + std of features[:CUT]'s 6 channels
    assert not (weights / "classifier.onnx.new").exists()


def test_reexport_refuses_logits_that_differ(run_dirs: tuple[Path, Path]) -> None:
    work, weights = run_dirs
    store = work / "classifier" / "classifier_logits.npz"
    recorded = dict(np.load(store))
    np.savez(store, val=recorded["val"], test=recorded["test"] + 0.01)
    onnx_before = _sha(weights / "classifier.onnx")
    manifest_before = (weights / "classifier.manifest.json").read_text()
    with pytest.raises(ValueError, match="logits differ"):
        _reexport(work, weights)
    assert _sha(weights / "classifier.onnx") == onnx_before
    assert (weights / "classifier.manifest.json").read_text() == manifest_before
    assert not (weights / "classifier.onnx.new").exists()


def test_reexport_refuses_a_classifier_without_a_tail_cut(run_dirs: tuple[Path, Path]) -> None:
    work, weights = run_dirs
    path = weights / "classifier.manifest.json"
    manifest = json.loads(path.read_text())
    manifest["extra"]["training_config"] = {}
    path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="not a tail-recipe"):
        _reexport(work, weights)
