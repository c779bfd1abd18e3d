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
    age_groups: tuple[str, ...] = ()

    def subset(self, keep: npt.NDArray[np.bool_] | npt.NDArray[np.int64]) -> ClsSplit:
        """Rows selected by a boolean mask or an index array (order kept)."""
        idx = np.flatnonzero(keep) if keep.dtype == np.bool_ else keep
        ages = tuple(self.age_groups[i] for i in idx) if self.age_groups else ()
        return ClsSplit(
            self.index[idx],
            self.labels[idx],
            self.sources[idx],
            tuple(self.images[i] for i in idx),
            tuple(self.findings[i] for i in idx),
            ages,
        )

    def populations(self) -> npt.NDArray[np.str_]:
        """``adult`` / ``pediatric`` per row (unknown ages count as adult)."""
        from training.adapters import population

        ages = self.age_groups or ("",) * len(self.labels)
        return np.array([population(a) for a in ages])


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
        age_groups=tuple(r.get("age_group", "") for r in rows),
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
