"""Patient-level stratified split and duplicate detection."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
from PIL import Image

from training.dedup import (
    components,
    confirm_pairs,
    near_duplicate_pairs,
    phash,
    pixel_sha256,
    thumbnail,
)
from training.split import assign_splits


def _groups_and_strata(n_patients: int, seed: int) -> tuple[list[int], list[str]]:
    rng = np.random.default_rng(seed)
    groups, strata = [], []
    for patient in range(n_patients):
        source = "a" if patient % 3 else "b"
        label = int(rng.random() < 0.3)
        for _ in range(int(rng.integers(1, 4))):
            groups.append(patient)
            strata.append(f"{source}:{label}")
    return groups, strata


def test_no_patient_crosses_splits_and_split_is_deterministic() -> None:
    groups, strata = _groups_and_strata(300, 0)
    splits = assign_splits(groups, strata, seed=7)
    per_patient: dict[int, set[str]] = {}
    for g, s in zip(groups, splits, strict=True):
        per_patient.setdefault(g, set()).add(s)
    assert all(len(v) == 1 for v in per_patient.values())
    assert splits == assign_splits(groups, strata, seed=7)
    assert splits != assign_splits(groups, strata, seed=8)


def test_split_is_stratified_by_source_and_label() -> None:
    groups, strata = _groups_and_strata(600, 1)
    splits = assign_splits(groups, strata, seed=3)
    first_stratum = {g: s for g, s in zip(groups, strata, strict=True)}
    patients = Counter((first_stratum[g], s) for g, s in set(zip(groups, splits, strict=True)))
    for stratum in set(strata):
        total = sum(patients[(stratum, s)] for s in ("train", "val", "test"))
        assert abs(patients[(stratum, "train")] / total - 0.7) < 0.03
        assert abs(patients[(stratum, "test")] / total - 0.15) < 0.03


def _radiograph_like(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:128, 0:128]
    img = (
        80
        + 60 * np.exp(-((xx - 40) ** 2 + (yy - 64) ** 2) / 600.0)
        + 60 * np.exp(-((xx - 88) ** 2 + (yy - 64) ** 2) / 600.0)
    )
    for _ in range(6):
        cy, cx = rng.integers(10, 118, 2)
        img += 50 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 40.0)
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def _reencode(img: np.ndarray, size: int, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR).save(
        buf, "JPEG", quality=quality
    )
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))


def test_near_duplicates_found_across_resize_and_jpeg_but_distinct_images_kept_apart() -> None:
    originals = [_radiograph_like(s) for s in range(6)]
    copies = [_reencode(originals[0], 96, 60), _reencode(originals[3], 160, 80)]
    images = originals + copies
    hashes = np.stack([phash(i) for i in images])
    thumbs = np.stack([thumbnail(i) for i in images])
    pairs = confirm_pairs(near_duplicate_pairs(hashes, 6), thumbs, 0.97)
    comp = components(len(images), pairs).root
    assert comp[6] == comp[0] and comp[7] == comp[3]
    assert len({comp[i] for i in range(6)}) == 6


def test_pixel_sha_is_encoding_independent_and_shape_sensitive() -> None:
    img = _radiograph_like(0)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    assert pixel_sha256(np.asarray(Image.open(buf))) == pixel_sha256(img)
    assert pixel_sha256(img.reshape(64, 256)) != pixel_sha256(img)


def test_components_merge_transitively() -> None:
    assert components(5, [(0, 1), (1, 2), (3, 4)]).root == (0, 0, 0, 3, 3)


def test_adding_a_later_source_keeps_the_earlier_assignment() -> None:
    from training.prepare import _stratum_order

    groups, strata = _groups_and_strata(300, 2)
    names = {"a": "nih", "b": "kermany"}
    strata = [names[s[0]] + s[1:] for s in strata]
    before = assign_splits(groups, strata, seed=5, stratum_order=_stratum_order)
    # "covidqu" sorts before "kermany"/"nih" by name; it is a later generation: drawn last
    extra = 120
    groups2 = groups + [1000 + i for i in range(extra)]
    strata2 = strata + [f"covidqu:{i % 2}" for i in range(extra)]
    after = assign_splits(groups2, strata2, seed=5, stratum_order=_stratum_order)
    assert after[: len(groups)] == before
    assert set(after[len(groups) :]) == {"train", "val", "test"}
    by_name = assign_splits(groups2, strata2, seed=5)
    assert by_name[: len(groups)] != before  # what the generation order protects against
