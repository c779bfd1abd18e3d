"""Tiny ONNX models with the production I/O contract, built with onnx.helper (no torch).

Classifier: image [N,3,224,224] -> AveragePool(32) -> 1x1 conv (3->4) + ReLU = features [N,4,7,7];
cam = 1x1 conv (4->1) with head weights / 49; logit = sum(cam) + bias, shape [N,1]; with
``gate_features=True`` also gate_features [N,6] = per-channel mean and max of the pooled image
(stands in for the frozen lower trunk's pooled activations of 2.1.0 exports).
Segmenter: image [N,3,64,64] -> 1x1 conv (3->3) = logits [N,3,64,64]; channel 0 ("right_lung")
fires on bright pixels, channel 1 ("left_lung") on dark pixels, channel 2 never.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _init(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(arr.astype(np.float32), name)


def classifier_model(
    head_bias: float = -0.2, seed: int = 0, gate_features: bool = False
) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    feat_w = rng.normal(0, 1, (4, 3, 1, 1))
    head_w = rng.normal(0, 1, (4,))
    nodes = [
        helper.make_node(
            "AveragePool", ["image"], ["pooled"], kernel_shape=[32, 32], strides=[32, 32]
        ),
        helper.make_node("Conv", ["pooled", "feat_w"], ["pre"]),
        helper.make_node("Relu", ["pre"], ["features"]),
        helper.make_node("Conv", ["features", "cam_w"], ["cam"]),
        helper.make_node("ReduceSum", ["cam", "axes"], ["summed"], keepdims=0),
        helper.make_node("Add", ["summed", "bias"], ["logit"]),
    ]
    outputs = [
        helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N", 1]),
        helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4, 7, 7]),
        helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["N", 1, 7, 7]),
    ]
    if gate_features:
        nodes += [
            helper.make_node("GlobalAveragePool", ["pooled"], ["g_mean"]),
            helper.make_node("GlobalMaxPool", ["pooled"], ["g_max"]),
            helper.make_node("Concat", ["g_mean", "g_max"], ["g_cat"], axis=1),
            helper.make_node("Flatten", ["g_cat"], ["gate_features"], axis=1),
        ]
        outputs.append(helper.make_tensor_value_info("gate_features", TensorProto.FLOAT, ["N", 6]))
    graph = helper.make_graph(
        nodes,
        "tiny_classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 224, 224])],
        outputs,
        [
            _init("feat_w", feat_w),
            _init("cam_w", (head_w / 49.0).reshape(1, 4, 1, 1)),
            numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"),
            _init("bias", np.array([head_bias])),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def segmenter_model() -> onnx.ModelProto:
    # Input is ImageNet-normalised gray replicated to 3 channels; average the channels back.
    w = np.zeros((3, 3, 1, 1))
    w[0, :, 0, 0] = 4.0 / 3
    w[1, :, 0, 0] = -4.0 / 3
    b = np.array([-1.0, -1.0, -50.0])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w", "b"], ["logits"])],
        "tiny_segmenter",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [_init("w", w), _init("b", b)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _manifest(
    kind: str,
    name: str,
    file: str,
    data: bytes,
    size: int,
    outputs: dict[str, str],
    labels: list[str],
    **kw: object,
) -> dict[str, object]:
    return {
        "schema_version": 1,
        "name": name,
        "kind": kind,
        "version": "0.0.1-test",
        "file": file,
        "sha256": hashlib.sha256(data).hexdigest(),
        "input": {
            "name": "image",
            "size": size,
            "channels": 3,
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
        },
        "outputs": outputs,
        "labels": labels,
        **kw,
    }


def write_tiny_weights(
    folder: Path,
    *,
    temperature: float = 1.5,
    threshold: float = 0.4,
    gate_features: bool = False,
) -> Path:
    """Write both tiny models and valid manifests into ``folder``; return it (``gate_features``:
    the classifier has that output and its manifest names the role)."""
    folder.mkdir(parents=True, exist_ok=True)
    cls = classifier_model(gate_features=gate_features).SerializeToString()
    seg = segmenter_model().SerializeToString()
    (folder / "classifier.onnx").write_bytes(cls)
    (folder / "segmenter.onnx").write_bytes(seg)
    manifests = {
        "classifier.manifest.json": _manifest(
            "classifier",
            "tiny-classifier",
            "classifier.onnx",
            cls,
            224,
            {"logit": "logit", "features": "features", "cam": "cam"}
            | ({"gate_features": "gate_features"} if gate_features else {}),
            ["finding"],
            temperature=temperature,
            threshold=threshold,
        ),
        "segmenter.manifest.json": _manifest(
            "segmenter",
            "tiny-segmenter",
            "segmenter.onnx",
            seg,
            64,
            {"logits": "logits"},
            ["right_lung", "left_lung", "heart_mediastinum"],
        ),
    }
    for name, body in manifests.items():
        (folder / name).write_text(json.dumps(body, indent=2))
    return folder
