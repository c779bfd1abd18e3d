"""ONNX export contract on tiny generated models (no training, no real weights)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from inference.manifest import load_manifest
from training.export import (
    GATE_OUTPUT,
    ClassifierGraph,
    export_classifier,
    export_segmenter,
    refresh_sha256,
    sha256_file,
    write_manifest,
)
from training.manifests import classifier_manifest, segmenter_manifest


class TinyNet(nn.Module):
    """Same attribute layout as torchvision EfficientNet: features -> avgpool -> classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=4, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU6(),
            nn.Conv2d(8, 16, 3, stride=8, padding=1),
            nn.BatchNorm2d(16),
            nn.SiLU(),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(16, 1))


class TinySeg(nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": x[:, :3] * 2.0}


def _tiny() -> TinyNet:
    torch.manual_seed(0)
    net = TinyNet()
    with torch.no_grad():
        net.features[1].running_mean.uniform_(-0.5, 0.5)
        net.features[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


def test_cam_sums_to_logit_minus_bias_in_torch() -> None:
    net = _tiny()
    graph = ClassifierGraph(net).eval()
    x = torch.randn(3, 3, 224, 224)
    logit, features, cam = graph(x)
    assert features.shape == (3, 16, 7, 7) and cam.shape == (3, 1, 7, 7) and logit.shape == (3, 1)
    bias = net.classifier[1].bias
    torch.testing.assert_close(cam.sum((2, 3)) + bias, logit, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        logit, net.classifier(net.avgpool(features).flatten(1)), atol=1e-5, rtol=0
    )


def test_classifier_onnx_has_contract_outputs_dynamic_batch_and_matches_torch(
    tmp_path: Path,
) -> None:
    net = _tiny()
    path = tmp_path / "classifier.onnx"
    export_classifier(net, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["logit", "features", "cam"]
    x = np.random.default_rng(0).normal(size=(5, 3, 224, 224)).astype(np.float32)
    logit, features, cam = session.run(None, {"image": x})
    assert logit.shape == (5, 1) and features.shape[0] == 5 and cam.shape == (5, 1, 7, 7)
    bias = float(net.classifier[1].bias.detach())
    np.testing.assert_allclose(cam.sum((2, 3)) + bias, logit, atol=1e-5)
    with torch.no_grad():
        ref = ClassifierGraph(net).eval()(torch.from_numpy(x))[0].numpy()
    assert np.abs(ref - logit).max() <= 1e-4


def test_segmenter_onnx_output_name_and_shape(tmp_path: Path) -> None:
    path = tmp_path / "segmenter.onnx"
    export_segmenter(TinySeg(), 64, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(["logits"], {"image": np.ones((3, 3, 64, 64), np.float32)})
    assert out.shape == (3, 3, 64, 64)


def test_manifests_validate_and_sha_is_recomputed(tmp_path: Path) -> None:
    (tmp_path / "classifier.onnx").write_bytes(b"model-a")
    (tmp_path / "segmenter.onnx").write_bytes(b"model-b")
    write_manifest(
        tmp_path / "classifier.manifest.json", classifier_manifest("0.0.1", 1.3, 0.2, {"seed": 1})
    )
    write_manifest(tmp_path / "segmenter.manifest.json", segmenter_manifest("0.0.1", 256, {}))
    cls = load_manifest(tmp_path / "classifier.manifest.json")
    seg = load_manifest(tmp_path / "segmenter.manifest.json")
    assert cls.sha256 == sha256_file(tmp_path / "classifier.onnx")
    assert cls.outputs == {"logit": "logit", "features": "features", "cam": "cam"}
    assert (cls.temperature, cls.threshold, cls.labels) == (1.3, 0.2, ("finding",))
    assert (
        seg.labels == ("right_lung", "left_lung", "heart_mediastinum")
        and seg.input_spec.size == 256
    )
    (tmp_path / "classifier.onnx").write_bytes(b"model-c")
    new = refresh_sha256(tmp_path / "classifier.manifest.json")
    assert new == sha256_file(tmp_path / "classifier.onnx") != cls.sha256
    assert json.loads((tmp_path / "classifier.manifest.json").read_text())["extra"]["seed"] == 1


def test_export_rejects_multi_logit_head() -> None:
    net = _tiny()
    net.classifier[1] = nn.Linear(16, 2)
    with pytest.raises(ValueError):
        ClassifierGraph(net)


def test_a_gate_cut_adds_pooled_frozen_trunk_features(tmp_path: Path) -> None:
    """``gate_cut``: the serving outputs are unchanged and ``gate_features`` is the mean and
    standard deviation over the grid of ``features[:gate_cut]`` (the frozen lower trunk)."""
    net = _tiny()
    path = tmp_path / "classifier.onnx"
    export_classifier(net, path, gate_cut=3)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logit", "features", "cam", GATE_OUTPUT]
    x = np.random.default_rng(1).normal(size=(3, 3, 224, 224)).astype(np.float32)
    logit, features, cam, gate = session.run(None, {"image": x})
    with torch.no_grad():
        lower = net.features[:3](torch.from_numpy(x)).numpy()
        ref_logit, ref_features, _ = ClassifierGraph(net).eval()(torch.from_numpy(x))
    expected = np.concatenate([lower.mean((2, 3)), lower.std((2, 3))], axis=1)
    assert gate.shape == (3, 16) and np.abs(gate - expected).max() <= 1e-4
    assert np.abs(logit - ref_logit.numpy()).max() <= 1e-4
    assert np.abs(features - ref_features.numpy()).max() <= 1e-4
    with pytest.raises(ValueError, match="gate_cut"):
        ClassifierGraph(net, gate_cut=len(net.features))


def test_a_tail_manifest_names_the_gate_role(tmp_path: Path) -> None:
    (tmp_path / "classifier.onnx").write_bytes(b"model-a")
    manifest = classifier_manifest("0.0.1", 1.0, 0.5, {}, gate_features=True)
    write_manifest(tmp_path / "classifier.manifest.json", manifest)
    assert load_manifest(tmp_path / "classifier.manifest.json").outputs[GATE_OUTPUT] == GATE_OUTPUT
