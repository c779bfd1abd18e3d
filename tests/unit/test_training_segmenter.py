"""DeepLabV3+ segmenter: architecture, sampling shares, paired augmentation, Dice/HD95 scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.dataset import SegSplit
from training.prepare import IGNORE
from training.seg_augment import augment_seg, warp_pair
from training.seg_eval import evaluate_segmenter, hd95
from training.segmenter import (
    SegmenterConfig,
    adult_share,
    build_segmenter,
    segmenter_architecture,
    source_share_weights,
)


def test_deeplabv3plus_keeps_the_input_size_and_has_a_stride4_decoder() -> None:
    model = build_segmenter(pretrained=False, aspp_channels=16).eval()
    captured: list[tuple[int, ...]] = []
    model.low_proj.register_forward_hook(lambda m, i, o: captured.append(tuple(o.shape)))
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 64, 64))["out"]
    assert out.shape == (2, 3, 64, 64)
    assert captured == [(2, 32, 16, 16)]  # fused at stride 4


def test_architecture_from_manifest_extra_loads_the_trained_weights() -> None:
    trained = build_segmenter(pretrained=False, aspp_channels=16)
    rebuilt = segmenter_architecture(
        {"aspp_channels": 16, "decoder": True, "aspp_rates": [3, 6, 9]}
    )
    rebuilt.load_state_dict(trained.state_dict(), strict=True)
    legacy = segmenter_architecture({"aspp_channels": 16})  # manifests before the decoder
    assert not hasattr(legacy, "low_proj")


def test_encoder_and_decoder_parameters_partition_the_model() -> None:
    model = build_segmenter(pretrained=False, aspp_channels=16)
    enc, dec = model.encoder_parameters(), model.decoder_parameters()
    assert len(enc) + len(dec) == len(list(model.parameters()))
    assert {id(p) for p in enc}.isdisjoint(id(p) for p in dec)


def test_source_shares_are_met_and_adults_get_at_least_half() -> None:
    sources = np.array(["kermany"] * 2400 + ["covidqu"] * 2400 + ["jsrt"] * 150 + ["covidseg"] * 60)
    shares = dict(SegmenterConfig().source_shares)
    weights = source_share_weights(sources, shares)
    assert weights.sum() == pytest.approx(1.0)
    kept = {s: shares[s] for s in ("kermany", "covidqu", "jsrt", "covidseg")}
    for name, share in kept.items():  # ieee8023 absent: its share is spread over the others
        assert weights[sources == name].sum() == pytest.approx(share / sum(kept.values()))
    assert adult_share(sources, weights) >= 0.5


def test_source_without_share_is_not_sampled() -> None:
    weights = source_share_weights(np.array(["a", "a", "b"]), {"a": 1.0})
    assert weights.tolist() == [0.5, 0.5, 0.0]
    with pytest.raises(ValueError):
        source_share_weights(np.array(["b"]), {"a": 1.0})


def _shift_grid(b: int, h: int, w: int, dx: float) -> torch.Tensor:
    theta = torch.tensor([[1.0, 0.0, dx], [0.0, 1.0, 0.0]]).expand(b, 2, 3)
    return torch.nn.functional.affine_grid(theta, [b, 1, h, w], align_corners=False)


def test_warp_moves_image_and_masks_together_and_ignores_padding() -> None:
    img = torch.zeros(1, 32, 32)
    img[0, 8:24, 12:20] = 1.0
    tgt = torch.zeros(1, 4, 32, 32, dtype=torch.uint8)
    tgt[0, 0] = (img[0] > 0).to(torch.uint8)
    tgt[0, 2] = IGNORE
    out, warped = warp_pair(img, tgt, _shift_grid(1, 32, 32, 0.25))  # content moves 4 px left
    valid = warped[0, 0] != IGNORE
    assert torch.equal((out[0] > 0.5)[valid], (warped[0, 0] == 1)[valid])
    assert bool((warped[0, 0, 8:24, 8:16] == 1).all())  # the lung moved 4 px left with the image
    assert (warped[0, 0, :, 28:] == IGNORE).all()  # sampled from outside the image
    assert (warped[0, 0, :, :28] != IGNORE).all()
    assert (warped[0, 2] == IGNORE).all()


def test_augmentation_is_seeded_keeps_ranges_and_never_mirrors() -> None:
    img = torch.rand(4, 64, 64) * 0.1
    img[:, :, :32] += 0.8  # bright image-left half
    tgt = torch.zeros(4, 4, 64, 64, dtype=torch.uint8)
    tgt[:, 0, 16:48, 4:28] = 1
    a = augment_seg(img, tgt, torch.Generator().manual_seed(1))
    b = augment_seg(img, tgt, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    out, warped = a
    assert out.shape == img.shape and warped.shape == tgt.shape and warped.dtype == torch.uint8
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert (out[:, :, :32].mean((1, 2)) > out[:, :, 32:].mean((1, 2))).all()
    cols = (warped[:, 0] == 1).any(1).float().argmax(1)
    assert (cols < 32).all()  # the right lung stays on the image left


def test_hd95_of_known_shapes() -> None:
    a = np.zeros((64, 64), bool)
    a[10:40, 10:40] = True
    b = np.roll(a, 3, axis=1)
    assert hd95(a, a) == 0.0
    assert hd95(a, b) == pytest.approx(3.0)
    empty = np.zeros_like(a)
    assert hd95(empty, empty) == 0.0
    assert hd95(a, empty) == pytest.approx(np.hypot(64, 64))


def test_evaluate_segmenter_scores_only_labelled_structures() -> None:
    size = 32
    images = np.zeros((2, size, size), np.float32)
    targets = np.full((2, 4, size, size), IGNORE, np.uint8)
    right = np.zeros((size, size), np.uint8)
    right[8:24, 4:14] = 1
    left = np.zeros((size, size), np.uint8)
    left[8:24, 18:28] = 1
    targets[0, 0], targets[0, 1], targets[0, 3] = right, left, right | left  # per-side source
    targets[1, 3] = right | left  # lungs-only source

    def perfect(x: np.ndarray) -> np.ndarray:
        logits = np.full((len(x), 3, size, size), -8.0, np.float32)
        logits[:, 0][:, right == 1] = 8.0
        logits[:, 1][:, left == 1] = 8.0
        return logits

    split = SegSplit(np.array([0, 1]), np.array(["jsrt", "kermany"]), ("a", "b"))
    scores = evaluate_segmenter(perfect, images, targets, split)
    assert set(scores["jsrt"]) == {"right_lung", "left_lung", "lungs"}
    assert set(scores["kermany"]) == {"lungs"}
    assert scores["jsrt"]["right_lung"]["dice"] == 1.0
    assert scores["kermany"]["lungs"]["hd95_px"] == 0.0


def test_finetune_updates_trunk_and_decoder_and_can_be_skipped() -> None:
    from training.segmenter import fit_finetune

    torch.manual_seed(0)
    model = build_segmenter(pretrained=False, aspp_channels=8)
    images = np.random.default_rng(0).random((4, 64, 64), dtype=np.float32)
    targets = np.zeros((4, 4, 64, 64), np.uint8)
    targets[:, 0, 16:48, 8:28] = 1
    targets[:, 3] = targets[:, 0]
    split = SegSplit(np.arange(4), np.array(["jsrt"] * 4), ())
    stem = model.low[0][0].weight.detach().clone()
    head = model.classify.weight.detach().clone()
    cfg = SegmenterConfig(finetune_steps=0)
    assert fit_finetune(model, cfg, images, targets, split) == 0
    assert torch.equal(model.low[0][0].weight, stem)
    cfg = SegmenterConfig(finetune_steps=2, finetune_batch=2, source_shares=(("jsrt", 1.0),))
    assert fit_finetune(model, cfg, images, targets, split) == 2
    assert not torch.equal(model.low[0][0].weight, stem)  # the trunk is trained too
    assert not torch.equal(model.classify.weight, head)
