"""Shipped weights: manifests validate, hashes match, ONNX graphs honour the serving contract,
and torch vs ONNX Runtime agree on real radiographs (no retraining)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from inference.manifest import ModelManifest, load_manifest
from inference.preprocess import batch_inputs

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "weights"
DATA = ROOT.parent / "shared" / "data" / "cxr"
MAX_TOTAL_BYTES = 60 * 1024 * 1024

pytestmark = pytest.mark.e2e


def _manifest(name: str) -> ModelManifest:
    path = WEIGHTS / f"{name}.manifest.json"
    if not path.exists():
        pytest.skip(f"{path} not present (weights not built)")
    return load_manifest(path)


def _real_images(n_per_source: int = 2) -> list[np.ndarray]:
    if not (DATA / "classification.csv").exists():
        pytest.skip("../shared/data/cxr is absent")
    from PIL import Image

    picked: dict[str, list[str]] = {}
    with (DATA / "classification.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            bucket = picked.setdefault(row["source"], [])
            if len(bucket) < n_per_source:
                bucket.append(row["image"])
    out = []
    for paths in picked.values():
        for rel in paths:
            with Image.open(DATA / rel) as img:
                out.append(np.asarray(img.convert("L"), dtype=np.float32) / np.float32(255.0))
    return out


@pytest.mark.parametrize("name", ["classifier", "segmenter"])
def test_manifest_hash_matches_and_size_budget(name: str) -> None:
    from training.export import sha256_file

    manifest = _manifest(name)
    assert sha256_file(WEIGHTS / manifest.file) == manifest.sha256
    total = sum(p.stat().st_size for p in WEIGHTS.iterdir() if p.is_file())
    assert total <= MAX_TOTAL_BYTES


def test_classifier_manifest_contract() -> None:
    m = _manifest("classifier")
    assert m.kind == "classifier" and m.labels == ("finding",)
    assert m.input_spec.size == 224 and m.input_spec.channels == 3
    assert m.input_spec.mean == (0.485, 0.456, 0.406) and m.input_spec.std == (0.229, 0.224, 0.225)
    assert 0.0 < m.threshold < 1.0 and m.temperature > 0
    for key in (
        "metrics",
        "youden_threshold",
        "data_sources",
        "training_command",
        "seed",
        "training_data",
        "init",
    ):
        assert key in m.extra


def test_segmenter_manifest_contract() -> None:
    m = _manifest("segmenter")
    assert m.labels == ("right_lung", "left_lung", "heart_mediastinum")
    assert m.outputs == {"logits": "logits"}


def _session(manifest: ModelManifest):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(
        str(WEIGHTS / manifest.file), options, providers=["CPUExecutionProvider"]
    )


def test_classifier_graph_io_and_cam_identity_on_real_images() -> None:
    m = _manifest("classifier")
    x = batch_inputs(_real_images(1), m.input_spec)
    session = _session(m)
    assert [i.name for i in session.get_inputs()] == [m.input_name]
    logit, features, cam = session.run(
        [m.outputs["logit"], m.outputs["features"], m.outputs["cam"]], {m.input_name: x}
    )
    n = len(x)
    assert (
        logit.shape == (n, 1)
        and features.shape[0] == n
        and cam.shape == (n, 1, *features.shape[2:])
    )
    assert logit.dtype == np.float32 and np.isfinite(logit).all()
    from training.export import state_dict_from_onnx

    bias = state_dict_from_onnx(WEIGHTS / m.file)["head.bias"].numpy()
    np.testing.assert_allclose(cam.sum((2, 3)) + bias, logit, atol=1e-4)


def test_classifier_torch_onnx_parity_on_real_images() -> None:
    import torch

    from training.export import ClassifierGraph, state_dict_from_onnx
    from training.models import classifier_architecture

    m = _manifest("classifier")
    # 2.1.0+: the tail recipe's cut also names the frozen block behind ``gate_features``
    gate_cut = m.extra["training_config"]["cut"] if "gate_features" in m.outputs else None
    graph = ClassifierGraph(classifier_architecture(str(m.extra["architecture"])), gate_cut)
    graph.load_state_dict(state_dict_from_onnx(WEIGHTS / m.file), strict=True)
    graph.eval()
    x = batch_inputs(_real_images(2), m.input_spec)
    roles = ["logit"] + (["gate_features"] if gate_cut is not None else [])
    out = _session(m).run([m.outputs[r] for r in roles], {m.input_name: x})
    with torch.no_grad():
        ref = graph(torch.from_numpy(x))
    assert np.abs(ref[0].numpy() - out[0]).max() <= 1e-4
    if gate_cut is not None:
        assert out[1].shape == (len(x), ref[3].shape[1])
        assert np.abs(ref[3].numpy() - out[1]).max() <= 1e-3


def test_segmenter_torch_onnx_parity_and_output_on_real_images() -> None:
    import torch

    from training.export import SegmenterGraph, state_dict_from_onnx
    from training.segmenter import segmenter_architecture

    m = _manifest("segmenter")
    graph = SegmenterGraph(segmenter_architecture(m.extra))
    graph.load_state_dict(state_dict_from_onnx(WEIGHTS / m.file), strict=True)
    graph.eval()
    x = batch_inputs(_real_images(1), m.input_spec)
    (logits,) = _session(m).run([m.outputs["logits"]], {m.input_name: x})
    size = m.input_spec.size
    assert logits.shape == (len(x), 3, size, size)
    with torch.no_grad():
        ref = graph(torch.from_numpy(x)).numpy()
    assert np.abs(ref - logits).max() <= 1e-3
    lungs = (logits[:, :2] > 0).mean()
    assert 0.1 < lungs < 0.6  # both lung channels cover a plausible share of a chest radiograph
