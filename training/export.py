"""ONNX export of both models and manifest (re)writing.

Classifier graph: input ``image`` float32 [N, 3, 224, 224]; outputs ``logit`` [N, 1] (before
temperature), ``features`` [N, 1280, 7, 7] (the last conv block, input of global-average-pool),
``cam`` [N, 1, 7, 7] = head weights applied per position / (h*w), so that
``cam.sum((2, 3)) + bias == logit``. Segmenter graph: input ``image`` float32 [N, 3, S, S];
output ``logits`` [N, 3, S, S] (independent sigmoid channels). Batch is dynamic in both.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training.models import features_of, head_of

OPSET = 17


class ClassifierGraph(nn.Module):
    """EfficientNet with the (logit, features, cam) outputs of the serving contract."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.features = features_of(model)
        linear = head_of(model)[-1]
        if not isinstance(linear, nn.Linear) or linear.out_features != 1:
            raise ValueError("classifier head must be Linear(C, 1)")
        self.head = linear

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.features(image)
        h, w = features.shape[-2:]
        logit = self.head(features.mean((2, 3)))
        weight = self.head.weight.view(1, -1, 1, 1)
        cam = F.conv2d(features, weight) / (h * w)
        return logit, features, cam


class SegmenterGraph(nn.Module):
    """torchvision DeepLabV3 -> plain ``logits`` tensor (the 'out' entry)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)["out"]


def _export(module: nn.Module, size: int, path: Path, outputs: list[str]) -> None:
    module.eval()
    example = torch.zeros(2, 3, size, size)
    dynamic = {"image": {0: "batch"}} | {name: {0: "batch"} for name in outputs}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=["image"],
        output_names=outputs,
        dynamic_axes=dynamic,
        opset_version=OPSET,
        dynamo=False,
        # Keep BatchNormalization nodes and state_dict names as initializer names (ORT fuses
        # Conv+BN itself at load): the parity test rebuilds the torch model from the ONNX file.
        training=torch.onnx.TrainingMode.PRESERVE,
        do_constant_folding=False,
    )


def state_dict_from_onnx(path: Path) -> dict[str, torch.Tensor]:
    """Initializers of an exported graph by name (= the exported module's state_dict keys)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return {
        init.name: torch.from_numpy(numpy_helper.to_array(init).copy())
        for init in graph.initializer
    }


def export_classifier(model: nn.Module, path: Path) -> None:
    """Write the classifier ONNX graph (see module docstring)."""
    _export(ClassifierGraph(model), 224, path, ["logit", "features", "cam"])


def export_segmenter(model: nn.Module, size: int, path: Path) -> None:
    """Write the segmenter ONNX graph at input side ``size``."""
    _export(SegmenterGraph(model), size, path, ["logits"])


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as a manifest, with ``sha256`` recomputed from the model file beside it."""
    data = dict(data)
    data["sha256"] = sha256_file(path.parent / data["file"])
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def refresh_sha256(path: Path) -> str:
    """Recompute a manifest's ``sha256`` from its model file in place; returns the new digest."""
    data = json.loads(path.read_text(encoding="utf-8"))
    write_manifest(path, data)
    return str(json.loads(path.read_text(encoding="utf-8"))["sha256"])
