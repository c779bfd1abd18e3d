"""inference.models: Classifier and Segmenter check their role's I/O contract at load.

Tiny generated ONNX graphs, each breaking one clause of the contract; every one must be refused
with a ModelError that names the clause, before it could serve a request."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from inference.errors import ModelError
from inference.models import Classifier, Segmenter
from inference.sessions import RuntimeOptions, load_verified_model
from inference.vocabulary import CLASSIFIER_LABELS, SEGMENTER_LABELS
from tests.tiny_models import _manifest, write_tiny_weights

OPTIONS = RuntimeOptions(prefer_gpu=False)
CLS_OUTPUTS = {"logit": "logit", "features": "features", "cam": "cam"}
Dim = int | str


def _w(name: str, shape: tuple[int, ...], seed: int = 0) -> onnx.TensorProto:
    arr = np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)
    return numpy_helper.from_array(arr, name)


def _classifier(
    features: int = 4, cam: int = 1, logit_type: int = TensorProto.FLOAT
) -> onnx.ModelProto:
    """image [N,3,224,224] -> features [N,F,7,7] -> cam [N,K,7,7] -> logit = sum(cam) [N,1]."""
    nodes = [
        helper.make_node("AveragePool", ["image"], ["p"], kernel_shape=[32, 32], strides=[32, 32]),
        helper.make_node("Conv", ["p", "fw"], ["features"]),
        helper.make_node("Conv", ["features", "cw"], ["cam"]),
        helper.make_node("ReduceSum", ["cam", "all"], ["s"], keepdims=0),
        helper.make_node("Unsqueeze", ["s", "one"], ["l"]),
        helper.make_node("Cast", ["l"], ["logit"], to=logit_type),
    ]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [
            helper.make_tensor_value_info("logit", logit_type, ["N", 1]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", features, 7, 7]),
            helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["N", cam, 7, 7]),
        ],
        [
            _w("fw", (features, 3, 1, 1)),
            _w("cw", (cam, features, 1, 1), 1),
            numpy_helper.from_array(np.array([1, 2, 3], np.int64), "all"),
            numpy_helper.from_array(np.array([1], np.int64), "one"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _segmenter(channels: int = 3, declared: Dim | None = None) -> onnx.ModelProto:
    """image [N,3,64,64] -> 1x1 conv -> logits [N,K,64,64] (K declared, or left symbolic)."""
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["logits"])],
        "segmenter",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [
            helper.make_tensor_value_info(
                "logits", TensorProto.FLOAT, ["N", declared or channels, 64, 64]
            )
        ],
        [_w("w", (channels, 3, 1, 1))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _write(
    folder: Path,
    kind: str,
    model: onnx.ModelProto,
    labels: list[str],
    outputs: dict[str, str] | None = None,
) -> Path:
    data = model.SerializeToString()
    (folder / f"{kind}.onnx").write_bytes(data)
    size = 224 if kind == "classifier" else 64
    default = CLS_OUTPUTS if kind == "classifier" else {"logits": "logits"}
    body = _manifest(kind, f"test-{kind}", f"{kind}.onnx", data, size, outputs or default, labels)
    path = folder / f"{kind}.manifest.json"
    path.write_text(json.dumps(body))
    return path


def test_tiny_models_load_with_their_labels(tiny_weights: Path) -> None:
    clf = Classifier.load(tiny_weights / "classifier.manifest.json", OPTIONS)
    seg = Segmenter.load(tiny_weights / "segmenter.manifest.json", OPTIONS)
    assert clf.labels == CLASSIFIER_LABELS and clf.feature_dim == 4
    assert set(SEGMENTER_LABELS) <= set(seg.labels)
    image = np.full((96, 80), 0.5, np.float32)
    out = clf.predict([image])[0]
    assert np.isfinite(out.logit) and out.cam.shape == (7, 7) and out.pooled is not None
    probs = clf.probabilities(np.stack([image, image]))
    assert probs.shape == (2,) and 0.0 < probs[0] < 1.0
    assert seg.segment(image).mask("right_lung").shape == (96, 80)


def test_a_well_formed_generated_classifier_loads(tmp_path: Path) -> None:
    path = _write(tmp_path, "classifier", _classifier(features=6), ["finding"])
    assert Classifier.load(path, OPTIONS).feature_dim == 6


@pytest.mark.parametrize(
    ("model", "labels", "message"),
    [
        (_classifier(cam=2), ["finding"], "'cam' must have one channel"),
        (_classifier(logit_type=TensorProto.DOUBLE), ["finding"], "'logit' must be float32"),
        (_classifier(), ["finding", "effusion"], "classifier labels must be"),
        (_classifier(), ["abnormal"], "classifier labels must be"),
    ],
    ids=["cam-2-channels", "double-logit", "two-labels", "label"],
)
def test_a_classifier_breaking_its_contract_is_refused(
    tmp_path: Path, model: onnx.ModelProto, labels: list[str], message: str
) -> None:
    path = _write(tmp_path, "classifier", model, labels)
    with pytest.raises(ModelError, match=message):
        Classifier.load(path, OPTIONS)


def test_a_channel_count_only_known_when_run_is_checked_by_the_probe(tmp_path: Path) -> None:
    """Shipped exports leave the segmenter's K symbolic (a Resize output), so the static check
    cannot see it: here logits = image, declared [N, 'C', 64, 64], 3 channels for 4 labels."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["logits"])],
        "symbolic",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", "C", 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "C", 64, 64])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = _write(tmp_path, "segmenter", model, [*SEGMENTER_LABELS, "clavicles"])
    Segmenter.of(load_verified_model(path, OPTIONS))  # the declared shapes pass
    with pytest.raises(ModelError, match="one channel per label"):
        Segmenter.load(path, OPTIONS)


