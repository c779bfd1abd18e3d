"""The prepared table (``images.csv`` + caches) as typed arrays for training and evaluation."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class ClsSplit:
    """Classification rows of one split: cache rows, labels and sources (aligned arrays)."""

    index: npt.NDArray[np.int64]
    labels: npt.NDArray[np.int64]
    sources: npt.NDArray[np.str_]
    images: tuple[str, ...]
    findings: tuple[str, ...]


@dataclass(frozen=True)
class SegSplit:
    """Segmentation rows of one split: cache rows and mask sources."""

    index: npt.NDArray[np.int64]
    sources: npt.NDArray[np.str_]
    images: tuple[str, ...]


def _rows(table: Path) -> list[dict[str, str]]:
    with table.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def cls_split(table: Path, split: str) -> ClsSplit:
    """Kept (non-duplicate) labelled classification rows of ``split``."""
    rows = [
        r
        for r in _rows(table)
        if r["split"] == split
        and int(r["cls_index"]) >= 0
        and not r["duplicate_of"]
        and int(r["label"]) >= 0
    ]
    return ClsSplit(
        index=np.array([int(r["cls_index"]) for r in rows], dtype=np.int64),
        labels=np.array([int(r["label"]) for r in rows], dtype=np.int64),
        sources=np.array([r["source"] for r in rows]),
        images=tuple(r["image"] for r in rows),
        findings=tuple(r["findings"] for r in rows),
    )


def seg_split(table: Path, split: str) -> SegSplit:
    """Segmentation rows of ``split`` (duplicates kept: each carries its own annotation)."""
    rows = [r for r in _rows(table) if r["split"] == split and int(r["seg_index"]) >= 0]
    return SegSplit(
        index=np.array([int(r["seg_index"]) for r in rows], dtype=np.int64),
        sources=np.array([Path(r["image"]).parent.name for r in rows]),
        images=tuple(r["image"] for r in rows),
    )


def source_balanced_weights(
    sources: npt.NDArray[np.str_], power: float = 0.5
) -> npt.NDArray[np.float64]:
    """Per-item sampling weights giving each source a share proportional to count**power.

    power=1 is plain uniform sampling (Kermany, pediatric, would be ~75 % of batches); power=0.5
    shrinks it to about half and lifts the small adult sources.
    """
    names, inverse, counts = np.unique(sources, return_inverse=True, return_counts=True)
    share = counts.astype(np.float64) ** power
    share /= share.sum()
    weights = share[inverse] / counts[inverse]
    return weights / weights.sum()
