from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from inference.classify import calibrated_probability, run_classifier
from inference.errors import ModelError
from inference.sessions import RuntimeOptions, choose_providers, load_verified_model


def test_cam_plus_head_bias_equals_logit(tiny_weights: Path) -> None:
    model = load_verified_model(tiny_weights / "classifier.manifest.json", RuntimeOptions())
    img = np.random.default_rng(0).random((300, 280), dtype=np.float32)
    out = run_classifier(model, [img])[0]
    assert out.cam.shape == (7, 7)
    head_bias = -0.2  # tests.tiny_models.classifier_model's default
    assert float(out.cam.sum()) + head_bias == pytest.approx(out.logit, abs=1e-5)


def test_calibrated_probability_is_stable() -> None:
    assert calibrated_probability(0.0, 2.0) == 0.5
    assert calibrated_probability(1000.0, 1.0) == 1.0
    assert calibrated_probability(-1000.0, 1.0) == 0.0
    assert calibrated_probability(2.0, 2.0) == pytest.approx(1 / (1 + np.exp(-1.0)))


def test_cpu_provider_always_last() -> None:
    assert choose_providers(True)[-1] == "CPUExecutionProvider"
    assert choose_providers(False) == ["CPUExecutionProvider"]


def test_external_data_reference_is_refused(tiny_weights: Path, tmp_path: Path) -> None:
    """A graph whose tensor points at an external file must not load (no path is resolved)."""
    target = tmp_path / "w"
    shutil.copytree(tiny_weights, target)
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1])
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    graph = helper.make_graph(
        [helper.make_node("Mul", ["image", "w"], ["logits"])],
        "evil",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [tensor],
    )
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    (target / "segmenter.onnx").write_bytes(data)
    manifest = target / "segmenter.manifest.json"
    body = json.loads(manifest.read_text())
    body["sha256"] = hashlib.sha256(data).hexdigest()
    manifest.write_text(json.dumps(body))
    with pytest.raises(ModelError):
        load_verified_model(manifest, RuntimeOptions())


def test_symlinked_model_is_refused(tiny_weights: Path, tmp_path: Path) -> None:
    target = tmp_path / "w"
    shutil.copytree(tiny_weights, target)
    (target / "classifier.onnx").unlink()
    (target / "classifier.onnx").symlink_to(tiny_weights / "classifier.onnx")
    with pytest.raises(ModelError):
        load_verified_model(target / "classifier.manifest.json", RuntimeOptions())


def test_onnx_checker_accepts_tiny_models(tiny_weights: Path) -> None:
    onnx.checker.check_model(onnx.load(tiny_weights / "classifier.onnx"))
