"""DeepLabV3 segmenter (ASPP head) with an EfficientNet-Lite0 or MobileNetV3-Large backbone.

Channels (independent sigmoids): right lung, left lung, heart/mediastinum (patient's right =
image left on PA/AP). Targets come from :func:`training.prepare.seg_target` with 4 channels
(the 4th is "both lungs"); the loss ignores what a source does not label:

* per-channel BCE on labelled pixels of channels 0-2 (Kermany/ieee8023 label only the union,
  so their right/left channels are labelled 0 outside the lungs and ignored inside);
* BCE of the union probability ``1 - (1 - p_right)(1 - p_left)`` against channel 3 where labelled;
* a soft Dice term per labelled channel, which keeps thin structures from vanishing.

CPU-budget recipe as for the classifier: the backbone up to ``cut`` is frozen and cached.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import efficientnet_b0
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation import DeepLabV3
from torchvision.models.segmentation.deeplabv3 import ASPP

from training.augment import normalise
from training.dataset import SegSplit, source_balanced_weights
from training.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LITE0_MEAN,
    LITE0_STD,
    adapt_stem,
    features_of,
    lite0_checkpoint,
    stem_of,
    to_lite0,
    transplant_lite0,
)
from training.ort_trunk import ort_function
from training.prepare import IGNORE

LOG = logging.getLogger(__name__)
SEG_LABELS = ("right_lung", "left_lung", "heart_mediastinum")


def _dilate_stage(stage: nn.Module, dilation: int) -> None:
    """Replace stride 2 by stride 1 and dilate the depthwise convs (keeps the receptive field)."""
    for module in stage.modules():
        if isinstance(module, nn.Conv2d) and module.kernel_size[0] > 1:
            module.stride = (1, 1)
            module.dilation = (dilation, dilation)
            module.padding = ((module.kernel_size[0] - 1) // 2 * dilation,) * 2


def build_segmenter(
    pretrained: bool = True, aspp_channels: int = 64, output_stride: int = 16
) -> DeepLabV3:
    """DeepLabV3 on an EfficientNet-Lite0 trunk (ImageNet from the wheel), output stride 8 or 16.

    The trunk is Lite0 stages 0-6; stage 6 (OS16) or stages 4-6 (OS8) are dilated instead of
    strided, the usual atrous conversion of a pretrained backbone; the ASPP head
    (rates 6/12/18, image pooling) reads its 192-channel output. ASPP is slimmed to
    ``aspp_channels`` (torchvision's default 256 costs ~6x more on CPU). Input float32
    [N, 3, S, S] (ImageNet mean/std), output {"out": [N, 3, S, S]} logits.
    """
    trunk = to_lite0(efficientnet_b0(weights=None))
    if pretrained:
        state = torch.load(lite0_checkpoint(), map_location="cpu", weights_only=True)
        transplant_lite0(trunk, state)
        adapt_stem(
            *stem_of(trunk),
            (IMAGENET_MEAN, IMAGENET_STD),
            (LITE0_MEAN, LITE0_STD),
        )
    if output_stride == 8:
        _dilate_stage(features_of(trunk)[4], 2)
        _dilate_stage(features_of(trunk)[5], 2)
        _dilate_stage(features_of(trunk)[6], 4)
    elif output_stride == 16:
        _dilate_stage(features_of(trunk)[6], 2)
    else:
        raise ValueError("output_stride must be 8 or 16")
    body = nn.Sequential(*features_of(trunk)[:7])
    backbone = IntermediateLayerGetter(body, return_layers={"6": "out"})
    head = nn.Sequential(
        ASPP(192, [6, 12, 18], aspp_channels),
        nn.Conv2d(aspp_channels, aspp_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(aspp_channels),
        nn.ReLU(),
        nn.Conv2d(aspp_channels, len(SEG_LABELS), 1),
    )
    return DeepLabV3(backbone, head, None)


def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Partial-label loss; logits float [B, 3, S, S], target uint8 [B, 4, S, S] (IGNORE = 255)."""
    labelled = target != IGNORE
    tgt = target.float()
    bce = F.binary_cross_entropy_with_logits(logits, tgt[:, :3], reduction="none")
    mask3 = labelled[:, :3].float()
    loss = (bce * mask3).sum() / mask3.sum().clamp(min=1.0)
    prob = torch.sigmoid(logits)
    union = 1.0 - (1.0 - prob[:, 0]) * (1.0 - prob[:, 1])
    mask_u = labelled[:, 3].float()
    union_bce = F.binary_cross_entropy(
        union.clamp(1e-6, 1 - 1e-6), tgt[:, 3].clamp(0, 1), reduction="none"
    )
    loss = loss + (union_bce * mask_u).sum() / mask_u.sum().clamp(min=1.0)
    probs4 = torch.cat([prob, union.unsqueeze(1)], 1)
    full = labelled.flatten(2).all(2)  # channels labelled on the whole image (Dice is defined)
    inter = (probs4 * tgt.clamp(0, 1)).flatten(2).sum(2)
    denom = (probs4 + tgt.clamp(0, 1)).flatten(2).sum(2)
    soft_dice = 1.0 - (2 * inter + 1.0) / (denom + 1.0)
    return loss + (soft_dice * full).sum() / full.sum().clamp(min=1)


@dataclass(frozen=True)
class SegmenterConfig:
    """Hyper-parameters of one segmenter run."""

    cut: int = 7
    epochs: int = 20
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    time_budget_s: float = 1e9
    source_power: float = 0.5
    aspp_channels: int = 128
    seed: int = 20260228


def _body(model: DeepLabV3) -> nn.Sequential:
    body = model.backbone
    return nn.Sequential(*[body[str(i)] for i in range(len(body))])


def cached_trunk(
    model: DeepLabV3, cut: int, images: npt.NDArray[np.float32], index: npt.NDArray[np.int64]
) -> torch.Tensor:
    """Frozen backbone activations (float16) up to stage ``cut`` of cache rows ``index`` (ORT)."""
    run = ort_function(_body(model)[:cut], images.shape[-1])
    out = []
    for start in range(0, len(index), 32):
        gray = torch.from_numpy(np.asarray(images[index[start : start + 32]]))
        out.append(
            torch.from_numpy(run(normalise(gray, IMAGENET_MEAN, IMAGENET_STD).numpy())).to(
                torch.float16
            )
        )
    return torch.cat(out)


class _Tail(nn.Module):
    def __init__(self, model: DeepLabV3, cut: int, size: int) -> None:
        super().__init__()
        self.rest = _body(model)[cut:]
        self.head = model.classifier
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.rest(x))
        return F.interpolate(y, size=(self.size, self.size), mode="bilinear", align_corners=False)


