"""The backward-free Grad-CAM equals captum's LayerGradCam on the torch twin of the same weights.

A tiny conv net with the classifier's structure (conv features -> global-average-pool ->
linear -> one logit) is exported to ONNX through the same wrapper that exports the shipped
classifier (``training.export.ClassifierGraph``: logit, features, cam); the map
computed from ONNX Runtime's ``cam`` output must match captum within 1e-4 after the same
normalisation (divide by the maximum).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from explain.gradcam import gradcam_grid  # noqa: E402
from training.export import ClassifierGraph  # noqa: E402

nn = torch.nn


class TinyClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # inplace=False: captum's layer hooks must see the activation before it is overwritten.
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(inplace=False),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.SiLU(inplace=False),
        )
        # The production head shape (dropout -> linear), so the production export wrapper
        # (training.export.ClassifierGraph) can be used unchanged.
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


class Negated(nn.Module):
    """The complement class's logit, for the "no_finding" target."""

    def __init__(self, model: TinyClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.model(x)


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> tuple[TinyClassifier, object]:
    torch.manual_seed(0)
    model = TinyClassifier()
    with torch.no_grad():  # non-trivial BatchNorm statistics so eval mode is not identity
        model.features[3].running_mean.uniform_(-0.5, 0.5)
        model.features[3].running_var.uniform_(0.5, 2.0)
    model.eval()
    path = Path(tmp_path_factory.mktemp("onnx")) / "tiny.onnx"
    torch.onnx.export(
        ClassifierGraph(model).eval(),
        (torch.zeros(1, 3, 32, 32),),
        str(path),
        input_names=["image"],
        output_names=["logit", "features", "cam"],
        dynamic_axes={k: {0: "n"} for k in ("image", "logit", "features", "cam")},
        opset_version=17,
        dynamo=False,
    )
    return model, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _captum_map(model: torch.nn.Module, layer: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    attr = captum_attr.LayerGradCam(model, layer).attribute(
        torch.from_numpy(x), target=0, relu_attributions=True
    )
    out = attr.detach().numpy()[:, 0]
    peaks = out.reshape(out.shape[0], -1).max(axis=1)
    return out / peaks[:, None, None]


@pytest.mark.parametrize("target", ["finding", "no_finding"])
def test_fast_gradcam_equals_captum(twin: tuple, target: str) -> None:
    model, session = twin
    x = np.random.default_rng(1).normal(size=(4, 3, 32, 32)).astype(np.float32)
    _, _, cam = session.run(None, {"image": x})
    fast = np.stack([gradcam_grid(c[0], target) for c in cam])  # type: ignore[arg-type]
    reference_model = model if target == "finding" else Negated(model)
    reference = _captum_map(reference_model, model.features, x)
    assert fast.shape == reference.shape == (4, 8, 8)
    assert np.all(fast.max(axis=(1, 2)) == pytest.approx(1.0))  # non-empty maps compared
    np.testing.assert_allclose(fast, reference, atol=1e-4, rtol=0)


def test_cam_output_sums_to_logit(twin: tuple) -> None:
    model, session = twin
    x = np.random.default_rng(2).normal(size=(3, 3, 32, 32)).astype(np.float32)
    logit, _, cam = session.run(None, {"image": x})
    bias = float(model.classifier[-1].bias.detach())
    np.testing.assert_allclose(cam.sum(axis=(1, 2, 3)) + bias, logit[:, 0], atol=1e-5)
