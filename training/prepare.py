"""Data integration step: sources -> deduplicated, split, cached table.

Writes into ``out_dir``:

* ``images.csv`` — one row per unique image file (classification and/or segmentation):
  the :class:`ImageRecord` fields plus ``split``, ``group``, ``phash``, ``duplicate_of``
  (image kept in its place, empty if kept), ``cls_index`` / ``seg_index`` (rows of the caches,
  -1 if the image is not used by that task).
* ``cls224.npy`` — float32 [Ncls, 224, 224] in [0, 1]: ``resize_gray(load_gray(path), 224, 224)``,
  i.e. exactly the array :func:`inference.preprocess.to_model_input` resizes to before it
  normalises, so evaluation on the cache is bit-identical to serving.
* ``cls256u8.npy`` — uint8 [Ncls, 256, 256]: the same pictures at 256 px for training (a
  margin for crops and rescaling; uint8 keeps the ~12k-image cache under 1 GB in memory, so
  epochs never decode JPEGs).
* ``seg256.npy`` — float32 [Nseg, 256, 256] likewise, and ``seg_targets.npy`` — uint8
  [Nseg, 4, 256, 256]: right lung, left lung, heart/mediastinum, both lungs; 0/1, 255 where
  the source does not label that structure (see :mod:`training.segmentation_data`).
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from inference.preprocess import resize_gray
from training.adapters import source_generation
from training.dedup import (
    components,
    confirm_pairs,
    near_duplicate_pairs,
    phash,
    pixel_sha256,
    thumbnail,
)
from training.records import ImageRecord, frontal_only, write_table
from training.split import assign_splits

LOG = logging.getLogger(__name__)
CLS_SIZE = 224
TRAIN_SIZE = 256
SEG_SIZE = 256
SEG_CHANNELS = ("right_lung", "left_lung", "heart_mediastinum", "lungs")
# Which channel each shared-data structure fills; structures absent here are not used.
STRUCTURE_CHANNEL = {
    "right_lung": 0,
    "left_lung": 1,
    "heart": 2,
    "cardiomediastinum": 2,
    "lungs": 3,
}
IGNORE = 255
# Sources whose files are stored as negatives (bone dark, air bright). The JSRT films as shared
# here are: on every one of its 209 films the mediastinum is darker than the lungs beside it,
# as on no more than 5 % of any other source's films. Hospitals send positives (a MONOCHROME1
# DICOM is turned positive at intake), so these are turned positive before anything is
# hashed or cached; until 2026-12-04 they were cached as stored (classifier 2.1.0 and segmenter
# 2.2.0 were trained and scored on JSRT negatives).
NEGATIVE_SOURCES = frozenset({"jsrt"})
NEAR_DUPLICATE_BITS = 6
MIN_THUMB_CORRELATION = 0.97


def load_gray(path: str | Path) -> npt.NDArray[np.float32]:
    """Image file -> float32 [H, W] in [0, 1] (PIL 'L' / 255), the serving contract."""
    with Image.open(path) as img:
        return np.asarray(img.convert("L"), dtype=np.float32) / np.float32(255.0)


@dataclass(frozen=True)
class SegItem:
    """Masks of one segmentation image: structure -> mask path, plus the mask source."""

    image: str
    masks: dict[str, str]
    source: str


def read_segmentation(root: Path) -> list[SegItem]:
    """Group ``root/segmentation.csv`` rows by image (paths made absolute)."""
    masks: dict[str, dict[str, str]] = defaultdict(dict)
    source: dict[str, str] = {}
    with (root / "segmentation.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            image = str((root / row["image"]).resolve())
            masks[image][row["structure"]] = str((root / row["mask"]).resolve())
            source[image] = row["source"]
    return [SegItem(image=k, masks=v, source=source[k]) for k, v in masks.items()]


def seg_target(item: SegItem, size: int) -> npt.NDArray[np.uint8]:
    """uint8 [4, size, size] target for one image: 0/1 where labelled, IGNORE elsewhere.

    A source that only draws "lungs" (both lungs as one mask) still says where neither lung
    is: outside that mask the right and left channels are 0; inside it they stay IGNORE and
    the union channel carries the supervision.
    """
    target = np.full((len(SEG_CHANNELS), size, size), IGNORE, dtype=np.uint8)
    for structure, path in item.masks.items():
        channel = STRUCTURE_CHANNEL.get(structure)
        if channel is None:
            continue
        with Image.open(path) as img:
            mask = (
                np.asarray(img.convert("L").resize((size, size), Image.Resampling.BILINEAR)) >= 128
            )
        target[channel] = mask.astype(np.uint8)
    if target[0, 0, 0] != IGNORE and target[1, 0, 0] != IGNORE:
        target[3] = np.maximum(target[0], target[1])
    elif target[3, 0, 0] != IGNORE:
        outside = target[3] == 0
        for channel in (0, 1):
            target[channel] = np.where(outside, 0, IGNORE).astype(np.uint8)
    return target


def _stratum(rec: ImageRecord) -> str:
    return f"{rec.source}:{rec.label}"


def _stratum_order(stratum: str) -> tuple[int, str]:
    """Original sources first, the adult supplement after (their splits stay as released)."""
    return source_generation(stratum.split(":")[0]), stratum


def prepare(
    root: Path, out_dir: Path, seed: int, extra_records: list[ImageRecord] | None = None
) -> Path:
    """Run the integration step; returns the path of ``images.csv``. See the module docstring."""
    from training.adapters import read_shared

    out_dir.mkdir(parents=True, exist_ok=True)
    cls = frontal_only(read_shared(root) + (extra_records or []))
    seg = read_segmentation(root)
    seg_by_image = {s.image: s for s in seg}
    records: dict[str, ImageRecord] = {r.image: r for r in cls}
    for item in seg:
        if item.image not in records:
            src = item.source.split("+")[0]
            records[item.image] = ImageRecord(
                item.image, -1, "", src, f"{src}:{Path(item.image).stem}", "PA"
            )
    images = list(records)
    cls_set = {r.image for r in cls}
    cls_cache = np.lib.format.open_memmap(
        out_dir / "cls224.npy", "w+", np.float32, (len(cls_set), CLS_SIZE, CLS_SIZE)
    )
    train_cache = np.lib.format.open_memmap(
        out_dir / f"cls{TRAIN_SIZE}u8.npy", "w+", np.uint8, (len(cls_set), TRAIN_SIZE, TRAIN_SIZE)
    )
    seg_cache = np.lib.format.open_memmap(
        out_dir / "seg256.npy", "w+", np.float32, (len(seg), SEG_SIZE, SEG_SIZE)
    )
    seg_tgt = np.lib.format.open_memmap(
        out_dir / "seg_targets.npy",
        "w+",
        np.uint8,
        (len(seg), len(SEG_CHANNELS), SEG_SIZE, SEG_SIZE),
    )
    hashes = np.zeros((len(images), 64), dtype=bool)
    thumbs = np.zeros((len(images), 32 * 32), dtype=np.float32)
    shas: list[str] = []
    cls_index, seg_index = [-1] * len(images), [-1] * len(images)
    n_cls = n_seg = 0
    for i, image in enumerate(images):
        gray = load_gray(image)
        if records[image].source in NEGATIVE_SOURCES:
            gray = np.float32(1.0) - gray
        u8 = np.round(gray * 255).astype(np.uint8)
        hashes[i] = phash(u8)
        thumbs[i] = thumbnail(u8)
        shas.append(pixel_sha256(u8))
        if image in cls_set:
            cls_cache[n_cls] = resize_gray(gray, CLS_SIZE, CLS_SIZE)
            train_cache[n_cls] = np.clip(
                np.round(resize_gray(gray, TRAIN_SIZE, TRAIN_SIZE) * 255), 0, 255
            )
            cls_index[i], n_cls = n_cls, n_cls + 1
        if image in seg_by_image:
            seg_cache[n_seg] = resize_gray(gray, SEG_SIZE, SEG_SIZE)
            seg_tgt[n_seg] = seg_target(seg_by_image[image], SEG_SIZE)
            seg_index[i], n_seg = n_seg, n_seg + 1
        if i % 1000 == 0:
            LOG.info("decoded %d/%d images", i, len(images))
    for array in (cls_cache, train_cache, seg_cache, seg_tgt):
        array.flush()
    first_by_sha: dict[str, int] = {}
    dup_links = [
        (first_by_sha.setdefault(s, i), i)
        for i, s in enumerate(shas)
        if first_by_sha.get(s, i) != i
    ]
    dup_links += confirm_pairs(
        near_duplicate_pairs(hashes, NEAR_DUPLICATE_BITS), thumbs, MIN_THUMB_CORRELATION
    )
    dups = components(len(images), dup_links)
    first_by_patient: dict[str, int] = {}
    patient_links = [
        (first_by_patient.setdefault(records[im].patient_id, i), i) for i, im in enumerate(images)
    ]
    groups = components(len(images), dup_links + patient_links)
    duplicate_of = [""] * len(images)
    kept_cls: dict[int, int] = {}
    for i, image in enumerate(images):
        if image not in cls_set:
            continue
        keeper = kept_cls.setdefault(dups.root[i], i)
        if keeper != i:
            duplicate_of[i] = images[keeper]
    splits = assign_splits(
        list(groups.root),
        [_stratum(records[im]) for im in images],
        seed,
        stratum_order=_stratum_order,
    )
    LOG.info(
        "%d images, %d duplicate links, %d classification duplicates dropped",
        len(images),
        len(dup_links),
        sum(bool(d) for d in duplicate_of),
    )
    table = out_dir / "images.csv"
    write_table(
        [records[im] for im in images],
        table,
        extra={
            "split": splits,
            "group": [str(g) for g in groups.root],
            "phash": [np.packbits(h).tobytes().hex() for h in hashes],
            "duplicate_of": duplicate_of,
            "cls_index": [str(c) for c in cls_index],
            "seg_index": [str(s) for s in seg_index],
        },
    )
    return table