def predict_cached(tail: nn.Module, feats: torch.Tensor) -> torch.Tensor:
    """Eval-mode logits float32 [N, 3, S, S] for cached features."""
    tail.eval()
    with torch.no_grad():
        return torch.cat([tail(feats[i : i + 32].float()) for i in range(0, len(feats), 32)])


def fit_segmenter(
    model: DeepLabV3,
    cfg: SegmenterConfig,
    images: npt.NDArray[np.float32],
    targets: npt.NDArray[np.uint8],
    train: SegSplit,
    out_dir: Path,
    size: int,
) -> tuple[Path, float]:
    """Train the tail on cached trunk features; saves ``segmenter.pt``; returns (path, wall s).

    Batches are drawn with source-balanced weights (``cfg.source_power``), so the ~150 JSRT
    training images with fine SCR outlines are not drowned by ~2,400 Kermany lung masks.
    """
    train_index = train.index
    weights = source_balanced_weights(train.sources, cfg.source_power)
    torch.manual_seed(cfg.seed)
    start = time.monotonic()
    for p in _body(model)[: cfg.cut].parameters():
        p.requires_grad_(False)
    feats = cached_trunk(model, cfg.cut, images, train_index)
    LOG.info("segmenter trunk cache %s in %.0f s", tuple(feats.shape), time.monotonic() - start)
    tail = _Tail(model, cfg.cut, size)
    params = [p for p in tail.parameters() if p.requires_grad]
    steps = max(1, len(train_index) // cfg.batch_size)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=steps * cfg.epochs, pct_start=0.15
    )
    rng = np.random.default_rng(cfg.seed)
    for epoch in range(cfg.epochs):
        tail.train()
        losses = []
        for _ in range(steps):
            idx = np.sort(rng.choice(len(train_index), cfg.batch_size, p=weights))
            tgt = torch.from_numpy(np.asarray(targets[train_index[idx]]))
            x = feats[torch.from_numpy(idx)].float()
            loss = seg_loss(tail(x), tgt)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        LOG.info(
            "seg epoch %d loss %.4f (%.0f s)", epoch + 1, np.mean(losses), time.monotonic() - start
        )
        if time.monotonic() - start > cfg.time_budget_s:
            break
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "segmenter.pt"
    torch.save(model.state_dict(), path)
    return path, time.monotonic() - start
