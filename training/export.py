"""ONNX export of both models and manifest (re)writing.

Classifier graph: input ``image`` float32 [N, 3, 224, 224]; outputs ``logit`` [N, 1] (before
temperature), ``features`` [N, 1280, 7, 7] (the last conv block, input of global-average-pool),
``cam`` [N, 1, 7, 7] = head weights applied per position / (h*w), so that
``cam.sum((2, 3)) + bias == logit``. Tail-recipe classifiers (``gate_cut``, the first trained
block) add ``gate_features`` [N, 2C]: per-channel mean and standard deviation over the grid of
the last *frozen* block's activations (ImageNet weights, not fine-tuned), the input gate's
features (:mod:`training.gate`); the service reads outputs by name, so the extra output changes
nothing for readers that do not ask for it. Segmenter graph: input ``image`` float32 [N, 3, S, S];
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
    """EfficientNet with the (logit, features, cam) outputs of the serving contract, plus
    ``gate_features`` (mean + std pooled activations of ``features[:gate_cut]``) when
    ``gate_cut`` is given."""

    def __init__(self, model: nn.Module, gate_cut: int | None = None) -> None:
        super().__init__()
        self.features = features_of(model)
        linear = head_of(model)[-1]
        if not isinstance(linear, nn.Linear) or linear.out_features != 1:
            raise ValueError("classifier head must be Linear(C, 1)")
        if gate_cut is not None and not 0 < gate_cut < len(self.features):
            raise ValueError("gate_cut must leave at least one block on either side")
        self.head = linear
        self.gate_cut = gate_cut

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cut = self.gate_cut
        lower = self.features[:cut](image) if cut is not None else image
        features = self.features[cut:](lower) if cut is not None else self.features(image)
        h, w = features.shape[-2:]
        logit = self.head(features.mean((2, 3)))
        weight = self.head.weight.view(1, -1, 1, 1)
        cam = F.conv2d(features, weight) / (h * w)
        if cut is None:
            return logit, features, cam
        mean = lower.mean((2, 3))
        std = (lower - mean[:, :, None, None]).pow(2).mean((2, 3)).sqrt()
        return logit, features, cam, torch.cat([mean, std], dim=1)


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


CLASSIFIER_OUTPUTS = ["logit", "features", "cam"]
GATE_OUTPUT = "gate_features"


def export_classifier(model: nn.Module, path: Path, gate_cut: int | None = None) -> None:
    """Write the classifier ONNX graph (see module docstring); ``gate_cut``: the tail recipe's
    cut (blocks below it frozen), which adds the ``gate_features`` output."""
    outputs = CLASSIFIER_OUTPUTS + ([GATE_OUTPUT] if gate_cut is not None else [])
    _export(ClassifierGraph(model, gate_cut), 224, path, outputs)


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