def test_a_segmenter_loaded_as_the_classifier_is_refused(tmp_path: Path) -> None:
    seg = _write(tmp_path, "segmenter", _segmenter(), list(SEGMENTER_LABELS))
    with pytest.raises(ModelError, match="not of kind 'classifier'"):
        Classifier.load(seg, OPTIONS)


@pytest.mark.parametrize(
    ("model", "labels", "message"),
    [
        (_segmenter(channels=2), list(SEGMENTER_LABELS), "one channel per label"),
        (_segmenter(channels=2, declared="K"), list(SEGMENTER_LABELS), "one channel per label"),
        (_segmenter(channels=3), ["right_lung", "left_lung", "heart"], "labels must include"),
    ],
    ids=["2-channels-declared", "2-channels-symbolic", "missing-heart"],
)
def test_a_segmenter_breaking_its_contract_is_refused(
    tmp_path: Path, model: onnx.ModelProto, labels: list[str], message: str
) -> None:
    path = _write(tmp_path, "segmenter", model, labels)
    with pytest.raises(ModelError, match=message):
        Segmenter.load(path, OPTIONS)


def test_a_segmenter_may_predict_more_structures(tmp_path: Path) -> None:
    labels = [*SEGMENTER_LABELS, "clavicles"]
    path = _write(tmp_path, "segmenter", _segmenter(channels=4, declared="K"), labels)
    assert Segmenter.load(path, OPTIONS).labels == tuple(labels)


def test_the_gate_scores_gate_features_when_the_classifier_has_them(tmp_path: Path) -> None:
    """2.1.0-style exports: the gate reads ``gate_features`` [N, D]; older ones (no such role)
    fall back to average-pooled ``features``."""
    new = Classifier.load(
        write_tiny_weights(tmp_path / "new", gate_features=True) / "classifier.manifest.json",
        OPTIONS,
    )
    old = Classifier.load(
        write_tiny_weights(tmp_path / "old") / "classifier.manifest.json", OPTIONS
    )
    assert (new.gate_role, new.gate_feature_dim, new.feature_dim) == ("gate_features", 6, 4)
    assert (old.gate_role, old.gate_feature_dim) == ("features", 4)
    image = np.random.default_rng(0).random((96, 80)).astype(np.float32)
    a, b = new.predict([image])[0], old.predict([image])[0]
    assert a.pooled is not None and a.pooled.shape == (6,)
    assert b.pooled is not None and b.pooled.shape == (4,)
    assert a.logit == pytest.approx(b.logit, abs=1e-6)  # the serving outputs are unchanged
    np.testing.assert_array_equal(a.cam, b.cam)
